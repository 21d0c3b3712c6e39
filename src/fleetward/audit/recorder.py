"""One ``record()`` for every audit event; it joins the caller's transaction.

Recording in the same transaction as the change means a change and its audit event commit
or roll back together: there is no change without its record.

A record is a row held with the session's transaction (``store.pending``): written where
the ORM would have flushed it (before the next query while autoflush is on, so a count of
records sees the ones just made; at commit), all of a transaction's records in one multi-row
Core INSERT; a rollback drops them. Not ORM objects: the unit of work cost ~1 ms of CPU for
one record's flush on SQLite, and every request writes at least one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import Clock
from fleetward.core.context import CallerFacts, current_request
from fleetward.core.errors import JsonValue
from fleetward.core.ids import new_id
from fleetward.store.pending import held, hold


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


AuditRow = dict[str, Any]
"""One record's columns (``seq`` aside: the store numbers it). Until its transaction commits
a caller may still correct a column it knows better (``devices.admission`` sets the time of
the handshake a batch records)."""

_TABLE: Final = cast(Table, AuditRecord.__table__)


def pending(session: AsyncSession | Session) -> Sequence[AuditRow]:
    """The records ``session`` holds, not yet written."""
    return held(session, _TABLE)


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
        keep: bool = False,
    ) -> AuditRow:
        """Hold the record with the session's transaction. ``keep``: written even if that
        transaction does not commit (a decision was made whatever became of the request's
        writes: ``store.pending``)."""
        request = current_request()
        caller = request.caller if request else None
        facts = dict(details or {})
        row: AuditRow = {
            "id": new_id("evt"),
            "occurred_at": self._clock.now(),
            "name": name.value,
            "actor_type": actor.type,
            "actor_id": actor.id,
            "actor_tenant_id": actor.tenant_id,
            "tenant_id": target.tenant_id,
            "object_type": target.type,
            "object_id": target.id,
            "action": _action(name, facts),
            "decision": decision,
            "reason": reason,
            "request_id": request.request_id if request else None,
            "trace_id": request.trace_id if request else None,
            "details": facts,
            "source_ip": request.source_ip if request else None,
            "vehicle_id": target.id if target.type == "vehicle" else _text(facts, "vehicle_id", 40),
            "policy_version": _text(facts, "policy_version", 64),
            **_caller_columns(caller, facts),
        }
        hold(session, _TABLE, row, keep=keep)
        return row


def _action(name: EventName, details: Mapping[str, JsonValue]) -> str:
    """The verb: the permission asked, for an authorization decision (so a read and an
    unlock differ in a column); else the last part of the name ("transferred")."""
    if name is EventName.AUTHZ_DECISION_MADE:
        permission = _text(details, "permission", 64)
        if permission is not None:
            return permission
    return name.value.rsplit(":", 1)[-1]


def _text(details: Mapping[str, JsonValue], key: str, limit: int) -> str | None:
    value = details.get(key)
    return value[:limit] if isinstance(value, str) and value else None


def _caller_columns(
    caller: CallerFacts | None, details: Mapping[str, JsonValue]
) -> dict[str, str | None]:
    # Every row names every column: a transaction's rows go in one multi-row INSERT.
    if caller is None:
        return {
            "client_id": _text(details, "client_id", 128),
            "token_id": _text(details, "token_id", 64),
            "token_family": _text(details, "token_family", 64),
            "workload_id": None,
            "acr": None,
            "amr": None,
            "scope": None,
            "surface": None,
            "endpoint": None,
        }
    return {
        "client_id": caller.client_id,
        "token_id": caller.token_id,
        "token_family": caller.token_family,
        "workload_id": caller.workload_id,
        "acr": caller.acr,
        "amr": caller.amr,
        "scope": caller.scope,
        "surface": caller.surface,
        "endpoint": caller.endpoint,
    }
