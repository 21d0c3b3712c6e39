"""The PDP's single evaluation of an action's slice answers exactly as Cedar does with the
whole policy set and the schema; a request the schema does not admit is a deny.

The reference below is the engine called the ordinary way (every policy, request validated
with the schema), with the PDP's rule for naming a forbid-denial: a forbid is named only
when a permit would otherwise allow.
"""

from __future__ import annotations

import json
from datetime import timedelta

import cedarpy
import pytest

from fleetward.authz.decision import AuthzRequest, Reason, ResourceKind, ResourceRef
from fleetward.authz.entities import ObjectFacts, Relations, cedar_entities
from fleetward.authz.pdp import CedarPdp, PolicyText, compile_policy
from fleetward.authz.permissions import Permission
from fleetward.authz.slicing import fits
from fleetward.identity.models import Role, TenantKind
from unit.authz.fakes import (
    ALICE,
    ALICE_FACTS,
    CAR,
    CONSUMER,
    FLEET,
    FakeSource,
    context,
    grant,
    owned_car,
    person,
    relations,
    request,
)

COMPILED = compile_policy(PolicyText.packaged())
BOB = person("usr_bob", CONSUMER, TenantKind.CONSUMER, Role.CUSTOMER)
FRANK = person("usr_frank", FLEET, TenantKind.FLEET, Role.FLEET_OPERATOR)
DRIVEN = owned_car(delegation=grant(BOB.ref.id, frozenset({Permission.VEHICLE_LOCK})))
FLEET_CAR = owned_car(None, tenant_id=FLEET, fleet_id=FLEET)

WORLDS: list[tuple[str, Relations]] = [
    ("owner", relations(ALICE_FACTS, DRIVEN)),
    ("driver", relations(BOB, DRIVEN)),
    ("stranger", relations(person("usr_m", CONSUMER, TenantKind.CONSUMER, Role.CUSTOMER), DRIVEN)),
    ("other tenant", relations(FRANK, FLEET_CAR)),
]
CONTEXTS = {
    "fresh": context(),
    "stale sign-in": context(auth_age=timedelta(hours=2)),
    "fleet tenant": context(FLEET),
    "no scopes": context(scopes=frozenset()),
}


def reference(ask: AuthzRequest, world: Relations) -> tuple[bool, tuple[str, ...]]:
    """(allowed, reason ids) from the engine with every policy and the schema."""
    pdp = CedarPdp(FakeSource(world))
    entities = cedarpy.Entities.from_json_str(pdp_json(cedar_entities(world)), COMPILED.schema)
    cedar_request = pdp._cedar_request(ask)
    result = cedarpy.is_authorized(
        cedar_request, COMPILED.policies, entities, schema=COMPILED.schema
    )
    assert not result.diagnostics.errors
    ordered = sorted((COMPILED.meta[p] for p in result.diagnostics.reasons), key=lambda m: m.order)
    ids = tuple(m.reason.value for m in ordered)
    if result.decision is cedarpy.Decision.Allow:
        return True, ids
    if not ids:
        return False, ()
    permits = cedarpy.PolicySet.from_str(
        "\n".join(text for name, text in PolicyText.packaged().policies if name == "permit.cedar")
    )
    again = cedarpy.is_authorized(cedar_request, permits, entities, schema=COMPILED.schema)
    return False, ids if again.decision is cedarpy.Decision.Allow else ()


def pdp_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


async def compare(world_name: str, world: Relations, context_name: str) -> set[tuple[bool, bool]]:
    """Asks every vehicle permission through the PDP and the reference; returns the kinds
    of answer compared: (allowed, named by policies)."""
    pdp = CedarPdp(FakeSource(world))
    vehicle_permissions = [p for p in Permission if p.value.startswith("vehicle:")]
    asks = [
        request(world.principal.ref, p, CAR, CONTEXTS[context_name]) for p in vehicle_permissions
    ]
    seen: set[tuple[bool, bool]] = set()
    for ask, decision in zip(asks, await pdp.decide_many(asks), strict=True):
        if decision.reason is Reason.SCOPE and not ask.context.scopes:
            continue  # the scope bound answers before the engine is asked
        allowed, ids = reference(ask, world)
        assert decision.allowed is allowed, (world_name, context_name, ask.action)
        if allowed or ids:
            assert decision.policy_ids == ids, (world_name, context_name, ask.action)
        seen.add((allowed, bool(ids)))
    return seen


