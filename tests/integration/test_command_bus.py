"""Two replicas on one store and one Redis: a command created on one reaches a vehicle whose
session is on the other through the command bus (commands/bus.py), not through the sweep
(set to an hour here, so only the bus can deliver); the bus itself over the real Redis; and
a hint that names a connected vehicle with another vehicle's job seals nothing.

Redis is required (FLEETWARD_REQUIRE_SERVICES in CI)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from conftest import T0, require_service
from fleetward.app import build_app
from fleetward.commands import dispatch
from fleetward.commands.bus import Hint, new_origin
from fleetward.commands.redis_bus import RedisCommandBus
from fleetward.commands.runtime import commands_of
from fleetward.core.surfaces import Surface
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.store.engine import create_engine
from support.commands import CommandWorld, RunningClock, command_world, reported
from support.serve import served

REDIS_URL = os.environ.get("FLEETWARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, with Redis and a bus channel of this test's own (other tests'
    replicas never hear its hints)."""
    require_service("Redis", REDIS_URL)
    channel = f"fw:test:{secrets.token_hex(6)}"
    return Settings.model_validate(
        {**settings.model_dump(), "redis_url": REDIS_URL, "command_bus_channel": channel}
    )


@pytest.fixture
def clock() -> RunningClock:
    return RunningClock(T0)


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every dispatcher built from here on sweeps once an hour: a job queued on one replica
    reaches the other's vehicle within a test only through the bus."""

    config = dispatch.DispatchConfig

    def hourly() -> dispatch.DispatchConfig:
        return config(sweep_interval=timedelta(hours=1))

    monkeypatch.setattr(dispatch, "DispatchConfig", hourly)


@pytest.fixture
async def world(
    platform: Platform, clock: RunningClock, free_port: int, no_sweep: None
) -> AsyncIterator[CommandWorld]:
    # Replica B: serves the vehicles (ALICE-1 and ACME-N1 connect here).
    async with command_world(platform, clock, free_port, cars=("ALICE-1", "ACME-N1")) as running:
        yield running


