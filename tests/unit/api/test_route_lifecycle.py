"""A route's catalog lifecycle is kept, not only listed: a deprecated route announces its
sunset; from its sunset date, and a retired route always, answers 410 and runs nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from fleetward.api import problems
from fleetward.api.routing import CataloguedRoute
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, Lifecycle, catalogued
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface

SUNSET = date(2027, 6, 30)


def _entry(lifecycle: Lifecycle) -> CatalogEntry:
    return CatalogEntry(
        surface=Surface.MOBILE,
        owner="team",
        purpose=f"a {lifecycle.value} route",
        callers=frozenset({CallerType.USER}),
        permission=Permission.VEHICLE_READ_STATUS,
        data_class=DataClass.VEHICLE_STATE,
        lifecycle=lifecycle,
        sunset=None if lifecycle is Lifecycle.ACTIVE else SUNSET,
    )


def _app(clock: FrozenClock, ran: list[str]) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.state.platform = SimpleNamespace(clock=clock)
    router = APIRouter(route_class=CataloguedRoute)
    for lifecycle in Lifecycle:

        @router.get(f"/{lifecycle.value}")
        @catalogued(_entry(lifecycle))
        async def endpoint(name: str = lifecycle.value) -> dict[str, str]:
            ran.append(name)
            return {"ok": name}

    app.include_router(router)
    return app


async def _get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get(path)


async def test_a_deprecated_route_announces_its_sunset_until_then() -> None:
    ran: list[str] = []
    clock = FrozenClock(datetime(2027, 6, 29, 23, 59, tzinfo=UTC))
    app = _app(clock, ran)
    deprecated = await _get(app, "/deprecated")
    assert deprecated.status_code == 200 and ran == ["deprecated"]
    assert deprecated.headers["sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"
    active = await _get(app, "/active")
    assert active.status_code == 200 and "sunset" not in active.headers


@pytest.mark.parametrize(
    ("path", "at"),
    [
        ("/deprecated", datetime(2027, 6, 30, tzinfo=UTC)),
        ("/deprecated", datetime(2027, 6, 30, tzinfo=UTC) + timedelta(days=400)),
        ("/retired", datetime(2026, 1, 1, tzinfo=UTC)),  # retired before its date: gone too
    ],
)
async def test_a_route_past_its_sunset_or_retired_is_gone_and_runs_nothing(
    path: str, at: datetime
) -> None:
    ran: list[str] = []
    app = _app(FrozenClock(at), ran)
    gone = await _get(app, path)
    assert gone.status_code == 410
    assert gone.headers["content-type"].startswith("application/problem+json")
    assert gone.json()["type"] == "urn:fleetward:problem:route-retired"
    assert ran == []
