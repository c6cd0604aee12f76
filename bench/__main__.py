"""``python -m bench plan --accounts 100000 --repeat 3`` (or ``./dev bench plan ...``)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-06-10T15:00:00+00:00"


def _settings(directory: Path, db: Path | str) -> Path:
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    path = directory / "settings.toml"
    path.write_text(
        f'database_url = "{url}"\n'
        f'templates_dir = "{ROOT / "templates"}"\n'
        f'strategy_file = "{ROOT / "config" / "strategy.toml"}"\n'
        f'policies_dir = "{ROOT / "config" / "policies"}"\n'
        f'[sinks]\ndirectory = "{directory / "sink"}"\n'
    )
    return path


def _child(step: str, settings: Path, extra: list[str]) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.child", step, str(settings), *extra],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        sys.exit(f"bench: the {step} step failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _spread(values: list[float]) -> str:
    return (
        f"min {min(values):,.0f} / median {statistics.median(values):,.0f} / max {max(values):,.0f}"
    )


def _one_person_per_account(path: Path) -> None:
    """Give each account its own phone and email, and every 50th the previous one's.

    The generator draws US numbers from the 555-01XX range kept for fiction, so thousands
    of accounts would share a hundred numbers and be capped as one person: not what a
    real portfolio looks like (about 2 % of people owe more than one debt here).
    """
    rows = list(csv.DictReader(path.open(newline="", encoding="utf-8")))
    for i, row in enumerate(rows):
        previous = rows[i - 1] if i else None
        same_country = previous is not None and previous["country"] == row["country"]
        source = previous if same_country and i % 50 == 0 else None
        if row["phone"] and "555" in row["phone"]:
            row["phone"] = source["phone"] if source else f"+1617{2_000_000 + i:07d}"
        if row["email"]:
            row["email"] = source["email"] if source else f"account{i}@example.com"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plan(accounts: int, repeat: int) -> None:
    from dispatcher.portfolio import write_portfolio

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        csv_path = work / "accounts.csv"
        start = time.perf_counter()
        write_portfolio(csv_path, accounts, today=datetime.fromisoformat(NOW).date())
        _one_person_per_account(csv_path)
        print(f"portfolio: {accounts:,} accounts written in {time.perf_counter() - start:.1f} s")
        seed_db = work / "seed.db"
        imported = _child("import", _settings(work, seed_db), [str(csv_path)])
        print(
            f"import: {imported['rows_per_s']:,.0f} rows/s, peak RSS {imported['peak_mb']:.0f} MB"
            f", {imported['rejected']:.0f} rejected"
        )
        rates: list[float] = []
        peaks: list[float] = []
        replans: list[float] = []
        queued = looked = 0.0
        for run in range(repeat):
            db = work / f"run{run}.db"
            shutil.copy(seed_db, db)
            result = _child("plan", _settings(work, db), [])
            rates.append(accounts / result["seconds"])
            replans.append(accounts / result["replan_seconds"])
            peaks.append(result["peak_mb"])
            queued = result["messages"]
            looked = result["accounts"]
            db.unlink()
        print(
            f"plan: {accounts:,} accounts in the portfolio, {looked:,.0f} due or pending, "
            f"{queued:,.0f} decisions per run, {repeat} runs"
        )
        print(f"  accounts/s   {_spread(rates)}")
        print(f"  peak RSS MB  {_spread(peaks)}")
        print(f"re-plan at the same time (nothing new due): accounts/s  {_spread(replans)}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )


def send(accounts: int, workers: list[int], repeat: int, history: int, url: str | None) -> None:
    """Plan a portfolio on PostgreSQL, then deliver it with 1, 2, 4 ... worker processes.

    Each worker claims with SKIP LOCKED and per-person locks, re-checks holds, windows
    and caps in the claiming transaction, hands over to an in-memory channel (no provider
    limit binds) and records each outcome with its audit record. ``history`` finished
    messages are added first, so the claim runs over a large outbox as in production.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from dispatcher.portfolio import write_portfolio
    from tests.pg_server import LocalCluster, find_bin_dir

    cluster = None
    if url is None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            sys.exit("bench: PostgreSQL server binaries not found (apt-get install postgresql)")
        cluster = LocalCluster(bin_dir)
        admin = cluster.start()
    else:
        admin = make_url(url).set(drivername="postgresql+psycopg")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")

    def database(name: str, template: str = "template0") -> str:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        return admin.set(database=name).render_as_string(hide_password=False)

    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            work = Path(tmp)
            csv_path = work / "accounts.csv"
            write_portfolio(csv_path, accounts, today=datetime.fromisoformat(NOW).date())
            _one_person_per_account(csv_path)
            seed = database("bench_seed")
            settings = _settings(work, seed)
            imported = _child("import", settings, [str(csv_path)])
            print(f"import (PostgreSQL): {imported['rows_per_s']:,.0f} rows/s")
            planned = _child("plan", settings, [])
            print(
                f"plan (PostgreSQL): {accounts / planned['seconds']:,.0f} accounts/s first, "
                f"{accounts / planned['replan_seconds']:,.0f} accounts/s re-plan; "
                f"{planned['messages']:,.0f} decisions"
            )
            if history:
                _add_history(seed, history)
                print(f"outbox: {history:,} finished messages added")
            for count in workers:
                rates: list[float] = []
                sent = 0
                for run in range(repeat):
                    db = database(f"bench_run_{count}_{run}", template="bench_seed")
                    (work / f"w{count}r{run}").mkdir()
                    run_settings = _settings(work / f"w{count}r{run}", db)
                    go = work / f"go-{count}-{run}"
                    procs = [
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-m",
                                "bench.child",
                                "send",
                                str(run_settings),
                                str(go),
                            ],
                            stdout=subprocess.PIPE,
                            text=True,
                            cwd=ROOT,
                        )
                        for _ in range(count)
                    ]
                    time.sleep(2)  # let every worker import and connect before the gun
                    go.touch()
                    results = []
                    for proc in procs:
                        out, _ = proc.communicate(timeout=3600)
                        if proc.returncode != 0:
                            sys.exit(f"bench: a send worker failed ({proc.returncode})")
                        results.append(json.loads(out.strip().splitlines()[-1]))
                    sent = sum(r["sent"] for r in results)
                    wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
                    rates.append(sent / wall)
                    with engine.connect() as conn:
                        conn.execute(text(f'DROP DATABASE "bench_run_{count}_{run}" WITH (FORCE)'))
                print(f"send, {count} worker(s): {sent:,} messages; messages/s  {_spread(rates)}")
    finally:
        engine.dispose()
        if cluster is not None:
            cluster.stop()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )


