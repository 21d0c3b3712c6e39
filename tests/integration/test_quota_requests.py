"""Every API request charged, through the real app over the demo world with real tokens.

``api.auth.authenticate`` calls :func:`charge_request` once the token is verified, and the
composition root installs the RateLimit middleware; here the app's quota runtime is replaced
by one whose sleeps are recorded instead of slept. Covered: the cost rule per kind of
route, the 429 with its headers and its audit event, degrade per route with the quota store
down, each sensitive flow at its route, enumeration slowed then stopped at a low request
rate (distinct vehicles, consecutive ids, consecutive VIN serials) and a raised quota's use
audited.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select

import support.api as support_api
from fleetward.abuse.guard import GuardedQuotas
from fleetward.abuse.memory import InMemoryQuotaStore
from fleetward.abuse.policy import DEFAULT_FLOWS, Flow, FlowLimit
from fleetward.abuse.quotas import Limit
from fleetward.abuse.raised import InMemoryRaisedQuotas, RaisedQuota
from fleetward.abuse.redis_store import RedisQuotaStore
from fleetward.abuse.runtime import QuotaRuntime
from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.core.vin import make_vin
from fleetward.demo.clients import seed_demo_clients
from fleetward.identity.acr import Acr
from fleetward.platform import Platform
from fleetward.settings import Settings
from support.api import Api
from support.factories import trip
from unit.authz.kit import ALL_SCOPES

M, F, D = Surface.MOBILE, Surface.FLEET, Surface.DEALER
HOUR = timedelta(hours=1)


@dataclasses.dataclass
class Wired:
    """What the wrapped app exposes to the tests."""

    runtimes: list[QuotaRuntime] = dataclasses.field(default_factory=list)
    sleeps: list[float] = dataclasses.field(default_factory=list)

    @property
    def runtime(self) -> QuotaRuntime:
        return self.runtimes[0]


@pytest.fixture(autouse=True)
def wired(monkeypatch: pytest.MonkeyPatch) -> Wired:
    state = Wired()

    def wired_app(settings: Settings, *, platform: Platform | None = None) -> FastAPI:
        app = build_app(settings, platform=platform)
        runtime = QuotaRuntime.build(settings)

        async def record_sleep(seconds: float) -> None:
            state.sleeps.append(seconds)

        runtime.sleep = record_sleep
        app.state.quota_runtime = runtime
        state.runtimes.append(runtime)
        return app

    monkeypatch.setattr(support_api, "build_app", wired_app)
    return state


def _limit_fields(response: httpx.Response) -> tuple[str, int]:
    """(limit name, units left) from the RateLimit field."""
    value = response.headers["RateLimit"]
    name, _, params = value.partition(";")
    fields = dict(part.split("=", 1) for part in params.split(";"))
    return name.strip('"'), int(fields["r"])


async def _events(platform: Platform, name: EventName) -> list[AuditRecord]:
    async with platform.services() as (_uow, ctx):
        return list(await ctx.session.scalars(select(AuditRecord).where(AuditRecord.name == name)))


def _fake_vehicle(n: int) -> str:
    return f"veh_{n:026d}"


# ------------------------------------------------------------------------- cost rule


async def test_each_route_pays_the_objects_it_targets(api: Api) -> None:
    alice = api.vehicle_id("ALICE-1")
    capacity = 600  # user-objects, the tightest limit of a person (settings default)
    # (path, objects paid, why)
    cases = [
        (f"/vehicles/{alice}/status", 1, "an object route: one object"),
        ("/vehicles?limit=30", 30, "a list: the page size asked for"),
        ("/vehicles?limit=5000", 100, "a list: the page capped at max_page_size"),
        ("/vehicles", 50, "a list without limit: the route's default page"),
        ("/vehicles?limit=abc", 50, "a malformed limit (refused later): the default page"),
        # Spellings the route reads as 100 (lax integer parsing) pay the page they get.
        ("/vehicles?limit=100.0", 100, "a limit written as a decimal: the page it returns"),
        ("/vehicles?limit=%2B100", 100, "a signed limit: the page it returns"),
        ("/vehicles?limit=%20100", 100, "a limit with a space: the page it returns"),
        (f"/vehicles/{alice}/trips?limit=7", 7, "a nested list: its own page"),
    ]
    spent = 0
    for path, cost, why in cases:
        response = await api.get("alice", M, path)
        spent += cost
        assert response.status_code == (422 if "abc" in path else 200), (why, response.text)
        assert _limit_fields(response) == ("user-objects", capacity - spent), why
        assert response.headers["RateLimit-Policy"] == '"user-objects";q=600;w=60', why


async def test_a_body_naming_many_vehicles_pays_each(api: Api) -> None:
    # A bulk command naming three vehicles costs three before anything is authorized (a
    # stranger's guesses cost as much as real ones): refused or not, it was charged.
    ids = [_fake_vehicle(n) for n in (101, 207, 333)]
    body = {"command": "lock", "vehicle_ids": ids, "parameters": {}}
    response = await api.client.post(
        "/fleet/v1/bulk-commands",
        json=body,
        headers={**api.headers("erin", F), "Idempotency-Key": "bulk-cost-1"},
    )
    assert response.status_code in (403, 404), response.text
    # The response reports the tightest limit it met (the bulk flow's); the next request
    # shows the user's bucket: three for the bulk, one for itself.
    assert _limit_fields(response) == ("flow-bulk-fleet-command", 19)
    after = await api.get("erin", F, f"/vehicles/{api.vehicle_id('ACME-N1')}/status")
    assert _limit_fields(after) == ("user-objects", 600 - 3 - 1)


async def _fleet_console(api: Api, who: str) -> dict[str, str]:
    """Authorization for ``who`` through a registered client (bulk commands check it)."""
    async with api.platform.services() as (uow, ctx):
        await seed_demo_clients(ctx, api.platform.settings.data_dir)
        await uow.commit()
    user = api.world.users[who]
    token = api.platform.identity.tokens.issue(
        subject=user.id,
        client_id="fleet-console",
        tenant=user.home_tenant_id,
        surface=F,
        scopes=sorted(ALL_SCOPES),
        auth_time=api.platform.clock.now(),
        acr=Acr.MFA.value,
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="user",
    ).token
    return {"authorization": f"Bearer {token}"}


async def _bulk_lock_of_three(api: Api, auth: dict[str, str]) -> tuple[str, list[str]]:
    cars = [api.vehicle_id(name) for name in ("ACME-N1", "ACME-N2", "ACME-N3")]
    body = {"command": "lock", "vehicle_ids": cars, "parameters": {}}
    created = await api.client.post(
        "/fleet/v1/bulk-commands", json=body, headers={**auth, "Idempotency-Key": "bulk-read"}
    )
    assert created.status_code == 202, created.text
    return str(created.json()["id"]), cars


async def test_reading_a_bulk_command_pays_each_of_its_vehicles(api: Api) -> None:
    # A bulk's read decides, audits and shows the job of every vehicle it names (up to
    # max_bulk): it cost 1 however many, so polling one bulk of 500 cars read 500 vehicles'
    # states (and wrote 500 decision records) for one object of the user's quota.
    auth = await _fleet_console(api, "erin")
    bulk_id, cars = await _bulk_lock_of_three(api, auth)
    read = await api.client.get(f"/fleet/v1/bulk-commands/{bulk_id}", headers=auth)
    assert read.status_code == 200, read.text
    assert len(read.json()["jobs"]) == 3
    after = await api.client.get(f"/fleet/v1/vehicles/{cars[0]}/status", headers=auth)
    assert _limit_fields(after) == ("user-objects", 600 - 3 - 3 - 1)


@pytest.mark.parametrize("settings", [{"quota_user_per_minute": 5}], indirect=True)
async def test_a_bulk_read_over_quota_is_refused_and_audited(api: Api) -> None:
    auth = await _fleet_console(api, "erin")
    bulk_id, _cars = await _bulk_lock_of_three(api, auth)  # 3 of 5 spent
    refused = await api.client.get(f"/fleet/v1/bulk-commands/{bulk_id}", headers=auth)
    assert refused.status_code == 429, refused.text
    assert refused.json()["reason"] == "user-objects"
    (event,) = await _events(api.platform, EventName.QUOTA_EXCEEDED)
    assert event.details["route"] == "fleet:bulk-commands:read"


@pytest.mark.parametrize("content_type", ["application/JSON", "Application/Json; charset=utf-8"])
async def test_a_body_naming_many_vehicles_pays_each_whatever_the_media_type_case(
    api: Api, content_type: str
) -> None:
    # Media types are case-insensitive (RFC 9110 8.3.1) and the framework parses such a body
    # as JSON: a guard that looked for a lower-case "json" charged a bulk request 1 however
    # many vehicles it named, so a stranger's 10,000 guesses cost one object.
    ids = [_fake_vehicle(n) for n in (101, 207, 333)]
    body = json.dumps({"command": "lock", "vehicle_ids": ids, "parameters": {}})
    response = await api.client.post(
        "/fleet/v1/bulk-commands",
        content=body,
        headers={
            **api.headers("erin", F),
            "Idempotency-Key": "bulk-cost-case",
            "Content-Type": content_type,
        },
    )
    assert response.status_code in (403, 404), response.text
    after = await api.get("erin", F, f"/vehicles/{api.vehicle_id('ACME-N1')}/status")
    assert _limit_fields(after) == ("user-objects", 600 - 3 - 1)


@pytest.mark.parametrize("content_type", ["text/plain", None])
async def test_a_deeply_nested_body_is_refused_not_a_500(
    api: Api, content_type: str | None
) -> None:
    # The guard parses a body the framework left unparsed (no JSON media type): nesting deep
    # enough to exhaust the parser's recursion was a RecursionError, answered 500 before the
    # route could refuse the body. It pays one object and the route refuses it.
    depth = 100_000
    body = '{"command": "lock", "vehicle_ids": ' + "[" * depth + "]" * depth + "}"
    headers = {**api.headers("erin", F), "Idempotency-Key": "bulk-deep"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await api.client.post("/fleet/v1/bulk-commands", content=body, headers=headers)
    assert response.status_code == 422, response.text
    after = await api.get("erin", F, f"/vehicles/{api.vehicle_id('ACME-N1')}/status")
    assert _limit_fields(after) == ("user-objects", 600 - 1 - 1)


# ------------------------------------------------------------------------- refusals


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """The suite's settings, with a test's overrides."""
    overrides: dict[str, Any] = dict(getattr(request, "param", {}))
    return Settings(
        data_dir=tmp_path / "var",
        password_hash_memory_kib=19_456,
        password_hash_time_cost=2,
        **overrides,
    )


@pytest.mark.parametrize("settings", [{"quota_user_per_minute": 3}], indirect=True)
async def test_over_quota_is_a_429_with_headers_and_one_audit_event(api: Api) -> None:
    path = f"/vehicles/{api.vehicle_id('ALICE-1')}/status"
    for left in (2, 1, 0):
        response = await api.get("alice", M, path)
        assert response.status_code == 200
        assert _limit_fields(response) == ("user-objects", left)
    refused = await api.get("alice", M, path)
    again = await api.get("alice", M, path)  # a second refusal in the same period: folded
    assert refused.status_code == again.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "user-objects"
    assert refused.json()["violated-policies"] == ["user-objects"]
    assert refused.headers["Retry-After"] == "20"  # one unit back every 20 s
    assert refused.headers["RateLimit"] == '"user-objects";r=0;t=20'
    assert refused.headers["RateLimit-Policy"] == '"user-objects";q=3;w=60'
    # Another person is not affected by alice's bucket.
    assert (await api.get("dave", M, f"/vehicles/{api.vehicle_id('DAVE-1')}/status")).is_success
    (event,) = await _events(api.platform, EventName.QUOTA_EXCEEDED)
    assert event.actor_id == api.world.users["alice"].id
    assert (event.object_type, event.object_id, event.reason) == (
        "quota",
        "user-objects",
        "user-objects",
    )
    assert event.decision == "denied"
    assert event.details["route"] == "mobile:vehicles:status"
    assert event.details["folded"] == 0


# ------------------------------------------------------------------------- degrade per route


async def test_with_the_store_down_each_route_does_what_its_entry_says(
    api: Api, wired: Wired, free_port: int
) -> None:
    # The shared quota store points at a port nothing listens on: down from the start.
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port}/0", socket_connect_timeout=0.5)
    wired.runtime.quotas = GuardedQuotas(RedisQuotaStore(redis), InMemoryQuotaStore())
    alice = api.vehicle_id("ALICE-1")
    # (path, status, why)
    cases = [
        (f"/vehicles/{alice}/status", 200, "a plain read chose local_limit: served"),
        ("/vehicles", 200, "the vehicle list chose local_limit: served"),
        (f"/vehicles/{alice}/trips", 503, "a read left at the default fails closed"),
        (f"/vehicles/{alice}/location", 503, "a sensitive flow never degrades"),
    ]
    for path, status, why in cases:
        response = await api.get("alice", M, path)
        assert response.status_code == status, (why, response.text)
        if status == 503:
            assert response.json()["type"].endswith(":quota-store-down"), why
            assert "Retry-After" in response.headers, why
        else:
            assert _limit_fields(response)[0] == "user-objects", why
    command = await api.client.post(
        f"/mobile/v1/vehicles/{alice}/commands/lock",
        json={"parameters": {}},
        headers={**api.headers("alice", M), "Idempotency-Key": "lock-store-down"},
    )
    assert command.status_code == 503, "a write fails closed"
    (event,) = await _events(api.platform, EventName.QUOTA_STORE_DOWN)  # folded per minute
    assert event.details["degrade"] == "local_limit"


# ------------------------------------------------------------------------- sensitive flows


def _tight(runtime: QuotaRuntime, flow: Flow, capacity: int = 1) -> None:
    flows = dict(runtime.policy.flows)
    old = DEFAULT_FLOWS[flow]
    flows[flow] = FlowLimit(Limit(old.limit.name, capacity, old.limit.window), old.per_object)
    runtime.policy = dataclasses.replace(runtime.policy, flows=flows)


def _vin_body(api: Api, serial: int) -> dict[str, Any]:
    vin = make_vin("1FW", "AB123", f"KP{serial:06d}").value
    return {"code": "not-a-real-code", "vin": vin}


FLOW_CASES = [
    # (flow, who, surface, method, path, body, why)
    (Flow.REMOTE_UNLOCK, "alice", M, "post", "/vehicles/{ALICE-1}/commands/unlock", {}, "unlock"),
    (
        Flow.DIAGNOSTIC_REQUEST,
        "alice",
        M,
        "post",
        "/vehicles/{ALICE-1}/commands/diagnostics_run",
        {},
        "diagnostic request",
    ),
    (Flow.BULK_LOCATION, "alice", M, "get", "/vehicles/{ALICE-1}/location", None, "location"),
    (
        Flow.DRIVER_INVITATION,
        "alice",
        M,
        "post",
        "/vehicles/{ALICE-1}/invitations",
        {"permissions": ["vehicle:read_status"], "valid_until": "2026-11-28T09:00:00Z"},
        "driver invitation",
    ),
    (Flow.OWNERSHIP_TRANSFER, "alice", M, "post", "/vehicles/{ALICE-1}/transfers", None, "sell"),
    (
        Flow.BULK_FLEET_COMMAND,
        "erin",
        F,
        "post",
        "/bulk-commands",
        {"command": "lock", "vehicle_ids": ["{ACME-N1}"], "parameters": {}},
        "bulk fleet command",
    ),
]


def _fill(api: Api, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return api.vehicle_id(value[1:-1])
    if isinstance(value, str):
        for label in ("ALICE-1", "ACME-N1"):
            value = value.replace("{" + label + "}", api.vehicle_id(label))
        return value
    if isinstance(value, list):
        return [_fill(api, v) for v in value]
    if isinstance(value, dict):
        return {k: _fill(api, v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("flow", "who", "surface", "method", "path", "body", "why"),
    FLOW_CASES,
    ids=[case[-1] for case in FLOW_CASES],
)
async def test_each_sensitive_flow_has_its_own_limit_at_its_route(
    api: Api,
    wired: Wired,
    flow: Flow,
    who: str,
    surface: Surface,
    method: str,
    path: str,
    body: Any,
    why: str,
) -> None:
    _tight(wired.runtime, flow, capacity=1)
    url = f"/{surface.value}/v1{_fill(api, path)}"
    statuses = []
    for attempt in range(2):
        payload = _fill(api, body)
        key = f"{flow.value}-{attempt}"
        headers = {**api.headers(who, surface), "Idempotency-Key": key}
        response = await api.client.request(method.upper(), url, json=payload, headers=headers)
        statuses.append(response.status_code)
    # The first attempt is charged whatever its outcome; the second meets the flow's limit.
    assert statuses[0] != 429, why
    assert statuses[1] == 429, (why, response.text)
    assert response.json()["reason"] == f"flow-{flow.value}", why
    (event,) = await _events(api.platform, EventName.QUOTA_EXCEEDED)
    assert event.reason == f"flow-{flow.value}"


@pytest.mark.parametrize(
    ("who", "surface", "label"), [("alice", M, "ALICE-1"), ("erin", F, "ACME-N1")]
)
async def test_a_vehicle_read_showing_its_location_pays_the_location_flow(
    api: Api, wired: Wired, who: str, surface: Surface, label: str
) -> None:
    # GET /vehicles/{id} returns the current location to a caller who may read it: the same
    # data as GET .../location. Uncharged, it walked around the bulk-location limit.
    _tight(wired.runtime, Flow.BULK_LOCATION, capacity=1)
    vehicle = api.vehicle_id(label)
    detail = await api.get(who, surface, f"/vehicles/{vehicle}")
    assert detail.status_code == 200, detail.text
    assert "location" in detail.json()
    for path in (f"/vehicles/{vehicle}", f"/vehicles/{vehicle}/location"):
        refused = await api.get(who, surface, path)
        assert refused.status_code == 429, (path, refused.text)
        assert refused.json()["reason"] == "flow-bulk-location"


async def test_trips_with_coordinates_pay_the_location_flow(api: Api, wired: Wired) -> None:
    # A trip's end is where the car is parked: trips shown with their coordinates pay the
    # bulk-location flow (once a request) like the current location, or listing the trips of
    # every car walked around that limit.
    _tight(wired.runtime, Flow.BULK_LOCATION, capacity=1)
    vehicle = api.vehicle_id("ALICE-1")
    async with api.platform.services() as (uow, ctx):
        at = ctx.clock.now()
        ctx.session.add(trip(vehicle, at))
        await uow.commit()
    trips = await api.get("alice", M, f"/vehicles/{vehicle}/trips")
    assert trips.status_code == 200, trips.text
    first = trips.json()["items"][0]
    assert first["end_latitude"] is not None
    for path in (f"/vehicles/{vehicle}/trips", f"/vehicles/{vehicle}/trips/{first['id']}"):
        refused = await api.get("alice", M, path)
        assert refused.status_code == 429, (path, refused.text)
        assert refused.json()["reason"] == "flow-bulk-location"


async def test_a_bulk_unlock_pays_the_unlock_flow_for_each_vehicle(api: Api, wired: Wired) -> None:
    # A bulk unlock of N cars is N unlocks: it pays remote-unlock per vehicle like the
    # single-vehicle route, or 20 bulk requests of 25 cars an hour walked around a limit of
    # 30 unlocks an hour.
    _tight(wired.runtime, Flow.REMOTE_UNLOCK, capacity=2)
    cars = [api.vehicle_id("ACME-N1"), api.vehicle_id("ACME-N2")]
    body = {"command": "unlock", "vehicle_ids": cars, "parameters": {}}
    first = await api.client.post(
        "/fleet/v1/bulk-commands",
        json=body,
        headers={**api.headers("erin", F), "Idempotency-Key": "bulk-unlock-1"},
    )
    assert first.status_code != 429, first.text
    single = await api.client.post(
        f"/fleet/v1/vehicles/{cars[0]}/commands/unlock",
        json={},
        headers={**api.headers("erin", F), "Idempotency-Key": "single-unlock-1"},
    )
    assert single.status_code == 429, single.text
    assert single.json()["reason"] == "flow-remote-unlock"
    # The same bulk request retried with its key is the same attempt, not a new charge.
    again = await api.client.post(
        "/fleet/v1/bulk-commands",
        json=body,
        headers={**api.headers("erin", F), "Idempotency-Key": "bulk-unlock-1"},
    )
    assert again.status_code != 429, again.text


async def test_an_unlock_retried_with_its_key_is_one_attempt(api: Api, wired: Wired) -> None:
    _tight(wired.runtime, Flow.REMOTE_UNLOCK, capacity=1)
    url = f"/mobile/v1/vehicles/{api.vehicle_id('ALICE-1')}/commands/unlock"
    headers = {**api.headers("alice", M), "Idempotency-Key": "one-unlock"}
    first = await api.client.post(url, json={"parameters": {}}, headers=headers)
    retry = await api.client.post(url, json={"parameters": {}}, headers=headers)
    assert first.status_code != 429 and retry.status_code != 429
    fresh = {**headers, "Idempotency-Key": "another-unlock"}
    assert (await api.client.post(url, json={"parameters": {}}, headers=fresh)).status_code == 429


async def test_one_key_on_other_vehicles_or_bodies_is_a_new_attempt_each_time(
    api: Api, wired: Wired
) -> None:
    # The key frees only a retry of the same request: the same key sent to another vehicle
    # (one the caller cannot even see) or with another body pays the flow again, so one key
    # cannot buy unlimited unlock attempts.
    _tight(wired.runtime, Flow.REMOTE_UNLOCK, capacity=2)
    headers = {**api.headers("alice", M), "Idempotency-Key": "one-key"}
    own = f"/mobile/v1/vehicles/{api.vehicle_id('ALICE-1')}/commands/unlock"
    other = f"/mobile/v1/vehicles/{api.vehicle_id('MALLORY-1')}/commands/unlock"
    first = await api.client.post(own, json={"parameters": {}}, headers=headers)
    elsewhere = await api.client.post(other, json={"parameters": {}}, headers=headers)
    longer = await api.client.post(own, json={"parameters": {}, "ttl_seconds": 20}, headers=headers)
    assert first.status_code != 429 and elsewhere.status_code != 429
    assert longer.status_code == 429, longer.text
    assert longer.json()["reason"] == f"flow-{Flow.REMOTE_UNLOCK.value}"


# ------------------------------------------------------------------------- enumeration


@pytest.mark.parametrize(
    "settings",
    [{"quota_enumeration_slow_distinct": 3, "quota_enumeration_stop_distinct": 5}],
    indirect=True,
)
async def test_distinct_vehicles_at_a_low_rate_slow_then_stop(
    api: Api, wired: Wired, clock: FrozenClock
) -> None:
    # mallory asks for her own car, then one unknown vehicle every 20 minutes: far below
    # any rate limit. Random-looking ids (no sequence): only the distinct count sees it.
    mine = f"/vehicles/{api.vehicle_id('MALLORY-1')}/status"
    assert (await api.get("mallory", M, mine)).status_code == 200
    ids = [f"veh_{chr(97 + n) * 26}" for n in range(6)]
    statuses = []
    for vehicle in ids:
        clock.advance(timedelta(minutes=20))
        response = await api.get("mallory", M, f"/vehicles/{vehicle}/status")
        statuses.append(response.status_code)
    # Her car is the 1st distinct vehicle: slowed at the 3rd and 4th, stopped at the 5th.
    assert statuses == [404, 404, 404, 429, 429, 429]
    assert len(wired.sleeps) == 2
    assert wired.sleeps[0] < wired.sleeps[1] <= 2.0  # growing, bounded
    (suspected,) = await _events(api.platform, EventName.ENUMERATION_SUSPECTED)
    (stopped,) = await _events(api.platform, EventName.ENUMERATION_STOPPED)
    for event in (suspected, stopped):
        assert event.actor_id == api.world.users["mallory"].id
        assert event.reason == "distinct-objects"
    # Stopped means stopped: her own car too, until the cool-down has passed.
    held = await api.get("mallory", M, mine)
    assert held.status_code == 429
    assert held.json()["type"].endswith(":enumeration-stopped")
    assert int(held.headers["Retry-After"]) > 0
    clock.advance(timedelta(hours=1))
    assert (await api.get("mallory", M, mine)).status_code == 200
    # The next new vehicle stops her again (a second stop event); others are not affected.
    assert (await api.get("mallory", M, f"/vehicles/{ids[5]}/status")).status_code == 429
    assert len(await _events(api.platform, EventName.ENUMERATION_STOPPED)) == 2
    assert (await api.get("alice", M, f"/vehicles/{ids[0]}/status")).status_code == 404


async def test_consecutive_ids_are_stopped_at_a_request_every_50_minutes(
    api: Api, clock: FrozenClock
) -> None:
    statuses = []
    for n in range(1, 10):
        response = await api.get("mallory", M, f"/vehicles/{_fake_vehicle(n)}/status")
        statuses.append(response.status_code)
        clock.advance(timedelta(minutes=50))
    # Default thresholds: slowed from the 4th consecutive id, stopped at the 8th.
    assert statuses == [404] * 7 + [429, 429]
    (stopped,) = await _events(api.platform, EventName.ENUMERATION_STOPPED)
    assert stopped.reason == "sequential-ids"
    assert len(await _events(api.platform, EventName.ENUMERATION_SUSPECTED)) == 1


async def test_consecutive_vin_serials_at_transfer_accept_are_stopped(
    api: Api, wired: Wired, clock: FrozenClock
) -> None:
    statuses = []
    for serial in range(100, 109):
        response = await api.post("dave", M, "/transfers/accept", _vin_body(api, serial))
        statuses.append(response.status_code)
        clock.advance(timedelta(minutes=30))
    assert statuses == [404] * 7 + [429, 429]
    (stopped,) = await _events(api.platform, EventName.ENUMERATION_STOPPED)
    assert stopped.reason == "sequential-ids"
    assert stopped.details["objects"] == [f"vin:{_vin_body(api, 107)['vin']}"]


# ------------------------------------------------------------------------- raised quota


async def test_a_raised_quota_in_use_is_audited(api: Api, wired: Wired) -> None:
    # Granted at run time: the settings' [[quota_raised]] need the tenant's id, known only
    # once the demo world is seeded (the settings path is tested in tests/unit/abuse).
    tenant = api.world.tenants["consumer"].id
    until = datetime(2027, 1, 1, tzinfo=UTC)
    raised = RaisedQuota(tenant, "user-objects", 5000, "ops-lead", "evening peak", until)
    wired.runtime.policy = dataclasses.replace(
        wired.runtime.policy, raised=InMemoryRaisedQuotas([raised])
    )
    path = f"/vehicles/{api.vehicle_id('ALICE-1')}/status"
    first = await api.get("alice", M, path)
    second = await api.get("alice", M, path)
    assert _limit_fields(first) == ("user-objects", 4999)
    assert _limit_fields(second) == ("user-objects", 4998)
    (event,) = await _events(api.platform, EventName.RAISED_QUOTA_USED)  # once per minute
    assert (event.object_type, event.object_id, event.tenant_id) == (
        "raised_quota",
        "user-objects",
        tenant,
    )
    assert event.details["owner"] == "ops-lead"
    assert event.details["capacity"] == 5000
    # Another tenant's people use the configured limit, and audit nothing.
    erin = await api.get("erin", F, f"/vehicles/{api.vehicle_id('ACME-N1')}/status")
    assert _limit_fields(erin) == ("user-objects", 599)
    assert len(await _events(api.platform, EventName.RAISED_QUOTA_USED)) == 1
