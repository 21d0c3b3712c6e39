"""Where the evaluator is in the audit log: one row, moved in the same transaction as the
alerts its batch raised, so a restart neither misses nor repeats an event.

``seq`` is the highest sequence number evaluated. ``pending`` holds the ranges below it that
had no committed record when it moved past them (less the records found in them since): on
PostgreSQL sequence values commit out of order, so a record may become visible after a higher
one was evaluated, however much later its transaction commits. They are looked for on every
step and given up only when no transaction can fill them any more (audit/gaps.py: the same
ranges and rule as the audit sealer's; a rolled-back insert never fills its gap).

Bounded: the evaluator opens no new range while ``PENDING_MAX`` are held (it waits before the
record that would open one, rather than forget a range); a late record found inside a range
splits it, so the count can pass the bound only by records found late while at it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, BigInteger, Integer, String, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.audit.gaps import Gap
from fleetward.store.base import Base

AUDIT_STREAM: Final = "audit"
PENDING_MAX: Final = 10_000


class DetectionCursor(Base):
    __tablename__ = "detection_cursors"

    stream: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    # {"gaps": [[low, high, first missed (ISO 8601 UTC), xid bound or null], ...]}; rows
    # written before ranges: {seq (as text): first missed}, read as one-seq ranges.
    pending: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]


@dataclass(frozen=True, slots=True)
class Position:
    seq: int
    pending: tuple[Gap, ...] = ()  # sorted by low, disjoint, all below seq

    @property
    def ranges(self) -> frozenset[tuple[int, int]]:
        return frozenset((gap.low, gap.high) for gap in self.pending)


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
    return Position(row.seq, _decoded(row.pending or {}))


async def create(session: AsyncSession, seq: int, now: datetime) -> Position | None:
    """Place the cursor at ``seq``; None if another evaluator placed it first (replicas
    starting at once both find no row to lock: the second waits for the first's insert and
    changes nothing, instead of failing on the key)."""
    connection = await session.connection()
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(DetectionCursor)
        .values(stream=AUDIT_STREAM, seq=seq, pending=_encoded(()), updated_at=now)
        .on_conflict_do_nothing(index_elements=["stream"])
    )
    result = await connection.execute(statement)
    return Position(seq) if getattr(result, "rowcount", 0) == 1 else None


async def move(session: AsyncSession, old: Position, new: Position, now: datetime) -> Position:
    """Move from ``old`` to ``new``; raises :class:`CursorMoved` if it is no longer at ``old``.
    Every pending range is stored (the evaluator keeps their number bounded)."""
    result = await session.execute(
        update(DetectionCursor)
        .where(DetectionCursor.stream == AUDIT_STREAM, DetectionCursor.seq == old.seq)
        .values(
            seq=new.seq,
            pending=_encoded(new.pending),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise CursorMoved("the detection cursor moved under this evaluator")
    return new


def _encoded(pending: tuple[Gap, ...]) -> dict[str, Any]:
    return {"gaps": [[g.low, g.high, g.seen_at.isoformat(), g.xid_bound] for g in pending]}


def _decoded(stored: Mapping[str, Any]) -> tuple[Gap, ...]:
    if "gaps" in stored:
        return tuple(
            Gap(
                int(low), int(high), datetime.fromisoformat(seen), None if xid is None else int(xid)
            )
            for low, high, seen, xid in stored["gaps"]
        )
    merged: list[Gap] = []  # the one-seq form: adjacent seqs become one range, its oldest age
    for seq, seen in sorted((int(k), datetime.fromisoformat(v)) for k, v in stored.items()):
        if merged and merged[-1].high == seq - 1:
            last = merged[-1]
            merged[-1] = Gap(last.low, seq, min(last.seen_at, seen))
        else:
            merged.append(Gap(seq, seq, seen))
    return tuple(merged)
