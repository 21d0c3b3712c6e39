"""The sealer's gaps: the seq ranges it moved past with no committed record in them.

On PostgreSQL a record takes its ``seq`` at INSERT and commits whenever its transaction does,
so the sealer can move past a seq whose record is still uncommitted (it commits "late"), or
whose transaction rolled back (the seq stays empty for good). The sealer notes every such
range here, when it moves past it, and looks in every noted range on each batch: a record that
commits late is found however far behind the sealer it is, by an index probe per live range,
not by rereading a window of the log. Nothing is written on the request path: the rows are
written by the sealer, one multi-row INSERT per batch that skipped seqs.

A range is given up (deleted) only when no transaction can still fill it:

- PostgreSQL: once it is older than ``grace``, the next xid to be assigned is noted
  (``xid_bound``); a later pass deletes it once every transaction with a smaller xid has
  ended (the snapshot's xmin has reached the bound). A transaction holding a seq in the range
  took it before the range was noted and gets its xid in the same INSERT statement, so well
  within ``grace``: its xid is below the bound, and the range waits for it however long it
  runs. Only a backend stalled for longer than ``grace`` between drawing the seq and writing
  the row could escape; its record would then be reported by ``verify`` as ``inserted``.
- SQLite: writers are serialized (the sealer holds the write lock), so nothing is ever in
  flight; a range is given up ``grace`` after it was noted.

The snapshot (its xmin) is read before the records in the ranges are, so a range deleted in
a batch had every record it will ever hold visible to that batch.

The detection evaluator follows the log by seq too and holds its ranges in its cursor row
(detection/cursor.py): :class:`Gap`, :func:`fill` and :func:`settle` are the same ranges and
the same rule for ranges held in memory.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Row,
    Select,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.audit.models import AuditRecord
from fleetward.store.base import Base

GAP_GRACE: Final = timedelta(minutes=1)
RANGES_PAGE: Final = 500
_SNAPSHOT: Final = text(
    "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint"
    " FROM pg_current_snapshot() AS s"
)


class AuditSealGap(Base):
    """Seqs ``low``..``high`` (inclusive) had no committed record when the sealer passed."""

    __tablename__ = "audit_seal_gaps"

    low: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    high: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[datetime]
    # PostgreSQL: the next xid when the range was older than the grace (see the module).
    xid_bound: Mapped[int | None] = mapped_column(BigInteger)


def missing(after: int, seqs: Iterable[int]) -> list[tuple[int, int]]:
    """The ranges of seqs above ``after`` and below the last of ``seqs`` (ascending) that are
    not in ``seqs``."""
    ranges: list[tuple[int, int]] = []
    expected = after + 1
    for seq in seqs:
        if seq > expected:
            ranges.append((expected, seq - 1))
        expected = max(expected, seq + 1)
    return ranges


async def note(session: AsyncSession, ranges: Sequence[tuple[int, int]], now: datetime) -> None:
    if ranges:
        await session.execute(
            insert(AuditSealGap),
            [{"low": low, "high": high, "seen_at": now, "xid_bound": None} for low, high in ranges],
        )


async def late_records(
    session: AsyncSession, unsealed: Select[Any], below: int, limit: int
) -> tuple[list[Row[Any]], bool]:
    """Up to ``limit`` rows of ``unsealed`` (a query of unsealed records) in the noted ranges
    and below ``below``, in seq order, and whether any range is noted at all (none: nothing
    to :func:`retire`). The ranges are read a page at a time and the records asked for by
    their seq ranges (index range scans: a join ordered by seq could walk the whole log in
    seq order instead)."""
    found: list[Row[Any]] = []
    noted = False
    after: int | None = None
    while len(found) < limit:
        query = select(AuditSealGap.low, AuditSealGap.high).order_by(AuditSealGap.low)
        if after is not None:
            query = query.where(AuditSealGap.low > after)
        ranges = (await session.execute(query.limit(RANGES_PAGE))).all()
        if not ranges:
            break
        noted = True
        found.extend(
            await session.execute(
                unsealed.where(within(ranges), AuditRecord.seq < below)
                .order_by(AuditRecord.seq)
                .limit(limit - len(found))
            )
        )
        if len(ranges) < RANGES_PAGE:
            break
        after = ranges[-1].low
    return found, noted


def within(ranges: Iterable[tuple[int, int]]) -> ColumnElement[bool]:
    """Records whose seq is in one of ``ranges`` (inclusive): one index range scan each. Ask
    for at most ``RANGES_PAGE`` ranges at a time."""
    return or_(*(AuditRecord.seq.between(low, high) for low, high in ranges))


async def oldest_running(session: AsyncSession) -> tuple[int, int] | None:
    """(xmin, xmax) of the current snapshot on PostgreSQL; None on SQLite. Read before the
    ranges' records are, so :func:`retire` only gives up ranges whose records were seen."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return None
    xmin, xmax = (await connection.execute(_SNAPSHOT)).one()
    return int(xmin), int(xmax)


