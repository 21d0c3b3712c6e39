"""A vehicle's history: trips, charging sessions and diagnostic reports on the mobile, fleet,
dealer and partner surfaces, diagnostics pseudonymised for engineers on the admin surface,
and (fleetward.api.history_jobs) the read side of command jobs.

Every route asks the PDP about the vehicle first (a vehicle the caller may not see answers the
same 404 as one that does not exist), then bounds what it shows to the caller's relationship
with :func:`fleetward.vehicles.history.history_since`, in the SQL ``WHERE``: the buyer of a
used car never sees the seller's trips. A record is always loaded with its vehicle in the
``WHERE``: a record asked for under another vehicle is not found.

Obligations are applied or refused (fleetward.api.history_records). Fields follow
permissions: trip coordinates only with ``vehicle:read_location`` as well; partners get
minimised views (whatever the decision says), engineers pseudonymised ones.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import authorize, decide_many
from fleetward.api.history_jobs import job_routes
from fleetward.api.history_records import (
    CHARGING,
    DIAGNOSTICS,
    MINIMISED,
    PSEUDONYMISED,
    TRIPS,
    Cursor,
    Limit,
    applicable,
    entry,
    list_records,
    read_record,
)
from fleetward.api.history_views import (
    ChargingView,
    DiagnosticView,
    PartnerChargingView,
    PartnerTripView,
    PseudonymousDiagnosticView,
    TripView,
    charging_view,
    diagnostic_view,
    partner_charging_view,
    partner_trip_view,
    pseudonym_key,
    pseudonymous_view,
    trip_view,
)
from fleetward.api.objects import (
    Page,
    cut_page,
    decode_cursor,
    encode_cursor,
    page_size,
    platform_of,
)
from fleetward.api.routing import surface_router
from fleetward.authz.decision import THE_PLATFORM, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, DataClass, catalogued
from fleetward.core.surfaces import Surface
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.records import ChargingSession, DiagnosticReport, Trip


def _trip(trip: Trip, located: bool) -> TripView:
    return trip_view(trip, located)


def _charge(charge: ChargingSession, _located: bool) -> ChargingView:
    return charging_view(charge)


def _report(report: DiagnosticReport, _located: bool) -> DiagnosticView:
    return diagnostic_view(report)


def _partner_trip(trip: Trip, _located: bool) -> PartnerTripView:
    return partner_trip_view(trip)  # never coordinates, whatever the consent says


def _partner_charge(charge: ChargingSession, _located: bool) -> PartnerChargingView:
    return partner_charging_view(charge)


# ----------------------------------------------------------------------------- mobile, fleet


def _person_routes(surface: Surface) -> APIRouter:
    """Trips, charging sessions, diagnostics and command jobs of a person's vehicle."""
    router = surface_router(surface)
    authenticated = Depends(authenticate(surface))
    s = surface.value
    trips_read = Permission.VEHICLE_READ_TRIPS
    charging_read = Permission.VEHICLE_READ_CHARGING

    @router.get(
        "/vehicles/{vehicle_id}/trips",
        name=f"{s}:trips:list",
        response_model=Page[TripView],
        response_model_exclude_unset=True,
    )
    @catalogued(
        entry(
            surface,
            "a vehicle's trips in the caller's window; coordinates only with read_location",
            trips_read,
            DataClass.LOCATION,
            ("trip",),
        )
    )
    async def list_trips(
        vehicle_id: str,
        request: Request,
        caller: Caller = authenticated,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[TripView]:
        return await list_records(
            request, caller, TRIPS, vehicle_id, (limit, cursor), _trip, places=True
        )

    @router.get(
        "/vehicles/{vehicle_id}/trips/{trip_id}",
        name=f"{s}:trips:read",
        response_model=TripView,
        response_model_exclude_unset=True,
    )
    @catalogued(entry(surface, "one trip of a vehicle", trips_read, DataClass.LOCATION, ("trip",)))
    async def read_trip(
        vehicle_id: str, trip_id: str, request: Request, caller: Caller = authenticated
    ) -> TripView:
        return await read_record(request, caller, TRIPS, vehicle_id, trip_id, _trip, places=True)

    @router.get(
        "/vehicles/{vehicle_id}/charging-sessions",
        name=f"{s}:charging:list",
        response_model=Page[ChargingView],
    )
    @catalogued(
        entry(
            surface,
            "a vehicle's charging sessions in the caller's window",
            charging_read,
            DataClass.VEHICLE_STATE,
            ("charging_session",),
        )
    )
    async def list_charging(
        vehicle_id: str,
        request: Request,
        caller: Caller = authenticated,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[ChargingView]:
        return await list_records(request, caller, CHARGING, vehicle_id, (limit, cursor), _charge)

    @router.get(
        "/vehicles/{vehicle_id}/charging-sessions/{session_id}",
        name=f"{s}:charging:read",
        response_model=ChargingView,
    )
    @catalogued(
        entry(
            surface,
            "one charging session of a vehicle",
            charging_read,
            DataClass.VEHICLE_STATE,
            ("charging_session",),
        )
    )
    async def read_charging(
        vehicle_id: str, session_id: str, request: Request, caller: Caller = authenticated
    ) -> ChargingView:
        return await read_record(request, caller, CHARGING, vehicle_id, session_id, _charge)

    _diagnostic_routes(router, surface, authenticated)

    job_routes(router, surface, authenticated)

    return router


def _diagnostic_routes(router: APIRouter, surface: Surface, authenticated: Any) -> None:
    """Diagnostic reports of a vehicle (owner, driver, fleet, dealer technician on a case)."""
    diagnostics_read = Permission.VEHICLE_DIAGNOSTICS_READ

    @router.get(
        "/vehicles/{vehicle_id}/diagnostics",
        name=f"{surface.value}:diagnostics:list",
        response_model=Page[DiagnosticView],
    )
    @catalogued(
        entry(
            surface,
            "a vehicle's diagnostic reports in the caller's window",
            diagnostics_read,
            DataClass.VEHICLE_STATE,
            ("diagnostic_report",),
        )
    )
    async def list_diagnostics(
        vehicle_id: str,
        request: Request,
        caller: Caller = authenticated,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[DiagnosticView]:
        return await list_records(
            request, caller, DIAGNOSTICS, vehicle_id, (limit, cursor), _report
        )

    @router.get(
        "/vehicles/{vehicle_id}/diagnostics/{report_id}",
        name=f"{surface.value}:diagnostics:read",
        response_model=DiagnosticView,
    )
    @catalogued(
        entry(
            surface,
            "one diagnostic report of a vehicle",
            diagnostics_read,
            DataClass.VEHICLE_STATE,
            ("diagnostic_report",),
        )
    )
    async def read_diagnostic(
        vehicle_id: str, report_id: str, request: Request, caller: Caller = authenticated
    ) -> DiagnosticView:
        return await read_record(request, caller, DIAGNOSTICS, vehicle_id, report_id, _report)


def _dealer_routes() -> APIRouter:
    """Diagnostic reports and command jobs of a technician's case vehicle: the jobs of the
    families they may send (a diagnostics run), never the owner's lock or unlock jobs."""
    router = surface_router(Surface.DEALER)
    authenticated = Depends(authenticate(Surface.DEALER))
    _diagnostic_routes(router, Surface.DEALER, authenticated)
    job_routes(router, Surface.DEALER, authenticated)
    return router


# ----------------------------------------------------------------------------- partner

partner_router = surface_router(Surface.PARTNER)
_PARTNER = Depends(authenticate(Surface.PARTNER))


@partner_router.get(
    "/vehicles/{vehicle_id}/trips",
    name="partner:trips:list",
    response_model=Page[PartnerTripView],
)
@catalogued(
    entry(
        Surface.PARTNER,
        "a consented vehicle's trips since the consent, minimised (never coordinates)",
        Permission.VEHICLE_READ_TRIPS,
        DataClass.VEHICLE_STATE,
        ("trip",),
        caller=CallerType.PARTNER,
    )
)
async def partner_list_trips(
    vehicle_id: str,
    request: Request,
    caller: Caller = _PARTNER,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PartnerTripView]:
    return await list_records(
        request, caller, TRIPS, vehicle_id, (limit, cursor), _partner_trip, handled=MINIMISED
    )


@partner_router.get(
    "/vehicles/{vehicle_id}/charging-sessions",
    name="partner:charging:list",
    response_model=Page[PartnerChargingView],
)
@catalogued(
    entry(
        Surface.PARTNER,
        "a consented vehicle's charging sessions since the consent, minimised",
        Permission.VEHICLE_READ_CHARGING,
        DataClass.VEHICLE_STATE,
        ("charging_session",),
        caller=CallerType.PARTNER,
    )
)
async def partner_list_charging(
    vehicle_id: str,
    request: Request,
    caller: Caller = _PARTNER,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PartnerChargingView]:
    return await list_records(
        request, caller, CHARGING, vehicle_id, (limit, cursor), _partner_charge, handled=MINIMISED
    )


# ----------------------------------------------------------------------------- admin

admin_router = surface_router(Surface.ADMIN)
_ADMIN = Depends(authenticate(Surface.ADMIN))


@admin_router.get(
    "/diagnostics",
    name="admin:diagnostics:list",
    response_model=Page[PseudonymousDiagnosticView],
)
@catalogued(
    entry(
        Surface.ADMIN,
        "diagnostic reports across vehicles, pseudonymised (no vehicle id, VIN or owner)",
        Permission.VEHICLE_DIAGNOSTICS_READ,
        DataClass.VEHICLE_STATE,
        ("diagnostic_report",),
        caller=CallerType.ADMIN,
    )
)
async def admin_list_diagnostics(
    request: Request, caller: Caller = _ADMIN, limit: Limit = 50, cursor: Cursor = None
) -> Page[PseudonymousDiagnosticView]:
    """The function first, asked on the platform (engineers are allowed with the
    ``pseudonymise`` obligation; anyone else is a recorded 403, whatever the store holds),
    then each report's vehicle; reports of vehicles not allowed are left out. The view is
    pseudonymised whatever the decisions say, so a policy change never widens it."""
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        await authorize(
            request,
            caller,
            Permission.VEHICLE_DIAGNOSTICS_READ,
            THE_PLATFORM,
            object_route=False,
            ctx=ctx,
            applies=PSEUDONYMISED,
        )
        query = select(DiagnosticReport, Vehicle.model).join(
            Vehicle, Vehicle.id == DiagnosticReport.vehicle_id
        )
        if after is not None:
            query = query.where(DiagnosticReport.id > after)
        found = (
            await ctx.session.execute(query.order_by(DiagnosticReport.id).limit(size + 1))
        ).all()
        rows, more = cut_page([(report, model) for report, model in found], size)
        vehicles = sorted({report.vehicle_id for report, _ in rows})
        decisions = await decide_many(
            request,
            caller,
            Permission.VEHICLE_DIAGNOSTICS_READ,
            [ResourceRef.vehicle(v) for v in vehicles],
            ctx=ctx,
            applies=PSEUDONYMISED,
        )
        await uow.commit()
    allowed = {v for v, d in zip(vehicles, decisions, strict=True) if applicable(d, PSEUDONYMISED)}
    key = pseudonym_key(platform.identity.data_key)
    return Page[PseudonymousDiagnosticView](
        items=[pseudonymous_view(key, r, m) for r, m in rows if r.vehicle_id in allowed],
        next_cursor=encode_cursor(rows[-1][0].id) if more else None,
    )


router = APIRouter()
router.include_router(_person_routes(Surface.MOBILE))
router.include_router(_person_routes(Surface.FLEET))
router.include_router(_dealer_routes())
router.include_router(partner_router)
router.include_router(admin_router)

__all__ = ["router"]
