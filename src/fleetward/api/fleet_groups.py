"""Fleet groups, the vehicles in them, operator assignments and fleet members (``/fleet/v1``).

Who may do what (docs/authorization.md, policy ``fleet-admin-*``):

* a fleet admin manages the groups and members of the fleet their token names:
  ``fleet:manage_groups`` / ``fleet:manage_members`` on the fleet tenant (a function: 403 for
  anyone else), and ``fleet:manage_groups`` on each group (an object: another fleet's group,
  or a group that does not exist, is the same 404);
* a fleet operator reads the groups they are assigned to now, and their vehicles
  (``fleet:read_groups``, policy ``fleet-operator-group``); a fleet admin reads them all.

Children are always loaded with their parent in the WHERE clause; vehicle ids in bodies are
checked exactly like ids in paths, and one bad id refuses the whole request.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import Depends, Request, Response
from pydantic import BaseModel, Field, StringConstraints
from sqlalchemy import and_, func, or_, select

from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import NotPermitted, authorize, decide_many, not_found
from fleetward.api.bodies import ObjectId as Id
from fleetward.api.bodies import StrictBody
from fleetward.api.objects import (
    Cursor,
    Limit,
    Page,
    cut_page,
    decode_cursor,
    encode_cursor,
    object_entry,
    page_size,
    platform_of,
)
from fleetward.api.routing import surface_router
from fleetward.audit.recorder import Actor
from fleetward.authz.decision import Reason, ResourceKind, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CatalogEntry, DataClass, Impact, catalogued
from fleetward.core.errors import Conflict, InvalidInput
from fleetward.core.surfaces import Surface
from fleetward.identity.models import Membership, Role, Tenant, User
from fleetward.services import ServiceContext
from fleetward.store.uow import UnitOfWork
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.models import (
    FleetGroup,
    FleetVehicle,
    GroupVehicle,
    OperatorAssignment,
    Vehicle,
)

OWNER: Final = "fleet-team"
MAX_BATCH: Final = 100
GROUPS: Final = Permission.FLEET_MANAGE_GROUPS
READ: Final = Permission.FLEET_READ_GROUPS
MEMBERS: Final = Permission.FLEET_MANAGE_MEMBERS
# A denial that says only "no permit applies" to a principal the PDP accepted.
_SOUND_DENIAL: Final = frozenset({Reason.NO_RELATIONSHIP})

GroupName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
]

router = surface_router(Surface.FLEET)
authenticated = Depends(authenticate(Surface.FLEET))


# ----------------------------------------------------------------------------- views, bodies


class GroupView(BaseModel):
    id: str
    name: str
    created_at: datetime


class GroupVehicleView(BaseModel):
    id: str
    label: str


class OperatorView(BaseModel):
    assignment_id: str
    user_id: str
    username: str
    display_name: str
    assigned_at: datetime


class MemberView(BaseModel):
    membership_id: str
    user_id: str
    username: str
    display_name: str
    role: Role
    valid_from: datetime
    valid_until: datetime | None


class AddedVehicles(BaseModel):
    group_id: str
    vehicle_ids: list[str]


class GroupBody(StrictBody):
    name: GroupName


class VehicleIdsBody(StrictBody):
    vehicle_ids: Annotated[list[Id], Field(min_length=1, max_length=MAX_BATCH)]


class OperatorBody(StrictBody):
    user_id: Id


# ----------------------------------------------------------------------------- helpers


def _entry(
    purpose: str,
    permission: Permission,
    data_class: DataClass = DataClass.INTERNAL,
    *,
    objects: tuple[str, ...] = ("fleet_group",),
    writes: bool = False,
    rate: int = 60,
) -> CatalogEntry:
    impact = {Impact.OPERATIONAL} | (
        {Impact.PRIVACY} if data_class is DataClass.PERSONAL else set()
    )
    return object_entry(
        Surface.FLEET,
        purpose,
        permission,
        data_class,
        owner=OWNER,
        objects=objects,
        tags=("fleet",),
        impact=frozenset(impact),
        rate=rate if not writes else min(rate, 30),
    )


def _current(model: Any, now: datetime) -> Any:
    """A relation row in force at ``now`` (half-open window, open end allowed)."""
    return and_(model.valid_from <= now, or_(model.valid_until.is_(None), model.valid_until > now))


def _group_ref(group_id: str) -> ResourceRef:
    return ResourceRef(ResourceKind.FLEET_GROUP, group_id)


def _actor(caller: Caller) -> Actor:
    return Actor.user(caller.claims.sub, caller.claims.tenant)


def assigned_groups(caller: Caller, now: datetime) -> Any:
    """The ids of the groups the caller is assigned to now, as an operator of the fleet their
    token names: the relation the PDP reads for ``fleet-operator``, as a subquery."""
    return (
        select(OperatorAssignment.group_id)
        .join(FleetGroup, FleetGroup.id == OperatorAssignment.group_id)
        .join(
            Membership,
            and_(
                Membership.user_id == OperatorAssignment.user_id,
                Membership.tenant_id == FleetGroup.tenant_id,
            ),
        )
        .where(
            OperatorAssignment.user_id == caller.claims.sub,
            FleetGroup.tenant_id == caller.claims.tenant,
            Membership.role == Role.FLEET_OPERATOR,
            _current(OperatorAssignment, now),
            _current(Membership, now),
        )
    )


async def _refuse(uow: UnitOfWork, error: Exception) -> Exception:
    """Keep the denial's audit record (decided in the route's transaction), then refuse."""
    await uow.commit()
    return error


async def _require_fleet(
    request: Request, caller: Caller, permission: Permission, ctx: ServiceContext
) -> None:
    """A function of the fleet the token names: 403 for anyone who may never use it."""
    tenant = ResourceRef(ResourceKind.TENANT, caller.claims.tenant)
    await authorize(request, caller, permission, tenant, object_route=False, ctx=ctx)


async def _managed_group(
    request: Request, caller: Caller, group_id: str, ctx: ServiceContext, uow: UnitOfWork
) -> FleetGroup:
    """A group the caller manages: another fleet's or an unknown group is the same 404.

    Decided in the route's transaction, which already holds the function check's record
    (a second transaction writing beside it would wait on it with SQLite)."""
    (decision,) = await decide_many(request, caller, GROUPS, [_group_ref(group_id)], ctx=ctx)
    if not decision.allowed:
        raise await _refuse(uow, not_found())
    return await _load_group(ctx, caller, group_id)


async def _load_group(ctx: ServiceContext, caller: Caller, group_id: str) -> FleetGroup:
    group = await ctx.session.scalar(
        select(FleetGroup).where(
            FleetGroup.id == group_id, FleetGroup.tenant_id == caller.claims.tenant
        )
    )
    if group is None:  # the PDP saw it a moment ago, in this fleet
        raise not_found()
    return group


async def _readable_group(
    request: Request, caller: Caller, group_id: str, ctx: ServiceContext, uow: UnitOfWork
) -> FleetGroup:
    """A group the caller manages, or is assigned to now as an operator; else 404."""
    (decision,) = await decide_many(request, caller, READ, [_group_ref(group_id)], ctx=ctx)
    if not decision.allowed:
        raise await _refuse(uow, not_found())
    return await _load_group(ctx, caller, group_id)


def _group_view(group: FleetGroup) -> GroupView:
    return GroupView(id=group.id, name=group.name, created_at=group.created_at)


# ----------------------------------------------------------------------------- groups


@router.get("/groups", name="fleet:groups:list", response_model=Page[GroupView])
@catalogued(
    _entry(
        "the fleet's groups: all of them for an admin, the assigned ones for an operator",
        READ,
    )
)
async def list_groups(
    request: Request, caller: Caller = authenticated, limit: Limit = 50, cursor: Cursor = None
) -> Page[GroupView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        fleet = ResourceRef(ResourceKind.TENANT, caller.claims.tenant)
        (decision,) = await decide_many(request, caller, READ, [fleet], ctx=ctx)
        if decision.allowed:
            visible = FleetGroup.tenant_id == caller.claims.tenant
        elif decision.reason in _SOUND_DENIAL:
            visible = FleetGroup.id.in_(assigned_groups(caller, ctx.clock.now()))
        else:
            raise await _refuse(uow, NotPermitted("this operation is not permitted to the caller"))
        query = select(FleetGroup).where(visible)
        if after is not None:
            query = query.where(FleetGroup.id > after)
        rows = await ctx.session.scalars(query.order_by(FleetGroup.id).limit(size + 1))
        page, more = cut_page(list(rows), size)
        # Each row decided again: the query chose the candidates, the policy decides.
        rows_decided = await decide_many(
            request, caller, READ, [_group_ref(g.id) for g in page], ctx=ctx
        )
        await uow.commit()
    return Page[GroupView](
        items=[_group_view(g) for g, d in zip(page, rows_decided, strict=True) if d.allowed],
        next_cursor=encode_cursor(page[-1].id) if more else None,
    )


@router.post("/groups", name="fleet:groups:create", status_code=201, response_model=GroupView)
@catalogued(_entry("creates a group in the caller's fleet", GROUPS, writes=True))
async def create_group(
    body: GroupBody, request: Request, caller: Caller = authenticated
) -> GroupView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_fleet(request, caller, GROUPS, ctx)
        fleet = await ctx.session.get(Tenant, caller.claims.tenant)
        if fleet is None:  # the PDP saw it a moment ago
            raise NotPermitted("this operation is not permitted to the caller")
        group = await FleetService(ctx).create_group(fleet, body.name, actor=_actor(caller))
        await uow.commit()
    return _group_view(group)


@router.get("/groups/{group_id}", name="fleet:groups:read", response_model=GroupView)
@catalogued(_entry("one group of the caller's fleet", READ))
async def read_group(group_id: str, request: Request, caller: Caller = authenticated) -> GroupView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        group = await _readable_group(request, caller, group_id, ctx, uow)
        await uow.commit()
    return _group_view(group)


# ----------------------------------------------------------------------------- group vehicles


@router.get(
    "/groups/{group_id}/vehicles",
    name="fleet:groups:vehicles",
    response_model=Page[GroupVehicleView],
)
@catalogued(
    _entry("the vehicles in a group now: ids and labels", READ, objects=("fleet_group", "vehicle"))
)
async def list_group_vehicles(
    group_id: str,
    request: Request,
    caller: Caller = authenticated,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[GroupVehicleView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        group = await _readable_group(request, caller, group_id, ctx, uow)
        members = select(GroupVehicle.vehicle_id).where(
            GroupVehicle.group_id == group.id, _current(GroupVehicle, ctx.clock.now())
        )
        query = select(Vehicle).where(Vehicle.id.in_(members))
        if after is not None:
            query = query.where(Vehicle.id > after)
        rows = await ctx.session.scalars(query.order_by(Vehicle.id).limit(size + 1))
        page, more = cut_page(list(rows), size)
        decisions = await decide_many(
            request,
            caller,
            Permission.VEHICLE_READ_STATUS,
            [ResourceRef.vehicle(v.id) for v in page],
            ctx=ctx,
        )
        await uow.commit()
    items = [
        GroupVehicleView(id=v.id, label=v.label)
        for v, d in zip(page, decisions, strict=True)
        if d.allowed
    ]
    return Page[GroupVehicleView](
        items=items, next_cursor=encode_cursor(page[-1].id) if more else None
    )


@router.post(
    "/groups/{group_id}/vehicles",
    name="fleet:groups:vehicles:add",
    status_code=201,
    response_model=AddedVehicles,
)
@catalogued(
    _entry(
        f"adds 1 to {MAX_BATCH} vehicles of the fleet to a group; one bad id refuses all",
        GROUPS,
        objects=("fleet_group", "vehicle"),
        writes=True,
    )
)
async def add_group_vehicles(
    group_id: str, body: VehicleIdsBody, request: Request, caller: Caller = authenticated
) -> AddedVehicles:
    ids = list(body.vehicle_ids)
    if len(set(ids)) != len(ids):
        raise InvalidInput("each vehicle id may appear once", reason="duplicate-id")
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_fleet(request, caller, GROUPS, ctx)
        group = await _managed_group(request, caller, group_id, ctx, uow)
        # Ids in the body are checked like ids in paths: by the PDP, each one.
        decisions = await decide_many(
            request,
            caller,
            Permission.VEHICLE_READ_STATUS,
            [ResourceRef.vehicle(i) for i in ids],
            ctx=ctx,
        )
        now = ctx.clock.now()
        in_fleet = await ctx.session.scalars(
            select(Vehicle)
            .join(FleetVehicle, FleetVehicle.vehicle_id == Vehicle.id)
            .where(
                Vehicle.id.in_(ids),
                FleetVehicle.tenant_id == group.tenant_id,
                _current(FleetVehicle, now),
            )
        )
        vehicles = {v.id: v for v in in_fleet}
        if not all(d.allowed for d in decisions) or set(vehicles) != set(ids):
            raise await _refuse(uow, not_found())
        already = await ctx.session.scalar(
            select(func.count(GroupVehicle.id)).where(
                GroupVehicle.group_id == group.id,
                GroupVehicle.vehicle_id.in_(ids),
                _current(GroupVehicle, now),
            )
        )
        if already:
            raise await _refuse(
                uow, Conflict("a vehicle is already in this group", reason="already-in-group")
            )
        fleets = FleetService(ctx)
        for vehicle_id in ids:
            await fleets.add_to_group(group, vehicles[vehicle_id], actor=_actor(caller))
        await uow.commit()
    return AddedVehicles(group_id=group.id, vehicle_ids=ids)


@router.delete(
    "/groups/{group_id}/vehicles/{vehicle_id}",
    name="fleet:groups:vehicles:remove",
    status_code=204,
    response_class=Response,
)
@catalogued(
    _entry(
        "takes a vehicle out of a group",
        GROUPS,
        objects=("fleet_group", "vehicle"),
        writes=True,
    )
)
async def remove_group_vehicle(
    group_id: str, vehicle_id: str, request: Request, caller: Caller = authenticated
) -> Response:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_fleet(request, caller, GROUPS, ctx)
        group = await _managed_group(request, caller, group_id, ctx, uow)
        link = await ctx.session.scalar(
            select(GroupVehicle).where(
                GroupVehicle.group_id == group.id,
                GroupVehicle.vehicle_id == vehicle_id,
                _current(GroupVehicle, ctx.clock.now()),
            )
        )
        # Removed meanwhile by a request that committed after this one read the link: the
        # same 404 as a link already closed when it was read.
        if link is None or not await FleetService(ctx).remove_from_group(
            group, link, actor=_actor(caller)
        ):
            raise await _refuse(uow, not_found())
        await uow.commit()
    return Response(status_code=204)


# ----------------------------------------------------------------------------- operators


@router.get(
    "/groups/{group_id}/operators",
    name="fleet:groups:operators",
    response_model=Page[OperatorView],
)
@catalogued(
    _entry(
        "the operators assigned to a group now",
        MEMBERS,
        DataClass.PERSONAL,
        objects=("fleet_group", "operator_assignment"),
    )
)
async def list_operators(
    group_id: str,
    request: Request,
    caller: Caller = authenticated,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[OperatorView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        await _require_fleet(request, caller, MEMBERS, ctx)
        group = await _managed_group(request, caller, group_id, ctx, uow)
        query = (
            select(OperatorAssignment, User)
            .join(User, User.id == OperatorAssignment.user_id)
            .where(
                OperatorAssignment.group_id == group.id,
                _current(OperatorAssignment, ctx.clock.now()),
            )
        )
        if after is not None:
            query = query.where(OperatorAssignment.id > after)
        rows = await ctx.session.execute(query.order_by(OperatorAssignment.id).limit(size + 1))
        page, more = cut_page(list(rows.all()), size)
        await uow.commit()
    return Page[OperatorView](
        items=[_operator_view(a, u) for a, u in page],
        next_cursor=encode_cursor(page[-1][0].id) if more else None,
    )


def _operator_view(assignment: OperatorAssignment, user: User) -> OperatorView:
    return OperatorView(
        assignment_id=assignment.id,
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        assigned_at=assignment.valid_from,
    )


@router.post(
    "/groups/{group_id}/operators",
    name="fleet:groups:operators:assign",
    status_code=201,
    response_model=OperatorView,
)
@catalogued(
    _entry(
        "assigns an operator of the fleet to a group",
        MEMBERS,
        DataClass.PERSONAL,
        objects=("fleet_group", "operator_assignment"),
        writes=True,
    )
)
async def assign_operator(
    group_id: str, body: OperatorBody, request: Request, caller: Caller = authenticated
) -> OperatorView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_fleet(request, caller, MEMBERS, ctx)
        group = await _managed_group(request, caller, group_id, ctx, uow)
        now = ctx.clock.now()
        # Someone who is not a member of this fleet now is not found: the id says nothing.
        user = await ctx.session.scalar(
            select(User)
            .join(Membership, Membership.user_id == User.id)
            .where(
                User.id == body.user_id,
                User.disabled_at.is_(None),
                Membership.tenant_id == group.tenant_id,
                _current(Membership, now),
            )
            .limit(1)
        )
        if user is None:
            raise await _refuse(uow, not_found())
        taken = await ctx.session.scalar(
            select(OperatorAssignment.id).where(
                OperatorAssignment.group_id == group.id,
                OperatorAssignment.user_id == user.id,
                _current(OperatorAssignment, now),
            )
        )
        if taken is not None:
            raise await _refuse(
                uow, Conflict("the operator is already assigned to this group", reason="assigned")
            )
        assignment = await FleetService(ctx).assign_operator(group, user, actor=_actor(caller))
        await uow.commit()
    return _operator_view(assignment, user)


@router.delete(
    "/groups/{group_id}/operators/{assignment_id}",
    name="fleet:groups:operators:unassign",
    status_code=204,
    response_class=Response,
)
@catalogued(
    _entry(
        "ends an operator's assignment to a group; their access to its vehicles ends with it",
        MEMBERS,
        objects=("fleet_group", "operator_assignment"),
        writes=True,
    )
)
async def unassign_operator(
    group_id: str, assignment_id: str, request: Request, caller: Caller = authenticated
) -> Response:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_fleet(request, caller, MEMBERS, ctx)
        group = await _managed_group(request, caller, group_id, ctx, uow)
        assignment = await ctx.session.scalar(
            select(OperatorAssignment).where(
                OperatorAssignment.id == assignment_id,
                OperatorAssignment.group_id == group.id,
                _current(OperatorAssignment, ctx.clock.now()),
            )
        )
        # Ended meanwhile by a request that committed after this one read it: the same 404
        # as an assignment already ended when it was read.
        if assignment is None or not await FleetService(ctx).unassign_operator(
            assignment, actor=_actor(caller)
        ):
            raise await _refuse(uow, not_found())
        await uow.commit()
    return Response(status_code=204)


# ----------------------------------------------------------------------------- members


@router.get("/members", name="fleet:members:list", response_model=Page[MemberView])
@catalogued(
    _entry(
        "the fleet's members now and their roles (no credentials)",
        MEMBERS,
        DataClass.PERSONAL,
        objects=("membership",),
    )
)
async def list_members(
    request: Request, caller: Caller = authenticated, limit: Limit = 50, cursor: Cursor = None
) -> Page[MemberView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        await _require_fleet(request, caller, MEMBERS, ctx)
        query = (
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(
                Membership.tenant_id == caller.claims.tenant,
                _current(Membership, ctx.clock.now()),
            )
        )
        if after is not None:
            query = query.where(Membership.id > after)
        rows = await ctx.session.execute(query.order_by(Membership.id).limit(size + 1))
        page, more = cut_page(list(rows.all()), size)
        await uow.commit()
    items = [
        MemberView(
            membership_id=m.id,
            user_id=u.id,
            username=u.username,
            display_name=u.display_name,
            role=m.role,
            valid_from=m.valid_from,
            valid_until=m.valid_until,
        )
        for m, u in page
    ]
    return Page[MemberView](
        items=items, next_cursor=encode_cursor(page[-1][0].id) if more else None
    )


__all__ = ["assigned_groups", "router"]
