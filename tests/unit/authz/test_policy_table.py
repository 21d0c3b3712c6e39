"""Every row of the policy table (docs/authorization.md), both ways, over the seeded demo world.

One test per row seeds the world once and asks all of the row's questions (seeding per case
would take minutes); a failure lists every case of the row that answered wrongly. Each case
carries a comment naming the threat or rule it covers. Runs on SQLite and PostgreSQL.

Targets: a vehicle label, ``tenant:<slug>``, ``group:<fleet>/<name>``, ``case:<vehicle
label>`` (its dealer case), ``account:<user>``, ``support-case:<agent>`` (their seeded
case), ``client:<client id>``, ``platform``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

import pytest

from fleetward.authz.decision import Obligation, Reason
from fleetward.authz.permissions import Permission
from fleetward.identity.acr import Acr
from unit.authz.kit import PARTNER_APP, WORKLOAD_APP, World

STATUS = Permission.VEHICLE_READ_STATUS
LOCATION = Permission.VEHICLE_READ_LOCATION
TRIPS = Permission.VEHICLE_READ_TRIPS
CHARGING = Permission.VEHICLE_READ_CHARGING
LOCK = Permission.VEHICLE_LOCK
UNLOCK = Permission.VEHICLE_UNLOCK
START = Permission.VEHICLE_REMOTE_START
CLIMATE = Permission.VEHICLE_CLIMATE
DIAG_READ = Permission.VEHICLE_DIAGNOSTICS_READ
DIAG_RUN = Permission.VEHICLE_DIAGNOSTICS_RUN
IMMOBILIZE = Permission.VEHICLE_IMMOBILIZE
DRIVERS = Permission.VEHICLE_MANAGE_DRIVERS
TRANSFER = Permission.VEHICLE_TRANSFER
GROUPS = Permission.FLEET_MANAGE_GROUPS
MEMBERS = Permission.FLEET_MANAGE_MEMBERS
BULK = Permission.FLEET_BULK_COMMAND
CASE = Permission.DEALER_MANAGE_CASE
ACCOUNT = Permission.SUPPORT_READ_ACCOUNT
SUPPORT_VEHICLE = Permission.SUPPORT_READ_VEHICLE
OTA = Permission.OTA_MANAGE_CAMPAIGN
TENANTS = Permission.ADMIN_MANAGE_TENANTS
CLIENTS = Permission.ADMIN_MANAGE_CLIENTS
ALERTS = Permission.ADMIN_READ_ALERTS
ACK_ALERTS = Permission.ADMIN_MANAGE_ALERTS

PWD = Acr.PASSWORD.value
STALE = timedelta(minutes=6)
NONE = Reason.NO_RELATIONSHIP
EVERY_SCOPE = frozenset(p.value for p in Permission)

ALLOWING = frozenset(
    {
        Reason.OWNER,
        Reason.DRIVER_DELEGATION,
        Reason.FLEET_ADMIN,
        Reason.FLEET_ADMIN_MANAGE,
        Reason.FLEET_ADMIN_GROUP,
        Reason.FLEET_OPERATOR,
        Reason.FLEET_OPERATOR_BULK,
        Reason.DEALER_CASE,
        Reason.DEALER_CASE_MANAGE,
        Reason.SUPPORT_CASE,
        Reason.PARTNER_CONSENT,
        Reason.PLATFORM_ADMIN,
        Reason.ENGINEER_OTA,
        Reason.ENGINEER_DIAGNOSTICS,
    }
)


class Case(NamedTuple):
    who: str
    permission: Permission
    target: str
    reason: Reason
    command: Permission | None = None
    acr: str = Acr.MFA.value
    auth_age: timedelta = timedelta(seconds=30)
    tenant: str | None = None  # the token's tenant, when not the principal's home
    scopes: frozenset[str] = EVERY_SCOPE
    obligation: Obligation | None = None

    @property
    def allowed(self) -> bool:
        return self.reason in ALLOWING

    def __str__(self) -> str:
        command = f" ({self.command.value})" if self.command else ""
        return f"{self.who} {self.permission.value}{command} on {self.target}"


ROWS: dict[str, list[Case]] = {
    "owner": [
        # the owner reads their own car
        Case("alice", STATUS, "ALICE-1", Reason.OWNER),
        # the owner sees where their car is
        Case("alice", LOCATION, "ALICE-1", Reason.OWNER),
        # the owner unlocks with a fresh MFA sign-in
        Case("alice", UNLOCK, "ALICE-1", Reason.OWNER),
        # the owner starts remotely with step-up
        Case("alice", START, "ALICE-1", Reason.OWNER),
        # the owner immobilises with step-up
        Case("alice", IMMOBILIZE, "ALICE-1", Reason.OWNER),
        # the owner manages drivers
        Case("alice", DRIVERS, "ALICE-1", Reason.OWNER),
        # the owner may sell
        Case("alice", TRANSFER, "ALICE-1", Reason.OWNER),
        # Step-up: a password alone, or an old sign-in, never opens a car (stolen session).
        # unlock with a password-only sign-in
        Case("alice", UNLOCK, "ALICE-1", Reason.STEP_UP_REQUIRED, acr=PWD),
        # unlock with a stale MFA sign-in
        Case("alice", UNLOCK, "ALICE-1", Reason.STEP_UP_REQUIRED, auth_age=STALE),
        # immobilise with an unknown acr
        Case("alice", IMMOBILIZE, "ALICE-1", Reason.STEP_UP_REQUIRED, acr="urn:evil:acr:mfa"),
        # a lock needs no step-up
        Case("alice", LOCK, "ALICE-1", Reason.OWNER, acr=PWD),
        # BOLA: knowing another car's id grants nothing (OWASP API1).
        # the attacker reads alice's car
        Case("mallory", STATUS, "ALICE-1", NONE),
        # the attacker starts alice's car
        Case("mallory", START, "ALICE-1", NONE),
        # the owner reads a stranger's car
        Case("alice", LOCATION, "MALLORY-1", NONE),
        # a consumer reaches into a fleet
        Case("alice", STATUS, "ACME-N1", Reason.TENANT_MISMATCH),
        # No step-up oracle: a stranger without step-up hears "no relationship", not "step up".
        # stranger unlock without step-up
        Case("mallory", UNLOCK, "ALICE-1", NONE, acr=PWD),
        # an id that does not exist
        Case("alice", STATUS, "unknown-vehicle", Reason.UNKNOWN_RESOURCE),
    ],
    "driver": [
        # a delegated read
        Case("bob", STATUS, "ALICE-1", Reason.DRIVER_DELEGATION),
        # a delegated command
        Case("bob", LOCK, "ALICE-1", Reason.DRIVER_DELEGATION),
        # a delegated climate
        Case("bob", CLIMATE, "ALICE-1", Reason.DRIVER_DELEGATION),
        # Only the delegated subset: a driver cannot widen their grant.
        # unlock was not delegated
        Case("bob", UNLOCK, "ALICE-1", NONE),
        # location was not delegated
        Case("bob", LOCATION, "ALICE-1", NONE),
        # a driver manages drivers (extend own window)
        Case("bob", DRIVERS, "ALICE-1", NONE),
        # a driver sells the car
        Case("bob", TRANSFER, "ALICE-1", NONE),
        # a driver on another car
        Case("bob", LOCK, "MALLORY-1", NONE),
    ],
    "former-owner": [
        # the buyer owns it now
        Case("dave", STATUS, "DAVE-1", Reason.OWNER),
        # the buyer reads its trips
        Case("dave", TRIPS, "DAVE-1", Reason.OWNER),
        # A sold car is not the seller's: no status, no history, no commands.
        # the seller reads status
        Case("carol", STATUS, "DAVE-1", Reason.FORMER_OWNER),
        # the seller reads trip history
        Case("carol", TRIPS, "DAVE-1", Reason.FORMER_OWNER),
        # the seller reads where it is
        Case("carol", LOCATION, "DAVE-1", Reason.FORMER_OWNER),
        # the seller unlocks it (no step-up oracle)
        Case("carol", UNLOCK, "DAVE-1", Reason.FORMER_OWNER, acr=PWD),
        # the seller unlocks it with step-up
        Case("carol", UNLOCK, "DAVE-1", Reason.FORMER_OWNER),
        # the seller sells it again
        Case("carol", TRANSFER, "DAVE-1", Reason.FORMER_OWNER),
    ],
    "fleet-admin": [
        # an admin reads a fleet car
        Case("erin", LOCATION, "ACME-S1", Reason.FLEET_ADMIN),
        # an admin unlocks with step-up
        Case("erin", UNLOCK, "ACME-N1", Reason.FLEET_ADMIN),
        # an admin manages members
        Case("erin", MEMBERS, "tenant:acme-logistics", Reason.FLEET_ADMIN_MANAGE),
        # an admin manages a group
        Case("erin", GROUPS, "group:acme-logistics/south", Reason.FLEET_ADMIN_GROUP),
        # an admin bulk-locks the fleet
        Case("erin", BULK, "tenant:acme-logistics", Reason.FLEET_ADMIN_MANAGE, command=LOCK),
        # an admin bulk-immobilises a group
        Case(
            "erin", BULK, "group:acme-logistics/north", Reason.FLEET_ADMIN_GROUP, command=IMMOBILIZE
        ),
        # Bulk commands reach many vehicles: they need step-up.
        # a bulk command on a stale sign-in
        Case(
            "erin",
            BULK,
            "tenant:acme-logistics",
            Reason.STEP_UP_REQUIRED,
            command=LOCK,
            auth_age=STALE,
        ),
        # Cross-tenant isolation: another fleet's cars, groups and members.
        # an admin reads another fleet's car
        Case("erin", STATUS, "GLOBEX-1", Reason.TENANT_MISMATCH),
        # an admin commands another fleet's car
        Case("gina", UNLOCK, "ACME-N1", Reason.TENANT_MISMATCH),
        # an admin manages another fleet's group
        Case("erin", GROUPS, "group:globex/main", Reason.TENANT_MISMATCH),
        # an admin manages another fleet's members
        Case("erin", MEMBERS, "tenant:globex", Reason.TENANT_MISMATCH),
        # an admin reads a consumer's car
        Case("erin", STATUS, "ALICE-1", Reason.TENANT_MISMATCH),
    ],
    "fleet-operator": [
        # an operator reads a car of their group
        Case("frank", STATUS, "ACME-N1", Reason.FLEET_OPERATOR),
        # an operator unlocks in their group
        Case("frank", UNLOCK, "ACME-N2", Reason.FLEET_OPERATOR),
        # an operator bulk-locks their group
        Case("frank", BULK, "group:acme-logistics/north", Reason.FLEET_OPERATOR_BULK, command=LOCK),
        # Other groups, bulk immobilise, member management, owner-level actions: never.
        # an operator reads another group's car
        Case("frank", STATUS, "ACME-S1", NONE),
        # an operator bulk-commands another group
        Case("frank", BULK, "group:acme-logistics/south", NONE, command=LOCK),
        # an operator bulk-immobilises
        Case(
            "frank",
            BULK,
            "group:acme-logistics/north",
            Reason.NO_BULK_IMMOBILIZE,
            command=IMMOBILIZE,
        ),
        # an operator manages members
        Case("frank", MEMBERS, "tenant:acme-logistics", NONE),
        # an operator manages groups
        Case("frank", GROUPS, "group:acme-logistics/north", NONE),
        # an operator sells a fleet car
        Case("frank", TRANSFER, "ACME-N1", NONE),
        # an operator reaches another fleet
        Case("frank", STATUS, "GLOBEX-1", Reason.TENANT_MISMATCH),
        # A bulk command needs the scope of the command it sends (scopes bound everything).
        # a bulk unlock without the unlock scope
        Case(
            "frank",
            BULK,
            "group:acme-logistics/north",
            Reason.SCOPE,
            command=UNLOCK,
            scopes=EVERY_SCOPE - {UNLOCK.value},
        ),
    ],
    "dealer-technician": [
        # a technician reads diagnostics in their open case
        Case("grace", DIAG_READ, "ALICE-1", Reason.DEALER_CASE),
        # a technician runs diagnostics
        Case("grace", DIAG_RUN, "ALICE-1", Reason.DEALER_CASE),
        # a technician reads status
        Case("grace", STATUS, "ALICE-1", Reason.DEALER_CASE),
        # a technician works the case
        Case("grace", CASE, "case:ALICE-1", Reason.DEALER_CASE_MANAGE),
        # Never location history, unlock/start, owner changes; nothing after the case closes.
        # a technician tracks the car
        Case("grace", LOCATION, "ALICE-1", NONE),
        # a technician reads trip history
        Case("grace", TRIPS, "ALICE-1", NONE),
        # a technician unlocks
        Case("grace", UNLOCK, "ALICE-1", NONE),
        # a technician starts the car
        Case("grace", START, "ALICE-1", NONE),
        # a technician reassigns the owner
        Case("grace", TRANSFER, "ALICE-1", NONE),
        # a closed case
        Case("harry", DIAG_READ, "DAVE-1", Reason.CASE_CLOSED),
        # a closed case's object
        Case("harry", CASE, "case:DAVE-1", Reason.CASE_CLOSED),
        # another technician's case
        Case("grace", DIAG_READ, "DAVE-1", NONE),
        # a car without a case
        Case("grace", STATUS, "MALLORY-1", NONE),
    ],
    "support-agent": [
        # an agent reads the account of their case
        Case("heidi", ACCOUNT, "account:alice", Reason.SUPPORT_CASE),
        # an agent reads a vehicle of that account
        Case("heidi", SUPPORT_VEHICLE, "ALICE-1", Reason.SUPPORT_CASE),
        # an agent reads its status
        Case("heidi", STATUS, "ALICE-1", Reason.SUPPORT_CASE),
        # an agent works under her case (each route under it asks the case first)
        Case("heidi", ACCOUNT, "support-case:heidi", Reason.SUPPORT_CASE),
        # ...and reads its vehicles' status under it
        Case("heidi", SUPPORT_VEHICLE, "support-case:heidi", Reason.SUPPORT_CASE),
        # BOLA: another agent walks to her case (a recorded denial, not a silent 404)
        Case("ivan", ACCOUNT, "support-case:heidi", NONE),
        # a technician reaches a support case
        Case("grace", ACCOUNT, "support-case:heidi", NONE),
        # the customer reaches the case about herself
        Case("alice", ACCOUNT, "support-case:heidi", NONE),
        # Read-only, no location, nothing outside the case (insider threat).
        # an agent locks the car
        Case("heidi", LOCK, "ALICE-1", NONE),
        # an agent tracks the car
        Case("heidi", LOCATION, "ALICE-1", NONE),
        # an agent browses another account
        Case("heidi", ACCOUNT, "account:bob", NONE),
        # an agent browses another car
        Case("heidi", SUPPORT_VEHICLE, "MALLORY-1", NONE),
        # an agent without a case
        Case("ivan", ACCOUNT, "account:alice", NONE),
        # an agent without a case reads status
        Case("ivan", STATUS, "ALICE-1", NONE),
    ],
    "partner-client": [
        # a consented read
        Case(
            PARTNER_APP,
            STATUS,
            "ALICE-1",
            Reason.PARTNER_CONSENT,
            obligation=Obligation.MINIMISE_FIELDS,
        ),
        # a consented data kind
        Case(
            PARTNER_APP,
            CHARGING,
            "ALICE-1",
            Reason.PARTNER_CONSENT,
            obligation=Obligation.MINIMISE_FIELDS,
        ),
        # Beyond the consent: other data kinds, commands, other cars.
        # an unconsented data kind
        Case(PARTNER_APP, LOCATION, "ALICE-1", NONE),
        # a partner commands the car
        Case(PARTNER_APP, LOCK, "ALICE-1", NONE),
        # a car without consent
        Case(PARTNER_APP, STATUS, "MALLORY-1", NONE),
        # a fleet car
        Case(PARTNER_APP, STATUS, "ACME-N1", NONE),
        # A client's token for another tenant (a confused deputy).
        # a partner token for another tenant
        Case(PARTNER_APP, STATUS, "ALICE-1", Reason.TOKEN_TENANT_MISMATCH, tenant="acme-logistics"),
        # A workload has no row in the table: it is granted nothing.
        # a workload reads its fleet's car
        Case(WORKLOAD_APP, STATUS, "ACME-N1", NONE),
        # a workload posing as a partner
        Case(WORKLOAD_APP, STATUS, "ALICE-1", NONE, tenant="insureco"),
    ],
    "platform-admin": [
        # an admin manages tenants
        Case("judy", TENANTS, "tenant:acme-logistics", Reason.PLATFORM_ADMIN),
        # an admin manages client registrations
        Case("judy", CLIENTS, "client:insureco-app", Reason.PLATFORM_ADMIN),
        # an admin reads detection alerts
        Case("judy", ALERTS, "platform", Reason.PLATFORM_ADMIN),
        # an admin acknowledges them
        Case("judy", ACK_ALERTS, "platform", Reason.PLATFORM_ADMIN),
        # Alerts name actors, vehicles and tokens: nobody else reads them.
        # an engineer reads alerts
        Case("ken", ALERTS, "platform", NONE),
        # a support agent reads alerts
        Case("heidi", ALERTS, "platform", NONE),
        # a support agent acknowledges an alert
        Case("heidi", ACK_ALERTS, "platform", NONE),
        # a fleet admin reads alerts (even about their own fleet)
        Case("erin", ALERTS, "platform", NONE),
        # a customer acknowledges an alert about themselves
        Case("mallory", ACK_ALERTS, "platform", NONE),
        # Separation of duties: no vehicle data, no commands.
        # an admin reads a car
        Case("judy", STATUS, "ALICE-1", NONE),
        # an admin unlocks a car
        Case("judy", UNLOCK, "ALICE-1", NONE),
        # an admin runs OTA
        Case("judy", OTA, "platform", NONE),
        # an admin reads an account
        Case("judy", ACCOUNT, "account:alice", NONE),
        # a customer manages tenants
        Case("alice", TENANTS, "tenant:consumer", NONE),
    ],
    "engineer": [
        # an engineer runs OTA campaigns
        Case("ken", OTA, "platform", Reason.ENGINEER_OTA),
        # an engineer reads pseudonymised diagnostics
        Case(
            "ken",
            DIAG_READ,
            "ALICE-1",
            Reason.ENGINEER_DIAGNOSTICS,
            obligation=Obligation.PSEUDONYMISE,
        ),
        # an engineer uses the function of reading reports across vehicles (on the platform)
        Case(
            "ken",
            DIAG_READ,
            "platform",
            Reason.ENGINEER_DIAGNOSTICS,
            obligation=Obligation.PSEUDONYMISE,
        ),
        # BFLA: other staff never use it, whatever the store holds
        # a platform admin reads diagnostics across vehicles
        Case("judy", DIAG_READ, "platform", NONE),
        # a support agent reads diagnostics across vehicles
        Case("heidi", DIAG_READ, "platform", NONE),
        # an owner's vehicle permission never reaches every vehicle's reports
        Case("alice", DIAG_READ, "platform", NONE),
        # a partner application reads diagnostics across vehicles
        Case(PARTNER_APP, DIAG_READ, "platform", NONE),
        # No personal data, no location, no commands.
        # an engineer tracks a car
        Case("ken", LOCATION, "ALICE-1", NONE),
        # an engineer reads trips
        Case("ken", TRIPS, "ALICE-1", NONE),
        # an engineer reads status
        Case("ken", STATUS, "ALICE-1", NONE),
        # an engineer reads an account
        Case("ken", ACCOUNT, "account:alice", NONE),
        # an engineer runs diagnostics on a car
        Case("ken", DIAG_RUN, "ALICE-1", NONE),
        # an engineer manages tenants
        Case("ken", TENANTS, "tenant:acme-logistics", NONE),
    ],
}


def test_every_row_is_tested_both_ways() -> None:
    for row, cases in ROWS.items():
        assert any(c.allowed for c in cases), f"{row}: no allowed case"
        assert any(not c.allowed for c in cases), f"{row}: no denied case"


@pytest.mark.parametrize("row", list(ROWS))
async def test_policy_row(world: World, row: str) -> None:
    wrong: list[str] = []
    for case in ROWS[row]:
        decision = await world.ask(
            case.who,
            case.permission,
            world.target(case.target),
            scopes=case.scopes,
            acr=case.acr,
            auth_age=case.auth_age,
            tenant_slug=case.tenant,
            command=case.command,
        )
        got = (decision.allowed, decision.reason)
        if got != (case.allowed, case.reason):
            wrong.append(f"{case}: expected {(case.allowed, case.reason)}, got {got}")
        expected_obligations = {case.obligation} if case.obligation else set()
        if decision.allowed and set(decision.obligations) != expected_obligations:
            wrong.append(f"{case}: obligations {set(decision.obligations)}")
        if decision.policy_version != world.pdp.policy_version:
            wrong.append(f"{case}: decision without the policy version")
    assert not wrong, "\n".join(wrong)
