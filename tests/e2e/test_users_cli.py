"""`dispatcher users`: the first admin from the command line, passwords never as arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dispatcher.bootstrap import bootstrap
from dispatcher.domain.access import LoginLimits, Role
from dispatcher.service import login
from dispatcher.settings import load_settings
from tests.e2e.test_cli import run, settings_file

SECRET = "first admin password 91x"
LIMITS = LoginLimits(5, 50, timedelta(minutes=15))


def users(
    tmp_path: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", "users", *args],
        cwd=tmp_path,
        env={
            **os.environ,
            "DISPATCHER_CONFIG": str(settings_file(tmp_path)),
            "COLUMNS": "200",
            **(env or {}),
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_first_admin_is_made_with_the_password_on_stdin(tmp_path: Path) -> None:
    assert run(tmp_path, "init").returncode == 0
    made = users(tmp_path, "add", "root-admin", "--role", "admin", stdin=SECRET + "\n")
    assert made.returncode == 0, made.stderr
    assert "user root-admin added (admin)" in made.stdout
    app = bootstrap(load_settings(settings_file(tmp_path)))
    now = datetime.now(UTC)
    logged = login.log_in(app.users, "root-admin", SECRET, client="t", now=now, limits=LIMITS)
    assert isinstance(logged, login.LoggedIn)
    assert logged.user.roles == {Role.ADMIN}
    # The password is nowhere but in its hash: not in the output, not in the audit log.
    audit = app.store.engine.connect().exec_driver_sql("SELECT detail, actor FROM audit")
    assert all(SECRET not in str(row) for row in audit)
    assert SECRET not in made.stdout + made.stderr
    app.store.engine.dispose()


def test_passwords_come_from_a_variable_or_a_secret_file(tmp_path: Path) -> None:
    assert run(tmp_path, "init").returncode == 0
    by_env = users(
        tmp_path,
        "add",
        "cora",
        "--role",
        "compliance",
        "--role",
        "auditor",
        "--password-env",
        "NEW_PASSWORD",
        env={"NEW_PASSWORD": SECRET},
    )
    assert by_env.returncode == 0, by_env.stderr
    secret_file = tmp_path / "colin.secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    by_file = users(
        tmp_path, "add", "colin", "--role", "collector", "--password-file", str(secret_file)
    )
    assert by_file.returncode == 0, by_file.stderr
    listed = users(tmp_path, "list")
    assert "auditor,compliance" in listed.stdout and "colin" in listed.stdout


def test_bad_users_are_refused_with_one_line(tmp_path: Path) -> None:
    assert run(tmp_path, "init").returncode == 0
    short = users(tmp_path, "add", "x", "--role", "admin", stdin="short\n")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    unknown = users(tmp_path, "add", "x", "--role", "root", stdin=SECRET + "\n")
    assert unknown.returncode == 2 and "unknown role 'root'" in unknown.stderr
    assert users(tmp_path, "add", "x", "--role", "ops", stdin=SECRET + "\n").returncode == 0
    twice = users(tmp_path, "add", "x", "--role", "ops", stdin=SECRET + "\n")
    assert twice.returncode == 2 and "exists already" in twice.stderr
    assert users(tmp_path, "roles", "x", "--role", "auditor").returncode == 0
    assert users(tmp_path, "disable", "x").returncode == 0
    app = bootstrap(load_settings(settings_file(tmp_path)))
    now = datetime.now(UTC)
    refused = login.log_in(app.users, "x", SECRET, client="t", now=now, limits=LIMITS)
    assert refused is login.Refusal.WRONG  # disabled: the right password opens nothing
    app.store.engine.dispose()
