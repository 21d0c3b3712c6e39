"""Rows written with a transaction, without the ORM: append-only records (audit events, a
command job's transitions) that nothing updates once written.

``hold(session, table, row)`` keeps a row with its session; the session writes what it holds
where the ORM would have flushed an object: when it flushes (autoflush before a query,
an explicit ``flush()``) and when it commits, AFTER its ORM objects (so a row may refer to an
object added in the same transaction), each table's rows as ONE multi-row INSERT
(``store.rows``: the statement planned once, not rebuilt by Core at every call). A
rollback, or a session closed without committing, drops them. Inside ``no_autoflush`` they
wait like any pending object.

Why: the ORM's unit of work cost ~1 ms of CPU to flush one audit record on SQLite, and every
request writes at least one.

``hold_new(session, obj)`` does the same for a NEW ORM object of a model without column
defaults (a command job): it is INSERTed with one Core statement per table, before the held
rows, then attached to the session as persistent and unchanged, so that later changes to it
are flushed as UPDATEs like any loaded object's. Until then it is not in the session: the
caller must not query for it in the same transaction before a flush.

The sessions of ``store.engine.session_factory`` are :class:`PendingRowsSession`; any other
session still writes its rows at commit (the ``before_commit`` listener below), only not at
its autoflushes.

``hold(..., keep=True)`` marks a record that must outlive its transaction: an authorization
decision was made whether or not the request's writes commit (a race lost at a unique index,
a version conflict, an error after the decision). If the transaction ends without a commit,
the session keeps those rows aside; :func:`orphaned` hands them over, and the unit of work
(``store.uow``) writes them in a transaction of their own when it closes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import Table, event, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, Session, SessionTransaction, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from fleetward.store.rows import insert_rows
from fleetward.store.sqlite_driver import OneTripConnection

Row = dict[str, Any]

_KEY: Final = "fleetward.pending-rows"
_NEW: Final = "fleetward.pending-objects"
# Rows held with keep=True in the current transaction, and those of a transaction that ended
# without a commit.
_KEPT: Final = "fleetward.kept-rows"
_ORPHANED: Final = "fleetward.orphaned-rows"
# Mappers checked by hold_new (a model's columns do not change while the process runs).
_PLAIN: set[Mapper[Any]] = set()


def hold(session: AsyncSession, table: Table, row: Row, *, keep: bool = False) -> None:
    """Keep ``row`` for ``table`` with the session's transaction (begun here if need be: no
    I/O, the connection is taken at the first statement). Every row of one table must name
    the same columns: they are written in one statement. ``keep``: written even if the
    transaction does not commit (see above)."""
    sync = session.sync_session
    if not sync.in_transaction():
        sync.begin()
    held: dict[Table, list[Row]] = sync.info.setdefault(_KEY, {})
    held.setdefault(table, []).append(row)
    if keep:
        sync.info.setdefault(_KEPT, []).append((table, row))


def orphaned(session: AsyncSession) -> list[tuple[Table, Row]]:
    """The kept rows of the session's transactions that ended without a commit, handed over
    (the session forgets them): the caller writes them."""
    rows: list[tuple[Table, Row]] = session.sync_session.info.pop(_ORPHANED, [])
    return rows


def hold_orphans(session: AsyncSession, rows: Sequence[tuple[Table, Row]]) -> None:
    """Hold ``rows`` (from :func:`orphaned`) with ``session``'s transaction, still kept."""
    for table, row in rows:
        hold(session, table, row, keep=True)


def hold_new(session: AsyncSession, obj: Any) -> None:
    """Keep a new ORM object to be INSERTed with the transaction's held rows (see above)."""
    mapper = inspect(obj).mapper
    if mapper not in _PLAIN:
        _check_plain(mapper)
        _PLAIN.add(mapper)
    sync = session.sync_session
    if not sync.in_transaction():
        sync.begin()
    objects: list[Any] = sync.info.setdefault(_NEW, [])
    objects.append(obj)


def _check_plain(mapper: Mapper[Any]) -> None:
    """Only a model whose every column is a plain attribute without defaults: its INSERT is
    then exactly its attributes (None where unset), as the ORM's would be."""
    for column in mapper.local_table.columns:
        if column.default is not None or column.server_default is not None:
            raise TypeError(f"{mapper.class_.__name__}.{column.key} has a default")
    if len(mapper.column_attrs) != len(mapper.local_table.columns) or mapper.inherits:
        raise TypeError(f"{mapper.class_.__name__} is not one plain table")


