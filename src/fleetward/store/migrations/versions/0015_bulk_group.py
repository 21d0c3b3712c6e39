"""a bulk request records the fleet group it was asked on, for its approval

A bulk request above the approval threshold waits for a second fleet admin. The approval now
decides again whether the requester may still send it (a requester demoted or moved off the
group while it waited has nothing approved), which needs the target the request was decided
on: the fleet, or one of its groups. Rows from before have none and are judged on the fleet.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("command_bulks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("command_bulks", schema=None) as batch_op:
        batch_op.drop_column("group_id")
