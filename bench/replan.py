"""Re-plan cost: a first plan of N accounts, then plans each hour after it by review and
of every account (``plan --all``, what every plan cost before reviews), repeated.

    .venv/bin/python -m bench.replan 20000
"""

import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from bench.portfolio import write_bench_portfolio
from dispatcher import heap
from dispatcher.bootstrap import bootstrap
from dispatcher.service.importer import import_accounts
from dispatcher.settings import AuditSettings, Settings, SinkSettings

ROOT = Path(__file__).resolve().parent.parent

n = int(sys.argv[1])
heap.tune()
tmp = Path(tempfile.mkdtemp())
csv = tmp / "p.csv"
write_bench_portfolio(csv, n)
app = bootstrap(
    Settings(
        database_url=f"sqlite:///{tmp / 'bench.db'}",
        templates_dir=ROOT / "templates",
        strategy_file=ROOT / "config" / "strategy.toml",
        policies_dir=ROOT / "config" / "policies",
        sinks=SinkSettings(directory=tmp / "sink"),
        audit=AuditSettings(anchor_file=tmp / "anchors.jsonl"),
    )
)
app.store.create_schema()
now = datetime.fromisoformat("2026-06-10T15:00:00+00:00")
app.catalog.bootstrap(now)
import_accounts(app.store, csv, now=now, default_timezone="America/New_York", default_region="US")
planner = app.planner(now)
t = time.perf_counter()
r = planner.plan(now)
first = time.perf_counter() - t
print(f"first plan: {first:.1f} s, {r.accounts} accounts")
rev, every, looked = [], [], []
for i in range(1, 6):
    at = now + timedelta(hours=i)
    t = time.perf_counter()
    r = planner.plan(at)
    rev.append(time.perf_counter() - t)
    looked.append(r.accounts)
for i in range(6, 9):
    at = now + timedelta(hours=i)
    t = time.perf_counter()
    planner.plan(at, every=True)
    every.append(time.perf_counter() - t)


def f(xs):
    return f"min {min(xs):.2f} / median {statistics.median(xs):.2f} / max {max(xs):.2f} s"


print(f"re-plan by review (+1..5 h): {f(rev)}; accounts looked at {looked}")
print(f"re-plan of every account (+6..8 h): {f(every)}")
