"""One router per surface. Each is mounted under ``/<surface>/v1`` and describes itself.

Object routes are added by the capabilities (identity, authorization, commands, ...); the
description route tells a client which token audience the surface accepts.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from fleetward.api.auth import Caller, authenticate
from fleetward.api.routing import surface_router
from fleetward.catalog.entry import (
    AUTHENTICATED,
    PUBLIC,
    CallerType,
    CatalogEntry,
    DataClass,
    catalogued,
)
from fleetward.core.surfaces import Surface

_CALLERS: dict[Surface, CallerType] = {
    Surface.MOBILE: CallerType.USER,
    Surface.FLEET: CallerType.USER,
    Surface.DEALER: CallerType.USER,
    Surface.PARTNER: CallerType.PARTNER,
    Surface.SUPPORT: CallerType.USER,
    Surface.ADMIN: CallerType.ADMIN,
}


class SurfaceDescription(BaseModel):
    surface: str
    version: str
    audience: str
    token_type: str
    issuer: str


class CallerView(BaseModel):
    """Who the token says the caller is: ids and grants only, no personal data."""

    subject: str
    subject_type: str
    tenant: str
    client_id: str
    scopes: list[str]
    acr: str
    amr: list[str]
    auth_time: int
    expires_at: int
    sender_constrained: bool


def build_surface_router(surface: Surface) -> APIRouter:
    router = surface_router(surface)
    # Bound here, not in the annotation: annotations are strings resolved from module globals,
    # where the closure's ``surface`` does not exist.
    authenticated = Depends(authenticate(surface))

    @router.get("", name=f"{surface.value}:describe", response_model=SurfaceDescription)
    @catalogued(
        CatalogEntry(
            surface=surface,
            owner="platform-team",
            purpose=f"describes the {surface.value} surface and the token audience it accepts",
            callers=frozenset({CallerType.ANONYMOUS, _CALLERS[surface]}),
            permission=PUBLIC,
            data_class=DataClass.PUBLIC,
            expected_rate_per_minute=30,
        )
    )
    async def describe(request: Request) -> SurfaceDescription:
        return SurfaceDescription(
            surface=surface.value,
            version="v1",
            audience=surface.audience,
            token_type="at+jwt",  # noqa: S106 - a token type name, not a secret
            issuer=request.app.state.platform.settings.base_url,
        )

    @router.get("/me", name=f"{surface.value}:me", response_model=CallerView)
    @catalogued(
        CatalogEntry(
            surface=surface,
            owner="identity-team",
            purpose=f"the authenticated caller of the {surface.value} surface, as the token says",
            callers=frozenset({_CALLERS[surface]}),
            permission=AUTHENTICATED,
            data_class=DataClass.INTERNAL,
            objects=("caller",),
            expected_rate_per_minute=30,
        )
    )
    async def me(caller: Caller = authenticated) -> CallerView:
        claims = caller.claims
        return CallerView(
            subject=claims.sub,
            subject_type=claims.sub_type,
            tenant=claims.tenant,
            client_id=claims.client_id,
            scopes=sorted(claims.scopes),
            acr=claims.acr,
            amr=list(claims.amr),
            auth_time=claims.auth_time,
            expires_at=claims.exp,
            sender_constrained=caller.dpop_jkt is not None,
        )

    return router
