"""Message identity and life cycle."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum

from dispatcher.domain.strategy import ChannelKind


class MessageStatus(StrEnum):
    """Where a message is in its life.

    held → queued → sending → sent (a letter for the print house: sending →
    handed_to_print once its print batch is in the drop folder, docs/DELIVERY.md);
    sending → queued (transient failure, retry later) or failed (permanent, or attempts
    exhausted). held/queued → expired (stage left, account cured, cycle ended) or
    cancelled. skipped: never sent because a later step on the same channel superseded
    it. sending → unknown: the provider may or may not have it (a crash or a lost
    connection mid-hand-over on a channel that cannot be looked up); a person decides
    (``dispatcher messages resolve``: → sent, or → queued to send again). Every status is
    kept; nothing is deleted.
    """

    HELD = "held"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    HANDED_TO_PRINT = "handed_to_print"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"

    @property
    def pending(self) -> bool:
        """Still waiting to go out: the planner and sender may change it."""
        return self in (MessageStatus.HELD, MessageStatus.QUEUED)

    @property
    def went_out(self) -> bool:
        """Handed over for good (to the provider, or to the print house): counts for caps,
        supersedes older steps and is never sent again."""
        return self in WENT_OUT


WENT_OUT: tuple[MessageStatus, ...] = (MessageStatus.SENT, MessageStatus.HANDED_TO_PRINT)
"""The statuses of a message that went out; cap and idempotency checks count these."""

NOT_DELIVERED = frozenset({"failed", "undelivered"})
"""Delivery statuses a provider reports (Twilio's status callbacks, docs/DELIVERY.md) for a
message it was handed but could not bring to the handset: ``undelivered`` (the carrier
refused or could not deliver it) and ``failed`` (it could not be sent on). The message
stays ``sent`` (we did hand it over); for ops it never reached the customer. Twilio's
``canceled`` is left out: it only ends a message scheduled at Twilio, which we never do."""


@dataclass(frozen=True, slots=True, order=True)
class MessageKey:
    """The idempotency key (account, stage, step, channel, cycle) from DESIGN.md.

    A message is never created twice for one key; ``message_id`` derives from it so a
    replayed plan collides with, rather than duplicates, what it already wrote.
    """

    account_id: str
    cycle: int
    stage: str
    step: str
    channel: ChannelKind
    # The message id, worked out on first use: a plan asks for it several times per key.
    _id: str = field(default="", init=False, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.account_id}|{self.cycle}|{self.stage}|{self.step}|{self.channel.value}"

    @property
    def message_id(self) -> str:
        if not self._id:
            object.__setattr__(self, "_id", hashlib.sha256(str(self).encode()).hexdigest()[:32])
        return self._id
