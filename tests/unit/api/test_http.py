"""HTTP skeleton: problem+json for every error, strict bodies, request and trace ids."""

from __future__ import annotations

import re

import pytest
from fastapi import APIRouter, FastAPI

from fleetward.api.bodies import StrictBody
from fleetward.api.routing import CataloguedRoute
from fleetward.app import build_app
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, catalogued
from fleetward.core.surfaces import Surface
from fleetward.core.vin import parse_vin
from fleetward.settings import Settings
from support.http import client_for

PROBLEM = "application/problem+json"
SECRET = "hunter2-very-secret"


class Rename(StrictBody):
    label: str


def _entry(purpose: str) -> CatalogEntry:
    return CatalogEntry(
        surface=Surface.MOBILE,
        owner="test",
        purpose=purpose,
        callers=frozenset({CallerType.USER}),
        permission=Permission.VEHICLE_READ_STATUS,
        data_class=DataClass.VEHICLE_STATE,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = build_app(settings)
    router = APIRouter(prefix="/mobile/v1/test", route_class=CataloguedRoute)

    @router.post("/rename")
    @catalogued(_entry("strict body check"))
    async def rename(body: Rename) -> dict[str, str]:
        return {"label": body.label}

    @router.get("/vin/{vin}")
    @catalogued(_entry("domain error check"))
    async def vin(vin: str) -> dict[str, str]:
        return {"vin": parse_vin(vin).value}

    @router.get("/crash")
    @catalogued(_entry("unexpected error check"))
    async def crash() -> None:
        raise RuntimeError(f"database password is {SECRET}")

    app.include_router(router)
    return app


async def test_unknown_body_field_is_refused_without_echo(app: FastAPI) -> None:
    async with client_for(app) as client:
        response = await client.post(
            "/mobile/v1/test/rename", json={"label": "x", "owner_user_id": SECRET}
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == "urn:fleetward:problem:invalid-input"
    assert body["errors"][0]["location"] == ["body", "owner_user_id"]
    assert SECRET not in response.text  # rejected input is never echoed


async def test_accepted_body(app: FastAPI) -> None:
    async with client_for(app) as client:
        response = await client.post("/mobile/v1/test/rename", json={"label": "x"})
    assert (response.status_code, response.json()) == (200, {"label": "x"})


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"null", "JSON null instead of an object"),
        (b"[]", "array instead of an object"),
        (b"{", "truncated JSON"),
        (b'{"label": 5}', "wrong type"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
async def test_hostile_bodies_get_problems(app: FastAPI, body: bytes, why: str) -> None:
    async with client_for(app) as client:
        response = await client.post(
            "/mobile/v1/test/rename", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 422, why
    assert response.headers["content-type"] == PROBLEM


async def test_domain_error_is_a_typed_problem(app: FastAPI) -> None:
    async with client_for(app) as client:
        response = await client.get("/mobile/v1/test/vin/1M8GDM9A1KP042788")
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "urn:fleetward:problem:invalid-vin"
    assert body["reason"] == "check-digit"
    assert body["instance"] == "/mobile/v1/test/vin/1M8GDM9A1KP042788"


async def test_unexpected_error_reveals_nothing(app: FastAPI) -> None:
    async with client_for(app) as client:
        response = await client.get("/mobile/v1/test/crash")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert SECRET not in response.text
    assert "Traceback" not in response.text and "RuntimeError" not in response.text


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "not-found"),
        ("DELETE", "/healthz", 405, "method-not-allowed"),
    ],
)
async def test_framework_errors_are_problems(
    app: FastAPI, method: str, path: str, status: int, code: str
) -> None:
    async with client_for(app) as client:
        response = await client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == f"urn:fleetward:problem:{code}"


def test_every_body_model_forbids_unknown_fields(app: FastAPI) -> None:
    from fastapi.routing import APIRoute, iter_route_contexts

    from fleetward.catalog.inventory import inventory

    checked = 0
    for context in iter_route_contexts(app.router.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.body_field is not None:
            model = route.body_field.field_info.annotation
            assert isinstance(model, type) and issubclass(model, StrictBody), route.path
            assert model.model_config.get("extra") == "forbid"
            checked += 1
    assert checked >= 1
    inventory(app.router.routes)


async def test_request_id_and_traceparent_are_created(app: FastAPI) -> None:
    async with client_for(app) as client:
        response = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", response.headers["traceparent"])


async def test_answers_are_not_cached_or_sniffed_unless_the_route_says_so(app: FastAPI) -> None:
    # Answers carry personal data and vehicle state: no cache keeps one by default, and no
    # browser reads a JSON answer as something else. A route's own Cache-Control stands
    # (the signing keys are cacheable), and a header is never sent twice.
    async with client_for(app) as client:
        answers = {
            path: await client.get(path)
            for path in ("/healthz", "/mobile/v1/test/crash", "/.well-known/jwks.json")
        }
    for path, response in answers.items():
        assert response.headers.get_list("x-content-type-options") == ["nosniff"], path
    assert answers["/healthz"].headers.get_list("cache-control") == ["no-store"]
    assert answers["/mobile/v1/test/crash"].headers.get_list("cache-control") == ["no-store"]
    jwks = answers["/.well-known/jwks.json"].headers.get_list("cache-control")
    assert len(jwks) == 1 and jwks[0].startswith("public"), jwks


async def test_valid_incoming_ids_are_kept(app: FastAPI) -> None:
    # The trace is continued; the caller's request id is returned as theirs, never made the
    # platform's (audit records and investigations key on that: a caller reusing another
    # request's id would merge the two).
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with client_for(app) as client:
        responses = [
            await client.get(
                "/healthz",
                headers={
                    "x-request-id": "req-12345678",
                    "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
                },
            )
            for _ in range(2)
        ]
    for response in responses:
        assert response.headers["x-client-request-id"] == "req-12345678"
        assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])
    assert responses[0].headers["x-request-id"] != responses[1].headers["x-request-id"]
    response = responses[0]
    assert response.headers["traceparent"].startswith(f"00-{trace}-")
    assert not response.headers["traceparent"].endswith("00f067aa0ba902b7-01")  # our own span


@pytest.mark.parametrize(
    ("request_id", "traceparent", "why"),
    [
        ("bad id\r\nx-injected: 1", None, "header/log injection through the request id"),
        ("a" * 200, None, "oversized request id"),
        (None, "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "all-zero trace id"),
        (None, "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "unknown version"),
        (None, "garbage", "malformed traceparent"),
    ],
)
async def test_malformed_incoming_ids_are_replaced(
    app: FastAPI, request_id: str | None, traceparent: str | None, why: str
) -> None:
    headers = {}
    if request_id is not None:
        headers["x-request-id"] = request_id
    if traceparent is not None:
        headers["traceparent"] = traceparent
    async with client_for(app) as client:
        response = await client.get("/healthz", headers=headers)
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"]), why
    assert "00000000000000000000000000000000" not in response.headers["traceparent"], why
    assert "x-injected" not in response.headers, why
    assert "x-client-request-id" not in response.headers, why


async def test_surface_describes_its_audience(app: FastAPI) -> None:
    async with client_for(app) as client:
        response = await client.get("/partner/v1")
    assert response.json()["audience"] == "urn:fleetward:api:partner"
