"""What the handover and consent routes share: who may call them, and how they page.

* :func:`owner_of`: the PDP's allow for a vehicle permission, then the caller as the
  vehicle's current owner (the policy also lets a fleet admin manage a fleet vehicle, which
  has no consumer ownership to lend, sell or share); any denial is the vehicle route's 404.
* :func:`consumer_of`: for routes that carry only a one-time code: a consumer person acting
  in their own consumer tenant, a member now; any other caller may never use them (403).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import Select

from fleetward.api.auth import Caller
from fleetward.api.authorize import NotPermitted, authorize, not_found
from fleetward.api.objects import cut_page, decode_cursor, encode_cursor, object_entry
from fleetward.audit.recorder import Actor
from fleetward.authz.decision import ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import (
    CallerType,
    CatalogEntry,
    DataClass,
    Impact,
    PublicMarker,
)
from fleetward.core.surfaces import Surface
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.services import ServiceContext
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.ownership import OwnershipService

OWNER: Final = "vehicles-team"
SURFACE: Final = Surface.MOBILE
_IMPACT: Final = frozenset({Impact.PRIVACY, Impact.SAFETY})


class IssuedView(BaseModel):
    """A new invitation or transfer: the code is in this response and nowhere else."""

    id: str
    code: str
    expires_at: datetime


def entry(
    purpose: str,
    permission: Permission | PublicMarker,
    *,
    objects: tuple[str, ...] = ("vehicle",),
    rate: int = 30,
) -> CatalogEntry:
    """A mobile route's catalog entry; ``AUTHENTICATED`` for the code-only routes."""
    if isinstance(permission, PublicMarker):
        return CatalogEntry(
            surface=SURFACE,
            owner=OWNER,
            purpose=purpose,
            callers=frozenset({CallerType.USER}),
            permission=permission,
            data_class=DataClass.PERSONAL,
            objects=objects,
            impact=_IMPACT,
            expected_rate_per_minute=rate,
            tags=("handovers",),
        )
    return object_entry(
        SURFACE,
        purpose,
        permission,
        DataClass.PERSONAL,
        owner=OWNER,
        objects=objects,
        tags=("handovers",),
        impact=_IMPACT,
        rate=rate,
    )


def actor_of(caller: Caller) -> Actor:
    return Actor.user(caller.claims.sub, caller.claims.tenant)


async def owner_of(
    request: Request,
    caller: Caller,
    permission: Permission,
    vehicle_id: str,
    ctx: ServiceContext,
) -> tuple[Vehicle, User]:
    """The PDP's allow for ``permission`` on the vehicle, then the caller as its current
    owner; anything else is the vehicle route's 404."""
    await authorize(request, caller, permission, ResourceRef.vehicle(vehicle_id), ctx=ctx)
    vehicle = await ctx.session.get(Vehicle, vehicle_id)
    user = await ctx.session.get(User, caller.claims.sub)
    if vehicle is None or user is None or caller.claims.sub_type != "user":
        raise not_found()
    ownership = await OwnershipService(ctx).current(vehicle)
    if ownership is None or ownership.owner_user_id != user.id:
        raise not_found()
    return vehicle, user


async def consumer_of(ctx: ServiceContext, caller: Caller) -> User:
    """The caller as a consumer person acting in a consumer tenant they belong to now; any
    other caller (an application, a dealer, staff, a fleet) may never use the route: 403."""
    claims = caller.claims
    user = await ctx.session.get(User, claims.sub) if claims.sub_type == "user" else None
    tenant = await ctx.session.get(Tenant, claims.tenant)
    if (
        user is None
        or tenant is None
        or user.disabled_at is not None
        or tenant.disabled_at is not None
        or tenant.kind is not TenantKind.CONSUMER
        or user.home_tenant_id != tenant.id
        or Role.CUSTOMER not in await Directory(ctx).active_roles(user, tenant)
    ):
        raise NotPermitted("this operation is for consumer accounts")
    return user


async def page_of(
    ctx: ServiceContext,
    query: Select[*tuple[Any, ...]],
    id_column: Any,
    size: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One keyset page of ``query`` (already filtered to what the caller may see) on the id
    of its first entity, and the cursor of the next page."""
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(id_column > after)
    rows = list((await ctx.session.execute(query.order_by(id_column).limit(size + 1))).all())
    page, more = cut_page(rows, size)
    return page, encode_cursor(page[-1][0].id) if more and page else None


__all__ = [
    "OWNER",
    "SURFACE",
    "IssuedView",
    "actor_of",
    "consumer_of",
    "entry",
    "owner_of",
    "page_of",
]
