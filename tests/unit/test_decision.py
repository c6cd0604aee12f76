from dataclasses import replace
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.domain.account import AccountStatus, Flag
from dispatcher.domain.decision import (
    Decision,
    End,
    EndReason,
    Existing,
    HoldBack,
    Queue,
    plan_account,
)
from dispatcher.domain.message import WENT_OUT, MessageKey, MessageStatus
from dispatcher.domain.policy import HoldReason
from dispatcher.domain.strategy import ChannelKind
from tests.factory import account, strategy

SMS, EMAIL = ChannelKind.SMS, ChannelKind.EMAIL
LADDER = strategy(
    [
        {
            "id": "pre_due",
            "dpd_from": -5,
            "dpd_to": -1,
            "steps": [{"id": "day3", "day": 3, "channel": "sms", "template": "pre"}],
        },
        {
            "id": "early",
            "dpd_from": 1,
            "dpd_to": 30,
            "steps": [
                {"id": "day1", "day": 1, "channel": "sms", "template": "e1"},
                {"id": "day1", "day": 1, "channel": "email", "template": "e1"},
                {"id": "day7", "day": 7, "channel": "sms", "template": "e7"},
            ],
        },
        {
            "id": "mid",
            "dpd_from": 31,
            "steps": [
                {"id": "day1", "day": 1, "channel": "sms", "template": "m1"},
            ],
        },
    ]
)
DUE = date(2026, 3, 1)


def at_dpd(dpd: int) -> datetime:
    """Noon in New York on the day the account is ``dpd`` days past due."""
    day = date.fromordinal(DUE.toordinal() + dpd)
    return datetime.combine(day, time(12, 0), tzinfo=ZoneInfo("America/New_York"))


def key(stage: str, step: str, channel: ChannelKind = SMS, cycle: int = 1) -> MessageKey:
    return MessageKey("A-1", cycle, stage, step, channel)


def summary(decisions: list[Decision]) -> set[tuple[Any, ...]]:
    out: set[tuple[Any, ...]] = set()
    for d in decisions:
        k = (d.key.stage, d.key.step, d.key.channel.value)
        if isinstance(d, Queue):
            out.add(("queue", *k, d.release))
        elif isinstance(d, HoldBack):
            out.add(("hold", *k, d.hold.reason.value))
        else:
            out.add(("end", *k, d.reason.value))
    return out


def plan(dpd: int, existing: list[Existing] = (), **changes: Any) -> set[tuple[Any, ...]]:  # type: ignore[assignment]
    return summary(plan_account(account(due_date=DUE, **changes), at_dpd(dpd), LADDER, existing))


def test_first_day_of_stage_queues_its_day1_steps() -> None:
    assert plan(1) == {
        ("queue", "early", "day1", "sms", False),
        ("queue", "early", "day1", "email", False),
    }


@pytest.mark.parametrize("dpd", [-6, 0])
def test_nothing_between_stages(dpd: int) -> None:
    assert plan(dpd) == set()


def test_pre_due_step_on_its_day() -> None:
    assert plan(-4) == set()
    assert plan(-3) == {("queue", "pre_due", "day3", "sms", False)}


def test_catch_up_after_an_outage_of_two_days() -> None:
    # The planner did not run on DPD 1 and 2; on DPD 3 the day-1 steps are still owed.
    assert plan(3) == {
        ("queue", "early", "day1", "sms", False),
        ("queue", "early", "day1", "email", False),
    }


def test_step_done_is_not_planned_again() -> None:
    done = [
        Existing(key("early", "day1"), MessageStatus.SENT),
        Existing(key("early", "day1", EMAIL), MessageStatus.QUEUED),
    ]
    assert plan(3, done) == set()


def test_later_step_supersedes_an_owed_earlier_one_on_the_same_channel() -> None:
    assert plan(8) == {
        ("end", "early", "day1", "sms", "superseded"),
        ("queue", "early", "day7", "sms", False),
        ("queue", "early", "day1", "email", False),
    }


@pytest.mark.parametrize("went_out", WENT_OUT)
def test_a_later_step_that_went_out_supersedes_an_owed_earlier_one(
    went_out: MessageStatus,
) -> None:
    # handed_to_print (a letter at the print house) counts as gone, exactly like sent.
    rows = [
        Existing(key("early", "day1"), MessageStatus.HELD, "dispute"),
        Existing(key("early", "day7"), went_out),
        Existing(key("early", "day1", EMAIL), went_out),
    ]
    assert plan(8, rows) == {("end", "early", "day1", "sms", "superseded")}


def test_a_stage_left_is_not_replayed_and_its_pending_messages_expire() -> None:
    held = [Existing(key("early", "day7"), MessageStatus.HELD, "dispute")]
    assert plan(31, held) == {
        ("end", "early", "day7", "sms", "stage_left"),
        ("queue", "mid", "day1", "sms", False),
    }


