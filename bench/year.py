"""``./dev bench year --accounts 100000``: a simulated year, then the invariant checker.

Generates a portfolio (dispatcher/portfolio.py, people's contact data made distinct as
in bench/portfolio.py: about 2 % owe more than one debt), imports it into a fresh SQLite file,
runs ``simulate`` (the real planner and sender, in-memory channels) over ``--days`` days
with a plan-then-send tick every ``--step-hours`` hours, then runs the independent
checker (tests/invariant.py) on the result. Prints wall time of each phase, the peak RSS,
what happened to the messages and every rule checked with its count of breaks. Exits 1
when any invariant is broken.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def year(accounts: int, days: int, step_hours: float, seed: int, as_json: bool) -> None:
    from bench.portfolio import bench_settings, write_bench_portfolio
    from dispatcher import heap
    from dispatcher.bootstrap import bootstrap
    from dispatcher.channel.memory import MemoryChannel
    from dispatcher.domain.strategy import ChannelKind
    from dispatcher.service import audit_log
    from dispatcher.service.importer import import_accounts
    from dispatcher.service.simulator import simulate
    from tests.invariant import check_period, ticks_of

    start = datetime(2026, 1, 1, 5, 30, tzinfo=UTC)
    tick = timedelta(hours=step_hours)
    with tempfile.TemporaryDirectory(prefix="bench-year-") as tmp:
        work = Path(tmp)
        settings = bench_settings(work, "year.db")
        app = bootstrap(settings, channels={k: MemoryChannel() for k in ChannelKind})
        heap.tune()  # as the command line's entry point does for `dispatcher simulate`
        app.store.create_schema()
        csv_path = work / "portfolio.csv"
        write_bench_portfolio(csv_path, accounts, today=start.date(), seed=seed)
        began = time.perf_counter()
        imported = import_accounts(
            app.store,
            csv_path,
            now=start,
            default_timezone="America/New_York",
            default_region="US",
        )
        import_s = time.perf_counter() - began
        began = time.perf_counter()

        def progress(at: datetime) -> None:
            done = (at - start) / timedelta(days=1)
            if int(done) != int(done - tick / timedelta(days=1)):  # a simulated day crossed
                elapsed = time.perf_counter() - began
                print(f"  day {done:.0f} of {days}: {elapsed:.0f} s", file=sys.stderr, flush=True)

        result = simulate(app, start, days, tick, on_tick=progress)
        simulate_s = time.perf_counter() - began
        simulate_peak = _peak_mb()
        ticks = ticks_of(start, days, tick)
        began = time.perf_counter()
        ids = [f"AC{n:08d}" for n in range(1, accounts + 1)]
        found = check_period(app, ticks, ids)
        audit_log.seal(app.audit_chain, app.anchors, anchor=True)
        chain_intact = audit_log.check(app.audit_chain, app.anchors).verdict.intact
        check_s = time.perf_counter() - began
        app.store.engine.dispose()
    summary = {
        "accounts": accounts,
        "imported": imported.inserted,
        "days": days,
        "step_hours": step_hours,
        "ticks": len(ticks),
        "sent": len(result.sent),
        "import_seconds": round(import_s, 1),
        "simulate_seconds": round(simulate_s, 1),
        "seconds_per_simulated_day": round(simulate_s / days, 2),
        "check_seconds": round(check_s, 1),
        "peak_rss_mb_simulate": round(simulate_peak),
        "peak_rss_mb": round(_peak_mb()),
        "audit_chain_intact": chain_intact,
        "broken": len(found.problems),
        **found.summary(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}",
    }
    if as_json:
        print(json.dumps(summary))
    else:
        print(
            f"year: {accounts:,} accounts, {days} days, a tick every {step_hours:g} h "
            f"({len(ticks)} plan+send runs)"
        )
        print(
            f"  import {import_s:.1f} s; simulate {simulate_s:.1f} s "
            f"({simulate_s / days:.2f} s per simulated day); check {check_s:.1f} s"
        )
        print(f"  peak RSS {simulate_peak:.0f} MB simulating, {_peak_mb():.0f} MB with the check")
        print(f"  messages by status: {summary['outcomes']}")
        print(f"  audit chain intact: {chain_intact}")
        for rule, counts in summary["rules"].items():
            print(f"  {rule:<28} checked {counts['checked']:>9,}  broken {counts['broken']}")
        for problem in found.problems[:20]:
            print(f"  BROKEN {problem}")
        print(f"machine: {summary['machine']}")
    if found.problems or not chain_intact:
        sys.exit(1)
