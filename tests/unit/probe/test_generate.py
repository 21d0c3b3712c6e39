"""The case generators, on the shipped demo spec, a synthetic world manifest and the real
OpenAPI document of the app (no server: generators never send anything)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from joserfc.jwk import ECKey

from fleetward.app import build_app
from fleetward.core.ids import new_id
from fleetward.platform import Platform
from fleetward.probe.auth import PASSWORD_ONLY, STALE_AUTH
from fleetward.probe.generate import FAMILIES, generate
from fleetward.probe.generate.common import (
    World,
    body_params,
    fill,
    shape,
    tenant_of,
    unknown_id,
)
from fleetward.probe.generate.function import OVERRIDE_HEADERS
from fleetward.probe.manifest import LoginClient, Manifest, ManifestActor, ObjectRecord, PartnerKey
from fleetward.probe.model import Case, Expect, Family
from fleetward.probe.oracle import Oracle
from fleetward.probe.spec.load import load_demo
from fleetward.probe.spec.models import SIDES, ActorRef, Spec, path_params
from fleetward.settings import Settings

# An allowed step-up command's twins: case id suffix -> the credential it is sent with.
TWINS = {"no-step-up": STALE_AUTH, "password-only": PASSWORD_ONLY}


def synthetic_manifest(spec: Spec) -> Manifest:
    """What the seed would write: every actor, every object on both sides (and spares)."""
    partner_key = ECKey.generate_key("P-256")
    actors = []
    for ref in spec.actors():
        role = spec.role(ref.role)
        partner = role.kind == "partner"
        actors.append(
            ManifestActor(
                name=ref.name,
                role=ref.role,
                state=ref.state,
                side=ref.side,
                kind=role.kind,
                tenant_id=f"ten_{ref.side}",
                tenant_slug=f"probe-{ref.side}",
                surfaces=list(role.surfaces),
                user_id=None if partner else new_id("usr"),
                username=None if partner else ref.name.replace(":", "-"),
                password=None if partner else "not-a-real-password",
                totp_secret=None if partner else "JBSWY3DPEHPK3PXP",
                client=(
                    PartnerKey(
                        client_id=f"probe-partner-{ref.state}-{ref.side}",
                        private_jwk=dict(partner_key.as_dict(private=True)),
                        kid=partner_key.thumbprint(),
                    )
                    if partner
                    else None
                ),
            )
        )
    objects = []
    for obj in spec.objects:
        names = {p for route in obj.routes for p in (*route.params, *body_params(route.body))}
        names -= {"future", "unique"}
        spares = (False, True) if any(route.spare for route in obj.routes) else (False,)
        for anchor, side, spare in itertools.product(obj.anchors, SIDES, spares):
            objects.append(
                ObjectRecord(
                    type=obj.name,
                    anchor=anchor,
                    side=side,
                    tenant_id=f"ten_{side}",
                    ids={name: new_id("prb") for name in sorted(names)},
                    canaries=[f"canary-{new_id('cny')}"],
                    spare=spare,
                )
            )
    return Manifest(
        run_id="run-test",
        created_at="2026-01-01T00:00:00Z",
        spec_name=spec.probe.name,
        login_client=LoginClient(
            client_id="fleetward-cli", redirect_uri="http://127.0.0.1/callback", surfaces=[]
        ),
        actors=actors,
        objects=objects,
        expired_tokens={surface: f"expired-{surface}" for surface in spec.surfaces},
    )


@pytest.fixture(scope="module")
def spec() -> Spec:
    return load_demo()


@pytest.fixture(scope="module")
def manifest(spec: Spec) -> Manifest:
    return synthetic_manifest(spec)


@pytest.fixture
async def openapi(settings: Settings) -> AsyncIterator[dict[str, Any]]:
    platform = Platform.build(settings)
    try:
        yield build_app(settings, platform=platform).openapi()
    finally:
        await platform.close()


@pytest.fixture
def world(spec: Spec, manifest: Manifest, openapi: dict[str, Any]) -> World:
    return World(spec, manifest, openapi)


def _family(world: World, family: Family) -> list[Case]:
    return list(FAMILIES[family](world))


def _record_of(world: World, case: Case) -> ObjectRecord:
    """The instance a matrix case targets (its id is matrix/<route>/<actor>/<anchor>-<side>)."""
    _family_name, route_name, _actor, where = case.id.split("/")[:4]
    anchor, side = where.rsplit("-", 1)
    obj, route = world.spec.route(route_name)
    record = world.manifest.find(
        obj.name, anchor, "home" if side == "home" else "away", spare=route.spare, actor=_actor
    )
    assert record is not None
    return record


async def test_the_demo_matrix_is_big_enough_and_ids_are_unique(world: World) -> None:
    cases = generate(world.spec, world.manifest, world.openapi)
    assert len(cases) >= 5000
    assert len({case.id for case in cases}) == len(cases)
    families = Counter(case.family for case in cases)
    assert set(families) == set(Family), families
    for family in FAMILIES:
        produced = _family(world, family)
        assert len({case.id for case in produced}) == len(produced), family


async def test_every_spec_route_exists_in_the_openapi_document(world: World) -> None:
    # The demo spec describes this deployment: a route missing here is drift in the spec.
    declared = {(m, shape(p)) for m, p, _op in world.operations()}
    missing = [r.name for _o, r in world.spec.routes() if (r.method, shape(r.path)) not in declared]
    assert missing == []


async def test_matrix_covers_every_actor_object_side_and_route(world: World) -> None:
    matrix = _family(world, Family.MATRIX)
    cases = {case.id: case for case in matrix}
    oracle = Oracle(world.spec)
    skipped: Counter[tuple[str, str, str, str | None]] = Counter()
    uncancelled: list[str] = []
    for actor in world.manifest.actors:
        ref = ActorRef(role=actor.role, state=actor.state, side=actor.side)
        for obj in world.spec.objects:
            for target in world.spec.targets(ref, obj):
                for route in obj.routes:
                    record = world.manifest.find(
                        obj.name, target.anchor, target.side, spare=route.spare, actor=actor.name
                    )
                    assert record is not None
                    case = cases.pop(
                        f"matrix/{route.name}/{actor.name}/{target.anchor}-{target.side}", None
                    )
                    decision = oracle.decide(
                        role=actor.role,
                        state=actor.state,
                        tenant=target.tenant,
                        obj=obj.name,
                        route=route.name,
                    )
                    if case is None and route.operation == "command" and route.cancel is None:
                        # An allowed command the probe could not cancel is never sent.
                        assert decision.expect is Expect.ALLOW
                        uncancelled.append(f"{route.name}/{actor.name}/{target.anchor}")
                        continue
                    if case is None:
                        # Only a second allowed write on an already consumed spare is left out.
                        assert route.spare and decision.expect is Expect.ALLOW
                        skipped[(record.type, record.anchor, record.side, record.actor)] += 1
                        continue
                    # The expectation is the oracle's, and the request names the record.
                    assert case.expect is decision.expect
                    assert case.request.path == fill(route.path, record.ids)
                    assert case.request.method == route.method
                    assert case.request.actor == actor.name
                    assert case.canaries == tuple(record.canaries)
                    # An allowed step-up command's twins without a valid step-up: an hour-old
                    # sign-in, a recent password-only one (checked below).
                    for suffix in TWINS:
                        twin = cases.pop(f"{case.id}/{suffix}", None)
                        assert (twin is not None) == (
                            route.step_up and case.expect is Expect.ALLOW
                        ), suffix
    assert cases == {}  # nothing else
    # Every command route of the demo has a cancel (the dealer's diagnostics run is cancelled
    # on the dealer surface): no allowed command case is left out.
    assert uncancelled == []
    # Each spare is consumed by exactly one allowed write.
    consuming = Counter(
        (r.type, r.anchor, r.side, r.actor)
        for case in matrix
        if case.expect is Expect.ALLOW and world.spec.route(case.route_id)[1].spare
        for r in [_record_of(world, case)]
    )
    assert all(count == 1 for count in consuming.values()), consuming
    assert set(skipped) <= set(consuming)


async def test_matrix_checks_refusals_thoroughly(world: World) -> None:
    for case in _family(world, Family.MATRIX):
        if case.expect is Expect.DENY_HIDDEN and case.hidden_reference is not None:
            # The reference differs from the request only in the object's own id.
            real = case.request.path.split("/")
            twin = case.hidden_reference.path.split("/")
            assert len(real) == len(twin)
            assert sum(a != b for a, b in zip(real, twin, strict=True)) == 1
            assert case.hidden_reference.actor == case.request.actor
        if case.expect is not Expect.ALLOW and case.request.method != "GET":
            _obj, route = world.spec.route(case.route_id)
            record = _record_of(world, case)
            if route.read_back is not None:
                read_obj, read_route = world.spec.route(route.read_back)
                reader = world.allowed_actor(read_obj, read_route, record)
                # Read back whenever somebody may read the object (a fleet route on a
                # consumer's object has no reader at all).
                assert (case.read_back is not None) is (reader is not None), case.id
                if case.read_back is not None:
                    assert case.read_back.method == "GET"
        if case.expect is not Expect.ALLOW:
            assert case.allowed_fields is None


async def test_read_backs_are_sent_by_someone_the_oracle_lets_read(world: World) -> None:
    oracle = Oracle(world.spec)
    checked = 0
    for case in _family(world, Family.MATRIX):
        if case.read_back is None or case.read_back.actor is None:
            continue
        _obj, route = world.spec.route(case.route_id)
        read_obj, read_route = world.spec.route(route.read_back or "")
        reader = world.manifest.actor(case.read_back.actor)
        record = _record_of(world, case)
        assert case.read_back.path == fill(read_route.path, record.ids)
        decision = oracle.decide(
            role=reader.role,
            state=reader.state,
            tenant=tenant_of(world.spec, reader, read_obj, record),
            obj=read_obj.name,
            route=read_route.name,
        )
        assert decision.expect is Expect.ALLOW
        checked += 1
    assert checked > 0


async def test_replay_sends_every_credentialed_route_with_bad_credentials(world: World) -> None:
    cases = _family(world, Family.REPLAY)
    assert all(case.expect is Expect.UNAUTHENTICATED for case in cases)
    variants = Counter(case.id.rsplit("/", 1)[1] for case in cases)
    credentialed = [
        (m, p)
        for m, p, op in world.operations()
        if op.get("x-fleetward-surface") in world.spec.surfaces
        and op.get("x-fleetward-permission") != "public"
    ]
    assert len(credentialed) > 50
    for variant in ("none", "garbage", "expired"):
        assert variants[variant] == len(credentialed), variant
    none_cases = [c for c in cases if c.id.endswith("/none")]
    assert all(c.request.actor is None and c.request.credential is None for c in none_cases)
    # Every other surface's token is replayed on each route.
    surfaces = [c for c in cases if "/surface-" in c.id]
    assert all(
        c.request.credential and c.request.credential.startswith("other-surface:") for c in surfaces
    )
    assert all("{" not in c.request.path for c in cases)


async def test_function_tampering_never_uses_a_declared_method(world: World) -> None:
    cases = _family(world, Family.FUNCTION)
    tampered = [c for c in cases if "/verb-" in c.id]
    overridden = [c for c in cases if "/override-" in c.id]
    assert tampered and overridden
    for case in tampered:
        _obj, route = world.spec.route(case.route_id)
        assert case.request.method not in world.declared_methods(route.path)
        assert case.expect is Expect.DENY
    for case in overridden:
        _obj, route = world.spec.route(case.route_id)
        [(header, value)] = case.request.headers
        assert header in OVERRIDE_HEADERS
        assert value == route.method
        assert case.request.method not in world.declared_methods(route.path)
    # Roles without the surface: their own token on every admin/support/dealer route.
    others = [c for c in cases if c.expect is Expect.UNAUTHENTICATED]
    assert {c.request.path.split("/")[1] for c in others} >= {"admin", "support", "dealer"}
    for case in others:
        actor = world.manifest.actor(case.request.actor or "")
        assert case.request.path.split("/")[1] not in actor.surfaces


async def test_object_id_cases_use_an_attacker_the_oracle_refuses(world: World) -> None:
    cases = _family(world, Family.OBJECT_ID)
    kinds = Counter(case.id.split("/")[2] for case in cases)
    assert {"dot-dot", "encoded-slash", "upper-case", "braces", "wrong-parent", "body-ids"} <= set(
        kinds
    ), kinds
    for case in cases:
        assert case.expect in (Expect.DENY, Expect.DENY_HIDDEN)
        assert case.canaries, case.id
        if "/wrong-parent/" in case.id:
            # The parent is the actor's own (same side); the child is the twin's.
            actor = world.manifest.actor(case.request.actor or "")
            _obj, route = world.spec.route(case.route_id)
            own = next(
                r
                for r in world.manifest.objects
                if r.side == actor.side
                and case.request.path.startswith(fill(route.path.split("}")[0] + "}", r.ids) or "-")
            )
            assert own.side == actor.side


async def test_property_cases_add_exactly_one_server_owned_field(world: World) -> None:
    cases = _family(world, Family.PROPERTY)
    assert cases
    for case in cases:
        _obj, route = world.spec.route(case.route_id)
        field = case.id.split("/")[2]
        assert isinstance(case.request.body, dict)
        assert field in case.request.body
        assert route.body is not None and field not in route.body
        assert case.expect is Expect.DENY
        if route.read_back is not None:
            assert case.read_back is not None
    named = {(c.route_id, c.id.split("/")[2]) for c in cases}
    for _obj, route in world.spec.routes():
        if route.body is None or route.method in ("GET", "DELETE"):
            continue
        for field in route.server_owned:
            if field not in route.body and any(c.route_id == route.name for c in cases):
                assert (route.name, field) in named


async def test_inventory_tries_undeclared_paths_only(world: World) -> None:
    cases = _family(world, Family.INVENTORY)
    declared = set(world.openapi["paths"])
    assert cases
    for case in cases:
        assert case.request.path not in declared
        assert case.expect is Expect.DENY
    assert any(case.request.path == "/mobile/v0/vehicles" for case in cases)


def test_unknown_ids_keep_the_shape() -> None:
    real = new_id("veh")
    twin = unknown_id(real)
    assert twin is not None and twin != real
    assert twin.split("_")[0] == "veh" and len(twin) == len(real)
    assert unknown_id("1HGCM82633A004352") is None  # a VIN: no safe twin
    assert path_params("/a/{x}/b/{y}") == ("x", "y")


async def test_every_command_request_asks_for_a_fresh_idempotency_key(world: World) -> None:
    commands = {r.name for _o, r in world.spec.routes() if r.operation == "command"}
    assert commands
    cases = generate(world.spec, world.manifest, world.openapi)
    seen: Counter[Family] = Counter()
    for case in cases:
        if case.route_id not in commands:
            continue
        seen[case.family] += 1
        assert case.request.fresh_headers == ("Idempotency-Key",), case.id
        if case.hidden_reference is not None:
            assert case.hidden_reference.fresh_headers == ("Idempotency-Key",), case.id
        if case.read_back is not None:
            # The job list may gain the rejected jobs of refusals, and nothing else.
            assert case.read_back.refusal_record == (("state", "rejected"),), case.id
            assert case.read_back.fresh_headers == ()
    assert {Family.MATRIX, Family.REPLAY, Family.FUNCTION, Family.PROPERTY} <= set(seen), seen


async def test_matrix_commands_are_jobs_their_sender_cancels(world: World) -> None:
    found = 0
    for case in _family(world, Family.MATRIX):
        _obj, route = world.spec.route(case.route_id)
        if route.operation != "command":
            assert not case.job and case.cancel is None
            continue
        found += 1
        record = _record_of(world, case)
        assert case.job
        if route.cancel is None:
            # No way to cancel (the dealer's diagnostics run): only refusals are sent.
            assert case.expect is not Expect.ALLOW and case.cancel is None, case.id
            continue
        assert case.cancel is not None
        assert case.cancel.method == "POST"
        assert case.cancel.actor == case.request.actor
        assert case.cancel.path == fill(route.cancel or "", {**record.ids, "id": "{id}"})
        assert case.cancel.path.endswith("/{id}/cancel")
    assert found > 0


async def test_allowed_step_up_commands_are_also_sent_without_a_step_up(world: World) -> None:
    matrix = {case.id: case for case in _family(world, Family.MATRIX)}
    allowed = 0
    twins: Counter[str] = Counter()
    for case in matrix.values():
        _obj, route = world.spec.route(case.route_id)
        base, _, suffix = case.id.rpartition("/")
        if suffix in TWINS:
            assert route.step_up, case.id
            twin = matrix[base]
            # The allowed case's request, with the actor's hour-old multi-factor sign-in's
            # token, or its recent password-only sign-in's: refused the same way.
            assert twin.expect is Expect.ALLOW and twin.step_up
            assert case.request == replace(twin.request, credential=TWINS[suffix])
            assert case.expect is Expect.STEP_UP and not case.step_up
            assert case.read_back is not None
            assert case.read_back.refusal_record == (("state", "rejected"),)
            assert case.cancel == twin.cancel
            twins[suffix] += 1
            continue
        # Only an allowed step-up command asks the runner for a recent sign-in.
        assert case.step_up == (route.step_up and case.expect is Expect.ALLOW), case.id
        if case.step_up:
            allowed += 1
            for suffix in TWINS:
                assert f"{case.id}/{suffix}" in matrix, case.id
    # owner (mobile) and fleet admin and operator (fleet), both sides, three commands each.
    assert allowed == 18
    assert twins == {"no-step-up": 18, "password-only": 18}


async def test_the_open_cases_technician_follows_an_ended_diagnostics_run(world: World) -> None:
    """The dealer's follow is probed allowed too: the technician with the open case on their
    own side's case vehicle, on the seeded diagnostics run (ended); everyone else is refused."""
    follows = [
        case for case in _family(world, Family.MATRIX) if case.route_id == "dealer:commands:follow"
    ]
    allowed = [case for case in follows if case.expect is Expect.ALLOW]
    assert {case.id for case in allowed} == {
        f"matrix/dealer:commands:follow/dealer_technician:case-open:{side}/consumer-{side}"
        for side in SIDES
    }
    for case in allowed:
        record = _record_of(world, case)
        assert case.request.path == (
            f"/dealer/v1/vehicles/{record.ids['vehicle_id']}/commands/"
            f"{record.ids['diagnostics_job_id']}/events"
        )
    assert all(
        case.expect in (Expect.DENY_HIDDEN, Expect.UNAUTHENTICATED)
        for case in follows
        if case not in allowed
    )
