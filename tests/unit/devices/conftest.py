"""Fixtures for the device tests (see kit.py)."""

from __future__ import annotations

import pytest

from fleetward.platform import Platform
from fleetward.services import ServiceContext
from unit.devices.kit import DeviceWorld, build_device_world


@pytest.fixture
async def world(platform: Platform, ctx: ServiceContext) -> DeviceWorld:
    return await build_device_world(platform, ctx)
