"""Support cases on the support surface (``/support/v1/cases``).

An agent reaches customer data only through an open case assigned to them: every route but
the list is under ``/cases/{case_id}``, the case is decided by the PDP first (an unknown
case and another agent's are the same 404, each a recorded denial on the case, so a walk
over case ids is on the record) and loaded with ``agent = caller`` in the query, and
everything under it is limited in the query to the case's account and vehicles and decided
by the PDP (``support:read_account``, ``support:read_vehicle``, ``vehicle:read_status``); a
vehicle named in the path is decided before the case's reach is read, so a refused id is on
the record. There is no search: an agent cannot look up an account or a vehicle outside
their cases. Location is never returned here (the PDP forbids it to operator staff, and no
view has a field for it). Tokens must come from a multi-factor sign-in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from fastapi import Depends, Request
from pydantic import BaseModel
from sqlalchemy import exists, func, or_, select

from fleetward.api.auth import Caller, StepUp, authenticate
from fleetward.api.authorize import authorize, decide_many, not_found
from fleetward.api.dealer_cases import CloseCase
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
from fleetward.api.vehicles import StatusView, VehicleView, vehicle_status
from fleetward.audit.recorder import Actor
from fleetward.authz.decision import ResourceKind, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CatalogEntry, DataClass, Impact, catalogued
from fleetward.core.surfaces import Surface
from fleetward.identity.credential_models import TotpFactor, WebAuthnCredential
from fleetward.identity.models import User
from fleetward.identity.oauth.policy import REFRESH_LIFETIMES, SURFACE_MIN_ACR
from fleetward.services import ServiceContext
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.errors import CaseNotOpen
from fleetward.vehicles.models import CaseStatus, Ownership, SupportCase, Vehicle

OWNER: Final = "authz-team"

# A support token must come from a multi-factor sign-in (as the authorization server
# demands when issuing it), no older than an operator's longest session.
SUPPORT_SIGN_IN: Final = StepUp(
    acr=SURFACE_MIN_ACR[Surface.SUPPORT], max_age=REFRESH_LIFETIMES[Surface.SUPPORT].absolute
)


class SupportCaseView(BaseModel):
    id: str
    account_id: str
    vehicle_id: str | None
    status: str
    summary: str
    opened_at: datetime
    closed_at: datetime | None


class AccountView(BaseModel):
    """The least an agent needs: no password data, no factors' secrets, no contact data."""

    id: str
    display_name: str
    tenant_id: str
    mfa_enrolled: bool
    vehicles_owned: int


def _entry(
    purpose: str,
    permission: Permission,
    data_class: DataClass,
    *,
    objects: tuple[str, ...] = ("support_case", "account"),
    impact: frozenset[Impact] = frozenset({Impact.PRIVACY}),
    rate: int = 60,
) -> CatalogEntry:
    return object_entry(
        Surface.SUPPORT,
        purpose,
        permission,
        data_class,
        owner=OWNER,
        objects=objects,
        tags=("cases",),
        impact=impact,
        rate=rate,
    )


def _view(case: SupportCase) -> SupportCaseView:
    return SupportCaseView(
        id=case.id,
        account_id=case.subject_user_id,
        vehicle_id=case.vehicle_id,
        status=case.status.value,
        summary=case.summary,
        opened_at=case.opened_at,
        closed_at=case.closed_at,
    )


def _case(case_id: str) -> ResourceRef:
    return ResourceRef(ResourceKind.SUPPORT_CASE, case_id)


def _account(case: SupportCase) -> ResourceRef:
    return ResourceRef(ResourceKind.ACCOUNT, case.subject_user_id)


def _owned_now(user_id: str, now: datetime) -> Any:
    return select(Ownership.vehicle_id).where(
        Ownership.owner_user_id == user_id,
        Ownership.valid_from <= now,
        or_(Ownership.valid_until.is_(None), Ownership.valid_until > now),
    )


def _case_vehicles(case: SupportCase, now: datetime) -> Any:
    """The vehicles a case covers, as a WHERE clause: its vehicle if it names one, else every
    vehicle the account owns now; a named vehicle only while the account owns it (as the
    PDP's entity builder reads it)."""
    owned = Vehicle.id.in_(_owned_now(case.subject_user_id, now))
    if case.vehicle_id is not None:
        return (Vehicle.id == case.vehicle_id) & owned
    return owned


