"""The planner's memoised window check answers exactly what the plain check answers.

ContactTiming keeps check()'s verdicts by (instant, place, channel, pack chain) for a plan
run; a verdict through it must equal schedule() with the plain check, whatever the
instant, zone, jurisdiction, channel and contacts, asked once or many times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.cap import Contact
from dispatcher.domain.schedule import schedule
from dispatcher.domain.strategy import ChannelKind
from dispatcher.domain.window import Place
from dispatcher.holiday import is_holiday
from dispatcher.policy_book import PolicyBook
from dispatcher.service.timing import ContactTiming
from dispatcher.zone import candidate_zones
from tests.factory import ROOT, account

BOOK = PolicyBook.load(ROOT / "config" / "policies")
TIMING = ContactTiming(BOOK, is_holiday)  # one for every example: the cache fills up
START = datetime(2026, 12, 20, tzinfo=UTC)  # Christmas and New Year ahead

PLACES = [
    {"timezone": "America/New_York", "jurisdiction": "US", "country": "US"},
    {"timezone": "America/Los_Angeles", "jurisdiction": "US-WA", "country": "US"},
    {"jurisdiction": "US-MA", "country": "US", "timezone_source": "country_ambiguous"},
    {"timezone": "Asia/Shanghai", "jurisdiction": "CN", "country": "CN", "locale": "zh-CN"},
    {"timezone": "Europe/London", "jurisdiction": "GB", "country": "GB"},
]


@given(
    place=st.sampled_from(PLACES),
    channel=st.sampled_from(list(ChannelKind)),
    minutes=st.integers(0, 60 * 24 * 21),
    sent=st.lists(st.integers(0, 60 * 24 * 7), max_size=4),
)
def test_memoised_verdict_is_the_plain_verdict(
    place: dict[str, str | None], channel: ChannelKind, minutes: int, sent: list[int]
) -> None:
    who = account(**place)
    now = START + timedelta(minutes=minutes)
    contacts = [Contact(now - timedelta(minutes=m), channel, who.account_id) for m in sent]
    plain = schedule(
        now,
        Place(candidate_zones(who), who.country, who.region),
        channel,
        who.account_id,
        BOOK.chain(who.jurisdiction),
        is_holiday,
        contacts,
    )
    assert TIMING.verdict(who, channel, now, contacts) == plain
    assert TIMING.verdict(who, channel, now, contacts) == plain  # now from the memo
