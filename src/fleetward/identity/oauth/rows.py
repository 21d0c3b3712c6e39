"""Small helper for conditional writes whose row count decides an outcome."""

from __future__ import annotations

from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, Update


def changed_rows(session: Session, statement: Insert | Update) -> int:
    """Run an INSERT or UPDATE on the session's connection; return how many rows changed.

    Used for "exactly one wins" writes (``UPDATE ... WHERE used_at IS NULL``, ``INSERT ... ON
    CONFLICT DO NOTHING``): on both SQLite and PostgreSQL the second of two concurrent writers
    waits for the first, sees its committed row, and changes nothing. Executed as Core on the
    session's own connection (same transaction), so the row count is the driver's.
    """
    return session.connection().execute(statement).rowcount
