"""Stage 7: batched durable writes. A message's ack is released only after the transaction
holding it committed.

One writer task owns one connection. Callers :meth:`BatchWriter.submit` a row and await the
returned future; the writer groups whatever arrived within ``max_wait`` seconds of the first
waiting row (or ``max_rows`` rows, whichever comes first) into one transaction, commits, and
only then resolves the futures. If the transaction fails, every future in it fails with
:class:`StoreUnavailable` and nothing is acknowledged; the device retransmits (same
sequence), which is safe because telemetry rows are inserted with "on conflict do nothing"
on their key.

A row that can never be written (an integrity or data error) would fail every batch it
joins; so a batch refused for such an error is split in halves and retried, isolating the
bad row and acknowledging the rest. On SQLite the writer's connection runs with
``synchronous=FULL``: a commit is on disk before the ack, not only in the OS's cache.

The insert statement is SQLAlchemy's (compiled once per table and dialect), but parameters go
to the driver's ``executemany`` as tuples encoded by :class:`RowCodec`: SQLAlchemy's
per-row parameter processing costs ~40 us a row, which alone would cap ingestion below
25,000 rows/s (``../shared/CEILINGS.md``). The codec knows exactly the column types the
telemetry tables use and refuses any other, so a new column cannot be written wrongly.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import JSON, BigInteger, Boolean, Insert, LargeBinary, String, Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleetward.observability.logging import get_logger
from fleetward.store.base import SqliteUtcText, UtcDateTime
from fleetward.store.engine import sqlite_pragma

_log = get_logger("fleetward.telemetry.persist")

Row = Mapping[str, Any]

DEFAULT_MAX_ROWS = 1000
DEFAULT_MAX_WAIT = 0.004
# Rows waiting beyond this are refused at once (retry later) instead of queueing without
# bound while the store is slow or down.
DEFAULT_MAX_PENDING = 50_000


# The writer's own SQLite connection: every commit on disk before its acks (FULL), and a page
# cache (64 MiB, against SQLite's default 2 MiB) that holds the telemetry table's and its
# indexes' hot pages, since a fleet's rows land all over the (device, sequence) index.
SQLITE_WRITER_PRAGMAS = ("PRAGMA synchronous=FULL", "PRAGMA cache_size=-65536")


class StoreUnavailable(Exception):
    """The row's transaction did not commit (it may have, if the connection broke during
    COMMIT); the message is not acknowledged."""


@dataclass(frozen=True, slots=True)
class Target:
    """A table the writer inserts into; ``key`` makes inserts idempotent on those columns."""

    table: Table
    key: tuple[str, ...] = ()


class BatchWriter:
    """Safe to call from any task of the event loop that started it; not thread-safe."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_wait: float = DEFAULT_MAX_WAIT,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if not (1 <= max_rows <= max_pending and 0 <= max_wait <= 1):
            raise ValueError("need 1 <= max_rows <= max_pending and 0 <= max_wait <= 1 s")
        self._engine = engine
        self._max_rows = max_rows
        self._max_wait = max_wait
        self._max_pending = max_pending
        self._pending: list[tuple[Target, Row, asyncio.Future[None]]] = []
        self._first_at = 0.0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._connection: AsyncConnection | None = None
        self._codecs: dict[Target, RowCodec] = {}

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("writer already started")
        # Kept: on CPython 3.11 each asyncio.get_running_loop() is a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="telemetry-writer")

    async def stop(self) -> None:
        """Write everything submitted so far, then stop."""
        self._closing = True
        self._wake.set()
        self._full.set()
        if self._task is not None:
            await self._task
            self._task = None
            self._loop = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    def submit(self, target: Target, row: Row) -> asyncio.Future[None]:
        """Queue ``row``; the future resolves once it committed (or fails, never both)."""
        loop = self._loop or asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if self._task is None or self._closing:
            waiter.set_exception(StoreUnavailable("writer not running"))
            return waiter
        if len(self._pending) >= self._max_pending:
            waiter.set_exception(StoreUnavailable("writer backlog full"))
            return waiter
        if not self._pending:
            self._first_at = time.monotonic()
            self._wake.set()
        self._pending.append((target, row, waiter))
        if len(self._pending) >= self._max_rows:
            self._full.set()
        return waiter

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            remaining = self._first_at + self._max_wait - time.monotonic()
            if remaining > 0 and len(self._pending) < self._max_rows and not self._closing:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._full.wait()
            batch = self._pending[: self._max_rows]
            del self._pending[: self._max_rows]
            if self._pending:
                # Left over from a full batch: they waited already, write them next.
                self._first_at = 0.0
            await self._write(batch)

    async def _write(self, batch: Sequence[tuple[Target, Row, asyncio.Future[None]]]) -> None:
        try:
            await self._commit(batch)
        except (IntegrityError, DataError) as exc:
            if len(batch) == 1:
                _log.error("telemetry row refused by the store", error=type(exc).__name__)
                _fail(batch)
                return
            middle = len(batch) // 2
            await self._write(batch[:middle])
            await self._write(batch[middle:])
            return
        except Exception as exc:  # any other failure: nothing in the batch is acknowledged
            _log.error("telemetry batch not committed", error=type(exc).__name__, rows=len(batch))
            await self._drop_connection()
            _fail(batch)
            return
        for _target, _row, waiter in batch:
            if not waiter.done():
                waiter.set_result(None)

    async def _commit(self, batch: Sequence[tuple[Target, Row, asyncio.Future[None]]]) -> None:
        connection = await self._connect()
        by_target: dict[Target, list[Row]] = {}
        for target, row, _waiter in batch:
            by_target.setdefault(target, []).append(row)
        try:
            async with connection.begin():
                for target, rows in by_target.items():
                    codec = self._codec(target, connection.dialect)
                    await connection.exec_driver_sql(codec.sql, codec.encode(rows))
        except (IntegrityError, DataError):
            raise
        except Exception:
            await self._drop_connection()
            raise

    async def _connect(self) -> AsyncConnection:
        if self._connection is None:
            connection = await self._engine.connect()
            if connection.dialect.name == "sqlite":
                for pragma in SQLITE_WRITER_PRAGMAS:
                    await sqlite_pragma(connection, pragma)
            self._connection = connection
        return self._connection

    async def _drop_connection(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):  # it is already broken; a new one is opened
                await connection.invalidate()

    def _codec(self, target: Target, dialect: Dialect) -> RowCodec:
        codec = self._codecs.get(target)
        if codec is None:
            codec = self._codecs[target] = RowCodec(target, dialect)
        return codec


