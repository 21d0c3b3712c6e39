"""Remote command routes on the mobile, fleet and dealer surfaces: create (one catalogued route
per command, each with its own permission; a dealer technician only ``diagnostics_run``),
cancel and follow, on each of the three. The read side (list, read) is ``history_jobs``;
bulk commands are ``bulk_commands``.

Creating a command:

1. the token must carry the command's scope (authentication), and an ``Idempotency-Key``;
2. the same key from the same caller returns the job it created (the same body) or 409
   (another body) before anything else happens: a retry never acts twice;
3. a vehicle the caller cannot see at all is the object routes' 404 (no job);
4. otherwise a job is created and judged link by link (``commands.service``): accepted, it
   is ``queued`` and answered 202 with the job; rejected, it is stored ``rejected`` and
   answered with a problem that names the job and the failing link (401 step-up with the
   RFC 9470 challenge, 409 vehicle state or conflict, 429 quota, 403 otherwise).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from fleetward.api.auth import (
    Caller,
    StepUp,
    authenticate,
    require_still_valid,
    step_up_challenge,
    still_valid,
)
from fleetward.api.authorize import (
    ObjectNotFound,
    authorize,
    decide_each,
    decide_many,
    not_found,
)
from fleetward.api.bodies import StrictBody
from fleetward.api.history_jobs import read_job
from fleetward.api.history_views import JobDetail, job_detail
from fleetward.api.objects import object_entry, platform_of
from fleetward.api.quota_guard import RetryOf, charge_command_flow
from fleetward.api.routing import surface_router
from fleetward.authz.decision import Decision, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import DataClass, Impact, catalogued
from fleetward.commands import jobs
from fleetward.commands.chain import Link
from fleetward.commands.errors import (
    BadCommandParameters,
    IdempotencyKeyRequired,
    JobNotCancellable,
    rejection,
)
from fleetward.commands.families import (
    BY_PERMISSION,
    COMMANDS,
    BadParameters,
    CommandSpec,
    validate_parameters,
)
from fleetward.commands.models import CommandJob, JobState
from fleetward.commands.runtime import commands_of
from fleetward.commands.service import (
    CommandService,
    Grant,
    NewCommand,
    Replayed,
    replay,
    request_hash,
)
from fleetward.commands.states import FINAL
from fleetward.core.surfaces import Surface
from fleetward.services import ServiceContext
from fleetward.store.races import judged_again
from fleetward.store.sqlite_driver import INLINE_READ
from fleetward.vehicles.models import Vehicle

OWNER: Final = "commands-team"
MAX_IDEMPOTENCY_KEY: Final = 128
# How long one follow request stays open at most (the client reconnects to go on).
FOLLOW_MAX: Final = timedelta(seconds=60)
_STEP_UP: Final = StepUp()
# Where each command is offered: owners, drivers and fleets; technicians run diagnostics.
_SURFACES: Final = {
    Surface.MOBILE: tuple(COMMANDS),
    Surface.FLEET: tuple(COMMANDS),
    Surface.DEALER: ("diagnostics_run",),
}


# Parameter names and text values as constrained strings: pydantic then refuses a string that
# is no Unicode text (a lone surrogate, "\ud800", is valid JSON), which a plain ``str`` in a
# dict lets through to be hashed (the flow's retry digest) or echoed (the problem) as a 500.
_ParameterName = Annotated[str, Field(min_length=1, max_length=64)]
_ParameterText = Annotated[str, Field(max_length=1024)]


class CommandBody(StrictBody):
    """What a client may say about a command. Everything else about the job is the server's."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    parameters: dict[_ParameterName, bool | int | float | _ParameterText] = Field(
        default_factory=dict, max_length=8
    )
    # A shorter deadline than the command's own lifetime (never a longer one).
    ttl_seconds: int | None = Field(default=None, ge=1, le=86_400)


# The vehicle's tenant (its relations were read by the decisions; this is all the job needs).
_VEHICLE_TENANT: Final = select(Vehicle.tenant_id).where(Vehicle.id == bindparam("vid"))


