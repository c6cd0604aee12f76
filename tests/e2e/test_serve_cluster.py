"""Three `dispatcher serve` processes sharing one PostgreSQL, with loopback providers
(a Twilio-compatible HTTP server and an aiosmtpd SMTP server).

What ops rely on when they scale out: every message goes exactly once, caps hold across
instances, and when the instance that plans dies another one plans at the next tick.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

from tests.conftest import write_csv
from tests.e2e.test_serve import NOW, TOKEN, Served, fake, free_port, twilio_settings
from tests.factory import ROOT
from tests.fake_twilio import FakeTwilio
from tests.integration.test_pipeline import row
from tests.integration.test_smtp_channel import SmtpFixture, smtp_server
from tests.pg_server import PostgresServer

__all__ = ["fake", "smtp_server"]  # fixtures used here, defined beside their fakes

ACCOUNTS = 5000
TICK_SECONDS = 2


def portfolio(path: Path) -> Path:
    """Mostly one debt per person; every tenth person has two accounts (one phone, one
    email between them), so the caps must hold across accounts and instances."""
    rows = []
    for i in range(ACCOUNTS):
        person = i - 1 if i % 10 == 1 else i
        dpd_due = "2026-05-06" if i % 5 == 0 else "2026-06-09"  # mid stage (SMS + email) or early
        rows.append(
            row(
                f"C-{i:05d}",
                dpd_due,
                phone=f"+1617{5550000 + person:07d}",
                email=f"person{person}@example.com",
            )
        )
    return write_csv(path, rows)


def cli(tmp_path: Path, env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    state: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``condition``; on timeout fail with ``state()``, what the wait ended on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; {state()}")


def test_three_instances_send_every_message_once_and_hand_over_planning(
    tmp_path: Path,
    postgres_server: PostgresServer,
    fake: FakeTwilio,
    smtp_server: SmtpFixture,
) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(
        f'templates_dir = "{ROOT / "templates"}"\n'
        f'strategy_file = "{ROOT / "config" / "strategy.toml"}"\n'
        f'policies_dir = "{ROOT / "config" / "policies"}"\n'
        f'[sinks]\nsms = "twilio"\nemail = "smtp"\ndirectory = "{tmp_path / "sink"}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\nsecurity = "none"\n'
        f"{twilio_settings(fake)}"
        f'[serve]\nplan_cron = "*/{TICK_SECONDS} * * * * *"\nsend_idle_seconds = 0.1\n'
        f"grace_seconds = 20\n",
        encoding="utf-8",
    )
    with postgres_server.database() as url:
        env = {
            **os.environ,
            "DISPATCHER_CONFIG": str(config),
            "DISPATCHER_DATABASE_URL": url,
            "DISPATCHER_TWILIO__AUTH_TOKEN": TOKEN,
        }
        cli(tmp_path, env, "init")
        cli(tmp_path, env, "import", "accounts", str(portfolio(tmp_path / "accounts.csv")))
        engine = create_engine(url)
        try:
            instances = [start_instance(tmp_path, env, n) for n in range(3)]
            try:
                check_every_message_once(engine, fake, smtp_server, instances)
                check_planning_hand_over(engine, instances)
                for served in instances:
                    if served.process.poll() is None:
                        assert served.stop() == 0, served.log.read_text()
            finally:
                for served in instances:
                    if served.process.poll() is None:
                        served.process.kill()
                        served.process.wait()
        finally:
            engine.dispose()


def start_instance(tmp_path: Path, env: dict[str, str], n: int) -> Served:
    port = free_port()
    log = tmp_path / f"serve-{n}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "serve", "--now", NOW.isoformat()],
        cwd=tmp_path,
        env={
            **env,
            "DISPATCHER_SERVE__PORT": str(port),
            "DISPATCHER_SERVE__PID_FILE": str(tmp_path / f"serve-{n}.pid"),
        },
        stdout=log.open("w", encoding="utf-8"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Served(process, port, log)


def check_every_message_once(
    engine: Engine, fake: FakeTwilio, smtp: SmtpFixture, instances: list[Served]
) -> None:
    due = (
        "status = 'queued' AND (scheduled_for IS NULL"
        " OR scheduled_for <= CAST(:now AS timestamptz) + interval '5 minutes')"
    )

    def settled() -> bool:
        for served in instances:
            assert served.process.poll() is None, served.log.read_text()
        # One statement, one snapshot: a message is queued, sending or sent in it, never
        # in between, so "none due, none in flight" cannot miss one changing hands.
        with engine.connect() as conn:
            waiting, in_flight, sent = conn.execute(
                text(
                    f"SELECT count(*) FILTER (WHERE {due}),"
                    " count(*) FILTER (WHERE status = 'sending'),"
                    " count(*) FILTER (WHERE status = 'sent') FROM message"
                ),
                {"now": NOW},
            ).one()
        return bool(sent) and waiting == 0 and in_flight == 0

    def unsettled() -> str:
        """The messages the wait ended on, by status and last error: an uncertain
        hand-over (stays `sending` for its 15-minute lease) names itself in a CI log."""
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT status, channel, last_error, count(*) AS n FROM message"
                    f" WHERE status IN ('sending', 'unknown') OR ({due})"
                    " GROUP BY status, channel, last_error ORDER BY n DESC"
                ),
                {"now": NOW},
            ).all()
        found = "; ".join(f"{r.n} {r.status} {r.channel} ({r.last_error})" for r in rows)
        return f"left: {found or 'none'}; the Twilio fake received {len(fake.received)}"

    wait_until(settled, 300, "every due message to be sent", unsettled)
    with engine.connect() as conn:
        sent = conn.execute(
            text(
                "SELECT m.message_id, m.channel, a.phone, a.email FROM message m "
                "JOIN account a ON a.account_id = m.account_id WHERE m.status = 'sent'"
            )
        ).all()
        planners = {i for (i,) in conn.execute(text("SELECT DISTINCT instance FROM run"))}
    sms_sent = [r for r in sent if r.channel == "sms"]
    email_sent = [r for r in sent if r.channel == "email"]
    # Exactly once at the providers: as many accepted as recorded sent, none twice.
    sms_received = Counter((r.form["To"], r.form["Body"]) for r in fake.received)
    assert len(sms_received) == len(fake.received) == len(sms_sent)
    mail_ids = Counter(m.mail["Message-ID"] for m in smtp.recorder.messages)
    assert len(mail_ids) == len(smtp.recorder.messages) == len(email_sent)
    for message_id, *_ in email_sent:
        assert any(message_id in str(key) for key in mail_ids)
    # Caps held across instances: one electronic message per person within the hour
    # (US.gap.electronic), so at most one per phone and one per email address.
    per_person = Counter(r.phone for r in sent)
    assert per_person and max(per_person.values()) == 1
    assert max(Counter(r.email for r in sent).values()) == 1
    # Every person got their first message; second debts and second channels wait.
    assert len(per_person) == ACCOUNTS - ACCOUNTS // 10
    assert len(planners) >= 1


def check_planning_hand_over(engine: Engine, instances: list[Served]) -> None:
    with engine.connect() as conn:
        leader = conn.execute(
            text("SELECT instance FROM run WHERE kind = 'plan' ORDER BY id DESC LIMIT 1")
        ).scalar_one()
    pid = int(str(leader).rsplit(":", 1)[1])
    [victim] = [s for s in instances if s.process.pid == pid]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=30)
    killed_at = time.monotonic()

    def new_leader() -> bool:
        with engine.connect() as conn:
            latest = conn.execute(
                text("SELECT instance FROM run WHERE kind = 'plan' ORDER BY id DESC LIMIT 1")
            ).scalar_one()
        return str(latest) != str(leader)

    wait_until(new_leader, 30, "another instance to plan")
    # Within one tick (plus the scheduler's own jitter and a busy CI machine's).
    assert time.monotonic() - killed_at <= TICK_SECONDS * 2 + 1
