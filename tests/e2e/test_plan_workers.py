"""`python -m dispatcher plan` with `[plan] workers = 2`: the spawned workers start from the
real entry point (which must not run the command line again in each of them) and the
command writes what the one-process command writes."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.portfolio import write_bench_portfolio
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


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc: no psutil needed)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_plan_killed_midway_leaves_whole_batches_and_no_worker_behind(tmp_path: Path) -> None:
    """SIGKILL to `plan` while its two workers plan and write: the workers notice their
    planner is gone and exit (none waits on its queue or for its turn forever), the
    batches written are whole, and the next `plan` writes what an uninterrupted one
    writes."""
    portfolio = tmp_path / "accounts.csv"
    write_bench_portfolio(portfolio, 3000)
    clean = _planned(tmp_path / "clean", 1, portfolio)
    directory = tmp_path / "killed"
    directory.mkdir()
    config = settings_file(directory, "[plan]\nworkers = 2\nbatch_size = 100")
    for args in (("init",), ("import", "accounts", str(portfolio))):
        assert run(directory, *args, config=config).returncode == 0
    env = {**os.environ, "DISPATCHER_CONFIG": str(config)}
    env.pop("DISPATCHER_DATABASE_URL", None)
    planning = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "plan", "--now", NOW.isoformat()],
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = directory / "db.sqlite"
    deadline = time.monotonic() + 120
    written = 0
    while written == 0 and time.monotonic() < deadline and planning.poll() is None:
        time.sleep(0.05)
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as conn:
            written = conn.execute("SELECT count(*) FROM message").fetchone()[0]
    workers = _children(planning.pid) - {planning.pid}
    assert planning.poll() is None, "the plan ended before it could be killed"
    assert written > 0 and workers
    planning.send_signal(signal.SIGKILL)
    planning.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:300] for pid in workers if _alive(pid)}
    assert not left, f"a plan worker outlived its planner: {left}"
    with contextlib.closing(sqlite3.connect(database)) as conn:
        rows = conn.execute("SELECT count(*) FROM message").fetchone()[0]
    assert 0 < rows < len(clean)  # killed midway: some batches written, not all
    result = run(directory, "plan", "--now", NOW.isoformat(), config=config)
    assert result.returncode == 0, result.stderr
    with contextlib.closing(sqlite3.connect(database)) as conn:
        assert conn.execute("SELECT * FROM message ORDER BY message_id").fetchall() == clean
