"""a bulk request records its TTL, for the jobs its approval creates later

A bulk request above the approval threshold creates its jobs when a second admin approves
it; the request's ``ttl_seconds`` (which may only shorten a command's lifetime) was not
stored, so those jobs got the command's full lifetime instead of the one asked for.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("command_bulks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ttl_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("command_bulks", schema=None) as batch_op:
        batch_op.drop_column("ttl_seconds")