Encoder = Callable[[Any], Any]


def _aware_time(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value


def _json_text(value: object) -> str:
    return msgspec.json.encode(value).decode()


class RowCodec:
    """A target's insert compiled for one dialect, and the encoder turning row mappings into
    the driver's positional parameters."""

    def __init__(self, target: Target, dialect: Dialect) -> None:
        compiled = _insert(target, dialect.name).compile(dialect=dialect)
        names = compiled.positiontup
        if not names:
            raise ValueError(f"dialect {dialect.name!r} does not bind positionally")
        self.sql = compiled.string
        self._values = operator.itemgetter(*names)
        self._encoders = [
            (position, encoder)
            for position, name in enumerate(names)
            if (encoder := _encoder(target.table.c[name].type, dialect.name)) is not None
        ]

    def encode(self, rows: Sequence[Row]) -> list[tuple[Any, ...]]:
        values, encoders = self._values, self._encoders
        encoded: list[tuple[Any, ...]] = []
        for row in rows:
            params = list(values(row))
            for position, encoder in encoders:
                params[position] = encoder(params[position])
            encoded.append(tuple(params))
        return encoded


def _encoder(column_type: object, dialect: str) -> Encoder | None:
    # Order matters: UtcDateTime and JSON first, then the plain types the driver takes as is.
    if isinstance(column_type, UtcDateTime):
        return SqliteUtcText() if dialect == "sqlite" else _aware_time
    if isinstance(column_type, JSON):
        return _json_text
    if isinstance(column_type, String | BigInteger | Boolean | LargeBinary):
        return None
    raise ValueError(f"no row encoding for column type {column_type!r}")


def _insert(target: Target, dialect: str) -> Insert:
    if not target.key:
        return insert(target.table)
    if dialect == "sqlite":
        return sqlite.insert(target.table).on_conflict_do_nothing(index_elements=target.key)
    if dialect == "postgresql":
        return postgresql.insert(target.table).on_conflict_do_nothing(index_elements=target.key)
    raise ValueError(f"no idempotent insert for dialect {dialect!r}")


def _fail(batch: Sequence[tuple[Target, Row, asyncio.Future[None]]]) -> None:
    for _target, _row, waiter in batch:
        if not waiter.done():
            waiter.set_exception(StoreUnavailable("batch not committed"))
