"""Never a message twice, even after a crash: the real `dispatcher send`, SIGKILLed.

1,000 queued messages (SMS through the official client to the fake Twilio, email over
SMTP to aiosmtpd, letters as PDF files). `dispatcher send` runs as a subprocess and is
killed (SIGKILL: no clean-up of any kind) at seeded random moments while it delivers,
then started again, each time a little later on its clock so the previous run's claims
are past their lease. At the end every message was accepted by its provider at most
once, and is ``sent`` (accepted exactly once), or ``unknown`` / ``failed`` with a reason:
no duplicates, nothing lost.

``CRASH_KILLS`` (default 20) and ``CRASH_SEED`` set the long variant by hand, e.g.
``CRASH_KILLS=200 pytest tests/e2e/test_crash.py``.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import write_csv
from tests.factory import ROOT
from tests.fake_twilio import FakeTwilio
from tests.integration.test_pipeline import row
from tests.integration.test_smtp_channel import Recorder, free_port

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)  # Wednesday 11:00 in New York
SID = "AC" + "0" * 32
TOKEN = "crash-test-token-5e1d"
CALLBACK = "https://dispatcher.example/webhooks/twilio/status"
LEASE = 10  # seconds on the dispatcher's clock; each restart is 2 leases later
KILLS = int(os.environ.get("CRASH_KILLS", "20"))
SEED = int(os.environ.get("CRASH_SEED", "20261201"))


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    server = FakeTwilio(account_sid=SID, auth_token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[Recorder]:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    recorder.port = controller.port  # type: ignore[attr-defined]
    yield recorder
    controller.stop()


def config(tmp_path: Path, twilio: FakeTwilio, smtp: Recorder, send: str = "") -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path / "db.sqlite"}"\n'
        f'templates_dir = "{ROOT / "templates"}"\n'
        f'strategy_file = "{ROOT / "config" / "strategy.toml"}"\n'
        f'policies_dir = "{ROOT / "config" / "policies"}"\n'
        f'[sinks]\nsms = "twilio"\nemail = "smtp"\ndirectory = "{tmp_path / "sink"}"\n'
        f'[twilio]\naccount_sid = "{SID}"\nfrom_number = "+15005550000"\n'
        f'status_callback_url = "{CALLBACK}"\nbase_url = "{twilio.base_url}"\n'
        "timeout_seconds = 2\nsegments_per_second = 150\n"
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\nsecurity = "none"\n'  # type: ignore[attr-defined]
        "timeout_seconds = 5\nmessages_per_second = 80\n"
        f"[send]\nlease_seconds = {LEASE}\n{send}\n"
    )
    return path


def portfolio(tmp_path: Path, sms: int, email_only: int, with_letter: int) -> Path:
    """``sms`` accounts 1 day late (an SMS each), ``email_only`` 95 days late without a
    postal address (an email each; the letter is held), ``with_letter`` 95 days late
    with one (an email and a letter each). Everyone is their own person."""
    rows = []
    for i in range(sms + email_only + with_letter):
        days = 1 if i < sms else 95
        extra = {"phone": f"+1617{2_000_000 + i:07d}", "email": f"p{i}@example.com"}
        if sms <= i < sms + email_only:
            extra.update(address_line1="", city="", region="", postal_code="")
        due = (NOW - timedelta(days=days)).date()
        rows.append(row(f"A-{i:05d}", due, **extra))
    return write_csv(tmp_path / "accounts.csv", rows)


def prepare(tmp_path: Path, settings: Path, sms: int, email_only: int, with_letter: int) -> int:
    for args in (
        ("init",),
        ("import", "accounts", str(portfolio(tmp_path, sms, email_only, with_letter))),
        ("plan", "--now", NOW.isoformat()),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "dispatcher", *args],
            cwd=tmp_path,
            env=environment(settings),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    return len(outbox(tmp_path, "queued"))


def outbox(tmp_path: Path, status: str | None = None) -> list[sqlite3.Row]:
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.row_factory = sqlite3.Row
        query = "SELECT * FROM message WHERE status != 'held'"
        if status:
            query += f" AND status = '{status}'"
        return list(db.execute(query + " ORDER BY message_id"))


def smtp_message_id(content: bytes) -> str:
    """Our outbox id inside the Message-ID header (``<time.pid.rand.ID@domain>``)."""
    for line in content.decode(errors="replace").splitlines():
        if line.lower().startswith("message-id:"):
            return line.split("<", 1)[1].split("@", 1)[0].rsplit(".", 1)[1]
    raise AssertionError("no Message-ID")


def sms_message_id(created: dict[str, object]) -> str:
    return str(created["status_callback"]).rsplit("mid=", 1)[1]


def environment(settings: Path) -> dict[str, str]:
    env = {**os.environ, "DISPATCHER_CONFIG": str(settings), "DISPATCHER_TWILIO__AUTH_TOKEN": TOKEN}
    env.pop("DISPATCHER_DATABASE_URL", None)
    return env


def start_send(tmp_path: Path, settings: Path, at: datetime, name: str) -> subprocess.Popen[str]:
    env = environment(settings)
    log = (tmp_path / f"{name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "send", "--now", at.isoformat()],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_killed_again_and_again_every_message_goes_at_most_once_and_none_is_lost(
    tmp_path: Path, twilio: FakeTwilio, smtp: Recorder
) -> None:
    settings = config(tmp_path, twilio, smtp)
    queued = prepare(tmp_path, settings, sms=450, email_only=350, with_letter=100)
    assert queued == 1000
    letters = tmp_path / "sink" / "letter"

    def accepted() -> int:
        return len(twilio.created) + len(smtp.messages) + len(list(letters.glob("*.pdf")))

    rng = random.Random(SEED)
    at = NOW
    killed = 0
    for attempt in range(KILLS):
        at += timedelta(seconds=2 * LEASE)
        process = start_send(tmp_path, settings, at, f"send-{attempt}")
        before = accepted()
        deadline = time.monotonic() + 30
        # Kill it while it delivers: once something new reached a provider, after a
        # random pause (seeded, so a failure can be replayed).
        while accepted() == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.35))
        if process.poll() is None:
            process.kill()  # SIGKILL: no handler, no flush, no goodbye
            killed += 1
        process.wait(timeout=30)
    # Then it is left to finish: first the claims of the last killed run are reconciled.
    for attempt in range(3):
        at += timedelta(seconds=2 * LEASE)
        process = start_send(tmp_path, settings, at, f"final-{attempt}")
        assert process.wait(timeout=120) == 0, (tmp_path / f"final-{attempt}.log").read_text()

    assert killed >= KILLS // 2  # the crashes really happened mid-delivery
    rows = {r["message_id"]: r for r in outbox(tmp_path)}
    assert len(rows) == 1000
    at_twilio = Counter(sms_message_id(m) for m in twilio.created)
    at_smtp = Counter(smtp_message_id(m.content) for m in smtp.messages)
    files = {p.stem for p in letters.glob("*.pdf")}
    # Zero duplicates, by message identity at the providers.
    assert [m for m, n in at_twilio.items() if n > 1] == []
    assert [m for m, n in at_smtp.items() if n > 1] == []
    # Zero lost: every message is in a terminal or explained state.
    statuses = Counter(r["status"] for r in rows.values())
    assert set(statuses) <= {"sent", "unknown", "failed"}, statuses
    for message_id, r in rows.items():
        reached = {"sms": at_twilio[message_id], "email": at_smtp[message_id]}.get(
            r["channel"], int(message_id in files)
        )
        if r["status"] == "sent":
            assert reached == 1, (message_id, r["channel"])
        else:
            assert r["last_error"], message_id  # unknown or failed, with the reason
            assert reached <= 1
        if r["status"] == "sent" and r["channel"] == "sms":
            [created] = [m for m in twilio.created if sms_message_id(m) == message_id]
            assert r["provider_message_id"] == created["sid"]
    # What the providers took and the outbox agree: nothing was sent behind its back.
    assert set(at_twilio) | set(at_smtp) | files <= {
        m for m, r in rows.items() if r["status"] in ("sent", "unknown")
    }
    # Only email can end unknown (SMTP cannot be asked); at most one per crash.
    unknown = [r for r in rows.values() if r["status"] == "unknown"]
    assert all(r["channel"] == "email" for r in unknown)
    assert len(unknown) <= killed
    assert statuses["sent"] >= 1000 - killed


def test_an_sms_outage_backs_off_then_every_message_goes_once_in_order_in_the_window(
    tmp_path: Path, twilio: FakeTwilio, smtp: Recorder
) -> None:
    settings = config(
        tmp_path,
        twilio,
        smtp,
        send="concurrency = 1\nbackoff_base_seconds = 600\nbackoff_max_seconds = 600",
    )
    assert prepare(tmp_path, settings, sms=30, email_only=0, with_letter=0) == 30
    twilio.outage = True

    first = start_send(tmp_path, settings, NOW, "outage")
    assert first.wait(timeout=120) == 0

    waiting = outbox(tmp_path)
    assert twilio.created == []
    assert {r["status"] for r in waiting} == {"queued"}
    assert all(r["attempts"] == 1 and "20503" in r["last_error"] for r in waiting)
    retry_at = [datetime.fromisoformat(r["next_attempt_at"]) for r in waiting]
    # Backoff with jitter: 300-600 s later, stored on the row.
    assert all(300 <= (t.replace(tzinfo=UTC) - NOW).total_seconds() <= 600 for t in retry_at)
    # Still down and not yet time: nothing is tried.
    received = len(twilio.received)
    again = start_send(tmp_path, settings, NOW + timedelta(seconds=200), "early")
    assert again.wait(timeout=120) == 0
    assert len(twilio.received) == received

    twilio.outage = False
    recovered = NOW + timedelta(seconds=601)
    done = start_send(tmp_path, settings, recovered, "recovered")
    assert done.wait(timeout=120) == 0

    rows = outbox(tmp_path)
    assert {r["status"] for r in rows} == {"sent"}
    order = [sms_message_id(m) for m in twilio.created]
    assert order == [r["message_id"] for r in rows]  # each once, in the outbox's order
    new_york = ZoneInfo("America/New_York")
    for r in rows:
        sent = datetime.fromisoformat(r["sent_at"]).replace(tzinfo=UTC).astimezone(new_york)
        assert 8 <= sent.hour < 21  # inside the FDCPA contact window


def test_a_person_resolves_an_unknown_message_from_the_command_line(
    tmp_path: Path, twilio: FakeTwilio, smtp: Recorder
) -> None:
    settings = config(tmp_path, twilio, smtp)
    prepare(tmp_path, settings, sms=2, email_only=0, with_letter=0)
    first, second = (r["message_id"] for r in outbox(tmp_path))
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        db.execute("UPDATE message SET status = 'unknown', last_error = 'lost'")

    def resolve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dispatcher", "messages", "resolve", *args],
            cwd=tmp_path,
            env=environment(settings),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    sent = resolve(first, "--as", "sent", "--note", "in Twilio's log", "--now", NOW.isoformat())
    again = resolve(second, "--as", "resend", "--note", "not at Twilio", "--now", NOW.isoformat())
    twice = resolve(first, "--as", "resend", "--note", "changed my mind")
    wrong = resolve(second, "--as", "maybe", "--note", "x")

    assert sent.returncode == 0, sent.stderr
    assert "recorded as sent" in sent.stdout
    assert again.returncode == 0 and "queued to be sent again" in again.stdout
    assert twice.returncode == 2 and "not unknown" in twice.stderr
    assert wrong.returncode == 2 and "choose sent or resend" in wrong.stderr
    statuses = {r["message_id"]: r["status"] for r in outbox(tmp_path)}
    assert statuses == {first: "sent", second: "queued"}
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        audit = db.execute(
            "SELECT message_id, actor, detail FROM audit WHERE event = 'message_resolved'"
        ).fetchall()
    assert [(m, actor.startswith("cli:")) for m, actor, _ in audit] == [
        (first, True),
        (second, True),
    ]
    assert "in Twilio's log" in audit[0][2]
