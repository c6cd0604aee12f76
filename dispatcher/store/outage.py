"""Database outages: which errors pass (a restarted server, a write lock held elsewhere),
how they are told to people, and the bounded retry of whole idempotent runs.

A PostgreSQL restart cuts every connection (``terminating connection due to administrator
command``, then ``connection refused`` while it is down); a second SQLite writer makes
ours wait ``database.busy_timeout_seconds`` and then fail with ``database is locked``.
Both pass. What we retry is a whole run (a plan, a send pass, an import), never a single
statement: every batch commits on its own, and a run started again reads what committed
and decides only what has no record yet (idempotency keys, upserts), so a commit whose
answer was lost in the outage is neither repeated nor missed. A message interrupted at
its provider stays ``sending`` and is reconciled after its lease, never resent blindly.

After the last attempt the error is a :class:`StoreUnavailable` naming the database (its
file, or its URL without password) and what failed: one line for a person, no traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from dispatcher.error import StoreError

T = TypeVar("T")

log = structlog.get_logger("dispatcher.store")


class StoreUnavailable(StoreError):
    """The database did not answer, or kept its write lock, through every retry."""


def database_name(engine: Engine) -> str:
    """The database as a person names it: the SQLite file, or the URL without password."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return str(url.database or ":memory:")
    return url.render_as_string(hide_password=True)


def is_outage(exc: BaseException) -> bool:
    """An error that passes by itself: a lost or refused connection, a held write lock.

    Not an outage: a full disk on SQLite, a missing table, a constraint violated; those
    are failures to report at once.
    """
    if isinstance(exc, StoreUnavailable):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    if "sqlite" in type(exc.orig).__module__:
        return "database is locked" in text or "database is busy" in text
    module = type(exc.orig).__module__
    # psycopg's OperationalError: connection refused or cut, server starting or shutting
    # down (57P01/57P03), too many connections. The class, not the wording, decides.
    return (
        exc.orig is not None and module.startswith("psycopg") and _is_psycopg_operational(exc.orig)
    )


def _is_psycopg_operational(orig: BaseException) -> bool:
    import psycopg  # only PostgreSQL errors get here

    return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)


def describe(exc: BaseException, engine: Engine, doing: str) -> str:
    """One line: what failed, on which database, and why (the driver's first line)."""
    if isinstance(exc, StoreUnavailable):
        return str(exc)
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    where = database_name(engine)
    if "database is locked" in reason.lower():
        return (
            f"{doing}: database {where} is locked by another connection or process "
            f"(waited its busy timeout): {reason}"
        )
    return f"{doing}: database {where} unavailable: {reason}"


def retrying(
    call: Callable[[], T],
    *,
    engine: Engine,
    doing: str,
    attempts: int,
    max_wait: float,
    sleep: Callable[[float], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> T:
    """Run ``call`` (a whole idempotent run); on an outage, log one line and run it again,
    up to ``attempts`` times with exponential waits up to ``max_wait`` seconds; then raise
    :class:`StoreUnavailable` naming the database and what failed.

    ``notify`` gets each retry as one line (the CLI prints it on stderr); without it the
    retry is logged as ``database_unavailable`` (the service's structured log).
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        what = describe(error, engine, doing) if error else doing
        wait = round(state.upcoming_sleep, 1)
        if notify is not None:
            notify(
                f"warning: {what}; retrying in {wait}s "
                f"(attempt {state.attempt_number} of {attempts})"
            )
            return
        log.warning(
            "database_unavailable",
            doing=doing,
            error=what,
            attempt=state.attempt_number,
            attempts=attempts,
            retry_in_seconds=wait,
        )

    kwargs: dict[str, object] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    retry = Retrying(
        retry=retry_if_exception(is_outage),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=max_wait),
        before_sleep=before_sleep,
        reraise=True,
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        return retry(call)
    except StoreUnavailable as exc:
        raise StoreUnavailable(f"{exc} (gave up after {attempts} attempts)") from None
    except DBAPIError as exc:
        if is_outage(exc):
            raise StoreUnavailable(
                f"{describe(exc, engine, doing)} (gave up after {attempts} attempts)"
            ) from None
        raise
