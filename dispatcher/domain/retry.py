"""The retry rule: when a transiently failed message is tried again, or given up.

Pure: the caller passes ``now`` and the random ``jitter`` draw, so the rule is a table
that tests can read. The next attempt time is stored on the outbox row, so a restart
keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 60.0
    max_seconds: float = 3600.0


def next_attempt_at(
    policy: RetryPolicy, attempts: int, now: datetime, jitter: float
) -> datetime | None:
    """When to try again after ``attempts`` failed attempts, or None to give up.

    Exponential backoff (base · 2^(attempts-1), capped at ``max_seconds``) with "full
    jitter" scaled into [50 %, 100 %] of the delay, so a provider outage does not turn into
    a synchronized stampede when it ends. ``jitter`` is a draw from [0, 1].
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter {jitter} outside [0, 1]")
    if attempts >= policy.max_attempts:
        return None
    delay = min(policy.base_seconds * 2 ** (attempts - 1), policy.max_seconds)
    return now + timedelta(seconds=delay * (0.5 + 0.5 * jitter))
