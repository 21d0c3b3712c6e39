"""The Cedar PDP on its own: it refuses a policy that does not validate, fails closed on every
kind of error, and holds the scope bound. No store: relations are built by hand.

Every fail-closed case first shows that the same request is allowed without the fault, so a
deny cannot come from a broken setup.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from fleetward.authz import pdp as pdp_module
from fleetward.authz.decision import (
    AuthzRequest,
    Decision,
    PrincipalKind,
    PrincipalRef,
    Reason,
    ResourceRef,
)
from fleetward.authz.entities import RelationsRefused, cedar_entities
from fleetward.authz.pdp import CedarPdp, PdpConfig, PolicyInvalid, PolicyText
from fleetward.authz.permissions import Permission
from fleetward.identity.models import Role, TenantKind
from unit.authz.fakes import (
    ALICE,
    ALICE_FACTS,
    CAR,
    CONSUMER,
    EVERY_SCOPE,
    FakeSource,
    context,
    owned_car,
    person,
    relations,
    request,
)

STATUS = Permission.VEHICLE_READ_STATUS
PACKAGED = PolicyText.packaged()
OWNER_WORLD = relations(ALICE_FACTS, owned_car())


def with_extra(text: str, name: str = "zz-extra.cedar") -> PolicyText:
    return replace(PACKAGED, policies=(*PACKAGED.policies, (name, text)))


def pdp_for(source: Any, policy: PolicyText = PACKAGED, **config: Any) -> CedarPdp:
    return CedarPdp(source, policy=policy, config=PdpConfig(**config))


# ---------------------------------------------------------------- the policy must validate

INVALID: list[tuple[str, PolicyText, str]] = [
    # A typo'd attribute would silently never match: refused at start-up.
    (
        "unknown-attribute",
        with_extra('@id("pdp-error") forbid (principal, action, resource is Fleetward::Vehicle)'
                   ' when { resource.colour == "red" };'),
        "colour",
    ),
    # A permission the schema does not know.
    (
        "unknown-action",
        with_extra('@id("pdp-error") forbid (principal, action == Fleetward::Action::'
                   '"vehicle:fly", resource);'),
        "vehicle:fly",
    ),
    # Types: a time compared with a string.
    (
        "type-error",
        with_extra('@id("pdp-error") forbid (principal, action, resource) when '
                   '{ context.now > "noon" };'),
        "",
    ),
    ("syntax-error", with_extra("permit (principal, action, resource"), ""),
    # Every policy names its reason: no anonymous, unknown or duplicated ids.
    ("no-id", with_extra("forbid (principal, action, resource) when { false };"), "@id"),
    (
        "id-not-a-reason",
        with_extra('@id("allow-all") permit (principal, action, resource);'),
        "allow-all",
    ),
    (
        "duplicate-id",
        with_extra('@id("owner") permit (principal, action, resource) when { false };'),
        "used twice",
    ),
    (
        "unknown-obligation",
        with_extra('@id("pdp-error") @obligation("shred") forbid (principal, action, resource)'
                   " when { false };"),
        "shred",
    ),
    (
        "unknown-annotation",
        with_extra('@id("pdp-error") @owner("bob") forbid (principal, action, resource)'
                   " when { false };"),
        "owner",
    ),
    # Templates are linked at run time, outside this review: not used.
    (
        "template",
        with_extra('@id("pdp-error") permit (principal == ?principal, action, resource);'),
        "template",
    ),
    ("schema-syntax", replace(PACKAGED, schema="namespace Fleetward { entity"), ""),
    # A schema that lost an attribute the policies read.
    (
        "schema-drift",
        replace(PACKAGED, schema=PACKAGED.schema.replace("region: String,", "", 1)),
        "region",
    ),
    # A schema that admits only some of the request shapes the PDP builds (here: a context
    # without a command, i.e. every request but a bulk command's): refused, not half-used.
    (
        "schema-context-shape",
        replace(PACKAGED, schema=PACKAGED.schema.replace("command?: Action", "command: Action", 1)),
        "admits no request",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("case", "policy", "mentions"), INVALID, ids=[c[0] for c in INVALID])
def test_refuses_to_construct_with_an_invalid_policy(
    case: str, policy: PolicyText, mentions: str
) -> None:
    with pytest.raises(PolicyInvalid) as refused:
        pdp_for(FakeSource(OWNER_WORLD), policy)
    assert refused.value.errors
    assert mentions in str(refused.value)


def test_packaged_policy_constructs_and_is_versioned() -> None:
    pdp = pdp_for(FakeSource(OWNER_WORLD))
    assert re.fullmatch(r"[0-9a-f]{64}", pdp.policy_version)
    assert pdp.policy_version == PolicyText.packaged().version
    # Any change, even a comment, or to the schema, is a new version.
    assert with_extra("// a comment\n").version != PACKAGED.version
    changed_schema = replace(PACKAGED, schema=PACKAGED.schema + "\n")
    assert changed_schema.version != PACKAGED.version
    # Bound PDPs share the validated policy.
    assert pdp.bind(FakeSource(OWNER_WORLD)).policy_version == pdp.policy_version


# ---------------------------------------------------------------- fail closed


async def test_a_decision_is_not_a_bool() -> None:
    decision = await pdp_for(FakeSource(OWNER_WORLD)).decide(request(ALICE, STATUS))
    assert decision.allowed
    with pytest.raises(TypeError):
        bool(decision)


async def test_relation_source_error_denies() -> None:
    decision = await pdp_for(FakeSource(RuntimeError("store down"))).decide(request(ALICE, STATUS))
    assert (decision.allowed, decision.reason) == (False, Reason.PDP_ERROR)


async def test_relation_source_timeout_denies() -> None:
    pdp = pdp_for(FakeSource(OWNER_WORLD, hang=True), timeout=timedelta(milliseconds=20))
    decision = await pdp.decide(request(ALICE, STATUS))
    assert (decision.allowed, decision.reason) == (False, Reason.PDP_TIMEOUT)


async def test_refused_principal_denies_with_its_reason() -> None:
    source = FakeSource(RelationsRefused(Reason.PRINCIPAL_DISABLED))
    decisions = await pdp_for(source).decide_many(
        [request(ALICE, STATUS), request(ALICE, Permission.VEHICLE_LOCK)]
    )
    assert [(d.allowed, d.reason) for d in decisions] == [(False, Reason.PRINCIPAL_DISABLED)] * 2


async def test_engine_exception_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    pdp = pdp_for(FakeSource(OWNER_WORLD))
    assert (await pdp.decide(request(ALICE, STATUS))).allowed

    def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("engine panic")

    monkeypatch.setattr(pdp_module._engine, "is_authorized_batch", broken)
    decision = await pdp.decide(request(ALICE, STATUS))
    assert (decision.allowed, decision.reason) == (False, Reason.PDP_ERROR)


async def test_no_decision_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    pdp = pdp_for(FakeSource(OWNER_WORLD))
    real = pdp_module._engine.is_authorized_batch

    def undecided(*args: Any, **kwargs: Any) -> list[str]:
        answers = [json.loads(text) for text in real(*args, **kwargs)]
        assert answers and all(a["decision"] == "Allow" for a in answers)
        return [json.dumps({**a, "decision": "NoDecision"}) for a in answers]

    monkeypatch.setattr(pdp_module._engine, "is_authorized_batch", undecided)
    decision = await pdp.decide(request(ALICE, STATUS))
    assert (decision.allowed, decision.reason) == (False, Reason.PDP_ERROR)


async def test_an_answer_the_engine_did_not_write_whole_denies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The engine's answers are read with a strict decoder: an Allow without its diagnostics
    # (or with them in another shape) is not an Allow.
    pdp = pdp_for(FakeSource(OWNER_WORLD))
    real = pdp_module._engine.is_authorized_batch

    def truncated(*args: Any, **kwargs: Any) -> list[str]:
        answers = [json.loads(text) for text in real(*args, **kwargs)]
        assert answers and all(a["decision"] == "Allow" for a in answers)
        return [json.dumps({"decision": "Allow", "diagnostics": {"reason": "owner"}})]

    monkeypatch.setattr(pdp_module._engine, "is_authorized_batch", truncated)
    decision = await pdp.decide(request(ALICE, STATUS))
    assert (decision.allowed, decision.reason) == (False, Reason.PDP_ERROR)


async def test_entity_missing_an_attribute_denies(monkeypatch: pytest.MonkeyPatch) -> None:
    pdp = pdp_for(FakeSource(OWNER_WORLD))
    assert (await pdp.decide(request(ALICE, STATUS))).allowed

    def without_roles(relations: Any) -> list[dict[str, Any]]:
        entities = cedar_entities(relations)
        for entity in entities:
            entity["attrs"].pop("roles", None)
        return entities

    monkeypatch.setattr(pdp_module, "cedar_entities", without_roles)
    decision = await pdp.decide(request(ALICE, STATUS))
    assert (decision.allowed, decision.reason) == (False, Reason.PDP_ERROR)


async def test_an_erroring_forbid_is_not_skipped() -> None:
    # Cedar skips a policy whose evaluation errors; for a forbid that would fail open (the
    # owner permit would win). Here the forbid overflows a Long at evaluation time.
    overflow = (
        '@id("pdp-error") forbid (principal, action, resource)'
        " when { context.now * 9223372036854775807 > 0 };"
    )
    pdp = pdp_for(FakeSource(OWNER_WORLD), with_extra(overflow))
    decision = await pdp.decide(request(ALICE, STATUS))
    assert (decision.allowed, decision.reason) == (False, Reason.PDP_ERROR)
    assert (await pdp_for(FakeSource(OWNER_WORLD)).decide(request(ALICE, STATUS))).allowed


async def test_action_on_the_wrong_resource_type_denies() -> None:
    # A route asking about a vehicle permission on an account is a wiring error: deny.
    pdp = pdp_for(FakeSource(OWNER_WORLD))
    assert (await pdp.decide(request(ALICE, STATUS, CAR))).allowed
    wrong = await pdp.decide(request(ALICE, Permission.SUPPORT_READ_ACCOUNT, CAR))
    assert (wrong.allowed, wrong.reason) == (False, Reason.PDP_ERROR)


# ---------------------------------------------------------------- the scope bound

HOSTILE_SCOPES: list[tuple[str, frozenset[str]]] = [
    # No scopes at all.
    ("empty", frozenset()),
    # Wildcards and prefixes are not permissions.
    ("wildcard", frozenset({"vehicle:*", "*"})),
    ("prefix", frozenset({"vehicle", "vehicle:read"})),
    # Case and whitespace variants are not the permission.
    ("upper-case", frozenset({"VEHICLE:READ_STATUS"})),
    ("padded", frozenset({" vehicle:read_status", "vehicle:read_status "})),
    # A fullwidth look-alike colon.
    ("look-alike", frozenset({"vehicle\uff1aread_status"})),
    # Other permissions only.
    ("other", frozenset({"vehicle:read_location", "openid"})),
]


@pytest.mark.parametrize(("case", "scopes"), HOSTILE_SCOPES, ids=[c[0] for c in HOSTILE_SCOPES])
async def test_scope_bounds_every_relationship(case: str, scopes: frozenset[str]) -> None:
    source = FakeSource(OWNER_WORLD)
    pdp = pdp_for(source)
    assert (await pdp.decide(request(ALICE, STATUS, ctx=context(scopes=EVERY_SCOPE)))).allowed
    decision = await pdp.decide(request(ALICE, STATUS, ctx=context(scopes=scopes)))
    assert (decision.allowed, decision.reason) == (False, Reason.SCOPE)
    # Decided before any relationship was read.
    assert len(source.calls) == 1


async def test_the_policy_holds_the_scope_bound_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Even if the code's scope check were lost, the policy's own forbid denies.
    monkeypatch.setattr(pdp_module, "in_scope", lambda _request: True)
    pdp = pdp_for(FakeSource(OWNER_WORLD))
    decision = await pdp.decide(request(ALICE, STATUS, ctx=context(scopes=frozenset())))
    assert (decision.allowed, decision.reason) == (False, Reason.SCOPE)


# ---------------------------------------------------------------- batches


async def test_decide_many_keeps_order_and_batches_by_principal() -> None:
    bob = PrincipalRef(PrincipalKind.USER, "usr_bob")
    bob_facts = person(bob.id, CONSUMER, TenantKind.CONSUMER, Role.CUSTOMER)
    mine = owned_car()
    other = owned_car(vehicle_id="veh_other", owner=bob.id)
    source = FakeSource(
        {ALICE.id: relations(ALICE_FACTS, mine, other), bob.id: relations(bob_facts, mine, other)}
    )
    pdp = pdp_for(source)
    other_ref = ResourceRef.vehicle(other.id)
    asks: list[AuthzRequest] = [
        request(ALICE, STATUS, CAR),
        request(bob, STATUS, CAR),
        request(ALICE, STATUS, other_ref),
        request(bob, STATUS, other_ref),
        request(ALICE, STATUS, ResourceRef.vehicle("veh_missing")),
        request(ALICE, STATUS, CAR, context(scopes=frozenset())),
    ]
    decisions = await pdp.decide_many(asks)
    assert [(d.allowed, d.reason) for d in decisions] == [
        (True, Reason.OWNER),
        (False, Reason.NO_RELATIONSHIP),
        (False, Reason.NO_RELATIONSHIP),
        (True, Reason.OWNER),
        (False, Reason.UNKNOWN_RESOURCE),
        (False, Reason.SCOPE),
    ]
    # One read per principal and context, however many resources.
    assert sorted((p.id, len(r)) for p, _, r in source.calls) == [
        (ALICE.id, 3),
        (bob.id, 2),
    ]
    assert all(isinstance(d, Decision) for d in decisions)
