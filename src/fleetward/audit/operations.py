"""Operator actions on the audit log, shared by the CLI and the admin API: seal, verify,
export (itself an audit event) and recorded investigations."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import IO, Any

from sqlalchemy import select

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
from fleetward.audit.investigate import (
    BlastQuery,
    BlastRadius,
    CommandCursor,
    VehicleCursor,
    blast_radius,
)
from fleetward.audit.models import AuditRecord, AuditSeal
from fleetward.audit.recorder import Actor, Target
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


def chain_key(platform: Platform) -> ChainKey:
    return ChainKey(platform.identity.data_key.derive(CHAIN_KEY_PURPOSE))


async def seal_pending(
    platform: Platform, *, lag: timedelta = DEFAULT_LAG, batch: int = 10_000
) -> SealResult:
    """Seal everything committed and older than ``lag``, one committed batch of at most
    ``batch`` records at a time (other tasks run between two batches)."""
    key = chain_key(platform)
    total = late = 0
    look_below = True
    while True:
        # write_lock: on SQLite the batch reads the chain's head holding the write lock, so
        # two sealers (replicas, a cron job) take turns (PostgreSQL: seal() takes a lock).
        async with platform.unit_of_work(write_lock=True) as uow:
            result = await seal(
                uow.session,
                key,
                now=platform.clock.now(),
                lag=lag,
                limit=batch,
                # Late records come first (in seq order): the pass's first batch looks for
                # them, and the next one again only if this one was all late records. The
                # others start at the horizon the batch before them left (a record that
                # commits late meanwhile is the next pass's).
                late_window=LATE_WINDOW if look_below else 0,
            )
            await uow.commit()
        look_below = result.late >= batch
        total += result.sealed
        late += result.late
        if result.sealed < batch:
            return SealResult(total, late)


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