@pytest.mark.parametrize("status", [AccountStatus.PAID, AccountStatus.CLOSED])
def test_cured_account_ends_pending_messages_and_gets_no_new_ones(status: AccountStatus) -> None:
    pending = [Existing(key("early", "day1"), MessageStatus.QUEUED)]
    assert plan(8, pending, status=status) == {
        ("end", "early", "day1", "sms", "account_not_collectible")
    }


def test_zero_balance_counts_as_cured() -> None:
    from decimal import Decimal

    assert plan(8, balance=Decimal("0")) == set()


def test_new_cycle_gets_its_own_ladder_and_ends_the_old_one() -> None:
    old = [
        Existing(key("early", "day1"), MessageStatus.SENT),
        Existing(key("early", "day1", EMAIL), MessageStatus.HELD, "no_email"),
    ]
    assert plan(1, old, cycle=2) == {
        ("end", "early", "day1", "email", "cycle_ended"),
        ("queue", "early", "day1", "sms", False),
        ("queue", "early", "day1", "email", False),
    }
    keys = {
        d.key
        for d in plan_account(account(due_date=DUE, cycle=2), at_dpd(1), LADDER, old)
        if isinstance(d, Queue)
    }
    assert {k.cycle for k in keys} == {2}


def test_hold_is_recorded_with_reason_and_not_repeated() -> None:
    assert plan(1, flags=frozenset({Flag.DISPUTE})) == {
        ("hold", "early", "day1", "sms", "dispute"),
        ("hold", "early", "day1", "email", "dispute"),
    }
    held = [
        Existing(key("early", "day1"), MessageStatus.HELD, "dispute"),
        Existing(key("early", "day1", EMAIL), MessageStatus.HELD, "dispute"),
    ]
    assert plan(2, held, flags=frozenset({Flag.DISPUTE})) == set()


def test_hold_reason_change_is_recorded() -> None:
    held = [
        Existing(key("early", "day1"), MessageStatus.HELD, "dispute"),
        Existing(key("early", "day1", EMAIL), MessageStatus.HELD, "dispute"),
    ]
    decisions = plan_account(
        account(due_date=DUE, flags=frozenset({Flag.BANKRUPTCY})), at_dpd(2), LADDER, held
    )
    assert all(isinstance(d, HoldBack) and d.update for d in decisions)
    assert {d.hold.reason for d in decisions if isinstance(d, HoldBack)} == {HoldReason.BANKRUPTCY}


def test_lifted_hold_releases_the_message() -> None:
    held = [Existing(key("early", "day1"), MessageStatus.HELD, "dispute")]
    assert plan(2, held) == {
        ("queue", "early", "day1", "sms", True),
        ("queue", "early", "day1", "email", False),
    }


def test_promise_to_pay_holds_until_the_day_after_the_promise() -> None:
    decisions = plan_account(
        account(due_date=DUE, promise_to_pay_until=date(2026, 3, 5)), at_dpd(1), LADDER, []
    )
    holds = [d for d in decisions if isinstance(d, HoldBack)]
    assert len(holds) == 2
    assert holds[0].hold.until == datetime(2026, 3, 6, tzinfo=ZoneInfo("America/New_York"))
    # On the day after the promise the hold has lifted.
    assert plan(5, promise_to_pay_until=date(2026, 3, 5)) == {
        ("queue", "early", "day1", "sms", False),
        ("queue", "early", "day1", "email", False),
    }


@given(dpds=st.lists(st.integers(min_value=-10, max_value=60), min_size=1, max_size=12))
def test_replaying_any_sequence_of_runs_never_decides_a_key_twice(dpds: list[int]) -> None:
    """Idempotency: whatever days the planner runs on, each key gets one first decision."""
    rows: dict[MessageKey, Existing] = {}
    created: list[MessageKey] = []
    acct = account(due_date=DUE)
    for dpd in sorted(dpds):
        for d in plan_account(acct, at_dpd(dpd), LADDER, list(rows.values())):
            if isinstance(d, Queue) and not d.release:
                created.append(d.key)
                rows[d.key] = Existing(d.key, MessageStatus.SENT)
            elif isinstance(d, End) and not d.existing:
                created.append(d.key)
                rows[d.key] = Existing(d.key, MessageStatus.SKIPPED)
        # a second run at the same instant decides nothing new
        again = plan_account(acct, at_dpd(dpd), LADDER, list(rows.values()))
        assert [d for d in again if not isinstance(d, End) or not d.existing] == []
    assert len(created) == len(set(created))


def test_end_reason_values_are_stable() -> None:
    # These strings are stored and exported; renaming one is a contract change.
    assert [r.value for r in EndReason] == [
        "stage_left",
        "account_not_collectible",
        "cycle_ended",
        "superseded",
    ]


def test_decisions_use_aware_times_only() -> None:
    with pytest.raises(ValueError, match="aware"):
        plan_account(account(), datetime(2026, 3, 2, 12), LADDER, [])


def test_utc_now_is_fine() -> None:
    assert plan_account(
        replace(account(), due_date=DUE), datetime(2026, 3, 2, 17, tzinfo=UTC), LADDER, []
    )
