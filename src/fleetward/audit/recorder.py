"""One ``record()`` for every audit event; it joins the caller's transaction.

Recording in the same transaction as the change means a change and its audit event commit
or roll back together: there is no change without its record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import Clock
from fleetward.core.context import current_request
from fleetward.core.errors import JsonValue
from fleetward.core.ids import new_id


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a typed identity, never a display name or an e-mail address."""

    type: ActorType
    id: str
    tenant_id: str | None = None

    @classmethod
    def system(cls, component: str) -> Actor:
        return cls(ActorType.SYSTEM, component)

    @classmethod
    def user(cls, user_id: str, tenant_id: str | None = None) -> Actor:
        return cls(ActorType.USER, user_id, tenant_id)


@dataclass(frozen=True, slots=True)
class Target:
    """The object acted on, and the tenant it belongs to."""

    type: str
    id: str
    tenant_id: str | None = None


class AuditRecorder:
    """Thread-safety follows the session it is given: one recorder call per session at a time."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def record(
        self,
        session: AsyncSession,
        name: EventName,
        *,
        actor: Actor,
        target: Target,
        decision: Decision = Decision.ALLOWED,
        reason: str | None = None,
        details: Mapping[str, JsonValue] | None = None,
    ) -> AuditRecord:
        request = current_request()
        event = AuditRecord(
            id=new_id("evt"),
            occurred_at=self._clock.now(),
            name=name.value,
            actor_type=actor.type,
            actor_id=actor.id,
            actor_tenant_id=actor.tenant_id,
            tenant_id=target.tenant_id,
            object_type=target.type,
            object_id=target.id,
            # The verb is the last part of the event name: "vehicle:ownership:transferred".
            action=name.value.rsplit(":", 1)[-1],
            decision=decision,
            reason=reason,
            request_id=request.request_id if request else None,
            trace_id=request.trace_id if request else None,
            details=dict(details or {}),
        )
        session.add(event)
        return event
