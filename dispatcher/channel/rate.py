"""Send rates: a token bucket per sender (a Twilio number or messaging service, an SMTP
server), so we never hand over faster than the provider or the carriers accept.

Carriers count SMS in *segments*, not messages: a 3-segment message costs three of a
US long code's 1 segment/s. The bucket is :class:`aiolimiter.AsyncLimiter` (a leaky
bucket on the event loop's clock); this wrapper adds what it lacks:

- a weight above the bucket's capacity (a 3-segment SMS on a 1/s number) is taken in
  capacity-sized parts, one after the other, instead of being refused;
- a bucket per event loop: aiolimiter must not be shared across loops, and a CLI
  process or a test may run several loops one after the other with the same channel.

The burst is a tenth of a second's worth, at least one unit: units are spaced about
1/rate apart, so no window of a second carries more than 1.1 x rate (+1) units (a burst of
a second's worth would allow twice the rate in the first second, and carriers count per
second, not on average). The tenth is what keeps the measured rate at the limit: with a
burst of one, every late wake-up of the event loop is capacity lost for good (the bucket
cannot go below empty), which cost about 6 % at 50/s (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio

from aiolimiter import AsyncLimiter


class RateLimit:
    """``per_second`` units a second, spaced evenly (a burst of a tenth of a second)."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError(f"a rate must be positive, not {per_second}")
        self.per_second = per_second
        self.capacity = max(1.0, per_second / 10)
        self._limiter: AsyncLimiter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bucket(self) -> AsyncLimiter:
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._loop is not loop:
            self._limiter = AsyncLimiter(self.capacity, self.capacity / self.per_second)
            self._loop = loop
        return self._limiter

    async def take(self, units: float = 1.0) -> None:
        """Wait until ``units`` may go (a message, or an SMS's segments), then take them."""
        bucket = self._bucket()
        while units > 0:
            part = min(units, self.capacity)
            await bucket.acquire(part)
            units -= part


def rate_limit(per_second: float) -> RateLimit | None:
    """The bucket for a configured rate; 0 means no limit of ours (the provider's own)."""
    return RateLimit(per_second) if per_second > 0 else None
