"""One measured step in a fresh process, so peak memory (ru_maxrss) is its own."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import text

from dispatcher import heap
from dispatcher.bootstrap import bootstrap
from dispatcher.channel import Outbound, Receipt
from dispatcher.channel.memory import MemoryChannel
from dispatcher.clock import RunningClock
from dispatcher.domain.strategy import ChannelKind
from dispatcher.service.importer import import_accounts
from dispatcher.settings import load_settings

NOW = datetime.fromisoformat("2026-06-10T15:00:00+00:00")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # ended meanwhile
    return found


def _pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (libraries) counted once across processes."""
    try:
        text_ = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    for line in text_.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _TreeMemory:
    """The peak, over a step, of the summed memory of this process and its workers,
    sampled every 100 ms: what the machine must hold at once (each process's own
    ``ru_maxrss`` peaks at a different moment, and counts shared libraries in each)."""

    def __init__(self) -> None:
        self.peak_pss_mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.1):
            total = sum(_pss_mb(pid) for pid in _tree(os.getpid()))
            self.peak_pss_mb = max(self.peak_pss_mb, total)


def main() -> None:
    step, settings_path = sys.argv[1], Path(sys.argv[2])
    heap.tune()  # as the command line's entry point does
    if step == "send":
        _send(settings_path, Path(sys.argv[3]))
        return
    if step == "trickle":
        _trickle(settings_path, Path(sys.argv[3]), float(sys.argv[4]))
        return
    app = bootstrap(load_settings(settings_path))
    if step == "import":
        app.store.create_schema()
        start = time.perf_counter()
        report = import_accounts(
            app.store,
            Path(sys.argv[3]),
            now=NOW,
            default_timezone="America/New_York",
            default_region="US",
        )
        elapsed = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "rows_per_s": report.rows / elapsed,
                    "peak_mb": _peak_mb(),
                    "rejected": report.rejected,
                }
            )
        )
    elif step == "plan":
        planner = app.planner()
        _ = app.templates  # loading templates is start-up, not planning
        start = time.perf_counter()
        with _TreeMemory() as memory:
            report = planner.plan(NOW)
        elapsed = time.perf_counter() - start
        if "--first-only" in sys.argv[3:]:
            with app.store.engine.connect() as conn:
                rows = conn.execute(text("SELECT count(*) FROM message")).scalar_one()
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            result = {"seconds": elapsed, "rows": rows, "accounts": report.accounts}
            print(
                json.dumps(
                    {
                        **result,
                        "peak_mb": _peak_mb(),
                        "worker_peak_mb": children,
                        "together_pss_mb": memory.peak_pss_mb,
                    }
                )
            )
            return
        # The steady state: the daemon re-plans every few minutes and finds little new.
        start = time.perf_counter()
        again = planner.plan(NOW)
        replan = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "accounts": report.accounts,
                    "peak_mb": _peak_mb(),
                    "messages": report.total,
                    "seconds": elapsed,
                    "replan_seconds": replan,
                    "replan_decisions": again.total,
                }
            )
        )


def _send(settings_path: Path, go: Path) -> None:
    """One delivery worker: wait for the starting gun (a file), then send until nothing
    due is left, through in-memory channels (no provider limits)."""
    app = bootstrap(
        load_settings(settings_path), channels={kind: MemoryChannel() for kind in ChannelKind}
    )
    sender = app.sender()
    while not go.exists():
        time.sleep(0.005)
    started = time.time()
    sent = 0
    while True:
        report = asyncio.run(sender.send(NOW))
        sent += sum(n for (_, outcome), n in report.counts.items() if outcome == "sent")
        if report.total == 0:
            break
    finished = time.time()
    print(json.dumps({"sent": sent, "started": started, "finished": finished}))


class _Stopwatch:
    """A channel that takes every message and notes when it was handed over."""

    def __init__(self, clock: RunningClock) -> None:
        self.clock = clock
        self.handed: dict[str, datetime] = {}

    async def deliver(self, message: Outbound) -> Receipt:
        self.handed[message.message_id] = self.clock.now()
        return Receipt(provider_message_id=f"bench-{message.message_id}")


def _trickle(settings_path: Path, go: Path, seconds: float) -> None:
    """The service's send loop for ``seconds`` on a clock running from ``NOW``: how long
    after its due time each message was handed over."""
    clock = RunningClock(NOW)
    watch = _Stopwatch(clock)
    app = bootstrap(load_settings(settings_path), channels=dict.fromkeys(ChannelKind, watch))
    sender = app.sender()
    while not go.exists():
        time.sleep(0.005)
    clock = watch.clock = RunningClock(NOW)
    idle = 0.05  # serve.send_idle_seconds as a latency-minded operator would set it
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        report = asyncio.run(sender.send(clock.now()))
        if report.total == 0:
            time.sleep(idle)
    with app.store.engine.connect() as conn:
        due = dict(
            conn.execute(
                text("SELECT message_id, scheduled_for FROM message WHERE status = 'sent'")
            ).all()
        )
    delays = [(at - due[mid]).total_seconds() for mid, at in watch.handed.items() if due.get(mid)]
    print(json.dumps({"delays": delays}))


if __name__ == "__main__":
    main()
