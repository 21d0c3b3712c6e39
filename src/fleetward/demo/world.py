"""Seeds the demo world (see docs/demo-world.md for the cast and what each one tests)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from fleetward.audit.recorder import Actor
from fleetward.authz.permissions import Permission
from fleetward.core.datakey import DataKey
from fleetward.core.vin import random_vin
from fleetward.demo.credentials import DemoLogin, generate_password
from fleetward.demo.history import seed_history
from fleetward.identity.directory import Directory
from fleetward.identity.login.totp import TotpFactors
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.identity.passwords import PasswordHasher
from fleetward.services import ServiceContext
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.registry import VehicleRegistry

SEEDER = Actor.system("demo-seed")

TENANTS: tuple[tuple[str, str, TenantKind], ...] = (
    ("consumer", "Fleetward consumers", TenantKind.CONSUMER),
    ("acme-logistics", "Acme Logistics", TenantKind.FLEET),
    ("globex", "Globex Corporation", TenantKind.FLEET),
    ("downtown-motors", "Downtown Motors", TenantKind.DEALER),
    ("insureco", "InsureCo", TenantKind.PARTNER),
    ("fleetward-ops", "Fleetward Operations", TenantKind.OPERATOR),
)

# username -> (tenant slug, role)
PEOPLE: tuple[tuple[str, str, Role], ...] = (
    ("alice", "consumer", Role.CUSTOMER),
    ("bob", "consumer", Role.CUSTOMER),
    ("carol", "consumer", Role.CUSTOMER),
    ("dave", "consumer", Role.CUSTOMER),
    ("mallory", "consumer", Role.CUSTOMER),
    ("erin", "acme-logistics", Role.FLEET_ADMIN),
    ("frank", "acme-logistics", Role.FLEET_OPERATOR),
    ("gina", "globex", Role.FLEET_ADMIN),
    ("grace", "downtown-motors", Role.DEALER_TECHNICIAN),
    ("harry", "downtown-motors", Role.DEALER_TECHNICIAN),
    ("heidi", "fleetward-ops", Role.SUPPORT_AGENT),
    ("ivan", "fleetward-ops", Role.SUPPORT_AGENT),
    ("judy", "fleetward-ops", Role.PLATFORM_ADMIN),
    ("ken", "fleetward-ops", Role.ENGINEER),
)

# label -> (tenant slug, model, region, WMI); North American WMIs carry a verified check digit.
VEHICLES: tuple[tuple[str, str, str, str, str], ...] = (
    ("ALICE-1", "consumer", "Fleetward Aurora", "NA", "1FW"),
    ("DAVE-1", "consumer", "Fleetward Aurora", "NA", "1FW"),
    ("MALLORY-1", "consumer", "Fleetward Comet", "EU", "WFW"),
    *((f"ACME-N{i}", "acme-logistics", "Fleetward Hauler", "NA", "1FV") for i in (1, 2, 3)),
    *((f"ACME-S{i}", "acme-logistics", "Fleetward Hauler", "NA", "1FV") for i in (1, 2)),
    *((f"GLOBEX-{i}", "globex", "Fleetward Courier", "EU", "WFV") for i in (1, 2)),
)

BOB_DELEGATION = (
    Permission.VEHICLE_READ_STATUS,
    Permission.VEHICLE_CLIMATE,
    Permission.VEHICLE_LOCK,
)


@dataclass(frozen=True, slots=True)
class SeedResult:
    created: bool
    logins: dict[str, DemoLogin]


async def is_seeded(ctx: ServiceContext) -> bool:
    return (
        await ctx.session.scalar(select(Tenant.id).where(Tenant.slug == "acme-logistics"))
        is not None
    )


async def _enrol_totp(
    ctx: ServiceContext, data_key: DataKey | None, user: User, login: DemoLogin
) -> None:
    # Every demo person gets TOTP, so the high-risk ones can sign in at all (they must use
    # a second factor) and everyone can try the second step. The seed goes only into the
    # 0600 credentials file, next to the password.
    if data_key is not None:
        login["totp_secret"] = await TotpFactors(ctx, data_key).enrol(user, actor=SEEDER)


async def reset_passwords(
    ctx: ServiceContext, hasher: PasswordHasher, *, data_key: DataKey | None = None
) -> dict[str, DemoLogin]:
    """New passwords (and TOTP seeds, given the data key) for the demo people.

    Used when the credentials file was lost: the old seeds were only in that file.
    """
    logins: dict[str, DemoLogin] = {}
    for username, tenant_slug, role in PEOPLE:
        user = await Directory(ctx).user(username)
        password = generate_password()
        user.password_hash = hasher.hash(password)
        logins[username] = {"password": password, "tenant": tenant_slug, "role": role.value}
        await _enrol_totp(ctx, data_key, user, logins[username])
    await ctx.session.flush()
    return logins


async def seed_demo_world(
    ctx: ServiceContext, hasher: PasswordHasher, *, data_key: DataKey | None = None
) -> SeedResult:
    """Create the demo world once; a second call changes nothing and reports created=False.

    With ``data_key`` (the platform's), every demo person is enrolled in TOTP and the
    returned logins carry ``totp_secret``.
    """
    if await is_seeded(ctx):
        return SeedResult(created=False, logins={})
    directory = Directory(ctx)
    tenants: dict[str, Tenant] = {}
    for slug, name, kind in TENANTS:
        tenants[slug] = await directory.create_tenant(slug, name, kind, actor=SEEDER)

    users: dict[str, User] = {}
    logins: dict[str, DemoLogin] = {}
    for username, tenant_slug, role in PEOPLE:
        password = generate_password()
        tenant = tenants[tenant_slug]
        user = await directory.create_user(
            username,
            username.capitalize(),
            tenant,
            password_hash=hasher.hash(password),
            actor=SEEDER,
        )
        await directory.grant_membership(user, tenant, role, actor=SEEDER)
        users[username] = user
        logins[username] = {"password": password, "tenant": tenant_slug, "role": role.value}
        await _enrol_totp(ctx, data_key, user, logins[username])

    rng = random.SystemRandom()
    registry = VehicleRegistry(ctx)
    vehicles: dict[str, Vehicle] = {}
    for label, tenant_slug, model, region, wmi in VEHICLES:
        vehicles[label] = await registry.register(
            random_vin(rng, wmi=wmi).value,
            label=label,
            model=model,
            region=region,
            tenant=tenants[tenant_slug],
            actor=SEEDER,
        )

    await _relationships(ctx, tenants, users, vehicles)
    await seed_history(ctx, vehicles)
    return SeedResult(created=True, logins=logins)


async def _relationships(
    ctx: ServiceContext,
    tenants: dict[str, Tenant],
    users: dict[str, User],
    vehicles: dict[str, Vehicle],
) -> None:
    now = ctx.clock.now()
    owners = OwnershipService(ctx)
    await owners.start(vehicles["ALICE-1"], users["alice"], actor=SEEDER)
    await owners.start(vehicles["MALLORY-1"], users["mallory"], actor=SEEDER)
    # carol owned DAVE-1 and sold it to dave: carol is the former owner.
    await owners.start(vehicles["DAVE-1"], users["carol"], actor=SEEDER)
    await owners.transfer(vehicles["DAVE-1"], users["carol"], users["dave"], actor=SEEDER)

    await DelegationService(ctx).delegate(
        vehicles["ALICE-1"],
        users["alice"],
        users["bob"],
        BOB_DELEGATION,
        valid_until=now + timedelta(days=7),
        actor=Actor.user(users["alice"].id),
    )

    fleets = FleetService(ctx)
    for fleet_slug, labels_by_group in (
        (
            "acme-logistics",
            {"north": ("ACME-N1", "ACME-N2", "ACME-N3"), "south": ("ACME-S1", "ACME-S2")},
        ),
        ("globex", {"main": ("GLOBEX-1", "GLOBEX-2")}),
    ):
        fleet = tenants[fleet_slug]
        for group_name, labels in labels_by_group.items():
            group = await fleets.create_group(fleet, group_name, actor=SEEDER)
            for label in labels:
                await fleets.add_vehicle(fleet, vehicles[label], actor=SEEDER)
                await fleets.add_to_group(group, vehicles[label], actor=SEEDER)
            if group_name == "north":
                await fleets.assign_operator(group, users["frank"], actor=SEEDER)

    cases = CaseService(ctx)
    dealer = tenants["downtown-motors"]
    open_case = await cases.open_dealer_case(
        dealer, vehicles["ALICE-1"], "annual service and TCU check", actor=SEEDER
    )
    await cases.assign_technician(open_case, users["grace"], actor=SEEDER)
    closed_case = await cases.open_dealer_case(
        dealer, vehicles["DAVE-1"], "brake recall", actor=SEEDER
    )
    await cases.assign_technician(closed_case, users["harry"], actor=SEEDER)
    await cases.close_dealer_case(closed_case, actor=SEEDER)
    await cases.open_support_case(
        users["heidi"], users["alice"], "cannot see charging history", actor=SEEDER
    )

    await ConsentService(ctx).grant(
        tenants["insureco"],
        vehicles["ALICE-1"],
        users["alice"],
        (Permission.VEHICLE_READ_STATUS, Permission.VEHICLE_READ_CHARGING),
        valid_until=now + timedelta(days=30),
        actor=Actor.user(users["alice"].id),
    )
