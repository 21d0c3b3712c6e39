"""Tamper evidence for the audit log: a keyed hash chain per UTC day, sealed after commit.

Why after commit: ``record()`` joins the caller's transaction, many of which run at once, and
on PostgreSQL sequence values commit out of order. A chain computed at insert time would race
(two writers both extending the same head) or serialize every audited request. So records are
written unchained and a sealer chains *committed* records afterwards, in ``seq`` order, once
they are older than a safety lag, writing one :class:`AuditSeal` per record. One sealer runs at
a time: every batch first takes the sealers' lock (a transaction-scoped advisory lock on
PostgreSQL; on SQLite the caller begins the batch holding the write lock, ``BEGIN IMMEDIATE``),
so a second sealer (another replica, a cron ``fleetward audit seal``) waits for the first's
commit and then reads the chain as it left it, instead of reading the same head, colliding on
the unique (partition, position) and seeing a record the first sealed meanwhile as not late.
The unique index stays as the last guard.

Why a partition per UTC day (of ``occurred_at``): a day verifies, exports and is archived on
its own, so retention can drop old days without breaking the chain of the rest, and a damaged
day does not hide problems in the next. Per tenant would leave system events (no tenant) in a
catch-all and tie the chain to a tenant's lifetime (erasure).

Why keyed: links are HMAC-SHA256 under a subkey of the platform data key, which lives outside
the database (``<data dir>/secrets`` or ``FLEETWARD_DATA_KEY``). Someone who can write to the
database but not read the host's key cannot recompute links after changing, deleting or
inserting a record. ``record_hash`` is a plain SHA-256 of the record's canonical form.

What verify reports, in chain order (the first one is where tampering starts):

- ``modified``: a sealed record whose content no longer hashes to its seal;
- ``deleted``: a seal whose record is gone;
- ``gap``: a missing position (a record deleted together with its seal);
- ``seal-altered``: a link that does not follow from the previous one under the key;
- ``inserted``: a record below the sealed horizon that has no seal.

Limits, stated: a record committed later than the lag after the sealer moved past its seq
(found in the ranges the sealer noted as empty when it passed them, however late:
audit/gaps.py), or one dated on a day before the newest day already sealed (a backdated
record: a record is dated when it is made, so only a transaction open across midnight does
this honestly), is sealed at the end of its day's chain with ``late = true`` (listed by
verify for review; the flag is part of the keyed link, so clearing it is ``seal-altered``);
one found ``LATE_WINDOW`` or more seqs behind the sealer also raises an alert; the
end of each chain (its head) is printed by verify, and deleting the newest records together
with their seals is only seen by comparing heads with a copy kept elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Row, and_, func, insert, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit import gaps
from fleetward.audit.models import AuditRecord, AuditSeal, source_key_of

CHAIN_KEY_PURPOSE: Final = "fleetward/audit-chain/v1"
# A record found this many seqs or more below the sealed horizon (committed that far behind
# the sealer) is sealed late and raises an alert (audit/operations.py).
LATE_WINDOW: Final = 10_000
_PAGE: Final = 5_000
# The sealers' PostgreSQL advisory lock (one 64-bit key for the whole store; the text is the
# first 8 bytes of SHA-256("fleetward/audit-sealer"), so it names itself).
SEALER_LOCK_KEY: Final = int.from_bytes(
    hashlib.sha256(b"fleetward/audit-sealer").digest()[:8], "big", signed=True
)
_TAKE_SEALER_LOCK: Final = text("SELECT pg_advisory_xact_lock(:key)").bindparams(
    key=SEALER_LOCK_KEY
)

# Every column of a record, in a fixed order: adding a column to the model without adding it
# here would leave it unprotected, so a test compares this with the table.
HASHED_COLUMNS: Final = (
    "seq",
    "id",
    "occurred_at",
    "name",
    "actor_type",
    "actor_id",
    "actor_tenant_id",
    "tenant_id",
    "object_type",
    "object_id",
    "action",
    "decision",
    "reason",
    "request_id",
    "trace_id",
    "details",
    "client_id",
    "token_id",
    "token_family",
    "workload_id",
    "acr",
    "amr",
    "scope",
    "surface",
    "endpoint",
    "policy_version",
    "source_ip",
    "vehicle_id",
)
# Columns derived from hashed ones, not hashed themselves (a record sealed before one was
# added still verifies): verify recomputes each, so a changed one is a modified record.
DERIVED_COLUMNS: Final = ("source_key",)  # source_ip as bytes (models.source_key_of)


# The sealer reads records as rows of these columns (attribute access by name, like the ORM
# object): loading an ORM object per record cost about half of sealing it.
_UNSEALED: Final = (
    select(*(AuditRecord.__table__.c[name] for name in HASHED_COLUMNS))
    .outerjoin(AuditSeal, AuditSeal.event_seq == AuditRecord.seq)
    .where(AuditSeal.event_seq.is_(None))
)


def partition_of(occurred_at: datetime) -> str:
    return occurred_at.date().isoformat()


def record_document(record: AuditRecord | Row[Any]) -> dict[str, Any]:
    """The record (an ORM object, or a row of ``HASHED_COLUMNS``) as plain JSON values (also
    the export's line format)."""
    document: dict[str, Any] = {}
    for column in HASHED_COLUMNS:
        value = getattr(record, column)
        if isinstance(value, datetime):
            value = value.isoformat(timespec="microseconds")
        elif isinstance(value, StrEnum):
            value = value.value
        document[column] = value
    return document


def record_hash(record: AuditRecord | Row[Any]) -> str:
    canonical = json.dumps(
        record_document(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainKey:
    """The HMAC key of the chain (derived from the data key; never stored in the database)."""

    key: bytes = field(repr=False)

    def genesis(self, partition: str) -> str:
        return self._mac(f"genesis|{partition}")

    def link(
        self, prev_hash: str, record_digest: str, partition: str, position: int, *, late: bool
    ) -> str:
        """A link; a late one says so under the key (the flag is what lists a backdated
        record for review: clearing it must break the link). An ordinary link's text is
        what it always was, so seals made before late links were keyed verify unchanged."""
        text = f"{prev_hash}|{record_digest}|{partition}|{position}"
        return self._mac(f"{text}|late" if late else text)

    def _mac(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SealResult:
    sealed: int
    late: int
    # Event ids of records found the late window or more behind the sealer (alerted).
    overdue: tuple[str, ...] = ()


async def seal(
    session: AsyncSession,
    key: ChainKey,
    *,
    now: datetime,
    lag: timedelta,
    limit: int = 10_000,
    late_window: int = LATE_WINDOW,
    gap_grace: timedelta = gaps.GAP_GRACE,
) -> SealResult:
    """Chain up to ``limit`` committed records older than ``lag``, in seq order, in the
    caller's transaction (commit it to publish the seals). Records that committed after the
    sealer moved past their seq are found first, whatever their age, in the ranges it noted
    then (audit/gaps.py); those ``late_window`` or more seqs behind are ``overdue``.

    Sealers take turns: on PostgreSQL this takes the sealers' advisory lock for the caller's
    transaction before reading anything; on SQLite the caller's transaction must hold the
    write lock from its start (``UnitOfWork(write_lock=True)``, as :func:`seal_pending`
    does), else a concurrent sealer may read the same head and one of the two fails."""
    await lock_sealers(session)
    snapshot = await gaps.oldest_running(session)  # before the gaps' records are read
    horizon = await session.scalar(select(func.max(AuditSeal.event_seq))) or 0
    newest_day: str = await session.scalar(select(func.max(AuditSeal.partition))) or ""
    cutoff = now - lag
    candidates, noted = await gaps.late_records(session, _UNSEALED, horizon, limit)
    if len(candidates) < limit:  # every record the ranges hold was read: some may go
        if noted:  # most batches find none: no statement to give nothing up
            await gaps.retire(session, snapshot, now=now, grace=gap_grace)
        fresh = await session.execute(
            _UNSEALED.where(AuditRecord.seq > horizon)
            .order_by(AuditRecord.seq)
            .limit(limit - len(candidates))
        )
        candidates.extend(fresh.all())
    heads: dict[str, tuple[int, str]] = {}
    seals: list[dict[str, Any]] = []
    above: list[int] = []
    overdue: list[str] = []
    sealed = late = 0
    for record in candidates:
        if record.seq >= horizon and record.occurred_at > cutoff:
            break  # younger than the lag: earlier seqs may still be uncommitted
        partition = partition_of(record.occurred_at)
        is_late = record.seq < horizon or partition < newest_day
        newest_day = max(newest_day, partition)
        if record.seq > horizon:
            above.append(record.seq)
        elif record.seq <= horizon - late_window:
            overdue.append(record.id)
        if partition not in heads:
            heads[partition] = await _head(session, key, partition)
        position, prev = heads[partition]
        digest = record_hash(record)
        chained = key.link(prev, digest, partition, position, late=is_late)
        seals.append(
            {
                "event_seq": record.seq,
                "event_id": record.id,
                "partition": partition,
                "position": position,
                "prev_hash": prev,
                "record_hash": digest,
                "chain_hash": chained,
                "sealed_at": now,
                "late": is_late,
            }
        )
        heads[partition] = (position + 1, chained)
        sealed += 1
        late += is_late
    if seals:
        # One multi-row INSERT of plain rows: an ORM object per seal cost half the sealing.
        await session.execute(insert(AuditSeal), seals)
    # The seqs this batch moved past without a record: a late commit is looked for there.
    await gaps.note(session, gaps.missing(horizon, above), now)
    return SealResult(sealed, late, tuple(overdue))


async def lock_sealers(session: AsyncSession) -> None:
    """Wait for any other sealer's batch to end (PostgreSQL; released at the transaction's
    end). SQLite serializes through the write lock the caller's transaction holds."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        await connection.execute(_TAKE_SEALER_LOCK)


async def _head(session: AsyncSession, key: ChainKey, partition: str) -> tuple[int, str]:
    """(next position, hash to chain from) of a day's chain."""
    last = await session.scalar(
        select(AuditSeal)
        .where(AuditSeal.partition == partition)
        .order_by(AuditSeal.position.desc())
        .limit(1)
    )
    if last is None:
        return 0, key.genesis(partition)
    return last.position + 1, last.chain_hash


class ProblemKind(StrEnum):
    MODIFIED = "modified"
    DELETED = "deleted"
    GAP = "gap"
    SEAL_ALTERED = "seal-altered"
    INSERTED = "inserted"


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    partition: str | None
    position: int | None
    seq: int
    event_id: str | None
    detail: str


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    pending: int = 0  # committed records above the sealed horizon, not yet sealed
    problems: list[Problem] = field(default_factory=list)
    late: list[int] = field(default_factory=list)  # seqs sealed late, for review
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "pending": self.pending,
            "problems": [
                {
                    "kind": p.kind.value,
                    "partition": p.partition,
                    "position": p.position,
                    "seq": p.seq,
                    "event_id": p.event_id,
                    "detail": p.detail,
                }
                for p in self.problems
            ],
            "late": self.late,
            "heads": {k: {"position": v[0], "hash": v[1]} for k, v in self.heads.items()},
        }


async def verify(
    session: AsyncSession,
    key: ChainKey,
    *,
    since: str | None = None,
    until: str | None = None,
    max_problems: int = 100,
) -> VerifyReport:
    """Walk every day's chain (``since``/``until`` bound the days, inclusive, YYYY-MM-DD),
    then look for unsealed records below the sealed horizon. Reads only."""
    report = VerifyReport()
    cursor: tuple[str, int] | None = None
    previous: AuditSeal | None = None
    while len(report.problems) < max_problems:
        rows = await _seal_page(session, cursor, since, until)
        if not rows:
            break
        for seal_row, record in rows:
            _check_link(report, key, previous, seal_row, record)
            previous = seal_row
            report.heads[seal_row.partition] = (seal_row.position, seal_row.chain_hash)
            report.checked += 1
            if seal_row.late:
                report.late.append(seal_row.event_seq)
        cursor = (rows[-1][0].partition, rows[-1][0].position)
    await _check_unsealed(session, report, since, until, max_problems)
    report.problems.sort(key=_chain_order)
    del report.problems[max_problems:]
    return report


def _chain_order(problem: Problem) -> tuple[str, int, int]:
    return (problem.partition or "", problem.position or 0, problem.seq)


async def _seal_page(
    session: AsyncSession, cursor: tuple[str, int] | None, since: str | None, until: str | None
) -> Sequence[tuple[AuditSeal, AuditRecord | None]]:
    query = select(AuditSeal, AuditRecord).outerjoin(
        AuditRecord, AuditRecord.seq == AuditSeal.event_seq
    )
    if cursor is not None:
        query = query.where(
            or_(
                AuditSeal.partition > cursor[0],
                and_(AuditSeal.partition == cursor[0], AuditSeal.position > cursor[1]),
            )
        )
    if since is not None:
        query = query.where(AuditSeal.partition >= since)
    if until is not None:
        query = query.where(AuditSeal.partition <= until)
    query = query.order_by(AuditSeal.partition, AuditSeal.position).limit(_PAGE)
    result = await session.execute(query)
    return [(row[0], row[1]) for row in result.all()]


def _check_link(
    report: VerifyReport,
    key: ChainKey,
    previous: AuditSeal | None,
    seal_row: AuditSeal,
    record: AuditRecord | None,
) -> None:
    def problem(kind: ProblemKind, detail: str) -> None:
        report.problems.append(
            Problem(
                kind,
                seal_row.partition,
                seal_row.position,
                seal_row.event_seq,
                seal_row.event_id,
                detail,
            )
        )

    same_day = previous is not None and previous.partition == seal_row.partition
    expected_position = previous.position + 1 if same_day and previous else 0
    if seal_row.position != expected_position:
        problem(
            ProblemKind.GAP,
            f"positions {expected_position}..{seal_row.position - 1} are missing "
            "(records deleted with their seals)",
        )
    else:
        expected_prev = (
            previous.chain_hash if same_day and previous else key.genesis(seal_row.partition)
        )
        if seal_row.prev_hash != expected_prev:
            problem(ProblemKind.SEAL_ALTERED, "the link does not follow from the previous one")
    if not _link_holds(key, seal_row):
        problem(ProblemKind.SEAL_ALTERED, "the link's hash is not the key's")
    if record is None:
        problem(ProblemKind.DELETED, "the sealed record is gone")
    elif record_hash(record) != seal_row.record_hash or record.id != seal_row.event_id:
        problem(ProblemKind.MODIFIED, "the record differs from what was sealed")
    elif record.source_key != source_key_of(record.source_ip):
        # Rekeyed, its record would escape an investigation of its address.
        problem(ProblemKind.MODIFIED, "the record's source_key is not its source_ip's")


def _link_holds(key: ChainKey, seal_row: AuditSeal) -> bool:
    """Whether the seal's chain hash is the key's link of its fields. A seal marked late may
    also carry an ordinary link (sealed before late links were keyed, or marked late since):
    that only adds it to the review list. A seal not marked late must carry an ordinary
    link, so a late one whose flag was cleared does not verify."""
    parts = (seal_row.prev_hash, seal_row.record_hash, seal_row.partition, seal_row.position)
    forms = (True, False) if seal_row.late else (False,)
    return any(
        hmac.compare_digest(seal_row.chain_hash, key.link(*parts, late=late)) for late in forms
    )


async def _check_unsealed(
    session: AsyncSession,
    report: VerifyReport,
    since: str | None,
    until: str | None,
    max_problems: int,
) -> None:
    horizon = await session.scalar(select(func.max(AuditSeal.event_seq))) or 0
    query = (
        select(AuditRecord.seq, AuditRecord.id, AuditRecord.occurred_at)
        .outerjoin(AuditSeal, AuditSeal.event_seq == AuditRecord.seq)
        .where(AuditSeal.event_seq.is_(None))
        .order_by(AuditRecord.seq)
    )
    inserted = (await session.execute(query.where(AuditRecord.seq <= horizon))).all()
    found = 0
    for seq, event_id, occurred_at in inserted:
        partition = partition_of(occurred_at)
        if (since and partition < since) or (until and partition > until):
            continue
        # Counted after the days are chosen: records outside them must not use up the room
        # and hide one inside.
        if found >= max_problems:
            break
        found += 1
        report.problems.append(
            Problem(
                ProblemKind.INSERTED,
                partition,
                None,
                seq,
                event_id,
                "a record below the sealed horizon without a seal",
            )
        )
    report.pending = (
        await session.scalar(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.seq > horizon)
        )
        or 0
    )
