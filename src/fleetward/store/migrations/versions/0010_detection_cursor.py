"""detection: the evaluator's cursor over the audit log

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 23:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import fleetward.store.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "detection_cursors",
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("pending", sa.JSON(), nullable=False),
        sa.Column("updated_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_detection_cursors")),
    )


def downgrade() -> None:
    op.drop_table("detection_cursors")
