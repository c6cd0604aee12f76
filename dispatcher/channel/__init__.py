"""Channels: the one-method port every delivery adapter implements.

Adapters translate their provider's errors into :class:`~dispatcher.error.TransientDelivery`
or :class:`~dispatcher.error.PermanentDelivery` at this edge; nothing above them sees a
provider exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

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


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the provider gave back: its id for the message, and a stored artifact if any."""

    provider_message_id: str
    artifact_path: str | None = None


class Channel(Protocol):
    async def deliver(self, message: Outbound) -> Receipt:
        """Hand ``message`` over; raise TransientDelivery or PermanentDelivery on failure."""
        ...
