"""Shared fixtures: settings in a temporary data dir, and a migrated store on each backend.

Store tests run on SQLite and on PostgreSQL. PostgreSQL is required when
FLEETWARD_REQUIRE_SERVICES is set (CI sets it): then an unreachable server fails the run.
Without it, a developer without PostgreSQL sees those cases skipped, loudly.

Each test gets a private store (a SQLite file in its tmp_path, or its own PostgreSQL
database) copied from a template the session migrated once (see support/stores.py); tests
marked ``fresh_migrations`` run the migrations on an empty store instead. Tests that seed the
demo world first thing (``api``, and the authorization tests' ``world``) get a copy of a
template in which the real seed already ran. Nothing is shared between tests, so the suite
runs in parallel (``make test`` uses pytest-xdist).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fleetward.authz import pdp
from fleetward.core.clock import FrozenClock
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.settings import Settings
from fleetward.store.engine import create_engine
from fleetward.store.migrate import upgrade
from fleetward.store.uow import UnitOfWork
from support.api import Api, running_api
from support.stores import DemoSeed, StoreTemplates, sqlite_url

POSTGRES_URL = os.environ.get(
    "FLEETWARD_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REQUIRE_SERVICES = bool(os.environ.get("FLEETWARD_REQUIRE_SERVICES"))
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
AUTHZ_TESTS = Path(__file__).parent / "unit" / "authz"


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
    # The clock is frozen, so quota buckets never refill: the request quotas are raised for
    # the suite (tests of the quotas themselves set their own).
    return Settings(
        data_dir=tmp_path / "var",
        password_hash_memory_kib=19_456,
        password_hash_time_cost=2,
        quota_user_per_minute=100_000,
        quota_tenant_per_minute=120_000,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgresql":
        require_service("PostgreSQL", POSTGRES_URL)
    return name


@pytest.fixture(scope="session", autouse=True)
def _policy_compiled_once() -> Iterator[None]:
    """Every Platform compiles the packaged Cedar policy (~0.35 s, often twice a test). The
    compiled policy is immutable (CedarPdp shares it between instances), so the session
    compiles each distinct policy text once; an invalid one still raises every time (errors
    are not cached), and tests calling ``compile_policy`` themselves get the real one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pdp, "compile_policy", functools.lru_cache(maxsize=16)(pdp.compile_policy))
        yield


@pytest.fixture(scope="session")
def store_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreTemplates]:
    templates = StoreTemplates(tmp_path_factory.mktemp("store-templates"), POSTGRES_URL)
    try:
        yield templates
    finally:
        templates.close()


def _demo_seed(
    request: pytest.FixtureRequest, settings: Settings, clock: FrozenClock
) -> DemoSeed | None:
    """The seed to start from: the demo world, for the tests that seed it before anything
    else (``api``; ``world`` in the authorization tests: build_world then finds it seeded,
    and adds only its clients). None for every other test: an empty migrated store."""
    names = request.fixturenames
    seeded = "api" in names or ("world" in names and AUTHZ_TESTS in request.node.path.parents)
    if not seeded or not isinstance(clock, FrozenClock):
        return None
    return DemoSeed.of(settings, clock.now())


@pytest.fixture
async def platform(
    request: pytest.FixtureRequest,
    backend: str,
    settings: Settings,
    clock: FrozenClock,
    tmp_path: Path,
    store_templates: StoreTemplates,
) -> AsyncIterator[Platform]:
    """A platform on a private, freshly migrated store of the requested backend."""
    fresh = request.node.get_closest_marker("fresh_migrations") is not None
    seed = None if fresh else _demo_seed(request, settings, clock)
    database = None
    if backend == "sqlite":
        path = tmp_path / "store.db"
        if not fresh:
            await store_templates.sqlite_store(path, seed, settings)
        engine = create_engine(sqlite_url(path))
    else:
        database = await store_templates.postgres_store(seed, settings, migrated=not fresh)
        engine = create_engine(store_templates.postgres_url(database))
    try:
        if fresh:
            await upgrade(engine)
        the_platform = Platform.build(settings, clock=clock, engine=engine)
        try:
            yield the_platform
        finally:
            await the_platform.close()
    finally:
        await engine.dispose()
        if database is not None:
            store_templates.drop_postgres(database)


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
