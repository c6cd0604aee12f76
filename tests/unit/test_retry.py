from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.retry import RetryPolicy, next_attempt_at

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=5, base_seconds=60, max_seconds=600)


@pytest.mark.parametrize(
    ("attempts", "jitter", "delay"),
    [(1, 1.0, 60), (1, 0.0, 30), (2, 1.0, 120), (3, 1.0, 240), (4, 1.0, 480), (4, 0.0, 240)],
)
def test_backoff_doubles_with_jitter(attempts: int, jitter: float, delay: float) -> None:
    assert next_attempt_at(POLICY, attempts, NOW, jitter) == NOW + timedelta(seconds=delay)


def test_gives_up_after_max_attempts() -> None:
    assert next_attempt_at(POLICY, 5, NOW, 0.5) is None


def test_delay_is_capped() -> None:
    policy = RetryPolicy(max_attempts=50, base_seconds=60, max_seconds=600)
    assert next_attempt_at(policy, 30, NOW, 1.0) == NOW + timedelta(seconds=600)


@given(attempts=st.integers(1, 4), jitter=st.floats(0, 1))
def test_next_attempt_is_always_in_the_future(attempts: int, jitter: float) -> None:
    nxt = next_attempt_at(POLICY, attempts, NOW, jitter)
    assert nxt is not None and nxt > NOW


def test_jitter_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="jitter"):
        next_attempt_at(POLICY, 1, NOW, 1.5)
