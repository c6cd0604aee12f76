"""Channels: the one-method port every delivery adapter implements.

Adapters translate their provider's errors into :class:`~dispatcher.error.TransientDelivery`
or :class:`~dispatcher.error.PermanentDelivery` at this edge; nothing above them sees a
provider exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from dispatcher.domain.strategy import ChannelKind


@dataclass(frozen=True, slots=True)
class Outbound:
    """A rendered message ready to hand over."""

    message_id: str
    account_id: str
    channel: ChannelKind
    recipient: str
    body: str
    subject: str | None = None
    body_html: str | None = None
    locale: str | None = None
    unsubscribe_url: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the provider gave back: its id for the message, and a stored artifact if any."""

    provider_message_id: str
    artifact_path: str | None = None


class Channel(Protocol):
    async def deliver(self, message: Outbound) -> Receipt:
        """Hand ``message`` over; raise TransientDelivery or PermanentDelivery on failure."""
        ...


@dataclass(frozen=True, slots=True)
class Handover:
    """A message whose hand-over was interrupted (the process died, or no answer came):
    what a lookup at the provider needs to find it."""

    message_id: str
    recipient: str
    body: str
    # When the message was claimed (marked ``sending``): the provider cannot have
    # received it before then.
    claimed_at: datetime
    # Provider ids already recorded for other messages: a match among them is not ours.
    known_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Found:
    """The provider has the message: it was handed over."""

    provider_message_id: str
    artifact_path: str | None = None


@dataclass(frozen=True, slots=True)
class NotFound:
    """The provider has no such message: it never arrived, so sending it again is safe."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """The provider could not be asked (outage, timeout): try the lookup again later."""

    reason: str


Lookup = Found | NotFound | Unknown


@runtime_checkable
class Reconciler(Protocol):
    """A channel that can tell whether an interrupted message reached its provider.

    Channels that cannot (SMTP: a server keeps no list we can query) do not implement
    it; their interrupted messages become ``unknown`` for a person to decide.
    """

    async def lookup(self, message: Handover) -> Lookup:
        """Look ``message`` up at the provider; never raises for provider errors."""
        ...
