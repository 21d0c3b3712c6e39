"""Rows held with a transaction (``store.pending``): written after the session's objects, at
its flushes and its commit, one INSERT per table; dropped by a rollback."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, event, func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, Target
from fleetward.commands.jobs import SYSTEM, move, start
from fleetward.commands.models import CommandJob, JobState, JobTransition
from fleetward.platform import Platform
from fleetward.store.pending import held, hold, hold_new, hold_orphans, orphaned
from support.factories import committed_vehicle

TRANSITIONS = cast(Table, JobTransition.__table__)


def _new_job(tenant_id: str, vehicle_id: str, platform: Platform) -> CommandJob:
    now = platform.clock.now()
    return CommandJob(
        id="job_pendingtest000000000000000",
        vehicle_id=vehicle_id,
        tenant_id=tenant_id,
        command="vehicle:horn_lights",
        parameters={},
        state=JobState.REQUESTED,
        requested_by="usr_x",
        client_id="fleetward-mobile",
        created_at=now,
        expires_at=now + timedelta(minutes=5),
        updated_at=now,
        idempotency_key=None,
        request_hash="h",
        surface="mobile",
        subject_type="user",
        token_id="tok",
        token_tenant_id=tenant_id,
        token_scopes=[],
        acr="mfa",
        auth_time=now,
        bulk_id=None,
    )


async def test_transitions_follow_their_job_in_one_insert(platform: Platform) -> None:
    tenant_id, vehicle_id = await committed_vehicle(platform)
    statements: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement.split("(")[0].strip().upper())

    event.listen(platform.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with platform.services() as (uow, ctx):
            job = _new_job(tenant_id, vehicle_id, platform)
            now = platform.clock.now()
            start(ctx.session, ctx.audit, job, at=now, actor=SYSTEM)
            move(ctx.session, ctx.audit, job, JobState.AUTHORIZED, reason="r", at=now)
            move(ctx.session, ctx.audit, job, JobState.QUEUED, reason="r", at=now)
            assert len(held(ctx.session, TRANSITIONS)) == 3
            await uow.commit()
    finally:
        event.remove(platform.engine.sync_engine, "before_cursor_execute", seen)
    inserts = [s for s in statements if s.startswith("INSERT")]
    # The job before the transitions that refer to it (a foreign key), one INSERT per table.
    assert inserts == [
        "INSERT INTO COMMAND_JOBS",
        "INSERT INTO COMMAND_JOB_TRANSITIONS",
        "INSERT INTO AUDIT_EVENTS",
    ]
    async with platform.unit_of_work() as uow:
        states = await uow.session.scalars(
            select(JobTransition.to_state).where(JobTransition.job_id == job.id)
        )
        assert sorted(states) == sorted([JobState.REQUESTED, JobState.AUTHORIZED, JobState.QUEUED])


async def test_an_autoflush_writes_them_for_the_next_query(platform: Platform) -> None:
    tenant_id, vehicle_id = await committed_vehicle(platform)
    async with platform.services() as (uow, ctx):
        job = _new_job(tenant_id, vehicle_id, platform)
        start(ctx.session, ctx.audit, job, at=platform.clock.now(), actor=SYSTEM)
        count = await ctx.session.scalar(
            select(func.count()).select_from(JobTransition).where(JobTransition.job_id == job.id)
        )
        assert count == 1
        assert not held(ctx.session, TRANSITIONS)
        # left without commit: rolled back
    async with platform.unit_of_work() as uow:
        left = await uow.session.scalar(select(func.count()).select_from(JobTransition))
        assert left == 0  # never committed


async def test_a_plain_session_writes_them_at_commit(platform: Platform) -> None:
    async with AsyncSession(platform.engine) as session:
        platform.audit.record(
            session,
            EventName.VEHICLE_REGISTERED,
            actor=Actor.system("pending-test"),
            target=Target("vehicle", "veh_plain"),
        )
        await session.commit()
    async with platform.unit_of_work() as uow:
        count = await uow.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.actor_id == "pending-test")
        )
        assert count == 1


async def test_a_rollback_drops_them(platform: Platform) -> None:
    async with platform.services() as (_uow, ctx):
        hold(ctx.session, cast(Table, AuditRecord.__table__), {"id": "x"})
        await ctx.session.rollback()
        assert not held(ctx.session, cast(Table, AuditRecord.__table__))


async def test_a_new_job_is_inserted_then_tracked_like_a_loaded_one(platform: Platform) -> None:
    # hold_new: one Core INSERT at the flush, then the job is persistent and unchanged, so
    # later changes are flushed as an UPDATE; columns never set are stored (and read) None.
    tenant_id, vehicle_id = await committed_vehicle(platform)
    async with platform.services() as (uow, ctx):
        job = _new_job(tenant_id, vehicle_id, platform)
        now = platform.clock.now()
        start(ctx.session, ctx.audit, job, at=now, actor=SYSTEM)
        assert job not in ctx.session  # held, not added
        await ctx.session.flush()
        assert inspect(job).persistent and not ctx.session.dirty
        move(ctx.session, ctx.audit, job, JobState.AUTHORIZED, reason="r", at=now)
        assert job in ctx.session.dirty
        await uow.commit()
    assert job.counter is None and job.delivered_at is None  # no load (it would fail here)
    async with platform.unit_of_work() as uow:
        stored = await uow.session.get(CommandJob, job.id)
        assert stored is not None
        assert stored.state is JobState.AUTHORIZED and stored.counter is None
        assert stored.request_hash == "h" and stored.token_scopes == []


async def test_a_held_new_job_is_dropped_by_a_rollback(platform: Platform) -> None:
    tenant_id, vehicle_id = await committed_vehicle(platform)
    async with platform.services() as (_uow, ctx):
        job = _new_job(tenant_id, vehicle_id, platform)
        start(ctx.session, ctx.audit, job, at=platform.clock.now(), actor=SYSTEM)
        await ctx.session.rollback()
    async with platform.unit_of_work() as uow:
        assert await uow.session.get(CommandJob, job.id) is None


class _Other(DeclarativeBase):
    pass


class _Defaulted(_Other):
    __tablename__ = "defaulted"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int] = mapped_column(default=1)


async def test_a_model_with_defaults_cannot_be_held_new(platform: Platform) -> None:
    # Its INSERT would not be its attributes (the ORM fills the defaults in): refused.
    async with platform.services() as (_uow, ctx):
        with pytest.raises(TypeError, match="default"):
            hold_new(ctx.session, _Defaulted(id=1))


async def _records(platform: Platform, actor_id: str) -> list[str]:
    async with platform.unit_of_work() as uow:
        names = await uow.session.scalars(
            select(AuditRecord.name).where(AuditRecord.actor_id == actor_id)
        )
        return sorted(names)


def _record(ctx_session: AsyncSession, platform: Platform, actor_id: str, *, keep: bool) -> None:
    platform.audit.record(
        ctx_session,
        EventName.AUTHZ_DECISION_MADE if keep else EventName.VEHICLE_REGISTERED,
        actor=Actor.system(actor_id),
        target=Target("vehicle", "veh_kept"),
        keep=keep,
    )


async def test_a_kept_record_outlives_its_transactions_rollback(platform: Platform) -> None:
    # A decision made in a transaction that then fails (a race lost at a unique index, a
    # version conflict): the decision is written in a transaction of its own when the unit
    # of work closes; the transaction's other records are not.
    async def failing() -> None:
        async with platform.services() as (_uow, ctx):
            _record(ctx.session, platform, "kept-test", keep=True)
            _record(ctx.session, platform, "kept-test", keep=False)
            await ctx.session.flush()  # written in the transaction, then rolled back
            raise RuntimeError("the request failed after its decision")

    with pytest.raises(RuntimeError):
        await failing()
    assert await _records(platform, "kept-test") == [EventName.AUTHZ_DECISION_MADE.value]


async def test_a_kept_record_of_a_commit_is_written_once(platform: Platform) -> None:
    async with platform.services() as (uow, ctx):
        _record(ctx.session, platform, "kept-once", keep=True)
        await uow.commit()
        _record(ctx.session, platform, "kept-once-2", keep=False)  # a later, uncommitted one
    assert await _records(platform, "kept-once") == [EventName.AUTHZ_DECISION_MADE.value]
    assert await _records(platform, "kept-once-2") == []


async def test_a_rollback_hands_the_kept_records_over(platform: Platform) -> None:
    # The refusal path ends the route's transaction itself and writes what it decided with
    # the denial: handed over once, so the unit of work does not write them again.
    async with platform.services() as (_uow, ctx):
        _record(ctx.session, platform, "handed-over", keep=True)
        await ctx.session.rollback()
        rows = orphaned(ctx.session)
        assert [row["actor_id"] for _table, row in rows] == ["handed-over"]
        assert orphaned(ctx.session) == []
        async with platform.unit_of_work() as own:
            hold_orphans(own.session, rows)
            await own.commit()
    assert await _records(platform, "handed-over") == [EventName.AUTHZ_DECISION_MADE.value]
