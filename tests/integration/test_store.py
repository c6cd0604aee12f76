"""What differs between SQLite and PostgreSQL under the store, pinned so both give the same
answers: instants across session time zones, aggregates over them, NULL ordering, empty
lists, flags, and which URLs build which engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from dispatcher.bootstrap import App
from dispatcher.error import ConfigError
from dispatcher.store.engine import build_store, database_url_of
from dispatcher.store.sql import HOLD, MESSAGE, SqlStore

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)


def account_row(account_id: str, **flags: bool) -> dict[str, object]:
    row: dict[str, object] = {
        "account_id": account_id,
        "full_name": "Jane Doe",
        "balance_minor": 42050,
        "currency": "USD",
        "due_date": date(2026, 6, 1),
        "phone": None,
        "email": None,
        "address_line1": None,
        "address_line2": None,
        "city": None,
        "region": None,
        "postal_code": None,
        "country": "US",
        "timezone": "America/New_York",
        "timezone_source": "explicit",
        "locale": "en-US",
        "jurisdiction": "US",
        "status": "open",
        "promise_to_pay_until": None,
        "assigned_to": None,
        **{
            name: False
            for name in (
                "dispute",
                "bankruptcy",
                "cease_and_desist",
                "deceased",
                "do_not_contact",
                "opt_out_sms",
                "opt_out_email",
            )
        },
    }
    row.update(flags)
    return row


def add_message(
    store: SqlStore,
    number: int,
    *,
    status: str = "queued",
    hold_reason: str | None = None,
    scheduled_for: datetime | None = None,
) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            MESSAGE.insert().values(
                message_id=f"{number:032d}",
                idempotency_key=f"A-1|{number}",
                account_id="A-1",
                cycle=1,
                stage="early",
                step=f"day{number}",
                channel="sms",
                status=status,
                hold_reason=hold_reason,
                dpd=1,
                scheduled_for=scheduled_for,
                created_at=NOW,
                updated_at=NOW,
            )
        )


@pytest.fixture
def store(app: App) -> SqlStore:
    app.store.upsert_accounts([account_row("A-1")], NOW)
    return app.store


def test_instants_come_back_as_the_same_instant_in_utc(store: SqlStore) -> None:
    shanghai = timezone(timedelta(hours=8))
    add_message(store, 1, scheduled_for=datetime(2026, 6, 11, 9, 30, tzinfo=shanghai))
    [m] = store.messages_of("A-1")
    assert m["scheduled_for"] == datetime(2026, 6, 11, 1, 30, tzinfo=UTC)
    assert m["scheduled_for"].utcoffset() == timedelta(0)


def test_the_earliest_waiting_message_is_an_aware_utc_instant(store: SqlStore) -> None:
    add_message(store, 1, scheduled_for=NOW + timedelta(hours=5))
    add_message(store, 2, scheduled_for=NOW + timedelta(hours=2, microseconds=7))
    add_message(store, 3, scheduled_for=NOW - timedelta(hours=1))  # due, not waiting
    add_message(store, 4, status="held", hold_reason="quiet_hours", scheduled_for=NOW)

    count, earliest = store.waiting(NOW)

    assert count == 2
    assert earliest == NOW + timedelta(hours=2, microseconds=7)
    assert earliest is not None and earliest.utcoffset() == timedelta(0)


def test_status_counts_put_no_hold_reason_first_on_both_databases(store: SqlStore) -> None:
    add_message(store, 1, status="held", hold_reason="quiet_hours")
    add_message(store, 2, status="held", hold_reason=None)
    add_message(store, 3, status="held", hold_reason="holiday")

    reasons = [reason for _stage, _channel, _status, reason, _n in store.status_counts()]

    assert reasons == [None, "holiday", "quiet_hours"]


def test_empty_lists_of_ids_find_nothing_instead_of_failing(store: SqlStore) -> None:
    assert store.accounts([]) == {}
    assert store.existing_messages([]) == {}
    assert store.contacts([], NOW, []) == []


def test_flags_round_trip_and_an_import_flag_places_a_hold(store: SqlStore) -> None:
    store.upsert_accounts([account_row("A-1", bankruptcy=True, opt_out_sms=True)], NOW)
    account = store.account("A-1")
    assert account is not None
    assert {flag.value for flag in account.flags} == {"bankruptcy", "opt_out_sms"}
    with store.engine.connect() as conn:
        reasons = set(conn.execute(select(HOLD.c.reason)).scalars())
    assert reasons == {"bankruptcy", "opted_out_sms"}


@pytest.fixture
def far_east_session(database_url: str) -> Iterator[SqlStore]:
    """The store seen through a PostgreSQL session whose time zone is not UTC (a server
    configured for local time); SQLite has no session time zone."""
    url = database_url_of(database_url)
    if url.get_backend_name() == "postgresql":
        url = url.update_query_dict({"options": "-c timezone=Asia/Tokyo"})
    built = build_store(url.render_as_string(hide_password=False))
    if url.get_backend_name() == "postgresql":
        with built.engine.connect() as conn:
            assert conn.execute(text("SHOW timezone")).scalar_one() == "Asia/Tokyo"
    yield built
    built.engine.dispose()


def test_a_session_time_zone_does_not_leak_into_instants(
    app: App, far_east_session: SqlStore
) -> None:
    app.store.upsert_accounts([account_row("A-1")], NOW)
    add_message(app.store, 1, scheduled_for=NOW + timedelta(hours=1))
    [m] = far_east_session.messages_of("A-1")
    assert m["scheduled_for"] == NOW + timedelta(hours=1)
    assert m["scheduled_for"].tzinfo == UTC
    _count, earliest = far_east_session.waiting(NOW)
    assert earliest is not None and earliest.tzinfo == UTC


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:p@db.example:5432/dispatcher", "postgresql+psycopg"),
        ("postgres://u@db.example/dispatcher", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db.example/dispatcher", "postgresql+psycopg"),
        ("sqlite:///var/dispatcher.db", "sqlite"),
    ],
    ids=["plain", "short-scheme", "explicit-driver", "file"],
)
def test_database_urls_map_to_the_drivers_we_ship(given: str, driver: str) -> None:
    url = database_url_of(given)
    assert url.drivername == driver
    assert url.database == make_url(given).database


def test_other_databases_are_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="database_url: 'mysql': only sqlite and postgresql"):
        build_store("mysql://u@db.example/dispatcher")
    with pytest.raises(ConfigError, match="database_url: not a database URL"):
        build_store("not a url")
