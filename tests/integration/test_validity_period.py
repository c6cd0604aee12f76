"""No late arrival (rule sms.validity.window) through the real sender on both databases:
every SMS carries the validity left in its contact window; with too little left it waits
for the next window."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from dispatcher.bootstrap import App
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.service import explainer
from dispatcher.store.sql import AUDIT
from tests.integration.test_pipeline import days_ago, load, messages, row

NY = ZoneInfo("America/New_York")


def sms_channel(channels: dict[ChannelKind, MemoryChannel]) -> MemoryChannel:
    return channels[ChannelKind.SMS]


def test_every_sms_is_handed_over_with_the_validity_left_in_its_window(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    at = datetime(2026, 6, 10, 15, 0, tzinfo=NY)  # six hours before 21:00 in New York
    load(app, tmp_path, [row("A-1", days_ago(1))], now=at)
    app.planner().plan(at)
    asyncio.run(app.sender().send(at.astimezone(UTC)))
    [outbound] = sms_channel(channels).delivered
    assert outbound.valid_for is not None
    # Whole seconds, counted from the hand-over (a moment after the pass began).
    assert timedelta(hours=6) - timedelta(seconds=5) <= outbound.valid_for <= timedelta(hours=6)
    with app.store.engine.connect() as conn:
        [sent] = conn.execute(select(AUDIT.c.detail).where(AUDIT.c.event == "message_sent"))
    assert json.loads(sent.detail)["valid_for_seconds"] == int(outbound.valid_for.total_seconds())
    # Email has no such thing: it lands in the mailbox when it is handed over.
    assert all(o.valid_for is None for o in channels[ChannelKind.EMAIL].delivered)


def test_a_morning_sms_gets_at_most_the_ten_hours_twilio_keeps_it(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    at = datetime(2026, 6, 10, 8, 0, tzinfo=NY)  # 13 hours of window ahead
    load(app, tmp_path, [row("A-1", days_ago(1))], now=at)
    app.planner().plan(at)
    asyncio.run(app.sender().send(at))
    [outbound] = sms_channel(channels).delivered
    assert outbound.valid_for == timedelta(seconds=36_000)


def test_an_sms_with_too_little_of_its_window_left_waits_for_the_next_one(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    late = datetime(2026, 6, 10, 20, 56, tzinfo=NY)  # 4 minutes left; the minimum is 5
    load(app, tmp_path, [row("A-1", days_ago(1))], now=late)
    app.planner().plan(late)
    [queued] = messages(app, channel="sms")
    assert queued["status"] == "queued"

    report = asyncio.run(app.sender().send(late))
    assert report.counts[("sms", "deferred:window_closing")] == 1
    assert sms_channel(channels).delivered == []
    [m] = messages(app, channel="sms")
    morning = datetime(2026, 6, 11, 8, 0, tzinfo=NY)
    assert (m["status"], m["hold_reason"], m["rule_id"]) == (
        "queued",
        "window_closing",
        "sms.validity.window",
    )
    assert m["scheduled_for"] == morning
    with app.store.engine.connect() as conn:
        [deferred] = conn.execute(select(AUDIT.c.detail).where(AUDIT.c.event == "message_deferred"))
    detail = json.loads(deferred.detail)
    assert (detail["reason"], detail["rule_id"], detail["at"]) == (
        "window_closing",
        "sms.validity.window",
        "send",
    )
    assert detail["until"] == morning.astimezone(UTC).isoformat()

    # `explain` names the rule and its source.
    story = explainer.explain(app.store, app.strategy, app.timing, "A-1", late)
    [step] = [s for s in story.steps if s.channel == "sms"]
    assert step.rule_id == "sms.validity.window" and "FDCPA" in str(step.source)

    asyncio.run(app.sender().send(morning))
    [outbound] = sms_channel(channels).delivered
    assert outbound.valid_for == timedelta(seconds=36_000)
    assert messages(app, channel="sms")[0]["status"] == "sent"


def test_with_enough_left_the_last_minutes_of_the_window_are_used(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    at = datetime(2026, 6, 10, 20, 50, tzinfo=NY)  # 10 minutes left
    load(app, tmp_path, [row("A-1", days_ago(1))], now=at)
    app.planner().plan(at)
    asyncio.run(app.sender().send(at))
    [outbound] = sms_channel(channels).delivered
    assert outbound.valid_for is not None
    assert timedelta(seconds=595) <= outbound.valid_for <= timedelta(seconds=600)


def test_a_window_that_closes_while_the_batch_is_under_way_sends_nothing_late(
    app: App, tmp_path: Path, channels: dict[ChannelKind, MemoryChannel]
) -> None:
    at = datetime(2026, 6, 10, 20, 50, tzinfo=NY)  # enough left when the batch is vetted
    load(app, tmp_path, [row("A-1", days_ago(1))], now=at)
    app.planner().plan(at)
    sender = app.sender()
    # ... but the hand-over itself comes after 21:00 (a slow batch, a provider's backlog).
    sender._handover_time = lambda: datetime(2026, 6, 10, 21, 0, 1, tzinfo=NY)  # type: ignore[method-assign]
    report = asyncio.run(sender.send(at))
    assert report.counts[("sms", "deferred:window_closing")] == 1
    assert sms_channel(channels).attempts == []
    [m] = messages(app, channel="sms")
    assert (m["status"], m["attempts"]) == ("queued", 0)
    assert m["scheduled_for"] == datetime(2026, 6, 10, 21, 0, tzinfo=NY)
    # The next pass sees the closed window and waits for the morning.
    asyncio.run(app.sender().send(datetime(2026, 6, 10, 21, 0, 1, tzinfo=NY)))
    [m] = messages(app, channel="sms")
    assert (m["status"], m["hold_reason"]) == ("queued", "quiet_hours")
    assert m["scheduled_for"] == datetime(2026, 6, 11, 8, 0, tzinfo=NY)
    assert sms_channel(channels).attempts == []
