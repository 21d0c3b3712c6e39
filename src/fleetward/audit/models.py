"""The audit event table. No secrets and no needless personal data are ever stored here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.audit.events import ActorType, Decision
from fleetward.store.base import Base, str_enum


class AuditRecord(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_object", "object_type", "object_id"),
        Index("ix_audit_events_actor", "actor_type", "actor_id"),
    )

    # Insertion order within one database; BigInteger so PostgreSQL never wraps (SQLite
    # only auto-increments an INTEGER primary key).
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(40), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(index=True)
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
