"""Every route is inventoried, or the app refuses to start."""

from __future__ import annotations

import json
from datetime import date

import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.routing import Mount

from fleetward.app import build_app
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import (
    PUBLIC,
    CallerType,
    CatalogEntry,
    DataClass,
    Lifecycle,
    catalogued,
)
from fleetward.catalog.inventory import UncataloguedRoute, export, inventory
from fleetward.core.surfaces import Surface
from fleetward.settings import Settings


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return build_app(settings)


def test_every_served_route_has_an_entry(app: FastAPI) -> None:
    items = inventory(app.router.routes)
    paths = {item.path for item in items}
    assert {"/healthz", "/readyz", "/openapi.json"} <= paths
    assert {f"/{s.value}/v1" for s in Surface} <= paths


async def test_uncatalogued_route_refuses_start(app: FastAPI) -> None:
    async def shadow() -> dict[str, str]:
        return {}

    app.add_api_route("/mobile/v1/shadow", shadow)
    with pytest.raises(UncataloguedRoute, match="/mobile/v1/shadow"):
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover - start-up must fail before this


def test_uncatalogued_route_in_an_included_router_is_found(app: FastAPI) -> None:
    router = APIRouter(prefix="/fleet/v2")

    @router.post("/bulk")
    async def bulk() -> None:
        return None

    app.include_router(router)
    with pytest.raises(UncataloguedRoute, match="POST /fleet/v2/bulk"):
        inventory(app.router.routes)


def test_mounted_sub_application_is_refused(app: FastAPI) -> None:
    app.router.routes.append(Mount("/legacy", app=FastAPI()))
    with pytest.raises(UncataloguedRoute, match="mount /legacy"):
        inventory(app.router.routes)


def test_catalogued_route_added_later_is_accepted(app: FastAPI) -> None:
    router = APIRouter(prefix="/fleet/v1")

    @router.get("/groups")
    @catalogued(
        CatalogEntry(
            surface=Surface.FLEET,
            owner="fleet-team",
            purpose="list groups",
            callers=frozenset({CallerType.USER}),
            permission=Permission.FLEET_MANAGE_GROUPS,
            data_class=DataClass.INTERNAL,
            objects=("fleet_group",),
        )
    )
    async def groups() -> list[str]:
        return []

    app.include_router(router)
    assert "/fleet/v1/groups" in {i.path for i in inventory(app.router.routes)}


def _retiring(lifecycle: Lifecycle) -> CatalogEntry:
    return CatalogEntry(
        surface=Surface.MOBILE,
        owner="team",
        purpose=f"a {lifecycle.value} route",
        callers=frozenset({CallerType.USER}),
        permission=Permission.VEHICLE_READ_STATUS,
        data_class=DataClass.VEHICLE_STATE,
        lifecycle=lifecycle,
        sunset=date(2026, 1, 1),
    )


@pytest.mark.parametrize("lifecycle", [Lifecycle.DEPRECATED, Lifecycle.RETIRED])
async def test_a_retiring_route_that_nothing_retires_refuses_start(
    app: FastAPI, lifecycle: Lifecycle
) -> None:
    # Zombie API (OWASP API9): only CataloguedRoute answers 410 past a sunset. A route of a
    # plain router (or a WebSocket route) listed as deprecated or retired would be reported
    # as gone by the inventory while it still answers, so the app must not start.
    router = APIRouter(prefix="/mobile/v1")

    @router.get("/old-status")
    @catalogued(_retiring(lifecycle))
    async def old_status() -> dict[str, str]:
        return {"status": "still here"}

    @router.websocket("/old-stream")
    @catalogued(_retiring(lifecycle))
    async def old_stream(websocket: WebSocket) -> None:
        await websocket.close()  # pragma: no cover - never served

    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        # What the inventory would have let through: past its sunset, still answering.
        assert (await client.get("/mobile/v1/old-status")).status_code == 200
    with pytest.raises(UncataloguedRoute) as refused:
        inventory(app.router.routes)
    assert "GET /mobile/v1/old-status" in str(refused.value)
    assert "WEBSOCKET /mobile/v1/old-stream" in str(refused.value)


def test_export_and_openapi_carry_the_entries(app: FastAPI) -> None:
    rows = export(app.router.routes)
    json.dumps(rows)  # JSON-ready
    readyz = next(r for r in rows if r["path"] == "/readyz")
    assert readyz["owner"] == "platform-team"
    assert readyz["permission"] == "public"
    assert readyz["methods"] == ["GET"]
    document = app.openapi()
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert operation["x-fleetward-owner"], path
            assert operation["x-fleetward-permission"], path
            assert "x-fleetward-data-class" in operation
            assert operation.get("x-fleetward-route"), path


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # A public route that claims authenticated callers only is a contradiction.
        ({"permission": PUBLIC, "callers": frozenset({CallerType.USER})}, "public"),
        # An anonymous caller on a permissioned route would be a fail-open entry.
        ({"callers": frozenset({CallerType.ANONYMOUS, CallerType.USER})}, "public"),
        # A route being retired needs a date, or zombies live forever.
        ({"lifecycle": Lifecycle.DEPRECATED}, "sunset"),
        ({"owner": ""}, "owner"),
    ],
)
def test_inconsistent_entries_are_refused(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "surface": Surface.MOBILE,
        "owner": "team",
        "purpose": "p",
        "callers": frozenset({CallerType.USER}),
        "permission": Permission.VEHICLE_LOCK,
        "data_class": DataClass.VEHICLE_STATE,
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CatalogEntry(**base)  # type: ignore[arg-type]


def test_deprecated_entry_with_sunset_is_valid() -> None:
    entry = CatalogEntry(
        surface=Surface.MOBILE,
        owner="team",
        purpose="old",
        callers=frozenset({CallerType.USER}),
        permission=Permission.VEHICLE_LOCK,
        data_class=DataClass.VEHICLE_STATE,
        lifecycle=Lifecycle.DEPRECATED,
        sunset=date(2027, 6, 30),
    )
    assert entry.as_extensions()["x-fleetward-sunset"] == "2027-06-30"
