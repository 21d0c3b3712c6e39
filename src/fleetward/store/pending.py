"""Rows written with a transaction, without the ORM: append-only records (audit events, a
command job's transitions) that nothing updates once written.

``hold(session, table, row)`` keeps a row with its session; the session writes what it holds
where the ORM would have flushed an object: when it flushes (autoflush before a query,
an explicit ``flush()``) and when it commits, AFTER its ORM objects (so a row may refer to an
object added in the same transaction), each table's rows as ONE multi-row Core INSERT. A
rollback, or a session closed without committing, drops them. Inside ``no_autoflush`` they
wait like any pending object.

Why: the ORM's unit of work cost ~1 ms of CPU to flush one audit record on SQLite, and every
request writes at least one. The sessions of ``store.engine.session_factory`` are
:class:`PendingRowsSession`; any other session still writes its rows at commit (the
``before_commit`` listener below), only not at its autoflushes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import Table, event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

Row = dict[str, Any]

_KEY: Final = "fleetward.pending-rows"


def hold(session: AsyncSession, table: Table, row: Row) -> None:
    """Keep ``row`` for ``table`` with the session's transaction (begun here if need be: no
    I/O, the connection is taken at the first statement). Every row of one table must name
    the same columns: they are written in one statement."""
    sync = session.sync_session
    if not sync.in_transaction():
        sync.begin()
    held: dict[Table, list[Row]] = sync.info.setdefault(_KEY, {})
    held.setdefault(table, []).append(row)


def held(session: AsyncSession | Session, table: Table) -> Sequence[Row]:
    """The rows ``session`` holds for ``table``, not yet written."""
    rows: dict[Table, list[Row]] = session.info.get(_KEY, {})
    return tuple(rows.get(table, ()))


def write_held(session: Session) -> None:
    """Write what ``session`` holds (its ORM objects must be flushed already)."""
    rows: dict[Table, list[Row]] | None = session.info.pop(_KEY, None)
    if rows:
        connection = session.connection()
        for table, table_rows in rows.items():
            connection.execute(_insert(table), table_rows)


@functools.cache
def _insert(table: Table) -> Any:
    return insert(table)  # built once per table


class PendingRowsSession(Session):
    """A session whose flushes also write its held rows (after its objects)."""

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        super().flush(objects)
        if objects is None:
            write_held(self)


@event.listens_for(Session, "before_commit")
def _write_at_commit(session: Session) -> None:
    if session.info.get(_KEY):
        session.flush()  # the objects first: rows may refer to them
        write_held(session)


@event.listens_for(Session, "after_transaction_end")
def _drop(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the session's transaction, not a savepoint
        session.info.pop(_KEY, None)


__all__ = ["PendingRowsSession", "Row", "held", "hold", "write_held"]
