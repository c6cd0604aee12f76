"""``.venv/bin/python -m bench.amplification 100000``: what a first plan writes and reads.

Imports a generated portfolio of N accounts once, then per run plans every account in
one process on a fresh copy of that file and prints the bytes the process wrote and read
(``wchar``/``rchar`` of ``/proc/self/io``: every ``pwrite``/``pread`` of SQLite's pages),
its wall, user and kernel seconds. ``--sqlite-defaults`` gives the planner's connections
SQLite's default page cache and checkpoint size instead of the store's
(``SQLITE_PRAGMAS``), ``--audit-message-index`` puts back the index migration 0011
dropped: together they show what each costs (docs/BENCHMARKS.md, "Write amplification").
Each run is a fresh process, so the figures are its own. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.child import NOW  # the instant every plan benchmark plans at

SQLITE_DEFAULTS = ("PRAGMA wal_autocheckpoint=1000", "PRAGMA cache_size=-2000")


def _io() -> dict[str, int]:
    pairs = (line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {key: int(value) for key, value in pairs}


def _seed(work: Path, accounts: int) -> Path:
    """The imported portfolio every run copies, imported as ``bench plan-limit`` does."""
    from bench.plan_limit import child, settings_file
    from bench.portfolio import write_bench_portfolio

    csv_path, seed = work / "accounts.csv", work / "seed.db"
    write_bench_portfolio(csv_path, accounts)
    child("import", str(settings_file(work, seed, workers=1)), str(csv_path))
    csv_path.unlink()
    return seed


def _run(work: Path, defaults: bool) -> dict[str, Any]:
    """One first plan of ``work/run.db`` in this process (run by :func:`main` in a child)."""
    from sqlalchemy import event

    from bench.portfolio import bench_settings
    from dispatcher import heap
    from dispatcher.bootstrap import bootstrap

    heap.tune()
    app = bootstrap(bench_settings(work, "run.db"))
    if defaults:

        @event.listens_for(app.store.engine, "connect")
        def _defaults(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in SQLITE_DEFAULTS:  # after the store's own: these win
                cursor.execute(pragma)
            cursor.close()

        app.store.engine.dispose()
    planner = app.planner(NOW)
    before, times, start = _io(), os.times(), time.perf_counter()
    report = planner.plan(NOW)
    wall = time.perf_counter() - start
    after, spent = _io(), os.times()
    return {
        "decisions": report.total,
        "seconds": wall,
        "user": spent.user - times.user,
        "kernel": spent.system - times.system,
        "written_mb": (after["wchar"] - before["wchar"]) / 2**20,
        "read_mb": (after["rchar"] - before["rchar"]) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.amplification")
    parser.add_argument("accounts", type=int)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sqlite-defaults", action="store_true")
    parser.add_argument("--audit-message-index", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a run's working folder
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_run(Path(args.child), args.sqlite_defaults)))
        return
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-amplification-") as tmp:
        work = Path(tmp)
        seed = _seed(work, args.accounts)
        for _ in range(args.runs):
            shutil.copy(seed, work / "run.db")
            if args.audit_message_index:
                with sqlite3.connect(work / "run.db") as conn:
                    conn.execute("CREATE INDEX ix_audit_message_id ON audit (message_id)")
            command = [sys.executable, "-m", "bench.amplification", str(args.accounts)]
            command += ["--child", str(work)]
            command += ["--sqlite-defaults"] if args.sqlite_defaults else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"bench.amplification: the plan failed:\n{done.stderr}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            for name in ("run.db", "run.db-wal", "run.db-shm"):
                (work / name).unlink(missing_ok=True)
            time.sleep(1)
    print(
        f"first plan of {args.accounts:,} accounts ({results[0]['decisions']:,} decisions), "
        f"{args.runs} runs, pragmas: {'SQLite defaults' if args.sqlite_defaults else 'store'}"
        f", audit message index: {'yes' if args.audit_message_index else 'no'}"
    )
    for key, unit in (
        ("written_mb", "MB"),
        ("read_mb", "MB"),
        ("seconds", "s"),
        ("user", "s"),
        ("kernel", "s"),
    ):
        values = [r[key] for r in results]
        print(
            f"  {key:<11} min {min(values):,.1f} / median {statistics.median(values):,.1f} / "
            f"max {max(values):,.1f} {unit}"
        )


if __name__ == "__main__":
    main()
