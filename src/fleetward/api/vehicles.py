"""Vehicle object routes on the mobile, fleet, dealer and partner surfaces.

Every route authenticates for its surface (the catalog permission must be in scope) and asks
the PDP about the vehicle (:func:`fleetward.api.authorize.authorize`); an unknown vehicle and
a vehicle the caller may not see answer the same 404. Lists are filtered in the query to the
vehicles the caller has a relationship with, and each row is decided again by the PDP. Fields
follow permissions: location only with ``vehicle:read_location``; partners get minimised
fields (``Obligation.MINIMISE_FIELDS``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import BindParameter, and_, bindparam, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.abuse.policy import Degrade, Flow
from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import authorize, decide_many, not_found
from fleetward.api.history_records import MINIMISED
from fleetward.api.objects import (
    Cursor,
    Limit,
    decode_cursor,
    encode_cursor,
    object_entry,
    page_size,
    platform_of,
)
from fleetward.api.quota_guard import charge_flow
from fleetward.api.routing import surface_router
from fleetward.authz.decision import ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, catalogued
from fleetward.core.surfaces import Surface
from fleetward.identity.models import Membership, Role
from fleetward.services import ServiceContext
from fleetward.store.reads import read_rows
from fleetward.telemetry.models import TelemetryMessage
from fleetward.vehicles.history import history_since
from fleetward.vehicles.models import (
    DriverDelegation,
    FleetGroup,
    FleetVehicle,
    GroupVehicle,
    OperatorAssignment,
    Ownership,
    Vehicle,
)

OWNER: Final = "authz-team"
_LOCATION_PREFIX: Final = "Vehicle.CurrentLocation."


class VehicleView(BaseModel):
    id: str
    vin: str
    label: str
    model: str
    region: str


class LocationView(BaseModel):
    latitude: float | None
    longitude: float | None
    heading: float | None
    recorded_at: str | None


class VehicleDetail(VehicleView):
    # Present only when the caller may read the location (vehicle:read_location).
    location: LocationView | None = None


class VehiclePage(BaseModel):
    items: list[VehicleView]
    next_cursor: str | None


class StateView(BaseModel):
    recorded_at: str
    signals: dict[str, Any]


class StatusView(BaseModel):
    id: str
    label: str
    model: str
    region: str
    state: StateView | None


class MinimisedStatusView(BaseModel):
    """What a partner sees: the vehicle id and non-location signals, nothing about people."""

    id: str
    state: StateView | None


def _entry(
    surface: Surface,
    purpose: str,
    permission: Permission,
    data_class: DataClass,
    *,
    caller: CallerType = CallerType.USER,
    rate: int = 60,
    degrade: Degrade = Degrade.FAIL_CLOSED,
) -> CatalogEntry:
    entry = object_entry(
        surface,
        purpose,
        permission,
        data_class,
        owner=OWNER,
        objects=("vehicle",),
        tags=("vehicles",),
        caller=caller,
        rate=rate,
    )
    return replace(entry, degrade=degrade)


async def _latest(
    session: AsyncSession, vehicle_id: str, since: datetime | None = None
) -> TelemetryMessage | None:
    """The vehicle's newest accepted message (``since``: reported at or after it)."""
    query = select(TelemetryMessage).where(TelemetryMessage.vehicle_id == vehicle_id)
    if since is not None:
        query = query.where(TelemetryMessage.device_time >= since)
    found: TelemetryMessage | None = await session.scalar(
        query.order_by(TelemetryMessage.device_time.desc()).limit(1)
    )
    return found


async def _latest_fix(
    ctx: ServiceContext, caller: Caller, vehicle_id: str
) -> TelemetryMessage | None:
    """The vehicle's newest message within the caller's window on its location (as
    :func:`fleetward.vehicles.history.history_since` bounds trips): the current location is
    the newest point of the location history, and a fix reported before the caller's
    relationship began (where the seller parked the car, where the owner was before a
    driver's window opened) is not theirs to see."""
    since = await history_since(
        ctx, caller.claims, vehicle_id, permission=Permission.VEHICLE_READ_LOCATION
    )
    return None if since is None else await _latest(ctx.session, vehicle_id, since)


