"""Web pages: users with argon2 password hashes and roles, server-side sessions, and the
login attempts the rate limit counts (rules HR-31..HR-33); and the account search index
(dispatcher/store/search.py): on SQLite an FTS5 trigram table over the account's id,
name, email and phone kept in step by triggers, on PostgreSQL pg_trgm GIN indexes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_user",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("roles", sa.String(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("password_changed_at", _utc(), nullable=False),
        sa.Column("disabled_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "web_session",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("last_seen_at", _utc(), nullable=False),
        sa.Column("client", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["web_user.id"]),
        sa.PrimaryKeyConstraint("token_sha256"),
    )
    op.create_index("ix_web_session_user", "web_session", ["user_id"])
    op.create_table(
        "login_attempt",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("client", sa.String(), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_login_attempt_name", "login_attempt", ["name", "at"])
    op.create_index("ix_login_attempt_client", "login_attempt", ["client", "at"])
    _create_search()


def _create_search() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may create it.
        # Two indexes, not four: id, name and email as one text (a word never spans the
        # spaces between them), and the phone. fastupdate off: the import's many small
        # inserts cost less than the pending list's merges (measured: bench search).
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute(
            "CREATE INDEX ix_account_trgm_text ON account USING gin "
            "((account_id || ' ' || full_name || ' ' || coalesce(email, '')) gin_trgm_ops) "
            "WITH (fastupdate = off)"
        )
        op.execute(
            "CREATE INDEX ix_account_trgm_phone ON account USING gin (phone gin_trgm_ops) "
            "WITH (fastupdate = off)"
        )
        return
    op.execute(
        "CREATE VIRTUAL TABLE account_search USING fts5(account_id, full_name, email, phone, "
        "content='account', content_rowid='rowid', tokenize='trigram')"
    )
    op.execute(
        "CREATE TRIGGER account_search_insert AFTER INSERT ON account BEGIN "
        "INSERT INTO account_search(rowid, account_id, full_name, email, phone) "
        "VALUES (new.rowid, new.account_id, new.full_name, new.email, new.phone); END"
    )
    op.execute(
        "CREATE TRIGGER account_search_delete AFTER DELETE ON account BEGIN "
        "INSERT INTO account_search(account_search, rowid, account_id, full_name, email, phone) "
        "VALUES ('delete', old.rowid, old.account_id, old.full_name, old.email, old.phone); END"
    )
    # Only when a searched column changed: re-imports rewrite every column of an account.
    op.execute(
        "CREATE TRIGGER account_search_update AFTER UPDATE ON account "
        "WHEN old.account_id IS NOT new.account_id OR old.full_name IS NOT new.full_name "
        "OR old.email IS NOT new.email OR old.phone IS NOT new.phone BEGIN "
        "INSERT INTO account_search(account_search, rowid, account_id, full_name, email, phone) "
        "VALUES ('delete', old.rowid, old.account_id, old.full_name, old.email, old.phone); "
        "INSERT INTO account_search(rowid, account_id, full_name, email, phone) "
        "VALUES (new.rowid, new.account_id, new.full_name, new.email, new.phone); END"
    )
    op.execute("INSERT INTO account_search(account_search) VALUES ('rebuild')")


def _drop_search() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_account_trgm_phone")
        op.execute("DROP INDEX IF EXISTS ix_account_trgm_text")
        return
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS account_search_{trigger}")
    op.execute("DROP TABLE IF EXISTS account_search")


def downgrade() -> None:
    _drop_search()
    op.drop_index("ix_login_attempt_client", table_name="login_attempt")
    op.drop_index("ix_login_attempt_name", table_name="login_attempt")
    op.drop_table("login_attempt")
    op.drop_index("ix_web_session_user", table_name="web_session")
    op.drop_table("web_session")
    op.drop_table("web_user")
