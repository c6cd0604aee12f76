"""Locks that let several `dispatcher serve` processes share one database safely.

PostgreSQL: any number of instances; planning is done by one at a time, elected with a
session advisory lock (:class:`PlanningLock`). The lock lives on its own connection, so
an instance that dies (or loses its connection) frees it, and another takes over at its
next tick. SQLite is the single-machine default: a second instance on the same file is
refused by an OS file lock (:class:`InstanceLock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError

from dispatcher.error import StoreError

# pg_advisory_lock key of the planning lock: any fixed 64-bit number unique to us.
PLANNING_LOCK_KEY = 0x6469737061746368  # "dispatch"


class PlanningLock:
    """Which instance plans: held across ticks by the instance that won it.

    ``acquire()`` is called at every planning tick. The winner keeps the lock (and its
    connection) until it stops or dies; the others get False and skip the run. On SQLite
    the instance lock already guarantees one planner, so the lock is always granted.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self.held = False

    def acquire(self) -> bool:
        if not self._postgres:
            self.held = True
            return True
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
            conn = self._conn
            got = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": PLANNING_LOCK_KEY}
                ).scalar_one()
            )
            if got and self.held:
                # Advisory locks count re-entries; keep the count at one.
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PLANNING_LOCK_KEY})
            conn.commit()
        except DBAPIError:
            # The connection (and with it the lock) is gone: try afresh next tick.
            self._drop()
            return False
        self.held = got
        return got

    def release(self) -> None:
        if self._conn is not None and self.held:
            # A lost connection has released it already.
            with contextlib.suppress(DBAPIError):
                self._conn.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": PLANNING_LOCK_KEY}
                )
                self._conn.commit()
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.close()
        self._conn = None
        self.held = False


class InstanceLock:
    """One `serve` per SQLite file: an exclusive OS lock on ``<database>.serve.lock``.

    The OS drops the lock when the process dies, so a crash never leaves a stale lock.
    PostgreSQL needs no instance lock (instances coordinate in the database).
    """

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.path: Path | None = None
        self.database = url.database or ""
        if url.get_backend_name() == "sqlite" and self.database not in ("", ":memory:"):
            self.path = Path(f"{self.database}.serve.lock")
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise StoreError naming the process that has it."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StoreError(
                f"another `dispatcher serve` (pid {holder}) is running on this SQLite "
                f"database ({self.database}); SQLite is for "
                f"one instance — use PostgreSQL to run several"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
