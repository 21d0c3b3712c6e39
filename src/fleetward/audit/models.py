"""The audit event table and its seal table. No secrets and no needless personal data are
ever stored here: token *ids* (jti) and family ids, never tokens; a client IP as a risk
signal, never a name or an e-mail address."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.audit.events import ActorType, Decision
from fleetward.store.base import Base, str_enum


def _big_id() -> BigInteger:
    # BigInteger so PostgreSQL never wraps; SQLite only auto-increments an INTEGER key.
    return BigInteger().with_variant(Integer, "sqlite")


class AuditRecord(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_object", "object_type", "object_id"),
        Index("ix_audit_events_actor", "actor_type", "actor_id"),
        # Blast-radius queries filter on the first column and group by vehicle, event name,
        # action and decision: covering them keeps the queries off the table pages.
        Index(
            "ix_audit_events_token_family_vehicle",
            "token_family",
            "vehicle_id",
            "name",
            "action",
            "decision",
        ),
        Index(
            "ix_audit_events_token_vehicle", "token_id", "vehicle_id", "name", "action", "decision"
        ),
        Index(
            "ix_audit_events_client_vehicle",
            "client_id",
            "vehicle_id",
            "name",
            "action",
            "decision",
        ),
        Index(
            "ix_audit_events_actor_vehicle", "actor_id", "vehicle_id", "name", "action", "decision"
        ),
        Index(
            "ix_audit_events_time_vehicle",
            "occurred_at",
            "vehicle_id",
            "name",
            "action",
            "decision",
        ),
    )

    # Insertion order within one database (not commit order: see audit/chain.py).
    seq: Mapped[int] = mapped_column(_big_id(), primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, insert_sentinel=True)
    occurred_at: Mapped[datetime]  # indexed first in ix_audit_events_time_vehicle
    name: Mapped[str] = mapped_column(String(64), index=True)
    actor_type: Mapped[ActorType] = mapped_column(str_enum(ActorType, "audit_actor_type"))
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_tenant_id: Mapped[str | None] = mapped_column(String(40))
    tenant_id: Mapped[str | None] = mapped_column(String(40), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    decision: Mapped[Decision] = mapped_column(str_enum(Decision, "audit_decision"))
    reason: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    trace_id: Mapped[str | None] = mapped_column(String(32), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Facts of the verified token and the request (bound in api/auth.authenticate), so an
    # investigator filters on columns, not JSON. All nullable: a system event has none.
    client_id: Mapped[str | None] = mapped_column(String(128))  # indexed first in a composite
    token_id: Mapped[str | None] = mapped_column(String(64))  # indexed first in a composite
    token_family: Mapped[str | None] = mapped_column(String(64))  # indexed first in a composite
    workload_id: Mapped[str | None] = mapped_column(String(128))
    acr: Mapped[str | None] = mapped_column(String(64))
    amr: Mapped[str | None] = mapped_column(String(64))  # space-separated methods
    scope: Mapped[str | None] = mapped_column(String(1024))  # the token's granted scope
    surface: Mapped[str | None] = mapped_column(String(16))
    endpoint: Mapped[str | None] = mapped_column(String(128))  # the route name
    policy_version: Mapped[str | None] = mapped_column(String(64))
    source_ip: Mapped[str | None] = mapped_column(String(45), index=True)
    vehicle_id: Mapped[str | None] = mapped_column(String(40), index=True)


class AuditSeal(Base):
    """One link of the hash chain: written by the sealer after the record committed.

    No foreign key to ``audit_events`` on purpose: a deleted record must leave its seal
    behind (that is how verify names it), not be refused or cascade.
    """

    __tablename__ = "audit_seals"
    __table_args__ = (
        Index("uq_audit_seals_partition_position", "partition", "position", unique=True),
    )

    event_seq: Mapped[int] = mapped_column(_big_id(), primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(40))
    partition: Mapped[str] = mapped_column(String(10))  # the record's UTC day, YYYY-MM-DD
    position: Mapped[int] = mapped_column(BigInteger)  # 0-based within the partition
    prev_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime]
    # Committed after the sealer had moved past its seq (a transaction longer than the lag).
    late: Mapped[bool] = mapped_column(Boolean)
