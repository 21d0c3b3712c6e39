"""Bulk commands: one fleet request, one job per vehicle.

A bulk request needs ``fleet:bulk_command`` for the command it sends (on the fleet, or on
one group for an operator), the command's own permission on every vehicle, and step-up; it
names at most ``max_bulk`` vehicles, every one of which must be the caller's to command (one
that is not refuses the whole request: nothing is created); it is charged against the quotas
for every vehicle at once. Above ``approval_threshold`` vehicles it waits, without any job,
for a second fleet admin (another person, in the same fleet, allowed the same bulk command,
with a fresh step-up) to approve it within ``approval_window``; then, or at once below the
threshold, one job per vehicle is created with the requester's grant and a chain whose links
up to the region are the bulk decision's. An approval first decides again whether the
requester may still send the bulk (:func:`requester_still_may`), then charges every
vehicle's command limit again (:func:`charge_at_approval`). Each job then meets its own
vehicle-state and conflict links, and the delivery re-check, which asks
:func:`requester_still_may` as well as the car's own question.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from fleetward.audit.events import Decision as AuditVerdict
from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.authz.decision import Decision, ResourceKind, ResourceRef
from fleetward.authz.pdp import CedarPdp
from fleetward.authz.permissions import Permission
from fleetward.commands.chain import PDP_LINKS, Chain, Link
from fleetward.commands.families import CommandSpec, ParameterValue
from fleetward.commands.models import BulkState, CommandBulk, CommandJob
from fleetward.commands.recheck import decide_again
from fleetward.commands.service import (
    CommandConfig,
    CommandQuotas,
    CommandService,
    Grant,
    NewCommand,
    QuotaAnswer,
)
from fleetward.core.digest import framed_sha256
from fleetward.core.errors import JsonValue
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.services import ServiceContext


@dataclass(frozen=True, slots=True)
class BulkAsk:
    spec: CommandSpec
    parameters: dict[str, ParameterValue]
    vehicle_ids: tuple[str, ...]
    group_id: str | None
    idempotency_key: str
    ttl_seconds: int | None


# The version of the bulk request hash (a stored bulk from before it no longer matches a
# retry of itself: the retry is a 409, never a replay of another request).
_BULK_HASH_FORMAT: Final = "fleetward:bulk-request:v2"


def bulk_hash(ask: BulkAsk) -> str:
    """SHA-256 of every field of the ask a retry must repeat: what "the same body" means for
    a bulk's Idempotency-Key. Each field is framed by its length (``framed_sha256``), and the
    vehicle ids are counted and framed one by one: a vehicle id is any printable text
    (``LooseId``), commas included, so ``["A,B"]`` and ``["A", "B"]`` never hash alike (a
    joined list did: the second was served as the first's replay instead of a 409). The
    order of the vehicles counts (it is the order the jobs are created in)."""
    parameters = json.dumps(ask.parameters, sort_keys=True, separators=(",", ":"))
    return framed_sha256(
        [
            _BULK_HASH_FORMAT,
            ask.spec.name,
            parameters,
            "ttl:none" if ask.ttl_seconds is None else f"ttl:{ask.ttl_seconds}",
            "group:none" if ask.group_id is None else "group:id",
            ask.group_id or "",
            str(len(ask.vehicle_ids)),
            *ask.vehicle_ids,
        ]
    )


def new_bulk(
    ctx: ServiceContext, grant: Grant, ask: BulkAsk, config: CommandConfig, *, needs_approval: bool
) -> CommandBulk:
    now = ctx.clock.now()
    bulk = CommandBulk(
        id=new_id("blk"),
        tenant_id=grant.tenant,
        command=ask.spec.permission.value,
        parameters=dict(ask.parameters),
        vehicle_ids=list(ask.vehicle_ids),
        state=BulkState.AWAITING_APPROVAL if needs_approval else BulkState.DISPATCHED,
        requested_by=grant.sub,
        client_id=grant.client_id,
        idempotency_key=ask.idempotency_key,
        request_hash=bulk_hash(ask),
        token_id=grant.token_id,
        token_family=grant.token_family,
        ttl_seconds=ask.ttl_seconds,
        group_id=ask.group_id,
        token_scopes=sorted(grant.scopes),
        acr=grant.acr,
        auth_time=grant.auth_time,
        created_at=now,
        approval_expires_at=now + config.approval_window,
    )
    ctx.session.add(bulk)
    _record(ctx, bulk, EventName.BULK_COMMAND_REQUESTED, Actor.user(grant.sub, grant.tenant))
    return bulk


def grant_of(bulk: CommandBulk) -> Grant:
    """The requester's grant, as the bulk request stored it."""
    return Grant(
        sub=bulk.requested_by,
        sub_type="user",
        client_id=bulk.client_id,
        token_id=bulk.token_id,
        token_family=bulk.token_family,
        tenant=bulk.tenant_id,
        scopes=frozenset(bulk.token_scopes),
        acr=bulk.acr,
        auth_time=bulk.auth_time,
        surface=Surface.FLEET,
    )


def prejudged(reason: str, approved_by: str | None) -> Chain:
    """The links a bulk decision establishes for each of its jobs. The approval link's
    detail is the approver's user id, for the store and the audit: job views show it to the
    approver alone (``api.history_views.chain_link_view``)."""
    chain = Chain()
    chain.ok(Link.CLIENT, "bulk request")
    for link in PDP_LINKS:
        chain.ok(link, f"bulk:{reason}")
    if approved_by is not None:
        chain.ok(Link.APPROVAL, approved_by)
    return chain


async def dispatch(
    ctx: ServiceContext,
    bulk: CommandBulk,
    spec: CommandSpec,
    service: CommandService,
    *,
    tenants: dict[str, str],
    reason: str,
    ttl_seconds: int | None = None,
) -> list[CommandJob]:
    """One job per vehicle (``tenants``: vehicle id -> its tenant). The caller commits."""
    grant = grant_of(bulk)
    links = prejudged(reason, bulk.approved_by)
    created: list[CommandJob] = []
    for vehicle_id in bulk.vehicle_ids:
        job, _chain = await service.create(
            grant,
            NewCommand(
                vehicle_id=vehicle_id,
                spec=spec,
                parameters=dict(bulk.parameters),
                idempotency_key=None,
                request_hash=bulk.request_hash,
                ttl=timedelta(seconds=ttl_seconds) if ttl_seconds else None,
                bulk_id=bulk.id,
            ),
            tenant_id=tenants[vehicle_id],
            prejudged=links,
        )
        created.append(job)
    bulk.state = BulkState.DISPATCHED
    _record(
        ctx,
        bulk,
        EventName.BULK_COMMAND_DISPATCHED,
        Actor.system("command-service"),
        {"jobs": len(created)},
    )
    return created


def asked_on(bulk: CommandBulk) -> ResourceRef:
    """What the bulk was asked on: the group it names, or the whole fleet."""
    if bulk.group_id is not None:
        return ResourceRef(ResourceKind.FLEET_GROUP, bulk.group_id)
    return ResourceRef(ResourceKind.TENANT, bulk.tenant_id)


async def requester_still_may(
    ctx: ServiceContext, pdp: CedarPdp, bulk: CommandBulk, now: datetime
) -> Decision:
    """May the requester still send this bulk (``fleet:bulk_command`` for its command, on the
    fleet or the group it was asked on), decided now with the request's token facts? Asked
    at approval: a requester demoted or moved off the group while the bulk waited has
    nothing approved, even where each car's own command would still be theirs to send
    (an operator never immobilises in bulk). Step-up was the request's link: it is not
    asked again (as at delivery)."""
    return await decide_again(
        ctx,
        pdp,
        user_id=bulk.requested_by,
        permission=Permission.FLEET_BULK_COMMAND,
        resource=asked_on(bulk),
        tenant_id=bulk.tenant_id,
        scopes=bulk.token_scopes,
        acr=bulk.acr,
        now=now,
        command=Permission(bulk.command),
    )


async def charge_at_approval(quotas: CommandQuotas, bulk: CommandBulk) -> QuotaAnswer:
    """Charge each vehicle of an approved bulk its per-vehicle command limit, now, all or
    nothing; the approval goes ahead only if this is allowed.

    The per-vehicle limit (``vehicle-commands``, 10 a minute by default) bounds what one car
    is sent, whoever sends it: it has to be drawn when the car's job is created, and that is
    when the bulk is dispatched. A bulk dispatched at once is charged once, when it is asked
    for (the same moment). A bulk that waits for a second admin was charged then too, but
    its jobs come up to ``approval_window`` later, when that charge says nothing about the
    minute they are sent in: with it alone, bulks asked for over an hour (each within the
    limit when asked) and approved together sent every car far more than its limit in one
    minute. So an approval charges the cars again, as well as at the request: charging only
    here would let anyone queue unlimited waiting bulks on a car, and charging only at the
    request is the burst above. Counting a waiting bulk twice can only refuse earlier, never
    send more than the limit. Refused (429 with Retry-After), the approval changes nothing:
    the bulk keeps waiting and can be approved again once the cars have room. Only the
    vehicle limit is drawn again: the requester's command-type limit paid for the request
    and the approver sends nothing of their own."""
    return await quotas.charge_vehicles(grant_of(bulk), list(bulk.vehicle_ids))


def approve(ctx: ServiceContext, bulk: CommandBulk, approver: str, now: datetime) -> None:
    bulk.approved_by = approver
    bulk.approved_at = now
    _record(ctx, bulk, EventName.BULK_COMMAND_APPROVED, Actor.user(approver, bulk.tenant_id))


def refuse_approval(ctx: ServiceContext, bulk: CommandBulk, by: str, reason: str) -> None:
    """An approval refused for who asked (the requester's own: the four-eyes rule held),
    audited as the denial it is; the bulk itself is unchanged and keeps waiting."""
    _record(
        ctx,
        bulk,
        EventName.BULK_COMMAND_APPROVAL_REFUSED,
        Actor.user(by, bulk.tenant_id),
        denied=True,
        reason=reason,
    )


def reject(ctx: ServiceContext, bulk: CommandBulk, by: str, reason: str) -> None:
    bulk.state = BulkState.REJECTED if reason != "approval-expired" else BulkState.EXPIRED
    bulk.decided_reason = reason
    _record(ctx, bulk, EventName.BULK_COMMAND_REJECTED, Actor.user(by, bulk.tenant_id), denied=True)


def _record(
    ctx: ServiceContext,
    bulk: CommandBulk,
    name: EventName,
    actor: Actor,
    extra: dict[str, JsonValue] | None = None,
    *,
    denied: bool = False,
    reason: str | None = None,
) -> None:
    vehicles: Sequence[str] = bulk.vehicle_ids
    ctx.audit.record(
        ctx.session,
        name,
        actor=actor,
        target=Target("bulk_command", bulk.id, bulk.tenant_id),
        decision=AuditVerdict.DENIED if denied else AuditVerdict.ALLOWED,
        reason=reason or bulk.decided_reason,
        details={
            "command": bulk.command,
            "vehicles": len(vehicles),
            "requested_by": bulk.requested_by,
            "approved_by": bulk.approved_by,
            **(extra or {}),
        },
    )
