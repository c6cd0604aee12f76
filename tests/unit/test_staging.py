from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.staging import days_past_due, stage_for
from tests.factory import shipped_strategy

NY = "America/New_York"
SH = "Asia/Shanghai"


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        # One minute before local midnight on the due date: still DPD 0.
        (datetime(2026, 3, 2, 4, 59, tzinfo=UTC), NY, 0),
        # Local midnight in New York (05:00 UTC in winter): DPD 1.
        (datetime(2026, 3, 2, 5, 0, tzinfo=UTC), NY, 1),
        # The same UTC instant is already the next day in Shanghai.
        (datetime(2026, 3, 1, 16, 0, tzinfo=UTC), SH, 1),
        (datetime(2026, 3, 1, 15, 59, tzinfo=UTC), SH, 0),
        # Before the due date: negative.
        (datetime(2026, 2, 24, 12, 0, tzinfo=UTC), NY, -5),
    ],
)
def test_dpd_counts_local_calendar_days(now: datetime, zone: str, expected: int) -> None:
    assert days_past_due(date(2026, 3, 1), zone, now) == expected


def test_dpd_across_spring_forward() -> None:
    # US DST began 2026-03-08 02:00 local; the day is 23 hours long but still one day.
    due = date(2026, 3, 7)
    before = datetime(2026, 3, 8, 4, 59, tzinfo=UTC)  # 23:59 EST on the 7th
    after_midnight = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # 00:00 EST on the 8th
    next_midnight = datetime(2026, 3, 9, 4, 0, tzinfo=UTC)  # 00:00 EDT on the 9th
    just_before = datetime(2026, 3, 9, 3, 59, tzinfo=UTC)  # 23:59 EDT on the 8th
    assert days_past_due(due, NY, before) == 0
    assert days_past_due(due, NY, after_midnight) == 1
    assert days_past_due(due, NY, just_before) == 1
    assert days_past_due(due, NY, next_midnight) == 2


def test_dpd_across_fall_back() -> None:
    # 2026-11-01 01:30 happens twice in New York; both are on the 1st.
    due = date(2026, 10, 31)
    first = datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    second = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert days_past_due(due, NY, first) == days_past_due(due, NY, second) == 1


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        days_past_due(date(2026, 3, 1), NY, datetime(2026, 3, 2, 12, 0))


@pytest.mark.parametrize(
    ("dpd", "stage"),
    [
        (-6, None),
        (-5, "pre_due"),
        (-1, "pre_due"),
        (0, None),
        (1, "early"),
        (30, "early"),
        (31, "mid"),
        (90, "mid"),
        (91, "late"),
        (180, "late"),
        (181, "pre_legal"),
        (5000, "pre_legal"),
    ],
)
def test_stage_boundaries(dpd: int, stage: str | None) -> None:
    found = stage_for(shipped_strategy(), dpd)
    assert (found.id if found else None) == stage


ZONES = st.sampled_from(
    [
        "America/New_York",
        "America/Los_Angeles",
        "Europe/London",
        "Asia/Shanghai",
        "Australia/Lord_Howe",
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
        "UTC",
    ]
)


@given(
    due=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 1, 1)),
    instant=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2099, 1, 1),
        timezones=st.just(UTC),
    ),
    zone=ZONES,
)
def test_dpd_is_the_local_date_difference(due: date, instant: datetime, zone: str) -> None:
    local = instant.astimezone(ZoneInfo(zone)).date()
    assert days_past_due(due, zone, instant) == (local - due).days


@given(
    due=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 1, 1)),
    instant=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2099, 1, 1),
        timezones=st.just(UTC),
    ),
    zone=ZONES,
    hours=st.integers(min_value=0, max_value=24 * 400),
)
def test_dpd_never_decreases_as_time_passes(
    due: date, instant: datetime, zone: str, hours: int
) -> None:
    later = instant + timedelta(hours=hours)
    assert days_past_due(due, zone, later) >= days_past_due(due, zone, instant)
    # and never jumps by more than the calendar days elapsed, plus one for the zone edge
    assert days_past_due(due, zone, later) - days_past_due(due, zone, instant) <= hours // 24 + 1
