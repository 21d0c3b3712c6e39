"""Replicas share quarantine scores through Redis: a device sending bad frames through two
gateway processes is quarantined after one threshold's worth between them, not one each;
the decision is taken once; a Redis outage falls back to the process's own score (never more
lenient, never stopping ingestion) and logs no secret.

Needs Redis at FLEETWARD_TEST_REDIS_URL (default 127.0.0.1:6379/15): fails when
FLEETWARD_REQUIRE_SERVICES is set and Redis is unreachable, is skipped otherwise."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from structlog.testing import capture_logs

from conftest import require_service
from fleetward.gateway.telemetry_link import TelemetryLink
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.telemetry.errors import Status
from fleetward.telemetry.quarantine import DEFAULT_THRESHOLD, REASON_REPEATED, QuarantinePolicy
from fleetward.telemetry.shared_scores import DEFAULT_PREFIX, RedisScores
from unit.telemetry.conftest import RigFactory
from unit.telemetry.kit import Device, FakeDeviceStatus, FakeMonotonic, new_session
from unit.telemetry.test_quarantine import UNKNOWN

REDIS_URL = os.environ.get("FLEETWARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
WINDOW = timedelta(seconds=60)
BAD = Status.UNKNOWN_SIGNAL  # weight 1


class WallClock:
    """The replicas' shared wall clock (ms), moved by hand."""

    def __init__(self) -> None:
        self.ms = 1_780_000_000_000

    def __call__(self) -> int:
        return self.ms


@dataclasses.dataclass
class Replica:
    policy: QuarantinePolicy
    status: FakeDeviceStatus
    monotonic: FakeMonotonic

    async def bad(self, device_id: str, count: int) -> None:
        for _ in range(count):
            await self.policy.record(device_id, BAD)


@dataclasses.dataclass
class Shared:
    prefix: str
    admin: Redis
    wall: WallClock
    replicas: list[Replica] = dataclasses.field(default_factory=list)

    def replica(self, url: str = REDIS_URL) -> Replica:
        """One gateway process: its own connection pool, policy and status port."""
        status, monotonic = FakeDeviceStatus(), FakeMonotonic()
        scores = RedisScores(Redis.from_url(url), prefix=self.prefix)
        policy = QuarantinePolicy(
            status, window=WINDOW, monotonic=monotonic, shared=scores, wall_ms=self.wall
        )
        self.replicas.append(Replica(policy, status, monotonic))
        return self.replicas[-1]

    def advance(self, seconds: float) -> None:
        self.wall.ms += int(seconds * 1000)
        for replica in self.replicas:
            replica.monotonic.advance(seconds)


@pytest.fixture
async def shared() -> AsyncIterator[Shared]:
    require_service("Redis", REDIS_URL)
    prefix = f"fw:test:tq:{secrets.token_hex(4)}:"
    state = Shared(prefix, Redis.from_url(REDIS_URL), WallClock())
    try:
        yield state
    finally:
        for replica in state.replicas:
            await replica.policy.close()
        keys = [key async for key in state.admin.scan_iter(match=prefix + "*")]
        if keys:
            await state.admin.delete(*keys)
        await state.admin.aclose()


def device_id() -> str:
    return f"dev_{secrets.token_hex(8)}"


async def test_scores_from_two_replicas_add_up_to_a_quarantine(shared: Shared) -> None:
    a, b = shared.replica(), shared.replica()
    dev = device_id()
    await a.bad(dev, 5)
    await b.bad(dev, 4)
    assert (a.policy.reason(dev), b.policy.reason(dev)) == (None, None)

    await b.bad(dev, 1)  # the tenth between them: alone, each process would need ten

    assert b.policy.reason(dev) == REASON_REPEATED
    assert b.status.calls == [(dev, REASON_REPEATED)]
    # Decided once, by b: a learns it from the device's status flag, as for any quarantine.
    assert (a.policy.reason(dev), a.status.calls) == (None, [])
    assert await shared.admin.exists(shared.prefix + dev) == 0  # nothing left behind


