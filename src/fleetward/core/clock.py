"""Time. Services take a :class:`Clock` so that tests can move time; all times are aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


def in_utc(moment: datetime) -> datetime:
    """An aware time as the UTC instant it names, as the store keeps it. ValueError when UTC
    cannot hold it (an offset at either end of the calendar: 0001-01-01T00:00+05:00), so a
    caller refuses it as input instead of failing at flush."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is outside the range of UTC times") from None


class Clock(Protocol):
    """Source of the current time. Implementations are thread-safe and return aware UTC."""

    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = when.astimezone(UTC)