def take_rows_only(
    session: AsyncSession,
) -> tuple[list[tuple[Table, Row]], list[tuple[Table, Row]]] | None:
    """The rows ``session`` holds, and those of them held with ``keep``, taken from it, when
    they are ALL its transaction would write: no ORM object new, changed or deleted, no new
    object held, and nothing written on its connection yet: no statement run at all, or on
    SQLite none that wrote (its driver tells; on other stores a statement run means "cannot
    tell"). None otherwise: its commit writes them."""
    sync = session.sync_session
    info = sync.info
    rows: dict[Table, list[Row]] | None = info.get(_KEY)
    if not rows or info.get(_NEW) or sync.new or sync.deleted or sync.dirty:
        return None
    if not _wrote_nothing(sync):
        return None
    del info[_KEY]
    kept: list[tuple[Table, Row]] = info.pop(_KEPT, [])
    return [(table, row) for table, table_rows in rows.items() for row in table_rows], kept


def _wrote_nothing(sync: Session) -> bool:
    transaction = sync.get_transaction()
    if transaction is None:
        return True
    # SQLAlchemy keeps a transaction's connections in this mapping (bind -> connection and
    # its transaction); read defensively: anything unexpected means "cannot tell".
    connections = getattr(transaction, "_connections", None)
    if not isinstance(connections, dict):
        return False
    for entry in connections.values():
        try:
            dbapi = entry[0].connection.dbapi_connection
        except Exception:
            return False
        if not isinstance(dbapi, OneTripConnection) or not dbapi.wrote_nothing():
            return False
    return True


def held(session: AsyncSession | Session, table: Table) -> Sequence[Row]:
    """The rows ``session`` holds for ``table``, not yet written."""
    rows: dict[Table, list[Row]] = session.info.get(_KEY, {})
    return tuple(rows.get(table, ()))


def write_held(session: Session) -> None:
    """Write what ``session`` holds (its ORM objects must be flushed already): the new
    objects, then the rows."""
    objects: list[Any] | None = session.info.pop(_NEW, None)
    if objects:
        _insert_new(session, objects)
    rows: dict[Table, list[Row]] | None = session.info.pop(_KEY, None)
    if rows:
        connection = session.connection()
        for table, table_rows in rows.items():
            insert_rows(connection, table, table_rows)


def _insert_new(session: Session, objects: list[Any]) -> None:
    by_table: dict[Table, list[Row]] = {}
    for obj in objects:
        state = inspect(obj)
        mapper, values = state.mapper, state.dict
        row = {}
        for prop in mapper.column_attrs:
            if prop.key not in values:
                set_committed_value(obj, prop.key, None)  # what the INSERT stores
            row[prop.columns[0].key] = values.get(prop.key)
        by_table.setdefault(mapper.local_table, []).append(row)
    connection = session.connection()
    for table, rows in by_table.items():
        insert_rows(connection, table, rows)
    for obj in objects:
        make_transient_to_detached(obj)  # its attributes as stored: nothing to flush
        session.add(obj)


class PendingRowsSession(Session):
    """A session whose flushes also write its held rows (after its objects)."""

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        super().flush(objects)
        if objects is None:
            write_held(self)


@event.listens_for(Session, "before_commit")
def _write_at_commit(session: Session) -> None:
    if session.info.get(_KEY) or session.info.get(_NEW):
        session.flush()  # the objects first: rows may refer to them
        write_held(session)


@event.listens_for(Session, "after_commit")
def _kept_committed(session: Session) -> None:
    session.info.pop(_KEPT, None)  # written with the rest


@event.listens_for(Session, "after_transaction_end")
def _drop(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the session's transaction, not a savepoint
        session.info.pop(_KEY, None)
        session.info.pop(_NEW, None)
        kept: list[tuple[Table, Row]] | None = session.info.pop(_KEPT, None)
        if kept:  # ended without a commit (after_commit clears them)
            session.info.setdefault(_ORPHANED, []).extend(kept)


__all__ = [
    "PendingRowsSession",
    "Row",
    "held",
    "hold",
    "hold_new",
    "hold_orphans",
    "orphaned",
    "take_rows_only",
    "write_held",
]
