"""SQLite through aiosqlite with one thread round trip per statement.

SQLAlchemy's aiosqlite adapter makes four trips to aiosqlite's worker thread for a SELECT
(open a cursor, execute, fetch all, close) and three for a write, each a queue hand-off, a
thread wake-up and a wake-up of the event loop through its self-pipe, plus a greenlet switch
per trip. Measured on this VM: ~260 us of CPU for ``SELECT 1`` through SQLAlchemy against
~1.5 us for the statement itself in the stdlib driver. This dialect keeps everything else of
SQLAlchemy's ``aiosqlite`` dialect (the worker thread, so that a slow statement, a lock wait
in SQLite's busy handler or an fsync never blocks the event loop) and runs a statement's
execute, fetch and close as ONE function in the worker thread.

A statement executed with ``INLINE_READ`` (short indexed SELECTs on hot paths: the PDP's
relation reads, a status read, a job's lookup) runs in the calling thread instead, with no
trip at all (~100 us of CPU less each: the queue hand-off, two thread wake-ups and the
loop's self-pipe). That is safe for those statements only: a SELECT in WAL mode never waits
for a lock (readers do not block on the writer), and a short indexed one takes microseconds.
Writes, and any statement not marked, still go to the worker thread, where SQLite's busy
handler may wait without stalling the loop. For this the connection is opened with
``check_same_thread=False``, which is sound only with an SQLite built serialized
(``sqlite3.threadsafety == 3``: the library serializes every call on a connection); with any
other build every statement makes the trip. A lock per connection also keeps the two threads
from ever running this module's statements on it at once: an inline statement that finds the
worker busy with the connection (only possible after a cancelled statement) makes the trip.

A unit of work that asks for ``INLINE_WRITES`` (the command path's short transactions) also
runs its later writes inline: an INSERT, UPDATE, DELETE or REPLACE (an executemany of at most
``INLINE_MANY_MAX`` rows) of a transaction that has already written. Its first write made the
trip and took SQLite's write lock, which the connection holds until the transaction ends, so
the statement cannot wait for a lock; it costs only the statement (~21 against ~80 us of CPU
for a one-row UPDATE with the trip, measured in process). The first write, the commit (which
may run SQLite's auto-checkpoint) and anything not asked for still make the trip. A
transaction begun with ``BEGIN IMMEDIATE`` (``UnitOfWork(write_lock=True)``) holds the write
lock from that statement on, so all of its writes may run inline.

A commit or rollback with no transaction open (the pool rolls back every connection it takes
back, after a commit too; a read-only unit of work commits nothing) does nothing in sqlite3, so
it makes no trip either, unless a statement is still queued for the worker (one whose task was
cancelled): then it makes the trip, behind that statement.

**Writers queue in the event loop, first come first served.** SQLite has one writer at a
time, and a connection that finds the write lock taken waits in SQLite's busy handler, which
sleeps and polls (1, 2, 5, 10 ... 100 ms): under load the lock is free far more often than a
waiter notices, and waiters are served in no order. So a statement that begins a write
transaction (INSERT, UPDATE, DELETE, REPLACE or BEGIN, outside a transaction) first takes this
process's write
gate for the database file (an ``asyncio.Lock``: FIFO, no polling, waiting tasks cost
nothing), and the connection holds it until its transaction ends (commit, rollback, close).
SQLite's own lock and busy handler still stand behind it, for other processes. A writer that
waits longer than ``GATE_TIMEOUT_S`` (SQLite's busy timeout) gets SQLite's own "database is
locked", a busy store (``store.busy``). As with SQLite's lock, a task must not begin a second
write transaction while its first holds the gate: it would wait for itself until that
timeout.

It reaches into ``aiosqlite.Connection._execute`` (the method every public aiosqlite call
goes through; SQLAlchemy's own adapter uses the same queue for ``isolation_level``), so the
project pins aiosqlite's minor version and ``tests/unit/store/test_sqlite_driver.py`` checks the
dialect against the stock one. ``create_engine`` selects it for every ``sqlite+aiosqlite``
URL; the URL users write does not change.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping, Sized
from types import MappingProxyType
from typing import Any, Final, cast

from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.engine.interfaces import ExecutionContext
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

DRIVER: Final = "fleetward_aiosqlite"
# Connections may be used from two threads (see the module docstring).
SHAREABLE: Final = sqlite3.threadsafety == 3
# The execution option that lets a SELECT run in the calling thread (see the module docstring).
INLINE: Final = "fleetward_inline"
# The execution options of a call (``Session.get``, ``Session.scalar``, ``Connection.execute``)
# whose statement is a short SELECT, an indexed lookup of a few rows. Other backends ignore
# them; on SQLite anything but a SELECT ignores them too.
INLINE_READ: Final[Mapping[str, Any]] = MappingProxyType({INLINE: True})
# The execution option that lets a transaction's writes after its first run in the calling
# thread (see the module docstring); set on a unit of work's connection.
INLINE_WRITES: Final = "fleetward_inline_writes"
INLINE_MANY_MAX: Final = 64
_DML: Final = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})


# description, rows, rowcount, lastrowid
_Outcome = tuple[Any, list[Any], int, int | None]


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """The whole life of one cursor (in whichever thread holds the connection's lock)."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _run_locked(
    adapted: OneTripConnection,
    connection: sqlite3.Connection,
    operation: str,
    parameters: Any,
    many: bool,
) -> _Outcome:
    """In the worker thread: one statement, holding the connection's lock."""
    with adapted.inline_lock:
        try:
            return _run(connection, operation, parameters, many)
        finally:
            adapted.ran += 1


