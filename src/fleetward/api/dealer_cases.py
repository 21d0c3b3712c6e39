"""Dealer service cases on the dealer surface (``/dealer/v1/cases``).

A technician sees a case only while it is open, belongs to the dealer their token names and
they are assigned to it now: the list is filtered to exactly that in the query, and every
case route asks the PDP (``dealer:manage_case`` on the case, ``vehicle:read_status`` on its
vehicle). A case of another dealer, a case the technician is not on and a closed case all
answer the same 404 as an unknown id. Closing a case ends the technician's access to it and
to its vehicle in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from fastapi import Depends, Request
from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import authorize, decide_many, not_found
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
from fleetward.api.vehicles import StatusView, vehicle_status
from fleetward.audit.recorder import Actor
from fleetward.authz.decision import ResourceKind, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CatalogEntry, DataClass, Impact, catalogued
from fleetward.core.surfaces import Surface
from fleetward.services import ServiceContext
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.errors import CaseNotOpen
from fleetward.vehicles.models import CaseStatus, CaseTechnician, DealerCase

OWNER: Final = "authz-team"


class DealerCaseView(BaseModel):
    id: str
    vehicle_id: str
    status: str
    summary: str
    opened_at: datetime
    closed_at: datetime | None


class CloseCase(StrictBody):
    """Closing takes no input: who closes and when are the server's facts. The body exists
    so that a client sending fields (a status, a date, another technician) is refused."""


def _entry(
    purpose: str,
    permission: Permission,
    data_class: DataClass,
    *,
    objects: tuple[str, ...] = ("dealer_case",),
    impact: frozenset[Impact] = frozenset({Impact.PRIVACY}),
    rate: int = 60,
) -> CatalogEntry:
    return object_entry(
        Surface.DEALER,
        purpose,
        permission,
        data_class,
        owner=OWNER,
        objects=objects,
        tags=("cases",),
        impact=impact,
        rate=rate,
    )


def _view(case: DealerCase) -> DealerCaseView:
    return DealerCaseView(
        id=case.id,
        vehicle_id=case.vehicle_id,
        status=case.status.value,
        summary=case.summary,
        opened_at=case.opened_at,
        closed_at=case.closed_at,
    )


def _assigned_now(caller: Caller, now: datetime) -> Any:
    """The caller's open cases of the dealer their token names, as a WHERE clause."""
    assigned = select(CaseTechnician.case_id).where(
        CaseTechnician.user_id == caller.claims.sub,
        CaseTechnician.valid_from <= now,
        or_(CaseTechnician.valid_until.is_(None), CaseTechnician.valid_until > now),
    )
    return (
        DealerCase.id.in_(assigned)
        & (DealerCase.dealer_tenant_id == caller.claims.tenant)
        & (DealerCase.status == CaseStatus.OPEN)
    )


async def _assigned_case(
    session: AsyncSession, caller: Caller, case_id: str, now: datetime
) -> DealerCase:
    """The case, only if it is one of the caller's open cases; else the one 404."""
    if caller.claims.sub_type != "user":
        raise not_found()
    case: DealerCase | None = await session.scalar(
        select(DealerCase).where(DealerCase.id == case_id, _assigned_now(caller, now))
    )
    if case is None:
        raise not_found()
    return case


async def _decided_case(
    request: Request, caller: Caller, case_id: str, ctx: ServiceContext
) -> DealerCase:
    """What every case route begins with: the PDP decides (and the audit trail records)
    dealer:manage_case on the case, and the case must be one of the caller's open cases.
    Either refusal is the one 404."""
    await authorize(
        request,
        caller,
        Permission.DEALER_MANAGE_CASE,
        ResourceRef(ResourceKind.DEALER_CASE, case_id),
        ctx=ctx,
    )
    return await _assigned_case(ctx.session, caller, case_id, ctx.clock.now())


router = surface_router(Surface.DEALER)
_DEALER = Depends(authenticate(Surface.DEALER))


@router.get("/cases", name="dealer:cases:list", response_model=Page[DealerCaseView])
@catalogued(
    _entry(
        "the technician's open cases at their dealer, a page at a time",
        Permission.DEALER_MANAGE_CASE,
        DataClass.PERSONAL,
    )
)
async def list_cases(
    request: Request,
    caller: Caller = _DEALER,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DealerCaseView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    if caller.claims.sub_type != "user":
        return Page[DealerCaseView](items=[], next_cursor=None)
    async with platform.services() as (uow, ctx):
        query = select(DealerCase).where(_assigned_now(caller, ctx.clock.now()))
        if after is not None:
            query = query.where(DealerCase.id > after)
        rows = await ctx.session.scalars(query.order_by(DealerCase.id).limit(size + 1))
        page, more = cut_page(list(rows), size)
        decisions = await decide_many(
            request,
            caller,
            Permission.DEALER_MANAGE_CASE,
            [ResourceRef(ResourceKind.DEALER_CASE, c.id) for c in page],
            ctx=ctx,
        )
        await uow.commit()  # the decisions' audit records
    items = [_view(c) for c, d in zip(page, decisions, strict=True) if d.allowed]
    return Page[DealerCaseView](
        items=items, next_cursor=encode_cursor(page[-1].id) if more else None
    )


@router.get("/cases/{case_id}", name="dealer:cases:read", response_model=DealerCaseView)
@catalogued(
    _entry(
        "one of the technician's open cases",
        Permission.DEALER_MANAGE_CASE,
        DataClass.PERSONAL,
    )
)
async def read_case(case_id: str, request: Request, caller: Caller = _DEALER) -> DealerCaseView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        case = await _decided_case(request, caller, case_id, ctx)
        await uow.commit()
    return _view(case)


@router.get("/cases/{case_id}/vehicle", name="dealer:cases:vehicle", response_model=StatusView)
@catalogued(
    _entry(
        "the vehicle of one of the technician's open cases: registry fields and latest "
        "state, never its location",
        Permission.VEHICLE_READ_STATUS,
        DataClass.VEHICLE_STATE,
        objects=("dealer_case", "vehicle"),
        rate=30,
    )
)
async def read_case_vehicle(case_id: str, request: Request, caller: Caller = _DEALER) -> StatusView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        # The parent first, as on every case route.
        case = await _decided_case(request, caller, case_id, ctx)
        vehicle_id = case.vehicle_id
        await uow.commit()  # the case decision's audit record
    # The vehicle is decided again by the PDP (vehicle:read_status), as on /vehicles/{id}.
    return await vehicle_status(request, caller, vehicle_id)


@router.post("/cases/{case_id}/close", name="dealer:cases:close", response_model=DealerCaseView)
@catalogued(
    _entry(
        "closes one of the technician's open cases; their access to it and its vehicle ends",
        Permission.DEALER_MANAGE_CASE,
        DataClass.PERSONAL,
        impact=frozenset({Impact.PRIVACY, Impact.OPERATIONAL}),
        rate=10,
    )
)
async def close_case(
    case_id: str, body: CloseCase, request: Request, caller: Caller = _DEALER
) -> DealerCaseView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        case = await _decided_case(request, caller, case_id, ctx)
        try:
            await CaseService(ctx).close_dealer_case(
                case, actor=Actor.user(caller.claims.sub, caller.claims.tenant)
            )
        except CaseNotOpen:
            # Closed meanwhile by a request that committed after this one read it open: the
            # same 404 as a case closed before (no second close, no oracle).
            raise not_found() from None
        await uow.commit()
    return _view(case)


__all__ = ["CloseCase", "DealerCaseView", "router"]
