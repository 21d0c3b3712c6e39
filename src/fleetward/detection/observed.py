"""An audit event as the rules see it: a plain, immutable value, never an ORM row.

Rules take these, so they can be tested with plain values and never touch a session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleetward.audit.events import ActorType, Decision
from fleetward.audit.models import AuditRecord


@dataclass(frozen=True, slots=True)
class Observed:
    seq: int
    id: str
    name: str
    at: datetime
    actor_type: str
    actor_id: str
    object_type: str
    object_id: str
    decision: str = Decision.ALLOWED.value
    reason: str | None = None
    actor_tenant_id: str | None = None
    tenant_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    # Investigation columns (migration 0009): what the verified token and the request said.
    client_id: str | None = None
    token_id: str | None = None
    token_family: str | None = None
    source_ip: str | None = None
    vehicle_id: str | None = None
    endpoint: str | None = None
    request_id: str | None = None

    @property
    def denied(self) -> bool:
        return self.decision == Decision.DENIED.value

    @property
    def by_system(self) -> bool:
        return self.actor_type == ActorType.SYSTEM.value

    @property
    def actor(self) -> str:
        """The actor as one key: ``user:usr_...``, ``workload:acme-telemetry``."""
        return f"{self.actor_type}:{self.actor_id}"

    @classmethod
    def of(cls, record: AuditRecord) -> Observed:
        return cls(
            seq=record.seq,
            id=record.id,
            name=record.name,
            at=record.occurred_at,
            actor_type=str(record.actor_type.value),
            actor_id=record.actor_id,
            object_type=record.object_type,
            object_id=record.object_id,
            decision=str(record.decision.value),
            reason=record.reason,
            actor_tenant_id=record.actor_tenant_id,
            tenant_id=record.tenant_id,
            details=dict(record.details or {}),
            client_id=record.client_id,
            token_id=record.token_id,
            token_family=record.token_family,
            source_ip=record.source_ip,
            vehicle_id=record.vehicle_id,
            endpoint=record.endpoint,
            request_id=record.request_id,
        )
