"""Incremental planning: when the planner must next look at each account, under which
configuration it last did, and a counter every change that can alter a plan bumps.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild on SQLite): every existing account starts with
    # no review, so the first plan after the upgrade looks at all of them.
    op.add_column("account", sa.Column("review_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("account", sa.Column("review_key", sa.String(), nullable=True))
    op.add_column(
        "account",
        sa.Column("review_seq", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.drop_column("review_seq")
        batch.drop_column("review_key")
        batch.drop_column("review_at")