def _at_most(rows: Any, limit: int) -> bool:
    """Whether an executemany's parameters are a sized batch of at most ``limit`` rows."""
    return isinstance(rows, Sized) and len(rows) <= limit


async def _ready(outcome: _Outcome) -> _Outcome:
    # SQLAlchemy's async layer requires every execution to await once (AwaitRequired).
    return outcome


def _verb(operation: str) -> str:
    """The statement's first word, upper case ("" for none)."""
    head = operation.lstrip()[:8].split(None, 1)
    return head[0].upper() if head else ""


_LOCKING: Final = frozenset({"IMMEDIATE", "EXCLUSIVE"})


def _locks_at_begin(operation: str) -> bool:
    """A BEGIN that takes SQLite's write lock at once (IMMEDIATE or EXCLUSIVE)."""
    words = operation.split(None, 2)
    return len(words) > 1 and words[0].upper() == "BEGIN" and words[1].upper() in _LOCKING


def _takes_write_lock(verb: str, operation: str) -> bool:
    """Whether a statement that ran in a transaction left it holding SQLite's write lock
    (only a BEGIN's second word is looked at: this runs after every trip)."""
    return verb in _DML or (verb == "BEGIN" and _locks_at_begin(operation))


# The statements that begin a write transaction outside one: the DML before which sqlite3
# begins one implicitly, and an explicit BEGIN. Anything else outside a transaction (a PRAGMA
# on a new connection, DDL) runs on its own, under SQLite's busy handler as before.
_WRITE_VERBS: Final = _DML | {"BEGIN"}


# How long a writer waits for the process's write gate (SQLite's own busy timeout, below).
GATE_TIMEOUT_S: Final = 5.0
# Write gates: per event loop, per database file.
_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _gate(database: str) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    gates = _GATES.setdefault(loop, {})
    gate = gates.get(database)
    if gate is None:
        gate = gates[database] = asyncio.Lock()
    return gate


