"""Access ends when the relationship ends: the same question, asked before and after.

Each test first proves the access exists (so the "after" denial is caused by the change, not
by a broken setup), changes the world through the real services, and asks again. Runs on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from fleetward.authz.decision import Reason
from fleetward.authz.entities import SessionRelations
from fleetward.authz.pdp import CedarPdp, PdpConfig
from fleetward.authz.permissions import Permission
from fleetward.identity.acr import Acr
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, TenantKind
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.models import (
    DriverDelegation,
    GroupVehicle,
    OperatorAssignment,
    PartnerConsent,
)
from fleetward.vehicles.ownership import OwnershipService
from unit.authz.kit import PARTNER_APP, SEEDER, World

STATUS = Permission.VEHICLE_READ_STATUS
LOCK = Permission.VEHICLE_LOCK


async def test_transfer_ends_everything_the_seller_had_and_granted(world: World) -> None:
    # The seeded sale: carol sold DAVE-1 and keeps nothing, history included.
    for permission in (STATUS, Permission.VEHICLE_READ_TRIPS, Permission.VEHICLE_UNLOCK):
        decision = await world.ask("carol", permission, "DAVE-1")
        assert (decision.allowed, decision.reason) == (False, Reason.FORMER_OWNER)
    # A sale now: alice sells ALICE-1 to carol.
    assert (await world.ask("alice", STATUS, "ALICE-1")).allowed
    assert (await world.ask("bob", LOCK, "ALICE-1")).allowed
    assert (await world.ask(PARTNER_APP, STATUS, "ALICE-1")).allowed
    await OwnershipService(world.ctx).transfer(
        world.vehicles["ALICE-1"], world.users["alice"], world.users["carol"], actor=SEEDER
    )
    seller = await world.ask("alice", STATUS, "ALICE-1")
    driver = await world.ask("bob", LOCK, "ALICE-1")
    partner = await world.ask(PARTNER_APP, STATUS, "ALICE-1")
    buyer = await world.ask("carol", Permission.VEHICLE_UNLOCK, "ALICE-1")
    assert (seller.allowed, seller.reason) == (False, Reason.FORMER_OWNER)
    # Every delegation and consent the seller granted ends with the sale.
    assert (driver.allowed, driver.reason) == (False, Reason.REVOKED)
    assert (partner.allowed, partner.reason) == (False, Reason.REVOKED)
    assert (buyer.allowed, buyer.reason) == (True, Reason.OWNER)


async def test_delegation_expiry(world: World) -> None:
    # bob's delegation lasts exactly 7 days from the seed.
    world.clock.advance(timedelta(days=7) - timedelta(seconds=1))
    assert (await world.ask("bob", LOCK, "ALICE-1")).allowed
    world.clock.advance(timedelta(seconds=1))
    decision = await world.ask("bob", LOCK, "ALICE-1")
    assert (decision.allowed, decision.reason) == (False, Reason.WINDOW_EXPIRED)
    # The owner is not affected.
    assert (await world.ask("alice", LOCK, "ALICE-1")).allowed


async def test_delegation_revocation(world: World) -> None:
    assert (await world.ask("bob", STATUS, "ALICE-1")).allowed
    delegation = await world.ctx.session.scalar(select(DriverDelegation))
    assert delegation is not None
    await DelegationService(world.ctx).revoke(delegation, actor=SEEDER)
    decision = await world.ask("bob", STATUS, "ALICE-1")
    assert (decision.allowed, decision.reason) == (False, Reason.REVOKED)


async def test_operator_unassignment(world: World) -> None:
    north = "group:acme-logistics/north"
    assert (await world.ask("frank", STATUS, "ACME-N1")).allowed
    assert (await world.ask("frank", Permission.FLEET_BULK_COMMAND, north, command=LOCK)).allowed
    assignment = await world.ctx.session.scalar(select(OperatorAssignment))
    assert assignment is not None
    await FleetService(world.ctx).unassign_operator(assignment, actor=SEEDER)
    vehicle = await world.ask("frank", STATUS, "ACME-N1")
    bulk = await world.ask("frank", Permission.FLEET_BULK_COMMAND, north, command=LOCK)
    assert (vehicle.allowed, vehicle.reason) == (False, Reason.UNASSIGNED)
    assert (bulk.allowed, bulk.reason) == (False, Reason.UNASSIGNED)
    # The fleet admin keeps the fleet.
    assert (await world.ask("erin", STATUS, "ACME-N1")).allowed


async def test_a_car_removed_from_a_group_leaves_its_operators(world: World) -> None:
    # Group membership has a window too: once ACME-N1 leaves north, frank (north's operator)
    # no longer reaches it, while the group's other cars and the fleet admin are unaffected.
    north = world.groups[("acme-logistics", "north")]
    assert (await world.ask("frank", STATUS, "ACME-N1")).allowed
    link = await world.ctx.session.scalar(
        select(GroupVehicle).where(
            GroupVehicle.group_id == north.id,
            GroupVehicle.vehicle_id == world.vehicles["ACME-N1"].id,
        )
    )
    assert link is not None
    await FleetService(world.ctx).remove_from_group(north, link, actor=SEEDER)
    decision = await world.ask("frank", STATUS, "ACME-N1")
    assert (decision.allowed, decision.reason) == (False, Reason.NO_RELATIONSHIP)
    assert (await world.ask("frank", STATUS, "ACME-N2")).allowed
    assert (await world.ask("erin", STATUS, "ACME-N1")).allowed


async def test_an_operator_rehired_does_not_get_old_groups_back(world: World) -> None:
    # An assignment never outlives the membership it was made under: an operator whose
    # contract ended and who is taken on again later starts with no group, not with every
    # group someone assigned them to in their previous membership.
    acme = world.tenants["acme-logistics"]
    directory = Directory(world.ctx)
    olga = await directory.create_user("olga", "Olga", acme, password_hash=None, actor=SEEDER)
    now = world.clock.now()
    await directory.grant_membership(
        olga, acme, Role.FLEET_OPERATOR, valid_until=now + timedelta(days=30), actor=SEEDER
    )
    world.users["olga"] = olga
    north = world.groups[("acme-logistics", "north")]
    await FleetService(world.ctx).assign_operator(north, olga, actor=SEEDER)
    asked = {"tenant_slug": "acme-logistics"}
    assert (await world.ask("olga", STATUS, "ACME-N1", **asked)).allowed
    world.clock.advance(timedelta(days=60))
    await directory.grant_membership(olga, acme, Role.FLEET_OPERATOR, actor=SEEDER)
    decision = await world.ask("olga", STATUS, "ACME-N1", **asked)
    assert (decision.allowed, decision.reason) == (False, Reason.UNASSIGNED)
    group = await world.ask(
        "olga", Permission.FLEET_READ_GROUPS, "group:acme-logistics/north", **asked
    )
    assert not group.allowed


async def test_an_operator_renewed_without_a_gap_keeps_their_groups(world: World) -> None:
    # The other side of the rehire rule: a membership renewed to begin the very instant the
    # old one ends is one unbroken tenure, so the groups assigned under the first membership
    # stay (a renewal is not a rehire, and an operator must not silently lose their fleet).
    acme = world.tenants["acme-logistics"]
    directory = Directory(world.ctx)
    olga = await directory.create_user("olga", "Olga", acme, password_hash=None, actor=SEEDER)
    now = world.clock.now()
    ends = now + timedelta(days=30)
    await directory.grant_membership(
        olga, acme, Role.FLEET_OPERATOR, valid_until=ends, actor=SEEDER
    )
    await directory.grant_membership(olga, acme, Role.FLEET_OPERATOR, valid_from=ends, actor=SEEDER)
    world.users["olga"] = olga
    north = world.groups[("acme-logistics", "north")]
    await FleetService(world.ctx).assign_operator(north, olga, actor=SEEDER)
    asked = {"tenant_slug": "acme-logistics"}
    assert (await world.ask("olga", STATUS, "ACME-N1", **asked)).allowed
    world.clock.advance(timedelta(days=31))
    decision = await world.ask("olga", STATUS, "ACME-N1", **asked)
    assert (decision.allowed, decision.reason) == (True, Reason.FLEET_OPERATOR)


async def test_dealer_case_closure(world: World) -> None:
    # harry's case was closed at seed time.
    closed = await world.ask("harry", Permission.VEHICLE_DIAGNOSTICS_READ, "DAVE-1")
    assert (closed.allowed, closed.reason) == (False, Reason.CASE_CLOSED)
    assert (await world.ask("grace", Permission.VEHICLE_DIAGNOSTICS_READ, "ALICE-1")).allowed
    await CaseService(world.ctx).close_dealer_case(world.dealer_cases["ALICE-1"], actor=SEEDER)
    for permission, target in (
        (Permission.VEHICLE_DIAGNOSTICS_READ, "ALICE-1"),
        (STATUS, "ALICE-1"),
        (Permission.DEALER_MANAGE_CASE, "case:ALICE-1"),
    ):
        decision = await world.ask("grace", permission, target)
        assert (decision.allowed, decision.reason) == (False, Reason.CASE_CLOSED), permission


async def test_a_technician_rehired_does_not_get_an_old_case_back(world: World) -> None:
    # The same for a dealer technician: the case link made in an ended membership stays
    # ended when the dealer takes them on again, though the case is still open.
    dealer = world.tenants["downtown-motors"]
    directory = Directory(world.ctx)
    tess = await directory.create_user("tess", "Tess", dealer, password_hash=None, actor=SEEDER)
    now = world.clock.now()
    await directory.grant_membership(
        tess, dealer, Role.DEALER_TECHNICIAN, valid_until=now + timedelta(days=30), actor=SEEDER
    )
    world.users["tess"] = tess
    await CaseService(world.ctx).assign_technician(
        world.dealer_cases["ALICE-1"], tess, actor=SEEDER
    )
    asked = {"tenant_slug": "downtown-motors"}
    diagnostics = Permission.VEHICLE_DIAGNOSTICS_READ
    assert (await world.ask("tess", diagnostics, "ALICE-1", **asked)).allowed
    world.clock.advance(timedelta(days=60))
    await directory.grant_membership(tess, dealer, Role.DEALER_TECHNICIAN, actor=SEEDER)
    for permission, target in (
        (diagnostics, "ALICE-1"),
        (Permission.DEALER_MANAGE_CASE, "case:ALICE-1"),
    ):
        decision = await world.ask("tess", permission, target, **asked)
        assert (decision.allowed, decision.reason) == (False, Reason.UNASSIGNED), permission
    # grace, on the case since her one membership began, keeps it.
    assert (await world.ask("grace", diagnostics, "ALICE-1")).allowed


async def test_a_support_agent_rehired_does_not_get_an_old_case_back(world: World) -> None:
    # The same for a support agent: a case assigned in an ended membership (left open when
    # the agent left the team) stays ended when the operator takes them on again; it would
    # otherwise reopen a customer's account and cars to someone no longer on the case.
    ops = world.tenants["fleetward-ops"]
    directory = Directory(world.ctx)
    sara = await directory.create_user("sara", "Sara", ops, password_hash=None, actor=SEEDER)
    now = world.clock.now()
    await directory.grant_membership(
        sara, ops, Role.SUPPORT_AGENT, valid_until=now + timedelta(days=30), actor=SEEDER
    )
    world.users["sara"] = sara
    await CaseService(world.ctx).open_support_case(
        sara, world.users["alice"], "cannot pair the app", actor=SEEDER
    )
    asked = {"tenant_slug": "fleetward-ops"}
    questions = (
        (Permission.SUPPORT_READ_ACCOUNT, "account:alice"),
        (Permission.SUPPORT_READ_VEHICLE, "ALICE-1"),
        (STATUS, "ALICE-1"),
    )
    for permission, target in questions:
        assert (await world.ask("sara", permission, target, **asked)).allowed, permission
    world.clock.advance(timedelta(days=60))
    await directory.grant_membership(sara, ops, Role.SUPPORT_AGENT, actor=SEEDER)
    for permission, target in questions:
        decision = await world.ask("sara", permission, target, **asked)
        assert (decision.allowed, decision.reason) == (False, Reason.UNASSIGNED), permission
    # heidi, on her case since her one membership began, keeps it.
    assert (await world.ask("heidi", Permission.SUPPORT_READ_ACCOUNT, "account:alice")).allowed


async def test_support_case_closure(world: World) -> None:
    assert (await world.ask("heidi", Permission.SUPPORT_READ_ACCOUNT, "account:alice")).allowed
    await CaseService(world.ctx).close_support_case(world.support_cases["heidi"], actor=SEEDER)
    account = await world.ask("heidi", Permission.SUPPORT_READ_ACCOUNT, "account:alice")
    vehicle = await world.ask("heidi", Permission.SUPPORT_READ_VEHICLE, "ALICE-1")
    case = await world.ask("heidi", Permission.SUPPORT_READ_ACCOUNT, "support-case:heidi")
    assert (account.allowed, account.reason) == (False, Reason.CASE_CLOSED)
    assert (vehicle.allowed, vehicle.reason) == (False, Reason.CASE_CLOSED)
    assert (case.allowed, case.reason) == (False, Reason.CASE_CLOSED)


async def test_a_support_case_naming_a_vehicle_ends_with_its_sale(world: World) -> None:
    # The case covers the car it names while its account owns it: after the sale the agent
    # reads nothing of the buyer's car, though the case (and the account) stays open.
    await CaseService(world.ctx).open_support_case(
        world.users["ivan"],
        world.users["alice"],
        "wrong car in the app",
        vehicle=world.vehicles["ALICE-1"],
        actor=SEEDER,
    )
    for permission in (Permission.SUPPORT_READ_VEHICLE, STATUS):
        assert (await world.ask("ivan", permission, "ALICE-1")).allowed, permission
    await OwnershipService(world.ctx).transfer(
        world.vehicles["ALICE-1"], world.users["alice"], world.users["carol"], actor=SEEDER
    )
    for permission in (Permission.SUPPORT_READ_VEHICLE, STATUS):
        decision = await world.ask("ivan", permission, "ALICE-1")
        assert (decision.allowed, decision.reason) == (False, Reason.NO_RELATIONSHIP), permission
    assert (await world.ask("ivan", Permission.SUPPORT_READ_ACCOUNT, "account:alice")).allowed


async def test_consent_revocation(world: World) -> None:
    assert (await world.ask(PARTNER_APP, STATUS, "ALICE-1")).allowed
    consent = await world.ctx.session.scalar(select(PartnerConsent))
    assert consent is not None
    await ConsentService(world.ctx).revoke(consent, actor=SEEDER)
    decision = await world.ask(PARTNER_APP, STATUS, "ALICE-1")
    assert (decision.allowed, decision.reason) == (False, Reason.REVOKED)


async def test_a_revocation_recorded_ahead_of_the_clock_is_final(world: World) -> None:
    # Revocation is final whenever it was recorded (docs/authorization.md): a revocation
    # written by a replica whose clock runs ahead (revoked_at later than this replica's now)
    # ends the delegation and the consent at once, not when this clock catches up.
    delegation = await world.ctx.session.scalar(select(DriverDelegation))
    consent = await world.ctx.session.scalar(select(PartnerConsent))
    assert delegation is not None and consent is not None
    world.clock.advance(timedelta(hours=1))
    assert (await world.ask("bob", STATUS, "ALICE-1")).allowed
    assert (await world.ask(PARTNER_APP, STATUS, "ALICE-1")).allowed
    await DelegationService(world.ctx).revoke(delegation, actor=SEEDER)
    await ConsentService(world.ctx).revoke(consent, actor=SEEDER)
    world.clock.advance(-timedelta(seconds=5))
    driver = await world.ask("bob", STATUS, "ALICE-1")
    partner = await world.ask(PARTNER_APP, STATUS, "ALICE-1")
    assert (driver.allowed, driver.reason) == (False, Reason.REVOKED)
    assert (partner.allowed, partner.reason) == (False, Reason.REVOKED)


async def test_a_consent_to_another_partner_grants_this_partner_nothing(world: World) -> None:
    # Consents are per partner tenant: mallory consents to a second insurer, not to
    # insureco; insureco's application still reads nothing of MALLORY-1 (and keeps
    # alice's consent to itself).
    directory = Directory(world.ctx)
    rival = await directory.create_tenant("rival-ins", "Rival", TenantKind.PARTNER, actor=SEEDER)
    mallory = world.users["mallory"]
    await ConsentService(world.ctx).grant(
        rival,
        world.vehicles["MALLORY-1"],
        mallory,
        (Permission.VEHICLE_READ_STATUS,),
        valid_until=world.clock.now() + timedelta(days=7),
        actor=SEEDER,
    )
    decision = await world.ask(PARTNER_APP, STATUS, "MALLORY-1")
    assert (decision.allowed, decision.reason) == (False, Reason.NO_RELATIONSHIP)
    assert (await world.ask(PARTNER_APP, STATUS, "ALICE-1")).allowed


async def test_consent_expiry(world: World) -> None:
    world.clock.advance(timedelta(days=30))
    decision = await world.ask(PARTNER_APP, STATUS, "ALICE-1")
    assert (decision.allowed, decision.reason) == (False, Reason.WINDOW_EXPIRED)


async def test_tenant_mismatch(world: World) -> None:
    # erin administers acme: globex's cars are out of reach, whichever way she asks.
    assert (await world.ask("erin", STATUS, "ACME-N1")).allowed
    decision = await world.ask("erin", STATUS, "GLOBEX-1")
    assert (decision.allowed, decision.reason) == (False, Reason.TENANT_MISMATCH)
    # A token naming globex, where erin holds no membership, is refused outright.
    forged = await world.ask("erin", STATUS, "GLOBEX-1", tenant_slug="globex")
    assert (forged.allowed, forged.reason) == (False, Reason.TOKEN_TENANT_MISMATCH)


async def test_a_technician_of_two_dealers_uses_each_dealers_cases_only_in_its_tenant(
    world: World,
) -> None:
    # Tenancy of dealer cases: grace also works for a second dealer, which has a case on
    # MALLORY-1 assigned to her. With her downtown-motors token she reaches only downtown's
    # cases; the other dealer's case counts only when she acts for that dealer.
    directory = Directory(world.ctx)
    other = await directory.create_tenant(
        "uptown-motors", "Uptown Motors", TenantKind.DEALER, actor=SEEDER
    )
    world.tenants["uptown-motors"] = other
    grace = world.users["grace"]
    await directory.grant_membership(grace, other, Role.DEALER_TECHNICIAN, actor=SEEDER)
    cases = CaseService(world.ctx)
    case = await cases.open_dealer_case(other, world.vehicles["MALLORY-1"], "tyres", actor=SEEDER)
    await cases.assign_technician(case, grace, actor=SEEDER)
    diagnostics = Permission.VEHICLE_DIAGNOSTICS_READ
    there = await world.ask("grace", diagnostics, "MALLORY-1", tenant_slug="uptown-motors")
    assert (there.allowed, there.reason) == (True, Reason.DEALER_CASE)
    here = await world.ask("grace", diagnostics, "MALLORY-1")
    assert (here.allowed, here.reason) == (False, Reason.NO_RELATIONSHIP)
    # Her own dealer's case is unaffected.
    assert (await world.ask("grace", diagnostics, "ALICE-1")).allowed


async def test_an_operator_of_two_fleets_holds_each_fleets_groups_only_in_its_tenant(
    world: World,
) -> None:
    # Tenancy of operator assignments: frank is also an operator of globex, assigned to its
    # main group. Acting for acme, the relations read for him name no globex group and link
    # no globex car to one (the tenant-mismatch forbids are not the only guard).
    directory = Directory(world.ctx)
    globex = world.tenants["globex"]
    frank = world.users["frank"]
    await directory.grant_membership(frank, globex, Role.FLEET_OPERATOR, actor=SEEDER)
    main = world.groups[("globex", "main")]
    await FleetService(world.ctx).assign_operator(main, frank, actor=SEEDER)
    there = await world.ask("frank", STATUS, "GLOBEX-1", tenant_slug="globex")
    assert (there.allowed, there.reason) == (True, Reason.FLEET_OPERATOR)
    ask = world.request("frank", STATUS, "GLOBEX-1")
    group = world.target("group:globex/main")
    relations = await SessionRelations(world.ctx.session).relations(
        ask.principal, ask.context, [ask.resource, group]
    )
    north = world.groups[("acme-logistics", "north")]
    assert relations.principal.operator_groups == frozenset({north.id})
    assert relations.vehicles[ask.resource.id].groups == frozenset()
    decision = await world.pdp.decide(ask)
    assert (decision.allowed, decision.reason) == (False, Reason.TENANT_MISMATCH)


async def test_step_up_missing_or_stale_for_unlock(world: World) -> None:
    fresh = await world.ask("alice", Permission.VEHICLE_UNLOCK, "ALICE-1")
    assert (fresh.allowed, fresh.reason) == (True, Reason.OWNER)
    for acr, age in (
        (Acr.PASSWORD.value, timedelta(seconds=30)),  # no second factor
        (Acr.MFA.value, timedelta(seconds=301)),  # a second factor, too long ago
        (Acr.MFA.value, timedelta(seconds=300, milliseconds=1)),  # by a millisecond
        (Acr.MFA.value, timedelta(seconds=-60)),  # a sign-in "from the future"
    ):
        decision = await world.ask(
            "alice", Permission.VEHICLE_UNLOCK, "ALICE-1", acr=acr, auth_age=age
        )
        assert (decision.allowed, decision.reason) == (False, Reason.STEP_UP_REQUIRED), (acr, age)
        assert decision.policy_ids == (Reason.STEP_UP_REQUIRED.value,)
    exactly = await world.ask(
        "alice", Permission.VEHICLE_UNLOCK, "ALICE-1", auth_age=timedelta(seconds=300)
    )
    assert exactly.allowed


async def test_region_bar(world: World) -> None:
    barred = CedarPdp(
        SessionRelations(world.ctx.session),
        config=PdpConfig(barred_regions={Permission.VEHICLE_REMOTE_START: frozenset({"EU"})}),
    )
    start = Permission.VEHICLE_REMOTE_START
    # MALLORY-1 is an EU car: remote start is barred there, for its own owner too.
    assert (await world.ask("mallory", start, "MALLORY-1")).allowed
    eu = await world.ask("mallory", start, "MALLORY-1", pdp=barred)
    assert (eu.allowed, eu.reason) == (False, Reason.REGION_BARRED)
    assert (await world.ask("mallory", LOCK, "MALLORY-1", pdp=barred)).allowed
    # ALICE-1 is in NA; a request coming from the EU is barred as well.
    assert (await world.ask("alice", start, "ALICE-1", pdp=barred)).allowed
    away = await world.ask("alice", start, "ALICE-1", pdp=barred, region="EU")
    assert (away.allowed, away.reason) == (False, Reason.REGION_BARRED)
    # No oracle: a stranger is not told that the car is in a barred region.
    stranger = await world.ask("alice", start, "MALLORY-1", pdp=barred)
    assert (stranger.allowed, stranger.reason) == (False, Reason.NO_RELATIONSHIP)
