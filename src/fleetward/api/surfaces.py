"""One router per surface. Each is mounted under ``/<surface>/v1`` and describes itself.

Object routes are added by the capabilities (identity, authorization, commands, ...); the
description route tells a client which token audience the surface accepts.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from fleetward.api.routing import surface_router
from fleetward.catalog.entry import PUBLIC, CallerType, CatalogEntry, DataClass, catalogued
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


def build_surface_router(surface: Surface) -> APIRouter:
    router = surface_router(surface)

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

    return router