def _add_history(url: str, rows: int) -> None:
    """``rows`` sent messages of long ago, spread over the accounts (what a year of
    running leaves in the outbox), written with COPY."""
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        ids = [r[0] for r in conn.execute("SELECT account_id FROM account ORDER BY account_id")]
        columns = (
            "message_id, idempotency_key, account_id, cycle, stage, step, channel, status, "
            "dpd, attempts, sent_at, created_at, updated_at"
        )
        with conn.cursor().copy(f"COPY message ({columns}) FROM STDIN") as copy:
            for i in range(rows):
                key = f"history-{i}"
                at = "2025-06-01 12:00:00+00"
                copy.write_row(
                    (
                        f"h{i:031d}",
                        key,
                        ids[i % len(ids)],
                        1,
                        "early",
                        f"h{i}",
                        "sms",
                        "sent",
                        3,
                        1,
                        at,
                        at,
                        at,
                    )
                )
        conn.execute("ANALYZE message")


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("plan", help="import then plan a generated portfolio")
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    s = sub.add_parser("send", help="plan on PostgreSQL, then send with several workers")
    s.add_argument("--accounts", type=int, default=100_000)
    s.add_argument("--workers", default="1,2,4", help="worker counts to try, e.g. 1,2,4")
    s.add_argument("--repeat", type=int, default=2)
    s.add_argument("--history", type=int, default=1_000_000, help="finished rows added first")
    s.add_argument("--database-url", help="a PostgreSQL superuser URL (default: start one)")
    d = sub.add_parser("deliver", help="SMS and email hand-overs/s against loopback fakes")
    d.add_argument("--messages", type=int, default=5000, help="per run, limits off")
    d.add_argument("--repeat", type=int, default=3)
    d.add_argument("--rate", type=float, default=50.0, help="the limit R (messages/s)")
    d.add_argument("--seconds", type=float, default=60.0, help="window measured at R")
    d.add_argument("--concurrency", type=int, default=8, help="as [send] concurrency")
    args = parser.parse_args()
    if args.what == "deliver":
        from bench.deliver import deliver

        deliver(args.messages, args.repeat, args.rate, args.seconds, args.concurrency)
        return
    if args.what == "plan":
        plan(args.accounts, args.repeat)
    elif args.what == "send":
        workers = [int(n) for n in args.workers.split(",")]
        send(args.accounts, workers, args.repeat, args.history, args.database_url)


if __name__ == "__main__":
    main()
