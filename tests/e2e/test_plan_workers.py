"""`python -m dispatcher plan` with `[plan] workers = 2`: the spawned workers start from the
real entry point (which must not run the command line again in each of them) and the
command writes what the one-process command writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.plan_limit import write_bench_portfolio
from tests.e2e.test_cli import NOW, run, settings_file


def _planned(directory: Path, workers: int, portfolio: Path) -> list[tuple[object, ...]]:
    directory.mkdir()
    config = settings_file(directory, f"[plan]\nworkers = {workers}\nbatch_size = 150")
    for args in (("init",), ("import", "accounts", str(portfolio))):
        result = run(directory, *args, config=config)
        assert result.returncode == 0, result.stderr
    result = run(directory, "plan", "--now", NOW.isoformat(), config=config)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(directory / "db.sqlite") as conn:
        return conn.execute("SELECT * FROM message ORDER BY message_id").fetchall()


def test_plan_command_with_two_workers_writes_what_one_process_writes(tmp_path: Path) -> None:
    portfolio = tmp_path / "accounts.csv"
    write_bench_portfolio(portfolio, 600)
    one = _planned(tmp_path / "one", 1, portfolio)
    two = _planned(tmp_path / "two", 2, portfolio)
    assert len(one) > 600
    assert two == one
