"""An in-memory channel: the fake that ships with the package, for tests and dry runs."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from dispatcher.channel import Found, Handover, Lookup, NotFound, Outbound, Receipt
from dispatcher.error import DeliveryError


class MemoryChannel:
    """Keeps every delivered message in ``delivered``.

    ``failures`` is a script of errors to raise, one per call, before succeeding again,
    so tests can exercise retries without a provider.
    """

    def __init__(self, failures: Iterable[DeliveryError] = ()) -> None:
        self.delivered: list[Outbound] = []
        self.attempts: list[Outbound] = []
        self._failures: deque[DeliveryError] = deque(failures)

    def fail_next(self, *errors: DeliveryError) -> None:
        self._failures.extend(errors)

    async def deliver(self, message: Outbound) -> Receipt:
        self.attempts.append(message)
        if self._failures:
            raise self._failures.popleft()
        self.delivered.append(message)
        return Receipt(provider_message_id=f"mem-{len(self.delivered)}")

    async def lookup(self, message: Handover) -> Lookup:
        """Delivered messages are found by id (a Reconciler, like the real providers)."""
        for number, delivered in enumerate(self.delivered, start=1):
            if delivered.message_id == message.message_id:
                return Found(provider_message_id=f"mem-{number}")
        return NotFound()
