"""telemetry: accepted messages with provenance, quarantined messages kept apart

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 19:11:35.615487
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import fleetward.store.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quarantined_messages",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("vehicle_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("certificate_serial", sa.String(length=64), nullable=False),
        sa.Column("software_version", sa.String(length=64), nullable=False),
        sa.Column("vehicle_config", sa.String(length=128), nullable=False),
        sa.Column("received_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("device_time", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("store_and_forward", sa.Boolean(), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("quarantine_reason", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vehicle_id"],
            ["vehicles.id"],
            name=op.f("fk_quarantined_messages_vehicle_id_vehicles"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantined_messages")),
    )
    with op.batch_alter_table("quarantined_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quarantined_messages_device_id"), ["device_id"], unique=False
        )

    op.create_table(
        "telemetry_messages",
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("vehicle_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("certificate_serial", sa.String(length=64), nullable=False),
        sa.Column("software_version", sa.String(length=64), nullable=False),
        sa.Column("vehicle_config", sa.String(length=128), nullable=False),
        sa.Column("received_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("device_time", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("store_and_forward", sa.Boolean(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vehicle_id"],
            ["vehicles.id"],
            name=op.f("fk_telemetry_messages_vehicle_id_vehicles"),
        ),
        sa.PrimaryKeyConstraint("device_id", "sequence", name=op.f("pk_telemetry_messages")),
    )
    with op.batch_alter_table("telemetry_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_telemetry_messages_vehicle_device_time",
            ["vehicle_id", "device_time"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("telemetry_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_messages_vehicle_device_time")
    op.drop_table("telemetry_messages")
    with op.batch_alter_table("quarantined_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantined_messages_device_id"))
    op.drop_table("quarantined_messages")
