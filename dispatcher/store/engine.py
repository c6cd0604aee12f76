"""The engine for a database URL: built at start-up (bootstrap) and by each plan worker
process when it starts, and nowhere else."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dispatcher.error import ConfigError
from dispatcher.store.sql import SqlStore, configure_sqlite

__all__ = ["build_store", "database_url_of"]


def database_url_of(database_url: str) -> URL:
    """Parse ``database_url``; a bare ``postgresql://`` (or ``postgres://``) means psycopg 3.

    The driver we install is psycopg 3, while SQLAlchemy reads a bare ``postgresql://`` as
    psycopg2, which is not there; URLs handed over by platforms and ops are usually bare.
    """
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigError("settings", "database_url", "not a database URL") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def build_store(database_url: str, *, busy_timeout_seconds: float = 10.0) -> SqlStore:
    """Create the engine for ``database_url``; SQLite gets WAL, the busy timeout and its
    directory made."""
    url = database_url_of(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        configure_sqlite(engine, busy_timeout_ms=round(busy_timeout_seconds * 1000))
    elif backend == "postgresql":
        engine = create_engine(url, pool_pre_ping=True)
    else:
        raise ConfigError(
            "settings", "database_url", f"{backend!r}: only sqlite and postgresql are supported"
        )
    return SqlStore(engine, busy_timeout_seconds=busy_timeout_seconds)
