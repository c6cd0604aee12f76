"""Staging: how many days past due an account is, and which stage that puts it in."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from dispatcher.domain.strategy import Stage, Strategy
from dispatcher.memo import LastObjectMemo

# The date at one ``now`` in each zone asked for: a plan asks for the same instant in the
# same few zones for every account, and the conversion costs more than the day count.
_dates: LastObjectMemo[str, date] = LastObjectMemo()


def local_date(now: datetime, timezone: str) -> date:
    """The calendar date at ``now`` in ``timezone``; ``now`` must be aware."""
    known = _dates.get(now, timezone)
    if known is not None:
        return known
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    today = now.astimezone(ZoneInfo(timezone)).date()
    _dates.put(now, timezone, today)
    return today


def days_past_due(due_date: date, timezone: str, now: datetime) -> int:
    """Whole days from the due date to ``now``'s date in the account's own time zone.

    DESIGN.md, "days past due": negative before the due date, 0 on it. Counting calendar
    dates (not 24-hour spans) keeps DST changes from adding or losing a day.
    """
    return (local_date(now, timezone) - due_date).days


def stage_for(strategy: Strategy, dpd: int) -> Stage | None:
    """The stage whose DPD range holds ``dpd``, or None between or outside stages."""
    return strategy.stage_for(dpd)
