"""Frequency caps: how many messages a customer may get over rolling windows.

Pure. A cap limits the messages on some channels over any window of a given length,
per account or per person (one person with three debts must not get three times the
cap). Contacts are what was actually sent plus what is queued to go, never what was
merely planned. A message may go at ``t`` when, in every window of the cap's length that
contains ``t``, the contacts already there number fewer than the limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from dispatcher.domain.strategy import ChannelKind


class CapScope(StrEnum):
    ACCOUNT = "account"
    PERSON = "person"


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``limit`` messages on ``channels`` in any ``window`` (a minimum gap between
    messages is a cap with limit 1 and the gap as window)."""

    id: str
    source: str
    channels: frozenset[ChannelKind]
    limit: int
    window: timedelta
    scope: CapScope = CapScope.PERSON

    @property
    def reason(self) -> str:
        """The reason code recorded on a deferred message, e.g. ``cap_sms_7d``."""
        which = (
            "all"
            if self.channels == frozenset(ChannelKind)
            else "_".join(sorted(c.value for c in self.channels))
        )
        hours = self.window.total_seconds() / 3600
        span = f"{hours / 24:g}d" if hours % 24 == 0 else f"{hours:g}h"
        return f"cap_{which}_{span}"


@dataclass(frozen=True, slots=True)
class Contact:
    """A message that counts: sent (at its sent time) or queued (at its scheduled time)."""

    at: datetime
    channel: ChannelKind
    account_id: str


def _counted(
    cap: Cap, channel: ChannelKind, account_id: str, contacts: Iterable[Contact]
) -> list[datetime]:
    if channel not in cap.channels:
        return []
    return sorted(
        c.at
        for c in contacts
        if c.channel in cap.channels
        and (cap.scope is CapScope.PERSON or c.account_id == account_id)
    )


def _fits(at: datetime, times: Sequence[datetime], cap: Cap) -> bool:
    """True when no window [s, s+W) holds ``at`` and ``limit`` contacts together.

    Exact: such a window exists iff some ``limit + 1`` consecutive points of the sorted
    contacts-plus-``at`` that include ``at`` span less than W.
    """
    if len(times) < cap.limit:  # fewer points than a breaking window needs (most people)
        return True
    points = sorted([*times, at])
    here = points.index(at)  # any copy of an equal instant will do: spans are the same
    n = cap.limit
    for first in range(max(0, here - n), min(here, len(points) - 1 - n) + 1):
        if points[first + n] - points[first] < cap.window:
            return False
    return True


def blocking_cap(
    at: datetime,
    channel: ChannelKind,
    account_id: str,
    contacts: Sequence[Contact],
    caps: Sequence[Cap],
) -> Cap | None:
    """The first cap that a message on ``channel`` at ``at`` would break, or None."""
    if not contacts:  # nothing counted: only a cap that allows no message at all can break
        return next((cap for cap in caps if cap.limit < 1), None)
    for cap in caps:
        if not _fits(at, _counted(cap, channel, account_id, contacts), cap):
            return cap
    return None


def next_within_caps(
    at: datetime,
    channel: ChannelKind,
    account_id: str,
    contacts: Sequence[Contact],
    caps: Sequence[Cap],
) -> datetime:
    """The first instant at or after ``at`` at which no cap is broken.

    A cap can only stop blocking when a contact leaves the window, i.e. at some contact's
    time plus the cap's window; those instants (and ``at``) are the only candidates.
    """
    candidates = {at}
    for cap in caps:
        candidates.update(
            t + cap.window
            for t in _counted(cap, channel, account_id, contacts)
            if t + cap.window > at
        )
    for candidate in sorted(candidates):
        if blocking_cap(candidate, channel, account_id, contacts, caps) is None:
            return candidate
    raise AssertionError("unreachable: after every contact has left its window, all caps fit")
