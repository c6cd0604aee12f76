"""The tamper-evident audit chain: each audit record's place in the chain (``seq``), the
hash of the record before it, its own hash and the digest of its detail, set when the
record is sealed.

Existing records stay unsealed until the first seal chains them, oldest first.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("detail_sha256", sa.String(length=64), nullable=True))
    op.create_index("ix_audit_seq", "audit", ["seq"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_audit_seq", table_name="audit")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("detail_sha256")
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
        batch.drop_column("seq")
