"""The demo history and the history window (fleetward.vehicles.history.history_since) over
it: who may see how far back, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from fleetward.authz.permissions import Permission
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.demo.history import HOMES
from fleetward.identity.tokens import AccessTokenClaims
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.history import history_since
from fleetward.vehicles.records import ChargingSession, DiagnosticReport, Trip
from unit.authz.kit import ALL_SCOPES, HOME, PARTNER_APP, World, build_world


@pytest.fixture
async def world(platform: Platform, ctx: ServiceContext, clock: FrozenClock) -> World:
    return await build_world(platform, ctx, clock)


def _claims(
    platform: Platform, world: World, who: str, tenant: str | None = None
) -> AccessTokenClaims:
    partner = who == PARTNER_APP
    return platform.identity.tokens.issue(
        subject=PARTNER_APP if partner else world.users[who].id,
        client_id=PARTNER_APP if partner else "cli_test",
        tenant=world.tenants[tenant or HOME[who]].id,
        surface=Surface.PARTNER if partner else Surface.MOBILE,
        scopes=sorted(ALL_SCOPES),
        auth_time=world.clock.now(),
        acr="urn:fleetward:acr:mfa",
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="workload" if partner else "user",
    ).claims


async def test_the_seed_is_small_and_covers_the_cast(world: World) -> None:
    session = world.ctx.session
    for model in (Trip, ChargingSession, DiagnosticReport):
        by_vehicle = dict(
            (
                await session.execute(
                    select(model.vehicle_id, func.count()).group_by(model.vehicle_id)
                )
            ).all()
        )
        assert set(by_vehicle) == {world.vehicles[label].id for label in HOMES}
        assert all(1 <= n <= 5 for n in by_vehicle.values())
    # DAVE-1's trips all predate the sale: carol's, never dave's.
    dave_trips = await session.scalars(
        select(Trip.started_at).where(Trip.vehicle_id == world.vehicles["DAVE-1"].id)
    )
    assert all(at < world.clock.now() for at in dave_trips)


# (who, token tenant or None, vehicle, permission, expected start, why)
# "seed": the instant the world was seeded (every relationship starts then); None: nothing.
WINDOWS: list[tuple[str, str | None, str, Permission | None, str | None, str]] = [
    ("alice", None, "ALICE-1", None, "seed", "owner: since her ownership began"),
    ("dave", None, "DAVE-1", None, "seed", "buyer: since the sale, never before"),
    ("carol", None, "DAVE-1", None, None, "former owner: nothing"),
    ("mallory", None, "ALICE-1", None, None, "a stranger: nothing"),
    ("bob", None, "ALICE-1", Permission.VEHICLE_READ_STATUS, "seed", "driver: delegated"),
    ("bob", None, "ALICE-1", Permission.VEHICLE_READ_TRIPS, None, "driver: not delegated"),
    ("erin", None, "ACME-S1", None, "seed", "fleet admin: since it joined the fleet"),
    ("frank", None, "ACME-N1", None, "seed", "operator: since it joined the fleet"),
    ("gina", None, "ACME-N1", None, None, "another fleet: nothing"),
    ("erin", "globex", "GLOBEX-1", None, None, "a token for a tenant she is not in"),
    ("alice", "acme-logistics", "ALICE-1", None, None, "owner with another tenant's token"),
    ("grace", None, "ALICE-1", None, "seed", "technician on an open case: the keeper's"),
    ("harry", None, "DAVE-1", None, None, "technician after the case closed"),
    ("harry", None, "ALICE-1", None, None, "technician not assigned"),
    ("heidi", None, "ALICE-1", None, None, "support agent: no history"),
    ("ken", None, "ALICE-1", None, None, "engineer: no per-vehicle history"),
    (PARTNER_APP, None, "ALICE-1", Permission.VEHICLE_READ_CHARGING, "seed", "consented"),
    (PARTNER_APP, None, "ALICE-1", Permission.VEHICLE_READ_TRIPS, None, "not consented"),
    (PARTNER_APP, None, "MALLORY-1", None, None, "partner without consent"),
]


async def test_history_windows(platform: Platform, world: World) -> None:
    seeded = world.clock.now()
    world.clock.advance(timedelta(hours=1))
    wrong = []
    for who, tenant, label, permission, expected, why in WINDOWS:
        claims = _claims(platform, world, who, tenant)
        since = await history_since(
            world.ctx, claims, world.vehicles[label].id, permission=permission
        )
        want: datetime | None = seeded if expected == "seed" else None
        if since != want:
            wrong.append(f"{who} {label} {permission}: {since} ({why})")
    assert not wrong, "\n".join(wrong)


async def test_windows_end_with_the_relationship(platform: Platform, world: World) -> None:
    # A driver's window closes with the delegation; a partner's with the consent.
    world.clock.advance(timedelta(days=7, seconds=1))
    bob = _claims(platform, world, "bob")
    alice_car = world.vehicles["ALICE-1"].id
    assert await history_since(world.ctx, bob, alice_car) is None
    world.clock.advance(timedelta(days=30))
    partner = _claims(platform, world, PARTNER_APP)
    assert await history_since(world.ctx, partner, alice_car) is None
    alice = _claims(platform, world, "alice")
    assert await history_since(world.ctx, alice, alice_car) is not None
