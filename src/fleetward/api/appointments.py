"""Service appointments: booked under a vehicle on the mobile and fleet surfaces
(``vehicle:book_service``), listed and confirmed by the dealer they are booked with
(``dealer:manage_case`` on the dealer's own tenant, permit ``dealer-appointments``).

A vehicle the caller may not book for, and an appointment under another vehicle or outside
the caller's history window (a buyer never sees the seller's bookings), answer the same 404.
A dealer only ever sees the appointments booked with its own tenant (filtered in the query),
and never the owner's identity or the vehicle's location: only the model, the time, the
status and the note. The body carries only what the caller chooses; status, owner, vehicle
and times are the server's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request
from pydantic import AwareDatetime, BaseModel, StringConstraints
from sqlalchemy import select

from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import NotPermitted, authorize, not_found
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
from fleetward.authz.decision import ResourceKind, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CatalogEntry, DataClass, Impact, catalogued
from fleetward.core.surfaces import Surface
from fleetward.services import ServiceContext
from fleetward.vehicles.appointments import MAX_NOTE, AppointmentService
from fleetward.vehicles.history import history_since
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.records import ServiceAppointment

OWNER: Final = "vehicles-team"
BOOK: Final = Permission.VEHICLE_BOOK_SERVICE
DEALER: Final = Permission.DEALER_MANAGE_CASE


class AppointmentBody(StrictBody):
    dealer_id: Id
    scheduled_for: AwareDatetime
    note: Annotated[str, StringConstraints(max_length=MAX_NOTE)] = ""


class AppointmentView(BaseModel):
    id: str
    vehicle_id: str
    dealer_id: str
    scheduled_for: datetime
    status: str
    note: str
    created_at: datetime
    updated_at: datetime
    booked_by_me: bool


class DealerAppointmentView(BaseModel):
    """What the dealer sees: no owner, no vehicle id or VIN, no location."""

    id: str
    vehicle_model: str
    scheduled_for: datetime
    status: str
    note: str


def _entry(
    surface: Surface, purpose: str, permission: Permission, *, writes: bool = False
) -> CatalogEntry:
    impact = {Impact.PRIVACY} | ({Impact.OPERATIONAL} if writes else set())
    return object_entry(
        surface,
        purpose,
        permission,
        DataClass.PERSONAL,
        owner=OWNER,
        objects=("vehicle", "service_appointment"),
        tags=("vehicles", "appointments"),
        impact=frozenset(impact),
        rate=20 if writes else 60,
    )


def _actor(caller: Caller) -> Actor:
    return Actor.user(caller.claims.sub, caller.claims.tenant)


def _view(appointment: ServiceAppointment, caller: Caller) -> AppointmentView:
    return AppointmentView(
        id=appointment.id,
        vehicle_id=appointment.vehicle_id,
        dealer_id=appointment.dealer_tenant_id,
        scheduled_for=appointment.scheduled_for,
        status=appointment.status.value,
        note=appointment.note,
        created_at=appointment.created_at,
        updated_at=appointment.updated_at,
        booked_by_me=appointment.booked_by_user_id == caller.claims.sub,
    )


async def _vehicle(
    request: Request, caller: Caller, vehicle_id: str, ctx: ServiceContext
) -> tuple[Vehicle, datetime | None]:
    """The vehicle the caller may book service for (else 404), and the start of the history
    (bookings included) the caller may see."""
    decision = await authorize(request, caller, BOOK, ResourceRef.vehicle(vehicle_id), ctx=ctx)
    if decision.obligations:  # none of them is applicable to a booking: fail closed
        raise not_found()
    vehicle = await ctx.session.get(Vehicle, vehicle_id)
    if vehicle is None:  # the PDP saw it a moment ago
        raise not_found()
    return vehicle, await history_since(ctx, caller.claims, vehicle_id, permission=BOOK)


async def _appointment(
    ctx: ServiceContext, vehicle_id: str, appointment_id: str, since: datetime | None
) -> ServiceAppointment:
    """The appointment, with its vehicle and the caller's window in the WHERE (else 404)."""
    if since is None:
        raise not_found()
    found: ServiceAppointment | None = await ctx.session.scalar(
        select(ServiceAppointment).where(
            ServiceAppointment.id == appointment_id,
            ServiceAppointment.vehicle_id == vehicle_id,
            ServiceAppointment.created_at >= since,
        )
    )
    if found is None:
        raise not_found()
    return found


