"""Engine creation. SQLite gets WAL, foreign keys and a busy timeout on every connection, and
the one-trip aiosqlite dialect (:mod:`fleetward.store.sqlite_driver`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

from fleetward.store.pending import PendingRowsSession
from fleetward.store.sqlite_driver import DRIVER as ONE_TRIP_DRIVER


def create_engine(url: str, *, schema: str | None = None) -> AsyncEngine:
    """Create (but do not connect) an engine for ``url``.

    ``schema`` sets the PostgreSQL search path, which lets tests run in a private schema.
    """
    # A pre-ping is a round trip per checkout: worth it for a network database only.
    kwargs: dict[str, Any] = {"pool_pre_ping": url.startswith("postgresql")}
    if url.startswith("postgresql") and schema is not None:
        kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        # Same driver and semantics, one worker-thread trip per statement.
        parsed = parsed.set(drivername=f"sqlite+{ONE_TRIP_DRIVER}")
    engine = create_async_engine(parsed, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


async def sqlite_pragma(connection: AsyncConnection, statement: str) -> None:
    """Run a PRAGMA on the driver connection, outside any SQLAlchemy transaction (some, like
    ``synchronous`` or a WAL checkpoint, refuse to run inside one). ``connection`` must not
    be in a transaction yet."""
    if connection.in_transaction():
        raise RuntimeError("a PRAGMA must run before the connection's first statement")
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if driver is None:
        raise RuntimeError("the connection has no driver connection")
    await driver.execute(statement)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers proceed during a write; foreign keys are off by default in SQLite.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # PendingRowsSession: held rows (audit records, job transitions) go in at every flush.
    return async_sessionmaker(
        engine, expire_on_commit=False, autoflush=True, sync_session_class=PendingRowsSession
    )
