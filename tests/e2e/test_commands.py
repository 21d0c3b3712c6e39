"""Remote commands end to end: the real server, the simulated vehicle over the WebSocket, real
tokens. Each case asserts the job's final state AND what the simulated vehicle did.

Cases are one comment each on the threat or behaviour they cover.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from conftest import T0
from fleetward.platform import Platform
from support.commands import CommandWorld, RunningClock, command_world


@pytest.fixture
def clock() -> RunningClock:
    return RunningClock(T0)


@pytest.fixture
async def world(
    platform: Platform, clock: RunningClock, free_port: int
) -> AsyncIterator[CommandWorld]:
    async with command_world(platform, clock, free_port) as running:
        yield running


async def reported(world: CommandWorld, label: str) -> None:
    """Wait until the car's state is in the store (its first message was accepted)."""
    car = world.cars[label]
    for _ in range(200):
        if car.driver.tally.replies.get("accepted", 0) >= 1:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the simulated car never reported")


async def test_alice_unlocks_her_car_and_watches_it_confirmed(world: CommandWorld) -> None:
    # The story: after step-up, alice unlocks ALICE-1 and the job is confirmed by
    # the car's own telemetry while the simulated lock state changes.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    assert car.vehicle.state.locked is True
    response = await world.command("alice", "ALICE-1", "unlock")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["state"] == "queued"
    assert [link["link"] for link in job["chain"]] == [
        "client",
        "user",
        "relationship",
        "role",
        "permission",
        "step_up",
        "region",
        "vehicle_state",
        "conflict",
        "quota",
    ]
    final = await world.settle("alice", "ALICE-1", job["id"])
    assert final["state"] == "confirmed", final
    assert [t["to_state"] for t in final["transitions"]] == [
        "requested",
        "authorized",
        "queued",
        "delivered",
        "executed",
        "confirmed",
    ]
    assert final["result_reason"] == "ok"
    assert {link["link"] for link in final["chain"]} >= {"command_service", "vehicle"}
    assert car.vehicle.state.locked is False
    assert car.acted() == 1


async def test_bob_cannot_unlock_alices_car(world: CommandWorld) -> None:
    # A driver outside the delegated set (bob may lock, not unlock): rejected at the
    # permission link, stored, and the car never hears of it.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    response = await world.command("bob", "ALICE-1", "unlock")
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["link"] == "permission" and problem["state"] == "rejected"
    job = await world.job("alice", "ALICE-1", problem["job_id"])
    assert job["state"] == "rejected" and job["rejected_link"] == "permission"
    await world.sweep()
    assert car.vehicle.state.locked is True
    assert car.acted() == 0
