"""The store on both backends: migrations, UTC times, the unit of work, invariants in SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as postgresql_dialect
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as sqlite_dialect
from sqlalchemy.exc import IntegrityError, StatementError

from fleetward.identity.models import Tenant, TenantKind
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.store.base import UtcDateTime
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


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 0, 0, 1, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
        None,
    ],
)
def test_sqlite_times_bind_as_the_documented_way_would(value: datetime | None) -> None:
    """UtcDateTime's own SQLite processor stores the text that process_bind_param and the
    DATETIME type's processor store."""
    dialect = sqlite_dialect()
    column = UtcDateTime()
    fast = column.bind_processor(dialect)
    assert fast is not None
    naive = column.process_bind_param(value, dialect)
    standard = column.impl_instance.dialect_impl(dialect).bind_processor(dialect)
    assert standard is not None
    assert fast(value) == standard(naive)
    assert column.bind_processor(postgresql_dialect()) is not fast


def test_sqlite_refuses_naive_times_before_storing_them() -> None:
    fast = UtcDateTime().bind_processor(sqlite_dialect())
    assert fast is not None
    with pytest.raises(ValueError, match="naive"):
        fast(datetime(2026, 5, 1, 12, 0))
    with pytest.raises(AttributeError):
        fast("2026-05-01 12:00:00")  # not a datetime: the documented way refuses it too


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
