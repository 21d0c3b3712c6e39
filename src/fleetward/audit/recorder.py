"""One ``record()`` for every audit event; it joins the caller's transaction.

Recording in the same transaction as the change means a change and its audit event commit
or roll back together: there is no change without its record.

A record is a row kept with its session and written where the ORM would have flushed it:
before the session's next query while autoflush is on (so a count of records sees the ones
just made), and at commit; each time, everything pending goes in ONE multi-row Core INSERT.
A rollback, or a session closed without committing, drops them. Not ORM objects: the unit of
work cost ~1 ms of CPU for one record's flush on SQLite, and every request writes at least
one. Inside ``session.no_autoflush`` they wait for the commit (the command path reads with
autoflush off so that SQLite's write lock is taken at the commit, not before its reads).

``record()`` fills the investigation columns itself: the request's ids and client IP, and the
verified token's facts bound by ``authenticate()`` (core/context.py), so no caller has to
pass them. Outside a request (delivery, expiry, workers) the client and token ids come from
the event's own details when it names them (command jobs do), and the vehicle from a vehicle
target or a ``vehicle_id`` detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import Clock
from fleetward.core.context import CallerFacts, current_request
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


AuditRow = dict[str, Any]
"""One record's columns (``seq`` aside: the store numbers it). Until its transaction commits
a caller may still correct a column it knows better (``devices.admission`` sets the time of
the handshake a batch records)."""

_PENDING: Final = "fleetward.audit.pending"
_INSERT: Final = insert(AuditRecord.__table__)  # type: ignore[arg-type]


def pending(session: AsyncSession | Session) -> list[AuditRow]:
    """The records ``session`` will write (a live list)."""
    rows: list[AuditRow] = session.info.setdefault(_PENDING, [])
    return rows


def _hold(session: AsyncSession, row: AuditRow) -> None:
    sync = session.sync_session
    if not sync.in_transaction():
        # Records belong to a transaction: begun here (no I/O: the connection is taken at
        # the first statement), so a rollback or close before any statement drops them.
        sync.begin()
    pending(sync).append(row)


def _write(session: Session) -> None:
    rows = session.info.pop(_PENDING, None)
    if rows:
        session.connection().execute(_INSERT, rows)


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    _write(session)


@event.listens_for(Session, "do_orm_execute")
def _autoflush_pending(state: ORMExecuteState) -> None:
    if state.session.autoflush:
        _write(state.session)


@event.listens_for(Session, "after_transaction_end")
def _drop_pending(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the session's transaction, not a savepoint
        session.info.pop(_PENDING, None)


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
    ) -> AuditRow:
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
        _hold(session, row)
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
