"""Driver invitations and drivers, on the mobile surface; the router also carries the
ownership transfer routes (:mod:`fleetward.api.handover_transfers`).

Owner routes (``/vehicles/{vehicle_id}/...``) ask the PDP for ``vehicle:manage_drivers``
(the policy never grants it to drivers, dealers, support or partners) and then require the
caller to be the vehicle's current owner (:func:`fleetward.api.handover_access.owner_of`);
every denial is the same 404 as a missing vehicle, and a child object (invitation,
delegation) is loaded with its vehicle in the WHERE clause.

Accepting an invitation carries only the one-time code: any consumer person may call it,
and a wrong, used, revoked or expired code answers one 404. The invitation fixed the
permissions and the window; there is no route by which a driver changes their own window.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from fleetward.abuse.policy import Flow
from fleetward.api import handover_transfers
from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import not_found
from fleetward.api.bodies import StrictBody
from fleetward.api.handover_access import (
    SURFACE,
    IssuedView,
    actor_of,
    consumer_of,
    entry,
    owner_of,
    page_of,
)
from fleetward.api.objects import Cursor, Limit, Page, page_size, platform_of
from fleetward.api.quota_guard import charge_flow
from fleetward.api.routing import surface_router
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import AUTHENTICATED, catalogued
from fleetward.identity.models import User
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.handover_models import DriverInvitation
from fleetward.vehicles.invitations import MAX_CODE_LENGTH, InvitationService, effective_status
from fleetward.vehicles.models import DriverDelegation

_routes = surface_router(SURFACE)
_authenticated = Depends(authenticate(SURFACE))
_PERMISSION = Annotated[str, Field(min_length=1, max_length=64)]


class InvitationBody(StrictBody):
    permissions: Annotated[list[_PERMISSION], Field(min_length=1, max_length=32)]
    valid_from: datetime | None = None
    valid_until: datetime


class CodeBody(StrictBody):
    code: Annotated[str, Field(min_length=1, max_length=MAX_CODE_LENGTH)]


class InvitationView(BaseModel):
    id: str
    permissions: list[str]
    valid_from: datetime
    valid_until: datetime
    expires_at: datetime
    status: str
    delegation_id: str | None


class DriverView(BaseModel):
    """A driver as the owner sees them: their user id and display name, nothing more."""

    id: str
    driver_user_id: str
    display_name: str
    permissions: list[str]
    valid_from: datetime
    valid_until: datetime


class DelegationView(BaseModel):
    """A delegation as its driver sees it."""

    id: str
    vehicle_id: str
    permissions: list[str]
    valid_from: datetime
    valid_until: datetime


# ----------------------------------------------------------------------------- invitations


@_routes.post(
    "/vehicles/{vehicle_id}/invitations",
    name="mobile:invitations:create",
    response_model=IssuedView,
    status_code=201,
)
@catalogued(entry("invite a driver with a one-time code", Permission.VEHICLE_MANAGE_DRIVERS))
async def create_invitation(
    vehicle_id: str, body: InvitationBody, request: Request, caller: Caller = _authenticated
) -> IssuedView:
    await charge_flow(request, caller, Flow.DRIVER_INVITATION)
    async with platform_of(request).services() as (uow, ctx):
        vehicle, owner = await owner_of(
            request, caller, Permission.VEHICLE_MANAGE_DRIVERS, vehicle_id, ctx
        )
        issued = await InvitationService(ctx).invite(
            vehicle,
            owner,
            body.permissions,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
            actor=actor_of(caller),
        )
        await uow.commit()
    return IssuedView(
        id=issued.invitation.id, code=issued.code, expires_at=issued.invitation.expires_at
    )


@_routes.get(
    "/vehicles/{vehicle_id}/invitations",
    name="mobile:invitations:list",
    response_model=Page[InvitationView],
)
@catalogued(
    entry(
        "the owner's driver invitations (never their codes)",
        Permission.VEHICLE_MANAGE_DRIVERS,
        rate=60,
    )
)
async def list_invitations(
    vehicle_id: str,
    request: Request,
    caller: Caller = _authenticated,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[InvitationView]:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        vehicle, owner = await owner_of(
            request, caller, Permission.VEHICLE_MANAGE_DRIVERS, vehicle_id, ctx
        )
        query = select(DriverInvitation).where(
            DriverInvitation.vehicle_id == vehicle.id,
            DriverInvitation.invited_by_user_id == owner.id,
        )
        rows, next_cursor = await page_of(
            ctx, query, DriverInvitation.id, page_size(platform, limit), cursor
        )
        await uow.commit()
    now = platform.clock.now()
    items = [
        InvitationView(
            id=i.id,
            permissions=list(i.permissions),
            valid_from=i.valid_from,
            valid_until=i.valid_until,
            expires_at=i.expires_at,
            status=effective_status(i, now).value,
            delegation_id=i.delegation_id,
        )
        for (i,) in rows
    ]
    return Page[InvitationView](items=items, next_cursor=next_cursor)


@_routes.delete(
    "/vehicles/{vehicle_id}/invitations/{invitation_id}",
    name="mobile:invitations:revoke",
    status_code=204,
    response_class=Response,
)
@catalogued(entry("withdraw a pending driver invitation", Permission.VEHICLE_MANAGE_DRIVERS))
async def revoke_invitation(
    vehicle_id: str, invitation_id: str, request: Request, caller: Caller = _authenticated
) -> Response:
    async with platform_of(request).services() as (uow, ctx):
        vehicle, owner = await owner_of(
            request, caller, Permission.VEHICLE_MANAGE_DRIVERS, vehicle_id, ctx
        )
        invitation = await ctx.session.scalar(
            select(DriverInvitation).where(
                DriverInvitation.id == invitation_id,
                DriverInvitation.vehicle_id == vehicle.id,
                DriverInvitation.invited_by_user_id == owner.id,
            )
        )
        if invitation is None or not await InvitationService(ctx).revoke(
            invitation, actor=actor_of(caller)
        ):
            raise not_found()
        await uow.commit()
    return Response(status_code=204)


@_routes.post(
    "/invitations/accept", name="mobile:invitations:accept", response_model=DelegationView
)
@catalogued(
    entry(
        "accept a driver invitation with its one-time code (the code decides everything)",
        AUTHENTICATED,
        objects=("driver_invitation",),
        rate=10,
    )
)
async def accept_invitation(
    body: CodeBody, request: Request, caller: Caller = _authenticated
) -> DelegationView:
    async with platform_of(request).services() as (uow, ctx):
        invitee = await consumer_of(ctx, caller)
        delegation = await InvitationService(ctx).accept(body.code, invitee, actor=actor_of(caller))
        await uow.commit()
    return _delegation_view(delegation)


# ----------------------------------------------------------------------------- drivers


def _delegation_view(d: DriverDelegation) -> DelegationView:
    return DelegationView(
        id=d.id,
        vehicle_id=d.vehicle_id,
        permissions=list(d.permissions),
        valid_from=d.valid_from,
        valid_until=d.valid_until,
    )


@_routes.get(
    "/vehicles/{vehicle_id}/drivers", name="mobile:drivers:list", response_model=Page[DriverView]
)
@catalogued(
    entry("the vehicle's current and future drivers", Permission.VEHICLE_MANAGE_DRIVERS, rate=60)
)
async def list_drivers(
    vehicle_id: str,
    request: Request,
    caller: Caller = _authenticated,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[DriverView]:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        vehicle, _owner = await owner_of(
            request, caller, Permission.VEHICLE_MANAGE_DRIVERS, vehicle_id, ctx
        )
        query = (
            select(DriverDelegation, User.display_name)
            .join(User, User.id == DriverDelegation.driver_user_id)
            .where(
                DriverDelegation.vehicle_id == vehicle.id,
                DriverDelegation.revoked_at.is_(None),
                DriverDelegation.valid_until > platform.clock.now(),
            )
        )
        rows, next_cursor = await page_of(
            ctx, query, DriverDelegation.id, page_size(platform, limit), cursor
        )
        await uow.commit()
    items = [
        DriverView(
            id=d.id,
            driver_user_id=d.driver_user_id,
            display_name=name,
            permissions=list(d.permissions),
            valid_from=d.valid_from,
            valid_until=d.valid_until,
        )
        for d, name in rows
    ]
    return Page[DriverView](items=items, next_cursor=next_cursor)


@_routes.delete(
    "/vehicles/{vehicle_id}/drivers/{delegation_id}",
    name="mobile:drivers:revoke",
    status_code=204,
    response_class=Response,
)
@catalogued(entry("revoke a driver's delegation", Permission.VEHICLE_MANAGE_DRIVERS))
async def revoke_driver(
    vehicle_id: str, delegation_id: str, request: Request, caller: Caller = _authenticated
) -> Response:
    async with platform_of(request).services() as (uow, ctx):
        vehicle, _owner = await owner_of(
            request, caller, Permission.VEHICLE_MANAGE_DRIVERS, vehicle_id, ctx
        )
        delegation = await ctx.session.scalar(
            select(DriverDelegation).where(
                DriverDelegation.id == delegation_id,
                DriverDelegation.vehicle_id == vehicle.id,
                DriverDelegation.revoked_at.is_(None),
            )
        )
        # Revoked meanwhile (by the sale, or a second click racing this one): nothing is
        # left to revoke, the same 404 as when it was revoked before this request read it.
        if delegation is None or not await DelegationService(ctx).revoke(
            delegation, actor=actor_of(caller)
        ):
            raise not_found()
        await uow.commit()
    return Response(status_code=204)


@_routes.get("/delegations", name="mobile:delegations:mine", response_model=Page[DelegationView])
@catalogued(
    entry(
        "the caller's own delegations as a driver (current and future)",
        AUTHENTICATED,
        objects=("delegation",),
        rate=60,
    )
)
async def my_delegations(
    request: Request, caller: Caller = _authenticated, limit: Limit = 50, cursor: Cursor = None
) -> Page[DelegationView]:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        driver = await consumer_of(ctx, caller)
        query = select(DriverDelegation).where(
            DriverDelegation.driver_user_id == driver.id,
            DriverDelegation.revoked_at.is_(None),
            DriverDelegation.valid_until > platform.clock.now(),
        )
        rows, next_cursor = await page_of(
            ctx, query, DriverDelegation.id, page_size(platform, limit), cursor
        )
        await uow.commit()
    return Page[DelegationView](
        items=[_delegation_view(d) for (d,) in rows], next_cursor=next_cursor
    )


router = APIRouter()
router.include_router(_routes)
router.include_router(handover_transfers.router)

__all__ = ["router"]
