"""``python -m bench plan --accounts 100000 --repeat 3`` (or ``./dev bench plan ...``).

``python -m bench year --accounts 100000 --days 365``: a simulated year and its invariants.

``python -m bench letters --count 200 --repeat 3 --batch 10000``: letters per second
through Typst (ours) and WeasyPrint (the ``bench`` extra), and a print batch's hand-over.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url

from bench.portfolio import write_bench_portfolio

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


def plan(accounts: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        csv_path = work / "accounts.csv"
        start = time.perf_counter()
        write_bench_portfolio(csv_path, accounts)
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
    with _postgres(url) as pg, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        _seed(pg, work, accounts, history)
        for count in workers:
            rates: list[float] = []
            sent = 0
            for run in range(repeat):
                name = f"bench_run_{count}_{run}"
                run_settings = _settings(_mkdir(work / name), pg.database(name, "bench_seed"))
                results = _workers(work / name, "send", run_settings, count)
                sent = sum(r["sent"] for r in results)
                wall = max(r["finished"] for r in results) - min(r["started"] for r in results)
                rates.append(sent / wall)
                pg.drop(name)
            print(f"send, {count} worker(s): {sent:,} messages; messages/s  {_spread(rates)}")


def latency(
    accounts: int, rate: float, seconds: float, repeat: int, history: int, url: str | None
) -> None:
    """Due time → hand-off to the provider, with messages falling due at ``rate`` per second.

    The planned messages that are due at the start are re-timed to fall due one after
    another over ``seconds`` (a steady trickle, as the day's windows open); one worker runs
    the service's send loop on a clock that runs at real pace from the plan's instant, and
    the channel notes the moment of each hand-off. No provider limit binds.
    """
    with _postgres(url) as pg, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        _seed(pg, work, accounts, history)
        p50s: list[float] = []
        p99s: list[float] = []
        worst: list[float] = []
        handed = 0
        for run in range(repeat):
            name = f"bench_latency_{run}"
            url_run = pg.database(name, "bench_seed")
            due = _retime(url_run, rate, seconds)
            run_settings = _settings(_mkdir(work / name), url_run)
            [result] = _workers(work / name, "trickle", run_settings, 1, str(seconds + 5))
            delays = sorted(result["delays"])
            handed = len(delays)
            p50s.append(statistics.median(delays))
            p99s.append(delays[min(len(delays) - 1, int(len(delays) * 0.99))])
            worst.append(delays[-1])
            pg.drop(name)
            print(f"run {run + 1}: {due:,} due over {seconds:.0f} s, {handed:,} handed over")

        def ms(values: list[float]) -> str:
            return _spread([v * 1000 for v in values]) + " ms"

        print(f"due → hand-off at {rate:,.0f} messages/s: p50 {ms(p50s)}")
        print(f"due → hand-off at {rate:,.0f} messages/s: p99 {ms(p99s)}")
        print(f"due → hand-off at {rate:,.0f} messages/s: max {ms(worst)}")


@dataclass
class _Postgres:
    engine: Engine
    admin: URL

    def database(self, name: str, template: str = "template0") -> str:
        """A fresh database (a copy of ``template``); its URL."""
        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        return self.admin.set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def _postgres(url: str | None) -> Iterator[_Postgres]:
    """A PostgreSQL to measure on: ``url``'s server, or a throwaway cluster of our own."""
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
    try:
        yield _Postgres(engine, admin)
    finally:
        engine.dispose()
        if cluster is not None:
            cluster.stop()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )


def _seed(pg: _Postgres, work: Path, accounts: int, history: int) -> None:
    """Database ``bench_seed``: a generated portfolio imported and planned at ``NOW``, plus
    ``history`` finished messages; each measured run works on a copy of it."""
    csv_path = work / "accounts.csv"
    write_bench_portfolio(csv_path, accounts)
    seed = pg.database("bench_seed")
    settings = _settings(_mkdir(work / "seed"), seed)
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


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _workers(
    work: Path, step: str, settings: Path, count: int, *extra: str
) -> list[dict[str, Any]]:
    """Run ``count`` worker processes of ``step`` from one starting gun; their results."""
    go = work / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.child", step, str(settings), str(go), *extra],
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
            sys.exit(f"bench: a {step} worker failed ({proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _retime(url: str, rate: float, seconds: float) -> int:
    """Spread the messages due at ``NOW`` over the next ``seconds``, ``rate`` per second;
    the rest of them wait an hour. Returns how many fall due in the window."""
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    wanted = int(rate * seconds)
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "WITH due AS (SELECT message_id, row_number() OVER (ORDER BY message_id) - 1 AS n"
            "  FROM message WHERE status = 'queued'"
            "  AND (scheduled_for IS NULL OR scheduled_for <= %(now)s))"
            " UPDATE message m SET scheduled_for = CASE WHEN due.n < %(wanted)s"
            "  THEN %(now)s + make_interval(secs => 2 + due.n / %(rate)s)"
            "  ELSE %(now)s + interval '1 hour' END"
            " FROM due WHERE m.message_id = due.message_id",
            {"now": datetime.fromisoformat(NOW), "wanted": wanted, "rate": rate},
        )
        conn.execute("ANALYZE message")
    return wanted


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


