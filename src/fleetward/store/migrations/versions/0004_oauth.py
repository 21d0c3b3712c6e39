"""oauth: single-use private_key_jwt client assertions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import fleetward.store.base

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_used_assertions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("jti_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=40), nullable=False),
        sa.Column("expires_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_oauth_used_assertions_client_id_oauth_clients"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_used_assertions")),
        sa.UniqueConstraint("jti_hash", name=op.f("uq_oauth_used_assertions_jti_hash")),
    )
    with op.batch_alter_table("oauth_used_assertions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_oauth_used_assertions_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("oauth_used_assertions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_used_assertions_expires_at"))
    op.drop_table("oauth_used_assertions")
