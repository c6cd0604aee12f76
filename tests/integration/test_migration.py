"""Schema migrations on SQLite and PostgreSQL: up, down and up again, models in step with
the migrations, databases made before migrations adopted, and clear words when the
database and this dispatcher disagree about the schema."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, column, insert, inspect, select, text
from sqlalchemy import table as table_clause
from sqlmodel import SQLModel

from dispatcher.error import StoreError
from dispatcher.store import schema
from dispatcher.store.engine import build_store
from dispatcher.store.sql import ACCOUNT, AUDIT, HOLD, MESSAGE, SqlStore
from tests.pg_server import PostgresServer

NOW = datetime(2026, 6, 10, 15, 0, tzinfo=UTC)
APP_TABLES = {"account", "message", "audit", "hold"}
# What later migrations added to the tables of 0001 (columns, index names): the models
# declare them, a database adopted at 0001 gets them from those migrations.
ADDED_SINCE_INITIAL: dict[str, tuple[set[str], set[str]]] = {
    "audit": ({"seq", "prev_hash", "hash", "detail_sha256"}, {"ix_audit_seq"}),  # 0007 audit chain
    "account": (  # 0008 retention, 0010 reviews
        {"legal_hold", "legal_hold_note", "purged_at", "review_at", "review_key", "review_seq"},
        set(),
    ),
    "message": (  # 0003 delivery status
        {"delivery_status", "delivery_error", "delivery_updated_at"},
        {"ix_message_provider"},
    ),
}
# What later migrations dropped from the tables of 0001 (indexes, with their columns):
# 0001 made them, the models no longer declare them.
REMOVED_SINCE_INITIAL: dict[str, set[tuple[str, tuple[str, ...]]]] = {
    "audit": {("ix_audit_message_id", ("message_id",))},  # 0011: found by account instead
}


@pytest.fixture
def store(empty_database_url: str) -> Iterator[SqlStore]:
    built = build_store(empty_database_url)
    yield built
    built.engine.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {schema.VERSION_TABLE}


def add_account(engine: Engine, account_id: str = "A-1") -> None:
    """An account row with the columns of 0001 only (the model's later columns would
    not exist in a database that old)."""
    values = {
        "account_id": account_id,
        "full_name": "Jane Doe",
        "balance_minor": 42050,
        "currency": "USD",
        "due_date": date(2026, 6, 1),
        "timezone": "America/New_York",
        "timezone_source": "explicit",
        "locale": "en-US",
        "jurisdiction": "US",
        "status": "open",
        "dispute": False,
        "bankruptcy": True,
        "cease_and_desist": False,
        "deceased": False,
        "do_not_contact": False,
        "opt_out_sms": False,
        "opt_out_email": False,
        "cycle": 1,
        "created_at": NOW,
        "updated_at": NOW,
    }
    with engine.begin() as conn:
        columns = (column(name, ACCOUNT.c[name].type) for name in values)
        conn.execute(insert(table_clause("account", *columns)), values)


def test_upgrade_downgrade_upgrade_round_trips_through_every_revision(store: SqlStore) -> None:
    engine = store.engine
    revisions = schema.known_revisions()
    assert revisions[0] == schema.INITIAL and revisions[-1] == schema.head_revision()

    created = store.create_schema()
    assert (created.before, created.after, created.adopted) == (None, schema.head_revision(), False)
    assert tables(engine) >= APP_TABLES
    assert store.create_schema().describe().endswith("(already current)")

    # Down one revision at a time to nothing, each downgrade landing where it says.
    for expected in [*reversed(revisions[:-1]), None]:
        assert schema.downgrade(engine, "-1").after == expected
        assert schema.current_revision(engine) == expected
    assert tables(engine) == set()

    # And up one at a time again: every upgrade works on what the downgrades left.
    for revision in revisions:
        assert schema.upgrade(engine, revision).after == revision
    assert tables(engine) >= APP_TABLES
    add_account(engine)
    store.check_schema()
    assert store.account("A-1") is not None


def test_the_migrated_schema_is_exactly_what_the_models_declare(store: SqlStore) -> None:
    """The guard that keeps models and migrations in step: change a model without a
    migration (or the other way round) and this lists the difference."""
    store.create_schema()
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": schema.include_object}
        )
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []


@pytest.fixture
def reference_url(
    empty_database_url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A second empty database of the same kind as ``empty_database_url``."""
    if empty_database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'reference.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with server.database(migrated=False) as url:
        yield url


def _indexes(engine: Engine, table: str) -> set[tuple[str, tuple[str, ...]]]:
    # PostgreSQL also lists the index behind each unique constraint; that is the constraint.
    return {
        (i["name"], tuple(map(str, i["column_names"])))
        for i in inspect(engine).get_indexes(table)
        if not i.get("duplicates_constraint")
    }


def test_the_initial_migration_makes_what_create_all_made(
    store: SqlStore, reference_url: str
) -> None:
    """Columns (in order, with nullability), indexes and the unique key as ``create_all``
    made them before migrations, so a database adopted at 0001 is one 0001 would make."""
    schema.upgrade(store.engine, schema.INITIAL)
    reference = build_store(reference_url)
    SQLModel.metadata.create_all(reference.engine, tables=[ACCOUNT, MESSAGE, AUDIT, HOLD])
    migrated, made = inspect(store.engine), inspect(reference.engine)
    assert tables(store.engine) == tables(reference.engine) == APP_TABLES
    for table in sorted(APP_TABLES):
        later_columns, later_indexes = ADDED_SINCE_INITIAL.get(table, (set(), set()))
        assert [(c["name"], c["nullable"]) for c in migrated.get_columns(table)] == [
            (c["name"], c["nullable"])
            for c in made.get_columns(table)
            if c["name"] not in later_columns
        ], table
        assert _indexes(store.engine, table) == {
            i for i in _indexes(reference.engine, table) if i[0] not in later_indexes
        } | REMOVED_SINCE_INITIAL.get(table, set()), table
        assert migrated.get_pk_constraint(table) == made.get_pk_constraint(table), table
        assert [u["column_names"] for u in migrated.get_unique_constraints(table)] == [
            u["column_names"] for u in made.get_unique_constraints(table)
        ], table
        assert [
            (f["constrained_columns"], f["referred_table"])
            for f in migrated.get_foreign_keys(table)
        ] == [(f["constrained_columns"], f["referred_table"]) for f in made.get_foreign_keys(table)]
    assert [u["column_names"] for u in migrated.get_unique_constraints("message")] == [
        ["idempotency_key"]
    ]
    reference.engine.dispose()