@pytest.fixture
async def replica_a(
    platform: Platform, world: CommandWorld, clock: RunningClock
) -> AsyncIterator[httpx.AsyncClient]:
    """Replica A: the same settings, store and keys, its own process state (gateway, sessions,
    dispatcher), no vehicle connected to it."""
    url = platform.engine.url.render_as_string(hide_password=False)
    other = Platform.build(platform.settings, clock=clock, engine=create_engine(url))
    app = build_app(platform.settings, platform=other)
    async with (
        served(app) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        yield http


async def test_a_command_made_on_one_replica_reaches_a_car_connected_to_another(
    world: CommandWorld, replica_a: httpx.AsyncClient
) -> None:
    await reported(world, "ALICE-1")
    await _listening(world.platform.settings.command_bus_channel, replicas=2)
    car = world.cars["ALICE-1"]
    vehicle_id = world.vehicles["ALICE-1"].id
    response = await replica_a.post(
        f"/mobile/v1/vehicles/{vehicle_id}/commands/horn_lights",
        json={"parameters": {}},
        headers={
            "authorization": f"Bearer {world.token('alice')}",
            "idempotency-key": "across-replicas",
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    # Replica A holds no session of the car: the job waits, queued, for the replica that does.
    assert job["state"] == "queued"
    final = await world.settle("alice", "ALICE-1", job["id"], until={"executed"})
    assert final["state"] == "executed", final
    assert car.acted() == 1


async def _listening(channel: str, replicas: int) -> None:
    """Until ``replicas`` subscribers listen on ``channel`` (a hint published before a
    replica subscribed is not for it: publish/subscribe keeps nothing)."""
    redis = Redis.from_url(REDIS_URL)
    try:
        for _ in range(250):
            ((_name, count),) = await redis.pubsub_numsub(channel)
            if count >= replicas:
                return
            await asyncio.sleep(0.02)
    finally:
        await redis.aclose()
    raise AssertionError(f"fewer than {replicas} replicas listen on the command bus")


async def test_a_hint_naming_another_vehicles_job_seals_nothing(world: CommandWorld) -> None:
    # A hint is only where to look: a queued job of ACME-N1 named in a hint for ALICE-1
    # (both connected here) is never sealed for ALICE-1's session; it stays queued for its
    # own car (whose delivery the sweep, an hour away here, would make).
    await reported(world, "ALICE-1")
    await reported(world, "ACME-N1")
    await world.cars["ACME-N1"].offline()
    response = await world.command(
        "erin", "ACME-N1", "climate", {"cabin_celsius": 21}, key="fleet-car", surface=Surface.FLEET
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.json()["state"] == "queued"
    dispatcher = commands_of(world.app).dispatcher
    alice_car = world.vehicles["ALICE-1"].id
    dispatcher._on_hint(Hint(new_origin(), job_id, alice_car))
    sent = await dispatcher.deliver_pending(alice_car, job_id)
    assert sent == 0
    job = await world.job("erin", "ACME-N1", job_id, Surface.FLEET)
    assert job["state"] == "queued"
    assert world.cars["ALICE-1"].acted() == 0


@pytest.fixture
async def buses(settings: Settings) -> AsyncIterator[tuple[RedisCommandBus, RedisCommandBus]]:
    channel = settings.command_bus_channel
    first = RedisCommandBus.from_url(REDIS_URL, channel)
    second = RedisCommandBus.from_url(REDIS_URL, channel)
    yield first, second
    await first.stop()
    await second.stop()


async def _heard(hints: list[Hint], count: int) -> None:
    for _ in range(250):
        if len(hints) >= count:
            return
        await asyncio.sleep(0.02)


async def _subscribed(publish: Callable[[], None], hints: list[Hint]) -> None:
    """Publish until the listener hears one (a subscription starts asynchronously)."""
    for _ in range(100):
        publish()
        await _heard(hints, 1)
        if hints:
            return
    raise AssertionError("the bus never delivered a hint")


async def _quiet(hints: list[Hint]) -> None:
    """Until no more of the hints published while subscribing arrive."""
    seen = -1
    while seen != len(hints):
        seen = len(hints)
        await asyncio.sleep(0.1)


async def test_hints_reach_the_other_replicas_only(
    buses: tuple[RedisCommandBus, RedisCommandBus],
) -> None:
    first, second = buses
    heard_first: list[Hint] = []
    heard_second: list[Hint] = []
    await first.start(heard_first.append)
    await second.start(heard_second.append)
    job, car = "job_" + "a" * 26, "veh_" + "b" * 26
    await _subscribed(lambda: first.queued(car, job), heard_second)
    assert set(heard_second) == {Hint(first.origin, job, car)}
    # A replica never hears its own hints (it acted on them when it published them).
    assert heard_first == []


async def test_messages_that_are_not_hints_are_refused(
    buses: tuple[RedisCommandBus, RedisCommandBus], settings: Settings
) -> None:
    first, second = buses
    heard: list[Hint] = []
    await first.start(lambda _hint: None)
    await second.start(heard.append)
    job, car = "job_" + "c" * 26, "veh_" + "c" * 26
    await _subscribed(lambda: first.queued(car, job), heard)
    await _quiet(heard)
    heard.clear()
    refused = second.refused
    origin = b"0" * 16
    publisher = Redis.from_url(REDIS_URL)
    try:
        for junk in (
            b"x",
            b"q " + origin + b" job_" + b"c" * 26,  # without a vehicle
            b"q " + origin + b" veh_" + b"c" * 26 + b" job_" + b"c" * 26,  # ids swapped
            b"q " + origin + b" job_" + b"c" * 26 + b" veh_" + b"c" * 26 + b" extra",
            b"q " + b"z" * 16 + b" job_" + b"c" * 26 + b" veh_" + b"c" * 26,  # bad origin
            b"q " + origin + b" job_" + b"c" * 26 + b" veh_" + b"c" * 26 + b" " * 200,
        ):
            await publisher.publish(settings.command_bus_channel, junk)
        first.queued(car, job)  # a real one after them: when it arrives, they were all read
        await _heard(heard, 1)
    finally:
        await publisher.aclose()
    assert heard == [Hint(first.origin, job, car)]
    assert second.refused - refused == 6


async def test_replicas_sweeping_the_same_job_lose_nothing(
    world: CommandWorld, platform: Platform, clock: RunningClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every replica's sweep reads the same executed jobs. Here replica A confirms alice's lock
    # (its effect is in the car's telemetry) between replica B's read of it and B's commit:
    # B's commit fails (the job's state is its version) and B's pass runs once more, finding
    # the job confirmed. Before, B's whole pass raised and was lost (`commands.sweep_failed`),
    # every other settlement and confirmation in it with it.
    await reported(world, "ALICE-1")
    response = await world.command("alice", "ALICE-1", "lock", key="swept-twice")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert (await world.settle("alice", "ALICE-1", job_id, until={"executed"}))[
        "state"
    ] == "executed"
    car = world.cars["ALICE-1"]
    sent = car.driver.tally.replies.get("accepted", 0)
    for _ in range(200):  # two reports accepted after the answer: the effect is in the store
        if car.driver.tally.replies.get("accepted", 0) >= sent + 2:
            break
        await asyncio.sleep(0.05)
    url = platform.engine.url.render_as_string(hide_password=False)
    other = Platform.build(platform.settings, clock=clock, engine=create_engine(url))
    replica_a = commands_of(build_app(platform.settings, platform=other)).dispatcher
    replica_b = commands_of(world.app).dispatcher
    real = dispatch.confirm_effects
    passes: list[list[str]] = []

    async def a_sweeps_meanwhile(*args: Any, **kwargs: Any) -> list[str]:
        found = await real(*args, **kwargs)
        passes.append(found)
        if len(passes) == 1:  # B has read and moved the job, not yet committed: A sweeps
            await replica_a.sweep()
        return found

    monkeypatch.setattr(dispatch, "confirm_effects", a_sweeps_meanwhile)
    try:
        await replica_b.sweep()
    finally:
        await other.close()
    # B's first pass, A's, B's second (the job was A's by then).
    assert passes == [[job_id], [job_id], []]
    final = await world.job("alice", "ALICE-1", job_id)
    assert final["state"] == "confirmed"
    assert [t["to_state"] for t in final["transitions"]].count("confirmed") == 1
