"""The one-trip SQLite dialect: the stock aiosqlite dialect's answers, one worker-thread trip
per statement, and still nothing blocking the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from fleetward.store import sqlite_driver
from fleetward.store.busy import is_store_busy
from fleetward.store.engine import create_engine
from fleetward.store.sqlite_driver import (
    DRIVER,
    INLINE_MANY_MAX,
    INLINE_READ,
    INLINE_WRITES,
    SHAREABLE,
    OneTripConnection,
    OneTripCursor,
)
from fleetward.store.uow import UnitOfWork

_SCHEMA = (
    "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, n INTEGER)",
    "INSERT INTO t (name, n) VALUES ('a', 1), ('b', 2), ('c', 3)",
)


@contextmanager
def counted_trips() -> Iterator[list[int]]:
    """Count the calls queued to aiosqlite's worker threads."""
    count = [0]
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await original(self, fn, *args, **kwargs)

    aiosqlite.Connection._execute = counting  # type: ignore[method-assign]
    try:
        yield count
    finally:
        aiosqlite.Connection._execute = original  # type: ignore[method-assign]


async def numbers(connection: AsyncConnection) -> list[int]:
    """Column n of every row, by name."""
    rows = await connection.exec_driver_sql("SELECT n FROM t ORDER BY name")
    return list(rows.scalars().all())


async def adapted_of(connection: AsyncConnection) -> OneTripConnection:
    """The driver's connection under ``connection``."""
    raw = await connection.get_raw_connection()
    adapted = raw.dbapi_connection
    assert isinstance(adapted, OneTripConnection)
    return adapted


