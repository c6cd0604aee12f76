"""`dispatcher serve`: the long-running service.

One process runs the schedule and the HTTP side on one asyncio loop:

- planning on a cron (APScheduler 3, in-memory job store: each process keeps its own
  schedule, all coordination lives in the database), by one instance at a time
  (:class:`~dispatcher.store.lock.PlanningLock`); a run missed during downtime is caught
  up once at start;
- the send loop, continuously: claim what is due, deliver, record;
- housekeeping every minute: sends abandoned by a dead process reconciled with the
  provider (looked up: sent, or queued again; or ``unknown`` for a person), holds past
  their end;
- FastAPI under uvicorn: health, readiness, metrics (and later webhooks and pages).

SIGTERM/SIGINT stop taking new work, let in-flight work finish within the grace period,
and exit 0. SIGHUP reloads strategy, policy packs and templates; an invalid new
configuration is refused with one log line and the old one stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from dispatcher.bootstrap import App
from dispatcher.clock import Clock, SystemClock
from dispatcher.error import DispatcherError, StoreError
from dispatcher.metric import Metrics
from dispatcher.service import audit_log
from dispatcher.service.planner import PlanReport
from dispatcher.service.sender import SendReport
from dispatcher.settings import cron_trigger
from dispatcher.store.lock import InstanceLock, PlanningLock
from dispatcher.store.outage import describe, is_outage

log = structlog.get_logger("dispatcher.daemon")


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Readiness:
    ready: bool
    checks: dict[str, str]


class Service:
    """The running daemon: owns the schedule, the send loop and the life cycle."""

    def __init__(self, app: App, *, clock: Clock | None = None, instance: str = "") -> None:
        self.app = app
        self.clock = clock or SystemClock()
        self.instance = instance or instance_name()
        self.settings = app.settings.serve
        self.metrics = Metrics(app.store, self.clock, last_plan=self._last_plan)
        self.planning = PlanningLock(app.store.engine)
        self.instance_lock = InstanceLock(app.settings.database_url)
        self.scheduler: AsyncIOScheduler | None = None
        self.stopping = asyncio.Event()
        self.reloads = 0
        self._plan_task: asyncio.Future[PlanReport] | None = None
        self._planning_now = asyncio.Lock()
        self._anchored_at = -float("inf")

    # -- life cycle -------------------------------------------------------------------
    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the process exit code."""
        self.instance_lock.acquire()
        self.app.store.check_schema()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        server = _Server(self._server_config())
        try:
            self._start_schedule()
            sending = asyncio.create_task(self._send_loop(), name="send-loop")
            serving = asyncio.create_task(server.serve(), name="http")
            log.info(
                "service_started",
                instance=self.instance,
                host=self.settings.host,
                port=self.settings.port,
                plan_cron=self.settings.plan_cron,
                database=self.app.store.engine.dialect.name,
            )
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({stop, serving}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done() and not self.stopping.is_set():
                # The HTTP side could not start (port taken): nothing else may run on.
                serving.result()
                raise StoreError("the HTTP server stopped unexpectedly")
            await self._drain(sending)
            server.should_exit = True
            await serving
            try:
                # What the last batches wrote is chained before the process goes.
                await asyncio.to_thread(self._seal_audit)
            except DispatcherError as exc:
                log.error("audit_seal_failed", error=str(exc))
        finally:
            self._stop_schedule()
            self.planning.release()
            self.instance_lock.release()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("service_stopped", instance=self.instance)
        return 0

    def stop(self, why: str = "request") -> None:
        """Stop taking new work; what is in flight finishes within the grace period."""
        if not self.stopping.is_set():
            log.info("service_stopping", signal=why, grace_seconds=self.settings.grace_seconds)
            self.stopping.set()

    def reload(self) -> bool:
        """Reload strategy, policy packs and templates; keep the old ones if invalid."""
        try:
            self.app.reload()
        except DispatcherError as exc:
            log.error("config_reload_refused", error=str(exc), kept="previous configuration")
            self.metrics.config_reloaded(ok=False)
            return False
        self.reloads += 1
        log.info("config_reloaded", templates=len(self.app.templates.names()))
        self.metrics.config_reloaded(ok=True)
        return True

    async def _drain(self, sending: asyncio.Task[None]) -> None:
        """Let the send batch in hand and a running plan batch finish, within the grace."""
        self._stop_schedule()
        pending: set[asyncio.Future[Any]] = {sending}
        if self._plan_task is not None and not self._plan_task.done():
            pending.add(self._plan_task)
        _done, late = await asyncio.wait(pending, timeout=self.settings.grace_seconds)
        for task in late:
            # Messages cut off mid-delivery stay `sending`: after the lease housekeeping
            # reconciles them with the provider; they are never resent blindly.
            log.warning("shutdown_grace_exceeded", task=_name(task))
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _server_config(self) -> uvicorn.Config:
        from dispatcher.web.app import create_app  # the web layer imports us, not the reverse

        return uvicorn.Config(
            create_app(self),
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )

    # -- schedule ---------------------------------------------------------------------
    def _start_schedule(self) -> None:
        scheduler = AsyncIOScheduler(
            timezone=UTC,
            # One run at a time per job; several missed fire times collapse into one.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        trigger = cron_trigger(self.settings.plan_cron)
        scheduler.add_job(self.plan, trigger, id="plan", name="plan")
        scheduler.add_job(
            self.housekeep,
            IntervalTrigger(seconds=self.settings.housekeeping_seconds, timezone=UTC),
            id="housekeeping",
            name="housekeeping",
            next_run_time=datetime.now(UTC),
        )
        if self._plan_missed(trigger):
            scheduler.add_job(self.plan, id="catch-up", name="plan (catch-up)")
        scheduler.start()
        self.scheduler = scheduler

    def _stop_schedule(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.scheduler = None

    def _plan_missed(self, trigger: CronTrigger) -> bool:
        """Whether a planning fire time passed since the last successful plan (downtime):
        then one plan runs at start, however many ticks were missed."""
        last = self.app.store.last_finished("plan")
        if last is None:
            return True
        finished: datetime = last["finished_at"]
        due = trigger.get_next_fire_time(None, finished)
        return due is not None and due <= self.clock.now()

    # -- jobs -------------------------------------------------------------------------
    async def plan(self) -> None:
        """One planning tick: plan if this instance holds (or wins) the planning lock."""
        if self.stopping.is_set() or self._planning_now.locked():
            return
        async with self._planning_now:
            try:
                await self._plan()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                # The database went away around the plan (its retries are spent, or the
                # run could not even be recorded): one line, and the next tick plans.
                self.metrics.plan_failed()
                log.error(
                    "plan_failed",
                    error=describe(exc, self.app.store.engine, "plan"),
                    retry="at the next planning tick",
                )

    async def _plan(self) -> None:
        if not await asyncio.to_thread(self.planning.acquire):
            log.debug("plan_skipped", reason="another instance holds the planning lock")
            return
        now = self.clock.now()
        run_id = self.app.store.start_run("plan", self.instance, now)

        def plan() -> PlanReport:
            # Through a database outage the whole plan runs again (idempotent): the batches
            # that committed are not planned twice (docs/OPERATIONS.md, "Database outages").
            return self.app.planner(now).plan(now, stop=self.stopping.is_set)

        self._plan_task = asyncio.ensure_future(
            asyncio.to_thread(self.app.outlasting, plan, "plan")
        )
        try:
            report = await asyncio.shield(self._plan_task)
        except Exception as exc:
            self.metrics.plan_failed()
            with contextlib.suppress(Exception):
                self.app.store.finish_run(run_id, "failed", self.clock.now(), {"error": str(exc)})
            if isinstance(exc, DispatcherError):
                log.error("plan_failed", run=run_id, error=str(exc))
            else:
                log.exception("plan_failed", run=run_id)
            return
        status = "ok" if report.complete else "interrupted"
        detail = {"accounts": report.accounts, "decisions": report.total, "now": now}
        self.app.store.finish_run(run_id, status, self.clock.now(), detail)
        if report.complete:
            self.metrics.plan_succeeded(self.clock.now())
        log.info("plan_finished", run=run_id, status=status, **_plain(detail))

    async def housekeep(self) -> None:
        """Sends abandoned by a dead process → reconciled: looked up at the provider (sent,
        or queued again when it never got there), else ``unknown`` for a person (never
        resent blindly); timed holds past their end → closed and audited."""
        now = self.clock.now()
        report = SendReport(now=now)
        try:
            await self.app.sender().reconcile(now, report)
            expired = self.app.store.expire_holds(now)
            # Web sessions past their lifetime or idle limit (HR-32) are deleted, not only
            # refused.
            web = self.app.settings.web
            self.app.users.end_stale_sessions(
                now - timedelta(hours=web.session_hours),
                now - timedelta(minutes=web.session_idle_minutes),
            )
            self._observe(report)
            if report.total or expired:
                log.info("housekeeping", interrupted=report.total, holds_expired=expired)
            await asyncio.to_thread(self._seal_audit)
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.warning(
                "database_unavailable",
                doing="housekeeping",
                error=describe(exc, self.app.store.engine, "housekeeping"),
                retry_in_seconds=self.settings.housekeeping_seconds,
            )

    def _seal_audit(self) -> None:
        """Chain new audit records; anchor the head every ``audit.anchor_seconds``, in the
        anchor file and in the log (two places outside the database)."""
        due = time.monotonic() - self._anchored_at >= self.app.settings.audit.anchor_seconds
        sealed = audit_log.seal(self.app.audit_chain, self.app.anchors, anchor=due)
        if sealed.anchored and sealed.head is not None:
            self._anchored_at = time.monotonic()
            log.info("audit_anchored", seq=sealed.head.seq, hash=sealed.head.hash)

    async def _send_loop(self) -> None:
        idle = self.settings.send_idle_seconds
        outages = 0
        while not self.stopping.is_set():
            wait = idle
            try:
                report = await self.app.sender().send(self.clock.now(), stop=self.stopping.is_set)
                outages = 0
            except Exception as exc:
                report = SendReport(now=self.clock.now())
                if is_outage(exc):
                    # The loop outlives the database: waits double up to half a minute,
                    # and what the cut-off pass left `sending` is reconciled after its
                    # lease (docs/OPERATIONS.md, "Database outages").
                    outages += 1
                    wait = min(idle * 2 ** min(outages, 10), max(idle, 30.0))
                    log.warning(
                        "database_unavailable",
                        doing="send",
                        error=describe(exc, self.app.store.engine, "send"),
                        attempt=outages,
                        retry_in_seconds=wait,
                    )
                elif isinstance(exc, DispatcherError):
                    log.error("send_failed", error=str(exc))
                else:
                    log.exception("send_failed")
            self._observe(report)
            if report.total == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=wait)

    def _observe(self, report: SendReport) -> None:
        self.metrics.observe_outcomes(report.counts)
        for channel, seconds in report.latencies:
            self.metrics.observe_latency(channel, seconds)
        for (channel, code), count in report.errors.items():
            for _ in range(count):
                self.metrics.observe_provider_error(channel, code)

    def _last_plan(self) -> datetime | None:
        last = self.app.store.last_finished("plan")
        return None if last is None else last["finished_at"]

    # -- health -----------------------------------------------------------------------
    def readiness(self) -> Readiness:
        """Ready = database reachable, schedule running, a plan succeeded recently
        (by any instance: planning is shared)."""
        checks: dict[str, str] = {}
        ready = True
        try:
            self.app.store.ping()
            checks["database"] = "ok"
        except StoreError as exc:
            checks["database"] = str(exc)
            ready = False
        running = self.scheduler is not None and self.scheduler.running
        checks["schedule"] = "ok" if running else "not running"
        ready = ready and running and not self.stopping.is_set()
        if self.stopping.is_set():
            checks["schedule"] = "stopping"
        if checks["database"] == "ok":
            last = self.app.store.last_finished("plan")
            if last is None:
                checks["last_plan"] = "no successful plan yet"
                ready = False
            else:
                age = (self.clock.now() - last["finished_at"]).total_seconds()
                fresh = age <= self.settings.ready_max_plan_age_seconds
                checks["last_plan"] = f"{age:.0f}s ago by {last['instance']}"
                ready = ready and fresh
        return Readiness(ready, checks)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGTERM/SIGINT/SIGHUP
    and tells the server when to exit, after the send loop has drained."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else "plan"


def _plain(detail: dict[str, object]) -> dict[str, object]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in detail.items()}


def serve(app: App, *, clock: Clock | None = None) -> int:
    """Run the service in this process until it is told to stop; returns the exit code."""
    return asyncio.run(Service(app, clock=clock).run())
