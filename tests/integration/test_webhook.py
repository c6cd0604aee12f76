"""Twilio webhooks on a real database (SQLite and PostgreSQL): delivery status callbacks
(dispatcher/service/delivery.py), inbound SMS (dispatcher/service/inbound.py), and both
through HTTP (dispatcher/web/webhook.py, FastAPI's TestClient) signed and unsigned."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import func, select, update

from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.clock import FixedClock
from dispatcher.daemon import Service
from dispatcher.domain.strategy import ChannelKind
from dispatcher.service.delivery import StatusOutcome, StatusReport, record_status
from dispatcher.service.inbound import InboundOutcome, receive
from dispatcher.settings import TwilioSettings
from dispatcher.store.sql import AUDIT, HOLD, MESSAGE
from dispatcher.web.app import create_app
from tests.conftest import settings_for
from tests.fake_twilio import post_signed, signature
from tests.integration.test_pipeline import NOW, days_ago, load, messages, row

TOKEN = "webhook-test-token-5c1d"
PUBLIC = "https://dispatcher.example"
STATUS_URL = f"{PUBLIC}/webhooks/twilio/status"
INBOUND_URL = f"{PUBLIC}/webhooks/twilio/inbound"
NY = ZoneInfo("America/New_York")
SHARED = "+16175550199"
HELP_VALUES = {
    "creditor_name": "Acme Consumer Finance",
    "creditor_phone": "+1 800 555 0100",
    "creditor_website": "https://acme-finance.example",
    "opt_out": "Reply STOP to opt out.",
}


@pytest.fixture
def hooked(
    tmp_path: Path, database_url: str, channels: dict[ChannelKind, MemoryChannel]
) -> Iterator[App]:
    """The application with a Twilio auth token and public webhook URL configured."""
    settings = settings_for(tmp_path, database_url).model_copy(
        update={
            "twilio": TwilioSettings(auth_token=SecretStr(TOKEN), webhook_base_url=PUBLIC),
        }
    )
    wired = bootstrap(settings, channels=channels)
    wired.store.create_schema()
    yield wired
    wired.store.engine.dispose()


def sent_sms(app: App, tmp_path: Path, account_id: str = "A-1", **extra: str) -> dict[str, object]:
    """One early-stage SMS planned and handed over at NOW; returns its outbox row."""
    load(app, tmp_path, [row(account_id, days_ago(1), **extra)], name=f"{account_id}.csv")
    app.planner().plan(NOW)
    asyncio.run(app.sender().send(NOW))
    [message] = messages(app, account_id=account_id, channel="sms")
    assert message["status"] == "sent" and message["provider_message_id"]
    return message


def report(
    app: App, sid: object, status: str, code: str | None = None, at: datetime = NOW
) -> StatusOutcome:
    return record_status(
        app.store, app.timing, StatusReport(str(sid), status, code), at, max_attempts=5
    )


def audit(app: App, event: str) -> list[dict[str, object]]:
    with app.store.engine.connect() as conn:
        rows = conn.execute(select(AUDIT).where(AUDIT.c.event == event).order_by(AUDIT.c.id))
        return [{**r._mapping, "detail": json.loads(r.detail)} for r in rows]


def audit_count(app: App) -> int:
    with app.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(AUDIT)).scalar_one())


# -- delivery status ----------------------------------------------------------------------
def test_status_callbacks_record_the_delivery_and_never_move_it_back(
    hooked: App, tmp_path: Path
) -> None:
    sms = sent_sms(hooked, tmp_path)
    sid = sms["provider_message_id"]
    at = NOW + timedelta(seconds=5)
    for status in ("queued", "sent", "delivered"):
        assert report(hooked, sid, status, at=at).changed
    # Late and repeated callbacks: recorded, but delivered stays delivered.
    assert not report(hooked, sid, "sent", at=at).changed
    assert not report(hooked, sid, "delivered", at=at).changed
    [m] = messages(hooked, account_id="A-1", channel="sms")
    assert (m["status"], m["delivery_status"], m["delivery_error"]) == ("sent", "delivered", None)
    assert m["delivery_updated_at"] == at
    received = audit(hooked, "delivery_status_received")
    assert [(a["detail"]["status"], a["detail"]["applied"]) for a in received] == [
        ("queued", True),
        ("sent", True),
        ("delivered", True),
        ("sent", False),
        ("delivered", False),
    ]
    assert {a["message_id"] for a in received} == {m["message_id"]}
    assert {a["account_id"] for a in received} == {"A-1"}


def test_a_failure_is_recorded_with_its_error_code(hooked: App, tmp_path: Path) -> None:
    sms = sent_sms(hooked, tmp_path)
    report(hooked, sms["provider_message_id"], "undelivered", "30003")
    [m] = messages(hooked, account_id="A-1", channel="sms")
    # Unreachable handset: recorded, not re-sent (only an expired validity is re-queued).
    assert (m["status"], m["delivery_status"], m["delivery_error"]) == (
        "sent",
        "undelivered",
        "30003",
    )


def test_an_unknown_message_sid_changes_nothing(hooked: App, tmp_path: Path) -> None:
    sent_sms(hooked, tmp_path)
    before, rows = audit_count(hooked), messages(hooked)
    outcome = report(hooked, "SM" + "f" * 32, "delivered")
    assert outcome.found is False
    assert audit_count(hooked) == before and messages(hooked) == rows


def test_an_expired_validity_queues_the_message_again_for_the_next_window(
    hooked: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    sms = sent_sms(hooked, tmp_path)
    evening = datetime(2026, 6, 10, 21, 0, tzinfo=NY)  # Twilio dropped it at the window end
    outcome = report(hooked, sms["provider_message_id"], "undelivered", "30036", at=evening)
    morning = datetime(2026, 6, 11, 8, 0, tzinfo=NY)
    assert outcome.requeued_for == morning
    [m] = messages(hooked, account_id="A-1", channel="sms")
    assert (m["status"], m["scheduled_for"], m["sent_at"]) == ("queued", morning, None)
    assert (m["hold_reason"], m["rule_id"]) == ("validity_expired", "sms.validity.window")
    assert "30036" in str(m["last_error"]) and m["attempts"] == 1
    [requeued] = audit(hooked, "message_requeued")
    assert requeued["detail"]["previous_provider_message_id"] == sms["provider_message_id"]
    assert requeued["detail"]["until"] == morning.astimezone(UTC).isoformat()

    # Nothing goes before the morning; then it is a new hand-over with a new SID.
    assert asyncio.run(hooked.sender().send(evening + timedelta(minutes=5))).total == 0
    asyncio.run(hooked.sender().send(morning.astimezone(UTC)))
    [m] = messages(hooked, account_id="A-1", channel="sms")
    assert (m["status"], m["attempts"], m["delivery_status"]) == ("sent", 2, None)
    assert m["provider_message_id"] != sms["provider_message_id"]
    outbound = [o for o in channels[ChannelKind.SMS].delivered if o.account_id == "A-1"]
    assert [o.message_id for o in outbound] == [m["message_id"]] * 2
    # A late callback about the first hand-over changes nothing on the second.
    assert not report(hooked, sms["provider_message_id"], "delivered").found


def test_an_expired_validity_after_the_last_attempt_fails_visibly(
    hooked: App, tmp_path: Path
) -> None:
    sms = sent_sms(hooked, tmp_path)
    with hooked.store.engine.begin() as conn:
        conn.execute(
            update(MESSAGE).where(MESSAGE.c.message_id == sms["message_id"]).values(attempts=5)
        )
    outcome = report(hooked, sms["provider_message_id"], "failed", "30036")
    assert outcome.failed
    [m] = messages(hooked, account_id="A-1", channel="sms")
    assert m["status"] == "failed" and "30036" in str(m["last_error"])
    assert audit(hooked, "message_failed")[0]["detail"]["reason"] == "attempts exhausted"


# -- inbound SMS ----------------------------------------------------------------------------
def inbound(app: App, body: str, sender: str = SHARED) -> InboundOutcome:
    return receive(app.store, app.policies, sender, body, NOW, region="US", help_values=HELP_VALUES)


def active_holds(app: App) -> list[tuple[str, str, str | None, str, str]]:
    with app.store.engine.connect() as conn:
        return [
            (r.account_id, r.reason, r.channel, r.scope, r.source)
            for r in conn.execute(
                select(HOLD).where(HOLD.c.lifted_at.is_(None)).order_by(HOLD.c.account_id)
            )
        ]


def test_stop_holds_every_account_of_the_number_and_queued_sms_are_held_at_send(
    hooked: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(
        hooked,
        tmp_path,
        [
            row("A-1", days_ago(1), phone=SHARED),
            row("A-2", days_ago(2), phone=SHARED, email="other@example.com"),
            row("B-1", days_ago(1)),
        ],
    )
    hooked.planner().plan(NOW)
    queued = {m["account_id"] for m in messages(hooked, status="queued", channel="sms")}
    assert {"A-1", "B-1"} <= queued  # (A-2's SMS waits for the person's daily cap)

    # Any spacing or punctuation, and a number written another way.
    outcome = inbound(hooked, "  Stop. ", sender="+1 617-555-0199")
    assert [a for a, _ in outcome.placed] == ["A-1", "A-2"]
    assert active_holds(hooked) == [
        ("A-1", "opted_out_sms", "sms", "person", "inbound_sms"),
        ("A-2", "opted_out_sms", "sms", "person", "inbound_sms"),
    ]
    [hold] = [h for h in hooked.store.holds_of("A-1") if h["lifted_at"] is None]
    assert "STOP" in hold["note"]
    # A debt of the same number imported later is held too (the hold is per person).
    load(hooked, tmp_path, [row("A-3", days_ago(1), phone=SHARED)], name="later.csv")
    later = hooked.store.account("A-3")
    assert later is not None
    assert [h.reason for h in later.holds] == ["opted_out_sms", "opted_out_sms"]

    asyncio.run(hooked.sender().send(NOW + timedelta(minutes=1)))
    sent = {o.account_id for o in channels[ChannelKind.SMS].delivered}
    assert sent == {"B-1"}
    held = messages(hooked, account_id="A-1", channel="sms")
    assert [(m["status"], m["hold_reason"]) for m in held] == [("held", "opted_out_sms")]
    received = audit(hooked, "inbound_sms_received")
    assert {a["account_id"] for a in received} == {"A-1", "A-2"}
    assert received[0]["detail"]["keyword"] == "STOP"
    assert received[0]["detail"]["rule_id"] == "sms.keyword.opt_out"
    assert {
        a["account_id"] for a in audit(hooked, "hold_added") if a["actor"] == "webhook:twilio"
    } == {
        "A-1",
        "A-2",
    }


def test_a_repeated_stop_places_nothing_twice_and_start_lifts_only_what_stop_placed(
    hooked: App, tmp_path: Path
) -> None:
    load(
        hooked,
        tmp_path,
        [
            row("A-1", days_ago(1), phone=SHARED),
            # Opted out by the import: START by SMS does not lift that.
            row("A-2", days_ago(1), phone=SHARED, opt_out_sms="true"),
        ],
    )
    assert len(inbound(hooked, "STOP").placed) == 2
    assert inbound(hooked, "quit").placed == []
    assert len(active_holds(hooked)) == 3

    lifted = inbound(hooked, "START").lifted
    assert [a for a, _ in lifted] == ["A-1", "A-2"]
    assert active_holds(hooked) == [("A-2", "opted_out_sms", "sms", "account", "import")]
    lifted_rows = [h for h in hooked.store.holds_of("A-1") if h["lifted_at"] is not None]
    assert lifted_rows and lifted_rows[0]["lifted_by"] == "webhook:twilio"
    assert inbound(hooked, "unstop").lifted == []


def test_help_is_answered_with_the_account_pack_text(hooked: App, tmp_path: Path) -> None:
    load(
        hooked,
        tmp_path,
        [
            row("A-1", days_ago(1), phone=SHARED),
            row(
                "C-1",
                days_ago(1),
                phone="+8613800138000",
                country="CN",
                jurisdiction="CN",
                timezone="Asia/Shanghai",
                locale="zh-CN",
                region="",
                postal_code="",
                city="Shanghai",
            ),
        ],
    )
    us = inbound(hooked, "HELP").reply
    assert us.startswith("Acme Consumer Finance:") and "Reply STOP to opt out." in us
    assert "+1 800 555 0100" in us
    cn = inbound(hooked, "help", sender="+8613800138000").reply
    assert "退订" in cn
    nobody = inbound(hooked, "INFO", sender="+16175550000").reply
    assert nobody and nobody.startswith("Acme Consumer Finance:")
    rules = [a["detail"]["rule_id"] for a in audit(hooked, "inbound_sms_received")]
    assert rules == ["US.sms.help", "CN.sms.help", "default.sms.help"]
    assert active_holds(hooked) == []


def test_other_messages_are_audited_and_change_nothing(hooked: App, tmp_path: Path) -> None:
    load(hooked, tmp_path, [row("A-1", days_ago(1), phone=SHARED)])
    plain = inbound(hooked, "I paid yesterday")
    review = inbound(hooked, "please stop texting me")
    assert plain.reply is None and review.reply is None
    assert active_holds(hooked) == []
    details = [a["detail"] for a in audit(hooked, "inbound_sms_received")]
    assert [d["body"] for d in details] == ["I paid yesterday", "please stop texting me"]
    assert [d.get("needs_review", False) for d in details] == [False, True]


# -- through HTTP ---------------------------------------------------------------------------
@pytest.fixture
def client(hooked: App) -> Iterator[TestClient]:
    service = Service(hooked, clock=FixedClock(NOW + timedelta(seconds=10)), instance="test")
    with TestClient(create_app(service)) as test_client:
        yield test_client


def webhook_counts(client: TestClient) -> dict[tuple[str, str], float]:
    """dispatcher_webhook_requests_total by (endpoint, outcome), from /metrics."""
    return {
        (s.labels["endpoint"], s.labels["outcome"]): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
        if s.name == "dispatcher_webhook_requests_total"
    }


def post(
    client: TestClient, url: str, form: dict[str, str], signature_header: str | None = None
) -> httpx.Response:
    return post_signed(
        url,
        form,
        TOKEN,
        deliver_to="http://testserver",
        client=client,
        signature_header=signature_header,
    )


def test_a_signed_status_callback_is_recorded_and_unsigned_ones_are_refused(
    hooked: App, tmp_path: Path, client: TestClient
) -> None:
    sms = sent_sms(hooked, tmp_path)
    form = {"MessageSid": str(sms["provider_message_id"]), "MessageStatus": "delivered"}
    before = audit_count(hooked)
    refused = [
        post(client, STATUS_URL, form, signature_header=""),  # no signature
        post(client, STATUS_URL, form, signature_header="bm90IGEgc2lnbmF0dXJl"),  # wrong
        # Signed with another token, or for the address the service sees (not the public one).
        post_signed(
            STATUS_URL, form, "another-token", deliver_to="http://testserver", client=client
        ),
        post_signed(
            "http://testserver/webhooks/twilio/status",
            form,
            TOKEN,
            deliver_to="http://testserver",
            client=client,
        ),
        # Signed, then tampered with.
        client.post(
            "/webhooks/twilio/status",
            data={**form, "MessageStatus": "failed"},
            headers={"X-Twilio-Signature": signature(STATUS_URL, form, TOKEN)},
        ),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert audit_count(hooked) == before
    assert messages(hooked, account_id="A-1", channel="sms")[0]["delivery_status"] is None

    accepted = post(client, STATUS_URL, form)
    assert accepted.status_code == 200
    [m] = messages(hooked, account_id="A-1", channel="sms")
    assert (m["status"], m["delivery_status"]) == ("sent", "delivered")
    assert m["delivery_updated_at"] == NOW + timedelta(seconds=10)
    assert post(client, STATUS_URL, form).status_code == 200  # repeated: ignored
    counted = webhook_counts(client)
    assert (counted["status", "refused"], counted["status", "applied"]) == (5, 1)
    assert counted["status", "ignored"] == 1


def test_an_oversized_request_is_refused_before_it_is_read(hooked: App, client: TestClient) -> None:
    form = {"From": SHARED, "Body": "x" * 70_000}
    assert post(client, INBOUND_URL, form).status_code == 413
    assert audit_count(hooked) == 0


def test_a_signed_callback_about_an_unknown_sid_is_answered_200(
    hooked: App, client: TestClient
) -> None:
    before = audit_count(hooked)
    answer = post(client, STATUS_URL, {"MessageSid": "SM" + "0" * 32, "MessageStatus": "sent"})
    assert answer.status_code == 200
    assert audit_count(hooked) == before


def test_inbound_stop_and_help_over_http(hooked: App, tmp_path: Path, client: TestClient) -> None:
    load(hooked, tmp_path, [row("A-1", days_ago(1), phone=SHARED)])
    stop = {"From": SHARED, "To": "+18005550100", "Body": "STOP", "MessageSid": "SM" + "1" * 32}
    unsigned = post(client, INBOUND_URL, stop, signature_header="")
    assert unsigned.status_code == 403 and active_holds(hooked) == []

    answer = post(client, INBOUND_URL, stop)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/xml")
    assert "<Message>" not in answer.text
    assert [h[:2] for h in active_holds(hooked)] == [("A-1", "opted_out_sms")]

    helped = post(client, INBOUND_URL, {**stop, "Body": "help"})
    assert helped.text.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Message>')
    assert "Acme Consumer Finance:" in helped.text
    counted = webhook_counts(client)
    assert [counted["inbound", o] for o in ("refused", "opt_out", "help", "opt_in")] == [1, 1, 1, 0]


@contextmanager
def served_with(tmp_path: Path, database_url: str, twilio: TwilioSettings) -> Iterator[TestClient]:
    """The web app of a service whose Twilio settings are ``twilio``."""
    settings = settings_for(tmp_path, database_url).model_copy(update={"twilio": twilio})
    wired = bootstrap(settings, channels={k: MemoryChannel() for k in ChannelKind})
    wired.store.create_schema()
    try:
        service = Service(wired, clock=FixedClock(NOW), instance="test")
        with TestClient(create_app(service)) as test_client:
            yield test_client
    finally:
        wired.store.engine.dispose()


@pytest.mark.parametrize(
    ("twilio", "signed_for", "status"),
    [
        # No public URL: even a request signed for the address the service sees is refused.
        (
            TwilioSettings(auth_token=SecretStr(TOKEN)),
            "http://testserver/webhooks/twilio/inbound",
            403,
        ),
        # No auth token: nothing can be verified.
        (TwilioSettings(webhook_base_url=PUBLIC), INBOUND_URL, 403),
        # The public URL falls back to the scheme and host of the status callback URL.
        (
            TwilioSettings(
                auth_token=SecretStr(TOKEN),
                status_callback_url="https://hooks.example:8443/webhooks/twilio/status",
            ),
            "https://hooks.example:8443/webhooks/twilio/inbound",
            200,
        ),
    ],
)
def test_the_public_url_and_token_the_signature_is_checked_against(
    tmp_path: Path, database_url: str, twilio: TwilioSettings, signed_for: str, status: int
) -> None:
    with served_with(tmp_path, database_url, twilio) as bare:
        form = {"From": SHARED, "Body": "HELP"}
        answer = post_signed(signed_for, form, TOKEN, deliver_to="http://testserver", client=bare)
        assert answer.status_code == status
        assert ("<Message>" in answer.text) is (status == 200)