async def _my_case(
    request: Request,
    caller: Caller,
    ctx: ServiceContext,
    case_id: str,
    permission: Permission = Permission.SUPPORT_READ_ACCOUNT,
) -> SupportCase:
    """The case, only if it is open and assigned to the caller; else the one 404. The case is
    decided (and recorded) first: an agent walking case ids, unknown or another agent's,
    leaves a denial on each, as a walk over vehicle ids does."""
    await authorize(request, caller, permission, _case(case_id), ctx=ctx)
    if caller.claims.sub_type != "user":
        raise not_found()
    case: SupportCase | None = await ctx.session.scalar(
        select(SupportCase).where(
            SupportCase.id == case_id,
            SupportCase.agent_user_id == caller.claims.sub,
            SupportCase.status == CaseStatus.OPEN,
        )
    )
    if case is None:  # the PDP allowed it a moment ago: closed meanwhile
        raise not_found()
    return case


async def _account_view(ctx: ServiceContext, user: User) -> AccountView:
    now = ctx.clock.now()
    owned = await ctx.session.scalar(
        select(func.count()).select_from(_owned_now(user.id, now).subquery())
    )
    totp = exists().where(TotpFactor.user_id == user.id, TotpFactor.confirmed_at.is_not(None))
    key = exists().where(
        WebAuthnCredential.user_id == user.id, WebAuthnCredential.revoked_at.is_(None)
    )
    mfa = await ctx.session.scalar(select(or_(totp, key)))
    return AccountView(
        id=user.id,
        display_name=user.display_name,
        tenant_id=user.home_tenant_id,
        mfa_enrolled=bool(mfa),
        vehicles_owned=int(owned or 0),
    )


router = surface_router(Surface.SUPPORT)
_AGENT = Depends(authenticate(Surface.SUPPORT, step_up=SUPPORT_SIGN_IN))


