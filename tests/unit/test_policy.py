from datetime import UTC, date, datetime, timedelta

import pytest

from dispatcher.domain.account import Flag, HoldRecord
from dispatcher.domain.policy import RULE_BY_REASON, RULES, HoldReason, hold_for
from dispatcher.domain.strategy import ChannelKind
from tests.factory import account

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
ALL = list(ChannelKind)


@pytest.mark.parametrize(
    ("flags", "channels", "reason"),
    [
        ({Flag.DECEASED}, ALL, HoldReason.DECEASED),
        ({Flag.BANKRUPTCY}, ALL, HoldReason.BANKRUPTCY),
        ({Flag.CEASE_AND_DESIST}, ALL, HoldReason.CEASE_AND_DESIST),
        ({Flag.DO_NOT_CONTACT}, ALL, HoldReason.DO_NOT_CONTACT),
        ({Flag.DISPUTE}, ALL, HoldReason.DISPUTE),
        ({Flag.OPT_OUT_SMS}, [ChannelKind.SMS], HoldReason.OPTED_OUT_SMS),
        ({Flag.OPT_OUT_EMAIL}, [ChannelKind.EMAIL], HoldReason.OPTED_OUT_EMAIL),
        # The most serious reason wins when several apply.
        ({Flag.DISPUTE, Flag.DECEASED, Flag.OPT_OUT_SMS}, ALL, HoldReason.DECEASED),
        ({Flag.OPT_OUT_SMS, Flag.CEASE_AND_DESIST}, ALL, HoldReason.CEASE_AND_DESIST),
    ],
)
def test_flags_hold_the_channels_they_cover(
    flags: set[Flag], channels: list[ChannelKind], reason: HoldReason
) -> None:
    acct = account(flags=frozenset(flags))
    for channel in ChannelKind:
        hold = hold_for(acct, channel, NOW)
        if channel in channels:
            assert hold is not None and hold.reason is reason
            assert hold.rule_id == RULE_BY_REASON[reason].id
        else:
            assert hold is None


@pytest.mark.parametrize(
    ("changes", "channel", "reason"),
    [
        ({"phone": None}, ChannelKind.SMS, HoldReason.NO_PHONE),
        ({"email": None}, ChannelKind.EMAIL, HoldReason.NO_EMAIL),
        ({"address": None}, ChannelKind.LETTER, HoldReason.NO_ADDRESS),
    ],
)
def test_missing_contact_data_holds_that_channel_only(
    changes: dict[str, None], channel: ChannelKind, reason: HoldReason
) -> None:
    acct = account(**changes)
    hold = hold_for(acct, channel, NOW)
    assert hold is not None and hold.reason is reason
    assert [c for c in ChannelKind if hold_for(acct, c, NOW)] == [channel]


@pytest.mark.parametrize(
    ("promise", "held"),
    [(date(2026, 3, 9), False), (date(2026, 3, 10), True), (date(2026, 4, 1), True)],
)
def test_promise_to_pay_runs_through_its_last_day(promise: date, held: bool) -> None:
    hold = hold_for(account(promise_to_pay_until=promise), ChannelKind.SMS, NOW)
    assert (hold is not None and hold.reason is HoldReason.PROMISE_TO_PAY) is held


def test_every_rule_has_an_id_and_a_source() -> None:
    assert len({r.id for r in RULES}) == len(RULES)
    assert all(r.id.startswith("hold.") and r.source for r in RULES)


def test_clean_account_may_be_contacted_everywhere() -> None:
    assert all(hold_for(account(), c, NOW) is None for c in ChannelKind)


def _record(reason: str, channel: str | None = None, days: int | None = None) -> HoldRecord:
    start = NOW - timedelta(days=1)
    return HoldRecord(1, reason, channel, start, start + timedelta(days=days) if days else None)


@pytest.mark.parametrize(
    ("records", "channel", "reason"),
    [
        ([_record("fraud")], ChannelKind.SMS, HoldReason.FRAUD),
        ([_record("payment_plan")], ChannelKind.LETTER, HoldReason.PAYMENT_PLAN),
        # A channel-specific hold covers only its channel.
        ([_record("opted_out_sms", "sms")], ChannelKind.EMAIL, None),
        ([_record("opted_out_sms", "sms")], ChannelKind.SMS, HoldReason.OPTED_OUT_SMS),
        # An expired hold no longer holds; a running one does, and says until when.
        ([_record("dispute", days=1)], ChannelKind.SMS, None),
        ([_record("dispute", days=3)], ChannelKind.SMS, HoldReason.DISPUTE),
        # The most serious of several wins.
        ([_record("payment_plan"), _record("bankruptcy")], ChannelKind.SMS, HoldReason.BANKRUPTCY),
    ],
)
def test_hold_records(
    records: list[HoldRecord], channel: ChannelKind, reason: HoldReason | None
) -> None:
    hold = hold_for(account(holds=tuple(records)), channel, NOW)
    assert (hold.reason if hold else None) is reason
    if hold is not None:
        assert hold.rule_id == RULE_BY_REASON[reason].id  # type: ignore[index]


def test_a_record_more_serious_than_a_flag_wins() -> None:
    acct = account(flags=frozenset({Flag.DISPUTE}), holds=(_record("deceased"),))
    hold = hold_for(acct, ChannelKind.SMS, NOW)
    assert hold is not None and hold.reason is HoldReason.DECEASED
    acct = account(flags=frozenset({Flag.BANKRUPTCY}), holds=(_record("payment_plan"),))
    hold = hold_for(acct, ChannelKind.SMS, NOW)
    assert hold is not None and hold.reason is HoldReason.BANKRUPTCY


def test_a_timed_record_says_when_it_lifts() -> None:
    hold = hold_for(account(holds=(_record("dispute", days=3),)), ChannelKind.SMS, NOW)
    assert hold is not None and hold.until == NOW + timedelta(days=2)
