"""Store templates: migrate (and, for the demo world, seed) once per test session, copy per test.

Running the migrations costs ~0.3 s on SQLite and ~1.5 s on PostgreSQL, and seeding the demo
world ~1.5 s (fourteen argon2 hashes at the settings' floor): far more than most tests. So each
session (each xdist worker) builds a template once, with the real migrations and the real
seed, and every test gets its own copy of it:

- SQLite: a copy of the template file (checkpointed, so the file is the whole database);
- PostgreSQL: ``CREATE DATABASE <test> TEMPLATE <template>`` (a private database per test,
  dropped afterwards). The server's user needs CREATEDB (the ``postgres`` superuser of CI has).

Everything that talks to the PostgreSQL server outside a test's own event loop runs on one
background loop (a thread): the admin connection and the templates outlive the per-test loops.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fleetward.core.clock import FrozenClock
from fleetward.demo.world import seed_demo_world
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.store.engine import create_engine, sqlite_pragma
from fleetward.store.migrate import upgrade

T = TypeVar("T")
# Drops in flight at once; the admin pool keeps two more connections for creating databases.
_CONCURRENT_DROPS = 6


@dataclass(frozen=True, slots=True)
class DemoSeed:
    """What ``seed_demo_world`` depends on: the frozen time and the settings (minus the data
    directory, which the seed without a data key never reads). Equal seeds, equal templates."""

    now: datetime
    settings_json: str

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> DemoSeed:
        return cls(now, settings.model_dump_json(exclude={"data_dir"}))


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class _Background:
    """An event loop in a daemon thread, for work that outlives a test's own loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="store-templates", daemon=True
        )
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(self.submit(coro))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()


async def _seed(engine: AsyncEngine, settings: Settings, seed: DemoSeed) -> None:
    """The demo world exactly as ``build_world`` seeds it (no data key: no TOTP)."""
    platform = Platform.build(settings, clock=FrozenClock(seed.now), engine=engine)
    try:
        async with platform.services() as (uow, ctx):
            await seed_demo_world(ctx, platform.passwords)
            await uow.commit()
    finally:
        await platform.close()


class StoreTemplates:
    """Templates of one session, built on first use: migrated, and migrated + seeded."""

    def __init__(self, root: Path, postgres_url: str) -> None:
        self._root = root
        self._postgres_url = make_url(postgres_url)
        self._background: _Background | None = None
        self._admin: AsyncEngine | None = None
        self._sqlite: dict[DemoSeed | None, Path] = {}
        self._postgres: dict[DemoSeed | None, str] = {}
        self._prefix = f"fwtest_{secrets.token_hex(4)}"
        self._drops: list[Future[None]] = []
        self._drop_slots: asyncio.Semaphore | None = None

    # SQLite ---------------------------------------------------------------------------------

    async def sqlite_store(self, path: Path, seed: DemoSeed | None, settings: Settings) -> None:
        """Copy the template for ``seed`` (None: migrated, empty) to ``path``."""
        template = self._sqlite.get(seed)
        if template is None:
            template = await self._in_background(self._build_sqlite(seed, settings))
        shutil.copyfile(template, path)

    async def _build_sqlite(self, seed: DemoSeed | None, settings: Settings) -> Path:
        path = self._root / f"sqlite-{secrets.token_hex(4)}.db"
        if seed is None:
            engine = create_engine(sqlite_url(path))
            await upgrade(engine)
        else:
            migrated = self._sqlite.get(None) or await self._build_sqlite(None, settings)
            shutil.copyfile(migrated, path)
            engine = create_engine(sqlite_url(path))
            await _seed(engine, self._seed_settings(settings), seed)
        async with engine.connect() as connection:
            # Everything into the main file, so that copying the file copies the database.
            await sqlite_pragma(connection, "PRAGMA wal_checkpoint(TRUNCATE)")
        await engine.dispose()
        self._sqlite[seed] = path
        return path

    # PostgreSQL -----------------------------------------------------------------------------

    def postgres_url(self, database: str) -> str:
        return self._postgres_url.set(database=database).render_as_string(hide_password=False)

    async def postgres_store(
        self, seed: DemoSeed | None, settings: Settings, *, migrated: bool = True
    ) -> str:
        """A new database copied from the template for ``seed`` (or empty: ``migrated=False``);
        returns its name. Drop it with :meth:`drop_postgres`."""
        return await self._in_background(self._new_postgres(seed, settings, migrated))

    def drop_postgres(self, database: str) -> None:
        """Drop ``database`` in the background (each DROP DATABASE waits for a checkpoint, so
        the test does not wait for it; concurrent drops share checkpoints, so a few run at
        once); :meth:`close` waits for the drops."""
        if self._background is None:
            raise RuntimeError("no database of this session to drop")
        self._drops.append(self._background.submit(self._drop_in_turn(database)))

    async def _drop_in_turn(self, database: str) -> None:
        if self._drop_slots is None:
            self._drop_slots = asyncio.Semaphore(_CONCURRENT_DROPS)
        async with self._drop_slots:
            await self._drop(database)

    async def _new_postgres(self, seed: DemoSeed | None, settings: Settings, migrated: bool) -> str:
        template = await self._postgres_template(seed, settings) if migrated else None
        return await self._create(template)

    async def _postgres_template(self, seed: DemoSeed | None, settings: Settings) -> str:
        template = self._postgres.get(seed)
        if template is not None:
            return template
        source = None if seed is None else await self._postgres_template(None, settings)
        template = await self._create(source)
        engine = create_engine(self.postgres_url(template))
        try:
            if seed is None:
                await upgrade(engine)
            else:
                await _seed(engine, self._seed_settings(settings), seed)
        except BaseException:
            await engine.dispose()
            await self._drop(template)
            raise
        await engine.dispose()
        self._postgres[seed] = template
        return template

    async def _create(self, template: str | None) -> str:
        name = f"{self._prefix}_{secrets.token_hex(6)}"
        clause = f' TEMPLATE "{template}"' if template else ""
        async with self._admin_engine().connect() as connection:
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"{clause}')
        return name

    async def _drop(self, database: str) -> None:
        async with self._admin_engine().connect() as connection:
            await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def _admin_engine(self) -> AsyncEngine:
        if self._admin is None:
            self._admin = create_async_engine(
                self._postgres_url.render_as_string(hide_password=False),
                isolation_level="AUTOCOMMIT",
                pool_pre_ping=True,
                pool_size=_CONCURRENT_DROPS + 2,
            )
        return self._admin

    async def _close_postgres(self) -> None:
        for drop in self._drops:
            await asyncio.wrap_future(drop)
        for template in self._postgres.values():
            await self._drop(template)
        if self._admin is not None:
            await self._admin.dispose()

    # Both -----------------------------------------------------------------------------------

    def _seed_settings(self, settings: Settings) -> Settings:
        data_dir = self._root / f"seed-{secrets.token_hex(4)}"
        return settings.model_copy(update={"data_dir": data_dir})

    async def _in_background(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._background is None:
            self._background = _Background()
        return await self._background.arun(coro)

    def close(self) -> None:
        if self._background is None:
            return
        try:
            self._background.run(self._close_postgres())
        finally:
            self._background.close()


__all__ = ["DemoSeed", "StoreTemplates", "sqlite_url"]