async def retire(
    session: AsyncSession,
    snapshot: tuple[int, int] | None,
    *,
    now: datetime,
    grace: timedelta,
) -> None:
    """Give up the ranges no transaction can fill any more (see the module)."""
    due = now - grace
    if snapshot is None:
        await session.execute(delete(AuditSealGap).where(AuditSealGap.seen_at <= due))
        return
    xmin, xmax = snapshot
    await session.execute(delete(AuditSealGap).where(AuditSealGap.xid_bound <= xmin))
    await session.execute(
        update(AuditSealGap)
        .where(AuditSealGap.xid_bound.is_(None), AuditSealGap.seen_at <= due)
        .values(xid_bound=xmax)
    )


async def live(session: AsyncSession) -> list[tuple[int, int]]:
    """The noted ranges (tests, operators)."""
    rows = await session.execute(
        select(AuditSealGap.low, AuditSealGap.high).order_by(AuditSealGap.low)
    )
    return [(low, high) for low, high in rows]


@dataclass(frozen=True, slots=True)
class Gap:
    """A noted range held in memory: seqs ``low``..``high`` (inclusive) had no committed
    record when the reader passed them at ``seen_at``; ``xid_bound`` as in the table."""

    low: int
    high: int
    seen_at: datetime
    xid_bound: int | None = None


def opened(ranges: Iterable[tuple[int, int]], now: datetime) -> list[Gap]:
    return [Gap(low, high, now) for low, high in ranges]


def covers(held: Sequence[Gap], seq: int) -> bool:
    """Whether ``seq`` is in one of ``held`` (sorted by ``low``, disjoint)."""
    at = bisect_right(held, seq, key=lambda gap: gap.low) - 1
    return at >= 0 and seq <= held[at].high


def fill(held: Sequence[Gap], seqs: Iterable[int]) -> list[Gap]:
    """``held`` (sorted, disjoint) without ``seqs``: a range is split around each seq found
    in it (what is left of it keeps its age and bound)."""
    found = sorted(set(seqs))
    kept: list[Gap] = []
    at = 0
    for gap in held:
        low = gap.low
        while at < len(found) and found[at] < gap.low:
            at += 1
        while at < len(found) and found[at] <= gap.high:
            if found[at] > low:
                kept.append(replace(gap, low=low, high=found[at] - 1))
            low = found[at] + 1
            at += 1
        if low <= gap.high:
            kept.append(replace(gap, low=low))
    return kept


def settle(
    held: Sequence[Gap],
    snapshot: tuple[int, int] | None,
    *,
    now: datetime,
    grace: timedelta,
) -> list[Gap]:
    """The ranges of ``held`` some transaction may still fill, by :func:`retire`'s rule (the
    snapshot read before the ranges' records were, all of them)."""
    due = now - grace
    if snapshot is None:
        return [gap for gap in held if gap.seen_at > due]
    xmin, xmax = snapshot
    kept: list[Gap] = []
    for gap in held:
        if gap.xid_bound is None:
            kept.append(replace(gap, xid_bound=xmax) if gap.seen_at <= due else gap)
        elif gap.xid_bound > xmin:
            kept.append(gap)
    return kept
