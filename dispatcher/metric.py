"""Prometheus metrics for ops: what the service did, and what the database says is waiting.

Two kinds of metric, on purpose:

* **Events** (counters, a histogram): what *this process* did — send outcomes, provider
  errors, hand-off latency, plan runs. The service calls :class:`Metrics` methods as
  things happen; aggregate them across instances with ``sum``.
* **State** (gauges read from the database at scrape time by a custom collector): the
  outbox by channel and status, hold records in force, the due backlog and its oldest
  message. Every instance reads the same shared database, so every instance reports the
  same truth; alert on ``max`` of them, never ``sum``.

Everything lives on a registry owned by one :class:`Metrics` instance (never the process
default registry), built by whoever wires the daemon, never at import: two apps in one
test process, or a test and the daemon, cannot see each other's numbers.

Cost on a big outbox: each scrape reads the pending rows (held, queued, sending) through
``ix_message_due`` (status, scheduled_for) and the small hold table, so it costs the size
of the backlog, not of the outbox. Counting the finished messages (sent, failed, expired,
...) needs a pass over the whole table (about 0.5 s on a million rows on SQLite), so that
part is refreshed at most every ``history_max_age`` (5 minutes by default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sqlalchemy.exc import SQLAlchemyError

from dispatcher.clock import Clock
from dispatcher.domain.decision import EndReason
from dispatcher.domain.message import MessageStatus
from dispatcher.domain.strategy import ChannelKind
from dispatcher.error import DispatcherError

log = logging.getLogger(__name__)

PREFIX = "dispatcher"

# Time from a message's due time to its hand-off to the provider: from a prompt send run
# (tens of milliseconds) to a backlog an hour deep.
LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
)

# Statuses still moving: counted fresh on every scrape (an index range, cheap).
PENDING_STATUSES = (MessageStatus.HELD, MessageStatus.QUEUED, MessageStatus.SENDING)
# Statuses a message ends in: counted by a whole-table pass, cached for history_max_age.
FINISHED_STATUSES = tuple(s for s in MessageStatus if s not in PENDING_STATUSES)
# Statuses of a due message that has not gone yet (the backlog gauges).
IN_FLIGHT = (MessageStatus.QUEUED, MessageStatus.SENDING)

_MAX_CODE_LENGTH = 32


class Outcome(StrEnum):
    """What one send attempt came to: the ``outcome`` label of the send counter.

    A closed set, so the label cannot grow without bound (the reasons of holds and
    deferrals are in the database gauges instead).
    """

    SENT = "sent"  # handed to the provider
    HANDED_TO_PRINT = "handed_to_print"  # letter: its print batch is in the drop folder
    RETRY = "retry"  # transient failure; queued again with a backoff
    FAILED = "failed"  # permanent failure, or attempts exhausted
    HELD = "held"  # a hold found at the last moment
    DEFERRED = "deferred"  # outside the window or over a cap at the last moment; queued later
    EXPIRED = "expired"  # stage left, account cured or cycle ended since it was planned
    INTERRUPTED = "interrupted"  # left ``sending`` by a process that died; marked failed
    # Reconciliation of interrupted sends (``reconciled:sent`` / ``reconciled:queued``):
    # looked up at the provider and recorded sent, or queued again as it never got there.
    RECONCILED = "reconciled"
    RECONCILE_PENDING = "reconcile_pending"  # the provider could not be asked; next round
    UNCONFIRMED = "unconfirmed"  # no answer from a provider that can be asked later
    UNKNOWN = "unknown"  # may or may not have been delivered; a person decides

    @classmethod
    def of(cls, outcome: str) -> Outcome:
        """The outcome of a :class:`~dispatcher.service.sender.SendReport` key:
        ``held:<reason>`` → held, ``deferred:<reason>`` → deferred, an end reason
        (``stage_left``, ...) → expired. Anything else is a programming error."""
        head = outcome.split(":", 1)[0]
        if head in cls._value2member_map_:
            return cls(head)
        if outcome in EndReason._value2member_map_:
            return cls.EXPIRED
        raise ValueError(f"unknown send outcome {outcome!r}")


class MetricsStore(Protocol):
    """The reads the collector makes; :class:`~dispatcher.store.sql.SqlStore` has them."""

    def message_counts(self) -> list[tuple[str, str, int]]: ...

    def pending_message_counts(self) -> list[tuple[str, str, str | None, int]]: ...

    def active_hold_counts(self, now: datetime) -> list[tuple[str, int]]: ...

    def due_backlog(self, now: datetime) -> list[tuple[str, str, int, datetime | None]]: ...


# The label values of dispatcher_webhook_requests_total, per endpoint (bounded on purpose).
WEBHOOK_OUTCOMES: dict[str, tuple[str, ...]] = {
    "status": ("applied", "ignored", "requeued", "unmatched", "refused"),
    "inbound": ("opt_out", "opt_in", "help", "other", "refused"),
}


class Metrics:
    """The metrics of one dispatcher process, on a registry of its own.

    ``store`` and ``clock`` feed the gauges read at scrape time. ``last_plan``, when
    given, returns the last successful plan time recorded somewhere shared (e.g. the
    database); the gauge then shows the later of it and what this process saw, so an
    instance that is not the elected planner still reports it. ``monotonic`` times the
    cache of finished-message counts (real elapsed time, not the replayable clock).
    """

    def __init__(
        self,
        store: MetricsStore,
        clock: Clock,
        *,
        history_max_age: timedelta = timedelta(minutes=5),
        last_plan: Callable[[], datetime | None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry()
        self._last_plan: datetime | None = None
        self.send_outcomes = Counter(
            f"{PREFIX}_send_outcomes",
            "Messages the sender dealt with, by channel and outcome (sent, retry, failed, "
            "held, deferred, expired, interrupted). Alert when the share of failed rises: "
            'sum by (channel) (rate(dispatcher_send_outcomes_total{outcome="failed"}[15m])) '
            "/ sum by (channel) (rate(dispatcher_send_outcomes_total[15m])) > 0.05. "
            "Any interrupted one needs a person: the provider may or may not have it.",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.provider_errors = Counter(
            f"{PREFIX}_provider_errors",
            "Delivery errors raised by a provider (Twilio, SMTP, ...), by channel and the "
            "provider's own error code ('unknown' when it gave none). Alert on a burst of "
            "one code, e.g. rate(...[5m]) > 0.1: a revoked credential, a blocked sender "
            "number or a rate limit shows here before messages start failing for good.",
            ["channel", "code"],
            registry=self.registry,
        )
        self.send_latency = Histogram(
            f"{PREFIX}_send_latency_seconds",
            "Time from a message's due time to its hand-off to the provider, by channel. "
            "Alert when the p95 exceeds the send interval by far, e.g. "
            "histogram_quantile(0.95, sum by (le, channel) "
            "(rate(dispatcher_send_latency_seconds_bucket[30m]))) > 900: the sender falls "
            "behind and messages may leave their contact window.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.plan_runs = Counter(
            f"{PREFIX}_plan_runs",
            "Plan runs by result (succeeded, failed). Alert on any failure: "
            'increase(dispatcher_plan_runs_total{result="failed"}[1h]) > 0.',
            ["result"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads",
            "Configuration reloads (SIGHUP) by result (ok, refused). A refused reload keeps "
            "the old strategy, policies and templates running while the files on disk say "
            'otherwise. Alert: increase(dispatcher_config_reloads_total{result="refused"}'
            "[1h]) > 0.",
            ["result"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            f"{PREFIX}_webhook_requests",
            "Provider webhook requests by endpoint (status, inbound) and outcome: applied, "
            "ignored (a late or repeated status), requeued (validity expired), unmatched "
            "(unknown message id), opt_out, opt_in, help, other (inbound), refused (bad or "
            "no signature). Alert on refusals: increase(dispatcher_webhook_requests_total"
            '{outcome="refused"}[15m]) > 0 means a wrong token or public URL, or forgery.',
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        # Every known series exists from the start at 0, so rate() and absent() work from
        # the first scrape instead of the first event.
        for channel in ChannelKind:
            self.send_latency.labels(channel.value)
            for outcome in Outcome:
                self.send_outcomes.labels(channel.value, outcome.value)
        for result in ("succeeded", "failed"):
            self.plan_runs.labels(result)
        for result in ("ok", "refused"):
            self.config_reloads.labels(result)
        for endpoint, labels in WEBHOOK_OUTCOMES.items():
            for label in labels:
                self.webhooks.labels(endpoint, label)
        self.registry.register(
            _StoreCollector(
                store,
                clock,
                self._last_successful_plan,
                history_max_age=history_max_age,
                last_plan=last_plan,
                monotonic=monotonic,
            )
        )

    # -- events the service reports ------------------------------------------------------
    def observe_send(
        self, channel: str, outcome: Outcome | str, latency_seconds: float | None = None
    ) -> None:
        """Count one message's send outcome (an :class:`Outcome`, or a send report's
        outcome string such as ``held:dispute``); with ``latency_seconds`` (due time to
        hand-off) when the message reached the provider, as :meth:`observe_latency`."""
        kind = ChannelKind(channel).value
        self.send_outcomes.labels(kind, Outcome.of(str(outcome)).value).inc()
        if latency_seconds is not None:
            self.observe_latency(kind, latency_seconds)

    def observe_outcomes(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Count outcomes given as ``{(channel, outcome): n}``: a send report's ``counts``."""
        for (channel, outcome), n in counts.items():
            if n:
                kind = ChannelKind(channel).value
                self.send_outcomes.labels(kind, Outcome.of(outcome).value).inc(n)

    def observe_latency(self, channel: str, seconds: float) -> None:
        """Time from one message's due time to its hand-off to the provider. Only for
        messages that reached the provider: a held or deferred one has no hand-off."""
        # A message handed off a little before its scheduled instant was not late.
        self.send_latency.labels(ChannelKind(channel).value).observe(max(0.0, seconds))

    def observe_provider_error(self, channel: str, code: str | int | None) -> None:
        """Count one error a provider returned, by its own code (e.g. Twilio 21211, SMTP
        550). Codes are cut to 32 characters so a chatty provider cannot flood labels."""
        label = str(code).strip()[:_MAX_CODE_LENGTH] if code not in (None, "") else "unknown"
        self.provider_errors.labels(ChannelKind(channel).value, label or "unknown").inc()

    def plan_succeeded(self, at: datetime) -> None:
        """Count a successful plan run finished at ``at`` (timezone-aware)."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"plan time {at.isoformat()} has no UTC offset")
        self.plan_runs.labels("succeeded").inc()
        if self._last_plan is None or at > self._last_plan:
            self._last_plan = at

    def plan_failed(self) -> None:
        """Count a plan run that raised (the previous success time stays)."""
        self.plan_runs.labels("failed").inc()

    def webhook_received(self, endpoint: str, outcome: str) -> None:
        """Count one provider webhook request (labels from :data:`WEBHOOK_OUTCOMES`)."""
        if outcome not in WEBHOOK_OUTCOMES.get(endpoint, ()):
            raise ValueError(f"unknown webhook outcome {endpoint}/{outcome}")
        self.webhooks.labels(endpoint, outcome).inc()

    def config_reloaded(self, *, ok: bool) -> None:
        """Count a configuration reload (SIGHUP): applied, or refused as invalid."""
        self.config_reloads.labels("ok" if ok else "refused").inc()

    def _last_successful_plan(self) -> datetime | None:
        return self._last_plan

    # -- exposition ----------------------------------------------------------------------
    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(payload, content type) for ``GET /metrics``. Pass the request's Accept header
        to let a scraper that asks for OpenMetrics get it; the text format otherwise."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _StoreCollector:
    """Gauges read from the database at scrape time (see the module docstring)."""

    def __init__(
        self,
        store: MetricsStore,
        clock: Clock,
        local_last_plan: Callable[[], datetime | None],
        *,
        history_max_age: timedelta,
        last_plan: Callable[[], datetime | None] | None,
        monotonic: Callable[[], float],
    ) -> None:
        self.store = store
        self.clock = clock
        self.local_last_plan = local_last_plan
        self.last_plan = last_plan
        self.history_max_age = history_max_age.total_seconds()
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._finished: dict[tuple[str, str], int] = {}
        self._finished_at: float | None = None

    def describe(self) -> Iterable[Metric]:
        """The families without reading the database (registration must not query)."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        messages, held, holds, due, oldest, last_plan, up, seconds = self._families()
        started = self.monotonic()
        try:
            now = self.clock.now()
            pending = self.store.pending_message_counts()
            for (channel, status), n in sorted(self._message_counts(pending).items()):
                messages.add_metric([channel, status], n)
            held_by_reason: dict[tuple[str, str], int] = {}
            for channel, status, reason, n in pending:
                if status == MessageStatus.HELD.value:
                    key = (channel, reason or "unknown")
                    held_by_reason[key] = held_by_reason.get(key, 0) + n
            for (channel, reason), n in sorted(held_by_reason.items()):
                held.add_metric([channel, reason], n)
            for reason, n in sorted(self.store.active_hold_counts(now)):
                holds.add_metric([reason], n)
            backlog = {(kind.value, s.value): 0 for kind in ChannelKind for s in IN_FLIGHT}
            earliest: dict[str, datetime] = {}
            for channel, status, n, due_at in self.store.due_backlog(now):
                backlog[(channel, status)] = backlog.get((channel, status), 0) + n
                if due_at is not None and (channel not in earliest or due_at < earliest[channel]):
                    earliest[channel] = due_at
            for (channel, status), n in sorted(backlog.items()):
                due.add_metric([channel, status], n)
            for channel in sorted({channel for channel, _ in backlog}):
                age = (now - earliest[channel]).total_seconds() if channel in earliest else 0.0
                oldest.add_metric([channel], max(0.0, age))
        except (SQLAlchemyError, DispatcherError) as exc:
            # A failed read must not fail the scrape: the event counters still go out,
            # and store_up says the database side is missing.
            log.warning("metrics: cannot read the database: %s", type(exc).__name__)
            up.add_metric([], 0)
            seconds.add_metric([], self.monotonic() - started)
            return [self._plan_gauge(last_plan), up, seconds]
        up.add_metric([], 1)
        seconds.add_metric([], self.monotonic() - started)
        return [messages, held, holds, due, oldest, self._plan_gauge(last_plan), up, seconds]

    def _message_counts(
        self, pending: Iterable[tuple[str, str, str | None, int]]
    ) -> dict[tuple[str, str], int]:
        """Every (channel, status) with a count, zeros included: pending statuses fresh,
        finished ones from the cache (recounted when older than history_max_age)."""
        with self._lock:
            if (
                self._finished_at is None
                or self.monotonic() - self._finished_at >= self.history_max_age
            ):
                finished = {s.value for s in FINISHED_STATUSES}
                self._finished = {
                    (channel, status): n
                    for channel, status, n in self.store.message_counts()
                    if status in finished
                }
                self._finished_at = self.monotonic()
            counts = {(kind.value, s.value): 0 for kind in ChannelKind for s in MessageStatus}
            counts.update(self._finished)
        for channel, status, _reason, n in pending:
            counts[(channel, status)] = counts.get((channel, status), 0) + n
        return counts

    def _plan_gauge(self, family: GaugeMetricFamily) -> GaugeMetricFamily:
        """The later of this process's last successful plan and the shared record; 0
        when neither knows of one, so one alert covers 'never planned' as well."""
        known = [self.local_last_plan()]
        if self.last_plan is not None:
            try:
                known.append(self.last_plan())
            except (SQLAlchemyError, DispatcherError) as exc:
                log.warning("metrics: cannot read the last plan time: %s", type(exc).__name__)
        times = [t for t in known if t is not None]
        family.add_metric([], max(times).timestamp() if times else 0.0)
        return family

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                f"{PREFIX}_outbox_messages",
                "Messages in the outbox by channel and status (held, queued, sending, sent, "
                "failed, expired, cancelled, skipped); the finished statuses refresh every "
                "few minutes. For dashboards, and to alert on messages piling up: "
                'max(dispatcher_outbox_messages{status="held"}) growing for hours means '
                "a hold or a missing template is blocking a whole stage.",
                labels=["channel", "status"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_outbox_held_messages",
                "Held messages by channel and hold reason (dispute, no_phone, "
                "template_missing, render_failed, ...): what is not going out and why. "
                'Alert on reasons that are our fault: dispatcher_outbox_held_messages{reason=~"'
                'template_missing|render_failed"} > 0 for 1h pages compliance.',
                labels=["channel", "reason"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_holds_active",
                "Hold records in force now (placed, started, not lifted, not ended), by "
                "reason (dispute, bankruptcy, fraud, opted_out_sms, ...). Counts the legal "
                "state of accounts, not messages. Alert on a jump, e.g. "
                "delta(dispatcher_holds_active[1d]) > 100 for one reason: a bad import "
                "file setting a flag on every row.",
                labels=["reason"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_outbox_due_messages",
                "Messages whose time has come and that have not gone yet: queued ones a send "
                "run would claim now, and sending ones in flight, by channel and status. "
                "Should fall to 0 after every send run. Alert: "
                'max(dispatcher_outbox_due_messages{status="queued"}) > 0 for 30m (the '
                "sender is not running or cannot keep up); status sending above 0 for an "
                "hour means a worker died mid-send.",
                labels=["channel", "status"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_outbox_oldest_due_age_seconds",
                "Age of the oldest due message not yet sent (from its due time), by "
                "channel; 0 when nothing is due. Alert: max(...) > 1800: customers get "
                "reminders late and some will fall out of their contact window.",
                labels=["channel"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_last_successful_plan_timestamp_seconds",
                "Unix time of the last plan run that succeeded (0: none seen yet). Alert: "
                "time() - max(dispatcher_last_successful_plan_timestamp_seconds) > 2 * "
                "the plan interval: nothing new is being decided or queued.",
            ),
            GaugeMetricFamily(
                f"{PREFIX}_store_up",
                "1 when this scrape could read the database, 0 when it could not (the "
                "database gauges are then missing). Alert: min(...) == 0 for 5m.",
            ),
            GaugeMetricFamily(
                f"{PREFIX}_store_read_seconds",
                "How long this scrape's database reads took. Watch it grow with the "
                "outbox; above a few seconds, scrapes start timing out.",
            ),
        )
