"""Which unique constraint refused a row, told by the store rather than guessed from text.

A flush that loses a race on a unique column raises ``IntegrityError``; a service that turns
one such race into its own refusal (a key certified twice is ``key-reused``, not a 500) must
not turn every other integrity failure into it. PostgreSQL names the constraint (the
driver's ``constraint_name``), and Fleetward's naming convention (``store.base``) makes that
name known in advance; SQLite names the columns (``UNIQUE constraint failed: table.column``,
its fixed format). Both are compared exactly: a message merely mentioning the column is not
a match.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Column, Index, UniqueConstraint
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import KeyedColumnElement

_SQLITE_UNIQUE: Final = "UNIQUE constraint failed: "


def violates_unique(error: IntegrityError, column: KeyedColumnElement[Any]) -> bool:
    """Whether ``error`` is the unique constraint (or unique index) on ``column`` alone (a
    table's column: ``Model.__table__.c.name``)."""
    if not isinstance(column, Column):
        raise TypeError("a table's column is needed")
    name = _constraint_name(error)
    if name is not None:
        return name in _unique_names(column)
    message = str(error.orig)
    if not message.startswith(_SQLITE_UNIQUE):
        return False
    failed = message[len(_SQLITE_UNIQUE) :].split(", ")
    return failed == [f"{column.table.name}.{column.name}"]


def _constraint_name(error: IntegrityError) -> str | None:
    """The constraint PostgreSQL's driver names (asyncpg's ``constraint_name``, psycopg's
    ``diag.constraint_name``), on the adapted error or the driver's own behind it."""
    for candidate in (error.orig, getattr(error.orig, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if name is None:
            name = getattr(getattr(candidate, "diag", None), "constraint_name", None)
        if isinstance(name, str):
            return name
    return None


def _unique_names(column: Column[Any]) -> frozenset[str]:
    table = column.table
    names: set[str] = set()
    for item in (*table.constraints, *table.indexes):
        if isinstance(item, Index) and not item.unique:
            continue
        if not isinstance(item, UniqueConstraint | Index):
            continue
        if [c.name for c in item.columns] == [column.name] and item.name is not None:
            names.add(str(item.name))
    return frozenset(names)


__all__ = ["violates_unique"]
