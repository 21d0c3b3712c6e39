"""Bulk commands on the fleet surface (``commands.bulk``): ask, read, approve, reject.

Every vehicle id in the body is checked like a path id: one the caller may not command
refuses the whole request, as the same 404 an unknown id gets, and nothing is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Final

from fastapi import Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from fleetward.abuse.policy import Flow
from fleetward.api.auth import (
    Caller,
    StepUp,
    StepUpRequired,
    authenticate,
    require_still_valid,
    step_up_challenge,
)
from fleetward.api.authorize import NotPermitted, decide_many, not_found
from fleetward.api.bodies import LooseId
from fleetward.api.commands import OWNER, CommandBody, idempotency_key
from fleetward.api.objects import object_entry, platform_of
from fleetward.api.quota_guard import RetryOf, charge_command_flow, charge_flow, charge_objects
from fleetward.api.routing import surface_router
from fleetward.authz.decision import (
    Decision,
    Reason,
    ResourceKind,
    ResourceRef,
)
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CatalogEntry, DataClass, Impact, catalogued
from fleetward.commands import bulk as bulks
from fleetward.commands.chain import Chain, Link, link_of
from fleetward.commands.errors import (
    BadCommandParameters,
    BulkRejected,
    CommandRejectedQuota,
    IdempotencyKeyReused,
)
from fleetward.commands.families import BY_PERMISSION, COMMANDS, BadParameters, validate_parameters
from fleetward.commands.models import BulkState, CommandBulk, CommandJob, JobState
from fleetward.commands.runtime import CommandRuntime, commands_of
from fleetward.commands.service import CommandService, Grant, client_link
from fleetward.core.surfaces import Surface
from fleetward.services import ServiceContext
from fleetward.store.races import judged_again
from fleetward.vehicles.models import FleetGroup, GroupVehicle, Vehicle

_STEP_UP: Final = StepUp()
_HARD_CAP: Final = 10_000  # what the body may hold at all; the configured cap is lower
_BULK: Final = Permission.FLEET_BULK_COMMAND


class BulkBody(CommandBody):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    command: str = Field(min_length=1, max_length=32)
    vehicle_ids: list[LooseId] = Field(min_length=1, max_length=_HARD_CAP)
    # An operator's bulk request names the group it is for (their permission is per group).
    group_id: LooseId | None = None


class BulkJobView(BaseModel):
    vehicle_id: str
    job_id: str
    state: str
    rejected_link: str | None


class BulkView(BaseModel):
    id: str
    command: str
    state: str
    vehicles: int
    requested_by_me: bool
    approved: bool
    approval_expires_at: datetime
    jobs: list[BulkJobView]


def _entry(purpose: str, rate: int = 5) -> CatalogEntry:
    return object_entry(
        Surface.FLEET,
        purpose,
        _BULK,
        DataClass.VEHICLE_STATE,
        owner=OWNER,
        objects=("bulk_command", "vehicle", "command_job"),
        tags=("commands",),
        impact=frozenset({Impact.SAFETY, Impact.PRIVACY}),
        rate=rate,
    )


def _refusal(decisions: Sequence[Decision], *, on_vehicles: bool) -> Exception:
    reasons = [d.reason for d in decisions if not d.allowed]
    if Reason.STEP_UP_REQUIRED in reasons:
        return StepUpRequired(
            "bulk commands need a recent multi-factor sign-in",
            reason="step-up",
            headers=step_up_challenge(_STEP_UP),
        )
    if on_vehicles and any(link_of(r) is Link.RELATIONSHIP for r in reasons):
        return not_found()  # a vehicle not theirs: the same answer as an unknown id
    return NotPermitted("this bulk command is not permitted to the caller", reason=reasons[0])


def _bulk_refusal(decision: Decision) -> Exception:
    """A refused approve or reject of a bulk that exists: the bulk is an object, so every
    denial but a missing step-up answers the 404 an unknown bulk id gets (a 403 here told a
    same-fleet operator which bulk ids exist). Step-up is reported only to a caller a permit
    would otherwise allow (the PDP's slicing), so its challenge is no oracle."""
    if decision.reason is Reason.STEP_UP_REQUIRED:
        return _refusal([decision], on_vehicles=False)
    return not_found()


def _group_not_theirs(group_id: str | None, on_fleet: Decision) -> bool:
    """A group id in the body that names a group the caller has no relationship with (another
    fleet's, or one of their fleet they are not assigned to): the same 404 as an unknown group
    id, whatever else the request got wrong, so a group id is no oracle for which groups exist
    and whose they are (an id in a body is checked like an id in a path)."""
    return (
        group_id is not None
        and not on_fleet.allowed
        and link_of(on_fleet.reason) is Link.RELATIONSHIP
    )


async def _bulk_target(ctx: ServiceContext, caller: Caller, group_id: str | None) -> ResourceRef:
    if group_id is None:
        return ResourceRef(ResourceKind.TENANT, caller.claims.tenant)
    group = await ctx.session.get(FleetGroup, group_id)
    if group is None:
        raise not_found()
    return ResourceRef(ResourceKind.FLEET_GROUP, group.id)


async def _in_group(ctx: ServiceContext, group_id: str, vehicle_ids: Sequence[str]) -> bool:
    now = ctx.clock.now()
    members = set(
        await ctx.session.scalars(
            select(GroupVehicle.vehicle_id).where(
                GroupVehicle.group_id == group_id,
                GroupVehicle.vehicle_id.in_(list(vehicle_ids)),
                GroupVehicle.valid_from <= now,
                (GroupVehicle.valid_until.is_(None)) | (GroupVehicle.valid_until > now),
            )
        )
    )
    return members == set(vehicle_ids)


async def _view(
    ctx: ServiceContext, bulk: CommandBulk, caller: Caller, *, only: frozenset[str] | None = None
) -> BulkView:
    """The bulk and its jobs (``only``: the jobs of these vehicles)."""
    query = select(CommandJob).where(CommandJob.bulk_id == bulk.id)
    if only is not None:
        query = query.where(CommandJob.vehicle_id.in_(sorted(only)))
    rows = await ctx.session.scalars(query.order_by(CommandJob.vehicle_id))
    return BulkView(
        id=bulk.id,
        command=bulk.command,
        state=bulk.state.value,
        vehicles=len(bulk.vehicle_ids),
        requested_by_me=bulk.requested_by == caller.claims.sub,
        approved=bulk.approved_by is not None,
        approval_expires_at=bulk.approval_expires_at,
        jobs=[
            BulkJobView(
                vehicle_id=j.vehicle_id,
                job_id=j.id,
                state=j.state.value,
                rejected_link=j.rejected_link,
            )
            for j in rows
        ],
    )


def _service(ctx: ServiceContext, runtime: CommandRuntime) -> CommandService:
    # Bulk jobs are prejudged (the bulk request's decisions): no PDP here.
    return CommandService(ctx, quotas=runtime.quotas, config=runtime.config)


def _notify(runtime: CommandRuntime, jobs: Sequence[CommandJob]) -> None:
    for job in jobs:
        if job.state is JobState.QUEUED:
            runtime.dispatcher.notify(job.vehicle_id, job.id)


async def _tenants(ctx: ServiceContext, vehicle_ids: Sequence[str]) -> dict[str, str]:
    rows = await ctx.session.execute(
        select(Vehicle.id, Vehicle.tenant_id).where(Vehicle.id.in_(list(vehicle_ids)))
    )
    return {vid: tenant for vid, tenant in rows}


router = surface_router(Surface.FLEET)
_FLEET = Depends(authenticate(Surface.FLEET))


@router.post("/bulk-commands", name="fleet:bulk-commands:create", status_code=202)
@catalogued(_entry("one command to many vehicles of the fleet: a job per vehicle"))
async def create_bulk(
    body: BulkBody,
    request: Request,
    response: Response,
    caller: Caller = _FLEET,
    idempotency: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> BulkView:
    key = idempotency_key(idempotency)
    retry_of = RetryOf.of(key, body.model_dump_json())
    await charge_flow(request, caller, Flow.BULK_FLEET_COMMAND, retry_of=retry_of)
    runtime = commands_of(request.app)
    config = runtime.config
    spec = COMMANDS.get(body.command)
    if spec is None:
        raise BadCommandParameters("unknown command", reason="command")
    try:
        parameters = validate_parameters(spec, body.parameters)
    except BadParameters as bad:
        raise BadCommandParameters(
            f"parameter {bad.field}: {bad.problem}", reason="parameters", extra={"field": bad.field}
        ) from None
    ids = tuple(body.vehicle_ids)
    if len(ids) > config.max_bulk:
        raise BulkRejected(
            f"at most {config.max_bulk} vehicles per bulk command",
            reason="over-cap",
            extra={"max": config.max_bulk},
        )
    if len(set(ids)) != len(ids):
        raise BulkRejected("a vehicle is named twice", reason="duplicate-vehicle")
    if caller.claims.sub_type != "user":
        raise NotPermitted("bulk commands are asked for by people", reason="not-a-person")
    await charge_command_flow(request, caller, spec.permission, lambda: retry_of, vehicles=len(ids))
    ask = bulks.BulkAsk(spec, parameters, ids, body.group_id, key, body.ttl_seconds)
    # A concurrent twin with the same key committed first (the key's unique index): judged
    # again, this request is its replay.
    return await judged_again(
        lambda: _create_once(request, response, caller, ask, body), IntegrityError
    )


async def _create_once(
    request: Request, response: Response, caller: Caller, ask: bulks.BulkAsk, body: BulkBody
) -> BulkView:
    runtime = commands_of(request.app)
    config = runtime.config
    spec, ids, key = ask.spec, ask.vehicle_ids, ask.idempotency_key
    grant = Grant.of(caller.claims, caller.surface)
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        existing = await ctx.session.scalar(
            select(CommandBulk).where(
                CommandBulk.requested_by == grant.sub, CommandBulk.idempotency_key == key
            )
        )
        if existing is not None:
            if (
                existing.request_hash != bulks.bulk_hash(ask)
                or existing.client_id != grant.client_id
            ):
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used for a different request", reason="different-body"
                )
            # A replay shows what a read would: decided now, as far as the caller still sees.
            seen = await _still_seen(request, caller, ctx, existing)
            await uow.commit()
            if not seen:
                raise not_found()
            response.headers["Idempotency-Replayed"] = "true"
            return await _view(ctx, existing, caller, only=seen)
        chain = Chain()
        await client_link(ctx, chain, grant, _BULK)
        await client_link(ctx, chain, grant, spec.permission)
        if not chain.held:
            raise NotPermitted("the client may not send this bulk command", reason=chain.reason)
        target = await _bulk_target(ctx, caller, body.group_id)
        (on_fleet,) = await decide_many(
            request, caller, _BULK, [target], ctx=ctx, command=spec.permission
        )
        tenants = await _tenants(ctx, ids)
        in_group = body.group_id is None or await _in_group(ctx, body.group_id, ids)
        each = await decide_many(
            request, caller, spec.permission, [ResourceRef.vehicle(v) for v in ids], ctx=ctx
        )
        refused = [d for d in (on_fleet, *each) if not d.allowed]
        if len(tenants) != len(ids) or not in_group or refused:
            await uow.commit()  # the decisions' audit records
            if refused and not _group_not_theirs(body.group_id, on_fleet):
                raise _refusal(refused, on_vehicles=on_fleet.allowed)
            raise not_found()
        answer = await runtime.quotas.charge(grant, spec, list(ids))
        if not answer.allowed:
            await uow.commit()
            raise CommandRejectedQuota(
                "the bulk command is over quota",
                reason=answer.reason,
                headers={"Retry-After": str(max(1, answer.retry_after_s))},
            )
        needs_approval = len(ids) > config.approval_threshold
        bulk = bulks.new_bulk(ctx, grant, ask, config, needs_approval=needs_approval)
        created: list[CommandJob] = []
        if not needs_approval:
            created = await bulks.dispatch(
                ctx,
                bulk,
                spec,
                _service(ctx, runtime),
                tenants=tenants,
                reason=on_fleet.reason.value,
                ttl_seconds=body.ttl_seconds,
            )
        # A revocation while the request waited is older than the bulk: the delivery
        # re-check of its jobs (revocations since the bulk request) never counts it.
        await require_still_valid(request, caller)
        await uow.commit()
        view = await _view(ctx, bulk, caller)
    _notify(runtime, created)
    response.headers["Location"] = f"/fleet/v1/bulk-commands/{bulk.id}"
    return view


async def _may_send(
    request: Request, caller: Caller, ctx: ServiceContext, bulk: CommandBulk
) -> Decision:
    """May the caller send this bulk request's command to its fleet (a fleet admin of it)?"""
    target = ResourceRef(ResourceKind.TENANT, bulk.tenant_id)
    (decision,) = await decide_many(
        request, caller, _BULK, [target], ctx=ctx, command=Permission(bulk.command)
    )
    return decision


async def _may_decide(
    request: Request, caller: Caller, ctx: ServiceContext, bulk: CommandBulk
) -> Decision:
    """The decision an approve or a reject asks for, recorded: from the requester, whether
    they may still send their bulk where they asked for it (the fleet, or their group: an
    operator's own bulk is theirs, and their approval is refused by the four-eyes rule, not
    hidden; a requester who left the fleet or the group decides nothing more about it); from
    anyone else, whether they may send its command to the whole fleet (a fleet admin)."""
    if bulk.requested_by != caller.claims.sub:
        return await _may_send(request, caller, ctx, bulk)
    (decision,) = await decide_many(
        request, caller, _BULK, [bulks.asked_on(bulk)], ctx=ctx, command=Permission(bulk.command)
    )
    return decision


def _still_waiting(bulk: CommandBulk) -> None:
    if bulk.state is not BulkState.AWAITING_APPROVAL:
        raise BulkRejected(f"the bulk command is {bulk.state.value}", reason=bulk.state.value)


async def _visible_bulk(
    request: Request, caller: Caller, ctx: ServiceContext, bulk_id: str
) -> CommandBulk:
    bulk = await ctx.session.get(CommandBulk, bulk_id)
    if bulk is None or bulk.tenant_id != caller.claims.tenant:
        raise not_found()
    return bulk


@router.get("/bulk-commands/{bulk_id}", name="fleet:bulk-commands:read")
@catalogued(_entry("a bulk command and the state of each of its jobs", rate=60))
async def read_bulk(bulk_id: str, request: Request, caller: Caller = _FLEET) -> BulkView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        bulk = await _visible_bulk(request, caller, ctx, bulk_id)
        if bulk.requested_by != caller.claims.sub:
            decision = await _may_send(request, caller, ctx, bulk)
            await uow.commit()
            if not decision.allowed and decision.reason is not Reason.STEP_UP_REQUIRED:
                raise not_found()
            # Every vehicle's job is shown: each one is paid for, as reading it would be.
            await charge_objects(request, caller, len(bulk.vehicle_ids))
            return await _view(ctx, bulk, caller)
        # Each vehicle is decided, audited and shown: each one is paid for (before the
        # decisions; only reads so far in this transaction).
        await charge_objects(request, caller, len(bulk.vehicle_ids))
        # The requester sees their own bulk as far as they still see its vehicles, decided
        # now (an operator moved off the group, a member who left the fleet: nothing).
        seen = await _still_seen(request, caller, ctx, bulk)
        await uow.commit()
        if not seen:
            raise not_found()
        return await _view(ctx, bulk, caller, only=seen)


async def _still_seen(
    request: Request, caller: Caller, ctx: ServiceContext, bulk: CommandBulk
) -> frozenset[str]:
    refs = [ResourceRef.vehicle(v) for v in bulk.vehicle_ids]
    decisions = await decide_many(request, caller, Permission.VEHICLE_READ_STATUS, refs, ctx=ctx)
    return frozenset(r.id for r, d in zip(refs, decisions, strict=True) if d.allowed)


@router.post("/bulk-commands/{bulk_id}/approve", name="fleet:bulk-commands:approve")
@catalogued(_entry("a second fleet admin approves a large bulk command: its jobs are created"))
async def approve_bulk(bulk_id: str, request: Request, caller: Caller = _FLEET) -> BulkView:
    # A bulk decided by someone else between this request's read and its write is not
    # overwritten (its state is its version), and a car whose security slot another job
    # took meanwhile (the slot's unique index) is not a 500: judged again against what was
    # decided, that car's job is then rejected at the conflict link.
    return await judged_again(
        lambda: _approve_once(bulk_id, request, caller), StaleDataError, IntegrityError
    )


async def _approve_once(bulk_id: str, request: Request, caller: Caller) -> BulkView:
    platform = platform_of(request)
    runtime = commands_of(request.app)
    created: list[CommandJob] = []
    async with platform.services() as (uow, ctx):
        bulk = await _visible_bulk(request, caller, ctx, bulk_id)
        decision = await _may_decide(request, caller, ctx, bulk)
        if not decision.allowed:
            await uow.commit()  # the denied decision's audit record
            raise _bulk_refusal(decision)
        if bulk.requested_by == caller.claims.sub:
            # The four-eyes rule held: a security decision, audited (the bulk keeps waiting).
            bulks.refuse_approval(ctx, bulk, caller.claims.sub, "second-approver-required")
            await uow.commit()
            raise NotPermitted(
                "a second fleet admin must approve it", reason="second-approver-required"
            )
        _still_waiting(bulk)
        now = ctx.clock.now()
        if now >= bulk.approval_expires_at:
            bulks.reject(ctx, bulk, caller.claims.sub, "approval-expired")
            await uow.commit()
            raise BulkRejected("the approval window has passed", reason="approval-expired")
        held = await bulks.requester_still_may(ctx, platform.pdp, bulk, now)
        if not held.allowed:
            bulks.reject(ctx, bulk, caller.claims.sub, "requester-not-allowed")
            await uow.commit()
            raise BulkRejected(
                "the requester may no longer send this bulk command",
                reason="requester-not-allowed",
            )
        # The cars pay their per-vehicle limit when their jobs are created (now), not only
        # when the bulk was asked for: see bulks.charge_at_approval.
        answer = await bulks.charge_at_approval(runtime.quotas, bulk)
        if not answer.allowed:
            await uow.commit()  # the decisions' audit records; the bulk keeps waiting
            raise CommandRejectedQuota(
                "the bulk command's vehicles are over their command limit",
                reason=answer.reason,
                headers={"Retry-After": str(max(1, answer.retry_after_s))},
            )
        bulks.approve(ctx, bulk, caller.claims.sub, now)
        created = await bulks.dispatch(
            ctx,
            bulk,
            BY_PERMISSION[bulk.command],
            _service(ctx, runtime),
            tenants=await _tenants(ctx, bulk.vehicle_ids),
            reason=decision.reason.value,
            ttl_seconds=bulk.ttl_seconds,
        )
        # The approver's token, revoked while the approval waited to be judged (a stolen
        # admin token signed out everywhere), approves nothing.
        await require_still_valid(request, caller)
        await uow.commit()
        view = await _view(ctx, bulk, caller)
    _notify(runtime, created)
    return view


@router.post("/bulk-commands/{bulk_id}/reject", name="fleet:bulk-commands:reject")
@catalogued(_entry("the requester or another fleet admin turns a waiting bulk command down"))
async def reject_bulk(bulk_id: str, request: Request, caller: Caller = _FLEET) -> BulkView:
    return await judged_again(lambda: _reject_once(bulk_id, request, caller), StaleDataError)


async def _reject_once(bulk_id: str, request: Request, caller: Caller) -> BulkView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        bulk = await _visible_bulk(request, caller, ctx, bulk_id)
        # The requester's own turning down is decided too: one whose token outlived their
        # place in the fleet (or the group) decides nothing about the bulk any more.
        decision = await _may_decide(request, caller, ctx, bulk)
        if not decision.allowed:
            await uow.commit()  # the denied decision's audit record
            raise _bulk_refusal(decision)
        _still_waiting(bulk)
        bulks.reject(ctx, bulk, caller.claims.sub, "turned-down")
        await uow.commit()
        view = await _view(ctx, bulk, caller)
    return view


__all__ = ["router"]
