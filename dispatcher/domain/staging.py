"""Staging: how many days past due an account is, and which stage that puts it in."""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from dispatcher.domain.strategy import Stage, Strategy


@lru_cache(maxsize=4096)
def local_date(now: datetime, timezone: str) -> date:
    """The calendar date at ``now`` in ``timezone``; ``now`` must be aware.

    Memoised (pure; a plan asks it for one ``now`` and a few dozen zones, once per
    account and message).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(ZoneInfo(timezone)).date()


def days_past_due(due_date: date, timezone: str, now: datetime) -> int:
    """Whole days from the due date to ``now``'s date in the account's own time zone.

    DESIGN.md, "days past due": negative before the due date, 0 on it. Counting calendar
    dates (not 24-hour spans) keeps DST changes from adding or losing a day.
    """
    return (local_date(now, timezone) - due_date).days


def stage_for(strategy: Strategy, dpd: int) -> Stage | None:
    """The stage whose DPD range holds ``dpd``, or None between or outside stages."""
    return strategy.stage_for(dpd)
