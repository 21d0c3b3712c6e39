"""The remote-command suites: the platform runs on the running clock (real time from the seed
instant, plus what a test adds: deadlines and freshness behave as in production), and
``world`` is the default command world (ALICE-1 connected; a suite needing other cars
overrides it). Here, not in ``tests/conftest.py``: the other suites keep the frozen clock."""

from __future__ import annotations

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