@pytest.mark.parametrize(("world_name", "world"), WORLDS)
@pytest.mark.parametrize("context_name", list(CONTEXTS))
async def test_every_vehicle_permission_answers_as_the_full_policy_set(
    world_name: str, world: Relations, context_name: str
) -> None:
    await compare(world_name, world, context_name)


async def test_the_table_covers_allows_plain_denials_and_named_forbids() -> None:
    covered: set[tuple[bool, bool]] = set()
    for world_name, world in WORLDS:
        for context_name in CONTEXTS:
            covered |= await compare(world_name, world, context_name)
    assert {(True, True), (False, False), (False, True)} <= covered


def test_each_slice_is_smaller_than_the_policy_set_and_keeps_unscoped_policies() -> None:
    everything = len(COMPILED.policies)
    for permission, sliced in COMPILED.sliced.items():
        assert 0 < len(sliced) <= everything, permission
    assert len(COMPILED.sliced[Permission.VEHICLE_READ_STATUS]) < everything


def test_the_schema_triples_are_probed_from_the_engine() -> None:
    admitted = COMPILED.applies_to
    assert ("vehicle:read_status", "Fleetward::User", "Fleetward::Vehicle") in admitted
    assert ("vehicle:read_status", "Fleetward::User", "Fleetward::Tenant") not in admitted
    assert ("ota:manage_campaign", "Fleetward::Client", "Fleetward::Platform") not in admitted


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("now", "2026-11-26"),
        ("now", 2**63),
        ("tenant", None),
        ("region", 7),
        ("scopes", [{"type": "Fleetward::User", "id": "usr_alice"}]),
        ("barred_regions", [1]),
        ("command", {"type": "Fleetward::Action", "id": "vehicle:everything"}),
        ("unexpected", 1),
    ],
)
def test_a_context_outside_the_schema_does_not_fit(field: str, value: object) -> None:
    pdp = CedarPdp(FakeSource(relations(ALICE_FACTS, owned_car())))
    good = pdp._cedar_request(request(ALICE, Permission.VEHICLE_READ_STATUS))
    assert fits(good, COMPILED.applies_to)
    bad = {**good, "context": {**good["context"], field: value}}
    assert not fits(bad, COMPILED.applies_to)


@pytest.mark.parametrize(
    ("part", "value"),
    [
        # The engine reads a resource id that is not a string as some other entity (or
        # fails); without the schema's request check, only fits stops it.
        ("resource", {"type": "Fleetward::Vehicle", "id": 7}),
        # An action the schema does not let apply to this resource type.
        ("resource", {"type": "Fleetward::Tenant", "id": CONSUMER}),
        # A principal type the schema does not know.
        ("principal", {"type": "Fleetward::Vehicle", "id": "usr_alice"}),
    ],
)
def test_a_request_part_outside_the_schema_does_not_fit(part: str, value: object) -> None:
    pdp = CedarPdp(FakeSource(relations(ALICE_FACTS, owned_car())))
    good = pdp._cedar_request(request(ALICE, Permission.VEHICLE_READ_STATUS))
    assert fits(good, COMPILED.applies_to)
    assert not fits({**good, part: value}, COMPILED.applies_to)


async def test_a_request_outside_the_schema_is_a_pdp_error() -> None:
    tenant = ResourceRef(ResourceKind.TENANT, CONSUMER)
    world = relations(
        ALICE_FACTS, owned_car(), objects=[ObjectFacts(tenant, CONSUMER, TenantKind.CONSUMER)]
    )
    pdp = CedarPdp(FakeSource(world))
    decision = await pdp.decide(request(ALICE, Permission.VEHICLE_READ_STATUS, tenant))
    assert (decision.allowed, decision.reason) == (False, Reason.PDP_ERROR)
    assert (await pdp.decide(request(ALICE, Permission.VEHICLE_READ_STATUS))).allowed
