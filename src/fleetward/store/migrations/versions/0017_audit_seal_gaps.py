"""audit: the sealer notes the seq ranges it moves past with no record, to find late commits

A record that commits after the sealer moved past its seq used to be looked for only within
10,000 seqs below the sealed horizon; one later than that stayed unsealed for ever. The sealer
now notes each such range (audit/gaps.py) and looks in every live one on each pass. The range
the old window covered is noted once here, so a late record it could still have found is not
lost by the upgrade.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 23:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import fleetward.store.base

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_WINDOW = 10_000  # audit.chain.LATE_WINDOW as the sealer used it before this revision


def upgrade() -> None:
    gaps = op.create_table(
        "audit_seal_gaps",
        sa.Column("low", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("high", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("xid_bound", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("low", name=op.f("pk_audit_seal_gaps")),
    )
    seals = sa.table("audit_seals", sa.column("event_seq", sa.BigInteger))
    horizon = op.get_bind().scalar(sa.select(sa.func.max(seals.c.event_seq)))
    if horizon is not None and horizon > 1:
        op.bulk_insert(
            gaps,
            [
                {
                    "low": horizon - _OLD_WINDOW + 1,
                    "high": horizon - 1,
                    "seen_at": datetime.now(UTC),
                    "xid_bound": None,
                }
            ],
        )


def downgrade() -> None:
    op.drop_table("audit_seal_gaps")
