"""The route index picks, for every request, the router FastAPI's own scan picks, and leaves
every other case (404, 405, routes added later, a root path) to that scan."""

from __future__ import annotations

import re

from fastapi import APIRouter, FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Match

from fleetward.api.route_index import RouteIndex, install_route_index
from fleetward.app import build_app
from fleetward.catalog.inventory import inventory
from fleetward.settings import Settings
from support.http import client_for

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]+)?\}")


def _scope(path: str, method: str = "GET", kind: str = "http") -> dict[str, object]:
    return {
        "type": kind,
        "path": path,
        "method": method,
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }


def _scan(routes: list[BaseRoute], scope: dict[str, object]) -> BaseRoute | None:
    """FastAPI's order: the first route that matches fully."""
    for route in routes:
        if route.matches(dict(scope))[0] is Match.FULL:
            return route
    return None


def _indexed(index: RouteIndex, scope: dict[str, object]) -> BaseRoute | None:
    match, child = index.matches(dict(scope))
    if match is not Match.FULL:
        return None
    chosen = child["fleetward.route_index"]
    assert isinstance(chosen, BaseRoute)
    return chosen


def test_every_route_of_the_app_is_found_where_fastapi_finds_it(settings: Settings) -> None:
    app = build_app(settings)
    index, routes = app.router.routes[0], app.router.routes[1:]
    assert isinstance(index, RouteIndex)
    checked = 0
    for route in routes:
        for context in iter_route_contexts([route]):
            path = _PARAM.sub("x1", context.path)
            kinds = [("websocket", "GET")] if not context.methods else []
            kinds += [("http", m) for m in sorted(context.methods or ())]
            for kind, method in kinds:
                scope = _scope(path, method, kind)
                expected = _scan(routes, scope)
                assert expected is not None, (kind, method, path)
                assert _indexed(index, scope) is expected, (kind, method, path)
                checked += 1
    assert checked > 150  # every operation of the app, the device WebSocket included


def test_what_no_route_matches_fully_is_left_to_fastapi(settings: Settings) -> None:
    app = build_app(settings)
    index = app.router.routes[0]
    assert isinstance(index, RouteIndex)
    for scope in (
        _scope("/mobile/v1/nothing-here"),  # 404
        _scope("/nope"),
        _scope("/mobile/v1/vehicles/x1/status", "DELETE"),  # a path with another method: 405
        _scope("/mobile/v1/vehicles/x1/status/"),  # trailing slash: FastAPI's redirect
        _scope(""),
        {**_scope("/mobile/v1/vehicles/x1/status"), "root_path": "/prefix"},
        {"type": "lifespan"},
    ):
        assert index.matches(dict(scope)) == (Match.NONE, {}), scope


def test_the_first_of_two_routers_with_one_path_wins_as_in_fastapi() -> None:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    first, second = APIRouter(), APIRouter()

    @first.get("/a/{x}/b")
    async def one(x: str) -> str:
        return "first"

    @second.get("/a/{x}/b")
    async def two(x: str) -> str:
        return "second"

    @second.post("/a/{x}/b")
    async def three(x: str) -> str:
        return "second-post"

    app.include_router(first)
    app.include_router(second)
    index = install_route_index(app.router.routes)
    routes = app.router.routes[1:]
    assert app.router.routes[0] is index
    assert _indexed(index, _scope("/a/1/b")) is routes[0] is _scan(routes, _scope("/a/1/b"))
    # first has the path but not the method: the next router holding the path answers
    post = _scope("/a/1/b", "POST")
    assert _indexed(index, post) is routes[1] is _scan(routes, post)
    assert _indexed(index, _scope("/a/1/c")) is None


async def test_requests_are_served_through_the_index_and_without_it() -> None:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    router = APIRouter(prefix="/v1")

    @router.get("/things/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        return {"thing": thing}

    app.include_router(router)
    install_route_index(app.router.routes)
    later = APIRouter()

    @later.get("/v1/later")
    async def added() -> dict[str, str]:
        return {"later": "yes"}

    app.include_router(later)  # after the index: FastAPI's scan finds it
    async with client_for(app) as client:
        assert (await client.get("/v1/things/7")).json() == {"thing": "7"}
        assert (await client.get("/v1/later")).json() == {"later": "yes"}
        assert (await client.get("/v1/other")).status_code == 404
        assert (await client.post("/v1/things/7")).status_code == 405
    again = install_route_index(app.router.routes)  # re-indexing replaces the old index
    assert [r for r in app.router.routes if isinstance(r, RouteIndex)] == [again]
    assert _indexed(again, _scope("/v1/later")) is app.router.routes[-1]


def test_the_inventory_does_not_count_the_index(settings: Settings) -> None:
    app = build_app(settings)
    items = inventory(app.router.routes)
    assert len(items) == len(inventory(app.router.routes[1:]))


def test_installing_again_over_the_same_routes_keeps_the_index(settings: Settings) -> None:
    app = build_app(settings)
    index = app.router.routes[0]
    assert install_route_index(app.router.routes) is index
    assert [r for r in app.router.routes if isinstance(r, RouteIndex)] == [index]