@pytest.fixture
async def one_file(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two one-trip engines on the same database file (with the rows): what two parts of one
    process opening the store each get."""
    path = tmp_path / "shared.db"
    first = create_engine(f"sqlite+aiosqlite:///{path}")
    second = create_engine(f"sqlite+aiosqlite:///{path}")
    async with first.begin() as connection:
        for statement in _SCHEMA:
            await connection.exec_driver_sql(statement)
    yield first, second
    await first.dispose()
    await second.dispose()


@pytest.fixture
def sessions(engines: tuple[AsyncEngine, AsyncEngine]) -> async_sessionmaker[AsyncSession]:
    """Sessions on the one-trip engine, as the platform makes them (nothing expires at commit)."""
    fast, _ = engines
    return async_sessionmaker(fast, expire_on_commit=False)


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """(one-trip, stock) engines, each on a database of its own with the same rows."""
    fast = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fast.db'}")
    stock = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'stock.db'}")
    for engine in (fast, stock):
        async with engine.begin() as connection:
            for statement in _SCHEMA:
                await connection.exec_driver_sql(statement)
    yield fast, stock
    await fast.dispose()
    await stock.dispose()


async def test_create_engine_selects_the_one_trip_dialect(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        assert engine.dialect.driver == DRIVER
        assert engine.dialect.name == "sqlite"
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            assert isinstance(raw.dbapi_connection.cursor(), OneTripCursor)  # type: ignore[union-attr]
    finally:
        await engine.dispose()


async def _answers(engine: AsyncEngine) -> list[Any]:
    seen: list[Any] = []
    async with engine.begin() as connection:
        result = await connection.execute(text("SELECT id, name, n FROM t ORDER BY id"))
        seen.append((list(result.keys()), result.all()))
        result = await connection.execute(text("SELECT id FROM t WHERE n > 99"))
        seen.append((list(result.keys()), result.all()))
        result = await connection.exec_driver_sql("INSERT INTO t (name, n) VALUES ('d', 4)")
        seen.append((result.rowcount, result.lastrowid))
        result = await connection.execute(text("UPDATE t SET n = n + 10 WHERE n >= 2"))
        seen.append(result.rowcount)
        result = await connection.execute(
            text("INSERT INTO t (name, n) VALUES (:name, :n)"),
            [{"name": "e", "n": 5}, {"name": "f", "n": 6}],
        )
        seen.append(result.rowcount)
        result = await connection.execute(
            text("INSERT INTO t (name, n) VALUES ('g', 7) RETURNING id, n")
        )
        seen.append(result.all())
        seen.append((await connection.execute(text("SELECT count(*) FROM t"))).scalar_one())
    return seen


async def test_same_answers_as_the_stock_dialect(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    fast, stock = engines
    assert await _answers(fast) == await _answers(stock)


async def test_errors_are_the_stock_dialects_and_the_connection_stays_usable(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    fast, _ = engines
    async with fast.connect() as connection:
        with pytest.raises(IntegrityError):
            await connection.exec_driver_sql("INSERT INTO t (name, n) VALUES ('a', 9)")
        await connection.rollback()
        with pytest.raises(OperationalError):
            await connection.exec_driver_sql("SELECT nope FROM t")
        await connection.rollback()
        assert (await connection.exec_driver_sql("SELECT count(*) FROM t")).scalar_one() == 3


async def test_one_trip_per_statement(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    fast, stock = engines
    trips = {}
    for name, engine in (("fast", fast), ("stock", stock)):
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")  # the pool's first checkout
            with counted_trips() as count:
                for _ in range(10):
                    (await connection.exec_driver_sql("SELECT id FROM t")).all()
            trips[name] = count[0]
    assert trips == {"fast": 10, "stock": 40}


def test_this_sqlite_lets_connections_be_shared_between_threads() -> None:
    # Inline statements need a serialized build; without one they silently make trips,
    # which the tests below would show as a failure.
    assert SHAREABLE


async def test_an_inline_select_makes_no_trip_and_answers_the_same(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    fast, stock = engines
    query = "SELECT id, name, n FROM t WHERE n >= :low ORDER BY id"
    async with fast.connect() as connection:
        await connection.exec_driver_sql("SELECT 1")  # the pool's first checkout
        with counted_trips() as count:
            rows = (
                await connection.execute(text(query), {"low": 2}, execution_options=INLINE_READ)
            ).all()
        assert count[0] == 0
    async with stock.connect() as connection:
        assert rows == (await connection.execute(text(query), {"low": 2})).all()


async def test_an_inline_select_sees_its_own_transactions_writes(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    fast, _ = engines
    async with fast.connect() as connection:
        await connection.exec_driver_sql("INSERT INTO t (name, n) VALUES ('d', 4)")
        rows = await connection.execute(
            text("SELECT name FROM t WHERE n = 4"), execution_options=INLINE_READ
        )
        assert rows.scalars().all() == ["d"]
        await connection.rollback()
        rows = await connection.execute(
            text("SELECT name FROM t WHERE n = 4"), execution_options=INLINE_READ
        )
        assert rows.scalars().all() == []


async def test_only_a_select_runs_inline(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    # A write may wait for SQLite's write lock: marked or not, it waits in the worker thread.
    fast, _ = engines
    async with fast.connect() as connection:
        await connection.exec_driver_sql("SELECT 1")
        with counted_trips() as count:
            await connection.execute(
                text("UPDATE t SET n = n + 1 WHERE name = 'a'"), execution_options=INLINE_READ
            )
            await connection.execute(text("SELECT n FROM t WHERE name = 'a'"))
        assert count[0] == 2
        await connection.commit()


async def test_an_inline_select_makes_the_trip_when_the_worker_holds_the_connection(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    fast, _ = engines
    async with fast.connect() as connection:
        adapted = await adapted_of(connection)
        with adapted.inline_lock, counted_trips() as count:
            # The worker thread waits for the lock this test holds: hand it back meanwhile.
            reading = asyncio.ensure_future(
                connection.execute(text("SELECT count(*) FROM t"), execution_options=INLINE_READ)
            )
            await asyncio.sleep(0.05)
            assert count[0] == 1
            assert not reading.done()
        assert (await reading).scalar_one() == 3


async def test_a_lock_wait_does_not_block_the_event_loop(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """The statement still waits in the worker thread (SQLite's busy handler), not in the
    event loop: the holder of the write lock, a task on the same loop, gets to commit while
    the other writer waits. Were the wait in the loop, the holder could never commit and the
    writer would fail with "database is locked" after the busy timeout."""
    fast, _ = engines
    events: list[str] = []
    async with fast.connect() as holder, fast.connect() as writer:
        await holder.exec_driver_sql("BEGIN IMMEDIATE")
        await holder.exec_driver_sql("UPDATE t SET n = 0 WHERE name = 'a'")
        writer_started = asyncio.Event()

        async def release_once_the_writer_waits() -> None:
            await writer_started.wait()
            await asyncio.sleep(0.2)
            await holder.commit()
            events.append("holder committed")

        releasing = asyncio.create_task(release_once_the_writer_waits())
        writer_started.set()
        await writer.exec_driver_sql("UPDATE t SET n = 1 WHERE name = 'b'")
        events.append("writer wrote")
        await writer.commit()
        await releasing
    assert events == ["holder committed", "writer wrote"]
    async with fast.connect() as connection:
        rows = await connection.exec_driver_sql("SELECT name, n FROM t WHERE name IN ('a','b')")
        assert sorted(rows.all()) == [("a", 0), ("b", 1)]


async def test_fetching_in_parts_reads_every_row_once(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    fast, _ = engines
    async with fast.connect() as connection:
        result = await connection.exec_driver_sql("SELECT name FROM t ORDER BY id")
        first = result.fetchmany()  # the cursor's arraysize: one row
        rest = result.fetchmany(5)
        assert [r.name for r in first + rest] == ["a", "b", "c"]
        parts = [
            [r.name for r in part]
            for part in (
                await connection.exec_driver_sql("SELECT name FROM t ORDER BY id")
            ).partitions(2)
        ]
        assert parts == [["a", "b"], ["c"]]


async def test_a_statement_has_one_result_set(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    fast, _ = engines

    def read(connection: Any) -> tuple[Any, list[Any]]:
        cursor = connection.connection.dbapi_connection.cursor()
        cursor.execute("SELECT name FROM t ORDER BY id")
        return cursor.nextset(), cursor.fetchall()

    async with fast.connect() as connection:
        assert await connection.run_sync(read) == (None, [])


async def test_writers_take_the_write_lock_in_the_order_they_asked(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    # SQLite's busy handler serves waiting writers in no order, polling; the write gate
    # queues them in the event loop, first come first served.
    fast, _ = engines
    order: list[str] = []
    async with fast.connect() as holder:
        await holder.exec_driver_sql("UPDATE t SET n = 0 WHERE name = 'a'")

        async def write(name: str) -> None:
            async with fast.connect() as connection:
                await connection.exec_driver_sql("UPDATE t SET n = n + 1 WHERE name = ?", (name,))
                order.append(name)
                await connection.commit()

        writers = []
        for name in ("b", "c", "a"):
            writers.append(asyncio.create_task(write(name)))
            await asyncio.sleep(0.05)
        assert order == []
        await holder.commit()
        await asyncio.gather(*writers)
    assert order == ["b", "c", "a"]


@pytest.mark.parametrize("ending", ["commit", "rollback", "close", "failed statement"])
async def test_the_write_gate_is_released_when_the_transaction_ends(
    engines: tuple[AsyncEngine, AsyncEngine], ending: str
) -> None:
    fast, _ = engines
    connection = await fast.connect()
    if ending == "failed statement":
        # The statement failed, its transaction did not: SQLite's lock is held until the
        # rollback (what a session does after an error), and so is the gate.
        with pytest.raises(IntegrityError):
            await connection.exec_driver_sql("INSERT INTO t (name, n) VALUES ('a', 9)")
        await connection.rollback()
    else:
        await connection.exec_driver_sql("UPDATE t SET n = 7 WHERE name = 'a'")
        if ending == "commit":
            await connection.commit()
        elif ending == "rollback":
            await connection.rollback()
    if ending == "close":
        await connection.close()
    async with fast.connect() as other:
        async with asyncio.timeout(1):  # not the gate's 5 s: it is free
            await other.exec_driver_sql("UPDATE t SET n = 8 WHERE name = 'b'")
        await other.commit()
    if ending != "close":
        await connection.close()


async def test_a_writer_kept_waiting_too_long_finds_the_store_busy(
    one_file: tuple[AsyncEngine, AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two engines on one file share the process's gate: the second writer waits for it (and
    # gives up after the gate's timeout, as SQLite's busy handler would after its own).
    monkeypatch.setattr(sqlite_driver, "GATE_TIMEOUT_S", 0.2)
    first, second = one_file
    async with first.connect() as holder, second.connect() as writer:
        await holder.exec_driver_sql("UPDATE t SET n = 0 WHERE name = 'a'")
        started = asyncio.get_running_loop().time()
        with pytest.raises(OperationalError) as refused:
            await writer.exec_driver_sql("UPDATE t SET n = 1 WHERE name = 'b'")
        waited = asyncio.get_running_loop().time() - started
        assert is_store_busy(refused.value)
        assert waited < 2  # the gate's timeout, not SQLite's 5 s busy timeout
        await holder.commit()
        await writer.rollback()
        await writer.exec_driver_sql("UPDATE t SET n = 1 WHERE name = 'b'")
        await writer.commit()


async def test_a_new_connection_and_reads_do_not_wait_for_a_writer(
    one_file: tuple[AsyncEngine, AsyncEngine],
) -> None:
    # Only a write waits for the gate: a new connection's PRAGMAs and reads go on.
    first, second = one_file
    async with first.connect() as holder:
        await holder.exec_driver_sql("UPDATE t SET n = 0 WHERE name = 'a'")
        async with asyncio.timeout(1), second.connect() as reader:
            count = await reader.exec_driver_sql("SELECT count(*) FROM t")
            assert count.scalar_one() == 3
        await holder.commit()


async def test_a_connection_collected_in_another_thread_still_frees_the_gate(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    # Garbage collection may run in any thread: the gate is released through its loop.
    fast, _ = engines
    async with fast.connect() as holder:
        await holder.exec_driver_sql("UPDATE t SET n = 0 WHERE name = 'a'")
        adapted = await adapted_of(holder)
        assert adapted.database is not None
        gate = sqlite_driver._gate(adapted.database)
        assert gate.locked()
        await asyncio.to_thread(adapted.leave_gate)
        async with asyncio.timeout(1):
            await gate.acquire()  # free again (its holder's transaction is still open)
        gate.release()
        await holder.rollback()


_WRITES = {INLINE_WRITES: True}


async def test_a_transactions_later_writes_run_inline_when_asked(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    # The first write makes the trip (it may wait for SQLite's lock); the ones after it hold
    # that lock already and run in the loop's thread, with the stock dialect's answers.
    fast, stock = engines
    statements = [
        ("UPDATE t SET n = n + 10 WHERE name = :name", {"name": "a"}),
        ("INSERT INTO t (name, n) VALUES (:name, 4) RETURNING id, name, n", {"name": "d"}),
        ("UPDATE t SET n = n * 2 WHERE n > :low", {"low": 2}),
        ("DELETE FROM t WHERE name = :name", {"name": "b"}),
    ]
    answers: dict[str, list[Any]] = {}
    for name, engine in (("fast", fast), ("stock", stock)):
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")  # the pool's first checkout
            seen: list[Any] = []
            with counted_trips() as count:
                for sql, params in statements:
                    result = await connection.execute(text(sql), params, execution_options=_WRITES)
                    seen.append(result.all() if result.returns_rows else result.rowcount)
                trips = count[0]
            rows = await connection.exec_driver_sql("SELECT name, n FROM t ORDER BY name")
            seen.append(rows.all())
            await connection.commit()
            answers[name] = seen
            if name == "fast":
                assert trips == 1
    assert answers["fast"] == answers["stock"]
    assert answers["fast"][-1] == [("a", 22), ("c", 6), ("d", 8)]


async def test_writes_make_the_trip_unless_asked_or_before_the_first(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    fast, _ = engines
    async with fast.connect() as connection:
        await connection.exec_driver_sql("SELECT 1")
        with counted_trips() as count:
            await connection.exec_driver_sql("UPDATE t SET n = 5 WHERE name = 'a'")
            await connection.exec_driver_sql("UPDATE t SET n = 6 WHERE name = 'b'")  # not asked
            await connection.execute(
                text("UPDATE t SET n = 7 WHERE name = 'c'"), execution_options=INLINE_READ
            )
        assert count[0] == 3
        await connection.commit()
        with counted_trips() as count:
            # A new transaction: its first write makes the trip again, even when asked.
            await connection.execute(
                text("UPDATE t SET n = 8 WHERE name = 'a'"), execution_options=_WRITES
            )
            await connection.execute(
                text("UPDATE t SET n = 9 WHERE name = 'b'"), execution_options=_WRITES
            )
            await connection.commit()  # the commit makes the trip
        assert count[0] == 2
        assert await numbers(connection) == [8, 9, 7]
        await connection.exec_driver_sql("BEGIN")  # a transaction that has not written yet
        with counted_trips() as count:
            await connection.execute(
                text("UPDATE t SET n = 1 WHERE name = 'a'"), execution_options=_WRITES
            )
        assert count[0] == 1  # it may have to wait for SQLite's write lock: the trip
        await connection.rollback()


async def test_only_small_batches_run_inline(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    fast, _ = engines
    insert = text("INSERT INTO t (name, n) VALUES (:name, :n)")
    async with fast.connect() as connection:
        await connection.exec_driver_sql("UPDATE t SET n = 0 WHERE name = 'a'")
        small = [{"name": f"s{i}", "n": i} for i in range(INLINE_MANY_MAX)]
        large = [{"name": f"l{i}", "n": i} for i in range(INLINE_MANY_MAX + 1)]
        with counted_trips() as count:
            await connection.execute(insert, small, execution_options=_WRITES)
        assert count[0] == 0
        with counted_trips() as count:
            await connection.execute(insert, large, execution_options=_WRITES)
        assert count[0] == 1
        total = await connection.exec_driver_sql("SELECT count(*) FROM t")
        assert total.scalar_one() == 3 + 2 * INLINE_MANY_MAX + 1
        await connection.rollback()


async def test_an_inline_write_fails_as_the_stock_one_and_rolls_back_with_its_transaction(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    fast, _ = engines
    async with fast.connect() as connection:
        await connection.exec_driver_sql("UPDATE t SET n = 0 WHERE name = 'a'")
        await connection.execute(
            text("UPDATE t SET n = 1 WHERE name = 'b'"), execution_options=_WRITES
        )
        with counted_trips() as count, pytest.raises(IntegrityError):
            await connection.execute(
                text("INSERT INTO t (name, n) VALUES ('c', 9)"), execution_options=_WRITES
            )
        assert count[0] == 0
        adapted = await adapted_of(connection)
        assert adapted.writing and adapted.gate is not None  # still its transaction's
        await connection.rollback()
        assert not adapted.writing and adapted.gate is None
        assert await numbers(connection) == [1, 2, 3]


async def test_a_unit_of_work_asks_for_inline_writes_for_its_session(
    engines: tuple[AsyncEngine, AsyncEngine],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    fast, _ = engines
    for asked, trips in ((True, 2), (False, 4)):
        async with UnitOfWork(sessions, inline_writes=asked) as uow:
            await uow.session.execute(text("SELECT 1"))
            with counted_trips() as count:
                for name in ("a", "b", "c"):
                    await uow.session.execute(
                        text("UPDATE t SET n = n + 1 WHERE name = :name"), {"name": name}
                    )
                await uow.commit()
            assert count[0] == trips, asked
    async with fast.connect() as connection:
        assert await numbers(connection) == [3, 4, 5]


async def test_a_unit_of_work_with_the_write_lock_holds_it_from_its_start(
    engines: tuple[AsyncEngine, AsyncEngine],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # BEGIN IMMEDIATE before anything is read: another writer waits until the commit (so
    # nothing it writes can slip between this unit's reads and its writes), and all of the
    # unit's writes run inline (the lock is held from the BEGIN).
    fast, _ = engines
    order: list[str] = []

    async def other_writer() -> None:
        async with fast.connect() as connection:
            await connection.exec_driver_sql("UPDATE t SET n = 100 WHERE name = 'a'")
            order.append("other wrote")
            await connection.commit()

    async with UnitOfWork(sessions, inline_writes=True, write_lock=True) as uow:
        assert uow.serialized
        adapted = await adapted_of(await uow.session.connection())
        assert adapted.writing and adapted.gate is not None
        waiting = asyncio.create_task(other_writer())
        await asyncio.sleep(0.05)
        (n,) = (await uow.session.execute(text("SELECT n FROM t WHERE name = 'a'"))).one()
        with counted_trips() as count:
            for name in ("a", "b"):
                await uow.session.execute(
                    text("UPDATE t SET n = n + 10 WHERE name = :name"), {"name": name}
                )
        assert count[0] == 0  # inline, the first write too
        order.append("unit read and wrote")
        await uow.commit()
    assert not uow.serialized
    await waiting
    assert n == 1
    assert order == ["unit read and wrote", "other wrote"]
    async with fast.connect() as connection:
        assert await numbers(connection) == [100, 12, 3]


async def test_the_write_lock_is_released_when_the_unit_ends_without_a_commit(
    engines: tuple[AsyncEngine, AsyncEngine],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    fast, _ = engines

    async def half_way() -> None:
        async with UnitOfWork(sessions, write_lock=True) as uow:
            await uow.session.execute(text("UPDATE t SET n = 50 WHERE name = 'a'"))
            raise RuntimeError("half-way")

    with pytest.raises(RuntimeError):
        await half_way()
    async with fast.connect() as other:
        async with asyncio.timeout(1):  # not the gate's 5 s: it is free
            await other.exec_driver_sql("UPDATE t SET n = 8 WHERE name = 'b'")
        await other.commit()
        assert await numbers(other) == [1, 8, 3]  # the unit's write was rolled back


async def test_a_unit_of_work_without_the_write_lock_is_not_serialized(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with UnitOfWork(sessions, inline_writes=True) as uow:
        assert not uow.serialized
        adapted = await adapted_of(await uow.session.connection())
        assert not adapted.writing and adapted.gate is None


def test_only_an_immediate_or_exclusive_begin_takes_the_lock_at_once() -> None:
    locks = sqlite_driver._locks_at_begin
    assert locks("BEGIN IMMEDIATE") and locks("begin exclusive") and locks(" BEGIN  IMMEDIATE ")
    assert not locks("BEGIN") and not locks("BEGIN DEFERRED") and not locks("BEGIN TRANSACTION")
    assert not locks("SELECT 'BEGIN IMMEDIATE'") and not locks("")


async def test_ending_a_connection_with_nothing_open_makes_no_trip(
    engines: tuple[AsyncEngine, AsyncEngine],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # sqlite3's commit and rollback do nothing without an open transaction: the pool's
    # rollback of every connection it takes back, and a read-only unit's, cost no trip.
    fast, _ = engines
    with counted_trips() as count:
        async with UnitOfWork(sessions) as uow:
            await uow.session.execute(text("SELECT n FROM t"), execution_options=INLINE_READ)
            await uow.commit()
    assert count[0] == 0
    async with fast.connect() as connection:
        await connection.exec_driver_sql("UPDATE t SET n = 0 WHERE name = 'a'")
        with counted_trips() as count:
            await connection.rollback()  # a transaction is open: the trip is made
        assert count[0] == 1
        with counted_trips() as count:
            await connection.rollback()
            await connection.commit()
        assert count[0] == 0
        assert await numbers(connection) == [1, 2, 3]


async def test_an_ending_waits_for_a_statement_still_queued(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    # A task cancelled while its statement waits for the worker leaves the statement queued:
    # the worker still runs it. An ending then makes its trip, behind it, or the connection
    # could go back to the pool with that statement's transaction open.
    fast, _ = engines
    async with fast.connect() as connection:
        adapted = await adapted_of(connection)
        await connection.execute(text("SELECT 1"), execution_options=INLINE_READ)  # begins
        adapted.sent += 1  # as if one were queued
        try:
            with counted_trips() as count:
                await connection.rollback()
            assert count[0] == 1
        finally:
            adapted.sent -= 1
    async with fast.connect() as connection:
        adapted = await adapted_of(connection)
        with adapted.inline_lock:  # the worker waits for this lock: the INSERT stays queued
            writing = asyncio.ensure_future(
                connection.exec_driver_sql("INSERT INTO t (name, n) VALUES ('q', 9)")
            )
            await asyncio.sleep(0.05)
            writing.cancel()
            await asyncio.sleep(0.05)
            assert adapted.sent > adapted.ran
        with pytest.raises(asyncio.CancelledError):
            await writing
        await connection.rollback()
        assert adapted.sent == adapted.ran
        raw = adapted._connection._connection
        assert raw is None or not raw.in_transaction  # SQLAlchemy discards it, or it is clean
    async with fast.connect() as connection:
        rows = await connection.exec_driver_sql("SELECT count(*) FROM t")
        assert rows.scalar_one() == 3


def test_a_batch_of_unknown_size_is_not_small() -> None:
    assert sqlite_driver._at_most([{}] * INLINE_MANY_MAX, INLINE_MANY_MAX)
    assert not sqlite_driver._at_most([{}] * (INLINE_MANY_MAX + 1), INLINE_MANY_MAX)
    assert not sqlite_driver._at_most(iter([{}]), INLINE_MANY_MAX)
