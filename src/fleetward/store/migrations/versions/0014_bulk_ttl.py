"""a bulk request records its TTL, for the jobs its approval creates later

A bulk request above the approval threshold creates its jobs when a second admin approves
it; the request's ``ttl_seconds`` (which may only shorten a command's lifetime) was not
stored, so those jobs got the command's full lifetime instead of the one asked for.

Numbered 0014 and revising 0012 on the review branch that found it: main has gained 0013
(consent) meanwhile; on merging, this revision revises 0013 instead.

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-07 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("command_bulks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ttl_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("command_bulks", schema=None) as batch_op:
        batch_op.drop_column("ttl_seconds")
