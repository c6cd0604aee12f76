"""PostgreSQL restarted in the middle of `dispatcher plan` and of `dispatcher send`.

The tests run a cluster of their own (the session's is shared by other tests and must not
go down under them) and stop it with ``pg_ctl stop -m fast`` while the real command runs
in a subprocess: every session is cut, new connections are refused for two seconds, then
the server is back on the same port. The command says so on stderr (one line per retry
naming the database, never a traceback), runs again (plan and send are idempotent), and
finishes. Afterwards every due step is decided exactly once (the outbox and the audit
records equal those of the same plan on a database that had no outage), no SMS reached
the provider twice, none is missing, and the audit chain verifies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import write_csv
from tests.e2e.test_serve import free_port, start
from tests.factory import ROOT
from tests.fake_twilio import FakeTwilio
from tests.integration.test_pipeline import row
from tests.pg_server import LocalCluster, PostgresServer, find_bin_dir

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)  # Wednesday 11:00 in New York
SID = "AC" + "1" * 32
TOKEN = "outage-test-token-77aa"
CALLBACK = "https://dispatcher.example/webhooks/twilio/status"
LEASE = 10
DOWN_SECONDS = 2.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[LocalCluster, PostgresServer]]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail("the PostgreSQL server binaries are needed (./dev test installs them)")
    local = LocalCluster(bin_dir)
    try:
        server = PostgresServer(local.start())
        try:
            yield local, server
        finally:
            server.close()
    finally:
        local.stop()


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    server = FakeTwilio(account_sid=SID, auth_token=TOKEN).start()
    yield server
    server.stop()


def settings_file(tmp_path: Path, name: str, url: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'database_url = "{url}"\n'
        f'templates_dir = "{ROOT / "templates"}"\n'
        f'strategy_file = "{ROOT / "config" / "strategy.toml"}"\n'
        f'policies_dir = "{ROOT / "config" / "policies"}"\n'
        f'[sinks]\ndirectory = "{tmp_path / name / "sink"}"\n'
        f'[audit]\nanchor_file = "{tmp_path / name / "anchors.jsonl"}"\n'
        "[database]\nretry_attempts = 8\nretry_max_wait_seconds = 2\n"
        f"[plan]\nbatch_size = 50\n{extra}"
    )
    return path


def dispatcher(
    settings: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        cwd=settings.parent,
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def environment(settings: Path) -> dict[str, str]:
    env = {**os.environ, "DISPATCHER_CONFIG": str(settings), "DISPATCHER_TWILIO__AUTH_TOKEN": TOKEN}
    env.pop("DISPATCHER_DATABASE_URL", None)
    return env


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def query(url: str, sql: str) -> list[Any]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def count(url: str, sql: str) -> int:
    try:
        return int(query(url, sql)[0][0])
    except Exception:  # the server is down between polls: nothing to count yet
        return -1


def outbox(url: str) -> dict[str, tuple[object, ...]]:
    rows = query(
        url,
        "SELECT idempotency_key, status, hold_reason, rule_id, scheduled_for, body_sha256 "
        "FROM message",
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def audit_events(url: str) -> Counter[tuple[str, str]]:
    rows = query(url, "SELECT message_id, event FROM audit WHERE message_id IS NOT NULL")
    return Counter((r[0], r[1]) for r in rows)


def restart_when(
    local: LocalCluster, process: subprocess.Popen[str], started: Any, what: str
) -> None:
    """Cut the server once ``started()`` says the command is under way, mid-run."""
    deadline = time.monotonic() + 60
    while not started() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, f"{what} finished before the restart could cut it"
    local.shut_down("fast")
    time.sleep(DOWN_SECONDS)
    local.start_again()


def portfolio(tmp_path: Path, n: int) -> Path:
    """Accounts across the ladder (pre-due to pre-legal), some disputed, some without a
    postal address (their letters held), everyone their own person."""
    ladder = [-3, 1, 5, 20, 35, 95, 200]
    rows = []
    for i in range(n):
        extra = {"phone": f"+1617{3_000_000 + i:07d}", "email": f"o{i}@example.com"}
        if i % 17 == 0:
            extra["dispute"] = "true"
        if i % 11 == 0:
            extra.update(address_line1="", city="", region="", postal_code="")
        due = (NOW - timedelta(days=ladder[i % len(ladder)])).date()
        rows.append(row(f"O-{i:05d}", due, **extra))
    return write_csv(tmp_path / "accounts.csv", rows)


def audit_verifies(settings: Path) -> None:
    ok(dispatcher(settings, "audit", "seal"))
    verify = ok(dispatcher(settings, "audit", "verify"))
    assert "audit chain intact" in verify.stdout, verify.stdout


def test_postgres_restarted_mid_plan_every_due_step_is_decided_exactly_once(
    tmp_path: Path, cluster: tuple[LocalCluster, PostgresServer]
) -> None:
    local, server = cluster
    accounts = portfolio(tmp_path, 4000)
    with server.database() as control_url, server.database() as url:
        control = settings_file(tmp_path, "control", control_url)
        settings = settings_file(tmp_path, "outage", url)
        for s in (control, settings):
            ok(dispatcher(s, "init"))
            ok(dispatcher(s, "import", "accounts", str(accounts)))
        ok(dispatcher(control, "plan", "--now", NOW.isoformat()))
        expected = outbox(control_url)
        assert len(expected) > 4000  # queued, deferred and held decisions, many batches

        log = (tmp_path / "plan.stderr").open("w+")
        process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "plan", "--now", NOW.isoformat()],
            cwd=tmp_path,
            env=environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        restart_when(
            local, process, lambda: count(url, "SELECT count(*) FROM message") > 200, "plan"
        )
        assert process.wait(timeout=300) == 0, (tmp_path / "plan.stderr").read_text()
        stderr = (tmp_path / "plan.stderr").read_text()
        # Reported clearly: what failed, on which database (no password), and the retry.
        assert f"warning: plan: database postgresql+psycopg://postgres@127.0.0.1:{local.port}/" in (
            stderr
        ), stderr
        assert "unavailable" in stderr and "retrying in" in stderr, stderr
        assert "Traceback" not in stderr, stderr

        # Nothing lost, nothing twice: the same outbox as without the outage; a re-run
        # adds nothing.
        assert outbox(url) == expected
        ok(dispatcher(settings, "plan", "--now", NOW.isoformat()))
        assert outbox(url) == expected
        # One audit record per decision, as on the database that had no outage.
        assert audit_events(url) == audit_events(control_url)
        audit_verifies(settings)


def test_postgres_restarted_mid_send_no_sms_goes_twice_and_none_is_lost(
    tmp_path: Path, cluster: tuple[LocalCluster, PostgresServer], twilio: FakeTwilio
) -> None:
    local, server = cluster
    n = 600
    rows = [
        row(f"S-{i:05d}", (NOW - timedelta(days=1)).date(), phone=f"+1617{4_000_000 + i:07d}")
        for i in range(n)
    ]
    accounts = write_csv(tmp_path / "sms.csv", rows)
    with server.database() as url:
        settings = settings_file(
            tmp_path,
            "send",
            url,
            f"[send]\nlease_seconds = {LEASE}\n"
            f'[twilio]\naccount_sid = "{SID}"\nfrom_number = "+15005550000"\n'
            f'status_callback_url = "{CALLBACK}"\nbase_url = "{twilio.base_url}"\n'
            "timeout_seconds = 2\nsegments_per_second = 120\n",
        )
        text_ = settings.read_text().replace("[sinks]\n", '[sinks]\nsms = "twilio"\n')
        settings.write_text(text_)
        ok(dispatcher(settings, "init"))
        ok(dispatcher(settings, "import", "accounts", str(accounts)))
        ok(dispatcher(settings, "plan", "--now", NOW.isoformat()))
        assert count(url, "SELECT count(*) FROM message WHERE status = 'queued'") == n

        log = (tmp_path / "send.stderr").open("w+")
        process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher", "send", "--now", NOW.isoformat()],
            cwd=tmp_path,
            env=environment(settings),
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        restart_when(local, process, lambda: len(twilio.created) > 30, "send")
        assert process.wait(timeout=300) == 0, (tmp_path / "send.stderr").read_text()
        stderr = (tmp_path / "send.stderr").read_text()
        assert "warning: send: database postgresql+psycopg://" in stderr, stderr
        assert "retrying in" in stderr and "Traceback" not in stderr, stderr
        cut_off = count(url, "SELECT count(*) FROM message WHERE status = 'sending'")

        # After the lease, the messages the cut-off pass left `sending` are looked up at
        # the provider, not sent again.
        ok(dispatcher(settings, "send", "--now", (NOW + timedelta(seconds=2 * LEASE)).isoformat()))
        at_twilio = Counter(str(m["status_callback"]).rsplit("mid=", 1)[1] for m in twilio.created)
        assert [m for m, k in at_twilio.items() if k > 1] == []
        statuses = dict(query(url, "SELECT status, count(*) FROM message GROUP BY status"))
        assert statuses == {"sent": n}, (statuses, cut_off)
        assert len(at_twilio) == n
        # One audit record of each message going out: sent, or found at the provider by
        # the reconciliation; one the cut-off pass had claimed but not handed over is
        # found missing, queued again, and then sent.
        went: Counter[str] = Counter()
        reconciled: Counter[str] = Counter()
        for message_id, event, detail in query(
            url,
            "SELECT message_id, event, detail FROM audit "
            "WHERE event IN ('message_sent', 'delivery_reconciled')",
        ):
            if event == "message_sent" or '"found": true' in detail:
                went[message_id] += 1
            else:
                reconciled[message_id] += 1
        assert cut_off >= 1 and sum(reconciled.values()) <= cut_off
        assert set(went) == set(at_twilio) and set(went.values()) == {1}
        audit_verifies(settings)


def test_postgres_down_for_good_the_command_gives_up_with_one_line(
    tmp_path: Path, cluster: tuple[LocalCluster, PostgresServer]
) -> None:
    local, server = cluster
    with server.database() as url:
        settings = settings_file(tmp_path, "down", url)
        ok(dispatcher(settings, "init"))
        local.shut_down("fast")
        try:
            done = subprocess.run(
                [sys.executable, "-m", "dispatcher", "plan", "--now", NOW.isoformat()],
                cwd=tmp_path,
                env={**environment(settings), "DISPATCHER_DATABASE__RETRY_ATTEMPTS": "3"},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            local.start_again()
    assert done.returncode == 2
    *retries, last = done.stderr.strip().splitlines()
    where = f"database postgresql+psycopg://postgres@127.0.0.1:{local.port}/"
    assert len(retries) == 2 and all(line.startswith("warning: ") for line in retries)
    assert last.startswith("error: ") and where in last and "gave up after 3 attempts" in last
    assert "Connection refused" in last
    assert "Traceback" not in done.stderr


def test_the_service_outlives_a_postgres_restart_and_goes_on_planning_and_sending(
    tmp_path: Path, cluster: tuple[LocalCluster, PostgresServer]
) -> None:
    local, server = cluster
    port = free_port()
    with server.database() as url:
        settings = settings_file(
            tmp_path,
            "serve",
            url,
            f"[serve]\nport = {port}\nsend_idle_seconds = 0.1\ngrace_seconds = 20\n"
            'plan_cron = "*/2 * * * * *"\nhousekeeping_seconds = 1\n'
            f'pid_file = "{tmp_path / "serve.pid"}"\n',
        )
        ok(dispatcher(settings, "init"))
        first = [
            row(f"V-{i}", (NOW - timedelta(days=1)).date(), phone=f"+1617{6_000_000 + i:07d}")
            for i in range(5)
        ]
        ok(dispatcher(settings, "import", "accounts", str(write_csv(tmp_path / "v1.csv", first))))
        served = start(tmp_path, settings, port)
        sent = "SELECT count(*) FROM message WHERE status = 'sent'"
        try:
            served.wait_ready()
            wait_until(lambda: count(url, sent) == 5)
            local.shut_down("fast")
            time.sleep(3 * DOWN_SECONDS)
            local.start_again()
            assert served.process.poll() is None, served.log.read_text()
            # After the outage, new work is planned and sent by the same process.
            later = [
                row(f"V-{i}", (NOW - timedelta(days=1)).date(), phone=f"+1617{6_000_000 + i:07d}")
                for i in range(5, 10)
            ]
            ok(
                dispatcher(
                    settings, "import", "accounts", str(write_csv(tmp_path / "v2.csv", later))
                )
            )
            wait_until(lambda: count(url, sent) == 10, timeout=90)
            outage = [e for e in served.events() if e.get("event") == "database_unavailable"]
            assert outage and all(str(local.port) in str(e["error"]) for e in outage)
            assert {e["doing"] for e in outage} >= {"send"}
        finally:
            assert served.stop() == 0, served.log.read_text()
        assert "Traceback" not in served.log.read_text()
        assert count(url, "SELECT count(*) FROM message") == 10
        files = [p for p in (tmp_path / "serve" / "sink").rglob("*.txt")]
        assert len(files) == 10  # each SMS once


def wait_until(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
