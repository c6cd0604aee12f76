"""Channels: the one-method port every delivery adapter implements.

Adapters translate their provider's errors into :class:`~dispatcher.error.TransientDelivery`
or :class:`~dispatcher.error.PermanentDelivery` at this edge; nothing above them sees a
provider exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
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
    # No late arrival (rule sms.validity.window): counted from the hand-over, how long the
    # provider may keep trying; past it the message must be dropped, not delivered late.
    # Set by the sender for SMS just before ``deliver``; channels that can, pass it on.
    valid_for: timedelta | None = None
    stage: str = ""
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the provider gave back: its id for the message, and a stored artifact if any."""

    provider_message_id: str
    artifact_path: str | None = None
    # True: the channel keeps the message durably and hands it over later, in a batch
    # (a BatchChannel); the message stays ``sending`` until the channel reports it handed.
    deferred: bool = False


class Channel(Protocol):
    async def deliver(self, message: Outbound) -> Receipt:
        """Hand ``message`` over; raise TransientDelivery or PermanentDelivery on failure."""
        ...


@dataclass(frozen=True, slots=True)
class HandedLetter:
    """One letter of a handed-over print batch: where it starts in the batch and how
    many pages it has, the SHA-256 of its own PDF and where that PDF is archived."""

    message_id: str
    account_id: str
    attempt: int
    first_page: int
    pages: int
    sha256: str
    artifact_path: str


@dataclass(frozen=True, slots=True)
class PrintBatch:
    """A batch that is complete in the print house's drop folder."""

    batch_id: str
    stage: str
    mail_class: str
    letters: tuple[HandedLetter, ...]


@runtime_checkable
class BatchChannel(Protocol):
    """A channel that keeps what it is given and hands it over in batches (print house).

    ``deliver`` stores the message durably and returns a ``deferred`` receipt;
    ``hand_over`` closes batches (including any left by a run that crashed) and raises
    TransientDelivery when the destination cannot take them; ``handed`` lists batches
    handed over but not yet acknowledged; ``acknowledge`` is called once the batch's
    messages are recorded, so each is reported until recorded and then never again;
    ``pending`` names the messages kept but not yet acknowledged.
    """

    async def deliver(self, message: Outbound) -> Receipt: ...

    async def hand_over(self, now: datetime) -> None: ...

    def handed(self) -> list[PrintBatch]: ...

    def acknowledge(self, batch_id: str) -> None: ...

    def pending(self) -> set[str]: ...


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
