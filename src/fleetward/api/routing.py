"""Routers whose routes carry their catalog entry into the OpenAPI document, and keep its
lifecycle.

A route's entry says whether it is active, deprecated (with a sunset date) or retired. An
inventory whose retirement dates are not enforced lists zombie routes as gone while they
still answer (OWASP API9, improper inventory management). So:

* a deprecated route answers with a ``Sunset`` header (RFC 8594) until its sunset date;
* from its sunset date (00:00 UTC, the platform's clock) a deprecated route, and a retired
  route at any time, answers ``410 Gone`` (``route-retired``) before anything of it runs:
  no authentication, no quota, no handler.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from email.utils import format_datetime
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

from fleetward.api.authorize import not_found
from fleetward.catalog.entry import CatalogEntry, Lifecycle, entry_of
from fleetward.core.errors import FleetwardError
from fleetward.core.surfaces import Surface
from fleetward.store.base import ID_LENGTH


class RouteRetired(FleetwardError):
    code = "route-retired"
    status = 410
    title = "Gone"


class CataloguedRoute(APIRoute):
    """An APIRoute that publishes its catalog entry as ``x-fleetward-*`` extensions and
    answers as its lifecycle says (see the module docstring).

    A missing entry is not an error here: the start-up inventory refuses the whole app,
    which also catches routes added without this class. Only this class keeps a lifecycle,
    so the inventory refuses a deprecated or retired entry on any other route
    (``enforces_lifecycle``).
    """

    enforces_lifecycle = True

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        entry = entry_of(endpoint)
        if entry is not None:
            extra = dict(kwargs.get("openapi_extra") or {})
            extra.update(entry.as_extensions())
            kwargs["openapi_extra"] = extra
        super().__init__(path, endpoint, **kwargs)
        self.catalog_entry = entry
        if entry is not None and self.openapi_extra is not None:
            # The route's stable name (``surface:object:operation``): what probes and the
            # TARA evidence cite, independent of FastAPI's generated operationId.
            self.openapi_extra["x-fleetward-route"] = self.name

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        params: dict[str, Any] = scope.get("path_params") or {}
        if any(_no_object(name, value) for name, value in params.items()):
            raise not_found()
        entry = self.catalog_entry
        if entry is None or entry.lifecycle is Lifecycle.ACTIVE:
            await super().handle(scope, receive, send)
            return
        sunset = _sunset_instant(entry)
        if entry.lifecycle is Lifecycle.RETIRED or sunset is None or _now(scope) >= sunset:
            raise RouteRetired(
                f"this route was retired on {entry.sunset.isoformat() if entry.sunset else '-'}",
                reason="retired",
            )
        header = (b"sunset", format_datetime(sunset, usegmt=True).encode("ascii"))

        async def with_sunset(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await super().handle(scope, receive, with_sunset)


def _no_object(name: str, value: object) -> bool:
    """Whether a path parameter can name no stored object: none holds a control character
    (PostgreSQL refuses a NUL in text, a 500), and no ``*_id`` is longer than the store's id
    column (on PostgreSQL a longer vehicle id did not fit the audit record of the decision
    about it: a 500, or the record lost). The missing object's 404, before any store sees it."""
    if not isinstance(value, str):
        return False
    return not value.isprintable() or (name.endswith("_id") and len(value) > ID_LENGTH)


def _sunset_instant(entry: CatalogEntry) -> datetime | None:
    sunset: date | None = entry.sunset
    return datetime.combine(sunset, time.min, UTC) if sunset is not None else None


def _now(scope: Scope) -> datetime:
    """The platform's clock (tests move it); the system's where the app has no platform."""
    platform = getattr(getattr(scope.get("app"), "state", None), "platform", None)
    if platform is None:
        return datetime.now(UTC)
    now: datetime = platform.clock.now()
    return now


def surface_router(surface: Surface) -> APIRouter:
    return APIRouter(
        prefix=f"{surface.prefix}/v1", tags=[surface.value], route_class=CataloguedRoute
    )


def infrastructure_router() -> APIRouter:
    return APIRouter(tags=["infrastructure"], route_class=CataloguedRoute)
