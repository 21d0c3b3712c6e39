"""What every history route shares (fleetward.api.history, fleetward.api.history_jobs):
authorize the vehicle, bound the history to the caller's window, page through one kind of
record, and refuse any obligation the route cannot apply.

Obligations are applied or refused: each route names the obligations it knows how to apply
(:data:`NONE`, :data:`MINIMISED`, :data:`PSEUDONYMISED`), and a decision carrying any other
is a denial (fail closed), exactly as if the PDP had said no.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute

from fleetward.abuse.policy import Flow
from fleetward.api.auth import Caller
from fleetward.api.authorize import authorize, decide_many, not_found
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
from fleetward.api.quota_guard import charge_flow
from fleetward.authz.decision import Decision, Obligation, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass
from fleetward.core.surfaces import Surface
from fleetward.services import ServiceContext
from fleetward.vehicles.history import history_since
from fleetward.vehicles.records import ChargingSession, DiagnosticReport, Trip

OWNER: Final = "vehicles-team"
NONE: Final[frozenset[Obligation]] = frozenset()
MINIMISED: Final = frozenset({Obligation.MINIMISE_FIELDS})
PSEUDONYMISED: Final = frozenset({Obligation.PSEUDONYMISE})

V = TypeVar("V", bound=BaseModel)


def applicable(decision: Decision, handled: frozenset[Obligation]) -> bool:
    """Allowed, and every obligation it carries is one the route applies (else a denial)."""
    return decision.allowed and decision.obligations <= handled


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of history record: its table, its time column, the permission to read it."""

    model: type[Any]
    at: InstrumentedAttribute[datetime]
    permission: Permission


TRIPS: Final = Kind(Trip, Trip.started_at, Permission.VEHICLE_READ_TRIPS)
CHARGING: Final = Kind(
    ChargingSession, ChargingSession.started_at, Permission.VEHICLE_READ_CHARGING
)
DIAGNOSTICS: Final = Kind(
    DiagnosticReport, DiagnosticReport.created_at, Permission.VEHICLE_DIAGNOSTICS_READ
)


def entry(
    surface: Surface,
    purpose: str,
    permission: Permission,
    data_class: DataClass,
    objects: tuple[str, ...],
    *,
    caller: CallerType = CallerType.USER,
) -> CatalogEntry:
    return object_entry(
        surface,
        purpose,
        permission,
        data_class,
        owner=OWNER,
        objects=("vehicle", *objects),
        tags=("vehicles", "history"),
        caller=caller,
        rate=30,
    )


async def window(
    request: Request,
    caller: Caller,
    permission: Permission,
    vehicle_id: str,
    ctx: ServiceContext,
    handled: frozenset[Obligation],
) -> datetime | None:
    """Authorize ``permission`` on the vehicle (404 on a deny, or on an obligation the route
    cannot apply), then the start of the history the caller may see (None: nothing)."""
    resource = ResourceRef.vehicle(vehicle_id)
    decision = await authorize(request, caller, permission, resource, ctx=ctx, applies=handled)
    if not applicable(decision, handled):
        raise not_found()
    return await history_since(ctx, caller.claims, vehicle_id, permission=permission)


async def may(
    request: Request, caller: Caller, permission: Permission, vehicle_id: str, ctx: ServiceContext
) -> bool:
    resources = [ResourceRef.vehicle(vehicle_id)]
    (decision,) = await decide_many(request, caller, permission, resources, ctx=ctx)
    return applicable(decision, NONE)


async def list_records(
    request: Request,
    caller: Caller,
    kind: Kind,
    vehicle_id: str,
    page: tuple[int, str | None],
    render: Callable[[Any, bool], V],
    *,
    handled: frozenset[Obligation] = NONE,
    places: bool = False,
) -> Page[V]:
    """A page of one kind of record, filtered in the query to the vehicle and the caller's
    window. ``places``: ask whether the caller may also read the location (trips)."""
    platform = platform_of(request)
    size = page_size(platform, page[0])
    after = decode_cursor(page[1])
    async with platform.services() as (uow, ctx):
        since = await window(request, caller, kind.permission, vehicle_id, ctx, handled)
        rows: list[Any] = []
        more = False
        if since is not None:
            query = select(kind.model).where(kind.model.vehicle_id == vehicle_id, kind.at >= since)
            if after is not None:
                query = query.where(kind.model.id > after)
            found = await ctx.session.scalars(query.order_by(kind.model.id).limit(size + 1))
            rows, more = cut_page(list(found), size)
        located = places and bool(rows)
        if located:
            located = await may(request, caller, Permission.VEHICLE_READ_LOCATION, vehicle_id, ctx)
        await uow.commit()
    if located:
        await _pay_for_places(request, caller)
    return Page(
        items=[render(r, located) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


async def read_record(
    request: Request,
    caller: Caller,
    kind: Kind,
    vehicle_id: str,
    record_id: str,
    render: Callable[[Any, bool], V],
    *,
    places: bool = False,
) -> V:
    """One record, loaded with its vehicle and the caller's window in the WHERE (else 404)."""
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        since = await window(request, caller, kind.permission, vehicle_id, ctx, NONE)
        if since is None:
            raise not_found()
        found = await ctx.session.scalar(
            select(kind.model).where(
                kind.model.id == record_id, kind.model.vehicle_id == vehicle_id, kind.at >= since
            )
        )
        if found is None:
            raise not_found()
        located = places and await may(
            request, caller, Permission.VEHICLE_READ_LOCATION, vehicle_id, ctx
        )
        await uow.commit()
    if located:
        await _pay_for_places(request, caller)
    return render(found, located)


async def _pay_for_places(request: Request, caller: Caller) -> None:
    """Trip coordinates say where the car was, the last one where it is parked now: they pay
    the bulk-location flow as the current location does (one vehicle a request), or the
    trips of 10,000 cars would be the way around that limit. Charged once the transaction
    has ended (a refusal records its audit event in one of its own), before anything is
    returned."""
    await charge_flow(request, caller, Flow.BULK_LOCATION)


__all__ = [
    "CHARGING",
    "DIAGNOSTICS",
    "MINIMISED",
    "NONE",
    "PSEUDONYMISED",
    "TRIPS",
    "Cursor",
    "Kind",
    "Limit",
    "applicable",
    "entry",
    "list_records",
    "may",
    "read_record",
    "window",
]
