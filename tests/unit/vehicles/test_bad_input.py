"""Bad input is refused with a clear error and changes nothing (read back from the store).

Each case names the rule it protects. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from fleetward.authz.permissions import Permission
from fleetward.core.errors import FleetwardError
from fleetward.core.vin import InvalidVin
from fleetward.core.windows import InvalidWindow, OverlappingWindow
from fleetward.identity.directory import Directory
from fleetward.identity.errors import DuplicateName, InvalidName, RoleNotAllowed, UnknownTenant
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.services import ServiceContext
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.errors import (
    DelegationTooWide,
    DuplicateVin,
    NotCurrentOwner,
    RelationshipRefused,
    UnknownPermission,
)
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.models import FleetGroup, Vehicle
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.registry import VehicleRegistry
from support.factories import FACTORY, WorldFactory
from support.snapshot import snapshot


@dataclass
class Scene:
    ctx: ServiceContext
    consumer: Tenant
    fleet: Tenant
    other_fleet: Tenant
    partner: Tenant
    owner: User
    driver: User
    stranger: User
    car: Vehicle
    fleet_car: Vehicle
    other_group: FleetGroup


@pytest.fixture
async def scene(ctx: ServiceContext) -> Scene:
    world = WorldFactory(ctx)
    consumer = await world.tenant(TenantKind.CONSUMER)
    fleet = await world.tenant(TenantKind.FLEET)
    other_fleet = await world.tenant(TenantKind.FLEET)
    partner = await world.tenant(TenantKind.PARTNER)
    owner = await world.user(consumer)
    driver = await world.user(consumer)
    stranger = await world.user(consumer)
    car = await world.owned_vehicle(owner)
    fleet_car = await world.vehicle(fleet)
    await FleetService(ctx).add_vehicle(fleet, fleet_car, actor=FACTORY)
    await DelegationService(ctx).delegate(
        car,
        owner,
        driver,
        [Permission.VEHICLE_LOCK],
        valid_until=ctx.clock.now() + timedelta(days=3),
        actor=FACTORY,
    )
    other_group = await FleetService(ctx).create_group(other_fleet, "other", actor=FACTORY)
    return Scene(
        ctx,
        consumer,
        fleet,
        other_fleet,
        partner,
        owner,
        driver,
        stranger,
        car,
        fleet_car,
        other_group,
    )


Attempt = Callable[[Scene], Awaitable[object]]


def _register(vin: object) -> Attempt:
    async def attempt(s: Scene) -> object:
        return await VehicleRegistry(s.ctx).register(
            vin,
            label="X",
            model="X",
            region="NA",
            tenant=s.consumer,
            actor=FACTORY,  # type: ignore[arg-type]
        )

    return attempt


def _delegate(
    permissions: list[str],
    *,
    days: float = 1,
    start_days: float = 0,
    grantor: str = "owner",
    grantee: str = "stranger",
) -> Attempt:
    async def attempt(s: Scene) -> object:
        now = s.ctx.clock.now()
        return await DelegationService(s.ctx).delegate(
            s.car,
            getattr(s, grantor),
            getattr(s, grantee),
            permissions,
            valid_from=now + timedelta(days=start_days),
            valid_until=now + timedelta(days=start_days + days),
            actor=FACTORY,
        )

    return attempt


async def _unknown_tenant(s: Scene) -> object:
    return await Directory(s.ctx).tenant("no-such-tenant")


async def _transfer_by_non_owner(s: Scene) -> object:
    return await OwnershipService(s.ctx).transfer(s.car, s.stranger, s.driver, actor=FACTORY)


async def _transfer_by_driver(s: Scene) -> object:
    return await OwnershipService(s.ctx).transfer(s.car, s.driver, s.stranger, actor=FACTORY)


async def _transfer_to_self(s: Scene) -> object:
    return await OwnershipService(s.ctx).transfer(s.car, s.owner, s.owner, actor=FACTORY)


async def _duplicate_vin(s: Scene) -> object:
    return await _register(s.car.vin)(s)


async def _fleet_role_in_consumer_tenant(s: Scene) -> object:
    return await Directory(s.ctx).grant_membership(
        s.stranger, s.consumer, Role.FLEET_ADMIN, actor=FACTORY
    )


async def _overlapping_membership(s: Scene) -> object:
    return await Directory(s.ctx).grant_membership(
        s.owner, s.consumer, Role.CUSTOMER, actor=FACTORY
    )


async def _inverted_membership(s: Scene) -> object:
    now = s.ctx.clock.now()
    return await Directory(s.ctx).grant_membership(
        s.stranger,
        s.fleet,
        Role.FLEET_OPERATOR,
        valid_from=now + timedelta(days=2),
        valid_until=now + timedelta(days=1),
        actor=FACTORY,
    )


async def _group_with_other_fleets_vehicle(s: Scene) -> object:
    return await FleetService(s.ctx).add_to_group(s.other_group, s.fleet_car, actor=FACTORY)


async def _consumer_vehicle_into_fleet(s: Scene) -> object:
    return await FleetService(s.ctx).add_vehicle(s.fleet, s.car, actor=FACTORY)


async def _consent_with_command(s: Scene) -> object:
    return await ConsentService(s.ctx).grant(
        s.partner,
        s.car,
        s.owner,
        [Permission.VEHICLE_UNLOCK],
        valid_until=s.ctx.clock.now() + timedelta(days=1),
        actor=FACTORY,
    )


async def _consent_to_non_partner(s: Scene) -> object:
    return await ConsentService(s.ctx).grant(
        s.fleet,
        s.car,
        s.owner,
        [Permission.VEHICLE_READ_STATUS],
        valid_until=s.ctx.clock.now() + timedelta(days=1),
        actor=FACTORY,
    )


async def _consent_by_stranger(s: Scene) -> object:
    return await ConsentService(s.ctx).grant(
        s.partner,
        s.car,
        s.stranger,
        [Permission.VEHICLE_READ_STATUS],
        valid_until=s.ctx.clock.now() + timedelta(days=1),
        actor=FACTORY,
    )


async def _bad_username(s: Scene) -> object:
    return await Directory(s.ctx).create_user(
        "\uff41lice", "Look-alike", s.consumer, password_hash=None, actor=FACTORY
    )


async def _duplicate_tenant(s: Scene) -> object:
    return await Directory(s.ctx).create_tenant(
        s.fleet.slug, "Copy", TenantKind.FLEET, actor=FACTORY
    )


CASES: list[tuple[str, Attempt, type[FleetwardError], str | None]] = [
    # A VIN is the address of a physical car: malformed ones never enter the store.
    ("vin-too-short", _register("1FW"), InvalidVin, "length"),
    ("vin-lowercase", _register("1m8gdm9axkp042788"), InvalidVin, "lowercase"),
    ("vin-forbidden-letter", _register("1M8GDM9AXKP04278O"), InvalidVin, "forbidden-letter"),
    ("vin-bad-check-digit", _register("1M8GDM9A1KP042788"), InvalidVin, "check-digit"),
    ("vin-not-a-string", _register(None), InvalidVin, "not-a-string"),
    ("vin-duplicate", _duplicate_vin, DuplicateVin, None),
    # Unknown tenants are an error, never created on the fly.
    ("unknown-tenant", _unknown_tenant, UnknownTenant, "slug"),
    # Window abuse: inverted, back-dated, over-long and overlapping windows.
    ("delegation-inverted", _delegate(["vehicle:lock"], days=-1), InvalidWindow, "inverted"),
    (
        "delegation-back-dated",
        _delegate(["vehicle:lock"], start_days=-2),
        InvalidWindow,
        "back-dated",
    ),
    ("delegation-too-long", _delegate(["vehicle:lock"], days=400), InvalidWindow, "too-long"),
    (
        "delegation-too-far-ahead",
        _delegate(["vehicle:lock"], start_days=91),
        InvalidWindow,
        "too-far-ahead",
    ),
    (
        "delegation-overlapping",
        _delegate(["vehicle:climate"], grantee="driver"),
        OverlappingWindow,
        "delegation",
    ),
    ("membership-inverted", _inverted_membership, InvalidWindow, "inverted"),
    ("membership-overlapping", _overlapping_membership, OverlappingWindow, "membership"),
    # A delegation can never be wider than what an owner may hand out.
    (
        "delegation-manage-drivers",
        _delegate(["vehicle:manage_drivers"]),
        DelegationTooWide,
        "not-delegable",
    ),
    ("delegation-transfer", _delegate(["vehicle:transfer"]), DelegationTooWide, "not-delegable"),
    (
        "delegation-fleet-permission",
        _delegate(["fleet:bulk_command"]),
        DelegationTooWide,
        "not-delegable",
    ),
    ("delegation-unknown-permission", _delegate(["vehicle:everything"]), UnknownPermission, None),
    ("delegation-empty", _delegate([]), DelegationTooWide, "empty"),
    # Only the current owner grants: a driver cannot re-delegate, a stranger cannot either.
    ("delegation-by-driver", _delegate(["vehicle:lock"], grantor="driver"), NotCurrentOwner, None),
    (
        "delegation-to-self",
        _delegate(["vehicle:lock"], grantee="owner"),
        RelationshipRefused,
        "self",
    ),
    # Transfers: only the current owner sells, and not to themselves.
    ("transfer-by-stranger", _transfer_by_non_owner, NotCurrentOwner, None),
    ("transfer-by-driver", _transfer_by_driver, NotCurrentOwner, None),
    ("transfer-to-self", _transfer_to_self, RelationshipRefused, "self"),
    # Roles only exist in their tenant kind.
    ("fleet-role-in-consumer-tenant", _fleet_role_in_consumer_tenant, RoleNotAllowed, None),
    # Fleets never mix tenants.
    ("group-other-fleets-vehicle", _group_with_other_fleets_vehicle, RelationshipRefused, "fleet"),
    ("consumer-car-into-fleet", _consumer_vehicle_into_fleet, RelationshipRefused, "tenant"),
    # Partners get read scopes only, from the owner only, and only partner tenants.
    ("consent-command-scope", _consent_with_command, DelegationTooWide, "not-consentable"),
    ("consent-non-partner", _consent_to_non_partner, RelationshipRefused, "tenant"),
    ("consent-by-stranger", _consent_by_stranger, NotCurrentOwner, None),
    # Names are ASCII: a fullwidth look-alike of "alice" is refused.
    ("username-look-alike", _bad_username, InvalidName, "username"),
    ("tenant-duplicate", _duplicate_tenant, DuplicateName, "tenant"),
]


@pytest.mark.parametrize(("case", "attempt", "error", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_refused_and_store_unchanged(
    scene: Scene, case: str, attempt: Attempt, error: type[FleetwardError], reason: str | None
) -> None:
    before = await snapshot(scene.ctx.session)
    with pytest.raises(error) as raised:
        await attempt(scene)
    assert raised.value.status in {403, 404, 409, 422}
    if reason is not None:
        assert raised.value.reason == reason
    problem = raised.value.to_problem()
    assert problem["type"] == error.problem_type()
    assert await snapshot(scene.ctx.session) == before
