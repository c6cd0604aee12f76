"""Drop the audit table's index on message_id: the one lookup by message (the codes of
failed messages on the ops page) now goes by account, on ix_audit_account.

Why: message ids are hashes, so every audit record a plan writes landed at a random
place in that index, and each batch's commit rewrote most of its pages; a first plan of
100k accounts wrote 0.86 GB more for it (docs/BENCHMARKS.md, "Write amplification").

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_audit_message_id", table_name="audit")


def downgrade() -> None:
    op.create_index("ix_audit_message_id", "audit", ["message_id"])
