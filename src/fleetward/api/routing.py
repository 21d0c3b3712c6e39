"""Routers whose routes carry their catalog entry into the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute

from fleetward.catalog.entry import entry_of
from fleetward.core.surfaces import Surface


class CataloguedRoute(APIRoute):
    """An APIRoute that publishes its catalog entry as ``x-fleetward-*`` extensions.

    A missing entry is not an error here: the start-up inventory refuses the whole app,
    which also catches routes added without this class.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        entry = entry_of(endpoint)
        if entry is not None:
            extra = dict(kwargs.get("openapi_extra") or {})
            extra.update(entry.as_extensions())
            kwargs["openapi_extra"] = extra
        super().__init__(path, endpoint, **kwargs)
        if entry is not None and self.openapi_extra is not None:
            # The route's stable name (``surface:object:operation``): what probes and the
            # TARA evidence cite, independent of FastAPI's generated operationId.
            self.openapi_extra["x-fleetward-route"] = self.name


def surface_router(surface: Surface) -> APIRouter:
    return APIRouter(
        prefix=f"{surface.prefix}/v1", tags=[surface.value], route_class=CataloguedRoute
    )


def infrastructure_router() -> APIRouter:
    return APIRouter(tags=["infrastructure"], route_class=CataloguedRoute)
