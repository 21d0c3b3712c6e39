"""The store on both backends: migrations, UTC times, the unit of work, invariants in SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, StatementError

from fleetward.identity.models import Tenant, TenantKind
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.store.migrate import current_revision, head_revision, upgrade
from fleetward.vehicles.models import Ownership
from support.factories import WorldFactory


async def test_migrated_to_head_and_idempotent(platform: Platform) -> None:
    assert await current_revision(platform.engine) == head_revision()
    await upgrade(platform.engine)  # running again is a no-op, not an error
    assert await current_revision(platform.engine) == head_revision()
    ready, reason = await platform.store_ready()
    assert (ready, reason) == (True, "ok")


async def test_times_round_trip_as_aware_utc(platform: Platform) -> None:
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2026, 5, 1, 14, 30, tzinfo=plus_two)
    async with platform.unit_of_work() as uow:
        uow.session.add(
            Tenant(
                id="ten_x",
                slug="t",
                name="T",
                kind=TenantKind.FLEET,
                created_at=created,
                disabled_at=None,
            )
        )
        await uow.commit()
    async with platform.unit_of_work() as uow:
        loaded = await uow.session.scalar(select(Tenant).where(Tenant.slug == "t"))
        assert loaded is not None
        assert loaded.created_at == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
        assert loaded.created_at.tzinfo == UTC


async def test_naive_datetime_is_refused(platform: Platform) -> None:
    async with platform.unit_of_work() as uow:
        uow.session.add(
            Tenant(
                id="ten_y",
                slug="u",
                name="U",
                kind=TenantKind.FLEET,
                created_at=datetime(2026, 5, 1, 12, 0),
                disabled_at=None,
            )
        )
        with pytest.raises(StatementError):
            await uow.flush()


async def test_uncommitted_unit_of_work_rolls_back(platform: Platform) -> None:
    async with platform.services() as (_uow, ctx):
        await WorldFactory(ctx).tenant(TenantKind.DEALER, slug="vanishing")
    async with platform.unit_of_work() as uow:
        found = await uow.session.scalar(select(Tenant).where(Tenant.slug == "vanishing"))
    assert found is None


async def test_error_inside_unit_of_work_rolls_back(platform: Platform) -> None:
    async def half_done() -> None:
        async with platform.services() as (_uow, ctx):
            await WorldFactory(ctx).tenant(TenantKind.DEALER, slug="half-done")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await half_done()
    async with platform.unit_of_work() as uow:
        assert await uow.session.scalar(select(Tenant).where(Tenant.slug == "half-done")) is None


async def test_database_refuses_two_open_ownerships(ctx: ServiceContext) -> None:
    # Defence in depth: even a buggy service cannot give a car two current owners.
    world = WorldFactory(ctx)
    consumers = await world.tenant(TenantKind.CONSUMER)
    first = await world.user(consumers)
    second = await world.user(consumers)
    car = await world.owned_vehicle(first)
    ctx.session.add(
        Ownership(
            id="own_dup",
            vehicle_id=car.id,
            owner_user_id=second.id,
            valid_from=ctx.clock.now(),
            valid_until=None,
            ended_reason=None,
        )
    )
    with pytest.raises(IntegrityError):
        await ctx.session.flush()


async def test_enum_check_constraint_in_database(ctx: ServiceContext) -> None:
    from sqlalchemy import text

    with pytest.raises(IntegrityError):
        await ctx.session.execute(
            text(
                "INSERT INTO tenants (id, slug, name, kind, created_at) "
                "VALUES ('ten_z', 'z', 'Z', 'galaxy', :now)"
            ),
            {"now": datetime(2026, 1, 1)},
        )
