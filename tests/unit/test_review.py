"""When the planner must look at an account again (``next_review``): never too late.

Between a plan at ``now`` and the review it asks for, the pure core must decide nothing
new for an unchanged account: every step due, every hold and every end it would decide
at any instant before the review, it decided at ``now`` already. Hypothesis draws due
dates, zones whose DST changes happen at midnight, hold records that start or end later,
promises to pay and random ladders, and checks the very instant before the review too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.account import AccountStatus, Flag, HoldRecord
from dispatcher.domain.decision import (
    Decision,
    End,
    EndReason,
    Existing,
    HoldBack,
    Queue,
    next_review,
    plan_account,
)
from dispatcher.domain.message import MessageStatus
from dispatcher.domain.strategy import Strategy
from tests.factory import account, shipped_strategy, strategy

# Zones whose clocks jump at midnight (Havana, Santiago, Asunción, Beirut), a half-hour
# and a 45-minute offset, the date line, and two ordinary ones.
ZONES = [
    "America/Havana",
    "America/Santiago",
    "America/Asuncion",
    "Asia/Beirut",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Kiritimati",
    "America/New_York",
    "Europe/London",
]
NOW_RANGE = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 12, 31, tzinfo=UTC))
REASONS = ["dispute", "payment_plan", "fraud", "opted_out_sms"]


@st.composite
def ladders(draw: st.DrawFn) -> Strategy:
    """The shipped ladder, or one of up to three random non-overlapping stages."""
    if draw(st.booleans()):
        return shipped_strategy()
    stages = []
    start = draw(st.integers(-10, 5))
    for i in range(draw(st.integers(1, 3))):
        length = draw(st.integers(1, 40))
        days = draw(st.lists(st.integers(1, length), min_size=1, max_size=4, unique=True))
        channels = draw(st.lists(st.sampled_from(["sms", "email", "letter"]), min_size=1))
        steps = [
            {"id": f"d{day}", "day": day, "channel": channels[j % len(channels)], "template": "t"}
            for j, day in enumerate(days)
        ]
        last = i == 2 or draw(st.booleans())
        stages.append(
            {
                "id": f"s{i}",
                "dpd_from": start,
                "dpd_to": None if last and draw(st.booleans()) else start + length - 1,
                "steps": steps,
            }
        )
        if last or stages[-1]["dpd_to"] is None:
            break
        start += length + draw(st.integers(0, 10))
    return strategy(stages)


@st.composite
def accounts_at(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    now = draw(st.datetimes(*(t.replace(tzinfo=None) for t in NOW_RANGE), timezones=st.just(UTC)))
    zone = draw(st.sampled_from(ZONES))
    due = now.date() - timedelta(days=draw(st.integers(-20, 250)))
    holds = tuple(
        HoldRecord(
            id=i,
            reason=draw(st.sampled_from(REASONS)),
            channel=draw(st.sampled_from([None, "sms", "email", "letter"])),
            starts_at=now + timedelta(minutes=draw(st.integers(-5000, 20000))),
            ends_at=draw(
                st.one_of(
                    st.none(),
                    st.integers(1, 40000).map(lambda m: now + timedelta(minutes=m - 5000)),
                )
            ),
        )
        for i in range(draw(st.integers(0, 3)))
    )
    promise = draw(
        st.one_of(st.none(), st.integers(-3, 20).map(lambda d: now.date() + timedelta(d)))
    )
    flags = frozenset(
        draw(st.sets(st.sampled_from([Flag.OPT_OUT_EMAIL, Flag.DISPUTE]), max_size=1))
    )
    status = draw(st.sampled_from([AccountStatus.OPEN] * 5 + [AccountStatus.PAID]))
    customer = account(
        due_date=due,
        timezone=zone,
        holds=holds,
        promise_to_pay_until=promise,
        flags=flags,
        status=status,
        phone=draw(st.sampled_from(["+16175550123", None])),
    )
    return customer, now


def _applied(existing: dict[object, Existing], decisions: list[Decision]) -> dict[object, Existing]:
    """The messages as the planner leaves them after writing ``decisions``."""
    after = dict(existing)
    for d in decisions:
        if isinstance(d, Queue):
            after[d.key] = Existing(d.key, MessageStatus.QUEUED)
        elif isinstance(d, HoldBack):
            after[d.key] = Existing(d.key, MessageStatus.HELD, d.hold.reason.value)
        else:
            skipped = d.reason is EndReason.SUPERSEDED
            status = MessageStatus.SKIPPED if skipped else MessageStatus.EXPIRED
            after[d.key] = Existing(d.key, status, d.reason.value)
    return after


def _what(decisions: list[Decision]) -> set[tuple[object, ...]]:
    """The decisions without their day count (which grows every day and writes nothing)."""
    seen: set[tuple[object, ...]] = set()
    for d in decisions:
        if isinstance(d, Queue):
            seen.add(("queue", d.key, d.release, d.held_for))
        elif isinstance(d, HoldBack):
            seen.add(("hold", d.key, d.hold, d.update))
        else:
            assert isinstance(d, End)
            seen.add(("end", d.key, d.reason, d.existing))
    return seen


@given(case=accounts_at(), ladder=ladders(), where=st.floats(0, 1), rounds=st.integers(1, 4))
def test_nothing_new_is_decided_before_the_review(case, ladder, where, rounds) -> None:  # type: ignore[no-untyped-def]
    """From plan to plan, each at the review the previous one asked for, nothing is
    decided in between that was not decided at the plan itself: checked at a drawn
    instant in between and at the last microsecond before the review."""
    customer, now = case
    existing: dict[object, Existing] = {}
    for _ in range(rounds):
        decided = plan_account(customer, now, ladder, existing.values())
        existing = _applied(existing, decided)
        review = next_review(customer, now, ladder)
        settled = _what(plan_account(customer, now, ladder, existing.values()))
        end = review if review is not None else now + timedelta(days=400)
        assert end > now
        for t in {now + (end - now) * where, end - timedelta(microseconds=1)}:
            if t < now:
                continue
            later = _what(plan_account(customer, t, ladder, existing.values()))
            assert later == settled, (t, review)
        if review is None:
            return
        now = review


def test_a_cured_account_is_never_reviewed_by_time() -> None:
    """Paid: its pending messages end at the plan itself, and nothing else ever comes."""
    paid = account(status=AccountStatus.PAID, due_date=date(2026, 1, 1))
    assert next_review(paid, datetime(2026, 1, 20, tzinfo=UTC), shipped_strategy()) is None


@pytest.mark.parametrize(
    ("due", "now", "expected"),
    [
        # Shipped ladder: SMS on DPD 1, 7, 15; the next turning point after DPD 3 is DPD 7,
        # 2026-03-08 at midnight in New York (EST, before the DST change that night).
        (
            date(2026, 3, 1),
            datetime(2026, 3, 4, 15, tzinfo=UTC),
            datetime(2026, 3, 8, 5, tzinfo=UTC),
        ),
        # After the last stage starts (DPD 181, open-ended) nothing more comes.
        (date(2025, 1, 1), datetime(2026, 3, 4, 15, tzinfo=UTC), None),
        # Before the ladder: the pre-due stage starts at DPD -5.
        (
            date(2026, 4, 1),
            datetime(2026, 3, 4, 15, tzinfo=UTC),
            datetime(2026, 3, 27, 4, tzinfo=UTC),
        ),
    ],
)
def test_the_review_is_the_next_turning_point_at_local_midnight(
    due: date, now: datetime, expected: datetime | None
) -> None:
    assert next_review(account(due_date=due), now, shipped_strategy()) == expected


def test_a_hold_ending_or_a_promise_lifting_comes_first() -> None:
    now = datetime(2026, 3, 4, 15, tzinfo=UTC)
    ends = now + timedelta(hours=5)
    held = account(
        due_date=date(2026, 3, 1),
        holds=(HoldRecord(1, "dispute", None, now - timedelta(days=1), ends),),
    )
    assert next_review(held, now, shipped_strategy()) == ends
    promised = account(due_date=date(2026, 3, 1), promise_to_pay_until=date(2026, 3, 5))
    # Lifts at the start of 2026-03-06 in New York.
    assert next_review(promised, now, shipped_strategy()) == datetime(2026, 3, 6, 5, tzinfo=UTC)
