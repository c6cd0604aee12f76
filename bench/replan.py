"""Re-plan cost: a first plan of N accounts, then plans each hour after it by review and
of every account (``plan --all``, what every plan cost before reviews), repeated.

    .venv/bin/python -m bench.replan 20000
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from bench.portfolio import bench_settings, write_bench_portfolio
from dispatcher import heap
from dispatcher.bootstrap import bootstrap
from dispatcher.service.importer import import_accounts

NOW = datetime.fromisoformat("2026-06-10T15:00:00+00:00")


def _spread(seconds: list[float]) -> str:
    low, mid, high = min(seconds), statistics.median(seconds), max(seconds)
    return f"min {low:.2f} / median {mid:.2f} / max {high:.2f} s"


def main(accounts: int) -> None:
    heap.tune()  # as the command line's entry point does
    with tempfile.TemporaryDirectory(prefix="bench-replan-") as tmp:
        work = Path(tmp)
        write_bench_portfolio(work / "p.csv", accounts)
        app = bootstrap(bench_settings(work, "bench.db"))
        app.store.create_schema()
        app.catalog.bootstrap(NOW)
        import_accounts(
            app.store,
            work / "p.csv",
            now=NOW,
            default_timezone="America/New_York",
            default_region="US",
        )
        planner = app.planner(NOW)
        start = time.perf_counter()
        report = planner.plan(NOW)
        print(f"first plan: {time.perf_counter() - start:.1f} s, {report.accounts} accounts")
        by_review, looked, every = [], [], []
        for hour in range(1, 6):
            start = time.perf_counter()
            report = planner.plan(NOW + timedelta(hours=hour))
            by_review.append(time.perf_counter() - start)
            looked.append(report.accounts)
        for hour in range(6, 9):
            start = time.perf_counter()
            planner.plan(NOW + timedelta(hours=hour), every=True)
            every.append(time.perf_counter() - start)
        print(f"re-plan by review (+1..5 h): {_spread(by_review)}; accounts looked at {looked}")
        print(f"re-plan of every account (+6..8 h): {_spread(every)}")
        app.store.engine.dispose()


if __name__ == "__main__":
    main(int(sys.argv[1]))
