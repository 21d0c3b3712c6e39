"""Group commit for the records of read-only requests.

Every authorized read writes one record (its authorization decision, ``store.pending``), so
on its own a read is a write transaction: the INSERT, the COMMIT, and on SQLite a turn at the
process's write gate and two trips to the driver's worker thread. Under concurrent reads
those transactions queue one behind the other at the gate, each carrying one row.

:class:`RowGroup` writes the rows of such requests together: a request whose transaction
has written nothing else (:func:`store.pending.take_rows_only`) hands its rows over and waits
until they are committed. Whoever finds no batch being written writes everything handed over
until then, in ONE transaction (one INSERT per table and column set, one COMMIT); those who
arrive meanwhile wait for their turn and the next one takes all of them. No timer: a lone
request writes at once, alone, as before; under load batches grow by themselves.

What a request is told is unchanged: it returns after its records are committed, and a
failure to commit them is its failure (a batch that fails is written again row set by row set,
so that one request's bad row does not fail the others). A waiter that is cancelled leaves
its rows to be written anyway (they are records of decisions that were made), as the unit of
work's kept records are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import Connection, Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetward.store.pending import Row
from fleetward.store.rows import insert_rows
from fleetward.store.sqlite_driver import INLINE_WRITES

Rows = Sequence[tuple[Table, Row]]


class RowGroup:
    """One per store (per session factory), used from one event loop at a time."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._waiting: list[tuple[Rows, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Transactions written and rows in them (their ratio is what grouping saves).
        self.batches = 0
        self.rows = 0

    async def commit(self, rows: Rows) -> None:
        """Return once ``rows`` are committed; raise what their transaction raised. A caller
        cancelled meanwhile stops waiting; its rows are written all the same."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._adopt(loop)
        waiter = _waiter(loop)
        self._waiting.append((rows, waiter))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain(), name="fleetward-row-group")
        await asyncio.shield(waiter)

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """A platform used from a new event loop (a command-line tool running ``asyncio.run``
        again): the rows the old loop left unwritten are still owed, to be written with the
        next batch; their waiters went with their loop."""
        self._waiting = [(rows, _waiter(loop)) for rows, _ in self._waiting]
        self._writer = None
        self._loop = loop

    async def close(self) -> None:
        """Wait until what was handed over is written (the store is about to close)."""
        writer = self._writer
        if writer is not None and not writer.done() and writer.get_loop() is _running():
            await asyncio.shield(writer)

    async def _drain(self) -> None:
        # Everything handed over while a batch was being written is the next batch.
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._write_batch(batch)
            except asyncio.CancelledError:
                # The loop is going away (asyncio.run ending): what this batch had not
                # settled is owed again. Its transaction may have committed just before:
                # written again, the records' unique ids refuse the copies.
                self._waiting[:0] = [entry for entry in batch if not entry[1].done()]
                raise

    async def _write_batch(self, batch: list[tuple[Rows, asyncio.Future[None]]]) -> None:
        try:
            await self._write([row for rows, _ in batch for row in rows])
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0][1], error)
                return
            for rows, waiter in batch:  # one by one: a bad row fails its own request only
                try:
                    await self._write(rows)
                except Exception as own:
                    _settle(waiter, own)
                else:
                    _settle(waiter, None)
            return
        for _, waiter in batch:
            _settle(waiter, None)

    async def _write(self, rows: Rows) -> None:
        grouped: dict[tuple[Table, tuple[str, ...]], list[Row]] = {}
        for table, row in rows:
            grouped.setdefault((table, tuple(row)), []).append(row)
        async with self._sessions() as session:
            connection = await session.connection(execution_options={INLINE_WRITES: True})
            await connection.run_sync(_insert_all, grouped)
            await session.commit()
        self.batches += 1
        self.rows += len(rows)


def _insert_all(
    connection: Connection, grouped: dict[tuple[Table, tuple[str, ...]], list[Row]]
) -> None:
    for (table, _keys), rows in grouped.items():
        insert_rows(connection, table, rows)


def _running() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _waiter(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    waiter: asyncio.Future[None] = loop.create_future()
    waiter.add_done_callback(_retrieved)
    return waiter


def _retrieved(waiter: asyncio.Future[None]) -> None:
    # A waiter whose caller was cancelled is never awaited: its error is read here, so that
    # asyncio does not report it as never retrieved (the caller's request ended already).
    if not waiter.cancelled():
        waiter.exception()


def _settle(waiter: asyncio.Future[None], error: BaseException | None) -> None:
    if waiter.done():
        return
    if error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(error)


__all__ = ["RowGroup", "Rows"]
