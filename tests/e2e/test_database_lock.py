"""SQLite "database is locked": another connection holds the write lock (``BEGIN
IMMEDIATE``) while the real `plan`, `send` and `import` run.

Each waits its busy timeout, retries a bounded number of times saying so on stderr, then
fails with one line naming the database file; nothing is half-written (every batch is
one transaction, and none could start). A lock released during the retries lets the
command finish by itself. After the lock is gone a re-run completes: the outbox equals
that of the same run on a copy that was never locked, each letter file is written once.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import write_csv
from tests.factory import ROOT
from tests.integration.test_pipeline import row

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)  # Wednesday 11:00 in New York
QUICK = {
    # A short busy timeout and few, short retries: the lock outlasts them in a second.
    "DISPATCHER_DATABASE__BUSY_TIMEOUT_SECONDS": "0.2",
    "DISPATCHER_DATABASE__RETRY_ATTEMPTS": "3",
    "DISPATCHER_DATABASE__RETRY_MAX_WAIT_SECONDS": "0.2",
}


def settings_file(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "settings.toml"
    path.write_text(
        f'database_url = "sqlite:///{directory / "db.sqlite"}"\n'
        f'templates_dir = "{ROOT / "templates"}"\n'
        f'strategy_file = "{ROOT / "config" / "strategy.toml"}"\n'
        f'policies_dir = "{ROOT / "config" / "policies"}"\n'
        f'[sinks]\ndirectory = "{directory / "sink"}"\n'
        f'[audit]\nanchor_file = "{directory / "anchors.jsonl"}"\n'
        "[plan]\nbatch_size = 100\n"
    )
    return path


def dispatcher(
    settings: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DISPATCHER_CONFIG": str(settings), **(env or {})}
    environment.pop("DISPATCHER_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        cwd=settings.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def database(settings: Path) -> Path:
    return settings.parent / "db.sqlite"


@contextmanager
def write_locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's writer, as far as SQLite can tell: a connection of its own in
    ``BEGIN IMMEDIATE`` (the write lock) until the block ends."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def rows_of(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute(sql))


def outbox(path: Path) -> set[tuple[object, ...]]:
    return set(
        rows_of(
            path,
            "SELECT idempotency_key, status, hold_reason, scheduled_for, body_sha256 FROM message",
        )
    )


def accounts_file(tmp_path: Path, n: int = 700) -> Path:
    ladder = [-3, 1, 5, 35, 95]
    rows = [
        row(
            f"L-{i:05d}",
            (NOW - timedelta(days=ladder[i % len(ladder)])).date(),
            phone=f"+1617{5_000_000 + i:07d}",
            email=f"l{i}@example.com",
        )
        for i in range(n)
    ]
    return write_csv(tmp_path / "accounts.csv", rows)


def prepared(tmp_path: Path, name: str, accounts: Path) -> Path:
    settings = settings_file(tmp_path / name)
    ok(dispatcher(settings, "init"))
    ok(dispatcher(settings, "import", "accounts", str(accounts)))
    return settings


def assert_gave_up(done: subprocess.CompletedProcess[str], doing: str, path: Path) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    *retries, last = done.stderr.strip().splitlines()
    assert len(retries) == 2, done.stderr
    assert all(line.startswith(f"warning: {doing}: database {path} is locked") for line in retries)
    assert last.startswith(f"error: {doing}: database {path} is locked by another connection")
    assert "gave up after 3 attempts" in last
    assert "Traceback" not in done.stderr


def test_plan_under_a_held_write_lock_gives_up_clearly_then_completes_once(
    tmp_path: Path,
) -> None:
    accounts = accounts_file(tmp_path)
    control, settings = (
        prepared(tmp_path, "control", accounts),
        prepared(tmp_path, "locked", accounts),
    )
    ok(dispatcher(control, "plan", "--now", NOW.isoformat()))
    expected = outbox(database(control))
    assert len(expected) >= 700
    audit_before = rows_of(database(settings), "SELECT count(*) FROM audit")

    with write_locked(database(settings)):
        done = dispatcher(settings, "plan", "--now", NOW.isoformat(), env=QUICK)
    assert_gave_up(done, "plan", database(settings))
    # Nothing half-written: no outbox row, no audit record.
    assert outbox(database(settings)) == set()
    assert rows_of(database(settings), "SELECT count(*) FROM audit") == audit_before

    ok(dispatcher(settings, "plan", "--now", NOW.isoformat()))
    assert outbox(database(settings)) == expected
    ok(dispatcher(settings, "plan", "--now", NOW.isoformat()))
    assert outbox(database(settings)) == expected


def test_a_lock_released_during_the_retries_lets_plan_finish_by_itself(tmp_path: Path) -> None:
    accounts = accounts_file(tmp_path, 300)
    control, settings = (
        prepared(tmp_path, "control", accounts),
        prepared(tmp_path, "locked", accounts),
    )
    ok(dispatcher(control, "plan", "--now", NOW.isoformat()))
    environment = {
        **os.environ,
        "DISPATCHER_CONFIG": str(settings),
        **QUICK,
        "DISPATCHER_DATABASE__RETRY_ATTEMPTS": "20",
    }
    environment.pop("DISPATCHER_DATABASE_URL", None)
    log = tmp_path / "plan.stderr"
    with write_locked(database(settings)), log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "plan", "--now", NOW.isoformat()],
            cwd=settings.parent,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        # The lock goes once the plan has met it and said it retries.
        deadline = time.monotonic() + 60
        while "retrying in" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.05)
    assert process.wait(timeout=120) == 0, log.read_text()
    done = subprocess.CompletedProcess(process.args, 0, "", log.read_text())
    assert f"warning: plan: database {database(settings)} is locked" in done.stderr
    assert "retrying in" in done.stderr and "Traceback" not in done.stderr
    assert outbox(database(settings)) == outbox(database(control))


def test_send_under_a_held_write_lock_claims_nothing_then_sends_each_once(
    tmp_path: Path,
) -> None:
    settings = prepared(tmp_path, "send", accounts_file(tmp_path, 200))
    ok(dispatcher(settings, "plan", "--now", NOW.isoformat()))
    path = database(settings)
    queued = rows_of(path, "SELECT count(*) FROM message WHERE status = 'queued'")[0][0]
    assert isinstance(queued, int) and queued > 50
    sink = settings.parent / "sink"

    with write_locked(path):
        done = dispatcher(settings, "send", "--now", NOW.isoformat(), env=QUICK)
    assert_gave_up(done, "send", path)
    assert rows_of(path, "SELECT count(*) FROM message WHERE status = 'sending'") == [(0,)]
    assert rows_of(path, "SELECT count(*) FROM message WHERE status = 'queued'") == [(queued,)]
    assert not sink.exists() or not any(p.is_file() for p in sink.rglob("*"))

    ok(dispatcher(settings, "send", "--now", NOW.isoformat()))
    sent = rows_of(path, "SELECT message_id, channel FROM message WHERE status = 'sent'")
    later = rows_of(path, "SELECT scheduled_for FROM message WHERE status = 'queued'")
    # Every message due at NOW went; what is left waits for its contact window.
    assert len(sent) + len(later) == queued and len(sent) > 50
    assert all(datetime.fromisoformat(str(at)).replace(tzinfo=UTC) > NOW for (at,) in later)
    files = [p for p in sink.rglob("*") if p.is_file()]
    # One file per message, named by it: none written twice, none missing.
    stems = sorted(p.name.split(".", 1)[0] for p in files)
    assert stems == sorted(str(m) for m, _ in sent)
    assert rows_of(path, "SELECT count(*) FROM audit WHERE event = 'message_sent'") == [
        (len(sent),)
    ]


def test_import_under_a_held_write_lock_writes_nothing_then_imports_every_row(
    tmp_path: Path,
) -> None:
    settings = settings_file(tmp_path / "import")
    ok(dispatcher(settings, "init"))
    path = database(settings)
    accounts = accounts_file(tmp_path, 500)
    with write_locked(path):
        done = dispatcher(settings, "import", "accounts", str(accounts), env=QUICK)
    assert_gave_up(done, "import", path)
    assert rows_of(path, "SELECT count(*) FROM account") == [(0,)]
    imported = ok(dispatcher(settings, "import", "accounts", str(accounts)))
    assert "500" in imported.stdout
    assert rows_of(path, "SELECT count(*) FROM account") == [(500,)]
    assert rows_of(path, "SELECT count(DISTINCT account_id) FROM account") == [(500,)]