async def test_concurrent_replicas_decide_the_quarantine_once(shared: Shared) -> None:
    replicas = [shared.replica() for _ in range(3)]
    dev = device_id()
    # Nine at once over three replicas (three each: no process alone is near the
    # threshold), then the tenth and a few more at once: exactly one replica decides.
    await asyncio.gather(*(r.bad(dev, 3) for r in replicas))
    assert all(r.policy.reason(dev) is None for r in replicas)
    await asyncio.gather(*(r.bad(dev, 1) for r in replicas))

    deciders = [r for r in replicas if r.policy.reason(dev) is not None]
    assert len(deciders) == 1
    assert [call for r in replicas for call in r.status.calls] == [(dev, REASON_REPEATED)]


async def test_the_shared_window_slides(shared: Shared) -> None:
    a, b = shared.replica(), shared.replica()
    dev = device_id()
    await a.bad(dev, 5)
    shared.advance(WINDOW.total_seconds())  # a's frames fall out of the window
    await b.bad(dev, 9)
    assert (a.policy.reason(dev), b.policy.reason(dev)) == (None, None)

    await a.bad(dev, 1)  # with b's nine inside the window

    assert a.policy.reason(dev) == REASON_REPEATED


async def test_the_shared_key_holds_less_than_a_threshold_and_expires(shared: Shared) -> None:
    a = shared.replica()
    dev = device_id()
    await a.bad(dev, DEFAULT_THRESHOLD - 1)
    key = shared.prefix + dev
    assert await shared.admin.zcard(key) == DEFAULT_THRESHOLD - 1
    assert 0 < await shared.admin.pttl(key) <= WINDOW.total_seconds() * 1000


async def test_a_release_clears_the_shared_score(shared: Shared) -> None:
    a, b = shared.replica(), shared.replica()
    dev = device_id()
    await a.bad(dev, 9)
    a.policy.release(dev)  # an operator cleared the flag: the device starts from nothing
    await a.policy.close()  # waits for the release to reach Redis

    await b.bad(dev, 1)

    assert b.policy.reason(dev) is None


async def test_redis_down_falls_back_to_the_process_score(shared: Shared) -> None:
    password = "s3cret-" + secrets.token_hex(4)
    down = shared.replica(url=f"redis://:{password}@127.0.0.1:1/0")
    dev = device_id()

    with capture_logs() as logs:
        await down.bad(dev, DEFAULT_THRESHOLD - 1)  # every call fails; ingestion goes on
        assert down.policy.reason(dev) is None
        await down.bad(dev, 1)

    # Never more lenient than one process alone: its own score quarantines the device.
    assert down.policy.reason(dev) == REASON_REPEATED
    assert down.status.calls == [(dev, REASON_REPEATED)]
    warnings = [log for log in logs if "not shared" in log["event"]]
    assert len(warnings) == 1  # once, not once per frame
    assert warnings[0]["log_level"] == "warning"
    assert password not in repr(logs) and "127.0.0.1:1" not in repr(logs)


# Through the real pipelines, wired by the gateway's TelemetryLink from the settings.


@pytest.fixture
def settings(settings: Settings) -> Settings:
    require_service("Redis", REDIS_URL)
    return settings.model_copy(update={"redis_url": SecretStr(REDIS_URL)})


async def test_two_gateway_pipelines_share_a_devices_score(
    platform: Platform, make_rig: RigFactory
) -> None:
    rig = await make_rig()  # the test world: a tenant and its vehicles
    links = [TelemetryLink(platform), TelemetryLink(platform)]
    device_id = f"dev_{secrets.token_hex(8)}"
    devices = [
        Device(session=new_session(device_id, rig.vehicle_id, rig.tenant_id), clock=rig.clock)
        for _ in links
    ]
    admin = Redis.from_url(REDIS_URL)
    try:
        for link in links:
            await link.start()
        for n in range(DEFAULT_THRESHOLD):
            link, dev = links[n % 2], devices[n % 2]  # one session on each replica
            reply = await dataclasses.replace(rig, pipeline=link.pipeline).send(
                dev, dev.frame(UNKNOWN)
            )
            assert reply.status is Status.UNKNOWN_SIGNAL

        reasons = [link.pipeline.stages.quarantine.reason(device_id) for link in links]
        assert reasons == [None, REASON_REPEATED]  # five on each, the second decided
    finally:
        for link in links:
            await link.stop()
        await admin.delete(DEFAULT_PREFIX + device_id)
        await admin.aclose()