def _state(message: TelemetryMessage | None) -> StateView | None:
    if message is None:
        return None
    signals = {k: v for k, v in message.signals.items() if not k.startswith(_LOCATION_PREFIX)}
    return StateView(recorded_at=message.device_time.isoformat(), signals=signals)


def _location(message: TelemetryMessage | None) -> LocationView:
    signals = message.signals if message is not None else {}

    def number(name: str) -> float | None:
        value = signals.get(_LOCATION_PREFIX + name)
        return float(value) if isinstance(value, int | float) else None

    return LocationView(
        latitude=number("Latitude"),
        longitude=number("Longitude"),
        heading=number("Heading"),
        recorded_at=message.device_time.isoformat() if message is not None else None,
    )


def _view(vehicle: Vehicle) -> VehicleView:
    return VehicleView(
        id=vehicle.id,
        vin=vehicle.vin,
        label=vehicle.label,
        model=vehicle.model,
        region=vehicle.region,
    )


def _in_force(model: Any, now: Any) -> Any:
    """A relation row in force at ``now`` (half-open window, open end allowed)."""
    return and_(model.valid_from <= now, or_(model.valid_until.is_(None), model.valid_until > now))


def related_vehicles(caller: Caller, now: Any) -> Any:
    """Vehicles this person has some relationship with now, as a WHERE clause. A superset
    of what they may read (the PDP decides each row); never another person's list."""
    sub = caller.claims.sub
    owned = select(Ownership.vehicle_id).where(
        Ownership.owner_user_id == sub,
        Ownership.valid_from <= now,
        or_(Ownership.valid_until.is_(None), Ownership.valid_until > now),
    )
    driven = select(DriverDelegation.vehicle_id).where(
        DriverDelegation.driver_user_id == sub,
        DriverDelegation.revoked_at.is_(None),
        DriverDelegation.valid_from <= now,
        DriverDelegation.valid_until > now,
    )
    # A fleet admin's fleet is every vehicle of it; an operator's, the vehicles of the groups
    # they are assigned to now. Cut here, in the query, so that a page (and its cursor) never
    # holds another group's vehicle for the per-row decision to drop.
    tenant = caller.claims.tenant
    fleet_admin = (
        select(Membership.id)
        .where(
            Membership.user_id == sub,
            Membership.tenant_id == tenant,
            Membership.role == Role.FLEET_ADMIN,
            _in_force(Membership, now),
        )
        .exists()
    )
    assigned = (
        select(GroupVehicle.vehicle_id)
        .join(OperatorAssignment, OperatorAssignment.group_id == GroupVehicle.group_id)
        .join(FleetGroup, FleetGroup.id == GroupVehicle.group_id)
        .where(
            OperatorAssignment.user_id == sub,
            FleetGroup.tenant_id == tenant,
            _in_force(OperatorAssignment, now),
            _in_force(GroupVehicle, now),
        )
    )
    fleet = select(FleetVehicle.vehicle_id).where(
        FleetVehicle.tenant_id == tenant,
        _in_force(FleetVehicle, now),
        or_(fleet_admin, FleetVehicle.vehicle_id.in_(assigned)),
    )
    return or_(Vehicle.id.in_(owned), Vehicle.id.in_(driven), Vehicle.id.in_(fleet))