def idempotency_key(value: str | None) -> str:
    if value is None or not value:
        raise IdempotencyKeyRequired(
            "commands need an Idempotency-Key header", reason="missing-idempotency-key"
        )
    if len(value) > MAX_IDEMPOTENCY_KEY or not all(0x21 <= ord(c) <= 0x7E for c in value):
        raise IdempotencyKeyRequired(
            "the Idempotency-Key must be 1 to 128 visible ASCII characters",
            reason="malformed-idempotency-key",
        )
    return value


async def create_command(
    request: Request,
    caller: Caller,
    vehicle_id: str,
    spec: CommandSpec,
    body: CommandBody,
    key: str,
) -> tuple[CommandJob, bool]:
    """The job for this request (created now, or replayed); raises the rejection problem."""
    try:
        parameters = validate_parameters(spec, body.parameters)
    except BadParameters as bad:
        raise BadCommandParameters(
            f"parameter {bad.field}: {bad.problem}", reason="parameters", extra={"field": bad.field}
        ) from None
    digest = request_hash(vehicle_id, spec, parameters, ttl_seconds=body.ttl_seconds)
    args = (request, caller, vehicle_id, spec, parameters, body, key, digest)
    async with commands_of(request.app).in_progress.hold((caller.claims.sub, key)):
        # A concurrent request committed first: the same key (replayed now), the vehicle's
        # security slot (a conflict now), or an overdue job this request was settling.
        return await judged_again(
            lambda: _create_once(*args), IntegrityError, Replayed, StaleDataError
        )


async def _create_once(
    request: Request,
    caller: Caller,
    vehicle_id: str,
    spec: CommandSpec,
    parameters: dict[str, Any],
    body: CommandBody,
    key: str,
    digest: str,
) -> tuple[CommandJob, bool]:
    platform = platform_of(request)
    runtime = commands_of(request.app)
    # On SQLite the transaction holds the store's write lock from its start: the decisions
    # below and the job's delivery read the same relations (see Dispatcher.deliver_in).
    async with platform.services(inline_writes=True, write_lock=True) as (uow, ctx):
        # Knowing a vehicle id grants nothing: one the caller cannot see is not found. Asked
        # before a replay too: a former owner's old key shows nothing of the car's jobs now.
        # The command's own permission is asked in the same batch (one load of relations).
        resource = ResourceRef.vehicle(vehicle_id)
        visible, allowed = await decide_each(
            request,
            caller,
            [(Permission.VEHICLE_READ_STATUS, resource), (spec.permission, resource)],
            ctx=ctx,
        )
        if not visible.allowed:
            await uow.commit()  # the decisions' audit records
            raise not_found()
        # Reads only until the job's writes: the decisions' records go with the job's, in one
        # flush at the commit.
        with ctx.session.no_autoflush:
            existing = await replay(ctx, caller.claims, key, digest)
            tenant_id = await ctx.session.scalar(
                _VEHICLE_TENANT, {"vid": vehicle_id}, execution_options=INLINE_READ
            )
        if existing is not None:
            await uow.commit()  # the decisions' audit records
            return existing, True
        if tenant_id is None:
            raise not_found()

        async def decide(permission: Permission, target: str) -> Decision:
            if permission is spec.permission and target == vehicle_id:
                return allowed
            (decision,) = await decide_many(
                request, caller, permission, [ResourceRef.vehicle(target)], ctx=ctx
            )
            return decision

        service = CommandService(ctx, decide=decide, quotas=runtime.quotas, config=runtime.config)
        job, chain = await service.create(
            Grant.of(caller.claims, caller.surface),
            NewCommand(
                vehicle_id=vehicle_id,
                spec=spec,
                parameters=parameters,
                idempotency_key=key,
                request_hash=digest,
                ttl=timedelta(seconds=body.ttl_seconds) if body.ttl_seconds else None,
            ),
            tenant_id=tenant_id,
        )
        # Its vehicle connected here: delivered in this transaction, sent once it committed.
        sealed = await runtime.dispatcher.deliver_in(
            ctx, job, decided=allowed if uow.serialized else None
        )
        # The token was validated when the request came in, then it waited (its flow charge,
        # a same-key twin, the write lock) and was judged. A revocation in between is older
        # than the job, so the delivery re-check (revocations since the job) never counts
        # it: asked here, before anything is written or sent (nothing is, when it fails).
        await require_still_valid(request, caller)
        await uow.commit()
    if sealed is not None:
        runtime.dispatcher.send_sealed(sealed)
        return job, False
    if job.state is JobState.QUEUED:
        runtime.dispatcher.notify(vehicle_id, job.id)
        return job, False
    link = Link(job.rejected_link) if job.rejected_link else Link.PERMISSION
    headers: dict[str, str] = {}
    if link is Link.STEP_UP:
        headers = step_up_challenge(_STEP_UP)
    elif link is Link.QUOTA:
        headers = {"Retry-After": str(max(1, chain.retry_after_s))}
    raise rejection(job.id, link, chain.reason or "rejected", headers=headers)


