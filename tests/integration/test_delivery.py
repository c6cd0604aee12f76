"""Delivery on a real database: provider answers that place holds, uncertain hand-overs,
and reconciliation of interrupted sends (never a message twice, even after a crash)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel import Handover, Lookup, Outbound, Receipt, Unknown
from dispatcher.channel.memory import MemoryChannel
from dispatcher.channel.rate import RateLimit
from dispatcher.domain.message import MessageStatus
from dispatcher.domain.policy import HoldReason, hold_for
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import InputError, PermanentDelivery, UncertainDelivery
from dispatcher.store.sql import AUDIT
from tests.conftest import settings_for
from tests.integration.test_pipeline import NOW, days_ago, load, messages, row

LATER = NOW + timedelta(minutes=20)  # past the 15-minute lease


class BlindChannel:
    """A channel that cannot look messages up (like SMTP): no ``lookup``."""

    def __init__(self) -> None:
        self.inner = MemoryChannel()

    async def deliver(self, message: Outbound) -> Receipt:
        return await self.inner.deliver(message)


class LostAnswerChannel(MemoryChannel):
    """Takes the message, then the answer is lost (a read timeout after the request)."""

    lose_next = 0
    down = False

    async def deliver(self, message: Outbound) -> Receipt:
        receipt = await super().deliver(message)
        if self.lose_next:
            self.lose_next -= 1
            raise UncertainDelivery("no answer", code="test:timeout")
        return receipt

    async def lookup(self, message: Handover) -> Lookup:
        if self.down:
            return Unknown("provider down")
        return await super().lookup(message)


@pytest.fixture
def sms() -> LostAnswerChannel:
    return LostAnswerChannel()


@pytest.fixture
def blind() -> BlindChannel:
    return BlindChannel()


@pytest.fixture
def wired(
    tmp_path: Path, database_url: str, sms: LostAnswerChannel, blind: BlindChannel
) -> Iterator[App]:
    channels = {ChannelKind.SMS: sms, ChannelKind.EMAIL: blind, ChannelKind.LETTER: MemoryChannel()}
    app = bootstrap(settings_for(tmp_path, database_url), channels=channels)  # type: ignore[arg-type]
    app.store.create_schema()
    yield app
    app.store.engine.dispose()


def send(app: App, at: object = NOW) -> dict[tuple[str, str], int]:
    return dict(asyncio.run(app.sender().send(at)).counts)  # type: ignore[arg-type]


def events(app: App, event: str) -> list[dict[str, object]]:
    with app.store.engine.connect() as conn:
        return [
            {"account_id": r.account_id, "message_id": r.message_id, **json.loads(r.detail)}
            for r in conn.execute(select(AUDIT).where(AUDIT.c.event == event).order_by(AUDIT.c.id))
        ]


def only(app: App, channel: str) -> dict[str, object]:
    [message] = messages(app, channel=channel)
    return message


# -- provider answers that are holds ----------------------------------------------------


def test_an_opt_out_answer_fails_the_message_and_holds_sms_for_everyone_on_that_number(
    wired: App, tmp_path: Path, sms: LostAnswerChannel
) -> None:
    shared = "+16175550142"
    load(
        wired,
        tmp_path,
        [
            row("A-1", days_ago(1), phone=shared),
            row("A-2", days_ago(-20), phone=shared, email="other@example.com"),
            row("A-3", days_ago(-20)),
        ],
    )
    wired.planner().plan(NOW)
    sms.fail_next(
        PermanentDelivery("recipient unsubscribed", code="twilio:21610", hold="opted_out_sms")
    )

    counts = send(wired)

    assert counts[("sms", "failed")] == 1
    failed = only(wired, "sms")
    assert (failed["status"], failed["hold_reason"], failed["rule_id"]) == (
        "failed",
        "opted_out_sms",
        "hold.opt_out_sms",
    )
    for account_id in ("A-1", "A-2"):
        [hold] = wired.store.holds_of(account_id)
        assert (hold["reason"], hold["channel"], hold["source"]) == (
            "opted_out_sms",
            "sms",
            "provider:twilio:21610",
        )
        account = wired.store.account(account_id)
        assert account is not None
        found = hold_for(account, ChannelKind.SMS, LATER)
        assert found is not None and found.reason is HoldReason.OPTED_OUT_SMS
        # Only SMS: email to the same person may still go.
        assert hold_for(account, ChannelKind.EMAIL, LATER) is None
    assert wired.store.holds_of("A-3") == []
    placed = events(wired, "hold_added")
    assert {e["account_id"] for e in placed} == {"A-1", "A-2"}
    assert all(e["source"] == "provider:twilio:21610" for e in placed)


def test_an_invalid_number_answer_holds_later_sms_instead_of_trying_twilio_again(
    wired: App, tmp_path: Path, sms: LostAnswerChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(1))])
    wired.planner().plan(NOW)
    sms.fail_next(PermanentDelivery("not a mobile", code="twilio:21614", hold="invalid_phone"))
    send(wired)
    assert only(wired, "sms")["hold_reason"] == "invalid_phone"

    # Eight days on the next step's SMS is due: it is held, and Twilio is not asked.
    later = NOW + timedelta(days=8)
    report = wired.planner().plan(later)
    send(wired, later)

    assert report.counts[("early", "sms", "held:invalid_phone")] == 1
    assert len(sms.attempts) == 1
    [hold] = wired.store.holds_of("A-1")
    assert (hold["reason"], hold["channel"]) == ("invalid_phone", "sms")


def test_a_second_answer_of_the_same_kind_places_no_second_hold(
    wired: App, tmp_path: Path, sms: LostAnswerChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(1))])
    wired.store.add_hold(
        "A-1",
        "invalid_phone",
        channel="sms",
        scope="account",
        starts_at=NOW + timedelta(hours=1),  # placed, not yet in force at NOW
        ends_at=None,
        note="seen before",
        actor="test",
        now=NOW,
    )
    wired.planner().plan(NOW)
    sms.fail_next(PermanentDelivery("invalid", code="twilio:21211", hold="invalid_phone"))

    send(wired)

    assert [h["note"] for h in wired.store.holds_of("A-1")] == ["seen before"]


def test_a_permanent_failure_without_a_hold_places_none(
    wired: App, tmp_path: Path, sms: LostAnswerChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(1))])
    wired.planner().plan(NOW)
    sms.fail_next(PermanentDelivery("region not enabled", code="twilio:21408"))

    send(wired)

    assert only(wired, "sms")["hold_reason"] is None
    assert wired.store.holds_of("A-1") == []


# -- uncertain hand-overs and reconciliation ------------------------------------------------


def test_a_lost_answer_is_looked_up_after_the_lease_and_recorded_sent_not_resent(
    wired: App, tmp_path: Path, sms: LostAnswerChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(1))])
    wired.planner().plan(NOW)
    sms.lose_next = 1

    assert send(wired)[("sms", "unconfirmed")] == 1
    assert only(wired, "sms")["status"] == "sending"
    assert send(wired, NOW + timedelta(minutes=5)) == {}  # inside the lease: left alone
    counts = send(wired, LATER)

    assert counts == {("sms", "reconciled:sent"): 1}
    message = only(wired, "sms")
    assert (message["status"], message["provider_message_id"]) == ("sent", "mem-1")
    assert len(sms.attempts) == 1
    [reconciled] = events(wired, "delivery_reconciled")
    assert reconciled["found"] is True


def test_an_interrupted_send_the_provider_never_got_goes_again_once(
    wired: App, tmp_path: Path, sms: LostAnswerChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(1))])
    wired.planner().plan(NOW)
    with wired.store.claiming(NOW, 10, NOW - timedelta(days=7)) as claim:
        claim.take([m.message_id for m in claim.messages])  # then the process dies

    counts = send(wired, LATER)

    assert counts[("sms", "reconciled:queued")] == 1
    assert counts[("sms", "sent")] == 1
    assert len(sms.delivered) == 1
    assert send(wired, LATER + timedelta(minutes=30)) == {}


def test_a_provider_that_cannot_be_asked_leaves_the_message_sending_until_it_can(
    wired: App, tmp_path: Path, sms: LostAnswerChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(1))])
    wired.planner().plan(NOW)
    sms.lose_next = 1
    send(wired)
    sms.down = True

    assert send(wired, LATER) == {("sms", "reconcile_pending"): 1}
    assert only(wired, "sms")["status"] == "sending"
    sms.down = False
    assert send(wired, LATER + timedelta(minutes=1)) == {("sms", "reconciled:sent"): 1}
    assert len(sms.attempts) == 1


def test_a_lost_answer_on_a_channel_that_cannot_look_up_is_unknown_for_a_person(
    wired: App, tmp_path: Path, blind: BlindChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(31), phone="")])
    wired.planner().plan(NOW)
    blind.inner.fail_next(UncertainDelivery("connection lost after DATA", code="smtp:unknown"))

    counts = send(wired)

    assert counts[("email", "unknown")] == 1
    message = only(wired, "email")
    assert message["status"] == MessageStatus.UNKNOWN.value
    assert "smtp:unknown" in str(message["last_error"])
    # Never retried by itself.
    assert send(wired, NOW + timedelta(days=1)).get(("email", "sent")) is None


def test_a_crash_before_the_hand_over_stamp_requeues_after_it_makes_unknown(
    wired: App, tmp_path: Path, blind: BlindChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(31), phone=""), row("A-2", days_ago(31), phone="")])
    wired.planner().plan(NOW)
    with wired.store.claiming(NOW, 10, NOW - timedelta(days=7)) as claim:
        emails = sorted(m.message_id for m in claim.messages if m.channel is ChannelKind.EMAIL)
        claim.take(emails)
    # The first was stamped as being handed over when the process died; the second not.
    wired.store.finish_sends([], [(emails[0], NOW)])

    counts = send(wired, LATER)

    assert counts[("email", "unknown")] == 1
    assert counts[("email", "reconciled:queued")] == 1
    assert [m.message_id for m in blind.inner.delivered] == [emails[1]]
    statuses = {m["message_id"]: m["status"] for m in messages(wired, channel="email")}
    assert statuses == {emails[0]: "unknown", emails[1]: "sent"}
    [interrupted] = events(wired, "delivery_interrupted")
    assert interrupted["message_id"] == emails[0]


def test_every_email_is_stamped_before_it_is_handed_over(
    wired: App, tmp_path: Path, blind: BlindChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(31), phone="")])
    wired.planner().plan(NOW)
    seen: list[object] = []
    deliver = blind.inner.deliver

    async def looking(message: Outbound) -> Receipt:
        [row_now] = messages(wired, message_id=message.message_id)
        seen.append((row_now["status"], row_now["sent_at"]))
        return await deliver(message)

    blind.inner.deliver = looking  # type: ignore[method-assign]

    send(wired)

    assert seen == [("sending", NOW)]


def test_a_person_resolves_an_unknown_message_as_sent_or_to_send_again(
    wired: App, tmp_path: Path, blind: BlindChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(31), phone="")])
    wired.planner().plan(NOW)
    blind.inner.fail_next(UncertainDelivery("lost", code="smtp:unknown"))
    send(wired)
    message_id = str(only(wired, "email")["message_id"])

    with pytest.raises(InputError, match="no message"):
        wired.store.resolve_unknown("nope", sent=True, note="x", actor="cli:ops", now=LATER)
    wired.store.resolve_unknown(
        message_id, sent=False, note="not in the relay log", actor="cli:ops", now=LATER
    )
    assert only(wired, "email")["status"] == "queued"
    with pytest.raises(InputError, match="not unknown"):
        wired.store.resolve_unknown(message_id, sent=True, note="x", actor="cli:ops", now=LATER)
    assert send(wired, LATER)[("email", "sent")] == 1
    [resolved] = events(wired, "message_resolved")
    assert (resolved["as"], resolved["note"]) == ("resend", "not in the relay log")


def test_unknown_messages_count_against_caps(
    wired: App, tmp_path: Path, blind: BlindChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(31), phone="")])
    wired.planner().plan(NOW)
    blind.inner.fail_next(UncertainDelivery("lost", code="smtp:unknown"))
    send(wired)
    # The phone number arrives with the next import: the SMS step is now owed.
    soon = NOW + timedelta(minutes=10)
    load(wired, tmp_path, [row("A-1", days_ago(31))], name="b.csv", now=soon)

    report = wired.planner().plan(soon)

    # The email may have reached the person: the SMS waits out the email→SMS gap.
    assert report.counts[("mid", "sms", "deferred:cap_email_sms_1h")] == 1


def test_a_rate_limited_channel_claims_no_more_than_it_can_send_well_inside_the_lease(
    wired: App, sms: LostAnswerChannel
) -> None:
    sender = wired.sender()
    assert sender.claim_size() == sender.batch_size
    sms.rate = RateLimit(0.1)  # type: ignore[attr-defined]
    # 0.1 a second over a tenth of 900 s: 9 messages a pass.
    assert sender.claim_size() == 9


def test_a_failed_email_keeps_no_hand_over_stamp(
    wired: App, tmp_path: Path, blind: BlindChannel
) -> None:
    load(wired, tmp_path, [row("A-1", days_ago(31), phone="")])
    wired.planner().plan(NOW)
    blind.inner.fail_next(PermanentDelivery("550 5.7.1 policy", code="smtp:550"))

    send(wired)

    message = only(wired, "email")
    assert (message["status"], message["sent_at"]) == ("failed", None)
