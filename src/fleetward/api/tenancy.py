"""Tenants and client registrations on the admin surface: the platform admin's function.

``admin:manage_tenants`` is asked on tenants and ``admin:manage_clients`` on client
registrations (policy ``platform-admin``), the way the PDP builds those resources
(:mod:`fleetward.authz.entities`). Both are functions: the caller's standing is asked first
on a resource that exists (their own tenant; the platform, whether or not any registration
does), so anyone who may never use them (an engineer, a support agent) is refused with 403
whatever the id and whatever the store holds;
then each object is asked about again, and an unknown client is a 404. Lists are
keyset-paginated and every row is decided.

Client registrations are shown without secrets or key material: public key ids only.
Operator tenants (platform staff) are never created through the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from pydantic import BaseModel, StringConstraints
from sqlalchemy import select

from fleetward.api.auth import Caller, StepUp, authenticate
from fleetward.api.authorize import authorize, decide_many, not_found
from fleetward.api.bodies import PRINTABLE, StrictBody
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
from fleetward.authz.decision import THE_PLATFORM, ResourceKind, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, Impact, catalogued
from fleetward.core.errors import InvalidInput
from fleetward.core.surfaces import Surface
from fleetward.identity.directory import Directory
from fleetward.identity.models import Tenant, TenantKind
from fleetward.identity.oauth_models import Client
from fleetward.services import ServiceContext

OWNER: Final = "identity-team"
TENANTS: Final = Permission.ADMIN_MANAGE_TENANTS
CLIENTS: Final = Permission.ADMIN_MANAGE_CLIENTS
PLATFORM: Final = THE_PLATFORM

Slug = Annotated[
    str, StringConstraints(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$")
]
DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=200), PRINTABLE]

router = surface_router(Surface.ADMIN)
admin = Depends(authenticate(Surface.ADMIN))
stepped_up_admin = Depends(authenticate(Surface.ADMIN, step_up=StepUp()))


class TenantView(BaseModel):
    id: str
    slug: str
    name: str
    kind: TenantKind
    created_at: datetime
    disabled_at: datetime | None


class ClientView(BaseModel):
    """A client registration: what it may ask for, never a secret or a key."""

    id: str
    name: str
    client_type: str
    tenant_id: str | None
    surfaces: list[str]
    scopes: list[str]
    grant_types: list[str]
    redirect_uris: list[str]
    require_dpop: bool
    key_ids: list[str]
    created_at: datetime
    disabled_at: datetime | None


class TenantBody(StrictBody):
    slug: Slug
    name: DisplayName
    kind: TenantKind


def _entry(
    purpose: str, permission: Permission, data_class: DataClass, *, writes: bool = False
) -> CatalogEntry:
    return object_entry(
        Surface.ADMIN,
        purpose,
        permission,
        data_class,
        owner=OWNER,
        objects=("tenant",) if permission is TENANTS else ("client_registration",),
        tags=("tenancy",),
        caller=CallerType.ADMIN,
        impact=frozenset({Impact.OPERATIONAL, Impact.REGULATORY}),
        rate=10 if writes else 60,
    )


def _tenant_ref(tenant_id: str) -> ResourceRef:
    return ResourceRef(ResourceKind.TENANT, tenant_id)


def _client_ref(client_id: str) -> ResourceRef:
    return ResourceRef(ResourceKind.CLIENT_REGISTRATION, client_id)


def _tenant_view(tenant: Tenant) -> TenantView:
    return TenantView(
        id=tenant.id,
        slug=tenant.slug,
        name=tenant.name,
        kind=tenant.kind,
        created_at=tenant.created_at,
        disabled_at=tenant.disabled_at,
    )


def _key_ids(jwks: dict[str, Any] | None) -> list[str]:
    keys = (jwks or {}).get("keys")
    if not isinstance(keys, list):
        return []
    return [k["kid"] for k in keys if isinstance(k, dict) and isinstance(k.get("kid"), str)]


def _client_view(client: Client) -> ClientView:
    return ClientView(
        id=client.id,
        name=client.name,
        client_type=client.client_type.value,
        tenant_id=client.tenant_id,
        surfaces=list(client.surfaces),
        scopes=list(client.scopes),
        grant_types=list(client.grant_types),
        redirect_uris=list(client.redirect_uris),
        require_dpop=client.require_dpop,
        key_ids=_key_ids(client.jwks),
        created_at=client.created_at,
        disabled_at=client.disabled_at,
    )


async def _require_tenants(request: Request, caller: Caller, ctx: ServiceContext) -> None:
    """The tenant-administration function, asked on the caller's own tenant (it exists)."""
    mine = _tenant_ref(caller.claims.tenant)
    await authorize(request, caller, TENANTS, mine, object_route=False, ctx=ctx)


