"""SQLite through aiosqlite with one thread round trip per statement.

SQLAlchemy's aiosqlite adapter makes four trips to aiosqlite's worker thread for a SELECT
(open a cursor, execute, fetch all, close) and three for a write, each a queue hand-off, a
thread wake-up and a wake-up of the event loop through its self-pipe, plus a greenlet switch
per trip. Measured on this VM: ~260 us of CPU for ``SELECT 1`` through SQLAlchemy against
~1.5 us for the statement itself in the stdlib driver. This dialect keeps everything else of
SQLAlchemy's ``aiosqlite`` dialect (the worker thread, so that a slow statement, a lock wait
in SQLite's busy handler or an fsync never blocks the event loop) and runs a statement's
execute, fetch and close as ONE function in the worker thread.

It reaches into ``aiosqlite.Connection._execute`` (the method every public aiosqlite call
goes through; SQLAlchemy's own adapter uses the same queue for ``isolation_level``), so the
project pins aiosqlite's minor version and ``tests/unit/store/test_sqlite_driver.py`` checks the
dialect against the stock one. ``create_engine`` selects it for every ``sqlite+aiosqlite``
URL; the URL users write does not change.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any, Final

from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

DRIVER: Final = "fleetward_aiosqlite"

# description, rows, rowcount, lastrowid
_Outcome = tuple[Any, list[Any], int, int | None]


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """In the worker thread: the whole life of one cursor."""
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


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A client-side cursor whose statement makes one trip to the worker thread; the rows
    come back with it (as the stock adapter's ``fetchall`` after execute does)."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

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

    def _trip(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection = self._connection
        try:
            outcome: _Outcome = await_(
                connection._execute(_run, connection._conn, operation, parameters, many)
            )
        except Exception as error:
            self._adapt_connection._handle_exception(error)
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
    __slots__ = ()

    _cursor_cls = OneTripCursor


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        stock = super().connect(*arg, **kw)
        # Same driver connection, our cursor: re-wrap what the stock adapter opened.
        return OneTripConnection(self, stock._connection)


class OneTripSQLiteDialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> AsyncAdapt_aiosqlite_dbapi:
        return OneTripDbapi(__import__("aiosqlite"), __import__("sqlite3"))


registry.register(f"sqlite.{DRIVER}", __name__, "OneTripSQLiteDialect")

__all__ = ["DRIVER", "OneTripCursor", "OneTripSQLiteDialect"]
