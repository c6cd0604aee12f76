"""The ops read models and the retry of a failure on a real database (SQLite and PostgreSQL):
a local day's run, the outbox, failures with provider codes, sends per hour, exports."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from dispatcher.bootstrap import App
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import InputError, PermanentDelivery
from dispatcher.service import ops
from dispatcher.service.delivery import StatusReport, record_status
from dispatcher.service.export import AUDIT_EXPORT_FIELDS, EXPORT_FIELDS, audit_lines, message_lines
from dispatcher.store.ops import REQUEUED_EVENT, FailureKind
from dispatcher.store.sql import AUDIT, MESSAGE, AuditEntry
from tests.integration.test_pipeline import NOW, days_ago, load, messages, row

NEW_YORK = ZoneInfo("America/New_York")
TODAY = date(2026, 6, 10)  # NOW is 11:00 in New York


def run_day(app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]) -> None:
    """Three accounts: an early SMS (fails at the provider), a mid SMS and email (the email
    deferred an hour by US.gap.electronic), and a disputed one (held)."""
    load(
        app,
        tmp_path,
        [
            row("A-1", days_ago(1)),
            row("A-2", days_ago(40)),
            row("A-3", days_ago(1), dispute="true"),
        ],
    )
    app.planner().plan(NOW)
    channels[ChannelKind.SMS].fail_next(PermanentDelivery("carrier blocked", code="30007"))
    asyncio.run(app.sender().send(NOW))


def test_the_day_run_counts_by_stage_channel_and_reason(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    run_day(app, tmp_path, channels)
    run = ops.day_run(app.store, app.ops, TODAY, NEW_YORK, NOW)
    assert run.totals == {"planned": 4, "queued": 1, "sent": 1, "failed": 1, "held": 1}
    by = {(r.stage, r.channel): r for r in run.rows}
    assert by[("mid", "email")].queued == 1 and by[("mid", "email")].planned == 1
    assert by[("early", "sms")].held == 1  # A-3, disputed
    assert by[("early", "sms")].sent + by[("mid", "sms")].sent == 1
    assert by[("early", "sms")].failed + by[("mid", "sms")].failed == 1
    reasons = {(r.status, r.channel, r.reason): r.count for r in run.reasons}
    assert reasons[("held", "sms", "dispute")] == 1
    assert reasons[("queued", "email", "cap_email_sms_1h")] == 1
    # The failure, with the provider's own code (from the sender's audit record).
    [failure] = run.failures
    assert failure.code == "30007"
    assert failure.last_error is not None and "carrier blocked" in failure.last_error
    assert failure.channel == "sms" and failure.attempts == 1
    # The day before and the day after saw none of it (local days, not UTC days).
    assert ops.day_run(app.store, app.ops, TODAY - timedelta(days=1), NEW_YORK, NOW).totals == {
        "planned": 0,
        "queued": 0,
        "sent": 0,
        "failed": 0,
        "held": 0,
    }
    after = ops.day_run(app.store, app.ops, TODAY + timedelta(days=1), NEW_YORK, NOW)
    assert (after.totals["planned"], after.totals["sent"], after.totals["failed"]) == (0, 0, 0)
    assert after.totals["held"] == 1  # held now, and decided before that day ended


def test_a_message_the_provider_reported_undelivered_is_a_failure_in_time_order(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    """Handed over (status ``sent``), then Twilio's callback says ``undelivered``: it did
    not reach the customer, so ops see it beside the failures, marked as such, at the time
    of the report, with the provider's code; it goes off the list when a later report says
    it was delivered after all."""
    run_day(app, tmp_path, channels)
    [failed] = messages(app, status="failed")
    [sent] = messages(app, status="sent", channel="sms")
    reported = NOW + timedelta(minutes=20)
    outcome = record_status(
        app.store,
        app.timing,
        StatusReport(str(sent["provider_message_id"]), "undelivered", "30003"),
        reported,
        max_attempts=5,
    )
    assert outcome.changed and outcome.requeued_for is None
    [again] = messages(app, message_id=sent["message_id"])
    assert again["status"] == "sent"  # what we did stays recorded: we handed it over

    run = ops.day_run(app.store, app.ops, TODAY, NEW_YORK, reported)
    assert [(f.message_id, f.kind) for f in run.failures] == [
        (sent["message_id"], FailureKind.UNDELIVERED),  # newest first: the report, 11:20
        (failed["message_id"], FailureKind.FAILED),  # failed at the send, 11:00
    ]
    undelivered, gave_up = run.failures
    assert undelivered.kind.label == "undelivered (reported by the provider)"
    assert (undelivered.code, undelivered.delivery_status) == ("30003", "undelivered")
    assert (undelivered.failed_at, undelivered.sent_at) == (reported, NOW)
    assert undelivered.last_error is None and not undelivered.retryable
    assert (undelivered.channel, undelivered.account_id) == ("sms", sent["account_id"])
    assert (gave_up.code, gave_up.kind.label, gave_up.retryable) == ("30007", "failed", True)
    # The counts are what we did: it was sent, and is still counted so.
    assert run.totals["sent"] == 1 and run.totals["failed"] == 1
    # The local day of the report, not of the hand-over, holds it.
    assert not ops.day_run(app.store, app.ops, TODAY - timedelta(days=1), NEW_YORK, NOW).failures

    # The failed one is retried and fails again after the report: now it is the newest.
    retried = NOW + timedelta(minutes=30)
    ops.retry_failed(app.ops, str(failed["message_id"]), actor="olga", note="x", now=retried)
    channels[ChannelKind.SMS].fail_next(PermanentDelivery("still blocked", code="30008"))
    asyncio.run(app.sender().send(retried))
    run = ops.day_run(app.store, app.ops, TODAY, NEW_YORK, retried)
    assert [(f.message_id, f.code, f.failed_at) for f in run.failures] == [
        (failed["message_id"], "30008", retried),
        (sent["message_id"], "30003", reported),
    ]
    # An undelivered message is never queued again by hand: it went out (HR-40).
    with pytest.raises(InputError, match="is sent, not failed"):
        ops.retry_failed(app.ops, str(sent["message_id"]), actor="olga", note="x", now=retried)

    # Delivered after all (reports come out of order): off the list.
    record_status(
        app.store,
        app.timing,
        StatusReport(str(sent["provider_message_id"]), "delivered"),
        retried + timedelta(minutes=1),
        max_attempts=5,
    )
    run = ops.day_run(app.store, app.ops, TODAY, NEW_YORK, retried)
    assert [f.message_id for f in run.failures] == [failed["message_id"]]


def test_the_failures_list_keeps_its_limit_across_both_kinds(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    run_day(app, tmp_path, channels)
    [sent] = messages(app, status="sent", channel="sms")
    report = StatusReport(str(sent["provider_message_id"]), "failed", "30005")
    record_status(app.store, app.timing, report, NOW + timedelta(minutes=5), max_attempts=5)
    start, end = ops.day_bounds(TODAY, NEW_YORK)
    [newest] = app.ops.failures(start, end, limit=1)
    assert (newest.message_id, newest.kind, newest.delivery_status, newest.code) == (
        sent["message_id"],
        FailureKind.UNDELIVERED,
        "failed",
        "30005",
    )
    assert len(app.ops.failures(start, end)) == 2


def test_the_outbox_depth_says_what_is_due_in_flight_later_and_held(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    run_day(app, tmp_path, channels)
    depth = {d.channel: d for d in ops.outbox_depth(app.store, NOW)}
    assert (depth["email"].due, depth["email"].later, depth["email"].oldest_due_age) == (0, 1, None)
    assert depth["sms"].held == 1 and depth["sms"].due == 0
    later = NOW + timedelta(hours=2)
    depth = {d.channel: d for d in ops.outbox_depth(app.store, later)}
    assert (depth["email"].due, depth["email"].later) == (1, 0)
    age = depth["email"].oldest_due_age
    assert age is not None and timedelta(minutes=59) < age <= timedelta(hours=1)


def test_a_failed_message_retried_by_a_person_goes_again_once_and_is_audited(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    run_day(app, tmp_path, channels)
    [failed] = messages(app, status="failed")
    at = NOW + timedelta(minutes=5)
    account = ops.retry_failed(
        app.ops, str(failed["message_id"]), actor="olga", note="carrier fixed", now=at
    )
    assert account == failed["account_id"]
    [again] = messages(app, message_id=failed["message_id"])
    assert (again["status"], again["next_attempt_at"]) == ("queued", None)
    with app.store.engine.connect() as conn:
        audit = conn.execute(select(AUDIT).where(AUDIT.c.event == REQUEUED_EVENT)).mappings().all()
    assert [(a["actor"], a["message_id"]) for a in audit] == [("olga", failed["message_id"])]
    detail = json.loads(audit[0]["detail"])
    assert detail["note"] == "carrier fixed" and "30007" in detail["last_error"]
    # A second press (another tab, another person) queues nothing more.
    with pytest.raises(InputError, match="is queued, not failed"):
        ops.retry_failed(app.ops, str(failed["message_id"]), actor="ivan", note="x", now=at)
    report = asyncio.run(app.sender().send(at))
    assert report.counts[("sms", "sent")] == 1
    assert [m.message_id for m in channels[ChannelKind.SMS].delivered].count(
        str(failed["message_id"])
    ) == 1
    # Sent now: never queued by hand again (it could reach the customer twice).
    with pytest.raises(InputError, match="is sent, not failed"):
        ops.retry_failed(app.ops, str(failed["message_id"]), actor="olga", note="x", now=at)
    assert ops.day_run(app.store, app.ops, TODAY, NEW_YORK, at).totals["sent"] == 2


def test_a_retry_needs_a_person_a_reason_and_a_message(app: App) -> None:
    with pytest.raises(InputError, match="name of the person"):
        ops.retry_failed(app.ops, "m", actor=" ", note="n", now=NOW)
    with pytest.raises(InputError, match="say why"):
        ops.retry_failed(app.ops, "m", actor="olga", note="  ", now=NOW)
    with pytest.raises(InputError, match="no message"):
        ops.retry_failed(app.ops, "nope", actor="olga", note="n", now=NOW)


def test_sends_per_hour_fill_seven_days_of_utc_hours(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    load(app, tmp_path, [row(f"A-{i}", days_ago(1)) for i in range(3)])
    app.planner().plan(NOW)
    asyncio.run(app.sender().send(NOW))
    sent = messages(app, status="sent")
    assert len(sent) == 3
    # Spread the hand-overs: one at 15:20, one two hours earlier, one eight days ago.
    stamps = [NOW + timedelta(minutes=20), NOW - timedelta(hours=2), NOW - timedelta(days=8)]
    with app.store.engine.begin() as conn:
        for m, at in zip(sent, stamps, strict=True):
            conn.execute(
                update(MESSAGE).where(MESSAGE.c.message_id == m["message_id"]).values(sent_at=at)
            )
    hours = ops.sends_per_hour(app.ops, NOW + timedelta(minutes=30))
    assert len(hours) == 7 * 24
    assert hours[-1].hour == NOW and hours[0].hour == NOW - timedelta(hours=167)
    assert all(h.hour.tzinfo is not None for h in hours)
    counted = {h.hour: h.by_channel["sms"] for h in hours if h.total}
    assert counted == {NOW: 1, NOW - timedelta(hours=2): 1}  # eight days ago is outside
    assert sum(h.total for h in hours) == 2


def test_day_bounds_follow_the_local_clock_across_dst() -> None:
    start, end = ops.day_bounds(date(2026, 11, 1), NEW_YORK)  # clocks go back: 25 hours
    assert (start, end - start) == (datetime(2026, 11, 1, 4, tzinfo=UTC), timedelta(hours=25))
    start, end = ops.day_bounds(date(2026, 3, 8), NEW_YORK)  # clocks go forward: 23 hours
    assert (start, end - start) == (datetime(2026, 3, 8, 5, tzinfo=UTC), timedelta(hours=23))


def test_exports_of_consecutive_ranges_partition_messages_and_audit_records(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    run_day(app, tmp_path, channels)
    app.store.audit(
        [AuditEntry("note_added", '=HYPERLINK("x")', NOW + timedelta(hours=1), "A-1", None, {})]
    )
    cut = NOW + timedelta(minutes=30)
    everything = list(app.store.iter_messages())
    before = list(app.store.iter_messages(None, NOW))
    first = list(app.store.iter_messages(NOW, cut))
    second = list(app.store.iter_messages(cut, None))
    assert not before
    ids = [m["message_id"] for m in first + second]
    assert sorted(ids) == sorted(m["message_id"] for m in everything) and len(set(ids)) == len(ids)
    # JSON lines: one object per message with exactly the contract's fields.
    lines = list(message_lines(first, "jsonl"))
    assert [set(json.loads(line)) for line in lines] == [set(EXPORT_FIELDS)] * len(first)
    # Audit records: the range is on the record's time; CSV neutralises formula cells.
    records = list(app.store.iter_audit(NOW, cut))
    later = list(app.store.iter_audit(cut, NOW + timedelta(days=1)))
    assert {r["event"] for r in later} == {"note_added"}
    # The catalog's bootstrap approvals were written at the wall clock, long after.
    assert len(records) + len(later) == len(list(app.store.iter_audit(NOW, NOW + timedelta(1))))
    parsed = [json.loads(line) for line in audit_lines(records, "jsonl")]
    assert all(isinstance(p["detail"], dict) for p in parsed)
    assert {p["event"] for p in parsed} >= {"message_queued", "message_sent", "message_failed"}
    table = list(csv.reader(io.StringIO("".join(audit_lines(later, "csv")))))
    assert table[0] == list(AUDIT_EXPORT_FIELDS)
    assert table[1][AUDIT_EXPORT_FIELDS.index("actor")] == '\'=HYPERLINK("x")'
    assert table[1][AUDIT_EXPORT_FIELDS.index("detail")] == "{}"
