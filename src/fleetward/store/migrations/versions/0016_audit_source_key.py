"""audit records keep their source address as 16 bytes too, for investigations by network

An investigator who has only an attacker's address (or network) asks for the blast radius of
that address: a network is one range of ``source_key`` (the address as bytes, IPv4 as its
IPv4-mapped IPv6 form), which text forms cannot be on either backend. Rows from before are
filled from their ``source_ip``, one distinct address at a time; then the index on
``source_ip`` alone is dropped (every lookup by address goes through ``source_key`` now).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 13:00:00.000000
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


def _key(text: str) -> bytes | None:
    # The rule of audit.models.address_key, frozen here as this revision applied it.
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return _V4_MAPPED + address.packed
    return address.packed


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_key", sa.LargeBinary(length=16), nullable=True))
        batch_op.create_index(
            "ix_audit_events_source_vehicle",
            ["source_key", "vehicle_id", "name", "action", "decision"],
            unique=False,
        )
    events = sa.table(
        "audit_events", sa.column("source_ip", sa.String), sa.column("source_key", sa.LargeBinary)
    )
    bind = op.get_bind()
    addresses = bind.execute(
        sa.select(events.c.source_ip).where(events.c.source_ip.is_not(None)).distinct()
    ).scalars()
    for text in list(addresses):
        key = _key(text)
        if key is not None:
            bind.execute(events.update().where(events.c.source_ip == text).values(source_key=key))
    # Every lookup by address now goes through source_key: the text column's own index (used
    # by the fill above) would only cost every audit insert.
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_source_ip")


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_source_ip", ["source_ip"], unique=False)
        batch_op.drop_index("ix_audit_events_source_vehicle")
        batch_op.drop_column("source_key")
