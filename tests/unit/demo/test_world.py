"""The demo world has every relationship the policy table needs, on both backends."""

from __future__ import annotations

import re

import pyotp
from sqlalchemy import func, select

from fleetward.authz.permissions import Permission
from fleetward.core.vin import parse_vin
from fleetward.demo.world import PEOPLE, reset_passwords, seed_demo_world
from fleetward.identity.credential_models import TotpFactor
from fleetward.identity.directory import Directory
from fleetward.identity.login.totp import TotpFactors, TotpVerdict
from fleetward.identity.models import Role, User
from fleetward.platform import Platform
from fleetward.vehicles.models import (
    CaseStatus,
    CaseTechnician,
    DealerCase,
    DriverDelegation,
    FleetGroup,
    GroupVehicle,
    OperatorAssignment,
    Ownership,
    SupportCase,
    Vehicle,
)
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.registry import VehicleRegistry


async def test_demo_world(platform: Platform) -> None:
    async with platform.services() as (uow, ctx):
        result = await seed_demo_world(ctx, platform.passwords, data_key=platform.identity.data_key)
        await uow.commit()
    assert result.created
    assert set(result.logins) == {name for name, _, _ in PEOPLE}
    # Passwords are generated, unique, and stored only as argon2id hashes.
    passwords = [login["password"] for login in result.logins.values()]
    assert len(set(passwords)) == len(passwords)
    # Everyone is enrolled in TOTP (high-risk people could not sign in otherwise); the
    # seeds are unique, and stored only encrypted.
    secrets = [login["totp_secret"] for login in result.logins.values()]
    assert len(set(secrets)) == len(PEOPLE)
    assert all(re.fullmatch(r"[A-Z2-7]{32}", secret) for secret in secrets)
    async with platform.services() as (uow, ctx):
        stored = list(await ctx.session.scalars(select(TotpFactor)))
        assert len(stored) == len(PEOPLE)
        assert not any(
            secret.encode() in row.encrypted_secret for secret in secrets for row in stored
        )
        alice = await Directory(ctx).user("alice")
        totp = TotpFactors(ctx, platform.identity.data_key)
        code = pyotp.TOTP(result.logins["alice"]["totp_secret"]).at(ctx.clock.now())
        assert await totp.verify(alice.id, code) is TotpVerdict.ACCEPTED

    async with platform.services() as (_uow, ctx):
        directory = Directory(ctx)
        users = {u.username: u for u in (await ctx.session.scalars(select(User))).all()}
        assert all(
            u.password_hash and u.password_hash.startswith("$argon2id$") for u in users.values()
        )
        assert platform.passwords.verify(
            users["alice"].password_hash or "", result.logins["alice"]["password"]
        )
        registry = VehicleRegistry(ctx)
        owners = OwnershipService(ctx)
        vehicles = {v.label: v for v in (await ctx.session.scalars(select(Vehicle))).all()}
        assert len(vehicles) == 10
        for vehicle in vehicles.values():
            parse_vin(vehicle.vin)  # every VIN is valid

        async def owner_of(label: str) -> str | None:
            own = await owners.current(await registry.by_label(label))
            return None if own is None else own.owner_user_id

        assert await owner_of("ALICE-1") == users["alice"].id
        assert await owner_of("DAVE-1") == users["dave"].id
        assert await owner_of("MALLORY-1") == users["mallory"].id
        # carol is the former owner of DAVE-1.
        history = (
            await ctx.session.scalars(
                select(Ownership).where(Ownership.vehicle_id == vehicles["DAVE-1"].id)
            )
        ).all()
        assert {(o.owner_user_id, o.ended_reason) for o in history} == {
            (users["carol"].id, "transferred"),
            (users["dave"].id, None),
        }
        # bob drives ALICE-1 for 7 days with status, climate and lock only.
        bob = (
            await ctx.session.scalars(
                select(DriverDelegation).where(DriverDelegation.driver_user_id == users["bob"].id)
            )
        ).one()
        assert bob.vehicle_id == vehicles["ALICE-1"].id
        assert set(bob.permissions) == {
            Permission.VEHICLE_READ_STATUS,
            Permission.VEHICLE_CLIMATE,
            Permission.VEHICLE_LOCK,
        }
        assert (bob.valid_until - bob.valid_from).days == 7
        # frank operates group north (N1..N3); south has S1..S2.
        groups = {g.name: g for g in (await ctx.session.scalars(select(FleetGroup))).all()}
        north_ids = set(
            (
                await ctx.session.scalars(
                    select(GroupVehicle.vehicle_id).where(
                        GroupVehicle.group_id == groups["north"].id
                    )
                )
            ).all()
        )
        assert north_ids == {vehicles[f"ACME-N{i}"].id for i in (1, 2, 3)}
        south_count = await ctx.session.scalar(
            select(func.count())
            .select_from(GroupVehicle)
            .where(GroupVehicle.group_id == groups["south"].id)
        )
        assert south_count == 2
        assignment = (await ctx.session.scalars(select(OperatorAssignment))).one()
        assert (assignment.user_id, assignment.group_id) == (users["frank"].id, groups["north"].id)
        # grace has an open case on ALICE-1, harry's case on DAVE-1 is closed.
        cases = {c.vehicle_id: c for c in (await ctx.session.scalars(select(DealerCase))).all()}
        assert cases[vehicles["ALICE-1"].id].status is CaseStatus.OPEN
        assert cases[vehicles["DAVE-1"].id].status is CaseStatus.CLOSED
        techs = {
            t.case_id: t.user_id for t in (await ctx.session.scalars(select(CaseTechnician))).all()
        }
        assert techs[cases[vehicles["ALICE-1"].id].id] == users["grace"].id
        assert techs[cases[vehicles["DAVE-1"].id].id] == users["harry"].id
        # heidi covers alice's account; ivan has no case.
        support = (await ctx.session.scalars(select(SupportCase))).one()
        assert (support.agent_user_id, support.subject_user_id) == (
            users["heidi"].id,
            users["alice"].id,
        )
        ops = await directory.tenant("fleetward-ops")
        assert await directory.active_roles(users["judy"], ops) == {Role.PLATFORM_ADMIN}
        assert await directory.active_roles(users["ken"], ops) == {Role.ENGINEER}
        assert await directory.active_roles(users["ivan"], ops) == {Role.SUPPORT_AGENT}


async def test_seeding_twice_changes_nothing(platform: Platform) -> None:
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        await uow.commit()
    async with platform.services() as (uow, ctx):
        again = await seed_demo_world(ctx, platform.passwords)
        await uow.commit()
        count = await ctx.session.scalar(select(func.count()).select_from(Vehicle))
    assert not again.created and again.logins == {}
    assert count == 10


async def test_lost_credentials_renew_passwords_and_totp(platform: Platform) -> None:
    # The old seeds were only in the lost file: new ones replace them, never add to them.
    key = platform.identity.data_key
    async with platform.services() as (uow, ctx):
        first = await seed_demo_world(ctx, platform.passwords, data_key=key)
        await uow.commit()
    async with platform.services() as (uow, ctx):
        renewed = await reset_passwords(ctx, platform.passwords, data_key=key)
        await uow.commit()
        count = await ctx.session.scalar(select(func.count()).select_from(TotpFactor))
    assert count == len(PEOPLE)
    for name, _, _ in PEOPLE:
        assert renewed[name]["totp_secret"] != first.logins[name]["totp_secret"]
        assert renewed[name]["password"] != first.logins[name]["password"]
