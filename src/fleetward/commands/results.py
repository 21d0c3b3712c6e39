"""A vehicle's signed answer: verified with the key of the device certificate its session
proved, bound to the envelope that was delivered (job, vehicle, device, counter, digest),
then recorded as the job's transition. Anything else is refused and audited
(``vehicle:command:result_refused``); nothing about the job changes.

An answer "replayed" or "stale-counter" means the vehicle had already seen that counter or
job: an earlier delivery may have acted, so it is never recorded as a refusal of the job
(a delivered job becomes ``outcome_unknown``).
"""

from __future__ import annotations

from typing import Any, Final, cast

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.events import ActorType, EventName
from fleetward.audit.events import Decision as AuditVerdict
from fleetward.audit.recorder import Actor, Target
from fleetward.commands import jobs
from fleetward.commands.chain import Link, entry
from fleetward.commands.envelope import (
    ResultRefused,
    ResultVerdict,
    check_result_binding,
    open_result,
    unverified_result_ids,
)
from fleetward.commands.models import CommandJob, JobState
from fleetward.devices.ca import DevicePublicKey
from fleetward.gateway.registry import LiveSession
from fleetward.platform import Platform
from fleetward.store.races import judged_again
from fleetward.store.sqlite_driver import INLINE_READ

_VERDICT_STATE: Final = {
    ResultVerdict.EXECUTED: JobState.EXECUTED,
    ResultVerdict.REJECTED_BY_VEHICLE: JobState.REJECTED_BY_VEHICLE,
    ResultVerdict.FAILED: JobState.FAILED,
}
_ANSWERABLE: Final = (JobState.DELIVERED, JobState.OUTCOME_UNKNOWN)
# Refusals that mean "already used", not "refused": they never prove the job did not act.
_SPENT: Final = frozenset({"replayed", "stale-counter"})

# The job as recording an answer reads and writes it: a row and one UPDATE, built once. An
# ORM load and flush of the whole job cost ~1 ms of the ~3 ms a recording took.
_JOBS: Final = cast(Table, CommandJob.__table__)
_READ: Final = select(
    *(
        _JOBS.c[name]
        for name in (
            "id",
            "vehicle_id",
            "tenant_id",
            "command",
            "state",
            "client_id",
            "token_id",
            "bulk_id",
            "chain",
            "counter",
            "envelope_digest",
            "delivered_device_id",
            "exclusive_vehicle",
        )
    )
).where(_JOBS.c.id == bindparam("job_id"))
_WRITTEN: Final = (
    "state",
    "updated_at",
    "exclusive_vehicle",
    "chain",
    "result_reason",
    "result_at",
    "finished_at",
)
# Only while the job is still in the state the answer was judged in: a sweep that moved it
# meanwhile wins, and the answer is judged again against what it did.
_WRITE: Final = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("job_id"), _JOBS.c.state == bindparam("judged_in"))
    .values({name: bindparam(f"new_{name}") for name in _WRITTEN})
)
# Judged again at most this often when the job keeps moving under the answer.
_ATTEMPTS: Final = 3


def append_link(job: CommandJob, link: Link, ok: bool, detail: str) -> None:
    job.chain = [*(job.chain or []), entry(link, ok, detail)]


class JobMovedMeanwhile(Exception):
    """The job's state changed between reading it and writing its answer (nothing of the
    answer was written): judged again, up to ``_ATTEMPTS`` times."""


async def record_result(
    platform: Platform, live: LiveSession, frame: bytes, *, refusal: str | None = None
) -> str | None:
    """Verify and record one result frame from ``live``; the id of the job it changed, or
    None (refused and audited, or nothing to change). ``refusal``: a reason the caller
    already has to refuse it (the device is quarantined), audited like any other."""
    return await judged_again(
        lambda: _record_once(platform, live, frame, refusal), JobMovedMeanwhile, tries=_ATTEMPTS
    )


async def _record_once(
    platform: Platform, live: LiveSession, frame: bytes, refused: str | None
) -> str | None:
    session = live.session
    ids = unverified_result_ids(frame)
    async with platform.services(inline_writes=True) as (uow, ctx):
        job = await _read_job(ctx.session, ids[0]) if ids is not None else None
        refusal = _result_refusal(live, job, ids) or refused
        result = None
        if refusal is None and job is not None:
            try:
                result = open_result(frame, _public_key(session.public_key_der))
                check_result_binding(
                    result,
                    job_id=job.id,
                    vehicle_id=session.vehicle_id,
                    device_id=session.device_id,
                    counter=job.counter or 0,
                    digest=bytes.fromhex(job.envelope_digest or ""),
                )
            except ResultRefused as refused:
                refusal = refused.reason
            except ValueError:
                refusal = "no-device-key"
        if refusal is not None or result is None or job is None:
            ctx.audit.record(
                ctx.session,
                EventName.COMMAND_RESULT_REFUSED,
                actor=Actor.system("command-service"),
                target=Target("device", session.device_id, session.tenant_id),
                decision=AuditVerdict.DENIED,
                reason=refusal or "refused",
                details={"session_id": session.session_id, "job_id": ids[0] if ids else None},
            )
            await uow.commit()
            return None
        now = ctx.clock.now()
        to = _VERDICT_STATE[result.verdict]
        if to is JobState.REJECTED_BY_VEHICLE and result.reason in _SPENT:
            # The vehicle saw this counter or job before: an earlier delivery may have
            # acted. That is not a refusal of the job; its outcome is unknown.
            if job.state is not JobState.DELIVERED:
                await uow.commit()
                return None
            to = JobState.OUTCOME_UNKNOWN
        judged_in = job.state
        job.result_reason = result.reason
        job.result_at = now
        job.finished_at = now
        append_link(job, Link.VEHICLE, True, f"signed by {session.device_id}")
        jobs.move(
            ctx.session,
            ctx.audit,
            job,
            to,
            reason=result.reason,
            at=now,
            actor=Actor(ActorType.DEVICE, session.device_id, session.tenant_id),
        )
        values = {f"new_{name}": getattr(job, name) for name in _WRITTEN}
        written = await ctx.session.execute(
            _WRITE, {"job_id": job.id, "judged_in": judged_in, **values}
        )
        if written.rowcount != 1:  # type: ignore[attr-defined]
            # Nothing committed: the transition and its record go with the transaction.
            raise JobMovedMeanwhile(job.id)
        await uow.commit()

    return job.id


async def _read_job(session: AsyncSession, job_id: str) -> CommandJob | None:
    """The job as a plain object outside the session (the session never flushes it: its
    answer is written by ``_WRITE``)."""
    row = (await session.execute(_READ, {"job_id": job_id}, execution_options=INLINE_READ)).first()
    if row is None:
        return None
    fields: dict[str, Any] = dict(row._mapping)
    return CommandJob(**fields)


def _result_refusal(
    live: LiveSession, job: CommandJob | None, ids: tuple[str, str] | None
) -> str | None:
    session = live.session
    if ids is None:
        return "malformed"
    if job is None or job.vehicle_id != session.vehicle_id:
        return "unknown-job"  # another vehicle's job is as unknown as a made-up one
    if ids[1] != session.device_id or job.delivered_device_id != session.device_id:
        return "not-delivered-to-this-device"
    if job.state not in _ANSWERABLE:
        return "not-awaiting-an-answer"
    return None


def _public_key(der: bytes) -> DevicePublicKey:
    if not der:
        raise ValueError("the session carries no device key")
    key = load_der_public_key(der)
    if isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        return key
    raise ValueError("not a device key")