def _entry_for(surface: Surface, spec: CommandSpec) -> Any:
    return object_entry(
        surface,
        f"ask the vehicle to {spec.name.replace('_', ' ')}: a signed, expiring job",
        spec.permission,
        DataClass.VEHICLE_STATE,
        owner=OWNER,
        objects=("vehicle", "command_job"),
        tags=("commands",),
        impact=frozenset({Impact.SAFETY, Impact.PRIVACY}),
        rate=10,
    )


def _create_route(router: APIRouter, surface: Surface, spec: CommandSpec) -> None:
    authenticated = Depends(authenticate(surface))

    @router.post(
        f"/vehicles/{{vehicle_id}}/commands/{spec.name}",
        name=f"{surface.value}:commands:{spec.name}",
        status_code=202,
        response_model=JobDetail,
    )
    @catalogued(_entry_for(surface, spec))
    async def create(
        vehicle_id: str,
        body: CommandBody,
        request: Request,
        response: Response,
        caller: Caller = authenticated,
        idempotency: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> JobDetail:
        key = idempotency_key(idempotency)
        await charge_command_flow(
            request,
            caller,
            spec.permission,
            lambda: RetryOf.of(key, vehicle_id, spec.name, body.model_dump_json()),
        )
        job, replayed = await create_command(request, caller, vehicle_id, spec, body, key)
        response.headers["Location"] = (
            f"{surface.prefix}/v1/vehicles/{vehicle_id}/commands/{job.id}"
        )
        if replayed:
            response.headers["Idempotency-Replayed"] = "true"
        # Its transitions: GET the job (or follow it).
        return job_detail(job, caller.claims.sub, [])


async def cancel_job(request: Request, caller: Caller, vehicle_id: str, job_id: str) -> CommandJob:
    """Cancel a job not yet delivered: only its requester, while still allowed its command.
    A job that moved between this request's read and its write (delivered, expired) is not
    overwritten (``CommandJob``'s state is its version): the cancel is judged again against
    the state it moved to."""
    return await judged_again(
        lambda: _cancel_once(request, caller, vehicle_id, job_id), StaleDataError
    )


async def _cancel_once(
    request: Request, caller: Caller, vehicle_id: str, job_id: str
) -> CommandJob:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        job = await _own_job(request, caller, vehicle_id, job_id, ctx)
        if job.state not in (JobState.QUEUED, JobState.AUTHORIZED):
            await uow.commit()
            raise JobNotCancellable(f"the job is {job.state.value}", reason=job.state.value)
        jobs.move(
            ctx.session,
            ctx.audit,
            job,
            JobState.CANCELLED,
            reason="cancelled-by-requester",
            at=ctx.clock.now(),
            actor=jobs.requester(job),
        )
        job.finished_at = ctx.clock.now()
        await uow.commit()
    commands_of(request.app).dispatcher.touched(job.id)
    return job


async def _own_job(
    request: Request, caller: Caller, vehicle_id: str, job_id: str, ctx: ServiceContext
) -> CommandJob:
    job = await ctx.session.scalar(
        select(CommandJob).where(CommandJob.id == job_id, CommandJob.vehicle_id == vehicle_id)
    )
    if job is None or job.requested_by != caller.claims.sub:
        # Another vehicle's job, someone else's job, no job: the same 404.
        await authorize(
            request,
            caller,
            Permission.VEHICLE_READ_STATUS,
            ResourceRef.vehicle(vehicle_id),
            ctx=ctx,
        )
        raise not_found()
    await authorize(
        request, caller, Permission(job.command), ResourceRef.vehicle(vehicle_id), ctx=ctx
    )
    return job


async def follow(
    request: Request, caller: Caller, vehicle_id: str, job_id: str
) -> AsyncIterator[bytes]:
    """Server-sent events: the job now, then at every change, until it is final (an executed
    job with nothing to confirm ends it too) or FOLLOW_MAX passed. Every look is authorized
    again: the stream ends as soon as the caller's token is no longer valid (revoked,
    expired) or the caller may no longer see the job."""
    runtime = commands_of(request.app)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FOLLOW_MAX.total_seconds()
    last: tuple[str, str] | None = None
    while True:
        changed = runtime.dispatcher.changed(job_id)
        if not await still_valid(request, caller):
            return
        try:
            detail = await read_job(request, caller, vehicle_id, job_id)
        except ObjectNotFound:
            return  # no longer theirs to see: the stream ends (its headers are long sent)
        current = (detail.state, detail.updated_at.isoformat())
        if current != last:
            last = current
            yield f"event: job\ndata: {json.dumps(detail.model_dump(mode='json'))}\n\n".encode()
        if detail.state in {s.value for s in FINAL} or _nothing_to_confirm(detail):
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            # Woken by this process's changes; another replica's show within a second.
            async with asyncio.timeout(min(remaining, 1.0)):
                await changed.wait()
        except TimeoutError:
            continue


def _nothing_to_confirm(detail: JobDetail) -> bool:
    if detail.state != JobState.EXECUTED.value:
        return False
    spec = BY_PERMISSION.get(detail.command)
    return spec is None or spec.expected(detail.parameters) is None


def _job_routes(router: APIRouter, surface: Surface) -> None:
    authenticated = Depends(authenticate(surface))
    s = surface.value

    @router.post(
        "/vehicles/{vehicle_id}/commands/{job_id}/cancel",
        name=f"{s}:commands:cancel",
        response_model=JobDetail,
    )
    @catalogued(
        object_entry(
            surface,
            "cancel a command job not yet delivered (its requester only)",
            Permission.VEHICLE_READ_STATUS,
            DataClass.VEHICLE_STATE,
            owner=OWNER,
            objects=("command_job",),
            tags=("commands",),
            impact=frozenset({Impact.SAFETY}),
            rate=10,
        )
    )
    async def cancel(
        vehicle_id: str, job_id: str, request: Request, caller: Caller = authenticated
    ) -> JobDetail:
        await cancel_job(request, caller, vehicle_id, job_id)
        return await read_job(request, caller, vehicle_id, job_id)

    @router.get(
        "/vehicles/{vehicle_id}/commands/{job_id}/events",
        name=f"{s}:commands:follow",
        response_class=StreamingResponse,
    )
    @catalogued(
        object_entry(
            surface,
            "follow a command job: server-sent events at every state change until it ends",
            Permission.VEHICLE_READ_STATUS,
            DataClass.VEHICLE_STATE,
            owner=OWNER,
            objects=("command_job",),
            tags=("commands",),
            rate=10,
        )
    )
    async def follow_job(
        vehicle_id: str, job_id: str, request: Request, caller: Caller = authenticated
    ) -> StreamingResponse:
        # Authorized (and found) before the stream starts, so a refusal is a plain 404.
        await read_job(request, caller, vehicle_id, job_id)
        return StreamingResponse(
            follow(request, caller, vehicle_id, job_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )


def _router() -> APIRouter:
    router = APIRouter()
    for surface, names in _SURFACES.items():
        sub = surface_router(surface)
        for name in names:
            _create_route(sub, surface, COMMANDS[name])
        # Every surface that creates jobs lets their requester cancel and follow them (a
        # technician their diagnostics run; which jobs are visible: ``history_jobs``).
        _job_routes(sub, surface)
        router.include_router(sub)
    return router


router = _router()

__all__ = ["router"]
