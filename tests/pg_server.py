"""A throwaway PostgreSQL server for the test session, and a fresh database per test.

The session starts its own cluster (``initdb`` in a temporary directory, trust auth, no
durability: fsync, synchronous_commit and full_page_writes off), listening on 127.0.0.1
on a free port with its socket in the same directory, and stops it at the end. Each test
gets a database copied from a template that was migrated once (``CREATE DATABASE ...
TEMPLATE``: a few milliseconds, where migrating would repeat the DDL every time).

PostgreSQL refuses to run as root: as root (CI) the server runs as the ``postgres`` user
that the Debian package creates. ``DISPATCHER_TEST_POSTGRES_URL`` (a superuser URL, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``) uses that server instead. Without the
binaries the PostgreSQL tests fail, saying how to get them: a skipped half of the suite
would read as a pass. ``pytest -k "not postgresql"`` runs the SQLite half alone.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url

from dispatcher.bootstrap import build_store

URL_VARIABLE = "DISPATCHER_TEST_POSTGRES_URL"
SERVER_USER = "postgres"  # the OS user that runs the server when we are root
SUPERUSER = "postgres"  # the cluster's superuser, whoever runs it (initdb -U)
TEMPLATE = f"dispatcher_template_{os.getpid()}"


def find_bin_dir() -> Path | None:
    """Where initdb, pg_ctl and postgres are: Debian's versioned directory (newest first),
    else PATH."""
    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(initdb).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalCluster:
    """A cluster in a temporary directory, run as the current user, or as ``postgres``
    when the current user is root."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="dispatcher-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root, PostgreSQL needs the OS user {SERVER_USER!r} "
                    "(apt-get install postgresql creates it)"
                ) from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = (
                ["runuser", "-u", SERVER_USER, "--"]
                if shutil.which("runuser")
                else [
                    "setpriv",
                    f"--reuid={user.pw_uid}",
                    f"--regid={user.pw_gid}",
                    "--init-groups",
                ]
            )

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        command = [*self._as, str(self.bin_dir / tool), *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}{log}"
            )

    def start(self) -> URL:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.root}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ]
        self._options = options
        for attempt in itertools.count(1):
            # A free port may be taken between probing and binding: try a few.
            self.port = free_port()
            try:
                self._start()
                break
            except RuntimeError:
                if attempt == 3:
                    raise
        return URL.create(
            "postgresql+psycopg",
            username=SUPERUSER,
            host="127.0.0.1",
            port=self.port,
            database="postgres",
        )

    def _start(self) -> None:
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            " ".join([f"-p {self.port}", *self._options]),
            timeout=90,
        )

    def shut_down(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: every session is cut, as in a restart or failover),
        keeping its data, so :meth:`start_again` brings it back on the same port."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", timeout=60)

    def start_again(self) -> None:
        self._start()

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    def __init__(self, admin_url: URL) -> None:
        self.admin_url = admin_url
        self._admin: Engine = create_engine(
            admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True
        )
        self._names = itertools.count(1)
        self._template_ready = False

    def url(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def _execute(self, sql: str) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(sql))

    def _template(self) -> str:
        """A database migrated to head once per session, copied for every test."""
        if not self._template_ready:
            self._execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
            self._execute(f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0')
            store = build_store(self.url(TEMPLATE))
            try:
                store.create_schema()
            finally:
                store.engine.dispose()  # a template must have no connections to be copied
            self._template_ready = True
        return TEMPLATE

    @contextmanager
    def database(self, *, migrated: bool = True) -> Iterator[str]:
        """A database of its own (at head, or empty), dropped afterwards; yields its URL."""
        name = f"dispatcher_test_{os.getpid()}_{next(self._names)}"
        template = self._template() if migrated else "template0"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        try:
            yield self.url(name)
        finally:
            # FORCE: a test that leaked a connection must not keep its database alive.
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        if self._template_ready:
            self._execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        self._admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL: the one ``DISPATCHER_TEST_POSTGRES_URL`` names, else our own."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        url = make_url(given)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        server = PostgresServer(url)
        yield server
        server.close()
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail(
            "PostgreSQL is needed for the [postgresql] tests and its server binaries "
            "(initdb, pg_ctl, postgres) are not under /usr/lib/postgresql/*/bin or on PATH. "
            "`./dev test` installs them (Debian package postgresql); or set "
            f"{URL_VARIABLE} to a superuser URL of a running server; "
            'or run the SQLite half alone with -k "not postgresql".',
            pytrace=False,
        )
    cluster = LocalCluster(bin_dir)
    try:
        server = PostgresServer(cluster.start())
        try:
            yield server
        finally:
            server.close()
    finally:
        cluster.stop()