async def _enter(gate: asyncio.Lock) -> None:
    try:
        async with asyncio.timeout(GATE_TIMEOUT_S):
            await gate.acquire()
    except TimeoutError:
        # What SQLite says when its busy handler gives up: a busy store (store.busy).
        raise sqlite3.OperationalError("database is locked") from None


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose statement makes one trip to the worker thread; the rows
    come back with it (as the stock adapter's ``fetchall`` after execute does)."""

    __slots__ = ("_arraysize", "_description", "_inline", "_lastrowid", "_rowcount", "_writes")

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        # The base class opens an aiosqlite cursor here (a trip); this one opens none.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1  # the DB-API default, as sqlite3's cursor has it
        self._inline = False
        self._writes = False

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None  # as sqlite3's: nothing to set

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._trip(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._trip(operation, seq_of_parameters, many=True)

    def run_inline(self, *, writes: bool = False) -> None:
        """Run the next statement in the calling thread if it is a SELECT, or with ``writes``
        a write of a transaction that has already written (see the module docstring)."""
        self._inline = True
        self._writes = writes

    def _trip(self, operation: Any, parameters: Any, *, many: bool) -> None:
        adapted = cast("OneTripConnection", self._adapt_connection)
        lock = adapted.inline_lock
        inline, self._inline = self._inline, False
        writes, self._writes = self._writes, False
        try:
            raw: sqlite3.Connection = self._connection._conn
            verb = _verb(operation)
            if (
                inline
                and SHAREABLE
                and (
                    (verb == "SELECT" and not many)
                    or (
                        writes
                        and verb in _DML
                        and adapted.writing
                        and raw.in_transaction
                        and (not many or _at_most(parameters, INLINE_MANY_MAX))
                    )
                )
                and lock.acquire(False)
            ):
                try:
                    ran = _run(raw, operation, parameters, many)
                finally:
                    lock.release()
                outcome: _Outcome = await_(_ready(ran))
            else:
                if not raw.in_transaction and verb in _WRITE_VERBS:
                    adapted.enter_gate()
                try:
                    # Counted from here until the worker has run it, even if this task is
                    # cancelled meanwhile (the worker still runs what was queued).
                    adapted.sent += 1
                    outcome = await_(
                        self._connection._execute(
                            _run_locked, adapted, raw, operation, parameters, many
                        )
                    )
                finally:
                    if not raw.in_transaction:
                        adapted.leave_gate()
                if raw.in_transaction and _takes_write_lock(verb, operation):
                    adapted.writing = True  # it holds SQLite's write lock until it ends
        except Exception as error:
            adapted._handle_exception(error)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows)

    async def _async_soft_close(self) -> None:
        # Nothing is open in the worker thread: the rows are here already.
        return None

    def close(self) -> None:
        self._rows.clear()

    def nextset(self) -> None:
        # One result set per statement in SQLite: there is never a next one (DB-API: None).
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("database", "gate", "gate_loop", "inline_lock", "ran", "sent", "writing")

    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any, database: str | None = None) -> None:
        super().__init__(dbapi, connection)
        # Held by whichever thread runs a statement on this connection.
        self.inline_lock = threading.Lock()
        # Whether the open transaction has written (so holds SQLite's write lock).
        self.writing = False
        # This module's statements handed to the worker thread (counted here, before the
        # hand-off) and finished there (counted under inline_lock): one writer each.
        self.sent = 0
        self.ran = 0
        self.database = database
        # The write gate and its event loop, while this connection holds it.
        self.gate: asyncio.Lock | None = None
        self.gate_loop: asyncio.AbstractEventLoop | None = None

    def enter_gate(self) -> None:
        if self.database is None or self.gate is not None:
            return
        gate = _gate(self.database)
        await_(_enter(gate))
        self.gate, self.gate_loop = gate, asyncio.get_running_loop()

    def leave_gate(self) -> None:
        """Release the gate if held: in its loop's thread directly, from anywhere else (a
        connection collected as garbage in another thread) through that loop."""
        gate, loop = self.gate, self.gate_loop
        self.gate = self.gate_loop = None
        if gate is None or loop is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            gate.release()
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nobody waits
                loop.call_soon_threadsafe(gate.release)

    def commit(self) -> None:
        self._end(super().commit)

    def rollback(self) -> None:
        # Also what the pool does to every connection it takes back (reset on return).
        self._end(super().rollback)

    def _idle(self) -> bool:
        """No transaction open and no statement queued or running: a commit or rollback
        then does nothing in sqlite3 (its documented no-op), so its trip would be for nothing.
        With a statement still queued (one whose task was cancelled) it is not idle: the
        ending makes its trip, behind that statement."""
        raw: sqlite3.Connection | None = self._connection._connection
        if raw is None or not self.inline_lock.acquire(False):
            return False
        try:
            return self.sent == self.ran and not raw.in_transaction
        finally:
            self.inline_lock.release()

    def wrote_nothing(self) -> bool:
        """Whether the open transaction, if any, has written nothing and holds no lock: no
        write statement ran or is queued (a SELECT opens no transaction in sqlite3)."""
        return not self.writing and self._idle()

    def close(self) -> None:
        self._end(super().close, closing=True)

    def terminate(self) -> None:
        self._end(super().terminate, closing=True)

    def _end(self, end: Callable[[], None], *, closing: bool = False) -> None:
        """Commit, roll back, close or terminate (a commit or rollback only when there is
        something to end): the gate goes when the transaction does (always, when the
        connection goes)."""
        self.writing = False
        try:
            if closing or not self._idle():
                end()
        finally:
            raw: sqlite3.Connection | None = self._connection._connection
            if closing or raw is None or not raw.in_transaction:
                self.leave_gate()


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        stock = super().connect(*arg, **kw)
        database = arg[0] if arg else kw.get("database")
        shared = None
        if isinstance(database, str) and database not in ("", ":memory:") and not kw.get("uri"):
            shared = os.path.realpath(database)
        # Same driver connection, our cursor: re-wrap what the stock adapter opened.
        return OneTripConnection(self, stock._connection, shared)


class OneTripSQLiteDialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> AsyncAdapt_aiosqlite_dbapi:
        return OneTripDbapi(__import__("aiosqlite"), __import__("sqlite3"))

    def create_connect_args(self, url: Any) -> Any:
        args, kwargs = super().create_connect_args(url)
        if SHAREABLE:
            # Inline statements use the connection from the event loop's thread too.
            kwargs["check_same_thread"] = False
        return args, kwargs

    def do_execute(
        self,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None = None,
    ) -> None:
        _mark(cursor, context)
        super().do_execute(cursor, statement, parameters, context)  # type: ignore[no-untyped-call]

    def do_executemany(
        self,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None = None,
    ) -> None:
        _mark(cursor, context)
        super().do_executemany(cursor, statement, parameters, context)  # type: ignore[no-untyped-call]


def _mark(cursor: Any, context: ExecutionContext | None) -> None:
    """Pass the statement's inline options to the cursor that will run it."""
    if context is None or not isinstance(cursor, OneTripCursor):
        return
    options = context.execution_options
    writes = bool(options.get(INLINE_WRITES))
    if writes or options.get(INLINE):
        cursor.run_inline(writes=writes)


registry.register(f"sqlite.{DRIVER}", __name__, "OneTripSQLiteDialect")

__all__ = [
    "DRIVER",
    "INLINE",
    "INLINE_MANY_MAX",
    "INLINE_READ",
    "INLINE_WRITES",
    "SHAREABLE",
    "OneTripCursor",
    "OneTripSQLiteDialect",
]
