"""Many rows of one table in one INSERT, with SQLAlchemy's per-statement work done once.

A Core ``connection.execute(insert(table), rows)`` redoes, at every call, what does not
change between calls of the same shape: the compiled statement's cache key and lookup, the
parameters' construction (a dict per row, each value through its type's bind processor by
name), the Python-side defaults through an execution context, and the result's setup. For
the rows a transaction holds (``store.pending``: a request's audit records, a job's
transitions and the job itself) that was ~0.8 ms of a command's CPU on SQLite, against
~0.1 ms for the statements themselves (py-spy, ``docs/benchmarks.md``).

A :class:`Plan` is that work done once per table, column set and dialect: the statement's SQL
with its positional parameters, and for each position the column's own bind processor
(``TypeEngine.dialect_impl(dialect).bind_processor``, the function Core applies) or its
Python-side default (a scalar, or a callable given the row as Core's context would give it).
Rows then go to the driver through ``Connection.exec_driver_sql``, which keeps SQLAlchemy's
transaction, events and exception wrapping (an ``IntegrityError`` stays one). What is stored
is what Core stores: ``tests/unit/store/test_rows.py`` compares the two, column by column.

Only dialects that bind positionally (SQLite's qmark) take this path; on others, and for a
table whose statement needs anything a plan cannot give (a SQL expression as a default, a
sequence), :func:`insert_rows` runs the Core statement as before. Rows that do not all name
the plan's columns also go through Core, which then behaves as it always did.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Dialect

Row = Mapping[str, Any]
_Convert = Callable[[Any], Any]
_Default = Callable[[Row], Any]

# Distinct (table, column set, dialect) plans kept; a process has a few tables of held rows.
_PLANS_MAX: Final = 128


class _RowContext:
    """What a Python-side default's function asks of Core's execution context: the row
    being inserted (``get_current_parameters``), keyed by column key as Core keys it."""

    __slots__ = ("_row",)

    def __init__(self, row: Row) -> None:
        self._row = row

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> Row:
        return self._row


@dataclass(frozen=True, slots=True)
class Plan:
    """One table's INSERT for one set of columns on one dialect, ready to bind rows."""

    sql: str
    keys: tuple[str, ...]
    _values: Callable[[Row], tuple[Any, ...]]
    _converts: tuple[tuple[int, _Convert], ...]
    _defaults: tuple[tuple[int, _Default], ...]

    def bind(self, row: Row) -> tuple[Any, ...] | None:
        """The row's positional parameters; None if it does not name exactly the plan's
        columns (the caller then lets Core judge it)."""
        if len(row) != len(self.keys):
            return None
        try:
            given = self._values(row)
        except KeyError:
            return None
        params = list(given) if len(self.keys) > 1 else [given]
        for position, default in self._defaults:
            params.insert(position, default(row))
        for position, convert in self._converts:
            params[position] = convert(params[position])  # None too, as Core does
        return tuple(params)


def plan_for(table: Table, keys: tuple[str, ...], dialect: Dialect) -> Plan | None:
    """The plan for rows naming ``keys`` (None: Core's statement is needed)."""
    return _plan(table, keys, dialect)


@functools.lru_cache(maxsize=_PLANS_MAX)
def _plan(table: Table, keys: tuple[str, ...], dialect: Dialect) -> Plan | None:
    if dialect.paramstyle != "qmark" or not keys:
        return None
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
    names = compiled.positiontup
    if not names or len(names) != len(set(names)):
        return None
    given = set(keys)
    if not given <= set(names):
        return None  # a key that is not a column of the table: Core says so
    converts: list[tuple[int, _Convert]] = []
    defaults: list[tuple[int, _Default]] = []
    for position, name in enumerate(names):
        column = table.c.get(name)
        if column is None:
            return None
        if name not in given:
            default = _default_of(column.default)
            if default is None:
                return None
            defaults.append((position, default))
        convert = column.type.dialect_impl(dialect).bind_processor(dialect)
        if convert is not None:
            converts.append((position, convert))
    ordered = tuple(name for name in names if name in given)
    return Plan(
        sql=compiled.string,
        keys=ordered,
        _values=operator.itemgetter(*ordered),
        _converts=tuple(converts),
        _defaults=tuple(defaults),
    )


def _default_of(default: Any) -> _Default | None:
    """A column's Python-side default as a function of the row; None for any other kind
    (a SQL expression or a sequence: Core renders those)."""
    if default is None:
        return None
    if default.is_scalar:
        value = default.arg
        return lambda _row: value
    if default.is_callable:
        function = default.arg  # wrapped by SQLAlchemy to take the context
        return lambda row: function(_RowContext(row))
    return None


def insert_rows(connection: Connection, table: Table, rows: Sequence[Row]) -> None:
    """INSERT ``rows`` (each naming the same columns) into ``table`` in one statement."""
    if not rows:
        return
    plan = plan_for(table, tuple(rows[0]), connection.dialect)
    if plan is not None:
        bound = [plan.bind(row) for row in rows]
        params = [p for p in bound if p is not None]
        if len(params) == len(rows):
            if len(params) == 1:
                connection.exec_driver_sql(plan.sql, params[0])
            else:
                connection.exec_driver_sql(plan.sql, params)
            return
    connection.execute(_core_insert(table), list(rows))


@functools.cache
def _core_insert(table: Table) -> Any:
    return insert(table)  # built once per table


__all__ = ["Plan", "insert_rows", "plan_for"]
