"""Delivery status from provider callbacks: status, error code and time on each message,
and an index to find a message by its provider id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("delivery_status", sa.String(), nullable=True))
        batch.add_column(sa.Column("delivery_error", sa.String(), nullable=True))
        batch.add_column(
            sa.Column("delivery_updated_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_index("ix_message_provider", "message", ["provider_message_id"])


def downgrade() -> None:
    op.drop_index("ix_message_provider", table_name="message")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("delivery_updated_at")
        batch.drop_column("delivery_error")
        batch.drop_column("delivery_status")
