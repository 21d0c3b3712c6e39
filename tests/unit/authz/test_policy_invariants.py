"""Properties of the policy that must hold whatever the relationship data says.

- The "never" column holds even against a permit that grants everything (a policy mistake):
  each forbid is load-bearing on its own.
- The permission sets the schema's action groups grant are exactly the Python vocabulary's
  (OWNER_PERMISSIONS, DELEGABLE_PERMISSIONS, CONSENTABLE_PERMISSIONS), also when a stored
  delegation or consent was tampered with to hold more.
- Hostile ids are data, never policy.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from fleetward.authz import pdp as pdp_module
from fleetward.authz.decision import (
    AuthzRequest,
    PrincipalKind,
    PrincipalRef,
    Reason,
    ResourceKind,
    ResourceRef,
)
from fleetward.authz.entities import ObjectFacts, PrincipalFacts, Relations, VehicleFacts
from fleetward.authz.pdp import CedarPdp, PdpConfig, PolicyText
from fleetward.authz.permissions import (
    CONSENTABLE_PERMISSIONS,
    DELEGABLE_PERMISSIONS,
    OWNER_PERMISSIONS,
    Permission,
)
from fleetward.identity.acr import Acr
from fleetward.identity.models import Role, TenantKind
from fleetward.identity.oauth_models import ClientType
from unit.authz.fakes import (
    ALICE,
    ALICE_FACTS,
    CAR,
    CONSUMER,
    DEALER,
    EVERY_SCOPE,
    FLEET,
    OPS,
    OTHER_FLEET,
    PARTNER,
    FakeSource,
    context,
    grant,
    owned_car,
    person,
    relations,
    request,
)

P = Permission
PACKAGED = PolicyText.packaged()
# A policy mistake: one permit that allows anything to anyone.
PERMIT_ALL = replace(
    PACKAGED,
    policies=(
        *PACKAGED.policies,
        ("zz-mistake.cedar", '@id("no-relationship") permit (principal, action, resource);'),
    ),
)

WITHOUT_FORBIDS = replace(
    PERMIT_ALL, policies=tuple(f for f in PERMIT_ALL.policies if f[0] != "forbid.cedar")
)

GRACE = person("usr_grace", DEALER, TenantKind.DEALER, Role.DEALER_TECHNICIAN)
HEIDI = person("usr_heidi", OPS, TenantKind.OPERATOR, Role.SUPPORT_AGENT)
KEN = person("usr_ken", OPS, TenantKind.OPERATOR, Role.ENGINEER)
JUDY = person("usr_judy", OPS, TenantKind.OPERATOR, Role.PLATFORM_ADMIN)
ERIN = person("usr_erin", FLEET, TenantKind.FLEET, Role.FLEET_ADMIN)
FRANK = person(
    "usr_frank", FLEET, TenantKind.FLEET, Role.FLEET_OPERATOR, operator_groups=frozenset({"grp_n"})
)
APP = PrincipalFacts(
    PrincipalRef(PrincipalKind.PARTNER, "insureco-app"),
    PARTNER,
    TenantKind.PARTNER,
    client_type=ClientType.PARTNER,
)
FLEET_CAR = VehicleFacts("veh_fleet", FLEET, "NA", fleet_id=FLEET, groups=frozenset({"grp_n"}))
OTHER_FLEET_CAR = VehicleFacts("veh_other", OTHER_FLEET, "NA")
NORTH = ResourceRef(ResourceKind.FLEET_GROUP, "grp_n")
FOREIGN_GROUP = ResourceRef(ResourceKind.FLEET_GROUP, "grp_foreign")
FOREIGN_TENANT = ResourceRef(ResourceKind.TENANT, OTHER_FLEET)
EU_CAR = owned_car(region="EU")


def _ask(
    who: PrincipalFacts, permission: P, resource: ResourceRef = CAR, **ctx: object
) -> AuthzRequest:
    tenant = str(ctx.pop("tenant", who.tenant_id))
    return request(who.ref, permission, resource, context(tenant, **ctx))  # type: ignore[arg-type]


NEVER: list[tuple[str, Relations, AuthzRequest, Reason]] = [
    # A dealer never tracks a car, nor opens, starts or sells it.
    (
        "dealer-location",
        relations(GRACE, owned_car()),
        _ask(GRACE, P.VEHICLE_READ_LOCATION),
        Reason.NO_LOCATION,
    ),
    (
        "dealer-unlock",
        relations(GRACE, owned_car()),
        _ask(GRACE, P.VEHICLE_UNLOCK),
        Reason.DEALER_LIMITS,
    ),
    (
        "dealer-transfer",
        relations(GRACE, owned_car()),
        _ask(GRACE, P.VEHICLE_TRANSFER),
        Reason.DEALER_LIMITS,
    ),
    # Platform staff never command (separation of duties) and never see location.
    (
        "support-command",
        relations(HEIDI, owned_car()),
        _ask(HEIDI, P.VEHICLE_LOCK),
        Reason.SEPARATION_OF_DUTIES,
    ),
    (
        "support-location",
        relations(HEIDI, owned_car()),
        _ask(HEIDI, P.VEHICLE_READ_TRIPS),
        Reason.NO_LOCATION,
    ),
    (
        "engineer-location",
        relations(KEN, owned_car()),
        _ask(KEN, P.VEHICLE_READ_LOCATION),
        Reason.NO_LOCATION,
    ),
    (
        "admin-immobilize",
        relations(JUDY, owned_car()),
        _ask(JUDY, P.VEHICLE_IMMOBILIZE),
        Reason.SEPARATION_OF_DUTIES,
    ),
    # Applications only read.
    (
        "partner-command",
        relations(APP, owned_car()),
        _ask(APP, P.VEHICLE_UNLOCK),
        Reason.READ_ONLY_CLIENT,
    ),
    (
        "partner-transfer",
        relations(APP, owned_car()),
        _ask(APP, P.VEHICLE_TRANSFER),
        Reason.READ_ONLY_CLIENT,
    ),
    # A client's token for another tenant (confused deputy).
    (
        "client-other-tenant",
        relations(APP, owned_car()),
        _ask(APP, P.VEHICLE_READ_STATUS, tenant=CONSUMER),
        Reason.TOKEN_TENANT_MISMATCH,
    ),
    # Fleet isolation: other tenants' cars, groups and members.
    (
        "fleet-foreign-car",
        relations(ERIN, OTHER_FLEET_CAR),
        _ask(ERIN, P.VEHICLE_READ_STATUS, ResourceRef.vehicle("veh_other")),
        Reason.TENANT_MISMATCH,
    ),
    (
        "consumer-fleet-car",
        relations(ALICE_FACTS, FLEET_CAR),
        _ask(ALICE_FACTS, P.VEHICLE_READ_STATUS, ResourceRef.vehicle("veh_fleet")),
        Reason.TENANT_MISMATCH,
    ),
    (
        "fleet-foreign-group",
        relations(ERIN, objects=[ObjectFacts(FOREIGN_GROUP, OTHER_FLEET)]),
        _ask(ERIN, P.FLEET_MANAGE_GROUPS, FOREIGN_GROUP),
        Reason.TENANT_MISMATCH_FLEET,
    ),
    (
        "fleet-foreign-members",
        relations(ERIN, objects=[ObjectFacts(FOREIGN_TENANT, OTHER_FLEET, TenantKind.FLEET)]),
        _ask(ERIN, P.FLEET_MANAGE_MEMBERS, FOREIGN_TENANT),
        Reason.TENANT_MISMATCH_OWN_FLEET,
    ),
    # An operator never immobilises in bulk.
    (
        "bulk-immobilize",
        relations(FRANK, objects=[ObjectFacts(NORTH, FLEET)]),
        _ask(FRANK, P.FLEET_BULK_COMMAND, NORTH, command=P.VEHICLE_IMMOBILIZE),
        Reason.NO_BULK_IMMOBILIZE,
    ),
    # Step-up and region bars hold for anyone.
    (
        "unlock-password-only",
        relations(ALICE_FACTS, owned_car()),
        _ask(ALICE_FACTS, P.VEHICLE_UNLOCK, acr=Acr.PASSWORD.value),
        Reason.STEP_UP_REQUIRED,
    ),
    (
        "transfer-password-only",
        relations(ALICE_FACTS, owned_car()),
        _ask(ALICE_FACTS, P.VEHICLE_TRANSFER, acr=Acr.PASSWORD.value),
        Reason.STEP_UP_REQUIRED,
    ),
    (
        "bulk-stale",
        relations(ERIN, objects=[ObjectFacts(NORTH, FLEET)]),
        _ask(
            ERIN, P.FLEET_BULK_COMMAND, NORTH, command=P.VEHICLE_LOCK, auth_age=timedelta(hours=1)
        ),
        Reason.STEP_UP_REQUIRED,
    ),
    (
        "region",
        relations(ALICE_FACTS, EU_CAR),
        _ask(ALICE_FACTS, P.VEHICLE_REMOTE_START),
        Reason.REGION_BARRED,
    ),
]


@pytest.mark.parametrize(("case", "world", "ask", "reason"), NEVER, ids=[c[0] for c in NEVER])
async def test_never_holds_against_a_permit_all_mistake(
    case: str, world: Relations, ask: AuthzRequest, reason: Reason
) -> None:
    config = PdpConfig(barred_regions={P.VEHICLE_REMOTE_START: frozenset({"EU"})})
    # Without the forbids, the mistake would allow the request...
    unguarded = CedarPdp(FakeSource(world), policy=WITHOUT_FORBIDS, config=config)
    assert (await unguarded.decide(ask)).allowed
    # ...with them, the forbid refuses it and is named.
    mistaken = CedarPdp(FakeSource(world), policy=PERMIT_ALL, config=config)
    decision = await mistaken.decide(ask)
    assert (decision.allowed, decision.reason) == (False, reason)
    assert decision.policy_ids[0] == reason.value


async def test_owner_gets_exactly_the_owner_permissions() -> None:
    pdp = CedarPdp(FakeSource(relations(ALICE_FACTS, owned_car())))
    allowed = {
        p
        for p in P
        if p.value.startswith("vehicle:") and (await pdp.decide(request(ALICE, p))).allowed
    }
    assert allowed == OWNER_PERMISSIONS


async def test_driver_gets_at_most_the_delegable_permissions() -> None:
    # The stored delegation was tampered with to hold every permission there is.
    bob = PrincipalRef(PrincipalKind.USER, "usr_bob")
    bob_facts = person(bob.id, CONSUMER, TenantKind.CONSUMER, Role.CUSTOMER)
    car = owned_car(delegation=grant(bob.id, frozenset(P)))
    pdp = CedarPdp(FakeSource(relations(bob_facts, car)))
    allowed = {
        p
        for p in P
        if p.value.startswith("vehicle:") and (await pdp.decide(request(bob, p))).allowed
    }
    assert allowed == DELEGABLE_PERMISSIONS
    # Someone else's delegation grants bob nothing.
    theirs = owned_car(delegation=grant("usr_carol", frozenset(P)))
    pdp = CedarPdp(FakeSource(relations(bob_facts, theirs)))
    assert not (await pdp.decide(request(bob, P.VEHICLE_LOCK))).allowed


async def test_partner_gets_at_most_the_consentable_permissions() -> None:
    car = owned_car(consent=grant(PARTNER, frozenset(P)))
    pdp = CedarPdp(FakeSource(relations(APP, car)))
    allowed = {
        p
        for p in P
        if p.value.startswith("vehicle:")
        and (await pdp.decide(request(APP.ref, p, ctx=context(PARTNER)))).allowed
    }
    assert allowed == CONSENTABLE_PERMISSIONS
    # Another partner's consent grants nothing.
    pdp = CedarPdp(FakeSource(relations(APP, owned_car(consent=grant("ten_rival", frozenset(P))))))
    assert not (
        await pdp.decide(request(APP.ref, P.VEHICLE_READ_STATUS, ctx=context(PARTNER)))
    ).allowed


async def test_grant_windows_are_checked_by_the_policy_too() -> None:
    # Entities that (wrongly) carry an expired delegation still do not allow.
    bob = PrincipalRef(PrincipalKind.USER, "usr_bob")
    bob_facts = person(bob.id, CONSUMER, TenantKind.CONSUMER, Role.CUSTOMER)
    live = grant(bob.id, frozenset({P.VEHICLE_LOCK}))
    pdp = CedarPdp(FakeSource(relations(bob_facts, owned_car(delegation=live))))
    assert (await pdp.decide(request(bob, P.VEHICLE_LOCK))).allowed
    for window in (
        (live.valid_from - timedelta(days=3), live.valid_from - timedelta(days=2)),  # ended
        (live.valid_until, live.valid_until + timedelta(days=1)),  # not started
    ):
        stale = replace(live, valid_from=window[0], valid_until=window[1])
        pdp = CedarPdp(FakeSource(relations(bob_facts, owned_car(delegation=stale))))
        decision = await pdp.decide(request(bob, P.VEHICLE_LOCK))
        assert (decision.allowed, decision.reason) == (False, Reason.NO_RELATIONSHIP)


async def test_grant_windows_are_half_open_in_the_policy() -> None:
    # A window is [valid_from, valid_until): at valid_until, a delegation or a consent that
    # the entities (wrongly) still carry grants nothing; at valid_from it does.
    bob = PrincipalRef(PrincipalKind.USER, "usr_bob")
    bob_facts = person(bob.id, CONSUMER, TenantKind.CONSUMER, Role.CUSTOMER)
    now = context().now
    for start, end, allowed in (
        (now - timedelta(days=1), now, False),
        (now, now + timedelta(days=1), True),
    ):
        delegation = replace(
            grant(bob.id, frozenset({P.VEHICLE_LOCK})), valid_from=start, valid_until=end
        )
        pdp = CedarPdp(FakeSource(relations(bob_facts, owned_car(delegation=delegation))))
        assert (await pdp.decide(request(bob, P.VEHICLE_LOCK))).allowed is allowed
        consent = replace(
            grant(PARTNER, frozenset({P.VEHICLE_READ_STATUS})), valid_from=start, valid_until=end
        )
        pdp = CedarPdp(FakeSource(relations(APP, owned_car(consent=consent))))
        ask = request(APP.ref, P.VEHICLE_READ_STATUS, ctx=context(PARTNER))
        assert (await pdp.decide(ask)).allowed is allowed


HOSTILE_IDS = [
    'veh_x" || true || "',
    'veh_"; permit (principal, action, resource); //',
    "veh_\n\u202e\u0000",
    'Fleetward::Vehicle::"veh_car"',
    "",
    "x" * 10_000,
]


@pytest.mark.parametrize("vehicle_id", HOSTILE_IDS)
async def test_hostile_ids_are_data(vehicle_id: str) -> None:
    # An attacker-chosen id is matched exactly: never parsed as policy or as another id.
    mine = owned_car(vehicle_id=vehicle_id)
    pdp = CedarPdp(FakeSource(relations(ALICE_FACTS, mine, owned_car(owner="usr_mallory"))))
    own = await pdp.decide(request(ALICE, P.VEHICLE_READ_STATUS, ResourceRef.vehicle(vehicle_id)))
    other = await pdp.decide(request(ALICE, P.VEHICLE_READ_STATUS, CAR))
    assert (own.allowed, own.reason) == (True, Reason.OWNER)
    assert (other.allowed, other.reason) == (False, Reason.NO_RELATIONSHIP)


def test_scopes_module_is_the_only_scope_rule() -> None:
    # The PDP's pre-check is the scopes module's (one rule, also held by the policy).
    from fleetward.authz import scopes

    assert pdp_module.in_scope is scopes.in_scope
    assert scopes.permissions_in({*EVERY_SCOPE, "openid", "vehicle:*"}) == frozenset(P)


@pytest.mark.parametrize(
    ("car_region", "request_region", "allowed"),
    [
        ("EU", None, False),  # the car's market is barred; where the request comes from is unknown
        ("NA", "EU", False),  # the request comes from a barred region
        ("EU", "NA", False),
        ("NA", None, True),  # the request's region is left out of the context
        ("NA", "NA", True),
    ],
)
async def test_a_region_bar_holds_by_the_cars_region_and_the_requests(
    car_region: str, request_region: str | None, allowed: bool
) -> None:
    config = PdpConfig(barred_regions={P.VEHICLE_REMOTE_START: frozenset({"EU"})})
    pdp = CedarPdp(FakeSource(relations(ALICE_FACTS, owned_car(region=car_region))), config=config)
    decision = await pdp.decide(_ask(ALICE_FACTS, P.VEHICLE_REMOTE_START, region=request_region))
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason is Reason.REGION_BARRED
    # Another action, with no barred region at all, is not touched by the bar.
    other = await pdp.decide(_ask(ALICE_FACTS, P.VEHICLE_LOCK, region=request_region))
    assert other.allowed
