from datetime import UTC, date, datetime

import pytest

from dispatcher.domain.account import Flag
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