@router.get("/cases", name="support:cases:list", response_model=Page[SupportCaseView])
@catalogued(
    _entry(
        "the agent's open cases, a page at a time",
        Permission.SUPPORT_READ_ACCOUNT,
        DataClass.PERSONAL,
    )
)
async def list_cases(
    request: Request,
    caller: Caller = _AGENT,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[SupportCaseView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    if caller.claims.sub_type != "user":
        return Page[SupportCaseView](items=[], next_cursor=None)
    async with platform.services() as (uow, ctx):
        query = select(SupportCase).where(
            SupportCase.agent_user_id == caller.claims.sub,
            SupportCase.status == CaseStatus.OPEN,
        )
        if after is not None:
            query = query.where(SupportCase.id > after)
        rows = await ctx.session.scalars(query.order_by(SupportCase.id).limit(size + 1))
        page, more = cut_page(list(rows), size)
        decisions = await decide_many(
            request, caller, Permission.SUPPORT_READ_ACCOUNT, [_account(c) for c in page], ctx=ctx
        )
        await uow.commit()  # the decisions' audit records
    items = [_view(c) for c, d in zip(page, decisions, strict=True) if d.allowed]
    return Page[SupportCaseView](
        items=items, next_cursor=encode_cursor(page[-1].id) if more else None
    )


@router.get("/cases/{case_id}", name="support:cases:read", response_model=SupportCaseView)
@catalogued(
    _entry("one of the agent's open cases", Permission.SUPPORT_READ_ACCOUNT, DataClass.PERSONAL)
)
async def read_case(case_id: str, request: Request, caller: Caller = _AGENT) -> SupportCaseView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        case = await _my_case(request, caller, ctx, case_id)
        await authorize(request, caller, Permission.SUPPORT_READ_ACCOUNT, _account(case), ctx=ctx)
        await uow.commit()
    return _view(case)


@router.get("/cases/{case_id}/account", name="support:cases:account", response_model=AccountView)
@catalogued(
    _entry(
        "the account of one of the agent's open cases, minimal: name, tenant, whether MFA "
        "is enrolled, how many vehicles it owns",
        Permission.SUPPORT_READ_ACCOUNT,
        DataClass.PERSONAL,
    )
)
async def read_account(case_id: str, request: Request, caller: Caller = _AGENT) -> AccountView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        case = await _my_case(request, caller, ctx, case_id)
        await authorize(request, caller, Permission.SUPPORT_READ_ACCOUNT, _account(case), ctx=ctx)
        user = await ctx.session.get(User, case.subject_user_id)
        if user is None:  # the PDP saw it a moment ago
            raise not_found()
        view = await _account_view(ctx, user)
        await uow.commit()
    return view


@router.get(
    "/cases/{case_id}/vehicles", name="support:cases:vehicles", response_model=Page[VehicleView]
)
@catalogued(
    _entry(
        "the vehicles one of the agent's open cases covers, a page at a time",
        Permission.SUPPORT_READ_VEHICLE,
        DataClass.PERSONAL,
        objects=("support_case", "vehicle"),
    )
)
async def list_case_vehicles(
    case_id: str,
    request: Request,
    caller: Caller = _AGENT,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[VehicleView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        case = await _my_case(request, caller, ctx, case_id)
        # The parent decided first, as on every route under the case: an agent who may no
        # longer use it (role ended, account disabled) gets the one 404, never a page of
        # refused rows whose cursor would name the customer's vehicle.
        await authorize(request, caller, Permission.SUPPORT_READ_ACCOUNT, _account(case), ctx=ctx)
        query = select(Vehicle).where(_case_vehicles(case, ctx.clock.now()))
        if after is not None:
            query = query.where(Vehicle.id > after)
        rows = await ctx.session.scalars(query.order_by(Vehicle.id).limit(size + 1))
        page, more = cut_page(list(rows), size)
        decisions = await decide_many(
            request,
            caller,
            Permission.SUPPORT_READ_VEHICLE,
            [ResourceRef.vehicle(v.id) for v in page],
            ctx=ctx,
        )
        await uow.commit()  # the decisions' audit records
    items = [
        VehicleView(id=v.id, vin=v.vin, label=v.label, model=v.model, region=v.region)
        for v, d in zip(page, decisions, strict=True)
        if d.allowed
    ]
    return Page[VehicleView](items=items, next_cursor=encode_cursor(page[-1].id) if more else None)


@router.get(
    "/cases/{case_id}/vehicles/{vehicle_id}/status",
    name="support:cases:vehicle-status",
    response_model=StatusView,
)
@catalogued(
    _entry(
        "the status of a vehicle one of the agent's open cases covers: registry fields and "
        "latest state, never its location",
        Permission.VEHICLE_READ_STATUS,
        DataClass.VEHICLE_STATE,
        objects=("support_case", "vehicle"),
        rate=30,
    )
)
async def read_case_vehicle_status(
    case_id: str, vehicle_id: str, request: Request, caller: Caller = _AGENT
) -> StatusView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        case = await _my_case(request, caller, ctx, case_id, Permission.SUPPORT_READ_VEHICLE)
        # The vehicle decided (and recorded) before the case's reach is looked at: an agent
        # trying vehicle ids under their own case leaves a denial on each, which is what the
        # vehicle-walk detection reads, not a 404 the audit trail never saw.
        await authorize(
            request,
            caller,
            Permission.SUPPORT_READ_VEHICLE,
            ResourceRef.vehicle(vehicle_id),
            ctx=ctx,
        )
        # The child with its parent: a vehicle outside this case is the same 404, even when
        # the agent has another case that covers it.
        covered = await ctx.session.scalar(
            select(Vehicle.id).where(
                Vehicle.id == vehicle_id, _case_vehicles(case, ctx.clock.now())
            )
        )
        if covered is None:
            raise not_found()
        await uow.commit()
    # And vehicle:read_status, decided and rendered as on every other status route.
    return await vehicle_status(request, caller, covered)


@router.post("/cases/{case_id}/close", name="support:cases:close", response_model=SupportCaseView)
@catalogued(
    _entry(
        "closes one of the agent's open cases; their access to the account ends",
        Permission.SUPPORT_READ_ACCOUNT,
        DataClass.PERSONAL,
        impact=frozenset({Impact.PRIVACY, Impact.OPERATIONAL}),
        rate=10,
    )
)
async def close_case(
    case_id: str, body: CloseCase, request: Request, caller: Caller = _AGENT
) -> SupportCaseView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        # The assigned agent only: the case is loaded with agent = caller.
        case = await _my_case(request, caller, ctx, case_id)
        await authorize(request, caller, Permission.SUPPORT_READ_ACCOUNT, _account(case), ctx=ctx)
        try:
            await CaseService(ctx).close_support_case(
                case, actor=Actor.user(caller.claims.sub, caller.claims.tenant)
            )
        except CaseNotOpen:
            # Closed meanwhile by a request that committed after this one read it open: the
            # same 404 as a case closed before.
            raise not_found() from None
        await uow.commit()
    return _view(case)


__all__ = ["SUPPORT_SIGN_IN", "AccountView", "SupportCaseView", "router"]
