"""fleet groups: one open link per (group, vehicle) and per (group, operator); revocation
epochs indexed by kind and subject

Two concurrent adds of the same vehicle to a group (or assignments of the same operator)
could both commit on PostgreSQL; a later removal closed one and left the other open. Partial
unique indexes over the open rows make the second one fail. A delayed command's delivery
asks whether its token was revoked meanwhile: revocation epochs by (kind, subject).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 21:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("valid_until IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("group_vehicles", schema=None) as batch_op:
        batch_op.create_index(
            "uq_group_vehicles_open",
            ["group_id", "vehicle_id"],
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )
    with op.batch_alter_table("operator_assignments", schema=None) as batch_op:
        batch_op.create_index(
            "uq_operator_assignments_open",
            ["group_id", "user_id"],
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )
    with op.batch_alter_table("revocation_epochs", schema=None) as batch_op:
        batch_op.create_index("ix_revocation_epochs_kind_subject", ["kind", "subject"])


def downgrade() -> None:
    with op.batch_alter_table("revocation_epochs", schema=None) as batch_op:
        batch_op.drop_index("ix_revocation_epochs_kind_subject")
    with op.batch_alter_table("operator_assignments", schema=None) as batch_op:
        batch_op.drop_index("uq_operator_assignments_open")
    with op.batch_alter_table("group_vehicles", schema=None) as batch_op:
        batch_op.drop_index("uq_group_vehicles_open")
