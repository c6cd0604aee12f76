"""Contact windows and holidays (dispatcher/domain/window.py) over the shipped packs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.window import DeferReason, Place, check, next_allowed
from dispatcher.holiday import is_holiday
from dispatcher.policy_book import PolicyBook
from tests.factory import ROOT

BOOK = PolicyBook.load(ROOT / "config" / "policies")
SMS, EMAIL, LETTER = ChannelKind.SMS, ChannelKind.EMAIL, ChannelKind.LETTER
NY = Place(("America/New_York",), "US", "NY")


def local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("pack", "place", "at", "channel", "allowed", "rule"),
    [
        # US.window.fdcpa: 08:00-21:00 local, every channel, every day.
        ("US", NY, local("America/New_York", 2026, 6, 10, 7, 59), SMS, False, "US.window.fdcpa"),
        ("US", NY, local("America/New_York", 2026, 6, 10, 8, 0), SMS, True, None),
        ("US", NY, local("America/New_York", 2026, 6, 10, 20, 59), EMAIL, True, None),
        ("US", NY, local("America/New_York", 2026, 6, 10, 21, 0), EMAIL, False, "US.window.fdcpa"),
        ("US", NY, local("America/New_York", 2026, 6, 13, 10, 0), SMS, True, None),  # Saturday
        # US.holidays: no SMS/email on Independence Day (observed Fri 3 July 2026) ...
        ("US", NY, local("America/New_York", 2026, 7, 3, 12, 0), SMS, False, "US.holidays"),
        # ... but a letter may be handed to the print house.
        ("US", NY, local("America/New_York", 2026, 7, 3, 12, 0), LETTER, True, None),
        # State holidays come from the account's region: Patriots' Day in MA only.
        (
            "US-MA",
            Place(("America/New_York",), "US", "MA"),
            local("America/New_York", 2026, 4, 20, 12, 0),
            SMS,
            False,
            "US.holidays",
        ),
        ("US", NY, local("America/New_York", 2026, 4, 20, 12, 0), SMS, True, None),
        # US-WA: RCW 19.16.250 07:30-21:00 stacked on US 08:00: the stricter start wins.
        (
            "US-WA",
            Place(("America/Los_Angeles",), "US", "WA"),
            local("America/Los_Angeles", 2026, 6, 10, 7, 45),
            SMS,
            False,
            "US.window.fdcpa",
        ),
        # UK.window.house: Mon-Sat 08:00-20:00; Sunday closed; bank holidays closed.
        (
            "UK",
            Place(("Europe/London",), "GB", None),
            local("Europe/London", 2026, 6, 14, 12, 0),
            SMS,
            False,
            "UK.window.house",
        ),
        (
            "UK",
            Place(("Europe/London",), "GB", None),
            local("Europe/London", 2026, 6, 13, 19, 59),
            SMS,
            True,
            None,
        ),
        (
            "UK",
            Place(("Europe/London",), "GB", "ENG"),
            local("Europe/London", 2026, 8, 31, 12, 0),
            EMAIL,
            False,
            "UK.holidays",
        ),
        # CN: 08:00-21:00 and PRC statutory holidays (National Day).
        (
            "CN",
            Place(("Asia/Shanghai",), "CN", None),
            local("Asia/Shanghai", 2026, 6, 10, 21, 30),
            SMS,
            False,
            "CN.window.cnifa",
        ),
        (
            "CN",
            Place(("Asia/Shanghai",), "CN", None),
            local("Asia/Shanghai", 2026, 10, 2, 10, 0),
            SMS,
            False,
            "CN.holidays",
        ),
        # default: weekdays 09:00-20:00 and the account's own holidays.
        (
            "default",
            Place(("Europe/Berlin",), "DE", None),
            local("Europe/Berlin", 2026, 6, 10, 8, 30),
            SMS,
            False,
            "default.window",
        ),
        (
            "default",
            Place(("Europe/Berlin",), "DE", None),
            local("Europe/Berlin", 2026, 12, 25, 12, 0),
            LETTER,
            False,
            "default.holidays",
        ),
    ],
)
def test_shipped_rules(
    pack: str, place: Place, at: datetime, channel: ChannelKind, allowed: bool, rule: str | None
) -> None:
    verdict = check(at, place, channel, BOOK.chain(pack), is_holiday)
    assert verdict.allowed is allowed
    assert verdict.rule_id == rule
    if not allowed:
        assert verdict.next_allowed is not None and verdict.next_allowed > at
        assert check(verdict.next_allowed, place, channel, BOOK.chain(pack), is_holiday).allowed


def test_every_candidate_zone_must_be_inside_the_window() -> None:
    # A US number with no region: New York and Honolulu. 09:00 in New York is 03:00 in
    # Honolulu, so not yet; the first instant open in both is 08:00 in Honolulu.
    place = Place(("America/New_York", "Pacific/Honolulu"), "US", None)
    at = local("America/New_York", 2026, 6, 10, 9, 0)
    verdict = check(at, place, SMS, BOOK.chain("US"), is_holiday)
    assert not verdict.allowed
    assert verdict.reason is DeferReason.QUIET_HOURS
    assert verdict.next_allowed == local("Pacific/Honolulu", 2026, 6, 10, 8, 0)


def test_quiet_hours_defer_to_the_next_morning() -> None:
    at = local("America/New_York", 2026, 6, 10, 22, 15)
    nxt = next_allowed(at, NY, SMS, BOOK.chain("US"), is_holiday)
    assert nxt == local("America/New_York", 2026, 6, 11, 8, 0)


def test_zones_without_a_shared_window_have_no_next_instant() -> None:
    # Denver, New York and Kolkata never share the UK house window (Mon-Sat 08-20).
    place = Place(("America/New_York", "America/Denver", "Asia/Kolkata"), "US", None)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    verdict = check(at, place, SMS, BOOK.chain("UK"), is_holiday)
    assert not verdict.allowed
    assert verdict.next_allowed is None


def test_holiday_defers_past_the_holiday_and_into_the_window() -> None:
    # Christmas 2026 is a Friday: the next allowed SMS is Saturday 08:00.
    at = local("America/New_York", 2026, 12, 24, 21, 30)
    nxt = next_allowed(at, NY, SMS, BOOK.chain("US"), is_holiday)
    assert nxt == local("America/New_York", 2026, 12, 26, 8, 0)


def test_spring_forward_morning_opens_at_local_eight() -> None:
    # 2026-03-08: clocks jump from 02:00 to 03:00 in New York; 08:00 EDT is 12:00 UTC.
    at = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # 00:00 EST
    assert next_allowed(at, NY, SMS, BOOK.chain("US"), is_holiday) == datetime(
        2026, 3, 8, 12, 0, tzinfo=UTC
    )


def test_half_hour_zone_is_handled() -> None:
    place = Place(("Asia/Kolkata",), "IN", None)
    at = datetime(2026, 6, 10, 2, 0, tzinfo=UTC)  # 07:30 IST, before the default 09:00
    assert next_allowed(at, place, SMS, BOOK.chain("default"), is_holiday) == datetime(
        2026, 6, 10, 3, 30, tzinfo=UTC
    )


def test_unknown_jurisdiction_gets_the_default_pack() -> None:
    assert [p.id for p in BOOK.chain("ZZ")] == ["default"]
    assert [p.id for p in BOOK.chain("US-MA")] == ["US-MA", "US"]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        check(datetime(2026, 6, 10, 12), NY, SMS, BOOK.chain("US"), is_holiday)


ZONES = st.lists(
    st.sampled_from(
        [
            "America/New_York",
            "America/Chicago",
            "America/Denver",
            "America/Phoenix",
            "America/Los_Angeles",
            "America/Anchorage",
            "Pacific/Honolulu",
            "Europe/London",
            "Asia/Shanghai",
            "Asia/Kolkata",
            "Australia/Adelaide",
            "Asia/Kathmandu",
        ]
    ),
    min_size=1,
    max_size=4,
    unique=True,
)
PACKS = st.sampled_from(["US", "US-MA", "US-WA", "UK", "CN", "default"])
INSTANTS = st.datetimes(
    min_value=datetime(2026, 1, 1),
    max_value=datetime(2027, 12, 31),
    timezones=st.just(UTC),
)


@given(
    zones=ZONES,
    pack=PACKS,
    at=INSTANTS,
    channel=st.sampled_from(list(ChannelKind)),
    country=st.sampled_from(["US", "GB", "CN", "DE"]),
)
def test_next_allowed_is_allowed_in_every_zone_and_nothing_earlier_is(
    zones: list[str], pack: str, at: datetime, channel: ChannelKind, country: str
) -> None:
    place = Place(tuple(zones), country, None)
    chain = BOOK.chain(pack)
    nxt = next_allowed(at, place, channel, chain, is_holiday)
    if nxt is None:
        # Zones too far apart to share a window: nothing in the next three days is allowed.
        for minutes in range(0, 3 * 24 * 60, 30):
            probe = at + timedelta(minutes=minutes)
            assert not check(probe, place, channel, chain, is_holiday).allowed
        return
    assert nxt >= at
    assert check(nxt, place, channel, chain, is_holiday).allowed
    for zone in zones:
        loc = nxt.astimezone(ZoneInfo(zone))
        for p in chain:
            windows = p.windows_for(channel)
            assert not windows or any(w.contains(loc) for w in windows)
    # Nothing between `at` and `nxt` is allowed: probe every 10 minutes, and at most
    # 150 evenly spaced instants over a long wait.
    step = max(timedelta(minutes=10), (nxt - at) / 150)
    probe = at
    while probe < nxt:
        assert not check(probe, place, channel, chain, is_holiday).allowed
        probe += step


@given(at=INSTANTS, pack=PACKS)
def test_allowed_instants_are_never_on_a_holiday_for_electronic_channels(
    at: datetime, pack: str
) -> None:
    place = Place(("America/New_York",), "US", "NY")
    verdict = check(at, place, SMS, BOOK.chain(pack), is_holiday)
    if verdict.allowed and any(
        h.calendar in ("US", "account")
        for p in BOOK.chain(pack)
        for h in p.holidays
        if SMS in h.channels
    ):
        assert not is_holiday("US", "NY", at.astimezone(ZoneInfo("America/New_York")).date())


def test_holiday_lookup_uses_subdivision_only_when_known() -> None:
    assert is_holiday("US", "MA", date(2026, 4, 20))
    assert not is_holiday("US", "Somewhere", date(2026, 4, 20))