async def _require_clients(request: Request, caller: Caller, ctx: ServiceContext) -> None:
    """The client-administration function, asked on the platform (it exists): whether the
    caller may use it never depends on whether the registry holds a registration."""
    await authorize(request, caller, CLIENTS, PLATFORM, object_route=False, ctx=ctx)


# ----------------------------------------------------------------------------- tenants


@router.get("/tenants", name="admin:tenants:list", response_model=Page[TenantView])
@catalogued(_entry("the platform's tenants, a page at a time", TENANTS, DataClass.INTERNAL))
async def list_tenants(
    request: Request, caller: Caller = admin, limit: Limit = 50, cursor: Cursor = None
) -> Page[TenantView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        await _require_tenants(request, caller, ctx)
        query = select(Tenant)
        if after is not None:
            query = query.where(Tenant.id > after)
        rows = await ctx.session.scalars(query.order_by(Tenant.id).limit(size + 1))
        page, more = cut_page(list(rows), size)
        decisions = await decide_many(
            request, caller, TENANTS, [_tenant_ref(t.id) for t in page], ctx=ctx
        )
        await uow.commit()
    items = [_tenant_view(t) for t, d in zip(page, decisions, strict=True) if d.allowed]
    return Page[TenantView](items=items, next_cursor=encode_cursor(page[-1].id) if more else None)


@router.post("/tenants", name="admin:tenants:create", status_code=201, response_model=TenantView)
@catalogued(
    _entry("creates a consumer, fleet, dealer or partner tenant", TENANTS, DataClass.INTERNAL)
)
async def create_tenant(
    body: TenantBody, request: Request, caller: Caller = stepped_up_admin
) -> TenantView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_tenants(request, caller, ctx)
        if body.kind is TenantKind.OPERATOR:
            # Platform staff tenants hold the most powerful roles: created out of band only.
            raise InvalidInput("operator tenants are not created through the API", reason="kind")
        tenant = await Directory(ctx).create_tenant(
            body.slug,
            body.name,
            body.kind,
            actor=Actor.user(caller.claims.sub, caller.claims.tenant),
        )
        await uow.commit()
    return _tenant_view(tenant)


# ----------------------------------------------------------------------------- clients


@router.get("/clients", name="admin:clients:list", response_model=Page[ClientView])
@catalogued(
    _entry(
        "the client registrations, without secrets or keys (key ids only)",
        CLIENTS,
        DataClass.INTERNAL,
    )
)
async def list_clients(
    request: Request, caller: Caller = admin, limit: Limit = 50, cursor: Cursor = None
) -> Page[ClientView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        await _require_clients(request, caller, ctx)
        query = select(Client)
        if after is not None:
            query = query.where(Client.id > after)
        rows = await ctx.session.scalars(query.order_by(Client.id).limit(size + 1))
        page, more = cut_page(list(rows), size)
        decisions = await decide_many(
            request, caller, CLIENTS, [_client_ref(c.id) for c in page], ctx=ctx
        )
        await uow.commit()
    items = [_client_view(c) for c, d in zip(page, decisions, strict=True) if d.allowed]
    return Page[ClientView](items=items, next_cursor=encode_cursor(page[-1].id) if more else None)


@router.get("/clients/{client_id}", name="admin:clients:read", response_model=ClientView)
@catalogued(_entry("one client registration, without secrets or keys", CLIENTS, DataClass.INTERNAL))
async def read_client(client_id: str, request: Request, caller: Caller = admin) -> ClientView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_clients(request, caller, ctx)
        # In this transaction (it holds the function check's record): a denial is committed
        # with it, then refused.
        (decision,) = await decide_many(request, caller, CLIENTS, [_client_ref(client_id)], ctx=ctx)
        client = await ctx.session.get(Client, client_id) if decision.allowed else None
        if client is None:
            await uow.commit()
            raise not_found()
        await uow.commit()
    return _client_view(client)


__all__ = ["router"]
