"""``python -m bench plan-limit``: a first plan against the physical limit of the database.

For each portfolio size N (10k, 100k, 1M by default) it streams a generated portfolio to
CSV, imports it into a fresh SQLite file, then ``repeat`` times, each on a fresh copy of
that file and in a fresh process: times a first ``plan`` of every account (stage, policy,
render, outbox row and audit record per decision), and a raw ``sqlite3`` ``executemany``
of as many outbox rows as that plan wrote, into another copy of the same file (same schema,
indexes, WAL, pragmas; one transaction per plan batch's worth of rows). Prints both, their
ratio (raw time / plan time: 1.0 would be a plan as fast as merely inserting its rows),
the time per 1,000 accounts for each N (linear growth = a flat column), peak RSS of
the planner's process and of its largest worker, and the peak of their summed PSS
(sampled every 100 ms: what the machine holds at once, shared libraries counted once).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.portfolio import write_bench_portfolio
from dispatcher.store.sql import SQLITE_PRAGMAS

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-06-10T15:00:00+00:00"
BATCH = 2000  # the planner's default [plan] batch_size


def settings_file(directory: Path, db: Path, workers: int) -> Path:
    path = directory / "settings.toml"
    path.write_text(
        f'database_url = "sqlite:///{db}"\n'
        f'templates_dir = "{ROOT / "templates"}"\n'
        f'strategy_file = "{ROOT / "config" / "strategy.toml"}"\n'
        f'policies_dir = "{ROOT / "config" / "policies"}"\n'
        f"[plan]\nworkers = {workers}\nbatch_size = {BATCH}\n"
        f'[sinks]\ndirectory = "{directory / "sink"}"\n'
    )
    return path


def child(*args: str) -> dict[str, float]:
    """One measured step in a fresh process (bench/child.py), its JSON result."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.child", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        sys.exit(f"bench: the {args[0]} step failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def copy_db(seed: Path, target: Path) -> None:
    """A copy of a closed SQLite file (checkpointed by its writer on close)."""
    shutil.copy(seed, target)


def raw_insert(db: Path, rows: int) -> float:
    """Seconds to insert ``rows`` realistic outbox rows with plain sqlite3 executemany.

    Same file kind as the planner's (the store's pragmas: WAL, its checkpoint size and page
    cache, synchronous=NORMAL, foreign keys on; every index of the ``message`` table), one
    transaction per ``2 * BATCH`` rows (a plan batch writes about two decisions per
    account), nothing computed per row but its ids.
    """
    conn = sqlite3.connect(db)
    for pragma in SQLITE_PRAGMAS:  # the store's own: WAL, its checkpoints, foreign keys
        conn.execute(pragma)
    ids = [r[0] for r in conn.execute("SELECT account_id FROM account ORDER BY account_id")]
    columns = (
        "message_id, idempotency_key, account_id, cycle, stage, step, channel, status, dpd, "
        "locale, recipient, template_id, template_version, template_sha256, body, "
        "body_sha256, scheduled_for, attempts, created_at, updated_at"
    )
    sql = f"INSERT INTO message ({columns}) VALUES ({', '.join('?' * 20)})"
    at = "2026-06-10 15:00:00.000000"
    body = (
        "Acme Collections: Hi Jane, your balance of $1,234.56 was due on June 1, 2026. "
        "Pay at https://pay.example.com/a/AC00012345 Reply STOP to opt out."
    )
    sha = "0" * 64
    chunk = 2 * BATCH
    start = time.perf_counter()
    for first in range(0, rows, chunk):
        batch = [
            (
                f"{n:032x}",
                f"{ids[n % len(ids)]}:1:early:day{n}:sms",
                ids[n % len(ids)],
                1,
                "early",
                f"day{n}",
                "sms",
                "queued",
                3,
                "en-US",
                "+16175550123",
                "early_day1",
                sha,
                sha,
                body,
                sha,
                at,
                0,
                at,
                at,
            )
            for n in range(first, min(rows, first + chunk))
        ]
        with conn:
            conn.executemany(sql, batch)
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def spread(values: list[float], fmt: str = ",.0f") -> str:
    return (
        f"min {min(values):{fmt}} / median {statistics.median(values):{fmt}} / "
        f"max {max(values):{fmt}}"
    )


def plan_limit(sizes: list[int], repeat: int, workers: int) -> None:
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-limit-") as tmp:
        for accounts in sizes:
            work = Path(tmp) / str(accounts)
            work.mkdir()
            csv_path = work / "accounts.csv"
            start = time.perf_counter()
            write_bench_portfolio(csv_path, accounts)
            print(f"N={accounts:,}: portfolio streamed in {time.perf_counter() - start:.1f} s")
            seed = work / "seed.db"
            imported = child("import", str(settings_file(work, seed, workers)), str(csv_path))
            csv_path.unlink()
            print(f"N={accounts:,}: import {imported['rows_per_s']:,.0f} rows/s")
            plans: list[float] = []
            raws: list[float] = []
            ratios: list[float] = []
            peaks: list[float] = []
            worker_peaks: list[float] = []
            together: list[float] = []
            written = 0.0
            for run in range(repeat):
                db = work / f"run{run}.db"
                copy_db(seed, db)
                result = child("plan", str(settings_file(work, db, workers)), "--first-only")
                db.unlink()
                written = result["rows"]
                copy_db(seed, db)
                raw = raw_insert(db, int(written))
                db.unlink()
                plans.append(result["seconds"])
                raws.append(raw)
                ratios.append(raw / result["seconds"])
                peaks.append(result["peak_mb"])
                worker_peaks.append(result["worker_peak_mb"])
                together.append(result["together_pss_mb"])
                print(
                    f"N={accounts:,} run {run + 1}: plan {result['seconds']:.1f} s "
                    f"({accounts / result['seconds']:,.0f} accounts/s), raw executemany of "
                    f"{written:,.0f} rows {raw:.1f} s ({written / raw:,.0f} rows/s), "
                    f"ratio {raw / result['seconds']:.3f}"
                )
            per_k = [s / accounts * 1000 for s in plans]
            lines += [
                f"N={accounts:,} ({written:,.0f} outbox rows + their audit records), "
                f"{repeat} runs, {workers} worker(s):",
                f"  plan s               {spread(plans, ',.1f')}",
                f"  plan accounts/s      {spread([accounts / s for s in plans])}",
                f"  raw executemany s    {spread(raws, ',.2f')}",
                f"  raw rows/s           {spread([written / s for s in raws])}",
                f"  ratio raw/plan       {spread(ratios, '.3f')}  (target >= 0.2)",
                f"  plan s per 1k acc.   {spread(per_k, '.3f')}  (linear: same for every N)",
                f"  peak RSS MB planner  {spread(peaks)}; largest worker {spread(worker_peaks)}",
                f"  peak PSS MB, planner and workers together  {spread(together)}",
            ]
            seed.unlink()
    print("\n".join(lines))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"{datetime.now(UTC):%Y-%m-%d}, load average {os.getloadavg()[0]:.1f}"
    )


def import_bench(accounts: int, repeat: int) -> None:
    """``dispatcher import`` of one generated file into a fresh SQLite file, ``repeat`` times."""
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        csv_path = work / "accounts.csv"
        write_bench_portfolio(csv_path, accounts)
        rates: list[float] = []
        peaks: list[float] = []
        for run in range(repeat):
            db = work / f"run{run}.db"
            imported = child("import", str(settings_file(work, db, 1)), str(csv_path))
            rates.append(imported["rows_per_s"])
            peaks.append(imported["peak_mb"])
            for leftover in work.glob(f"run{run}.db*"):
                leftover.unlink()
        print(f"import, {accounts:,} rows, {repeat} runs (one process each):")
        print(f"  rows/s       {spread(rates)}")
        print(f"  peak RSS MB  {spread(peaks)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )
