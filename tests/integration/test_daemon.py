"""The service's jobs in-process, on the real database: reload, plan runs, catch-up,
housekeeping, readiness. (Signals and HTTP are exercised in tests/e2e/test_serve.py.)"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.clock import FixedClock
from dispatcher.daemon import Service
from dispatcher.domain.strategy import ChannelKind
from dispatcher.settings import cron_trigger
from tests.factory import ROOT
from tests.integration.test_pipeline import NOW, audit_events, days_ago, load, messages, row


def service(app: App, at: datetime = NOW) -> Service:
    return Service(app, clock=FixedClock(at), instance="test-1")


def with_own_templates(app: App, tmp_path: Path) -> tuple[App, Path]:
    """The same app reading a copy of the shipped templates that the test may edit."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    settings = app.settings.model_copy(update={"templates_dir": templates})
    return bootstrap(settings, channels={k: MemoryChannel() for k in ChannelKind}), templates


def test_a_broken_template_on_reload_is_refused_and_the_old_one_stays_in_force(
    app: App, tmp_path: Path
) -> None:
    app, templates = with_own_templates(app, tmp_path)
    load(app, tmp_path, [row("A-1", days_ago(1))])
    svc = service(app)
    before = app.templates
    sms = templates / "sms" / "early_day1.en-US.txt.j2"
    original = sms.read_text(encoding="utf-8")
    sms.write_text(original + "\n{{ account.balance | nosuchfilter }}\n", encoding="utf-8")
    assert svc.reload() is False
    assert app.templates is before
    asyncio.run(svc.plan())
    [queued] = messages(app, channel="sms")
    assert queued["status"] == "queued"
    assert "nosuchfilter" not in str(queued["body"])


def test_a_good_change_on_reload_is_a_draft_and_is_sent_only_once_approved(
    app: App, tmp_path: Path
) -> None:
    """HR-12: editing a file (and reloading) changes nothing sent; a second person's
    approval does, from the next plan on, without another reload."""
    app, templates = with_own_templates(app, tmp_path)
    load(app, tmp_path, [row("A-1", days_ago(1))])
    svc = service(app)
    sms = templates / "sms" / "early_day1.en-US.txt.j2"
    text = sms.read_text(encoding="utf-8")
    assert "{{" in text
    sms.write_text(text.replace("{{", "Revised wording. {{", 1), encoding="utf-8")
    assert svc.reload() is True
    [draft] = app.catalog.sync(NOW, "ann").drafted
    asyncio.run(svc.plan())
    [first] = messages(app, channel="sms")
    assert "Revised wording." not in str(first["body"])
    assert first["template_version"] != draft.sha256

    app.catalog.approve(draft.key, draft.sha256[:8], approver="bob", now=NOW)
    load(app, tmp_path, [row("A-2", days_ago(1))], name="b.csv")
    asyncio.run(svc.plan())  # the same instance: it holds the planning lock
    [second] = [m for m in messages(app, channel="sms") if m["account_id"] == "A-2"]
    assert "Revised wording." in str(second["body"])
    assert second["template_version"] == second["template_sha256"] == draft.sha256


def test_each_plan_is_recorded_as_a_run_that_readiness_reads(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))])
    svc = service(app)
    assert app.store.last_finished("plan") is None
    asyncio.run(svc.plan())
    last = app.store.last_finished("plan")
    assert last is not None
    assert (last["instance"], last["status"], last["finished_at"]) == ("test-1", "ok", NOW)
    # Readiness wants the schedule running too; here only the plan check is asserted.
    checks = svc.readiness().checks
    assert checks["database"] == "ok"
    assert checks["last_plan"] == "0s ago by test-1"
    stale = service(app, NOW + timedelta(hours=2))
    assert stale.readiness().ready is False


def test_a_plan_missed_during_downtime_is_caught_up_once(app: App, tmp_path: Path) -> None:
    trigger = cron_trigger("*/15 * * * *")
    assert service(app)._plan_missed(trigger) is True  # never planned
    asyncio.run(service(app, datetime(2026, 6, 10, 15, 1, tzinfo=UTC)).plan())
    assert service(app, datetime(2026, 6, 10, 15, 10, tzinfo=UTC))._plan_missed(trigger) is False
    # Down from 15:14 to 18:40: eleven ticks missed, one catch-up run.
    assert service(app, datetime(2026, 6, 10, 18, 40, tzinfo=UTC))._plan_missed(trigger) is True


def test_housekeeping_closes_holds_past_their_end_and_audits_it(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))])
    hold_id = app.store.add_hold(
        "A-1",
        "promise_to_pay",
        channel=None,
        scope="account",
        starts_at=NOW - timedelta(days=3),
        ends_at=NOW - timedelta(hours=1),
        note="promised on the phone",
        actor="collector:ann",
        now=NOW - timedelta(days=3),
    )
    asyncio.run(service(app).housekeep())
    [hold] = [h for h in app.store.holds_of("A-1") if h["id"] == hold_id]
    assert hold["lifted_by"] == "system:expiry"
    assert hold["lifted_at"] == NOW - timedelta(hours=1)
    assert ("hold_expired", None) in audit_events(app)
    # Run twice: nothing new.
    asyncio.run(service(app).housekeep())
    assert audit_events(app).count(("hold_expired", None)) == 1


def test_housekeeping_seals_the_audit_chain_and_anchors_its_head(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1)), row("A-2", days_ago(40))])
    asyncio.run(service(app).plan())
    assert app.audit_chain.unsealed() > 0
    running = service(app)

    asyncio.run(running.housekeep())

    assert app.audit_chain.unsealed() == 0
    head = app.audit_chain.head()
    assert head is not None and app.anchors.read() == [head]
    # Within the anchor interval, new records are sealed but not anchored again.
    load(app, tmp_path, [row("A-3", days_ago(2))])
    asyncio.run(running.plan())
    asyncio.run(running.housekeep())
    assert app.audit_chain.unsealed() == 0
    assert app.anchors.read() == [head]
