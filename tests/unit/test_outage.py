"""Which database errors are outages, how they are told, and the bounded retry of a run
(dispatcher/store/outage.py). The real outages are in tests/e2e/test_outage.py and
tests/e2e/test_database_lock.py; here the decisions, table-driven."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import IntegrityError, OperationalError

from dispatcher.store.outage import StoreUnavailable, describe, is_outage, retrying

SQLITE = create_engine("sqlite:////var/lib/dispatcher/dispatcher.db")
POSTGRES = create_engine("postgresql+psycopg://ops:s3cret@db.example:5432/dispatcher")


def wrapped(orig: Exception, *, invalidated: bool = False) -> OperationalError:
    return OperationalError("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (wrapped(sqlite3.OperationalError("database is locked")), True),
        (wrapped(sqlite3.OperationalError("no such table: message")), False),
        (wrapped(sqlite3.OperationalError("database or disk is full")), False),
        (wrapped(psycopg.OperationalError("connection refused")), True),
        (wrapped(psycopg.errors.AdminShutdown("terminating connection")), True),
        (wrapped(psycopg.DatabaseError("server closed"), invalidated=True), True),
        (IntegrityError("INSERT", {}, psycopg.IntegrityError("duplicate key")), False),
        (ValueError("not a database error"), False),
        (StoreUnavailable("already told"), True),
    ],
)
def test_which_errors_are_outages(error: Exception, outage: bool) -> None:
    assert is_outage(error) is outage


def test_the_message_names_the_database_never_the_password() -> None:
    locked = describe(wrapped(sqlite3.OperationalError("database is locked")), SQLITE, "plan")
    assert locked.startswith("plan: database /var/lib/dispatcher/dispatcher.db is locked by")
    down = describe(wrapped(psycopg.OperationalError("refused\nmore")), POSTGRES, "send")
    where = "postgresql+psycopg://ops:***@db.example:5432/dispatcher"
    assert down == f"send: database {where} unavailable: refused"
    assert "s3cret" not in down


def test_an_outage_is_retried_then_given_up_with_one_clear_error() -> None:
    calls: list[int] = []
    told: list[str] = []
    slept: list[float] = []

    def run() -> int:
        calls.append(1)
        raise wrapped(sqlite3.OperationalError("database is locked"))

    with pytest.raises(StoreUnavailable, match=r"is locked .* \(gave up after 4 attempts\)$"):
        retrying(
            run,
            engine=SQLITE,
            doing="plan",
            attempts=4,
            max_wait=1.0,
            sleep=slept.append,
            notify=told.append,
        )
    assert len(calls) == 4 and len(told) == 3
    assert slept == [0.5, 1.0, 1.0]  # doubling, capped at max_wait
    assert told[0].startswith("warning: plan: database /var/lib/dispatcher/dispatcher.db is locked")
    assert told[0].endswith("retrying in 0.5s (attempt 1 of 4)")


def test_a_run_that_recovers_returns_its_result_and_other_errors_are_not_retried() -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise wrapped(psycopg.OperationalError("the database system is starting up"))
        return "planned"

    assert (
        retrying(
            flaky,
            engine=POSTGRES,
            doing="plan",
            attempts=5,
            max_wait=1,
            sleep=lambda s: None,
            notify=lambda line: None,
        )
        == "planned"
    )
    assert len(attempts) == 3

    broken: list[int] = []

    def no_table() -> None:
        broken.append(1)
        raise wrapped(sqlite3.OperationalError("no such table: message"))

    with pytest.raises(OperationalError):
        retrying(
            no_table, engine=SQLITE, doing="plan", attempts=5, max_wait=1, sleep=lambda s: None
        )
    assert len(broken) == 1
