"""No late arrival (rule sms.validity.window): when the open contact window closes
(dispatcher/domain/window.py: window_end) and how long an SMS may be tried
(dispatcher/domain/validity.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.validity import PROVIDER_MAX, validity
from dispatcher.domain.window import HolidayRule, Pack, Place, check, window_end
from dispatcher.holiday import is_holiday
from tests.unit.test_window import BOOK, INSTANTS, NY, PACKS, ZONES, local

SMS = ChannelKind.SMS
NY_LA = Place(("America/New_York", "America/Los_Angeles"), "US", None)


@pytest.mark.parametrize(
    ("pack", "place", "at", "end"),
    [
        # US.window.fdcpa closes at 21:00 local.
        ("US", NY, local("America/New_York", 2026, 6, 10, 11, 0), ("America/New_York", 21)),
        ("US", NY, local("America/New_York", 2026, 6, 10, 20, 59), ("America/New_York", 21)),
        # In every candidate zone: New York closes first (21:00 there is 18:00 in LA).
        ("US", NY_LA, local("America/New_York", 2026, 6, 10, 12, 0), ("America/New_York", 21)),
        # UK.window.house closes at 20:00; default.window at 20:00 on a Friday.
        (
            "UK",
            Place(("Europe/London",), "GB", None),
            local("Europe/London", 2026, 6, 13, 19, 0),
            ("Europe/London", 20),
        ),
        (
            "default",
            Place(("Europe/Berlin",), "DE", None),
            local("Europe/Berlin", 2026, 6, 12, 9, 30),
            ("Europe/Berlin", 20),
        ),
        # The evening before a holiday the window still closes at 21:00.
        ("US", NY, local("America/New_York", 2026, 7, 2, 20, 0), ("America/New_York", 21)),
        # Closed now: nothing to end.
        ("US", NY, local("America/New_York", 2026, 6, 10, 21, 0), None),
        ("US", NY, local("America/New_York", 2026, 7, 3, 12, 0), None),  # holiday
    ],
)
def test_window_end_of_the_shipped_packs(
    pack: str, place: Place, at: datetime, end: tuple[str, int] | None
) -> None:
    found = window_end(at, place, SMS, BOOK.chain(pack), is_holiday)
    if end is None:
        assert found is None
        return
    zone, hour = end
    expected = at.astimezone(ZoneInfo(zone)).replace(hour=hour, minute=0)
    assert found == expected.astimezone(UTC)


def test_a_holiday_ends_the_period_at_local_midnight() -> None:
    # A pack with no windows, only a holiday rule: allowed all day until the holiday.
    pack = Pack("T", "test", holidays=(HolidayRule("T.h", "test", "US", frozenset({SMS})),))
    at = local("America/New_York", 2026, 7, 2, 12, 0)  # Independence Day observed: 3 July
    found = window_end(at, NY, SMS, (pack,), is_holiday)
    assert found == local("America/New_York", 2026, 7, 3, 0, 0).astimezone(UTC)


def test_no_rule_ever_closing_means_no_end() -> None:
    at = local("America/New_York", 2026, 6, 10, 12, 0)
    assert window_end(at, NY, SMS, (Pack("open", "no rules"),), is_holiday) is None


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        window_end(datetime(2026, 6, 10, 12), NY, SMS, BOOK.chain("US"), is_holiday)
    with pytest.raises(ValueError, match="aware"):
        validity(datetime(2026, 6, 10, 12), None, minimum=timedelta(seconds=60))


T = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)
MIN = timedelta(seconds=300)


@pytest.mark.parametrize(
    ("end", "go", "seconds"),
    [
        (T + timedelta(hours=2), True, 7200),
        (T + timedelta(hours=11), True, 36_000),  # never more than Twilio keeps it
        (None, True, 36_000),  # no end ahead: Twilio's maximum
        (T + timedelta(seconds=300.9), True, 300),  # whole seconds, rounded down
        (T + timedelta(seconds=300), True, 300),  # exactly the minimum goes
        (T + timedelta(seconds=299.9), False, None),  # less than the minimum waits
        (T, False, None),
        (T - timedelta(seconds=5), False, None),  # already closed
    ],
)
def test_validity(end: datetime | None, go: bool, seconds: int | None) -> None:
    v = validity(T, end, minimum=MIN)
    assert v.go is go
    if go:
        assert v.valid_for == timedelta(seconds=seconds or 0)
        assert v.until == T + timedelta(seconds=seconds or 0)
    else:
        assert v.valid_for is None and v.until is None


@given(zones=ZONES, pack=PACKS, at=INSTANTS, minimum=st.integers(1, 3600))
def test_a_message_handed_over_with_its_validity_never_lands_after_the_window(
    zones: list[str], pack: str, at: datetime, minimum: int
) -> None:
    """Handed over at ``at`` with validity ``v``, a message can arrive at any instant of
    [at, at + v]: each of them is inside the window in every zone, and the window end
    itself is not."""
    place = Place(tuple(zones), "US", None)
    chain = BOOK.chain(pack)
    end = window_end(at, place, SMS, chain, is_holiday)
    if not check(at, place, SMS, chain, is_holiday).allowed:
        assert end is None
        return
    assert end is not None and end > at  # every shipped pack has windows
    assert not check(end, place, SMS, chain, is_holiday).allowed
    v = validity(at, end, minimum=timedelta(seconds=minimum))
    if not v.go:
        assert end - at < timedelta(seconds=minimum)
        return
    assert v.valid_for is not None and v.until is not None
    assert v.valid_for <= PROVIDER_MAX
    assert v.until <= end
    # Every instant the provider may still deliver at is allowed: probe every 10 minutes
    # (at most 150 probes) and the last second.
    step = max(timedelta(minutes=10), v.valid_for / 150)
    probe = at
    while probe < v.until:
        assert check(probe, place, SMS, chain, is_holiday).allowed, probe
        probe += step
    last = v.until - timedelta(seconds=1)
    assert last < at or check(last, place, SMS, chain, is_holiday).allowed
