"""Metrics on a real database: the exposition parses, and the numbers move with messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from dispatcher.bootstrap import App
from dispatcher.clock import FixedClock
from dispatcher.domain.message import MessageStatus
from dispatcher.domain.strategy import ChannelKind
from dispatcher.metric import LATENCY_BUCKETS, Metrics, Outcome
from dispatcher.service.importer import import_accounts
from dispatcher.store.sql import SqlStore
from tests.conftest import write_csv

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)  # 11:00 in New York: inside every window

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class MovableClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


class Ticker:
    """A stand-in for time.monotonic that only moves when told to."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def scrape(metrics: Metrics) -> Samples:
    payload, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(payload.decode())
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def row(account_id: str, due: date, **extra: str) -> dict[str, str]:
    base = {
        "account_id": account_id,
        "full_name": "Jane Doe",
        "balance": "420.50",
        "currency": "USD",
        "due_date": due.isoformat(),
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


def load(app: App, tmp_path: Path, rows: list[dict[str, str]], name: str = "a.csv") -> None:
    report = import_accounts(
        app.store,
        write_csv(tmp_path / name, rows),
        now=NOW,
        default_timezone="America/New_York",
        default_region="US",
    )
    assert report.rejected == 0, report.first_rejects


def days_ago(n: int) -> date:
    return (NOW - timedelta(days=n)).date()


class EmptyStore:
    """A database with nothing in it, for the tests of the event metrics alone."""

    def message_counts(self) -> list[tuple[str, str, int]]:
        return []

    def pending_message_counts(self) -> list[tuple[str, str, str | None, int]]:
        return []

    def active_hold_counts(self, now: datetime) -> list[tuple[str, int]]:
        return []

    def due_backlog(self, now: datetime) -> list[tuple[str, str, int, datetime | None]]:
        return []


def bare_metrics(**options: object) -> Metrics:
    return Metrics(EmptyStore(), FixedClock(NOW), **options)  # type: ignore[arg-type]


def metrics_for(app: App, clock: MovableClock | FixedClock, **options: object) -> Metrics:
    options.setdefault("history_max_age", timedelta(0))
    return Metrics(app.store, clock, **options)  # type: ignore[arg-type]


def test_an_empty_outbox_renders_every_series_at_zero(app: App) -> None:
    samples = scrape(metrics_for(app, FixedClock(NOW)))
    assert all(name.startswith("dispatcher_") for name, _ in samples), "not our own registry"
    assert value(samples, "dispatcher_store_up") == 1
    for kind in ChannelKind:
        for status in MessageStatus:
            key = {"channel": kind.value, "status": status.value}
            assert value(samples, "dispatcher_outbox_messages", **key) == 0
        for status in ("queued", "sending"):
            key = {"channel": kind.value, "status": status}
            assert value(samples, "dispatcher_outbox_due_messages", **key) == 0
        assert value(samples, "dispatcher_outbox_oldest_due_age_seconds", channel=kind.value) == 0
        for outcome in Outcome:
            key = {"channel": kind.value, "outcome": outcome.value}
            assert value(samples, "dispatcher_send_outcomes_total", **key) == 0
    assert series(samples, "dispatcher_holds_active") == {}
    assert value(samples, "dispatcher_last_successful_plan_timestamp_seconds") == 0
    assert value(samples, "dispatcher_plan_runs_total", result="failed") == 0


def test_plan_raises_the_due_backlog_and_sending_drains_it(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1)), row("A-2", days_ago(40))])
    clock = MovableClock(NOW)
    metrics = metrics_for(app, clock)
    app.planner().plan(NOW)
    metrics.plan_succeeded(NOW)

    planned = scrape(metrics)
    # early day1 SMS for A-1, mid day1 SMS for A-2, and A-2's email an hour after its SMS.
    assert value(planned, "dispatcher_outbox_messages", channel="sms", status="queued") == 2
    assert value(planned, "dispatcher_outbox_messages", channel="email", status="queued") == 1
    assert value(planned, "dispatcher_outbox_due_messages", channel="sms", status="queued") == 2
    assert value(planned, "dispatcher_outbox_due_messages", channel="email", status="queued") == 0
    assert value(planned, "dispatcher_last_successful_plan_timestamp_seconds") == NOW.timestamp()
    assert value(planned, "dispatcher_plan_runs_total", result="succeeded") == 1

    # Nobody sends for ten minutes: the oldest due message ages; the email is still not due.
    clock.at = NOW + timedelta(minutes=10)
    waiting = scrape(metrics)
    assert value(waiting, "dispatcher_outbox_oldest_due_age_seconds", channel="sms") == 600
    assert value(waiting, "dispatcher_outbox_oldest_due_age_seconds", channel="email") == 0

    report = asyncio.run(app.sender().send(clock.at))
    metrics.observe_outcomes(report.counts)
    sent = scrape(metrics)
    assert value(sent, "dispatcher_send_outcomes_total", channel="sms", outcome="sent") == 2
    assert value(sent, "dispatcher_outbox_messages", channel="sms", status="sent") == 2
    assert value(sent, "dispatcher_outbox_messages", channel="sms", status="queued") == 0
    assert value(sent, "dispatcher_outbox_due_messages", channel="sms", status="queued") == 0
    assert value(sent, "dispatcher_outbox_oldest_due_age_seconds", channel="sms") == 0

    # An hour later the deferred email is due and waiting.
    clock.at = NOW + timedelta(hours=1, minutes=5)
    later = scrape(metrics)
    assert value(later, "dispatcher_outbox_due_messages", channel="email", status="queued") == 1
    assert value(later, "dispatcher_outbox_oldest_due_age_seconds", channel="email") == 300


