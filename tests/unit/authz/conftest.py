"""Fixtures for the authorization tests (see kit.py for the world and its helpers)."""

from __future__ import annotations

import pytest

from fleetward.core.clock import FrozenClock
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from unit.authz.kit import World, build_world


@pytest.fixture
async def world(platform: Platform, ctx: ServiceContext, clock: FrozenClock) -> World:
    return await build_world(platform, ctx, clock)
