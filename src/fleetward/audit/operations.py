"""Operator actions on the audit log, shared by the CLI and the admin API: seal, verify,
export (itself an audit event) and recorded investigations."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import IO, Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.alerts import AlertSeverity
from fleetward.audit.chain import (
    CHAIN_KEY_PURPOSE,
    LATE_WINDOW,
    ChainKey,
    SealResult,
    VerifyReport,
    record_document,
    seal,
    verify,
)
from fleetward.audit.events import EventName
from fleetward.audit.gaps import GAP_GRACE
from fleetward.audit.investigate import (
    BlastQuery,
    BlastRadius,
    CommandCursor,
    VehicleCursor,
    blast_radius,
)
from fleetward.audit.models import AuditRecord, AuditSeal
from fleetward.audit.recorder import Actor, Target
from fleetward.detection import raising
from fleetward.detection.config import EvaluatorConfig
from fleetward.detection.finding import Finding, dedup_key
from fleetward.platform import Platform
from fleetward.services import ServiceContext

DEFAULT_LAG = timedelta(seconds=30)
# Records sealed per transaction by the app's background sealer. Sealing runs in the event
# loop (a record's canonical form, its hash, the chain link, the row: ~70 us of CPU a record
# on SQLite): at 50 commands/s the log grows ~350 records/s, and one batch of everything
# since the last pass (10 s) stalled every request in flight for ~150 ms or more. A batch
# this size holds the loop for ~7 ms; each costs ~1-2 ms more (its queries and commit).
BACKGROUND_BATCH = 100
_EXPORT_PAGE = 5_000
LATE_RECORD_RULE: Final = "audit-late-record"


def chain_key(platform: Platform) -> ChainKey:
    return ChainKey(platform.identity.data_key.derive(CHAIN_KEY_PURPOSE))


async def seal_pending(
    platform: Platform,
    *,
    lag: timedelta = DEFAULT_LAG,
    batch: int = 10_000,
    late_window: int = LATE_WINDOW,
    gap_grace: timedelta = GAP_GRACE,
) -> SealResult:
    """Seal everything committed and older than ``lag``, one committed batch of at most
    ``batch`` records at a time (other tasks run between two batches). Records found
    ``late_window`` or more seqs behind the sealer raise the ``audit-late-record`` alert, in
    the batch that seals them."""
    key = chain_key(platform)
    total = late = 0
    overdue: list[str] = []
    while True:
        # write_lock: on SQLite the batch reads the chain's head holding the write lock, so
        # two sealers (replicas, a cron job) take turns (PostgreSQL: seal() takes a lock).
        async with platform.unit_of_work(write_lock=True) as uow:
            now = platform.clock.now()
            result = await seal(
                uow.session,
                key,
                now=now,
                lag=lag,
                limit=batch,
                late_window=late_window,
                gap_grace=gap_grace,
            )
            if result.overdue:
                await _alert_overdue(uow.session, platform, result.overdue, late_window, now)
            await uow.commit()
        total += result.sealed
        late += result.late
        overdue.extend(result.overdue)
        if result.sealed < batch:
            return SealResult(total, late, tuple(overdue))


async def _alert_overdue(
    session: AsyncSession,
    platform: Platform,
    event_ids: Sequence[str],
    late_window: int,
    now: datetime,
) -> None:
    """One alert a day (its count: the batches that found some), the records as evidence:
    a record this late is a transaction open far too long, or one written around the
    recorder; either way someone should look at it."""
    finding = Finding(
        rule=LATE_RECORD_RULE,
        severity=AlertSeverity.HIGH,
        dedup_key=dedup_key(LATE_RECORD_RULE, "audit_events", now),
        subject_type="audit_log",
        subject_id="audit_events",
        tenant_id=None,
        summary=(
            f"{len(event_ids)} audit record(s) committed {late_window} or more records "
            "behind the sealer (sealed late)"
        ),
        evidence=tuple(event_ids),
        at=now,
    )
    await raising.apply(
        session, platform.audit, [finding], evidence_cap=EvaluatorConfig().evidence_cap
    )


async def verify_log(
    platform: Platform, *, since: str | None = None, until: str | None = None
) -> VerifyReport:
    async with platform.unit_of_work() as uow:
        return await verify(uow.session, chain_key(platform), since=since, until=until)


async def _export_rows(
    platform: Platform, since: datetime | None, until: datetime | None
) -> AsyncIterator[dict[str, Any]]:
    after = 0
    while True:
        async with platform.unit_of_work() as uow:
            query = (
                select(AuditRecord, AuditSeal)
                .outerjoin(AuditSeal, AuditSeal.event_seq == AuditRecord.seq)
                .where(AuditRecord.seq > after)
                .order_by(AuditRecord.seq)
                .limit(_EXPORT_PAGE)
            )
            if since is not None:
                query = query.where(AuditRecord.occurred_at >= since)
            if until is not None:
                query = query.where(AuditRecord.occurred_at < until)
            rows = (await uow.session.execute(query)).all()
        for record, seal_row in rows:
            document = record_document(record)
            document["seal"] = (
                None
                if seal_row is None
                else {
                    "partition": seal_row.partition,
                    "position": seal_row.position,
                    "record_hash": seal_row.record_hash,
                    "chain_hash": seal_row.chain_hash,
                    "late": seal_row.late,
                }
            )
            yield document
        if len(rows) < _EXPORT_PAGE:
            return
        after = rows[-1][0].seq


async def export_log(
    platform: Platform,
    out: IO[str],
    *,
    actor: Actor,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Write records as JSON lines (with their seal) and record the export itself."""
    count = 0
    async for document in _export_rows(platform, since, until):
        out.write(json.dumps(document, sort_keys=True, ensure_ascii=False) + "\n")
        count += 1
    async with platform.services() as (uow, ctx):
        ctx.audit.record(
            ctx.session,
            EventName.AUDIT_EXPORTED,
            actor=actor,
            target=Target("audit_log", "audit_events"),
            details={
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
                "records": count,
            },
        )
        await uow.commit()
    return count


async def investigate(
    ctx: ServiceContext,
    query: BlastQuery,
    *,
    actor: Actor,
    cursor: CommandCursor | None = None,
    vehicles_cursor: VehicleCursor | None = None,
    summaries: bool | None = None,
) -> BlastRadius:
    """Blast radius, timed, and recorded (who looked at what: investigations are audited too;
    the timing feeds the governance figure "mean time to list affected vehicles").
    ``cursor`` and ``vehicles_cursor``: the page of commands, and of vehicles, after the one
    that returned it; ``summaries``: see :func:`blast_radius`."""
    started = time.perf_counter()
    result = await blast_radius(
        ctx.session, query, cursor=cursor, vehicles_cursor=vehicles_cursor, summaries=summaries
    )
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    ctx.audit.record(
        ctx.session,
        EventName.INVESTIGATION_RUN,
        actor=actor,
        target=Target("investigation", query.subject.value),
        details={
            "subject": query.subject.value,
            "value": query.value,
            "since": query.since.isoformat() if query.since else None,
            "until": query.until.isoformat() if query.until else None,
            "commands_cursor": str(cursor) if cursor is not None else None,
            "vehicles_cursor": str(vehicles_cursor) if vehicles_cursor is not None else None,
            "vehicles_touched": result.vehicles_touched,
            "elapsed_ms": round(result.elapsed_ms, 3),
        },
    )
    return result
