"""`dispatcher serve` as ops run it: a real process, real signals, real HTTP.

Each test starts the service in a subprocess on a free loopback port with ``--now`` (the
clock starts at a weekday noon in New York and runs at real pace) and talks to it the way
systemd, a load balancer and Prometheus would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import write_csv
from tests.e2e.test_cli import run, settings_file
from tests.factory import ROOT
from tests.fake_twilio import FakeTwilio
from tests.integration.test_pipeline import row

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)  # Wednesday 11:00 in New York
SID = "AC" + "0" * 32
TOKEN = "serve-test-token-7f3a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running `dispatcher serve` and what it logged."""

    process: subprocess.Popen[str]
    port: int
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url(path), timeout=5)

    def events(self) -> list[dict[str, object]]:
        """The structured log lines (JSON) the service wrote so far."""
        found = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return found

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.events():
                if entry.get("event") == event:
                    return entry
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} in the log:\n{self.log.read_text()}")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.log.read_text()}")
            try:
                if self.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"never ready:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def serve_config(tmp_path: Path, port: int, extra: str = "", serve_extra: str = "") -> Path:
    config = settings_file(tmp_path, extra)
    with config.open("a", encoding="utf-8") as handle:
        handle.write(
            f"[serve]\nport = {port}\nsend_idle_seconds = 0.1\ngrace_seconds = 20\n"
            f'pid_file = "{tmp_path / "serve.pid"}"\n{serve_extra}\n'
        )
    return config


def start(
    tmp_path: Path, config: Path, port: int, env: dict[str, str] | None = None, name: str = "serve"
) -> Served:
    log = tmp_path / f"{name}.log"
    handle = log.open("w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatcher", "serve", "--now", NOW.isoformat()],
        cwd=tmp_path,
        env={
            **os.environ,
            "DISPATCHER_CONFIG": str(config),
            "DISPATCHER_TWILIO__AUTH_TOKEN": TOKEN,
            **(env or {}),
        },
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Served(process, port, log)


def accounts(tmp_path: Path, n: int) -> Path:
    """``n`` accounts one day past due, each its own person (own phone and email)."""
    return write_csv(
        tmp_path / "accounts.csv",
        [row(f"S-{i:04d}", "2026-06-09", phone=f"+1617555{1000 + i:04d}") for i in range(n)],
    )


def loaded(tmp_path: Path, config: Path, n: int) -> None:
    assert run(tmp_path, "init", config=config).returncode == 0
    done = run(tmp_path, "import", "accounts", str(accounts(tmp_path, n)), config=config)
    assert done.returncode == 0, done.stderr


def statuses(tmp_path: Path) -> Counter[str]:
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        return Counter(s for (s,) in db.execute("SELECT status FROM message"))


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    server = FakeTwilio(account_sid=SID, auth_token=TOKEN).start()
    yield server
    server.stop()


def twilio_settings(fake: FakeTwilio) -> str:
    return (
        f'[twilio]\naccount_sid = "{SID}"\nmessaging_service_sid = "MG{"1" * 32}"\n'
        f'base_url = "{fake.base_url}"\n'
    )


def test_serve_plans_sends_and_reports_health_and_metrics(tmp_path: Path) -> None:
    port = free_port()
    config = serve_config(tmp_path, port)
    loaded(tmp_path, config, 5)
    served = start(tmp_path, config, port)
    try:
        served.wait_ready()
        assert served.get("/healthz").json()["status"] == "ok"
        ready = served.get("/readyz").json()
        assert ready["ready"] is True and ready["checks"]["database"] == "ok"
        # The missed plan was caught up once at start, and the send loop delivered it.
        deadline = time.monotonic() + 30
        while statuses(tmp_path)["sent"] < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert statuses(tmp_path)["sent"] == 5
        text = served.get("/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families, text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values()
            for s in f.samples
        }
        outcome = (("channel", "sms"), ("outcome", "sent"))
        assert samples[("dispatcher_send_outcomes_total", outcome)] == 5
        stored = (("channel", "sms"), ("status", "sent"))
        assert samples[("dispatcher_outbox_messages", stored)] == 5
    finally:
        assert served.stop() == 0
    assert served.wait_for("service_stopped")
    assert not (tmp_path / "serve.pid").exists()


def test_a_second_instance_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    port = free_port()
    config = serve_config(tmp_path, port)
    loaded(tmp_path, config, 1)
    first = start(tmp_path, config, port)
    try:
        first.wait_ready()
        second = start(tmp_path, serve_config(tmp_path, free_port()), port, name="second")
        assert second.process.wait(timeout=60) == 2
        message = second.log.read_text(encoding="utf-8")
        assert "another `dispatcher serve`" in message and str(first.process.pid) in message
        assert first.process.poll() is None
    finally:
        assert first.stop() == 0


def test_sigterm_in_the_middle_of_a_batch_loses_and_duplicates_nothing(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    fake.default_delay = 0.15  # a slow provider: the batch is still in flight at SIGTERM
    port = free_port()
    config = serve_config(tmp_path, port)
    loaded(tmp_path, config, 30)
    config.write_text(
        config.read_text().replace("[sinks]\n", '[sinks]\nsms = "twilio"\n')
        + twilio_settings(fake)
        + "[send]\nconcurrency = 2\nbatch_size = 10\n",
        encoding="utf-8",
    )
    served = start(tmp_path, config, port)
    deadline = time.monotonic() + 60
    while len(fake.received) < 3 and time.monotonic() < deadline:
        assert served.process.poll() is None, served.log.read_text()
        time.sleep(0.02)
    assert served.stop() == 0, served.log.read_text()
    after_stop = statuses(tmp_path)
    # The batch in hand finished and was recorded; nothing was left half-sent.
    assert after_stop["sending"] == 0
    assert 0 < after_stop["sent"] < 30
    assert after_stop["sent"] == len(fake.created)
    # A restart delivers the rest: every message exactly once.
    served = start(tmp_path, config, port, name="restart")
    deadline = time.monotonic() + 60
    while statuses(tmp_path)["sent"] < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.stop() == 0
    assert statuses(tmp_path) == Counter({"sent": 30})
    recipients = Counter(r.form["To"] for r in fake.received)
    assert len(recipients) == 30 and set(recipients.values()) == {1}


def test_sighup_with_a_broken_template_keeps_the_old_configuration(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    subprocess.run(["cp", "-r", str(ROOT / "templates"), str(templates)], check=True)
    port = free_port()
    config = serve_config(tmp_path, port)
    config.write_text(
        config.read_text().replace(
            f'templates_dir = "{ROOT / "templates"}"',
            f'templates_dir = "{templates}"',
        ),
        encoding="utf-8",
    )
    loaded(tmp_path, config, 1)
    served = start(tmp_path, config, port)
    try:
        served.wait_ready()
        # A good change is taken ...
        served.process.send_signal(signal.SIGHUP)
        served.wait_for("config_reloaded")
        # ... a broken one is refused, with the file and line, and the service stays up.
        sms = templates / "sms" / "early_day1.en-US.txt.j2"
        sms.write_text(sms.read_text() + "\n{{ account.nope( }}\n", encoding="utf-8")
        reload = run(tmp_path, "reload", config=config)
        assert reload.returncode == 0, reload.stderr
        refused = served.wait_for("config_reload_refused")
        assert "early_day1.en-US.txt.j2" in str(refused["error"])
        assert served.get("/readyz").status_code == 200
        assert served.process.poll() is None
    finally:
        assert served.stop() == 0
