"""Moving a job between states: checked against the state machine, stored with its time and
reason, and recorded as an audit event in the same transaction.

:func:`move` is the only code that changes ``CommandJob.state``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.recorder import Actor, AuditRecorder, Target
from fleetward.commands.models import CommandJob, JobState, JobTransition
from fleetward.commands.states import IN_FLIGHT, check
from fleetward.core.errors import JsonValue
from fleetward.core.ids import new_id
from fleetward.store.pending import hold, hold_new

_EVENT: Final = {
    JobState.REQUESTED: EventName.COMMAND_REQUESTED,
    JobState.AUTHORIZED: EventName.COMMAND_AUTHORIZED,
    JobState.REJECTED: EventName.COMMAND_REJECTED,
    JobState.QUEUED: EventName.COMMAND_QUEUED,
    JobState.DELIVERED: EventName.COMMAND_DELIVERED,
    JobState.EXECUTED: EventName.COMMAND_EXECUTED,
    JobState.FAILED: EventName.COMMAND_FAILED,
    JobState.REJECTED_BY_VEHICLE: EventName.COMMAND_REJECTED_BY_VEHICLE,
    JobState.CONFIRMED: EventName.COMMAND_CONFIRMED,
    JobState.EXPIRED: EventName.COMMAND_EXPIRED,
    JobState.OUTCOME_UNKNOWN: EventName.COMMAND_OUTCOME_UNKNOWN,
    JobState.CANCELLED: EventName.COMMAND_CANCELLED,
}
_DENIALS: Final = frozenset(
    {JobState.REJECTED, JobState.REJECTED_BY_VEHICLE, JobState.FAILED, JobState.EXPIRED}
)
SYSTEM: Final = Actor.system("command-service")


def requester(job: CommandJob) -> Actor:
    kind = ActorType.USER if job.subject_type in (None, "user") else ActorType.WORKLOAD
    return Actor(kind, job.requested_by, job.token_tenant_id)


def _record(
    session: AsyncSession,
    audit: AuditRecorder,
    job: CommandJob,
    state: JobState,
    reason: str,
    actor: Actor,
    details: dict[str, JsonValue] | None,
) -> None:
    audit.record(
        session,
        _EVENT[state],
        actor=actor,
        target=Target("vehicle", job.vehicle_id, job.tenant_id),
        decision=Decision.DENIED if state in _DENIALS else Decision.ALLOWED,
        reason=reason,
        details={
            "job_id": job.id,
            "command": job.command,
            "client_id": job.client_id,
            "token_id": job.token_id,
            "bulk_id": job.bulk_id,
            **(details or {}),
        },
    )


_TRANSITIONS: Final = cast(Table, JobTransition.__table__)


def _transition(
    session: AsyncSession,
    job: CommandJob,
    from_state: JobState | None,
    to: JobState,
    at: datetime,
    reason: str,
) -> None:
    """A row, not an ORM object (``store.pending``): written with the job's flush, after it."""
    hold(
        session,
        _TRANSITIONS,
        {
            "id": new_id("jtr"),
            "job_id": job.id,
            "from_state": from_state,
            "to_state": to,
            "at": at,
            "reason": reason,
        },
    )


def start(
    session: AsyncSession,
    audit: AuditRecorder,
    job: CommandJob,
    *,
    at: datetime,
    actor: Actor,
) -> None:
    """Record a new job (already in state REQUESTED) and its first transition. The job is
    INSERTed at the flush with its rows, as one Core statement (``store.pending.hold_new``:
    the ORM's unit of work cost more than the rest of the commit)."""
    hold_new(session, job)
    _transition(session, job, None, JobState.REQUESTED, at, "requested")
    _record(session, audit, job, JobState.REQUESTED, "requested", actor, None)


def move(
    session: AsyncSession,
    audit: AuditRecorder,
    job: CommandJob,
    to: JobState,
    *,
    reason: str,
    at: datetime,
    actor: Actor = SYSTEM,
    details: dict[str, JsonValue] | None = None,
) -> None:
    """Apply one transition (raises IllegalTransition for one the machine lacks). The job's
    security slot is released when it leaves the in-flight states."""
    check(job.state, to)
    _transition(session, job, job.state, to, at, reason)
    job.state = to
    job.updated_at = at
    if to not in IN_FLIGHT:
        job.exclusive_vehicle = None
    _record(session, audit, job, to, reason, actor, details)
