"""Replicas share the telemetry quotas through Redis, by lease: a device (or a fleet) whose
connections are spread over several gateway processes gets one budget between them, not one
each; admit() stays synchronous; a Redis outage falls back to each process's own buckets
(ingestion goes on) and logs no secret.

Needs Redis at FLEETWARD_TEST_REDIS_URL (default 127.0.0.1:6379/15): fails when
FLEETWARD_REQUIRE_SERVICES is set and Redis is unreachable, is skipped otherwise."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from structlog.testing import capture_logs

from conftest import require_service
from fleetward.abuse.redis_store import RedisQuotaStore
from fleetward.abuse.telemetry_leases import LeasedQuotas
from fleetward.core.clock import FrozenClock
from fleetward.gateway.session import DeviceSession
from fleetward.gateway.telemetry_link import TelemetryLink
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.telemetry.errors import Status
from fleetward.telemetry.leasing import LEASE_SCOPE
from fleetward.telemetry.pipeline import TelemetryPipeline
from fleetward.telemetry.quotas import Rate
from unit.telemetry.conftest import TEST_CONFIG, RigFactory
from unit.telemetry.kit import Device, FakeDeviceStatus, FakeMonotonic, new_session

REDIS_URL = os.environ.get("FLEETWARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
DEVICE = Rate(per_second=10, burst=100)  # a lease of 2, for 1 s
FLEET = Rate(per_second=1000, burst=10_000)


@dataclasses.dataclass
class Shared:
    prefix: str
    admin: Redis
    clock: FrozenClock  # frozen: the shared buckets never refill while a test runs
    monotonic: FakeMonotonic  # frozen: leases never expire while a test runs
    gates: list[LeasedQuotas] = dataclasses.field(default_factory=list)

    def gate(
        self, url: str = REDIS_URL, *, device: Rate = DEVICE, fleet: Rate = FLEET
    ) -> LeasedQuotas:
        """One gateway process's gate: its own connection pool."""
        store = RedisQuotaStore(Redis.from_url(url), prefix=self.prefix)
        gate = LeasedQuotas(store, self.clock, device=device, fleet=fleet, monotonic=self.monotonic)
        self.gates.append(gate)
        return gate


@pytest.fixture
async def shared() -> AsyncIterator[Shared]:
    require_service("Redis", REDIS_URL)
    prefix = f"fw:test:tquota:{secrets.token_hex(4)}:"
    state = Shared(
        prefix,
        Redis.from_url(REDIS_URL),
        FrozenClock(datetime(2026, 12, 1, tzinfo=UTC)),
        FakeMonotonic(),
    )
    try:
        yield state
    finally:
        for gate in state.gates:
            await gate.close()
        keys = [key async for key in state.admin.scan_iter(match=prefix + "*")]
        if keys:
            await state.admin.delete(*keys)
        await state.admin.aclose()


async def admit(gate: LeasedQuotas, session: DeviceSession) -> bool:
    """What the pipeline does: admit(), and on a missing lease wait for it and ask again."""
    verdict = gate.admit(session)
    if verdict.scope == LEASE_SCOPE:
        await gate.lease(session)
        verdict = gate.admit(session)
    return verdict.admitted


def sessions_of_one_device(count: int, tenant: str = "ten_q") -> list[DeviceSession]:
    device_id = f"dev_{secrets.token_hex(6)}"
    return [new_session(device_id, "veh_q", tenant) for _ in range(count)]


async def test_two_gateways_admit_no_more_than_one_device_budget(shared: Shared) -> None:
    gates = [shared.gate(), shared.gate()]
    sessions = sessions_of_one_device(2)  # one connection to each gateway
    admitted = 0
    for n in range(300):
        admitted += await admit(gates[n % 2], sessions[n % 2])
    # Never more than the burst; at most one lease (2) each left unspent, never returned.
    assert 100 - 2 * 2 <= admitted <= 100


async def test_concurrent_frames_on_three_gateways_share_the_budget(shared: Shared) -> None:
    gates = [shared.gate() for _ in range(3)]
    sessions = sessions_of_one_device(3)

    async def connection(n: int) -> int:
        return sum([await admit(gates[n % 3], sessions[n % 3]) for _ in range(20)])

    admitted = sum(await asyncio.gather(*(connection(n) for n in range(15))))  # 300 frames
    assert 100 - 3 * 2 <= admitted <= 100