def _vehicle_routes(surface: Surface) -> APIRouter:
    router = surface_router(surface)
    authenticated = Depends(authenticate(surface))
    base = "/vehicles/{vehicle_id}/appointments"
    s = surface.value

    @router.post(
        base, name=f"{s}:appointments:book", status_code=201, response_model=AppointmentView
    )
    @catalogued(_entry(surface, "books a service appointment with a dealer", BOOK, writes=True))
    async def book(
        vehicle_id: str, body: AppointmentBody, request: Request, caller: Caller = authenticated
    ) -> AppointmentView:
        platform = platform_of(request)
        async with platform.services() as (uow, ctx):
            vehicle, _ = await _vehicle(request, caller, vehicle_id, ctx)
            appointment = await AppointmentService(ctx).book(
                vehicle,
                dealer_id=body.dealer_id,
                scheduled_for=body.scheduled_for,
                note=body.note,
                booked_by=caller.claims.sub,
                actor=_actor(caller),
            )
            # Asked again once written, under the ownership's lock: a sale that completed
            # after the first decision cancelled the seller's open bookings without seeing
            # this one, which would stand on the buyer's car in the seller's name; a sale
            # that commits later waits for this booking, and then cancels it.
            await OwnershipService(ctx).locked(vehicle)
            await _vehicle(request, caller, vehicle_id, ctx)
            await uow.commit()
        return _view(appointment, caller)

    @router.get(base, name=f"{s}:appointments:list", response_model=Page[AppointmentView])
    @catalogued(_entry(surface, "a vehicle's service appointments in the caller's window", BOOK))
    async def list_appointments(
        vehicle_id: str,
        request: Request,
        caller: Caller = authenticated,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[AppointmentView]:
        platform = platform_of(request)
        size = page_size(platform, limit)
        after = decode_cursor(cursor)
        async with platform.services() as (uow, ctx):
            _, since = await _vehicle(request, caller, vehicle_id, ctx)
            rows: list[ServiceAppointment] = []
            more = False
            if since is not None:
                query = select(ServiceAppointment).where(
                    ServiceAppointment.vehicle_id == vehicle_id,
                    ServiceAppointment.created_at >= since,
                )
                if after is not None:
                    query = query.where(ServiceAppointment.id > after)
                found = await ctx.session.scalars(
                    query.order_by(ServiceAppointment.id).limit(size + 1)
                )
                rows, more = cut_page(list(found), size)
            await uow.commit()
        return Page[AppointmentView](
            items=[_view(a, caller) for a in rows],
            next_cursor=encode_cursor(rows[-1].id) if more else None,
        )

    @router.get(
        base + "/{appointment_id}", name=f"{s}:appointments:read", response_model=AppointmentView
    )
    @catalogued(_entry(surface, "one service appointment of a vehicle", BOOK))
    async def read_appointment(
        vehicle_id: str, appointment_id: str, request: Request, caller: Caller = authenticated
    ) -> AppointmentView:
        platform = platform_of(request)
        async with platform.services() as (uow, ctx):
            _, since = await _vehicle(request, caller, vehicle_id, ctx)
            appointment = await _appointment(ctx, vehicle_id, appointment_id, since)
            await uow.commit()
        return _view(appointment, caller)

    @router.post(
        base + "/{appointment_id}/cancel",
        name=f"{s}:appointments:cancel",
        response_model=AppointmentView,
    )
    @catalogued(_entry(surface, "cancels a requested or confirmed appointment", BOOK, writes=True))
    async def cancel_appointment(
        vehicle_id: str, appointment_id: str, request: Request, caller: Caller = authenticated
    ) -> AppointmentView:
        platform = platform_of(request)
        async with platform.services() as (uow, ctx):
            vehicle, since = await _vehicle(request, caller, vehicle_id, ctx)
            appointment = await _appointment(ctx, vehicle_id, appointment_id, since)
            await AppointmentService(ctx).cancel(
                appointment, tenant_id=vehicle.tenant_id, actor=_actor(caller)
            )
            await uow.commit()
        return _view(appointment, caller)

    return router


# ----------------------------------------------------------------------------- dealer

dealer_router = surface_router(Surface.DEALER)
_DEALER = Depends(authenticate(Surface.DEALER))


def _dealer_view(appointment: ServiceAppointment, model: str) -> DealerAppointmentView:
    return DealerAppointmentView(
        id=appointment.id,
        vehicle_model=model,
        scheduled_for=appointment.scheduled_for,
        status=appointment.status.value,
        note=appointment.note,
    )


def _own_dealer(caller: Caller) -> ResourceRef:
    return ResourceRef(ResourceKind.TENANT, caller.claims.tenant)


@dealer_router.get(
    "/appointments", name="dealer:appointments:list", response_model=Page[DealerAppointmentView]
)
@catalogued(_entry(Surface.DEALER, "the appointments booked with the caller's dealer", DEALER))
async def dealer_list_appointments(
    request: Request, caller: Caller = _DEALER, limit: Limit = 50, cursor: Cursor = None
) -> Page[DealerAppointmentView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        # A function of the dealer tenant: anyone else is refused with a 403.
        decision = await authorize(
            request, caller, DEALER, _own_dealer(caller), object_route=False, ctx=ctx
        )
        if decision.obligations:  # none is applicable here: fail closed
            raise NotPermitted("this operation is not permitted to the caller")
        query = (
            select(ServiceAppointment, Vehicle.model)
            .join(Vehicle, Vehicle.id == ServiceAppointment.vehicle_id)
            .where(ServiceAppointment.dealer_tenant_id == caller.claims.tenant)
        )
        if after is not None:
            query = query.where(ServiceAppointment.id > after)
        found = (
            await ctx.session.execute(query.order_by(ServiceAppointment.id).limit(size + 1))
        ).all()
        rows, more = cut_page([(a, m) for a, m in found], size)
        await uow.commit()
    return Page[DealerAppointmentView](
        items=[_dealer_view(a, m) for a, m in rows],
        next_cursor=encode_cursor(rows[-1][0].id) if more else None,
    )


@dealer_router.post(
    "/appointments/{appointment_id}/confirm",
    name="dealer:appointments:confirm",
    response_model=DealerAppointmentView,
)
@catalogued(
    _entry(
        Surface.DEALER,
        "confirms an appointment booked with the caller's dealer",
        DEALER,
        writes=True,
    )
)
async def dealer_confirm_appointment(
    appointment_id: str, request: Request, caller: Caller = _DEALER
) -> DealerAppointmentView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        decision = await authorize(request, caller, DEALER, _own_dealer(caller), ctx=ctx)
        if decision.obligations:
            raise not_found()
        service = AppointmentService(ctx)
        appointment = await service.with_dealer(appointment_id, caller.claims.tenant)
        if appointment is None:  # not booked with this dealer: as if it did not exist
            raise not_found()
        await service.confirm(appointment, actor=_actor(caller))
        vehicle = await ctx.session.get(Vehicle, appointment.vehicle_id)
        if vehicle is None:  # the foreign key holds it; a vanished row is a refusal
            raise not_found()
        await uow.commit()
    return _dealer_view(appointment, vehicle.model)


router = APIRouter()
router.include_router(_vehicle_routes(Surface.MOBILE))
router.include_router(_vehicle_routes(Surface.FLEET))
router.include_router(dealer_router)

__all__ = ["router"]