def _letter_step(step: str, count: int, directory: Path | None = None) -> dict[str, float]:
    args = [sys.executable, "-m", "bench.letter", step, str(count)]
    if directory is not None:
        args.append(str(directory))
    result = subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"bench: the letter {step} step failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def letters(count: int, repeat: int, batch: int) -> None:
    """One process per run and engine, one core each (the steps are single-threaded)."""
    rates: dict[str, list[float]] = {"typst": [], "weasyprint": []}
    cpu: dict[str, list[float]] = {"typst": [], "weasyprint": []}
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:
        print(
            f"weasyprint: not available ({exc}); install the bench extra: pip install -e '.[bench]'"
        )
        del rates["weasyprint"]
    for _ in range(repeat):
        for engine, found in rates.items():
            step = _letter_step(engine, count)
            found.append(step["per_s"])
            cpu[engine].append(step["cpu_seconds"])
    print(f"one-page letter rendered and compiled {count} times, {repeat} runs, one core:")
    for engine, found in rates.items():
        print(f"  {engine:<10}  letters/s  {_spread(found)}")
        per_cpu = [count / c for c in cpu[engine]]
        print(f"  {engine:<10}  letters per CPU second  {_spread(per_cpu)}")
    if "weasyprint" in rates:
        ratio = statistics.median(rates["typst"]) / statistics.median(rates["weasyprint"])
        print(f"  ratio (median typst / median weasyprint): {ratio:.1f}x")
    if batch:
        with tempfile.TemporaryDirectory(prefix="bench-print-") as tmp:
            staged = _letter_step("stage", batch, Path(tmp))
            print(
                f"print drop: {batch:,} letters staged (rendered, compiled, fsynced) in "
                f"{staged['seconds']:.1f} s ({staged['per_s']:,.0f}/s), "
                f"peak RSS {staged['peak_mb']:.0f} MB"
            )
            handed = _letter_step("hand_over", batch, Path(tmp))
            print(
                f"print drop: one batch of {batch:,} letters ({handed['pages']:,.0f} pages, "
                f"{handed['batch_mb']:,.0f} MB PDF + manifest) handed over in "
                f"{handed['seconds']:.1f} s, peak RSS {handed['peak_mb']:.0f} MB"
            )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )


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
    t = sub.add_parser("latency", help="due time to hand-off, messages falling due steadily")
    t.add_argument("--accounts", type=int, default=100_000)
    t.add_argument("--rate", type=float, default=200.0, help="messages falling due per second")
    t.add_argument("--seconds", type=float, default=30.0)
    t.add_argument("--repeat", type=int, default=3)
    t.add_argument("--history", type=int, default=1_000_000, help="finished rows added first")
    t.add_argument("--database-url", help="a PostgreSQL superuser URL (default: start one)")
    w = sub.add_parser("letters", help="letters/s: Typst vs WeasyPrint; a print batch")
    w.add_argument("--count", type=int, default=200, help="letters per run and engine")
    w.add_argument("--repeat", type=int, default=3)
    w.add_argument("--batch", type=int, default=10_000, help="letters in the print batch (0: none)")
    d = sub.add_parser("deliver", help="SMS and email hand-overs/s against loopback fakes")
    d.add_argument("--messages", type=int, default=5000, help="per run, limits off")
    d.add_argument("--repeat", type=int, default=3)
    d.add_argument("--rate", type=float, default=50.0, help="the limit R (messages/s)")
    d.add_argument("--seconds", type=float, default=60.0, help="window measured at R")
    d.add_argument("--concurrency", type=int, default=8, help="as [send] concurrency")
    r = sub.add_parser("render", help="SMS and email messages rendered per second, one core")
    r.add_argument("--count", type=int, default=20_000, help="messages per run and template")
    r.add_argument("--repeat", type=int, default=3)
    q = sub.add_parser("search", help="account search latency per kind of query")
    q.add_argument("--accounts", type=int, default=1_000_000)
    q.add_argument("--repeat", type=int, default=5)
    q.add_argument("--no-postgres", action="store_true", help="SQLite only")
    pl = sub.add_parser(
        "plan-limit", help="first plan vs a raw executemany of its rows, for several N"
    )
    pl.add_argument("--accounts", default="10000,100000,1000000", help="sizes N, e.g. 10000,1e5")
    pl.add_argument("--repeat", type=int, default=3)
    pl.add_argument("--workers", type=int, default=2, help="[plan] workers (1: one process)")
    im = sub.add_parser("import", help="import a generated portfolio, rows/s over repeats")
    im.add_argument("--accounts", type=int, default=100_000)
    im.add_argument("--repeat", type=int, default=3)
    y = sub.add_parser("year", help="simulate a year, then check every invariant")
    y.add_argument("--accounts", type=int, default=100_000)
    y.add_argument("--days", type=int, default=365)
    y.add_argument("--step-hours", type=float, default=13.0, help="plan+send every H hours")
    y.add_argument("--seed", type=int, default=2026)
    y.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.what == "search":
        from bench.search import search

        search(args.accounts, args.repeat, not args.no_postgres)
        return
    if args.what == "plan-limit":
        from bench.plan_limit import plan_limit

        sizes = [int(float(n)) for n in args.accounts.split(",")]
        plan_limit(sizes, args.repeat, args.workers)
        return
    if args.what == "import":
        from bench.plan_limit import import_bench

        import_bench(args.accounts, args.repeat)
        return
    if args.what == "year":
        from bench.year import year

        year(args.accounts, args.days, args.step_hours, args.seed, args.json)
        return
    if args.what == "render":
        from bench.render import render

        render(args.count, args.repeat)
        return
    if args.what == "deliver":
        from bench.deliver import deliver

        deliver(args.messages, args.repeat, args.rate, args.seconds, args.concurrency)
        return
    if args.what == "letters":
        letters(args.count, args.repeat, args.batch)
    elif args.what == "plan":
        plan(args.accounts, args.repeat)
    elif args.what == "send":
        workers = [int(n) for n in args.workers.split(",")]
        send(args.accounts, workers, args.repeat, args.history, args.database_url)
    elif args.what == "latency":
        latency(
            args.accounts, args.rate, args.seconds, args.repeat, args.history, args.database_url
        )


if __name__ == "__main__":
    main()
