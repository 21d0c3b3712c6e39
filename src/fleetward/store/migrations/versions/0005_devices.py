"""devices: identities, certificates, enrolment tokens, clone incidents

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 19:15:35.773758
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import fleetward.store.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("vehicle_id", sa.String(length=40), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "suspended",
                "quarantined",
                "revoked",
                "decommissioned",
                name="device_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "key_algorithm",
            sa.Enum(
                "ed25519",
                "p256",
                name="device_key_algorithm",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "enrolment_kind",
            sa.Enum(
                "initial",
                "replacement",
                "re_enrolment",
                name="device_enrolment_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("replaces_device_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "status_changed_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("status_reason", sa.String(length=64), nullable=True),
        sa.Column("ended_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_peer", sa.String(length=128), nullable=True),
        sa.Column("last_seen_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["replaces_device_id"],
            ["devices.id"],
            name=op.f("fk_devices_replaces_device_id_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name=op.f("fk_devices_vehicle_id_vehicles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_vehicle_id"), ["vehicle_id"], unique=False)
        batch_op.create_index(
            "uq_devices_live_vehicle",
            ["vehicle_id"],
            unique=True,
            sqlite_where=sa.text("ended_at IS NULL"),
            postgresql_where=sa.text("ended_at IS NULL"),
        )

    op.create_table(
        "device_certificates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("public_key_sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "active",
                "revoked",
                name="device_certificate_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("not_before", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("not_after", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("issued_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("first_used_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=64), nullable=True),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_certificates_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_certificates")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_device_certificates_fingerprint")),
        sa.UniqueConstraint(
            "public_key_sha256", name=op.f("uq_device_certificates_public_key_sha256")
        ),
        sa.UniqueConstraint("serial", name=op.f("uq_device_certificates_serial")),
    )
    with op.batch_alter_table("device_certificates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_certificates_device_id"), ["device_id"], unique=False
        )

    op.create_table(
        "device_enrolments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "initial",
                "replacement",
                "re_enrolment",
                name="device_enrolment_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("vehicle_id", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("replaces_device_id", sa.String(length=40), nullable=True),
        sa.Column("dealer_case_id", sa.String(length=40), nullable=True),
        sa.Column("created_by_type", sa.String(length=16), nullable=False),
        sa.Column("created_by_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("used_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dealer_case_id"],
            ["dealer_cases.id"],
            name=op.f("fk_device_enrolments_dealer_case_id_dealer_cases"),
        ),
        sa.ForeignKeyConstraint(
            ["replaces_device_id"],
            ["devices.id"],
            name=op.f("fk_device_enrolments_replaces_device_id_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["vehicle_id"], ["vehicles.id"], name=op.f("fk_device_enrolments_vehicle_id_vehicles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_enrolments")),
        sa.UniqueConstraint("device_id", name=op.f("uq_device_enrolments_device_id")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_device_enrolments_token_hash")),
    )
    with op.batch_alter_table("device_enrolments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_enrolments_vehicle_id"), ["vehicle_id"], unique=False
        )

    op.create_table(
        "device_incidents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "concurrent_session",
                "peer_changed",
                name="device_incident_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("detected_at", fleetward.store.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("certificate_serial", sa.String(length=40), nullable=False),
        sa.Column("peer", sa.String(length=128), nullable=False),
        sa.Column("previous_peer", sa.String(length=128), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_incidents_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_incidents")),
    )
    with op.batch_alter_table("device_incidents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_incidents_detected_at"), ["detected_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_device_incidents_device_id"), ["device_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("device_incidents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_incidents_device_id"))
        batch_op.drop_index(batch_op.f("ix_device_incidents_detected_at"))
    op.drop_table("device_incidents")
    with op.batch_alter_table("device_enrolments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_enrolments_vehicle_id"))
    op.drop_table("device_enrolments")
    with op.batch_alter_table("device_certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_certificates_device_id"))
    op.drop_table("device_certificates")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_devices_live_vehicle",
            sqlite_where=sa.text("ended_at IS NULL"),
            postgresql_where=sa.text("ended_at IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_devices_vehicle_id"))
    op.drop_table("devices")
