"""The send-rate bucket, on an event loop with a fake clock (looptime): no real waiting,
and the times are exact, so the tests state the rule itself."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import looptime
import pytest

from dispatcher.channel.rate import RateLimit, rate_limit

T = TypeVar("T")


def near(expected: object) -> object:
    # looptime's clock has microsecond resolution.
    return pytest.approx(expected, abs=1e-5)


def on_fake_clock(coroutine: Coroutine[Any, Any, T]) -> T:
    loop = looptime.new_event_loop(start=0.0)
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


async def take_all(bucket: RateLimit, weights: list[float]) -> list[float]:
    """Take each weight in turn; the fake time at which each one was granted."""
    loop = asyncio.get_running_loop()
    granted = []
    for weight in weights:
        await bucket.take(weight)
        granted.append(loop.time())
    return granted


def test_one_a_second_grants_one_each_second() -> None:
    times = on_fake_clock(take_all(RateLimit(1.0), [1] * 5))

    assert times == near([0, 1, 2, 3, 4])


def test_a_three_segment_sms_costs_three_seconds_on_a_long_code() -> None:
    # A 1 segment/s number: 3-segment message, then a 1-segment one.
    times = on_fake_clock(take_all(RateLimit(1.0), [3, 1]))

    assert times == near([2, 3])


def test_a_toll_free_number_sends_three_segments_a_second() -> None:
    times = on_fake_clock(take_all(RateLimit(3.0), [1] * 9))

    # One every third of a second, evenly: never a burst of a second's worth.
    assert times == near([n / 3 for n in range(9)])


def test_concurrent_takers_share_one_rate() -> None:
    bucket = RateLimit(2.0)

    async def many() -> list[float]:
        loop = asyncio.get_running_loop()

        async def one() -> float:
            await bucket.take()
            return loop.time()

        return sorted(await asyncio.gather(*(one() for _ in range(10))))

    times = on_fake_clock(many())

    assert times == near([n / 2 for n in range(10)])  # 10 at 2/s, one every half second


def test_a_bucket_works_again_on_a_new_event_loop() -> None:
    bucket = RateLimit(1.0)
    assert on_fake_clock(take_all(bucket, [1, 1])) == near([0, 1])
    # A CLI process runs one loop per command: the next starts with a full bucket.
    assert on_fake_clock(take_all(bucket, [1, 1])) == near([0, 1])


def test_the_burst_is_a_tenth_of_a_second_and_at_least_one_unit() -> None:
    # Short code 100/s: 10 may go at once; a long code (1/s) and toll-free (3/s): one.
    assert [RateLimit(r).capacity for r in (100.0, 30.0, 3.0, 1.0, 0.5)] == [
        10.0,
        3.0,
        1.0,
        1.0,
        1.0,
    ]


def test_zero_means_no_limit_and_a_negative_rate_is_refused() -> None:
    assert rate_limit(0) is None
    assert isinstance(rate_limit(1.5), RateLimit)
    with pytest.raises(ValueError, match="positive"):
        RateLimit(-1)


WEIGHTS = [1, 3, 1, 1, 2, 5, 1, 1, 1, 4, 2, 1, 3, 3, 1, 1, 1, 1, 2, 1] * 3


# Rates the fake clock copes with: with faster ones (10/s and up) aiolimiter's next
# wake-up can round to the current fake instant (microsecond steps) and the fake loop
# never moves on, which a real clock (always moving) does not suffer.
@pytest.mark.parametrize("rate", [0.5, 1.0, 2.0, 3.0])
def test_no_window_of_a_second_or_more_carries_more_than_the_rate_allows(rate: float) -> None:
    # Rates as configured (long code 1, toll-free 3, a pool); SMS of 1-5 segments. The
    # short code's 100/s is measured on the real clock by `python -m bench deliver`.
    bucket = RateLimit(rate)
    times = on_fake_clock(take_all(bucket, [float(w) for w in WEIGHTS]))

    # Units granted from t_i to t_j never exceed the burst plus what the rate refills.
    for i in range(len(times)):
        units = 0.0
        for j in range(i, len(times)):
            units += WEIGHTS[j]
            window = times[j] - times[i]
            assert units <= bucket.capacity + rate * window + WEIGHTS[i] + 1e-4
    # And it is no slower than it must be: the whole run takes what the rate says.
    assert times[-1] <= max(0.0, (sum(WEIGHTS) - bucket.capacity) / rate) + 1e-4
