"""Frequency caps (dispatcher/domain/cap.py) and their schedule with windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.cap import Cap, CapScope, Contact, blocking_cap, next_within_caps
from dispatcher.domain.schedule import schedule
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.window import Place
from dispatcher.holiday import is_holiday
from dispatcher.policy_book import PolicyBook
from tests.factory import ROOT

SMS, EMAIL, LETTER = ChannelKind.SMS, ChannelKind.EMAIL, ChannelKind.LETTER
T0 = datetime(2026, 6, 10, 14, 0, tzinfo=UTC)
H, D = timedelta(hours=1), timedelta(days=1)
SMS_DAY = Cap("t.sms_day", "test", frozenset({SMS}), 1, D)
SMS_WEEK = Cap("t.sms_week", "test", frozenset({SMS}), 3, 7 * D)
ALL_WEEK_ACCOUNT = Cap("t.all", "test", frozenset(ChannelKind), 2, 7 * D, CapScope.ACCOUNT)
BOOK = PolicyBook.load(ROOT / "config" / "policies")


def sms(at: datetime, account: str = "A") -> Contact:
    return Contact(at, SMS, account)


@pytest.mark.parametrize(
    ("contacts", "caps", "at", "channel", "blocked_by"),
    [
        ([], [SMS_DAY], T0, SMS, None),
        ([sms(T0 - 23 * H)], [SMS_DAY], T0, SMS, "t.sms_day"),
        ([sms(T0 - D)], [SMS_DAY], T0, SMS, None),  # exactly a day later is allowed
        # A queued SMS tomorrow morning also counts: today's may not come within a day of it.
        ([sms(T0 + 20 * H)], [SMS_DAY], T0, SMS, "t.sms_day"),
        ([sms(T0 - 23 * H)], [SMS_DAY], T0, EMAIL, None),  # other channels do not count
        ([sms(T0 - 6 * D), sms(T0 - 4 * D), sms(T0 - 2 * D)], [SMS_WEEK], T0, SMS, "t.sms_week"),
        ([sms(T0 - 7 * D), sms(T0 - 4 * D), sms(T0 - 2 * D)], [SMS_WEEK], T0, SMS, None),
        # Per-person scope counts the person's other accounts; account scope does not.
        ([sms(T0 - H, "B")], [SMS_DAY], T0, SMS, "t.sms_day"),
        (
            [Contact(T0 - H, EMAIL, "B"), Contact(T0 - 2 * H, LETTER, "B")],
            [ALL_WEEK_ACCOUNT],
            T0,
            SMS,
            None,
        ),
        (
            [Contact(T0 - H, EMAIL, "A"), Contact(T0 - 2 * H, LETTER, "A")],
            [ALL_WEEK_ACCOUNT],
            T0,
            SMS,
            "t.all",
        ),
    ],
)
def test_caps(
    contacts: list[Contact],
    caps: list[Cap],
    at: datetime,
    channel: ChannelKind,
    blocked_by: str | None,
) -> None:
    cap = blocking_cap(at, channel, "A", contacts, caps)
    assert (cap.id if cap else None) == blocked_by


def test_next_instant_is_when_the_oldest_contact_leaves_the_window() -> None:
    contacts = [sms(T0 - 6 * D), sms(T0 - 4 * D), sms(T0 - 2 * D)]
    assert next_within_caps(T0, SMS, "A", contacts, [SMS_WEEK]) == T0 + D


def test_reason_codes() -> None:
    assert SMS_WEEK.reason == "cap_sms_7d"
    assert SMS_DAY.reason == "cap_sms_1d"
    assert Cap("g", "s", frozenset({SMS, EMAIL}), 1, H).reason == "cap_email_sms_1h"
    assert ALL_WEEK_ACCOUNT.reason == "cap_all_7d"


def test_massachusetts_allows_two_texts_a_week() -> None:
    place = Place(("America/New_York",), "US", "MA")
    two = [sms(T0 - 3 * D), sms(T0 - 1 * D - H)]
    chain = BOOK.chain("US-MA")
    verdict = schedule(T0, place, SMS, "A", chain, is_holiday, two)
    assert not verdict.allowed
    assert (verdict.reason, verdict.rule_id) == ("cap_sms_7d", "US-MA.cap.texts")
    # The first of the two leaves the 7-day window 4 days from now, at 11:00 EDT.
    assert verdict.next_allowed == T0 + 4 * D
    # The federal pack alone would allow a third text this week.
    assert schedule(T0, place, SMS, "A", BOOK.chain("US"), is_holiday, two).allowed


def test_cap_and_window_together_find_an_instant_both_allow() -> None:
    # Last SMS yesterday 23:30 UTC (19:30 EDT): the day cap frees at 23:30 UTC today, which
    # is 19:30 EDT, inside the window.
    place = Place(("America/New_York",), "US", "NY")
    contacts = [sms(T0 - D + 9.5 * H)]
    verdict = schedule(T0, place, SMS, "A", BOOK.chain("US"), is_holiday, contacts)
    assert verdict.next_allowed == T0 + 9.5 * H
    # Last SMS yesterday 01:30 UTC (21:30 EDT the day before): frees 01:30 UTC, but that
    # is 21:30 EDT, after the window, so tomorrow 08:00 EDT.
    late = [sms(T0 - D + 11.5 * H)]
    verdict = schedule(T0, place, SMS, "A", BOOK.chain("US"), is_holiday, late)
    assert verdict.next_allowed == datetime(2026, 6, 11, 12, 0, tzinfo=UTC)


def _brute_force_fits(at: datetime, times: list[datetime], cap: Cap) -> bool:
    """Oracle: slide a window start over every minute around ``at``."""
    start = at - cap.window
    while start <= at:
        if start <= at < start + cap.window:
            inside = sum(1 for t in times if start <= t < start + cap.window)
            if inside + 1 > cap.limit:
                return False
        start += timedelta(minutes=30)
    return True


OFFSETS = st.lists(st.integers(min_value=-14 * 48, max_value=14 * 48), max_size=8)


@given(offsets=OFFSETS, limit=st.integers(1, 4), days=st.integers(1, 7))
def test_exact_check_agrees_with_a_sliding_window(
    offsets: list[int], limit: int, days: int
) -> None:
    # Contacts on a half-hour grid, so a half-hour sliding start is an exact oracle.
    cap = Cap("c", "s", frozenset({SMS}), limit, days * D)
    times = [T0 + timedelta(minutes=30 * o) for o in offsets]
    contacts = [sms(t) for t in times]
    fits = blocking_cap(T0, SMS, "A", contacts, [cap]) is None
    assert fits == _brute_force_fits(T0, times, cap)


@given(offsets=OFFSETS, limit=st.integers(1, 4), days=st.integers(1, 7))
def test_next_within_caps_is_the_first_instant_that_fits(
    offsets: list[int], limit: int, days: int
) -> None:
    cap = Cap("c", "s", frozenset({SMS}), limit, days * D)
    contacts = [sms(T0 + timedelta(minutes=30 * o)) for o in offsets]
    nxt = next_within_caps(T0, SMS, "A", contacts, [cap])
    assert blocking_cap(nxt, SMS, "A", contacts, [cap]) is None
    probe = T0
    while probe < nxt:
        assert blocking_cap(probe, SMS, "A", contacts, [cap]) is not None
        probe += timedelta(minutes=30)


@given(
    offsets=OFFSETS,
    pack=st.sampled_from(["US", "US-MA", "US-WA", "UK", "CN", "default"]),
    channel=st.sampled_from(list(ChannelKind)),
)
def test_scheduled_instant_satisfies_every_rule_of_the_pack(
    offsets: list[int], pack: str, channel: ChannelKind
) -> None:
    place = Place(("America/Chicago",), "US", "IL")
    contacts = [
        Contact(T0 + timedelta(minutes=30 * o), ch, "A")
        for o, ch in zip(offsets, [SMS, EMAIL, LETTER] * 3, strict=False)
    ]
    chain = BOOK.chain(pack)
    verdict = schedule(T0, place, channel, "A", chain, is_holiday, contacts)
    at = T0 if verdict.allowed else verdict.next_allowed
    if at is None:
        return
    caps = [c for p in chain for c in p.caps]
    assert blocking_cap(at, channel, "A", contacts, caps) is None
    assert schedule(at, place, channel, "A", chain, is_holiday, contacts).allowed
