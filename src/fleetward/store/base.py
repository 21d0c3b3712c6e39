"""Declarative base, naming conventions and column types shared by every capability's models."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import DateTime, Enum, MetaData, String
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 40

# The text SQLAlchemy's SQLite DATETIME stores (its default storage format), which
# ``UtcDateTime`` writes without going through that type's processor (see below).
SQLITE_DATETIME_FORMAT: Final = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC)


def _to_the_second(value: datetime) -> str:
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )


def sqlite_utc_text(value: datetime) -> str:
    """An aware datetime as the naive-UTC text SQLite's DATETIME stores for it (~1 us, against
    ~10 us through ``process_bind_param`` and the DATETIME processor's format dict)."""
    value = _utc(value)
    return f"{_to_the_second(value)}.{value.microsecond:06d}"


class SqliteUtcText:
    """:func:`sqlite_utc_text` for one single-threaded owner writing many times a second (a
    telemetry batch writer's column): the text up to the second is kept for the last second
    seen (~0.5 us a value). Not for shared use: its two fields change together only within
    one thread."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second: tuple[int, ...] = ()
        self._text = ""

    def __call__(self, value: datetime) -> str:
        value = _utc(value)
        second = (value.year, value.month, value.day, value.hour, value.minute, value.second)
        if second != self._second:
            self._second = second
            self._text = _to_the_second(value)
        return f"{self._text}.{value.microsecond:06d}"


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    SQLite has no time zones, so values are stored as naive UTC and made aware on load.
    Naive datetimes are refused on the way in: an unlabelled time is a bug, not a default.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """On SQLite with the DATETIME type's default format, one function straight to the
        stored text (every statement binds times: each row's ``occurred_at``, a job's
        ``updated_at``); anything but a datetime still goes the documented way, through
        ``process_bind_param`` and the impl's processor. Elsewhere, that way only.
        ``tests/unit/store/test_store.py`` compares the two."""
        standard = super().bind_processor(dialect)
        impl = self.impl_instance.dialect_impl(dialect)
        if dialect.name != "sqlite" or getattr(impl, "_storage_format", None) != (
            SQLITE_DATETIME_FORMAT
        ):
            return standard

        def process(value: Any) -> Any:
            if value.__class__ is datetime:
                return sqlite_utc_text(value)
            return standard(value) if standard is not None else value

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError("UTC column returned a non-datetime")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime()}


def id_column() -> Mapped[str]:
    return mapped_column(String(ID_LENGTH), primary_key=True)


def str_enum(cls: type[StrEnum], name: str) -> Enum:
    """A StrEnum stored as its value with a CHECK constraint, the same on SQLite and PostgreSQL."""
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )
