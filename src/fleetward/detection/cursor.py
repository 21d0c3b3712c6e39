"""Where the evaluator is in the audit log: one row, moved in the same transaction as the
alerts its batch raised, so a restart neither misses nor repeats an event.

``seq`` is the highest sequence number evaluated. ``pending`` holds the numbers below it that
were missing when it moved past them: on PostgreSQL sequence values commit out of order, so a
record may become visible after a higher one was evaluated. They are looked for on every step
until ``gap_grace`` after they were first missed (a rolled-back insert never fills its gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, BigInteger, Integer, String, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import Base

AUDIT_STREAM: Final = "audit"
PENDING_MAX: Final = 10_000


class DetectionCursor(Base):
    __tablename__ = "detection_cursors"

    stream: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    # seq (as text) -> when it was first missed (ISO 8601 UTC).
    pending: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]


@dataclass(frozen=True, slots=True)
class Position:
    seq: int
    pending: dict[int, datetime]


class CursorMoved(Exception):
    """Another evaluator moved the cursor since this one read it: its batch is void."""


async def read(session: AsyncSession, *, lock: bool) -> Position | None:
    """The cursor, or None when detection never ran on this store. With ``lock`` the row is
    locked for the transaction (PostgreSQL; SQLite serializes writers anyway), so two
    evaluators never evaluate the same batch at once."""
    query = select(DetectionCursor).where(DetectionCursor.stream == AUDIT_STREAM)
    if lock:
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None:
        return None
    pending = {int(k): datetime.fromisoformat(v) for k, v in (row.pending or {}).items()}
    return Position(row.seq, pending)


async def create(session: AsyncSession, seq: int, now: datetime) -> Position | None:
    """Place the cursor at ``seq``; None if another evaluator placed it first (replicas
    starting at once both find no row to lock: the second waits for the first's insert and
    changes nothing, instead of failing on the key)."""
    connection = await session.connection()
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(DetectionCursor)
        .values(stream=AUDIT_STREAM, seq=seq, pending={}, updated_at=now)
        .on_conflict_do_nothing(index_elements=["stream"])
    )
    result = await connection.execute(statement)
    return Position(seq, {}) if getattr(result, "rowcount", 0) == 1 else None


async def move(session: AsyncSession, old: Position, new: Position, now: datetime) -> Position:
    """Move from ``old`` to ``new``; raises :class:`CursorMoved` if it is no longer at ``old``.
    The position as stored (at most ``PENDING_MAX`` pending, the newest)."""
    kept = sorted(new.pending.items())[-PENDING_MAX:]
    result = await session.execute(
        update(DetectionCursor)
        .where(DetectionCursor.stream == AUDIT_STREAM, DetectionCursor.seq == old.seq)
        .values(
            seq=new.seq,
            pending={str(k): v.isoformat() for k, v in kept},
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise CursorMoved("the detection cursor moved under this evaluator")
    return Position(new.seq, dict(kept))
