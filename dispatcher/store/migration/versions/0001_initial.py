"""The initial schema: accounts, the outbox, the audit log and holds.

Written out by hand (not generated at run time from the models) so that it stays what it
was when released; tests/integration/test_migration.py proves the models still match the
schema the whole chain of migrations builds.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    """What ``UtcDateTime`` stores: TIMESTAMP WITH TIME ZONE (SQLite: DATETIME, UTC)."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("full_name", sa.String(), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("phone", sa.String(), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        sa.Column("address_line1", sa.String(), nullable=True),
        sa.Column("address_line2", sa.String(), nullable=True),
        sa.Column("city", sa.String(), nullable=True),
        sa.Column("region", sa.String(), nullable=True),
        sa.Column("postal_code", sa.String(), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("timezone", sa.String(), nullable=False),
        sa.Column("timezone_source", sa.String(), nullable=False),
        sa.Column("locale", sa.String(), nullable=False),
        sa.Column("jurisdiction", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("dispute", sa.Boolean(), nullable=False),
        sa.Column("bankruptcy", sa.Boolean(), nullable=False),
        sa.Column("cease_and_desist", sa.Boolean(), nullable=False),
        sa.Column("deceased", sa.Boolean(), nullable=False),
        sa.Column("do_not_contact", sa.Boolean(), nullable=False),
        sa.Column("opt_out_sms", sa.Boolean(), nullable=False),
        sa.Column("opt_out_email", sa.Boolean(), nullable=False),
        sa.Column("promise_to_pay_until", sa.Date(), nullable=True),
        sa.Column("assigned_to", sa.String(), nullable=True),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_index("ix_account_due_date", "account", ["due_date"])
    op.create_index("ix_account_phone", "account", ["phone"])
    op.create_index("ix_account_email", "account", ["email"])

    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=True),
        sa.Column("message_id", sa.String(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_account", "audit", ["account_id", "id"])
    op.create_index("ix_audit_message_id", "audit", ["message_id"])

    op.create_table(
        "hold",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=True),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("starts_at", _utc(), nullable=False),
        sa.Column("ends_at", _utc(), nullable=True),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("lifted_at", _utc(), nullable=True),
        sa.Column("lifted_by", sa.String(), nullable=True),
        sa.Column("lift_note", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["account.account_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_hold_account", "hold", ["account_id", "lifted_at"])

    op.create_table(
        "message",
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("step", sa.String(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("hold_reason", sa.String(), nullable=True),
        sa.Column("rule_id", sa.String(), nullable=True),
        sa.Column("hold_until", _utc(), nullable=True),
        sa.Column("dpd", sa.Integer(), nullable=False),
        sa.Column("locale", sa.String(), nullable=True),
        sa.Column("recipient", sa.String(), nullable=True),
        sa.Column("template_id", sa.String(), nullable=True),
        sa.Column("template_version", sa.String(), nullable=True),
        sa.Column("template_sha256", sa.String(), nullable=True),
        sa.Column("subject", sa.String(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("body_sha256", sa.String(), nullable=True),
        sa.Column("scheduled_for", _utc(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _utc(), nullable=True),
        sa.Column("sent_at", _utc(), nullable=True),
        sa.Column("provider_message_id", sa.String(), nullable=True),
        sa.Column("artifact_path", sa.String(), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["account.account_id"]),
        sa.PrimaryKeyConstraint("message_id"),
        # Unnamed, as the model declares it (PostgreSQL calls it message_idempotency_key_key).
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_message_due", "message", ["status", "scheduled_for"])
    op.create_index("ix_message_account", "message", ["account_id", "cycle"])


def downgrade() -> None:
    op.drop_index("ix_message_account", table_name="message")
    op.drop_index("ix_message_due", table_name="message")
    op.drop_table("message")
    op.drop_index("ix_hold_account", table_name="hold")
    op.drop_table("hold")
    op.drop_index("ix_audit_message_id", table_name="audit")
    op.drop_index("ix_audit_account", table_name="audit")
    op.drop_table("audit")
    op.drop_index("ix_account_email", table_name="account")
    op.drop_index("ix_account_phone", table_name="account")
    op.drop_index("ix_account_due_date", table_name="account")
    op.drop_table("account")