async def test_a_fleet_spread_over_gateways_gets_one_fleet_budget(shared: Shared) -> None:
    tenant = f"ten_{secrets.token_hex(6)}"
    gates = [shared.gate(fleet=Rate(per_second=1, burst=40)) for _ in range(2)]  # leases of 1
    devices = [new_session(f"dev_{secrets.token_hex(6)}", "veh_q", tenant) for _ in range(10)]
    admitted = 0
    for n in range(100):  # ten devices, each well within its own budget
        admitted += await admit(gates[n % 2], devices[n % 10])
    assert 40 - 2 <= admitted <= 40


async def test_a_refused_device_is_refused_without_asking_redis_again(shared: Shared) -> None:
    gate = shared.gate(device=Rate(per_second=1, burst=4))
    (session,) = sessions_of_one_device(1)
    assert [await admit(gate, session) for _ in range(4)] == [True] * 4
    assert not await admit(gate, session)  # the shared bucket refused the next lease
    refused = gate.admit(session)
    # Refused here, with the shared bucket's retry time, until then: no lease to wait for.
    assert (refused.admitted, refused.scope, refused.retry_after_ms) == (False, "device", 1000)


async def test_admit_never_waits(shared: Shared) -> None:
    gate = shared.gate()
    (session,) = sessions_of_one_device(1)
    # A first frame finds no lease: admit() answers at once, the lease is drawn meanwhile.
    assert gate.admit(session).scope == LEASE_SCOPE
    await gate.lease(session)
    assert gate.admit(session).admitted


async def test_redis_down_counts_in_this_process(shared: Shared) -> None:
    password = "s3cret-" + secrets.token_hex(4)
    gate = shared.gate(f"redis://:{password}@127.0.0.1:1/0", device=Rate(1, 4))
    (session,) = sessions_of_one_device(1)
    with capture_logs() as logs:
        # Ingestion goes on, within this process's own budget (as without Redis).
        assert [await admit(gate, session) for _ in range(5)] == [True] * 4 + [False]
    warnings = [log for log in logs if "not shared" in log["event"]]
    assert len(warnings) == 1
    assert password not in repr(logs) and "127.0.0.1:1" not in repr(logs)


def test_a_rate_that_cannot_be_shared_is_refused(shared: Shared) -> None:
    with pytest.raises(ValueError, match="whole"):
        shared.gate(device=Rate(per_second=3, burst=10))  # 3.33 s: not whole seconds


# Through the real pipelines.


async def test_two_pipelines_share_a_devices_quota(
    make_rig: RigFactory, platform: Platform, clock: FrozenClock
) -> None:
    require_service("Redis", REDIS_URL)
    rig = await make_rig()
    prefix = f"fw:test:tquota:{secrets.token_hex(4)}:"
    monotonic = FakeMonotonic()
    pipelines = [
        TelemetryPipeline.build(
            platform.engine,
            clock,
            FakeDeviceStatus(),
            config=TEST_CONFIG,  # device: a burst of 4
            monotonic=monotonic,
            quotas=LeasedQuotas(
                RedisQuotaStore(Redis.from_url(REDIS_URL), prefix=prefix),
                clock,
                device=TEST_CONFIG.device_rate,
                fleet=TEST_CONFIG.fleet_rate,
                monotonic=monotonic,
            ),
        )
        for _ in range(2)
    ]
    device_id = f"dev_{secrets.token_hex(6)}"
    devices = [
        Device(session=new_session(device_id, rig.vehicle_id, rig.tenant_id), clock=clock)
        for _ in pipelines
    ]
    admin = Redis.from_url(REDIS_URL)
    try:
        for pipeline in pipelines:
            await pipeline.start()
        statuses = []
        for n in range(8):  # alternately through each gateway
            dev, pipeline = devices[n % 2], pipelines[n % 2]
            reply = await dataclasses.replace(rig, pipeline=pipeline).send(dev, dev.frame())
            statuses.append(reply.status)
        # Alone, each gateway would have accepted four: eight in all.
        assert statuses.count(Status.ACCEPTED) == 4
        assert statuses.count(Status.QUOTA_EXCEEDED) == 4
    finally:
        for pipeline in pipelines:
            await pipeline.stop()
        keys = [key async for key in admin.scan_iter(match=prefix + "*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    require_service("Redis", REDIS_URL)
    return settings.model_copy(update={"redis_url": SecretStr(REDIS_URL)})


async def test_the_gateway_shares_quotas_when_redis_is_configured(platform: Platform) -> None:
    link = TelemetryLink(platform)
    await link.start()
    try:
        assert isinstance(link.pipeline.stages.quotas, LeasedQuotas)
    finally:
        await link.stop()
