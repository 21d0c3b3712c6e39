"""A rig per test: the real pipeline on the migrated test store (SQLite and PostgreSQL), a
tenant and two vehicles, a fake clock for quotas and a fake devices capability."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import timedelta

import pytest

from fleetward.core.clock import FrozenClock
from fleetward.identity.models import TenantKind
from fleetward.platform import Platform
from fleetward.telemetry.pipeline import TelemetryConfig, TelemetryPipeline
from fleetward.telemetry.quotas import Rate
from support.factories import WorldFactory
from unit.telemetry.kit import FakeDeviceStatus, FakeMonotonic, Rig

# Tight enough that the quota cases need only a few frames; other tests stay below them.
TEST_CONFIG = TelemetryConfig(
    device_rate=Rate(per_second=1, burst=4),
    fleet_rate=Rate(per_second=1, burst=6),
    batch_max_wait=0.002,
    clock_skew=timedelta(seconds=30),
    store_forward_max_age=timedelta(days=7),
)

RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(platform: Platform, clock: FrozenClock) -> AsyncIterator[RigFactory]:
    async with platform.services() as (uow, ctx):
        world = WorldFactory(ctx)
        tenant = await world.tenant(TenantKind.FLEET)
        vehicle = await world.vehicle(tenant)
        other = await world.vehicle(tenant)
        await uow.commit()
    started: list[TelemetryPipeline] = []

    async def build(
        config: TelemetryConfig = TEST_CONFIG,
        *,
        engine: object = None,
        already_quarantined: Iterable[str] = (),
    ) -> Rig:
        monotonic = FakeMonotonic()
        status = FakeDeviceStatus()
        pipeline = TelemetryPipeline.build(
            platform.engine if engine is None else engine,  # type: ignore[arg-type]
            clock,
            status,
            config=config,
            already_quarantined=already_quarantined,
            monotonic=monotonic,
        )
        await pipeline.start()
        started.append(pipeline)
        return Rig(
            platform=platform,
            pipeline=pipeline,
            clock=clock,
            monotonic=monotonic,
            status=status,
            vehicle_id=vehicle.id,
            tenant_id=tenant.id,
            other_vehicle_id=other.id,
        )

    yield build
    for pipeline in started:
        await pipeline.stop()


@pytest.fixture
async def rig(make_rig: RigFactory) -> Rig:
    return await make_rig()
