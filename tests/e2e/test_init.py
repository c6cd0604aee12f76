"""`dispatcher init` on SQLite and PostgreSQL, as ops run it: the database named by
``DISPATCHER_DATABASE_URL``, the migration it ends at, and the other commands refusing a
database that init has not brought up to date."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from dispatcher.bootstrap import build_store
from dispatcher.store.schema import head_revision
from dispatcher.store.sql import ACCOUNT, AUDIT, HOLD, MESSAGE
from tests.e2e.test_cli import NOW, settings_file
from tests.integration.test_migration import made_before_migrations

PASSWORD = "s3cret-Passw0rd"  # trust auth ignores it; init must not print it


def as_ops_give_it(url: str) -> str:
    """The URL as a platform hands it over: bare ``postgresql://``, with a password."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url
    bare = parsed.set(drivername="postgresql", password=PASSWORD)
    return bare.render_as_string(hide_password=False)


def dispatcher(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DISPATCHER_CONFIG": str(settings_file(tmp_path)),
        "DISPATCHER_DATABASE_URL": database_url,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_init_creates_the_schema_reports_its_migration_and_hides_the_password(
    tmp_path: Path, empty_database_url: str
) -> None:
    url = as_ops_give_it(empty_database_url)
    refused = dispatcher(tmp_path, url, "plan", "--now", NOW.isoformat())
    assert refused.returncode == 2 and "run `dispatcher init`" in refused.stderr

    first = dispatcher(tmp_path, url, "init")

    assert first.returncode == 0, first.stderr
    assert "database ready: " in first.stdout
    assert f"schema at migration {head_revision()} (created)" in first.stdout
    assert PASSWORD not in first.stdout + first.stderr
    planned = dispatcher(tmp_path, url, "plan", "--now", NOW.isoformat())
    assert planned.returncode == 0, planned.stderr


def test_init_adopts_a_database_made_before_migrations(
    tmp_path: Path, empty_database_url: str
) -> None:
    store = build_store(empty_database_url)
    made_before_migrations(store.engine, [ACCOUNT, MESSAGE, AUDIT, HOLD])
    store.engine.dispose()
    refused = dispatcher(tmp_path, empty_database_url, "plan", "--now", NOW.isoformat())
    assert refused.returncode == 2
    assert "made before schema migrations" in refused.stderr
    assert "run `dispatcher init`" in refused.stderr

    adopted = dispatcher(tmp_path, empty_database_url, "init")

    assert adopted.returncode == 0, adopted.stderr
    assert (
        f"schema at migration {head_revision()} "
        f"(made before migrations: stamped 0001, upgraded to {head_revision()})"
    ) in adopted.stdout
    planned = dispatcher(tmp_path, empty_database_url, "plan", "--now", NOW.isoformat())
    assert planned.returncode == 0, planned.stderr
