"""The clock port: the only place that reads the wall clock.

The pure core never calls ``datetime.now()``; services ask a :class:`Clock`, and every
command accepts ``--now`` so a run can be replayed (DESIGN.md, "Command line").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from dispatcher.error import InputError


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time, timezone-aware."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FixedClock:
    """A clock stopped at one instant: what ``--now`` gives, and what tests use."""

    at: datetime

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise InputError(f"time {self.at.isoformat()} has no UTC offset")

    def now(self) -> datetime:
        return self.at


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 instant for ``--now``; an offset (or ``Z``) is required.

    A naive time would be read in the machine's zone, which silently shifts contact
    windows; we refuse it instead.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(f"--now {text!r} is not an ISO 8601 time: {exc}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InputError(f"--now {text!r} has no UTC offset; write e.g. {text}Z or {text}+08:00")
    return value


class RunningClock:
    """A clock that starts at a given instant and runs at real pace (``serve --now``):
    a rehearsal of a given day, or a test, without touching the machine's clock."""

    def __init__(self, start: datetime) -> None:
        FixedClock(start)  # the same check: an instant needs its offset
        self._start = start
        self._origin = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._origin)
