"""Unit of work: one transaction, committed only when the service says so.

Leaving the block without ``commit()`` rolls back, so an error half-way through a service
changes nothing in the store. Records held to outlive their transaction (authorization
decisions: ``store.pending``) are then written in a transaction of their own.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetward.observability.logging import get_logger
from fleetward.store.group import RowGroup
from fleetward.store.pending import Row, hold_orphans, orphaned, take_rows_only
from fleetward.store.sqlite_driver import INLINE_WRITES

logger = get_logger(__name__)


class UnitOfWork:
    """Not thread-safe and not reentrant: one per task, used as ``async with``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        inline_writes: bool = False,
        write_lock: bool = False,
        group: RowGroup | None = None,
    ) -> None:
        """``inline_writes``: on SQLite the transaction's writes after its first run in the
        event loop's thread (``store.sqlite_driver``; other stores ignore it). For short
        transactions of a few rows only: the commit is their end.

        ``write_lock``: on SQLite the transaction begins holding the store's write lock
        (``BEGIN IMMEDIATE``, behind this process's other writers): everything it reads, it
        reads as it stands at its commit, since no other writer can commit meanwhile
        (:attr:`serialized`). Other stores ignore it. For short transactions that must decide
        and write on the same facts (a command's creation and delivery).

        ``group``: where a transaction that writes nothing but held rows (a read's decision
        record) commits them, together with other requests' (``store.group``); and where
        kept records of a transaction that did not commit are written."""
        self._sessions = sessions
        self._group = group
        self._inline_writes = inline_writes
        self._write_lock = write_lock
        self._serialized = False
        self._session: AsyncSession | None = None

    @property
    def serialized(self) -> bool:
        """Whether this transaction has held the store's write lock since it began: no
        other transaction can have committed between its reads and its commit."""
        return self._serialized

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._session

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        if self._inline_writes or self._write_lock:
            # The connection this session takes now, for its first transaction (with its
            # options: they are set when it is taken).
            connection = await self._session.connection(
                execution_options={INLINE_WRITES: True} if self._inline_writes else None
            )
            if self._write_lock and connection.dialect.name == "sqlite":
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
                self._serialized = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() rolls back whatever was not committed and detaches loaded objects without
        # expiring them, so results stay readable after the block.
        session = self.session
        self._session = None
        self._serialized = False
        await session.close()
        rows = orphaned(session)
        if rows:
            await self._write_orphans(rows)

    async def _write_orphans(self, rows: list[tuple[Table, Row]]) -> None:
        """The kept records of a transaction that did not commit, in one of their own (after
        it ended: on SQLite it may have held the write lock). A store that cannot take them
        now is logged, never raised: the request's own outcome stands."""
        try:
            if self._group is not None:
                await self._group.commit(rows)
                return
            async with self._sessions() as session:
                hold_orphans(session, rows)
                await session.commit()
        except Exception as exc:
            logger.error("audit.kept_records_lost", count=len(rows), error=type(exc).__name__)

    async def commit(self) -> None:
        session = self.session
        taken = take_rows_only(session) if self._group is not None else None
        if taken is None or self._group is None:
            await session.commit()
            return
        rows, kept = taken
        # Its own (read-only) transaction ends first: the connection goes back to the pool
        # before waiting for the batch, which needs one (waiters holding them all would
        # starve it). If that fails, or the batch does, the kept rows are still owed, as
        # after any failed commit (written in a transaction of their own when this unit of
        # work closes). A cancelled wait owes nothing: the batch writes them all the same.
        try:
            await session.commit()
        except BaseException:
            hold_orphans(session, kept)
            raise
        try:
            await self._group.commit(rows)
        except Exception:
            hold_orphans(session, kept)
            raise

    async def flush(self) -> None:
        await self.session.flush()
