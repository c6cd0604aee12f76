"""The whole path on a real database (SQLite and PostgreSQL): import → plan → send → audit."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import PermanentDelivery, TransientDelivery
from dispatcher.service.importer import import_accounts
from dispatcher.store.sql import AUDIT, MESSAGE
from tests.conftest import settings_for, write_csv
from tests.factory import ROOT

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)  # 11:00 in New York


def row(account_id: str, due: date | str, **extra: str) -> dict[str, str]:
    base = {
        "account_id": account_id,
        "full_name": "Jane Doe",
        "balance": "420.50",
        "currency": "USD",
        "due_date": due if isinstance(due, str) else due.isoformat(),
        # Each account its own person unless a test says otherwise (caps count per person).
        "phone": f"+1617555{100 + sum(map(ord, account_id)) % 100:04d}",
        "email": f"{account_id.lower()}@example.com",
        "address_line1": "1 Elm St",
        "city": "Boston",
        "region": "MA",
        "postal_code": "02110",
        "country": "US",
        "timezone": "America/New_York",
        "locale": "en-US",
    }
    base.update(extra)
    return base


def load(
    app: App, tmp_path: Path, rows: list[dict[str, str]], name: str = "a.csv", now: datetime = NOW
) -> None:
    report = import_accounts(
        app.store,
        write_csv(tmp_path / name, rows),
        now=now,
        default_timezone="America/New_York",
        default_region="US",
    )
    assert report.rejected == 0, report.first_rejects


def messages(app: App, **where: object) -> list[dict[str, object]]:
    query = select(MESSAGE).order_by(MESSAGE.c.stage, MESSAGE.c.step, MESSAGE.c.channel)
    for column, value in where.items():
        query = query.where(MESSAGE.c[column] == value)
    with app.store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def audit_events(app: App) -> list[tuple[str, str | None]]:
    with app.store.engine.connect() as conn:
        return [(r.event, r.message_id) for r in conn.execute(select(AUDIT).order_by(AUDIT.c.id))]


def days_ago(n: int) -> date:
    return (NOW - timedelta(days=n)).date()


def test_plan_queues_due_steps_renders_them_and_audits_each(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1)), row("A-2", days_ago(40))])
    report = app.planner().plan(NOW)
    assert report.counts[("early", "sms", "queued")] == 1
    assert report.counts[("mid", "sms", "queued")] == 1
    # The email goes an hour after the SMS: US.gap.electronic (house rule HR-9).
    assert report.counts[("mid", "email", "deferred:cap_email_sms_1h")] == 1
    queued = messages(app, status="queued")
    assert {(m["account_id"], m["stage"], m["step"], m["channel"]) for m in queued} == {
        ("A-1", "early", "day1", "sms"),
        ("A-2", "mid", "day1", "sms"),
        ("A-2", "mid", "day1", "email"),
    }
    for m in queued:
        assert m["body"] and "Acme Consumer Finance" in str(m["body"])
        assert m["template_id"] and m["template_version"] and m["template_sha256"]
        assert len(str(m["body_sha256"])) == 64
    events = audit_events(app)
    assert sorted(mid for e, mid in events if e == "message_queued") == sorted(
        m["message_id"] for m in queued
    )


def test_replanning_and_rerunning_queue_and_send_nothing_twice(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(app, tmp_path, [row(f"A-{i}", days_ago(i * 7)) for i in range(30)])
    for _ in range(3):
        app.planner().plan(NOW)
        asyncio.run(app.sender().send(NOW))
    first = messages(app)
    audit_after_first = len(audit_events(app))
    for _ in range(3):
        assert app.planner().plan(NOW).counts.get(("early", "sms", "queued"), 0) == 0
        assert asyncio.run(app.sender().send(NOW)).total == 0
    assert messages(app) == first
    assert len(audit_events(app)) == audit_after_first
    delivered = [m.message_id for ch in channels.values() for m in ch.delivered]
    assert len(delivered) == len(set(delivered)) > 0
    assert len({m["idempotency_key"] for m in first}) == len(first)


def test_catch_up_after_skipped_days_sends_the_missed_step(app: App, tmp_path: Path) -> None:
    # Day 1 of `early` was two days ago; the planner was down since.
    load(app, tmp_path, [row("A-1", days_ago(3))])
    app.planner().plan(NOW)
    assert [(m["stage"], m["step"], m["status"]) for m in messages(app)] == [
        ("early", "day1", "queued")
    ]


def test_a_stage_left_is_not_replayed(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(35))])
    app.planner().plan(NOW)
    assert {m["stage"] for m in messages(app)} == {"mid"}


def test_holds_are_recorded_then_released_when_lifted(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1), dispute="true")])
    app.planner().plan(NOW)
    [held] = messages(app)
    assert (held["status"], held["hold_reason"], held["rule_id"]) == (
        "held",
        "dispute",
        "hold.dispute",
    )
    assert held["body"] is None
    # The dispute is resolved: the next plan releases and renders the message.
    load(app, tmp_path, [row("A-1", days_ago(1))], name="b.csv")
    app.planner().plan(NOW + timedelta(hours=1))
    [released] = messages(app)
    assert released["status"] == "queued" and released["body"]
    events = [e for e, mid in audit_events(app) if mid == held["message_id"]]
    assert events == ["message_held", "hold_released", "message_queued"]


def test_new_cycle_after_cure(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))])
    app.planner().plan(NOW)
    asyncio.run(app.sender().send(NOW))
    assert len(channels[ChannelKind.SMS].delivered) == 1
    # Paid to zero: nothing more is planned.
    later = NOW + timedelta(days=10)
    load(app, tmp_path, [row("A-1", days_ago(1), balance="0", status="paid")], "paid.csv", later)
    app.planner().plan(later)
    assert [m["cycle"] for m in messages(app)] == [1]
    # Overdue again on a new due date: cycle 2 starts the ladder over.
    again = NOW + timedelta(days=40)
    load(app, tmp_path, [row("A-1", (again - timedelta(days=1)).date())], "again.csv", again)
    assert app.store.account("A-1").cycle == 2  # type: ignore[union-attr]
    app.planner().plan(again)
    asyncio.run(app.sender().send(again))
    assert [(m["cycle"], m["stage"], m["step"]) for m in messages(app)] == [
        (1, "early", "day1"),
        (2, "early", "day1"),
    ]
    assert len(channels[ChannelKind.SMS].delivered) == 2
    # Importing the same open account again does not start a third cycle.
    load(app, tmp_path, [row("A-1", (again - timedelta(days=1)).date())], "same.csv", again)
    assert app.store.account("A-1").cycle == 2  # type: ignore[union-attr]


def test_paying_ends_pending_messages(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1)), row("A-2", days_ago(40))])
    app.planner().plan(NOW)
    assert len(messages(app)) == 3
    load(
        app,
        tmp_path,
        [row("A-1", days_ago(1), status="paid"), row("A-2", days_ago(40), status="paid")],
        "paid.csv",
    )
    app.planner().plan(NOW)
    # Every pending message of the batch ends in one statement, with its reason.
    assert {(m["status"], m["hold_reason"]) for m in messages(app)} == {
        ("expired", "account_not_collectible")
    }
    assert asyncio.run(app.sender().send(NOW)).total == 0


def test_send_rechecks_holds_at_the_last_moment(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))])
    app.planner().plan(NOW)
    load(app, tmp_path, [row("A-1", days_ago(1), cease_and_desist="true")], "cd.csv")
    report = asyncio.run(app.sender().send(NOW))
    assert report.counts[("sms", "held:cease_and_desist")] == 1
    assert channels[ChannelKind.SMS].delivered == []
    [m] = messages(app)
    assert (m["status"], m["hold_reason"]) == ("held", "cease_and_desist")


def test_transient_failures_retry_with_backoff_then_fail_visibly(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    max_attempts = app.settings.send.max_attempts
    channels[ChannelKind.SMS].fail_next(
        *[TransientDelivery("timeout", code="20429") for _ in range(max_attempts)]
    )
    load(app, tmp_path, [row("A-1", days_ago(1))])
    app.planner().plan(NOW)
    at = NOW
    for attempt in range(1, max_attempts + 1):
        assert asyncio.run(app.sender().send(at)).total == 1
        [m] = messages(app)
        assert m["attempts"] == attempt
        if attempt < max_attempts:
            assert m["status"] == "queued"
            assert m["next_attempt_at"] > at  # type: ignore[operator]
            # Not due again before its next attempt time.
            assert asyncio.run(app.sender().send(at)).total == 0
            at = m["next_attempt_at"]  # type: ignore[assignment]
    [m] = messages(app)
    assert m["status"] == "failed" and "20429" in str(m["last_error"])
    events = [e for e, _ in audit_events(app)]
    assert events.count("delivery_failed") == max_attempts - 1
    assert events.count("message_failed") == 1


def test_permanent_failure_is_not_retried(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    channels[ChannelKind.SMS].fail_next(PermanentDelivery("not a mobile", code="21614"))
    load(app, tmp_path, [row("A-1", days_ago(1))])
    app.planner().plan(NOW)
    asyncio.run(app.sender().send(NOW))
    [m] = messages(app)
    assert (m["status"], m["attempts"]) == ("failed", 1)
    assert len(channels[ChannelKind.SMS].attempts) == 1


def test_dry_run_writes_nothing(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))])
    before = len(audit_events(app))
    report = app.planner().plan(NOW, dry_run=True)
    assert report.counts[("early", "sms", "queued")] == 1
    assert messages(app) == [] and len(audit_events(app)) == before


def test_zh_cn_account_gets_chinese_template(app: App, tmp_path: Path) -> None:
    load(
        app,
        tmp_path,
        [
            row(
                "C-1",
                days_ago(1),
                phone="+8613812345678",
                country="CN",
                region="",
                timezone="Asia/Shanghai",
                locale="zh-CN",
                currency="CNY",
                postal_code="200000",
                city="上海",
            )
        ],
    )
    app.planner().plan(NOW)
    [m] = messages(app)
    assert m["locale"] == "zh-CN"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in str(m["body"]))


def test_audit_detail_is_json_with_hashes(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))])
    app.planner().plan(NOW)
    with app.store.engine.connect() as conn:
        detail = conn.execute(
            select(AUDIT.c.detail).where(AUDIT.c.event == "message_queued")
        ).scalar_one()
        assert conn.execute(select(func.count()).select_from(AUDIT)).scalar_one() >= 2
    parsed = json.loads(detail)
    [m] = messages(app)
    assert parsed["body_sha256"] == m["body_sha256"]
    assert parsed["template_sha256"] == m["template_sha256"]


def test_missing_or_failing_templates_hold_the_message_visibly(
    tmp_path: Path, database_url: str, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    (templates / "sms" / "broken.en-US.txt.j2").write_text(
        '+++\nid = "broken"\nversion = "1"\nchannel = "sms"\nlocale = "en-US"\n'
        'description = "fails at render time"\ndisclosures = []\napproval = "approved"\n+++\n'
        "{{ creditor.name }} {{ (dpd / 0) }}\n"
    )
    strategy = tmp_path / "strategy.toml"
    strategy.write_text(
        '[[stages]]\nid = "early"\ndpd_from = 1\nsteps = [\n'
        '  { id = "day1", day = 1, channel = "sms", template = "broken" },\n'
        '  { id = "day1", day = 1, channel = "email", template = "absent" },\n]\n'
    )
    settings = settings_for(tmp_path, database_url).model_copy(
        update={"templates_dir": templates, "strategy_file": strategy}
    )
    app = bootstrap(settings, channels=channels)
    app.store.create_schema()
    load(app, tmp_path, [row("A-1", days_ago(1))])
    report = app.planner().plan(NOW)
    assert report.counts[("early", "sms", "held:render_failed")] == 1
    assert report.counts[("early", "email", "held:template_missing")] == 1
    held = {m["channel"]: m for m in messages(app)}
    assert held["sms"]["rule_id"] == "hold.render_failed"
    assert held["email"]["rule_id"] == "hold.template_missing"
    assert asyncio.run(app.sender().send(NOW)).total == 0
    with app.store.engine.connect() as conn:
        details = [
            json.loads(d)
            for d in conn.execute(
                select(AUDIT.c.detail).where(AUDIT.c.event == "message_held")
            ).scalars()
        ]
    errors = {d["reason"]: str(d["error"]) for d in details}
    assert "broken.en-US.txt.j2:10: ZeroDivisionError" in errors["render_failed"]
    assert "no email template 'absent'" in errors["template_missing"]


def test_a_send_interrupted_by_a_crash_is_looked_up_not_resent_blindly(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))])
    app.planner().plan(NOW)
    # A sender claims the message and dies before handing it over.
    with app.store.claiming(NOW, 10, NOW - timedelta(days=7)) as claim:
        [claimed] = claim.messages
        assert claim.take([claimed.message_id]) == {claimed.message_id}
    # Within the lease another sender leaves it alone (it may still be in flight).
    assert asyncio.run(app.sender().send(NOW + timedelta(minutes=5))).total == 0
    [m] = messages(app)
    assert m["status"] == "sending"
    # After the lease the channel is asked; it never had it, so it goes now, once.
    report = asyncio.run(app.sender().send(NOW + timedelta(minutes=20)))
    assert report.counts[("sms", "reconciled:queued")] == 1
    assert report.counts[("sms", "sent")] == 1
    [m] = messages(app)
    assert m["status"] == "sent"
    assert [o.message_id for o in channels[ChannelKind.SMS].delivered] == [claimed.message_id]
    assert ("delivery_reconciled", claimed.message_id) in audit_events(app)


NIGHT = datetime(2026, 6, 10, 7, 0, tzinfo=UTC)  # 03:00 in New York


def test_outside_the_window_a_message_waits_for_the_exact_next_allowed_instant(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))], now=NIGHT)
    report = app.planner().plan(NIGHT)
    assert report.counts[("early", "sms", "deferred:quiet_hours")] == 1
    [m] = messages(app)
    eight = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # 08:00 EDT
    assert (m["status"], m["hold_reason"], m["rule_id"]) == (
        "queued",
        "quiet_hours",
        "US.window.fdcpa",
    )
    assert m["scheduled_for"] == eight
    assert asyncio.run(app.sender().send(eight - timedelta(seconds=1))).total == 0
    assert asyncio.run(app.sender().send(eight)).counts[("sms", "sent")] == 1
    assert len(channels[ChannelKind.SMS].delivered) == 1
    events = [e for e, _ in audit_events(app)]
    assert events.count("message_deferred") == 1


def test_the_window_is_checked_again_at_the_moment_of_sending(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    evening = datetime(2026, 6, 11, 0, 30, tzinfo=UTC)  # 20:30 EDT: inside the window
    load(app, tmp_path, [row("A-1", days_ago(1))], now=evening)
    app.planner().plan(evening)
    # The sender only gets to it after 21:00 local.
    late = evening + timedelta(minutes=45)
    report = asyncio.run(app.sender().send(late))
    assert report.counts[("sms", "deferred:quiet_hours")] == 1
    assert channels[ChannelKind.SMS].attempts == []
    [m] = messages(app)
    assert m["status"] == "queued"
    assert m["scheduled_for"] == datetime(2026, 6, 11, 12, 0, tzinfo=UTC)


def test_a_customer_who_may_be_anywhere_in_the_us_is_contacted_when_all_zones_allow(
    app: App, tmp_path: Path
) -> None:
    # No time zone, no phone, no region: Hawaii to Maine are all possible (Reg F).
    morning = datetime(2026, 6, 10, 13, 0, tzinfo=UTC)  # 09:00 New York, 03:00 Honolulu
    nowhere = {"timezone": "", "phone": "", "region": "", "postal_code": ""}
    load(app, tmp_path, [row("A-1", (morning - timedelta(days=31)).date(), **nowhere)], now=morning)
    assert app.store.account("A-1").timezone_source == "country_ambiguous"  # type: ignore[union-attr]
    app.planner().plan(morning)
    by_channel = {m["channel"]: m for m in messages(app)}
    assert by_channel["sms"]["hold_reason"] == "no_phone"
    email = by_channel["email"]
    assert (email["status"], email["hold_reason"]) == ("queued", "quiet_hours")
    # 08:00 in Honolulu (and Adak) is 18:00 UTC: the first instant open everywhere.
    assert email["scheduled_for"] == datetime(2026, 6, 10, 18, 0, tzinfo=UTC)


def test_chinese_statutory_holiday_defers_to_the_next_working_day(app: App, tmp_path: Path) -> None:
    # 5 October 2026, 10:00 in Shanghai: a Golden Week day off (observed National Day).
    national_day = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)
    load(
        app,
        tmp_path,
        [
            row(
                "C-1",
                (national_day - timedelta(days=1)).date(),
                phone="+8613812345678",
                country="CN",
                region="",
                timezone="Asia/Shanghai",
                locale="zh-CN",
                currency="CNY",
                jurisdiction="CN",
            )
        ],
        now=national_day,
    )
    app.planner().plan(national_day)
    [m] = messages(app)
    assert (m["hold_reason"], m["rule_id"]) == ("holiday", "CN.holidays")
    # The days off run to 7 October 2026 (two of them swapped for make-up working
    # days, which the holidays package knows); 08:00 on the 8th in Shanghai.
    assert m["scheduled_for"] == datetime(2026, 10, 8, 0, 0, tzinfo=UTC)


def test_one_person_with_two_debts_is_capped_once_not_twice(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    same_person = {"phone": "+16175550142", "email": "pat@example.com"}
    load(
        app,
        tmp_path,
        [row("A-1", days_ago(1), **same_person), row("A-2", days_ago(8), **same_person)],
    )
    report = app.planner().plan(NOW)
    # One SMS per person per day (US.cap.sms_day): the second debt's SMS waits a day.
    assert report.counts[("early", "sms", "queued")] == 1
    assert report.counts[("early", "sms", "deferred:cap_sms_1d")] == 1
    deferred = next(m for m in messages(app) if m["hold_reason"] == "cap_sms_1d")
    assert deferred["rule_id"] == "US.cap.sms_day"
    assert deferred["scheduled_for"] == NOW + timedelta(days=1)
    asyncio.run(app.sender().send(NOW))
    assert len(channels[ChannelKind.SMS].delivered) == 1
    asyncio.run(app.sender().send(NOW + timedelta(days=1)))
    assert len(channels[ChannelKind.SMS].delivered) == 2


def test_caps_are_checked_again_at_the_moment_of_sending(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1), phone="+16175550150")])
    app.planner().plan(NOW)
    # Another account of the same person got an SMS after this one was planned (e.g. a
    # message queued by hand); the cap now holds this one back at send time.
    load(app, tmp_path, [row("B-1", days_ago(1), phone="+16175550150")], "b.csv")
    with app.store.engine.begin() as conn:
        conn.execute(
            MESSAGE.insert().values(
                message_id="x" * 32,
                idempotency_key="B-1|manual",
                account_id="B-1",
                cycle=1,
                stage="early",
                step="manual",
                channel="sms",
                status="sent",
                dpd=1,
                sent_at=NOW - timedelta(hours=2),
                created_at=NOW,
                updated_at=NOW,
            )
        )
    report = asyncio.run(app.sender().send(NOW))
    assert report.counts[("sms", "deferred:cap_sms_1d")] == 1
    assert channels[ChannelKind.SMS].attempts == []
    [m] = messages(app, account_id="A-1")
    assert (m["status"], m["scheduled_for"]) == ("queued", NOW + timedelta(hours=22))


def test_a_waiting_message_is_expired_at_send_if_the_account_paid_meanwhile(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))], now=NIGHT)
    app.planner().plan(NIGHT)  # deferred to 08:00 New York
    load(app, tmp_path, [row("A-1", days_ago(1), status="paid")], "paid.csv", NIGHT)
    # The sender runs at 08:00 before any new plan: the payment stops the message.
    report = asyncio.run(app.sender().send(datetime(2026, 6, 10, 12, 0, tzinfo=UTC)))
    assert report.counts[("sms", "account_not_collectible")] == 1
    assert channels[ChannelKind.SMS].attempts == []
    [m] = messages(app)
    assert (m["status"], m["hold_reason"]) == ("expired", "account_not_collectible")


def test_a_message_that_waited_past_its_stage_is_expired_at_send(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    # Day 30 of `early`, 03:00 in New York: the SMS waits for 08:00, by which time... it is
    # still day 30. Sending it only days later (the sender was down) finds the account in
    # `mid`: the early reminder is no longer true and is expired, not sent.
    load(app, tmp_path, [row("A-1", days_ago(30))], now=NIGHT)
    app.planner().plan(NIGHT)
    [m] = messages(app, status="queued")
    assert (m["stage"], m["step"]) == ("early", "day15")
    report = asyncio.run(app.sender().send(NIGHT + timedelta(days=2)))
    assert report.counts[("sms", "stage_left")] == 1
    assert channels[ChannelKind.SMS].attempts == []


def test_import_flags_place_and_lift_hold_records_with_history(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1), dispute="true", opt_out_sms="true")])
    holds = app.store.holds_of("A-1")
    assert {(h["reason"], h["channel"], h["source"]) for h in holds} == {
        ("dispute", None, "import"),
        ("opted_out_sms", "sms", "import"),
    }
    # Importing the same flags again places nothing new.
    load(app, tmp_path, [row("A-1", days_ago(1), dispute="true", opt_out_sms="true")], "2.csv")
    assert len(app.store.holds_of("A-1")) == 2
    # Clearing the dispute lifts its record; the opt-out stays.
    load(app, tmp_path, [row("A-1", days_ago(1), opt_out_sms="true")], "3.csv")
    lifted = {h["reason"]: h["lifted_at"] for h in app.store.holds_of("A-1")}
    assert lifted["dispute"] is not None and lifted["opted_out_sms"] is None
    events = [e for e, _ in audit_events(app)]
    assert events.count("hold_added") == 2 and events.count("hold_lifted") == 1


def test_a_person_hold_covers_every_account_of_that_person_until_lifted(
    app: App, tmp_path: Path
) -> None:
    same = {"phone": "+16175550177", "email": "kim@example.com"}
    load(
        app,
        tmp_path,
        [
            row("A-1", days_ago(1), **same),
            row("A-2", days_ago(40), **same),
            row("B-1", days_ago(1)),
        ],
    )
    hold_id = app.store.add_hold(
        "A-1",
        "fraud",
        channel=None,
        scope="person",
        starts_at=NOW,
        ends_at=None,
        note="identity theft report #123",
        actor="cli:alice",
        now=NOW,
    )
    app.planner().plan(NOW)
    reasons = {(m["account_id"], m["channel"]): m["hold_reason"] for m in messages(app)}
    assert reasons[("A-1", "sms")] == reasons[("A-2", "sms")] == "fraud"
    assert reasons[("A-2", "email")] == "fraud"
    assert reasons[("B-1", "sms")] is None  # another person entirely
    app.store.lift_hold(hold_id, note="report withdrawn", actor="cli:bob", now=NOW)
    app.planner().plan(NOW + timedelta(minutes=15))
    released = {(m["account_id"], m["channel"]): m["status"] for m in messages(app)}
    assert released[("A-1", "sms")] == "queued"


def test_a_timed_hold_lifts_by_itself(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))])
    app.store.add_hold(
        "A-1",
        "payment_plan",
        channel=None,
        scope="account",
        starts_at=NOW,
        ends_at=NOW + timedelta(days=3),
        note="plan agreed on the phone",
        actor="cli:alice",
        now=NOW,
    )
    app.planner().plan(NOW)
    [m] = messages(app)
    assert (m["status"], m["hold_reason"], m["hold_until"]) == (
        "held",
        "payment_plan",
        NOW + timedelta(days=3),
    )
    app.planner().plan(NOW + timedelta(days=3))
    [m] = messages(app)
    assert m["status"] == "queued"