def made_before_migrations(engine: Engine, *, without: str | None = None) -> None:
    """What a release before migrations left: the tables of 0001 (which are what its
    ``create_all`` made, see above) and no version table; ``without`` one of them."""
    schema.upgrade(engine, schema.INITIAL)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {schema.VERSION_TABLE}"))
        if without:
            conn.execute(text(f"DROP TABLE {without}"))


def test_a_database_made_before_migrations_is_stamped_then_upgraded(store: SqlStore) -> None:
    engine = store.engine
    made_before_migrations(engine)
    add_account(engine)
    with pytest.raises(StoreError, match=r"made before schema migrations.*run `dispatcher init`"):
        store.check_schema()

    migration = store.create_schema()

    assert migration.adopted and migration.before is None
    assert migration.after == schema.head_revision()
    assert "made before migrations: stamped 0001" in migration.describe()
    store.check_schema()
    account = store.account("A-1")
    assert account is not None and account.full_name == "Jane Doe"


def test_a_database_older_than_the_first_migration_is_refused_not_half_adopted(
    store: SqlStore,
) -> None:
    made_before_migrations(store.engine, without="hold")
    with pytest.raises(StoreError, match="lacks the hold table"):
        store.create_schema()
    assert schema.current_revision(store.engine) is None


def test_an_empty_database_is_told_to_run_init(store: SqlStore) -> None:
    with pytest.raises(
        StoreError, match=r"no account, audit, message table; run `dispatcher init`"
    ):
        store.check_schema()


def test_a_database_migrated_by_a_newer_dispatcher_is_refused(store: SqlStore) -> None:
    store.create_schema()
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="at migration 9999, which this dispatcher does not know"):
        store.check_schema()
    with pytest.raises(StoreError, match=r"cannot migrate the database: .*9999"):
        store.create_schema()


@pytest.fixture
def next_migration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The package's migrations plus one more (what the next real one will look like), so
    a database at today's head is one migration behind; yields the new revision."""
    head = schema.head_revision()
    revision = f"{int(head) + 1:04d}"
    copy = tmp_path / "migration"
    shutil.copytree(schema.MIGRATIONS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "versions" / f"{revision}_probe.py").write_text(
        f'"""A probe table."""\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = {revision!r}\ndown_revision = {head!r}\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n"
        '    op.create_table("probe", sa.Column("id", sa.Integer(), primary_key=True))\n'
        '    op.add_column("account", sa.Column("probe_note", sa.String(), nullable=True))\n\n\n'
        "def downgrade() -> None:\n"
        '    with op.batch_alter_table("account") as batch:\n'
        '        batch.drop_column("probe_note")\n'
        '    op.drop_table("probe")\n'
    )
    monkeypatch.setattr(schema, "MIGRATIONS", copy)
    schema._scripts.cache_clear()
    yield revision
    schema._scripts.cache_clear()


def test_a_database_behind_this_dispatcher_is_told_to_run_init_and_init_upgrades_it(
    empty_database_url: str, next_migration: str
) -> None:
    store = build_store(empty_database_url)
    previous = schema.known_revisions()[-2]
    schema.upgrade(store.engine, previous)
    add_account(store.engine)
    with pytest.raises(
        StoreError,
        match=rf"at migration {previous}, this dispatcher needs {next_migration}; "
        r"run `dispatcher init`",
    ):
        store.check_schema()

    migration = store.create_schema()

    assert (
        migration.describe() == f"schema at migration {next_migration} (upgraded from {previous})"
    )
    store.check_schema()
    assert "probe" in tables(store.engine)
    with store.engine.connect() as conn:
        assert conn.execute(select(text("probe_note")).select_from(ACCOUNT)).all() == [(None,)]
    # The new migration's downgrade keeps the data the older schema holds.
    assert schema.downgrade(store.engine, previous).after == previous
    assert "probe" not in tables(store.engine)
    assert store.account("A-1") is not None
    store.engine.dispose()


def test_upgrades_are_one_transaction_on_postgresql(
    postgres_server: PostgresServer, next_migration: str
) -> None:
    """A migration that fails half-way leaves nothing half-done on PostgreSQL (transactional
    DDL): the database stays at its revision, with none of the failed migration's tables.
    (SQLite commits each DDL statement by itself, so this holds on PostgreSQL only.)"""
    script = next(schema.MIGRATIONS.glob(f"versions/{next_migration}_*.py"))
    script.write_text(
        script.read_text().replace(
            '    op.add_column("account"',
            '    op.execute("SELECT 1/0")\n    op.add_column("account"',
        )
    )
    previous = schema.known_revisions()[-2]
    with postgres_server.database(migrated=False) as url:
        store = build_store(url)
        schema.upgrade(store.engine, previous)
        with pytest.raises(StoreError, match="cannot migrate the database: division by zero"):
            store.create_schema()
        assert schema.current_revision(store.engine) == previous
        assert "probe" not in tables(store.engine)
        store.engine.dispose()
