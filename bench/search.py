"""``python -m bench search --accounts 1000000 --repeat 5``: account search latency.

Generates a portfolio (``dispatcher/portfolio.py``, each account its own phone and email),
imports it with ``dispatcher import accounts`` into a fresh SQLite file and, unless
``--no-postgres``, into a database of a throwaway PostgreSQL cluster (the import keeps the
search index up to date: its time is printed too). Then, per run, it looks up 20 different
values of each kind of query as the search page does (``AccountSearch.find`` with the
page's limit of 50) and prints min / median / max milliseconds per query kind.
"""

from __future__ import annotations

import csv
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import bindparam, text

from dispatcher.account_file import COLUMNS
from dispatcher.bootstrap import bootstrap
from dispatcher.domain.search import search_terms
from dispatcher.portfolio import generate_portfolio
from dispatcher.settings import load_settings

TODAY = date(2026, 6, 10)
PER_KIND = 20
LIMIT = 50


def write_accounts(path: Path, count: int) -> None:
    """The generated portfolio with a phone and an email of its own per account (the
    generator's fiction-range numbers repeat every hundred)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for i, row in enumerate(generate_portfolio(count, today=TODAY)):
            if row["phone"] and "555" in row["phone"]:
                row["phone"] = f"+1617{2_000_000 + i:07d}"
            if row["email"]:
                local, _, domain = row["email"].partition("@")
                row["email"] = f"{local}.{i}@{domain}"
            writer.writerow(row)


def _import(settings: Path, accounts: Path) -> float:
    for args in (["init"], ["import", "accounts", str(accounts)]):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "dispatcher", "--config", str(settings), *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=settings.parent,
        )
        if done.returncode != 0:
            sys.exit(f"bench: {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def _queries(settings: Path, seed: int) -> dict[str, list[str]]:
    """Real values of the database, 20 per kind, drawn at random."""
    app = bootstrap(load_settings(settings))
    rng = random.Random(seed)
    with app.store.engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM account")).scalar_one()
        picks = [f"AC{rng.randrange(1, total + 1):08d}" for _ in range(PER_KIND * 3)]
        rows = conn.execute(
            text(
                "SELECT account_id, full_name, email, phone FROM account WHERE account_id IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {"ids": picks},
        ).all()
    app.store.engine.dispose()
    latin = [r for r in rows if r.full_name.isascii() and " " in r.full_name]
    emails = [r.email for r in rows if r.email]
    phones = [r.phone for r in rows if r.phone and r.phone.startswith("+1617")]
    return {
        "id exact": [r.account_id for r in rows][:PER_KIND],
        "id part (6 chars)": [r.account_id[3:9] for r in rows][:PER_KIND],
        "last name": [r.full_name.split()[-1] for r in latin][:PER_KIND],
        "full name": [r.full_name for r in latin][:PER_KIND],
        "email part": [e.split("@")[0][-9:] for e in emails][:PER_KIND],
        "phone typed (xxx) xxx-xxxx": [f"({p[2:5]}) {p[5:8]}-{p[8:12]}" for p in phones][:PER_KIND],
        "phone digits part": [p[6:12] for p in phones][:PER_KIND],
        "no match": [f"zq{rng.randrange(10**6):06d}x" for _ in range(PER_KIND)],
    }


def _measure(settings: Path, queries: dict[str, list[str]]) -> dict[str, list[float]]:
    app = bootstrap(load_settings(settings))
    found: dict[str, list[float]] = {}
    for kind, values in queries.items():
        times = []
        for value in values:
            started = time.perf_counter()
            app.search.find(search_terms(value), LIMIT)
            times.append((time.perf_counter() - started) * 1000)
        found[kind] = times
    app.store.engine.dispose()
    return found


def _report(name: str, runs: list[dict[str, list[float]]]) -> None:
    print(f"{name}: milliseconds per query (min / median / max over every query of every run)")
    for kind in runs[0]:
        values = [v for run in runs for v in run[kind]]
        print(
            f"  {kind:<28} {min(values):7.1f} / {statistics.median(values):7.1f} / "
            f"{max(values):7.1f}"
        )


def _run(name: str, settings: Path, accounts: Path, repeat: int) -> None:
    seconds = _import(settings, accounts)
    print(f"{name}: imported with the search index kept in step in {seconds:.0f} s")
    queries = _queries(settings, seed=11)
    _measure(settings, queries)  # warm the page cache once, as a running service has it
    _report(name, [_measure(settings, queries) for _ in range(repeat)])


def search(accounts: int, repeat: int, postgres: bool) -> None:
    from bench.__main__ import _postgres, _settings

    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        work = Path(tmp)
        csv_path = work / "accounts.csv"
        started = time.perf_counter()
        write_accounts(csv_path, accounts)
        print(f"{accounts:,} accounts generated in {time.perf_counter() - started:.0f} s")
        sqlite_dir = work / "sqlite"
        sqlite_dir.mkdir()
        settings = _settings(sqlite_dir, sqlite_dir / "search.db")
        _run("sqlite", settings, csv_path, repeat)
        if postgres:
            with _postgres(None) as pg:
                url = pg.database("bench_search")
                pg_dir = work / "postgresql"
                pg_dir.mkdir()
                _run("postgresql", _settings(pg_dir, url), csv_path, repeat)
                pg.drop("bench_search")
    if not postgres:
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
        )
