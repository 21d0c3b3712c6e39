"""A store too busy to serve (lock contention, an exhausted connection pool) is a 503 with
Retry-After, never a 500: nothing was written and the same request may be tried again."""

from __future__ import annotations

from typing import Final

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fleetward.core.errors import ServiceUnavailable

# PostgreSQL: serialization failure, deadlock, lock not available.
_BUSY_SQLSTATES: Final = frozenset({"40001", "40P01", "55P03"})
_BUSY_SQLITE_TEXT: Final = ("database is locked", "database table is locked")


class StoreBusy(ServiceUnavailable):
    """The store could not take the write now (lock contention, connection pool exhausted);
    nothing was written and the same request may be retried after ``Retry-After``."""

    code = "store-busy"
    title = "Store busy"

    def __init__(self, retry_after_s: int = 1) -> None:
        super().__init__(
            "the store is busy; retry the request",
            reason="store-busy",
            headers={"Retry-After": str(retry_after_s)},
        )


def is_store_busy(exc: BaseException) -> bool:
    """Whether ``exc`` says the store was too busy to serve, as opposed to refusing the data
    (an integrity error) or being down: the same transaction may succeed if tried again."""
    if isinstance(exc, StoreBusy | PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    original = exc.orig
    if getattr(original, "sqlstate", None) in _BUSY_SQLSTATES:
        return True
    text = str(original).lower()
    return any(phrase in text for phrase in _BUSY_SQLITE_TEXT)


__all__ = ["StoreBusy", "is_store_busy"]
