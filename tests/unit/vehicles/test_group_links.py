"""A vehicle is in a group, and an operator assigned to it, once at a time.

The routes look for an open link before adding one; two requests at once can both look
before either writes (PostgreSQL, read committed). The store keeps one open link per
(group, vehicle) and per (group, operator): the second add is refused (409) and a later
removal ends the membership for good. Here the second add skips the routes' look, as the
second of two racing requests would. Both stores.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from fleetward.core.errors import Conflict
from fleetward.identity.directory import Directory
from fleetward.identity.errors import DuplicateName
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.models import FleetGroup, GroupVehicle, OperatorAssignment, Vehicle
from support.factories import FACTORY, WorldFactory


async def _fleet(ctx: ServiceContext) -> tuple[FleetGroup, Vehicle, User]:
    world = WorldFactory(ctx)
    fleet = await world.tenant(TenantKind.FLEET)
    car = await world.vehicle(fleet)
    await FleetService(ctx).add_vehicle(fleet, car, actor=FACTORY)
    group = await FleetService(ctx).create_group(fleet, "north", actor=FACTORY)
    operator = await world.user(fleet)
    await Directory(ctx).grant_membership(operator, fleet, Role.FLEET_OPERATOR, actor=FACTORY)
    return group, car, operator


async def test_a_vehicle_added_twice_at_once_is_in_the_group_once(
    ctx: ServiceContext, platform: Platform
) -> None:
    group, car, _operator = await _fleet(ctx)
    await FleetService(ctx).add_to_group(group, car, actor=FACTORY)
    await ctx.session.commit()
    group_id, car_id = group.id, car.id
    async with platform.services() as (_uow, other):
        again_group = await other.session.get(FleetGroup, group_id)
        again_car = await other.session.get(Vehicle, car_id)
        assert again_group is not None and again_car is not None
        with pytest.raises(Conflict) as refused:
            await FleetService(other).add_to_group(again_group, again_car, actor=FACTORY)
        assert refused.value.reason == "already-in-group"
    links = await ctx.session.scalar(
        select(func.count())
        .select_from(GroupVehicle)
        .where(GroupVehicle.group_id == group_id, GroupVehicle.valid_until.is_(None))
    )
    assert links == 1


async def test_an_operator_assigned_twice_at_once_is_assigned_once(
    ctx: ServiceContext, platform: Platform
) -> None:
    group, _car, operator = await _fleet(ctx)
    await FleetService(ctx).assign_operator(group, operator, actor=FACTORY)
    await ctx.session.commit()
    group_id, operator_id = group.id, operator.id
    async with platform.services() as (_uow, other):
        again_group = await other.session.get(FleetGroup, group_id)
        again_operator = await other.session.get(User, operator_id)
        assert again_group is not None and again_operator is not None
        with pytest.raises(Conflict) as refused:
            await FleetService(other).assign_operator(again_group, again_operator, actor=FACTORY)
        assert refused.value.reason == "assigned"
    open_assignments = await ctx.session.scalar(
        select(func.count())
        .select_from(OperatorAssignment)
        .where(OperatorAssignment.group_id == group_id, OperatorAssignment.valid_until.is_(None))
    )
    assert open_assignments == 1


async def test_a_group_name_taken_while_a_creation_looked_is_a_conflict(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two fleet admins create "north" at once: both look before either writes. The second
    # insert meets the store's unique (fleet, name): the same 409 as a name already taken,
    # never a store error (a 500 from POST /fleet/v1/groups), and one group stands.
    async with platform.services() as (uow, setup):
        fleet = await WorldFactory(setup).tenant(TenantKind.FLEET)
        await uow.commit()
        fleet_id = fleet.id
    async with platform.services() as (_uow, late):
        late_fleet = await late.session.get(Tenant, fleet_id)
        assert late_fleet is not None
        look = late.session.scalar

        async def look_then_lose_the_race(statement: Any, *args: Any, **kwargs: Any) -> Any:
            found = await look(statement, *args, **kwargs)
            async with platform.services() as (uow, early):
                early_fleet = await early.session.get(Tenant, fleet_id)
                assert early_fleet is not None
                await FleetService(early).create_group(early_fleet, "north", actor=FACTORY)
                await uow.commit()
            return found

        monkeypatch.setattr(late.session, "scalar", look_then_lose_the_race)
        with pytest.raises(DuplicateName) as refused:
            await FleetService(late).create_group(late_fleet, "north", actor=FACTORY)
        assert refused.value.reason == "group"
    async with platform.services() as (_uow, ctx):
        count = await ctx.session.scalar(
            select(func.count()).select_from(FleetGroup).where(FleetGroup.tenant_id == fleet_id)
        )
    assert count == 1
