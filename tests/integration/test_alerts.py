"""Alerts end to end through the real app: detections fire on their scenario driven over the
API, the demo world's usual traffic raises nothing, only platform admins list, read and
acknowledge alerts (admin API and CLI), and the app's lifespan starts and stops the evaluator.

The evaluator is stepped by the test (``run_until_idle``) instead of waiting for its poll, so
nothing depends on timing. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import authorize
from fleetward.api.objects import platform_of
from fleetward.api.routing import surface_router
from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.decision import ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, Lifecycle, catalogued
from fleetward.core.surfaces import Surface
from fleetward.demo.clients import seed_demo_clients
from fleetward.detection import cursor
from fleetward.detection.config import DetectionConfig
from fleetward.detection.runtime import DetectionRuntime
from fleetward.identity.acr import Acr
from fleetward.platform import Platform
from fleetward.settings import Settings
from support.api import Api
from unit.authz.kit import ALL_SCOPES

ADMIN = Surface.ADMIN
WALKS = "?rule=vin-enumeration"
CROSSINGS = "?rule=cross-tenant-access"
MOBILE = Surface.MOBILE
FLEET = Surface.FLEET


def app_token(api: Api, who: str, family: str | None = None) -> str:
    """A token of the demo mobile app (a registered client: commands check the client)."""
    now = api.platform.clock.now()
    user = api.world.users[who]
    return api.platform.identity.tokens.issue(
        subject=user.id,
        client_id="fleetward-mobile",
        tenant=user.home_tenant_id,
        surface=MOBILE,
        scopes=sorted(ALL_SCOPES),
        auth_time=now,
        acr=Acr.MFA.value,
        amr=["pwd", "otp"],
        token_family=family,
        subject_type="user",
    ).token


async def detection(api: Api) -> DetectionRuntime:
    """A runtime on the test's platform, its cursor placed after the seeded world and the
    demo clients (setting the world up is not traffic)."""
    async with api.platform.services() as (uow, ctx):
        await seed_demo_clients(ctx, api.platform.settings.data_dir)
        await uow.commit()
    runtime = DetectionRuntime(api.platform, DetectionConfig())
    await runtime.evaluator.run_until_idle()
    return runtime


async def listed(api: Api, query: str = "") -> list[dict[str, Any]]:
    response = await api.get("judy", ADMIN, f"/alerts{query}")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def usual_traffic(api: Api) -> None:
    """What the demo world does every day: owners, drivers and fleets read their own cars,
    an owner locks hers, a fleet admin looks at her fleet."""
    for who, surface, label in (
        ("alice", MOBILE, "ALICE-1"),
        ("dave", MOBILE, "DAVE-1"),
        ("erin", FLEET, "ACME-N1"),
        ("frank", FLEET, "ACME-N1"),
    ):
        assert (await api.get(who, surface, "/vehicles")).status_code == 200
        path = f"/vehicles/{api.vehicle_id(label)}"
        assert (await api.get(who, surface, path)).status_code == 200
        assert (await api.get(who, surface, f"{path}/status")).status_code == 200
    alice_1 = api.vehicle_id("ALICE-1")
    for command in ("lock", "horn_lights"):
        response = await api.client.post(
            f"/mobile/v1/vehicles/{alice_1}/commands/{command}",
            json={"parameters": {}},
            headers={
                "authorization": f"Bearer {app_token(api, 'alice')}",
                "idempotency-key": command,
            },
        )
        assert response.status_code == 202, response.text
    # A customer opening someone else's car once (a typo, a stale link) is not a pattern.
    assert (
        await api.get("alice", MOBILE, f"/vehicles/{api.vehicle_id('DAVE-1')}")
    ).status_code == 404


async def test_usual_demo_traffic_raises_no_alert(api: Api) -> None:
    runtime = await detection(api)
    await usual_traffic(api)
    assert await runtime.evaluator.run_until_idle() > 0
    assert await listed(api) == []


async def test_vin_walk_raises_one_alert_with_its_evidence(api: Api) -> None:
    runtime = await detection(api)
    others = ["ALICE-1", "DAVE-1", "ACME-N1", "GLOBEX-1", "unknown"]
    for label in others:
        path = f"/vehicles/{api.vehicle_id(label)}"
        assert (await api.get("mallory", MOBILE, path)).status_code == 404
    await runtime.evaluator.run_until_idle()
    (alert,) = await listed(api, "?rule=vin-enumeration")
    assert alert["subject_id"] == api.world.users["mallory"].id
    assert alert["severity"] == "high" and alert["status"] == "open" and alert["count"] == 1
    detail = (await api.get("judy", ADMIN, f"/alerts/{alert['id']}")).json()
    evidence = detail["evidence_events"]
    assert [e["id"] for e in evidence] == alert["evidence"] and len(evidence) == 5
    assert {e["object_id"] for e in evidence} == {api.vehicle_id(label) for label in others}
    assert all(
        e["decision"] == "denied" and e["endpoint"] == "mobile:vehicles:read" for e in evidence
    )


async def test_cross_tenant_token_raises_an_alert(api: Api) -> None:
    runtime = await detection(api)
    # erin's token issued for another fleet's tenant, used on her own fleet's van.
    path = f"/vehicles/{api.vehicle_id('ACME-N1')}"
    assert (await api.get("erin", FLEET, path, tenant="globex")).status_code in (403, 404)
    await runtime.evaluator.run_until_idle()
    (alert,) = await listed(api, "?rule=cross-tenant-access")
    assert alert["subject_id"] == api.world.users["erin"].id


async def test_acknowledge_is_audited_once(api: Api) -> None:
    runtime = await detection(api)
    for label in ["ALICE-1", "DAVE-1", "ACME-N1", "GLOBEX-1", "unknown"]:
        await api.get("mallory", MOBILE, f"/vehicles/{api.vehicle_id(label)}")
    await runtime.evaluator.run_until_idle()
    (alert,) = await listed(api, WALKS)
    for _ in range(2):
        response = await api.post("judy", ADMIN, f"/alerts/{alert['id']}/acknowledge")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "acknowledged"
    assert response.json()["acknowledged_by"] == f"user:{api.world.users['judy'].id}"
    assert await listed(api, f"{WALKS}&status=open") == []
    assert [a["id"] for a in await listed(api, "?status=acknowledged")] == [alert["id"]]
    async with api.platform.unit_of_work() as uow:
        acks = list(
            await uow.session.scalars(
                select(AuditRecord).where(AuditRecord.name == EventName.ALERT_ACKNOWLEDGED.value)
            )
        )
    assert len(acks) == 1 and acks[0].object_id == alert["id"]


async def test_list_filters_and_pages(api: Api) -> None:
    runtime = await detection(api)
    for who in ("mallory", "bob", "carol"):
        for label in ["ALICE-1", "DAVE-1", "ACME-N1", "GLOBEX-1", "MALLORY-1", "unknown"]:
            await api.get(who, MOBILE, f"/vehicles/{api.vehicle_id(label)}")
    await runtime.evaluator.run_until_idle()
    everything = await listed(api)
    # Each walk crossed tenants too: one alert per rule and walker.
    assert len(everything) == 6
    assert len(await listed(api, WALKS)) == len(await listed(api, CROSSINGS)) == 3
    first = (await api.get("judy", ADMIN, "/alerts?limit=4")).json()
    assert len(first["items"]) == 4 and first["next_cursor"]
    second = (await api.get("judy", ADMIN, f"/alerts?limit=4&cursor={first['next_cursor']}")).json()
    assert second["next_cursor"] is None
    assert [a["id"] for a in first["items"] + second["items"]] == [a["id"] for a in everything]
    assert await listed(api, "?rule=bulk-command") == []
    assert await listed(api, "?since=2099-01-01T00:00:00Z") == []
    assert (await api.get("judy", ADMIN, "/alerts?rule=NOT A RULE")).status_code == 422
    assert (await api.get("judy", ADMIN, "/alerts?status=closed")).status_code == 422


# Who may see alerts: platform admins only. Alerts name actors, vehicles, token families
# and addresses of every tenant.
REFUSED = [
    ("heidi", ADMIN, 403),  # a support agent (operator tenant) on the admin surface
    ("ken", ADMIN, 403),  # an engineer: OTA yes, alerts no
    ("erin", ADMIN, 403),  # a fleet admin holding an admin-surface token
    ("mallory", ADMIN, 403),  # the subject of the alert herself
    ("alice", MOBILE, 404),  # a mobile token: the route does not exist on that surface
]


@pytest.mark.parametrize(("who", "surface", "status"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_only_platform_admins(api: Api, who: str, surface: Surface, status: int) -> None:
    runtime = await detection(api)
    for label in ["ALICE-1", "DAVE-1", "ACME-N1", "GLOBEX-1", "unknown"]:
        await api.get("mallory", MOBILE, f"/vehicles/{api.vehicle_id(label)}")
    await runtime.evaluator.run_until_idle()
    (alert,) = await listed(api, WALKS)
    for method, path in (
        ("GET", "/alerts"),
        ("GET", f"/alerts/{alert['id']}"),
        ("POST", f"/alerts/{alert['id']}/acknowledge"),
    ):
        response = await api.client.request(
            method, f"/{surface.value}/v1{path}", headers=api.headers(who, surface)
        )
        assert response.status_code == status, (method, path, response.text)
        assert alert["summary"] not in response.text and "evidence" not in response.text
    (still,) = await listed(api, WALKS)
    assert still["status"] == "open"


async def test_without_the_scope_even_an_admin_is_refused(api: Api) -> None:
    response = await api.get("judy", ADMIN, "/alerts", scopes=["admin:manage_tenants"])
    assert response.status_code == 403


async def test_since_without_an_offset_is_a_problem_not_a_500(api: Api) -> None:
    response = await api.get("judy", ADMIN, "/alerts?since=2026-01-01T00:00:00")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["location"] == ["query", "since"]
    # Aware, but before the first UTC instant: refused too, not handed to the store.
    response = await api.get("judy", ADMIN, "/alerts?since=0001-01-01T00:00:00%2B05:00")
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["location"] == ["query", "since"]


async def test_unknown_alert_is_404_for_an_admin(api: Api) -> None:
    assert (await api.get("judy", ADMIN, "/alerts/alr_" + "a" * 26)).status_code == 404
    assert (
        await api.post("judy", ADMIN, "/alerts/alr_" + "a" * 26 + "/acknowledge")
    ).status_code == 404


async def test_lifespan_starts_and_stops_detection(platform: Platform, settings: Settings) -> None:
    app = build_app(settings, platform=platform)
    runtime: DetectionRuntime = app.state.detection
    async with app.router.lifespan_context(app):
        # The first round places the cursor; wait for it (bounded), not for a time.
        for _ in range(200):
            async with platform.unit_of_work() as uow:
                if await cursor.read(uow.session, lock=False) is not None:
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the detection task never placed its cursor")
        assert runtime.running
    assert not runtime.running


async def test_token_family_from_a_new_network(api: Api, settings: Settings) -> None:
    """The same refresh family first from alice's home network, then from another range:
    the replayed-token pattern. Addresses are the ASGI peer, as the middleware records it."""
    runtime = await detection(api)
    app = build_app(settings, platform=api.platform)
    token = app_token(api, "alice", family="fam_alice_phone")
    path = f"/mobile/v1/vehicles/{api.vehicle_id('ALICE-1')}"
    for peer in ("198.51.100.7", "198.51.100.200", "203.0.113.66"):
        transport = httpx.ASGITransport(app=app, client=(peer, 40_000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get(path, headers={"authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
        await runtime.evaluator.run_until_idle()
        found = await listed(api, "?rule=token-new-infrastructure")
        # Quiet within alice's /24; one alert once the family shows up elsewhere.
        assert len(found) == (1 if peer.startswith("203.") else 0), peer
    (alert,) = found
    assert alert["subject_type"] == "token_family" and alert["subject_id"] == "fam_alice_phone"
    assert "203.0.113.0/24" in alert["summary"]
    detail = (await api.get("judy", ADMIN, f"/alerts/{alert['id']}")).json()
    assert [e["source_ip"] for e in detail["evidence_events"]] == ["198.51.100.7", "203.0.113.66"]


def deprecated_router() -> APIRouter:
    """A v0 read kept for an old app: catalogued as deprecated, authorized like any route."""
    router = surface_router(MOBILE)
    user = Depends(authenticate(MOBILE))

    @router.get("/legacy/vehicles/{vehicle_id}", name="mobile:vehicles:read_v0")
    @catalogued(
        CatalogEntry(
            surface=MOBILE,
            owner="vehicles-team",
            purpose="a vehicle, as version 0 of the app reads it",
            callers=frozenset({CallerType.USER}),
            permission=Permission.VEHICLE_READ_STATUS,
            data_class=DataClass.VEHICLE_STATE,
            objects=("vehicle",),
            version="v0",
            lifecycle=Lifecycle.DEPRECATED,
            sunset=date(2027, 3, 31),
        )
    )
    async def read_v0(vehicle_id: str, request: Request, caller: Caller = user) -> dict[str, str]:
        platform = platform_of(request)
        async with platform.services() as (uow, ctx):
            resource = ResourceRef.vehicle(vehicle_id)
            await authorize(request, caller, Permission.VEHICLE_READ_STATUS, resource, ctx=ctx)
            await uow.commit()
        return {"id": vehicle_id}

    return router


async def test_deprecated_route_use(api: Api, settings: Settings) -> None:
    runtime = await detection(api)
    app = build_app(settings, platform=api.platform)
    app.include_router(deprecated_router())
    runtime.watch_routes(app.router.routes)
    token = app_token(api, "alice")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as http:
        headers = {"authorization": f"Bearer {token}"}
        alice_1 = api.vehicle_id("ALICE-1")
        # The current version: quiet.
        assert (
            await http.get(f"/mobile/v1/vehicles/{alice_1}", headers=headers)
        ).status_code == 200
        await runtime.evaluator.run_until_idle()
        assert await listed(api, "?rule=deprecated-api-use") == []
        # The deprecated one, twice: one alert, counted twice.
        for _ in range(2):
            response = await http.get(f"/mobile/v1/legacy/vehicles/{alice_1}", headers=headers)
            assert response.status_code == 200, response.text
    await runtime.evaluator.run_until_idle()
    (alert,) = await listed(api, "?rule=deprecated-api-use")
    assert alert["subject_id"] == "fleetward-mobile" and alert["count"] == 2
    assert "mobile:vehicles:read_v0" in alert["summary"]
