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


def _settings(directory: Path, db: Path) -> Path:
    path = directory / "settings.toml"
    path.write_text(
        f'database_url = "sqlite:///{db}"\n'
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("plan", help="import then plan a generated portfolio")
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.what == "plan":
        plan(args.accounts, args.repeat)


if __name__ == "__main__":
    main()