def test_holds_in_force_and_held_messages_are_counted_by_reason(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1)), row("A-2", days_ago(1), opt_out_sms="true")])
    clock = MovableClock(NOW)
    metrics = metrics_for(app, clock)

    def hold(reason: str, starts_at: datetime, ends_at: datetime | None = None) -> int:
        return app.store.add_hold(
            "A-1",
            reason,
            channel=None,
            scope="account",
            starts_at=starts_at,
            ends_at=ends_at,
            note="evidence",
            actor="test",
            now=NOW - timedelta(days=5),
        )

    dispute = hold("dispute", NOW - timedelta(hours=1))
    hold("payment_plan", NOW - timedelta(days=5), ends_at=NOW - timedelta(days=1))  # over
    hold("fraud", NOW + timedelta(days=1))  # not yet
    before = scrape(metrics)
    assert series(before, "dispatcher_holds_active") == {
        frozenset({("reason", "dispute")}): 1,
        frozenset({("reason", "opted_out_sms")}): 1,  # placed by the import flag
    }

    app.planner().plan(NOW)
    planned = scrape(metrics)
    assert value(planned, "dispatcher_outbox_held_messages", channel="sms", reason="dispute") == 1
    assert (
        value(planned, "dispatcher_outbox_held_messages", channel="sms", reason="opted_out_sms")
        == 1
    )
    assert value(planned, "dispatcher_outbox_messages", channel="sms", status="held") == 2
    assert value(planned, "dispatcher_outbox_due_messages", channel="sms", status="queued") == 0

    app.store.lift_hold(dispute, note="resolved", actor="test", now=NOW)
    clock.at = NOW + timedelta(days=2)  # the fraud hold has started by now
    lifted = scrape(metrics)
    assert series(lifted, "dispatcher_holds_active") == {
        frozenset({("reason", "fraud")}): 1,
        frozenset({("reason", "opted_out_sms")}): 1,
    }


def test_finished_counts_are_cached_while_pending_ones_are_fresh(app: App, tmp_path: Path) -> None:
    load(app, tmp_path, [row("A-1", days_ago(1))])
    ticker = Ticker()
    metrics = metrics_for(
        app, FixedClock(NOW), history_max_age=timedelta(minutes=5), monotonic=ticker
    )
    app.planner().plan(NOW)
    assert value(scrape(metrics), "dispatcher_outbox_messages", channel="sms", status="sent") == 0
    asyncio.run(app.sender().send(NOW))
    fresh = scrape(metrics)
    assert value(fresh, "dispatcher_outbox_messages", channel="sms", status="queued") == 0
    assert value(fresh, "dispatcher_outbox_messages", channel="sms", status="sent") == 0
    ticker.seconds += 300
    recounted = scrape(metrics)
    assert value(recounted, "dispatcher_outbox_messages", channel="sms", status="sent") == 1


