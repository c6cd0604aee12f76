"""Template versions: every wording of every template with author, state and approver.

The planner renders only the approved version of each template from the source kept
here (four-eyes approval, house rule HR-12); see docs/TEMPLATES.md.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "template_version",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("template_id", sa.String(), nullable=False),
        sa.Column("locale", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_html", sa.Text(), nullable=True),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("approved_by", sa.String(), nullable=True),
        sa.Column("approved_at", _utc(), nullable=True),
        sa.Column("rejected_by", sa.String(), nullable=True),
        sa.Column("rejected_at", _utc(), nullable=True),
        sa.Column("retired_by", sa.String(), nullable=True),
        sa.Column("retired_at", _utc(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("retire_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "channel", "template_id", "locale", "sha256", name="uq_template_version_sha256"
        ),
    )
    # At most one approved version per template, enforced by the database itself.
    op.create_index(
        "uq_template_version_approved",
        "template_version",
        ["channel", "template_id", "locale"],
        unique=True,
        sqlite_where=sa.text("state = 'approved'"),
        postgresql_where=sa.text("state = 'approved'"),
    )


def downgrade() -> None:
    op.drop_index("uq_template_version_approved", table_name="template_version")
    op.drop_table("template_version")
