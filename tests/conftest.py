"""Shared fixtures: settings in a temporary data dir, and a migrated store on each backend.

Store tests run on SQLite and on PostgreSQL. PostgreSQL is required when
FLEETWARD_REQUIRE_SERVICES is set (CI sets it): then an unreachable server fails the run.
Without it, a developer without PostgreSQL sees those cases skipped, loudly.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from fleetward.core.clock import FrozenClock
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.settings import Settings
from fleetward.store.engine import create_engine
from fleetward.store.migrate import upgrade
from fleetward.store.uow import UnitOfWork
from support.api import Api, running_api

POSTGRES_URL = os.environ.get(
    "FLEETWARD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVICES = bool(os.environ.get("FLEETWARD_REQUIRE_SERVICES"))
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def _reachable(url: str) -> bool:
    parts = urlsplit(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    if _reachable(url):
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{name} is required (FLEETWARD_REQUIRE_SERVICES) but unreachable")
    pytest.skip(f"{name} unreachable and FLEETWARD_REQUIRE_SERVICES unset")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The lowest argon2 cost the settings allow keeps tests fast without a test-only code path.
    return Settings(
        data_dir=tmp_path / "var",
        password_hash_memory_kib=19_456,
        password_hash_time_cost=2,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql":
        require_service("PostgreSQL", POSTGRES_URL)
    return name


@pytest.fixture
async def platform(
    backend: str, settings: Settings, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[Platform]:
    """A platform on a freshly migrated store of the requested backend."""
    if backend == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        schema = None
    else:
        schema = f"t_{secrets.token_hex(6)}"
        admin = create_engine(POSTGRES_URL)
        async with admin.begin() as connection:
            await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        await admin.dispose()
        engine = create_engine(POSTGRES_URL, schema=schema)
    await upgrade(engine)
    the_platform = Platform.build(settings, clock=clock, engine=engine)
    try:
        yield the_platform
    finally:
        await the_platform.close()
        if schema is not None:
            admin = create_engine(POSTGRES_URL)
            async with admin.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            await admin.dispose()


@pytest.fixture
async def ctx(platform: Platform) -> AsyncIterator[ServiceContext]:
    """A service context in an open unit of work (rolled back unless a test commits)."""
    async with platform.services() as (_uow, context):
        yield context


@pytest.fixture
async def uow(platform: Platform) -> AsyncIterator[UnitOfWork]:
    async with platform.unit_of_work() as unit:
        yield unit


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def api(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock, settings: Settings
) -> AsyncIterator[Api]:
    """The seeded demo world behind the real app (see support/api.py)."""
    async with running_api(platform, ctx, clock, settings) as running:
        yield running