def test_send_events_latency_and_provider_errors() -> None:
    metrics = bare_metrics()
    metrics.observe_send("sms", Outcome.SENT, latency_seconds=0.2)
    metrics.observe_send("sms", "sent", latency_seconds=-1.0)  # a little early: not late
    metrics.observe_latency("email", 4000.0)
    metrics.observe_send("sms", "held:dispute")
    metrics.observe_send("email", "deferred")
    metrics.observe_send("letter", "stage_left")
    metrics.observe_outcomes({("sms", "retry"): 2, ("sms", "interrupted"): 1, ("sms", "failed"): 0})
    metrics.observe_outcomes(
        {
            ("sms", "reconciled:sent"): 1,
            ("sms", "reconciled:queued"): 2,
            ("sms", "unconfirmed"): 1,
            ("sms", "reconcile_pending"): 1,
            ("email", "unknown"): 1,
        }
    )
    metrics.observe_provider_error("sms", "21211")
    metrics.observe_provider_error("sms", 21211)
    metrics.observe_provider_error("email", None)
    metrics.plan_failed()
    metrics.config_reloaded(ok=False)

    samples = scrape(metrics)
    outcomes = {
        dict(labels)["outcome"]: v
        for labels, v in series(samples, "dispatcher_send_outcomes_total").items()
        if dict(labels)["channel"] == "sms" and v
    }
    assert outcomes == {
        "sent": 2,
        "held": 1,
        "retry": 2,
        "interrupted": 1,
        "reconciled": 3,
        "unconfirmed": 1,
        "reconcile_pending": 1,
    }
    assert value(samples, "dispatcher_send_outcomes_total", channel="email", outcome="unknown")
    assert value(samples, "dispatcher_send_outcomes_total", channel="email", outcome="deferred")
    assert value(samples, "dispatcher_send_outcomes_total", channel="letter", outcome="expired")
    assert value(samples, "dispatcher_send_latency_seconds_count", channel="sms") == 2
    assert value(samples, "dispatcher_send_latency_seconds_sum", channel="sms") == pytest.approx(
        0.2
    )
    assert value(samples, "dispatcher_send_latency_seconds_bucket", channel="sms", le="0.05") == 1
    assert value(samples, "dispatcher_send_latency_seconds_bucket", channel="sms", le="0.25") == 2
    top = str(LATENCY_BUCKETS[-1])
    assert value(samples, "dispatcher_send_latency_seconds_bucket", channel="email", le=top) == 0
    assert value(samples, "dispatcher_send_latency_seconds_bucket", channel="email", le="+Inf") == 1
    assert value(samples, "dispatcher_provider_errors_total", channel="sms", code="21211") == 2
    assert value(samples, "dispatcher_provider_errors_total", channel="email", code="unknown") == 1
    assert value(samples, "dispatcher_plan_runs_total", result="failed") == 1
    assert value(samples, "dispatcher_config_reloads_total", result="refused") == 1


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda m: m.observe_send("sms", "bounced"), id="outcome"),
        pytest.param(lambda m: m.observe_send("fax", "sent"), id="channel"),
        pytest.param(lambda m: m.observe_provider_error("pigeon", "1"), id="error-channel"),
        pytest.param(lambda m: m.plan_succeeded(datetime(2026, 6, 10, 15, 0)), id="naive"),
    ],
)
def test_unknown_labels_and_naive_times_are_refused(call: Callable[[Metrics], None]) -> None:
    # Labels come from closed sets, so a typo cannot start an unbounded family of series.
    with pytest.raises(ValueError, match=r"."):
        call(bare_metrics())


def test_the_shared_last_plan_time_wins_when_it_is_later() -> None:
    shared = NOW + timedelta(minutes=30)
    metrics = bare_metrics(last_plan=lambda: shared)
    assert value(scrape(metrics), "dispatcher_last_successful_plan_timestamp_seconds") == (
        shared.timestamp()
    )
    metrics.plan_succeeded(NOW + timedelta(hours=1))
    assert value(scrape(metrics), "dispatcher_last_successful_plan_timestamp_seconds") == (
        (NOW + timedelta(hours=1)).timestamp()
    )


def test_an_unreachable_database_still_renders_the_event_metrics(tmp_path: Path) -> None:
    store = SqlStore(create_engine(f"sqlite:///{tmp_path / 'missing' / 'dispatcher.db'}"))
    metrics = Metrics(store, FixedClock(NOW))  # registering reads nothing
    metrics.observe_send("sms", "sent", 1.0)
    samples = scrape(metrics)
    assert value(samples, "dispatcher_store_up") == 0
    assert value(samples, "dispatcher_send_outcomes_total", channel="sms", outcome="sent") == 1
    assert series(samples, "dispatcher_outbox_messages") == {}


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it() -> None:
    payload, content_type = bare_metrics().render(
        "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"
    )
    assert content_type.startswith("application/openmetrics-text")
    assert payload.rstrip().endswith(b"# EOF")