def _object_routes(surface: Surface) -> APIRouter:
    """List, read, status and location for a person's own vehicles (mobile, fleet)."""
    router = surface_router(surface)
    authenticated = Depends(authenticate(surface))

    @router.get("/vehicles", name=f"{surface.value}:vehicles:list", response_model=VehiclePage)
    @catalogued(
        _entry(
            surface,
            "the vehicles the caller may read, a page at a time",
            Permission.VEHICLE_READ_STATUS,
            DataClass.PERSONAL,
            degrade=Degrade.LOCAL_LIMIT,  # a plain read: stays up on local limits
        )
    )
    async def list_vehicles(
        request: Request,
        caller: Caller = authenticated,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> VehiclePage:
        platform = platform_of(request)
        size = page_size(platform, limit)
        after = decode_cursor(cursor)
        if caller.claims.sub_type != "user":
            return VehiclePage(items=[], next_cursor=None)
        async with platform.services() as (uow, ctx):
            query = select(Vehicle).where(related_vehicles(caller, ctx.clock.now()))
            if after is not None:
                query = query.where(Vehicle.id > after)
            rows = list(await ctx.session.scalars(query.order_by(Vehicle.id).limit(size + 1)))
            page, more = rows[:size], len(rows) > size
            decisions = await decide_many(
                request,
                caller,
                Permission.VEHICLE_READ_STATUS,
                [ResourceRef.vehicle(v.id) for v in page],
                ctx=ctx,
            )
            await uow.commit()  # the decisions' audit records
        items = [_view(v) for v, d in zip(page, decisions, strict=True) if d.allowed]
        return VehiclePage(items=items, next_cursor=encode_cursor(page[-1].id) if more else None)

    @router.get(
        "/vehicles/{vehicle_id}",
        name=f"{surface.value}:vehicles:read",
        response_model=VehicleDetail,
        response_model_exclude_none=True,
    )
    @catalogued(
        _entry(
            surface,
            "one vehicle; its location only when the caller may read it",
            Permission.VEHICLE_READ_STATUS,
            DataClass.PERSONAL,
        )
    )
    async def read_vehicle(
        vehicle_id: str, request: Request, caller: Caller = authenticated
    ) -> VehicleDetail:
        platform = platform_of(request)
        async with platform.services() as (uow, ctx):
            resource = ResourceRef.vehicle(vehicle_id)
            await authorize(request, caller, Permission.VEHICLE_READ_STATUS, resource, ctx=ctx)
            vehicle = await ctx.session.get(Vehicle, vehicle_id)
            if vehicle is None:  # the PDP saw it a moment ago
                raise not_found()
            (location,) = await decide_many(
                request, caller, Permission.VEHICLE_READ_LOCATION, [resource], ctx=ctx
            )
            where = (
                _location(await _latest_fix(ctx, caller, vehicle.id)) if location.allowed else None
            )
            await uow.commit()
        if where is not None:
            # The same current location as GET .../location: it pays the same flow, or this
            # route would be the way around the bulk-location limit. Charged once the
            # transaction has ended (a refusal records its audit event in one of its own) and
            # before anything is returned.
            await charge_flow(request, caller, Flow.BULK_LOCATION)
        return VehicleDetail(**_view(vehicle).model_dump(), location=where)

    @router.get(
        "/vehicles/{vehicle_id}/status",
        name=f"{surface.value}:vehicles:status",
        response_model=StatusView,
    )
    @catalogued(
        _entry(
            surface,
            "a vehicle's registry fields and latest reported state (no location)",
            Permission.VEHICLE_READ_STATUS,
            DataClass.VEHICLE_STATE,
            degrade=Degrade.LOCAL_LIMIT,  # a plain read: stays up on local limits
        )
    )
    async def read_status(
        vehicle_id: str, request: Request, caller: Caller = authenticated
    ) -> StatusView:
        return await vehicle_status(request, caller, vehicle_id)

    @router.get(
        "/vehicles/{vehicle_id}/location",
        name=f"{surface.value}:vehicles:location",
        response_model=LocationView,
    )
    @catalogued(
        _entry(
            surface,
            "a vehicle's current location",
            Permission.VEHICLE_READ_LOCATION,
            DataClass.LOCATION,
            rate=30,
        )
    )
    async def read_location(
        vehicle_id: str, request: Request, caller: Caller = authenticated
    ) -> LocationView:
        await charge_flow(request, caller, Flow.BULK_LOCATION)
        platform = platform_of(request)
        async with platform.services() as (uow, ctx):
            await authorize(
                request,
                caller,
                Permission.VEHICLE_READ_LOCATION,
                ResourceRef.vehicle(vehicle_id),
                ctx=ctx,
            )
            view = _location(await _latest_fix(ctx, caller, vehicle_id))
            await uow.commit()
        return view

    return router


def _status_query() -> Any:
    """The vehicle's registry fields and its latest message in one statement (one store
    round trip fewer on the hottest read): the vehicle LEFT JOIN its latest message. Built
    once, bound per request (``vehicle_id``)."""
    vehicle_id: BindParameter[str] = bindparam("vehicle_id")
    latest = (
        select(TelemetryMessage.device_time, TelemetryMessage.signals)
        .where(TelemetryMessage.vehicle_id == vehicle_id)
        .order_by(TelemetryMessage.device_time.desc())
        .limit(1)
        .subquery()
    )
    return (
        select(
            Vehicle.id,
            Vehicle.label,
            Vehicle.model,
            Vehicle.region,
            latest.c.device_time,
            latest.c.signals,
        )
        .outerjoin(latest, true())
        .where(Vehicle.id == vehicle_id)
    )


_STATUS: Final = _status_query()


async def vehicle_status(request: Request, caller: Caller, vehicle_id: str) -> StatusView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        # This view is neither minimised nor pseudonymised: it applies no obligation, so an
        # allow that asks for either is refused like a deny (fail closed, as everywhere).
        await authorize(
            request,
            caller,
            Permission.VEHICLE_READ_STATUS,
            ResourceRef.vehicle(vehicle_id),
            ctx=ctx,
        )
        rows = await read_rows(ctx.session, _STATUS, {"vehicle_id": vehicle_id})
        if not rows:  # the PDP saw it a moment ago
            raise not_found()
        await uow.commit()
    vid, label, model, region, recorded_at, signals = rows[0]
    state = None
    if recorded_at is not None:
        shown = {k: v for k, v in signals.items() if not k.startswith(_LOCATION_PREFIX)}
        state = StateView(recorded_at=recorded_at.isoformat(), signals=shown)
    return StatusView(id=vid, label=label, model=model, region=region, state=state)


# ----------------------------------------------------------------------------- dealer

dealer_router = surface_router(Surface.DEALER)
_DEALER = Depends(authenticate(Surface.DEALER))


@dealer_router.get("/vehicles/{vehicle_id}", name="dealer:vehicles:read", response_model=StatusView)
@catalogued(
    _entry(
        Surface.DEALER,
        "a vehicle under an open case assigned to the technician: registry fields and state",
        Permission.VEHICLE_READ_STATUS,
        DataClass.VEHICLE_STATE,
        rate=30,
    )
)
async def dealer_read_vehicle(
    vehicle_id: str, request: Request, caller: Caller = _DEALER
) -> StatusView:
    return await vehicle_status(request, caller, vehicle_id)


# ----------------------------------------------------------------------------- partner

partner_router = surface_router(Surface.PARTNER)
_PARTNER = Depends(authenticate(Surface.PARTNER))


@partner_router.get(
    "/vehicles/{vehicle_id}/status",
    name="partner:vehicles:status",
    response_model=MinimisedStatusView,
)
@catalogued(
    _entry(
        Surface.PARTNER,
        "a consented vehicle's latest state, minimised (no registry or personal fields)",
        Permission.VEHICLE_READ_STATUS,
        DataClass.VEHICLE_STATE,
        caller=CallerType.PARTNER,
        rate=30,
    )
)
async def partner_read_status(
    vehicle_id: str, request: Request, caller: Caller = _PARTNER
) -> MinimisedStatusView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        # Minimised and nothing else: any other obligation is refused like a deny.
        await authorize(
            request,
            caller,
            Permission.VEHICLE_READ_STATUS,
            ResourceRef.vehicle(vehicle_id),
            ctx=ctx,
            applies=MINIMISED,
        )
        # Only what the car reported within the consent: a state from before the owner
        # consented is not the partner's to see (history is bounded the same way).
        since = await history_since(
            ctx, caller.claims, vehicle_id, permission=Permission.VEHICLE_READ_STATUS
        )
        state = _state(None if since is None else await _latest(ctx.session, vehicle_id, since))
        await uow.commit()
    # Partners are granted with Obligation.MINIMISE_FIELDS; this view is minimised whatever
    # the decision says, so a policy change can never widen what a partner receives.
    return MinimisedStatusView(id=vehicle_id, state=state)


router = APIRouter()
router.include_router(_object_routes(Surface.MOBILE))
router.include_router(_object_routes(Surface.FLEET))
router.include_router(dealer_router)
router.include_router(partner_router)

__all__ = ["StatusView", "VehicleView", "router", "vehicle_status"]
