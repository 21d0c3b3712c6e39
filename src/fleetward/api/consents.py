"""Partner consents: the owner's routes on the mobile surface, the partner's view of its own.

Owner routes ask the PDP for ``vehicle:manage_consents`` (owner only: the policy never grants
it to drivers, dealers, support, fleets or partners) and then require the caller to be the
vehicle's current owner; every denial is the vehicle route's 404, and a consent reached
through another vehicle is the same 404. The partner in a body is checked like an id in a
path: an unknown tenant and a tenant that is not a partner answer the same 422.

The partner route lists, filtered in the query, the consents of the calling partner client's
own tenant that are in force now: consent id, vehicle id, scopes and window, nothing about
the owner.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import NotPermitted, not_found
from fleetward.api.bodies import StrictBody
from fleetward.api.handover_access import owner_of
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
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import (
    AUTHENTICATED,
    CallerType,
    CatalogEntry,
    DataClass,
    Impact,
    catalogued,
)
from fleetward.core.errors import InvalidInput
from fleetward.core.ids import is_id
from fleetward.core.surfaces import Surface
from fleetward.identity.models import Tenant, TenantKind
from fleetward.identity.oauth_models import Client, ClientType
from fleetward.services import ServiceContext
from fleetward.store.base import ID_LENGTH
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.models import PartnerConsent

OWNER: Final = "partners-team"
_TAGS: Final = ("consents",)


class UnknownPartner(InvalidInput):
    code = "unknown-partner"
    title = "Unknown partner"


class ConsentBody(StrictBody):
    partner_id: Annotated[str, Field(min_length=1, max_length=ID_LENGTH)]
    scopes: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=16)
    ]
    valid_until: datetime


class ConsentView(BaseModel):
    """A consent as the owner sees it."""

    id: str
    partner_id: str
    scopes: list[str]
    valid_from: datetime
    valid_until: datetime


class PartnerConsentView(BaseModel):
    """A consent as its partner sees it: no owner, no personal data."""

    id: str
    vehicle_id: str
    scopes: list[str]
    valid_from: datetime
    valid_until: datetime


def _entry(purpose: str, *, rate: int = 30) -> CatalogEntry:
    return object_entry(
        Surface.MOBILE,
        purpose,
        Permission.VEHICLE_MANAGE_CONSENTS,
        DataClass.PERSONAL,
        owner=OWNER,
        objects=("vehicle", "partner_consent"),
        tags=_TAGS,
        impact=frozenset({Impact.PRIVACY, Impact.REGULATORY}),
        rate=rate,
    )


def _view(c: PartnerConsent) -> ConsentView:
    return ConsentView(
        id=c.id,
        partner_id=c.partner_tenant_id,
        scopes=list(c.scopes),
        valid_from=c.valid_from,
        valid_until=c.valid_until,
    )


async def _partner(ctx: ServiceContext, partner_id: str) -> Tenant:
    """A live partner tenant; unknown, malformed and non-partner ids answer the same."""
    tenant = await ctx.session.get(Tenant, partner_id) if is_id(partner_id, "ten") else None
    if tenant is None or tenant.kind is not TenantKind.PARTNER or tenant.disabled_at is not None:
        raise UnknownPartner("partner_id does not name a partner", reason="partner")
    return tenant


# ----------------------------------------------------------------------------- owner (mobile)

mobile_router = surface_router(Surface.MOBILE)
_MOBILE = Depends(authenticate(Surface.MOBILE))


@mobile_router.post(
    "/vehicles/{vehicle_id}/consents",
    name="mobile:consents:grant",
    response_model=ConsentView,
    status_code=201,
)
@catalogued(_entry("let a partner read chosen data kinds of the vehicle until a date", rate=10))
async def grant_consent(
    vehicle_id: str, body: ConsentBody, request: Request, caller: Caller = _MOBILE
) -> ConsentView:
    async with platform_of(request).services() as (uow, ctx):
        vehicle, owner = await owner_of(
            request, caller, Permission.VEHICLE_MANAGE_CONSENTS, vehicle_id, ctx
        )
        partner = await _partner(ctx, body.partner_id)
        consent = await ConsentService(ctx).grant(
            partner,
            vehicle,
            owner,
            body.scopes,
            valid_until=body.valid_until,
            actor=Actor.user(caller.claims.sub, caller.claims.tenant),
        )
        await uow.commit()
    return _view(consent)


@mobile_router.get(
    "/vehicles/{vehicle_id}/consents",
    name="mobile:consents:list",
    response_model=Page[ConsentView],
)
@catalogued(_entry("the partner consents in force or to come on the vehicle", rate=60))
async def list_consents(
    vehicle_id: str,
    request: Request,
    caller: Caller = _MOBILE,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ConsentView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        vehicle, _owner = await owner_of(
            request, caller, Permission.VEHICLE_MANAGE_CONSENTS, vehicle_id, ctx
        )
        query = select(PartnerConsent).where(
            PartnerConsent.vehicle_id == vehicle.id,
            PartnerConsent.revoked_at.is_(None),
            PartnerConsent.valid_until > platform.clock.now(),
        )
        if after is not None:
            query = query.where(PartnerConsent.id > after)
        rows = await ctx.session.scalars(query.order_by(PartnerConsent.id).limit(size + 1))
        page, more = cut_page(list(rows), size)
        await uow.commit()
    return Page[ConsentView](
        items=[_view(c) for c in page],
        next_cursor=encode_cursor(page[-1].id) if more and page else None,
    )


@mobile_router.delete(
    "/vehicles/{vehicle_id}/consents/{consent_id}",
    name="mobile:consents:revoke",
    status_code=204,
    response_class=Response,
)
@catalogued(_entry("revoke a partner consent", rate=10))
async def revoke_consent(
    vehicle_id: str, consent_id: str, request: Request, caller: Caller = _MOBILE
) -> Response:
    async with platform_of(request).services() as (uow, ctx):
        vehicle, _owner = await owner_of(
            request, caller, Permission.VEHICLE_MANAGE_CONSENTS, vehicle_id, ctx
        )
        consent = await ctx.session.scalar(
            select(PartnerConsent).where(
                PartnerConsent.id == consent_id,
                PartnerConsent.vehicle_id == vehicle.id,
                PartnerConsent.revoked_at.is_(None),
            )
        )
        # Revoked meanwhile (the owner's other click, a sale that ended the consent): the
        # same 404 as a consent revoked before, and the earlier revocation stands.
        if consent is None or not await ConsentService(ctx).revoke(
            consent, actor=Actor.user(caller.claims.sub, caller.claims.tenant)
        ):
            raise not_found()
        await uow.commit()
    return Response(status_code=204)


# ----------------------------------------------------------------------------- partner

partner_router = surface_router(Surface.PARTNER)
_PARTNER = Depends(authenticate(Surface.PARTNER))


async def _calling_partner(ctx: ServiceContext, caller: Caller) -> Tenant:
    """The partner tenant of a live partner client acting for itself in its own tenant; any
    other caller (a person, a workload, a client of another tenant) may never list: 403."""
    claims = caller.claims
    client = await ctx.session.get(Client, claims.client_id) if claims.sub_type != "user" else None
    tenant = await ctx.session.get(Tenant, claims.tenant)
    if (
        client is None
        or tenant is None
        or client.client_type is not ClientType.PARTNER
        or client.disabled_at is not None
        or client.tenant_id != tenant.id
        or tenant.kind is not TenantKind.PARTNER
        or tenant.disabled_at is not None
    ):
        raise NotPermitted("only a partner application lists its consents")
    return tenant


@partner_router.get(
    "/consents", name="partner:consents:list", response_model=Page[PartnerConsentView]
)
@catalogued(
    CatalogEntry(
        surface=Surface.PARTNER,
        owner=OWNER,
        purpose="the calling partner's consents in force now (vehicle ids, scopes, windows)",
        callers=frozenset({CallerType.PARTNER}),
        permission=AUTHENTICATED,
        data_class=DataClass.PERSONAL,
        objects=("partner_consent",),
        impact=frozenset({Impact.PRIVACY}),
        expected_rate_per_minute=30,
        tags=_TAGS,
    )
)
async def partner_consents(
    request: Request, caller: Caller = _PARTNER, limit: Limit = 50, cursor: Cursor = None
) -> Page[PartnerConsentView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        partner = await _calling_partner(ctx, caller)
        now = platform.clock.now()
        query = select(PartnerConsent).where(
            PartnerConsent.partner_tenant_id == partner.id,
            PartnerConsent.revoked_at.is_(None),
            PartnerConsent.valid_from <= now,
            PartnerConsent.valid_until > now,
        )
        if after is not None:
            query = query.where(PartnerConsent.id > after)
        rows = await ctx.session.scalars(query.order_by(PartnerConsent.id).limit(size + 1))
        page, more = cut_page(list(rows), size)
        await uow.commit()
    items = [
        PartnerConsentView(
            id=c.id,
            vehicle_id=c.vehicle_id,
            scopes=list(c.scopes),
            valid_from=c.valid_from,
            valid_until=c.valid_until,
        )
        for c in page
    ]
    return Page[PartnerConsentView](
        items=items, next_cursor=encode_cursor(page[-1].id) if more and page else None
    )


router = APIRouter()
router.include_router(mobile_router)
router.include_router(partner_router)

__all__ = ["router"]
