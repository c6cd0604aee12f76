"""Contact windows and holidays: *when* an account may be contacted, per policy pack.

Pure: the caller passes ``now``, the account's candidate time zones and a holiday lookup.
A message may go only when it is inside the window **in every candidate zone** (the
conservative reading of Reg F 12 CFR 1006.6(b)(1)(i) when the consumer's location is
uncertain) and no candidate zone's local date is a holiday of a calendar that covers the
channel. When it may not, :func:`next_allowed` gives the exact next instant it may, so a
deferred message is deferred, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from dispatcher.domain.cap import Cap
from dispatcher.domain.strategy import ChannelKind

# (calendar, subdivision or None, local date) -> is it a holiday there?
HolidayLookup = Callable[[str, str | None, date], bool]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Look this far ahead for the next allowed instant. Nothing allowed in three weeks means
# no usable window (zones too far apart, or a pack that never opens): a hold, not a wait.
HORIZON_DAYS = 21


class DeferReason(StrEnum):
    QUIET_HOURS = "quiet_hours"
    HOLIDAY = "holiday"


@dataclass(frozen=True, slots=True)
class Window:
    """Contact allowed on ``days`` from ``start`` (inclusive) to ``end`` (exclusive), local."""

    id: str
    source: str
    channels: frozenset[ChannelKind]
    days: frozenset[int]  # 0 = Monday, as date.weekday()
    start: time
    end: time

    def contains(self, local: datetime) -> bool:
        return local.weekday() in self.days and self.start <= local.time() < self.end


@dataclass(frozen=True, slots=True)
class HolidayRule:
    """No contact on ``calendar``'s public holidays over ``channels``.

    ``calendar`` is an ISO country code for the ``holidays`` package, or ``"account"`` for
    the account's own country; the account's region is used as the subdivision.
    """

    id: str
    source: str
    calendar: str
    channels: frozenset[ChannelKind]


@dataclass(frozen=True, slots=True)
class Pack:
    """One jurisdiction's timing rules. Packs stack: every pack in the chain must allow."""

    id: str
    description: str
    windows: tuple[Window, ...] = ()
    holidays: tuple[HolidayRule, ...] = ()
    caps: tuple[Cap, ...] = ()

    def windows_for(self, channel: ChannelKind) -> tuple[Window, ...]:
        return tuple(w for w in self.windows if channel in w.channels)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether contact is allowed now; if not, why (reason, rule id) and when it may be."""

    allowed: bool
    reason: str | None = None  # a DeferReason, or a cap's reason code such as cap_sms_7d
    rule_id: str | None = None
    next_allowed: datetime | None = None


@dataclass(frozen=True, slots=True)
class Place:
    """Where the customer may be: every candidate zone, plus country/region for holidays."""

    zones: tuple[str, ...]
    country: str | None
    region: str | None


def _blocked(
    at: datetime, place: Place, channel: ChannelKind, chain: Sequence[Pack],
    is_holiday: HolidayLookup,
) -> tuple[DeferReason, str] | None:  # fmt: skip
    """The first rule that forbids contact at ``at``, or None when every rule allows it."""
    for zone in place.zones:
        local = at.astimezone(ZoneInfo(zone))
        for pack in chain:
            windows = pack.windows_for(channel)
            if windows and not any(w.contains(local) for w in windows):
                return DeferReason.QUIET_HOURS, windows[0].id
            for rule in pack.holidays:
                if channel not in rule.channels:
                    continue
                calendar = place.country if rule.calendar == "account" else rule.calendar
                if calendar and is_holiday(calendar, place.region, local.date()):
                    return DeferReason.HOLIDAY, rule.id
    return None


def _candidates(now: datetime, place: Place, chain: Sequence[Pack], days: range) -> list[datetime]:
    """Every instant at which the allowed set can begin: window starts and midnights.

    The earliest allowed instant after ``now`` is ``now`` itself or one of these, because
    the allowed set is an intersection of unions of intervals that open at them.
    """
    starts = {w.start for pack in chain for w in pack.windows} | {time(0, 0)}
    found = {now} if days.start == 0 else set()
    return sorted(found | _local_instants(now, place, starts, days))


def _local_instants(now: datetime, place: Place, times: set[time], days: range) -> set[datetime]:
    """Each of ``times`` on each of ``days`` (offsets from ``now``'s local date), in every
    candidate zone, that comes after ``now``."""
    found: set[datetime] = set()
    for zone in place.zones:
        tz = ZoneInfo(zone)
        first = now.astimezone(tz).date()
        for offset in days:
            day = first + timedelta(days=offset)
            for at in times:
                instant = datetime.combine(day, at, tzinfo=tz)
                if instant > now:
                    found.add(instant)
    return found


def check(
    now: datetime, place: Place, channel: ChannelKind, chain: Sequence[Pack],
    is_holiday: HolidayLookup,
) -> Verdict:  # fmt: skip
    """May ``channel`` be used at ``now`` for a customer at ``place`` under ``chain``?

    Enforces each pack's windows (e.g. US.window.fdcpa: FDCPA §805(a)(1), 08:00-21:00 local)
    and holiday rules, in every candidate zone. When blocked, ``next_allowed`` is the exact
    first instant at which every rule allows it.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    blocked = _blocked(now, place, channel, chain, is_holiday)
    if blocked is None:
        return Verdict(allowed=True)
    reason, rule_id = blocked
    return Verdict(False, reason, rule_id, next_allowed(now, place, channel, chain, is_holiday))


def next_allowed(
    now: datetime,
    place: Place,
    channel: ChannelKind,
    chain: Sequence[Pack],
    is_holiday: HolidayLookup,
) -> datetime | None:
    """The first instant at or after ``now`` when contact is allowed, or None when there is
    none within :data:`HORIZON_DAYS` (e.g. candidate zones too far apart to share a window:
    then the message is held as ``no_contact_window`` for a person to resolve)."""
    return _first(
        lambda days: _candidates(now, place, chain, days),
        lambda at: _blocked(at, place, channel, chain, is_holiday) is None,
    )


def _first(
    instants: Callable[[range], list[datetime]], wanted: Callable[[datetime], bool]
) -> datetime | None:
    """The first of ``instants`` (for day offsets up to :data:`HORIZON_DAYS`) that is
    ``wanted``, in UTC. Most answers lie within two days (a night, a weekend day), so those
    are looked at first and further days only if need be."""
    for days in (range(0, 3), range(3, HORIZON_DAYS + 1)):
        for candidate in instants(days):
            if wanted(candidate):
                return candidate.astimezone(UTC)
    return None


def _closings(now: datetime, place: Place, chain: Sequence[Pack], days: range) -> list[datetime]:
    """Every instant after ``now`` at which an allowed period can end: window ends and
    midnights (a weekday or a holiday begins at local midnight), in every candidate zone.

    Between two of these nothing that the rules look at changes, so an allowed period
    that holds at ``now`` lasts until the first of them at which some rule forbids.
    """
    ends = {w.end for pack in chain for w in pack.windows} | {time(0, 0)}
    return sorted(_local_instants(now, place, ends, days))


def window_end(
    now: datetime,
    place: Place,
    channel: ChannelKind,
    chain: Sequence[Pack],
    is_holiday: HolidayLookup,
) -> datetime | None:
    """When the allowed period that holds at ``now`` ends: the first instant after ``now``
    at which some window or holiday rule forbids contact (in any candidate zone).

    What "no late arrival" needs (rule ``sms.validity.window``): a message handed over at
    ``now`` must reach the customer before this instant, so the provider is told to drop
    it by then. None when contact is not allowed at ``now`` at all (nothing to end), or
    when nothing forbids it within :data:`HORIZON_DAYS` (a pack without windows).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if _blocked(now, place, channel, chain, is_holiday) is not None:
        return None
    return _first(
        lambda days: _closings(now, place, chain, days),
        lambda at: _blocked(at, place, channel, chain, is_holiday) is not None,
    )
