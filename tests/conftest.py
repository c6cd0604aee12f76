"""Shared fixtures: a real database per test, wired through the real bootstrap.

Tests of the store, planner, sender and the whole pipeline run twice, on a SQLite file
and on a PostgreSQL database of their own (ids ``[sqlite]`` and ``[postgresql]``), through
the ``database_url`` fixture that ``app`` builds on. Tests about SQLite itself (simulate
copies the file; the CLI end-to-end tests use the default SQLite settings) stay SQLite.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from dispatcher.account_file import COLUMNS
from dispatcher.bootstrap import App, bootstrap
from dispatcher.channel.memory import MemoryChannel
from dispatcher.domain.strategy import ChannelKind
from dispatcher.settings import AuditSettings, Settings, SinkSettings
from tests.factory import ROOT

if TYPE_CHECKING:
    from tests.pg_server import PostgresServer

# The session's PostgreSQL server (a plugin, not an import, so pytest rewrites its asserts).
pytest_plugins = ["tests.pg_server"]

DATABASES = ("sqlite", "postgresql")

# Property tests: CI runs a fixed, derandomised profile so a red build is reproducible;
# HYPOTHESIS_PROFILE=long runs many more examples by hand.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def write_csv(path: Path, rows: Iterable[Mapping[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(dict(row))
    return path


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'dispatcher.db'}"


def settings_for(tmp_path: Path, database_url: str | None = None) -> Settings:
    """Settings for a test: the repository's templates and config, sinks under
    ``tmp_path``, and ``database_url`` (a SQLite file in ``tmp_path`` when not given)."""
    return Settings(
        database_url=database_url or sqlite_url(tmp_path),
        templates_dir=ROOT / "templates",
        strategy_file=ROOT / "config" / "strategy.toml",
        policies_dir=ROOT / "config" / "policies",
        sinks=SinkSettings(directory=tmp_path / "sink"),
        audit=AuditSettings(anchor_file=tmp_path / "audit-anchors.jsonl"),
    )


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's own on each database we support, as a URL.

    PostgreSQL's database is already at the newest migration (copied from a migrated
    template), so ``create_schema()`` on it only confirms that. The server is asked for
    only here, so a run of SQLite tests alone never starts one.
    """
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.database() as url:
        yield url


@pytest.fixture(params=DATABASES)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Like ``database_url`` but with no schema at all: for migration and ``init`` tests."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.database(migrated=False) as url:
        yield url


@pytest.fixture
def channels() -> dict[ChannelKind, MemoryChannel]:
    return {kind: MemoryChannel() for kind in ChannelKind}


@pytest.fixture
def app(
    tmp_path: Path, database_url: str, channels: dict[ChannelKind, MemoryChannel]
) -> Iterator[App]:
    wired = bootstrap(settings_for(tmp_path, database_url), channels=channels)
    wired.store.create_schema()
    wired.catalog.bootstrap(datetime.now(UTC))  # what `dispatcher init` does
    yield wired
    wired.store.engine.dispose()  # before the database is dropped
