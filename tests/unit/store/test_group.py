"""Group commit (``store.group``): the records of units of work that write nothing else are
committed together, each caller returning once its own are in the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from structlog.testing import capture_logs

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, AuditRecorder, Target, pending
from fleetward.core.clock import SystemClock
from fleetward.identity.models import Tenant, TenantKind
from fleetward.platform import Platform
from fleetward.store.engine import create_engine, session_factory
from fleetward.store.group import RowGroup
from fleetward.store.migrate import upgrade
from support.factories import WorldFactory
from support.stores import sqlite_url

AUDIT = cast(Table, AuditRecord.__table__)


def _group(platform: Platform) -> RowGroup:
    assert platform.group is not None
    return platform.group


async def _count(platform: Platform, actor_id: str) -> int:
    async with platform.unit_of_work() as uow:
        found = await uow.session.scalar(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.actor_id == actor_id)
        )
    return int(found or 0)


async def _read(platform: Platform, actor_id: str, *, keep: bool = False) -> str:
    """A read-only request: one SELECT, one record, a commit. The record's id."""
    async with platform.services() as (uow, ctx):
        await ctx.session.scalar(select(func.count()).select_from(Tenant))
        row = ctx.audit.record(
            ctx.session,
            EventName.AUTHZ_DECISION_MADE,
            actor=Actor.system(actor_id),
            target=Target("vehicle", "veh_group"),
            keep=keep,
        )
        await uow.commit()
        # Returned after its record is committed: another connection sees it.
        assert await _count(platform, actor_id) >= 1
    return str(row["id"])


async def test_concurrent_reads_commit_their_records_together(
    platform: Platform, backend: str
) -> None:
    group = _group(platform)
    await asyncio.gather(*(_read(platform, f"group-{n}") for n in range(24)))
    assert [await _count(platform, f"group-{n}") for n in range(24)] == [1] * 24
    if backend == "sqlite":
        assert group.rows == 24
        assert group.batches < 24  # grouped: fewer transactions than requests
    else:
        # Only the SQLite driver tells whether a transaction wrote: elsewhere each commits
        # its own, as before.
        assert (group.rows, group.batches) == (0, 0)


async def test_a_unit_of_work_that_writes_commits_its_records_itself(platform: Platform) -> None:
    group = _group(platform)
    async with platform.services() as (uow, ctx):
        await WorldFactory(ctx).tenant(TenantKind.CONSUMER, slug="writes")
        ctx.audit.record(
            ctx.session,
            EventName.AUTHZ_DECISION_MADE,
            actor=Actor.system("group-writer"),
            target=Target("vehicle", "veh_group"),
        )
        await uow.commit()
    assert group.rows == 0
    assert await _count(platform, "group-writer") == 1


@pytest.mark.parametrize("backend", ["sqlite"])  # grouping is the SQLite driver's (above)
async def test_a_bad_row_fails_its_own_request_only(platform: Platform) -> None:
    taken = await _read(platform, "group-first")

    async def duplicate() -> None:
        async with platform.services() as (uow, ctx):
            row = ctx.audit.record(
                ctx.session,
                EventName.AUTHZ_DECISION_MADE,
                actor=Actor.system("group-duplicate"),
                target=Target("vehicle", "veh_group"),
            )
            row["id"] = taken  # already in the store: this request's commit must fail
            await uow.commit()

    outcomes = await asyncio.gather(
        duplicate(), *(_read(platform, f"group-ok-{n}") for n in range(6)), return_exceptions=True
    )
    assert isinstance(outcomes[0], IntegrityError)
    assert all(isinstance(outcome, str) for outcome in outcomes[1:])
    assert await _count(platform, "group-duplicate") == 0


async def test_a_cancelled_caller_still_has_its_kept_record_written(platform: Platform) -> None:
    started = asyncio.Event()

    async def cancelled() -> None:
        async with platform.services() as (uow, ctx):
            ctx.audit.record(
                ctx.session,
                EventName.AUTHZ_DECISION_MADE,
                actor=Actor.system("group-cancelled"),
                target=Target("vehicle", "veh_group"),
                keep=True,
            )
            started.set()
            await uow.commit()

    with capture_logs() as logs:
        task = asyncio.create_task(cancelled())
        await started.wait()
        await asyncio.sleep(0)  # inside commit, waiting for its batch
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _group(platform).close()
    assert await _count(platform, "group-cancelled") == 1  # once: neither lost nor doubled
    # ... nor handed over a second time as owed (which its unique id would refuse, logged).
    assert [log["event"] for log in logs if log["log_level"] == "error"] == []


def test_rows_a_finished_event_loop_left_are_written_from_the_next(tmp_path: Path) -> None:
    # A command-line tool runs asyncio.run more than once with one platform: a commit whose
    # loop ended before its batch was written leaves its rows owed, and the next loop's
    # first commit writes them with its own (not a wait on the dead loop's futures).
    engine = create_engine(sqlite_url(tmp_path / "store.db"))
    group = RowGroup(session_factory(engine))

    def row(actor: str) -> tuple[Table, dict[str, object]]:
        held = AsyncSession()
        AuditRecorder(SystemClock()).record(
            held,
            EventName.AUTHZ_DECISION_MADE,
            actor=Actor.system(actor),
            target=Target("vehicle", "veh_group"),
        )
        return AUDIT, dict(pending(held)[0])

    async def first() -> None:
        await upgrade(engine)
        asyncio.get_running_loop().create_task(group.commit([row("loop-one")]))
        await asyncio.sleep(0)  # handed over; the loop ends before its writer runs
        await engine.dispose()

    async def second() -> list[str]:
        await asyncio.wait_for(group.commit([row("loop-two")]), timeout=10)
        async with engine.connect() as connection:
            found = await connection.execute(
                select(AuditRecord.actor_id).where(AuditRecord.actor_id.like("loop-%"))
            )
            actors = sorted(found.scalars())
        await engine.dispose()
        return actors

    asyncio.run(first())
    assert asyncio.run(second()) == ["loop-one", "loop-two"]
