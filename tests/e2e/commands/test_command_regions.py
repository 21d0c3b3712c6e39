"""A deployment may bar a command in a region (settings ``remote_start_barred_regions``): the
job is rejected at the region link, whoever asks, before anything else about the car."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetward.platform import Platform
from fleetward.settings import Settings
from support.commands import CommandWorld, RunningClock, command_world


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        password_hash_memory_kib=19_456,
        password_hash_time_cost=2,
        remote_start_barred_regions=["EU"],
    )


@pytest.fixture
async def world(
    platform: Platform, clock: RunningClock, free_port: int
) -> AsyncIterator[CommandWorld]:
    async with command_world(platform, clock, free_port, cars=()) as running:
        yield running


async def test_remote_start_is_barred_in_the_eu(world: CommandWorld) -> None:
    # MALLORY-1 is an EU car: its owner may not start it remotely in this deployment; the
    # same owner may still lock it (the bar is per command).
    barred = await world.command("mallory", "MALLORY-1", "remote_start", key="rs-1")
    assert barred.status_code == 403, barred.text
    assert (barred.json()["link"], barred.json()["reason"]) == ("region", "region-barred")
    allowed = await world.command("mallory", "MALLORY-1", "lock", key="l-1")
    assert allowed.status_code == 202, allowed.text
    # ALICE-1 is in North America: not barred (queued for a car that is not connected).
    elsewhere = await world.command("alice", "ALICE-1", "remote_start", key="rs-2")
    assert elsewhere.status_code == 202, elsewhere.text
