"""The hash chain catches a modified, a deleted and an inserted record, and names the first
one; an untouched log verifies. Runs on SQLite and PostgreSQL (the ``platform`` fixture)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, event, inspect, select, text, update

from fleetward.audit import chain, gaps
from fleetward.audit.alerts import Alert, AlertSeverity
from fleetward.audit.chain import (
    DERIVED_COLUMNS,
    HASHED_COLUMNS,
    LATE_WINDOW,
    ProblemKind,
    partition_of,
    record_hash,
)
from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.models import AuditRecord, AuditSeal
from fleetward.audit.operations import (
    BACKGROUND_BATCH,
    LATE_RECORD_RULE,
    seal_pending,
    verify_log,
)
from fleetward.audit.recorder import Actor, Target
from fleetward.core.clock import FrozenClock
from fleetward.platform import Platform
from fleetward.store.engine import create_engine
from fleetward.store.migrate import upgrade
from support.locks import TurnWatch
from support.stores import sqlite_url

ACTOR = Actor.system("chain-test")


async def _record(platform: Platform, count: int) -> list[int]:
    async with platform.services() as (uow, ctx):
        events = [
            ctx.audit.record(
                ctx.session,
                EventName.VEHICLE_REGISTERED,
                actor=ACTOR,
                target=Target("vehicle", f"veh_{i:026d}"),
                details={"n": i},
            )
            for i in range(count)
        ]
        await uow.commit()
    ids = [e["id"] for e in events]
    async with platform.unit_of_work() as uow:
        seqs = await uow.session.scalars(
            select(AuditRecord.seq).where(AuditRecord.id.in_(ids)).order_by(AuditRecord.seq)
        )
        return list(seqs)


async def _sealed_log(platform: Platform, count: int = 6) -> list[int]:
    seqs = await _record(platform, count)
    result = await seal_pending(platform, lag=timedelta(0))
    assert result.sealed == count
    return seqs


def test_every_column_is_hashed_or_derived_from_a_hashed_one() -> None:
    # A column added to the model but not to the canonical form would be unprotected; a
    # derived one is recomputed by verify (below).
    assert not set(HASHED_COLUMNS) & set(DERIVED_COLUMNS)
    columns = {c.key for c in inspect(AuditRecord).columns}
    assert set(HASHED_COLUMNS) | set(DERIVED_COLUMNS) == columns


async def test_a_rekeyed_source_address_is_a_modified_record(platform: Platform) -> None:
    # Threat: someone with write access moves a record's 16-byte address key elsewhere (its
    # hashed source_ip untouched), so an investigation of the address no longer finds it.
    seqs = await _sealed_log(platform)
    async with platform.unit_of_work() as uow:
        await uow.session.execute(
            update(AuditRecord).where(AuditRecord.seq == seqs[1]).values(source_key=b"\x00" * 16)
        )
        await uow.commit()
    report = await verify_log(platform)
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.MODIFIED, seqs[1])]
    assert "source_key" in report.problems[0].detail


async def test_an_untouched_log_verifies_and_sealing_is_idempotent(platform: Platform) -> None:
    await _sealed_log(platform)
    assert (await seal_pending(platform, lag=timedelta(0))).sealed == 0
    report = await verify_log(platform)
    assert report.ok, report.problems
    assert report.checked == 6
    assert len(report.heads) == 1  # one day, one chain


async def test_sealing_in_small_batches_chains_everything_one_transaction_each(
    platform: Platform,
) -> None:
    # The app's background sealer commits every BACKGROUND_BATCH records, so that other
    # tasks run in between: the chain is the same as one batch's.
    assert BACKGROUND_BATCH < 1_000
    await _record(platform, 5)
    commits = 0

    def counted(*_args: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(platform.engine.sync_engine, "commit", counted)
    try:
        result = await seal_pending(platform, lag=timedelta(0), batch=2)
    finally:
        event.remove(platform.engine.sync_engine, "commit", counted)
    assert result.sealed == 5
    assert commits == 3
    report = await verify_log(platform)
    assert report.ok, report.problems
    assert report.checked == 5 and len(report.heads) == 1


async def test_records_that_commit_late_are_sealed_late_by_a_pass_of_small_batches(
    platform: Platform,
) -> None:
    # Records whose seq is below the sealed horizon (they committed after the sealer moved
    # past it) are found by the pass's first batches; the later ones go on from the horizon.
    first, second = await _record(platform, 2)
    async with platform.unit_of_work() as uow:
        for old, new in ((first, 10), (second, 20)):
            await uow.session.execute(
                update(AuditRecord).where(AuditRecord.seq == old).values(seq=new)
            )
        await uow.commit()
    assert (await seal_pending(platform, lag=timedelta(0))).sealed == 2  # horizon: 20
    newer = await _record(platform, 3)
    async with platform.unit_of_work() as uow:
        await uow.session.execute(
            update(AuditRecord).where(AuditRecord.seq == newer[0]).values(seq=15)
        )
        await uow.commit()
    # 15, and on PostgreSQL (its sequence went on from 2) the other two as well.
    below = 1 + sum(1 for seq in newer[1:] if seq < 20)
    result = await seal_pending(platform, lag=timedelta(0), batch=1)
    assert (result.sealed, result.late) == (3, below)
    report = await verify_log(platform)
    assert report.ok, report.problems
    assert 15 in report.late and len(report.late) == below and report.checked == 5


async def test_two_sealers_at_once_take_turns(
    platform: Platform, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two replicas seal the same store at once. The first has read the chain's head and the
    # records to seal when the second starts: the second must wait for it (and then find
    # nothing left), not read the same head, seal the same positions and make the first
    # fail with an IntegrityError.
    await _record(platform, 6)
    first_read, first_goes_on = asyncio.Event(), asyncio.Event()
    head = chain._head
    heads_read = 0

    async def head_then_pause(*args: object, **kwargs: object) -> tuple[int, str]:
        nonlocal heads_read
        heads_read += 1
        if heads_read == 1:  # the first sealer, after it read its records
            first_read.set()
            await first_goes_on.wait()
        return await head(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(chain, "_head", head_then_pause)
    turns = TurnWatch(monkeypatch)
    first = asyncio.create_task(seal_pending(platform, lag=timedelta(0)))
    await first_read.wait()
    second = asyncio.create_task(seal_pending(platform, lag=timedelta(0)))
    # Until the second sealer is done, or waits for a lock the first holds.
    await turns.waiting(platform, backend, second)
    first_goes_on.set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sorted((r.sealed, r.late) for r in results if not isinstance(r, BaseException)) == [
        (0, 0),
        (6, 0),
    ]
    report = await verify_log(platform)
    assert report.ok, report.problems
    assert (report.checked, report.pending, report.late) == (6, 0, [])


async def test_records_younger_than_the_lag_wait(platform: Platform) -> None:
    await _record(platform, 2)
    assert (await seal_pending(platform, lag=timedelta(seconds=30))).sealed == 0
    report = await verify_log(platform)
    assert report.ok and report.pending == 2


async def test_a_modified_record_is_pinpointed(platform: Platform) -> None:
    seqs = await _sealed_log(platform)
    async with platform.unit_of_work() as uow:
        # Two edits: the report must name the earlier one first.
        for seq, reason in ((seqs[4], "covered-up"), (seqs[2], "covered-up")):
            await uow.session.execute(
                update(AuditRecord).where(AuditRecord.seq == seq).values(reason=reason)
            )
        await uow.commit()
    report = await verify_log(platform)
    assert [(p.kind, p.seq) for p in report.problems] == [
        (ProblemKind.MODIFIED, seqs[2]),
        (ProblemKind.MODIFIED, seqs[4]),
    ]
    assert report.problems[0].position == 2


async def test_a_deleted_record_is_pinpointed(platform: Platform) -> None:
    seqs = await _sealed_log(platform)
    async with platform.unit_of_work() as uow:
        await uow.session.execute(delete(AuditRecord).where(AuditRecord.seq == seqs[3]))
        await uow.commit()
    report = await verify_log(platform)
    assert [(p.kind, p.seq) for p in report.problems] == [(ProblemKind.DELETED, seqs[3])]


async def test_a_record_deleted_with_its_seal_leaves_a_gap(platform: Platform) -> None:
    seqs = await _sealed_log(platform)
    async with platform.unit_of_work() as uow:
        await uow.session.execute(delete(AuditRecord).where(AuditRecord.seq == seqs[1]))
        await uow.session.execute(delete(AuditSeal).where(AuditSeal.event_seq == seqs[1]))
        await uow.commit()
    report = await verify_log(platform)
    assert report.problems[0].kind is ProblemKind.GAP
    assert report.problems[0].position == 2  # the link after the missing one


def _forged(seq: int, event_id: str, at: datetime) -> AuditRecord:
    """A record written straight into the table (below the sealed horizon), not recorded."""
    return AuditRecord(
        seq=seq,
        id=event_id,
        occurred_at=at,
        name=EventName.OWNERSHIP_TRANSFERRED.value,
        actor_type=ActorType.SYSTEM,
        actor_id="chain-test",
        object_type="vehicle",
        object_id="veh_x",
        action="transferred",
        decision=Decision.ALLOWED,
        details={},
    )


async def test_an_inserted_record_is_pinpointed(platform: Platform) -> None:
    seqs = await _sealed_log(platform)
    async with platform.unit_of_work() as uow:
        model = await uow.session.scalar(select(AuditRecord).where(AuditRecord.seq == seqs[0]))
        assert model is not None
        below_horizon = seqs[0] - 1 if seqs[0] > 1 else 0
        uow.session.add(_forged(below_horizon, "evt_forged", model.occurred_at))
        await uow.commit()
    report = await verify_log(platform)
    assert [(p.kind, p.event_id) for p in report.problems] == [(ProblemKind.INSERTED, "evt_forged")]


async def test_a_rewritten_seal_without_the_key_is_caught(platform: Platform) -> None:
    # Someone with database access edits a record and recomputes its record hash: the link
    # is keyed, so the chain hash no longer follows.
    seqs = await _sealed_log(platform)
    async with platform.unit_of_work() as uow:
        await uow.session.execute(
            update(AuditRecord).where(AuditRecord.seq == seqs[1]).values(reason="edited")
        )
        record = await uow.session.scalar(select(AuditRecord).where(AuditRecord.seq == seqs[1]))
        assert record is not None
        await uow.session.execute(
            update(AuditSeal)
            .where(AuditSeal.event_seq == seqs[1])
            .values(record_hash=record_hash(record))
        )
        await uow.commit()
    report = await verify_log(platform)
    assert report.problems[0].kind is ProblemKind.SEAL_ALTERED
    assert report.problems[0].seq == seqs[1]


async def test_days_are_separate_chains(platform: Platform, clock: FrozenClock) -> None:
    await _record(platform, 2)
    clock.advance(timedelta(days=1))
    await _record(platform, 2)
    await seal_pending(platform, lag=timedelta(0))
    report = await verify_log(platform)
    assert report.ok and len(report.heads) == 2


async def test_an_inserted_record_is_found_by_a_days_verify_whatever_other_days_hold(
    platform: Platform, clock: FrozenClock
) -> None:
    # Records forged into an earlier day must not hide one forged into the day verified.
    await _record(platform, 2)
    yesterday = clock.now()
    clock.advance(timedelta(days=1))
    await _record(platform, 2)
    await seal_pending(platform, lag=timedelta(0))
    today = clock.now()

    async with platform.unit_of_work() as uow:
        uow.session.add_all(_forged(-1000 + i, f"evt_noise_{i}", yesterday) for i in range(150))
        uow.session.add(_forged(-1, "evt_forged_today", today))
        await uow.commit()
    day = partition_of(today)
    report = await verify_log(platform, since=day, until=day)
    assert [(p.kind, p.event_id) for p in report.problems] == [
        (ProblemKind.INSERTED, "evt_forged_today")
    ]


async def test_a_backdated_record_is_sealed_late(platform: Platform, clock: FrozenClock) -> None:
    # A record written with a later seq but dated on a day already behind the sealer (by
    # someone with write access to the table) goes at the end of that day's chain: it is
    # listed as late for review, not sealed as if it had always been there.
    seqs = await _sealed_log(platform)
    yesterday = clock.now() - timedelta(days=1)
    async with platform.unit_of_work() as uow:
        uow.session.add(_forged(seqs[-1] + 100, "evt_backdated", yesterday))
        await uow.commit()
    await seal_pending(platform, lag=timedelta(0))
    report = await verify_log(platform)
    assert report.late == [seqs[-1] + 100]


async def test_a_late_seal_cannot_be_passed_off_as_an_ordinary_one(
    platform: Platform, clock: FrozenClock
) -> None:
    # The late flag is what lists a backdated insert for review; someone with write access
    # to the database (but not the key) cleared it, and verify found nothing to review.
    seqs = await _sealed_log(platform)
    yesterday = clock.now() - timedelta(days=1)
    async with platform.unit_of_work() as uow:
        uow.session.add(_forged(seqs[-1] + 100, "evt_backdated", yesterday))
        await uow.commit()
    await seal_pending(platform, lag=timedelta(0))
    async with platform.unit_of_work() as uow:
        await uow.session.execute(
            update(AuditSeal).where(AuditSeal.event_seq == seqs[-1] + 100).values(late=False)
        )
        await uow.commit()
    report = await verify_log(platform)
    assert [(p.kind, p.seq) for p in report.problems] == [
        (ProblemKind.SEAL_ALTERED, seqs[-1] + 100)
    ]


async def test_an_ordinary_seal_marked_late_still_verifies_and_is_listed(
    platform: Platform,
) -> None:
    # Seals made before the flag was part of the link (late or not) verify as they were; a
    # flag set afterwards can only add a record to the review list, never take one off it.
    seqs = await _sealed_log(platform)
    async with platform.unit_of_work() as uow:
        await uow.session.execute(
            update(AuditSeal).where(AuditSeal.event_seq == seqs[2]).values(late=True)
        )
        await uow.commit()
    report = await verify_log(platform)
    assert report.ok, report.problems
    assert report.late == [seqs[2]]


async def _move(platform: Platform, moves: dict[int, int]) -> None:
    async with platform.unit_of_work() as uow:
        for old, new in moves.items():
            await uow.session.execute(
                update(AuditRecord).where(AuditRecord.seq == old).values(seq=new)
            )
        await uow.commit()


async def _late_alerts(platform: Platform) -> list[Alert]:
    async with platform.unit_of_work() as uow:
        return list(await uow.session.scalars(select(Alert).where(Alert.rule == LATE_RECORD_RULE)))


async def test_a_record_committed_beyond_the_late_window_is_sealed_and_alerted(
    platform: Platform,
) -> None:
    # A record whose seq is far below the sealed horizon when it commits (a long transaction
    # on a busy platform) was outside every later seal's view: unsealed for ever, silently.
    # The window is lowered to 5 here instead of writing 10,000 records; two records are
    # kept out of the sealer's sight (moved away) as if uncommitted, then put back.
    seqs = await _record(platform, 8)
    far, near = seqs[1], seqs[6]
    await _move(platform, {far: far - 10**6, near: near - 10**6})
    assert (await seal_pending(platform, lag=timedelta(0), late_window=5)).sealed == 6
    await _move(platform, {far - 10**6: far})  # commits 6 seqs behind the sealer's horizon
    result = await seal_pending(platform, lag=timedelta(0), late_window=5)
    async with platform.unit_of_work() as uow:
        far_id = await uow.session.scalar(select(AuditRecord.id).where(AuditRecord.seq == far))
    assert (result.sealed, result.late, result.overdue) == (1, 1, (far_id,))
    [alert] = await _late_alerts(platform)
    assert alert.evidence == [far_id] and alert.severity is AlertSeverity.HIGH
    await seal_pending(platform, lag=timedelta(0), late_window=5)  # the alert's own record
    # Within the window a late record is listed for review, not alerted.
    await _move(platform, {near - 10**6: near})
    result = await seal_pending(platform, lag=timedelta(0), late_window=5)
    assert (result.sealed, result.late, result.overdue) == (1, 1, ())
    [alert] = await _late_alerts(platform)
    assert alert.count == 1
    report = await verify_log(platform)
    assert report.ok, report.problems
    assert report.late == [far, near]


async def test_late_records_in_many_gaps_are_all_found_page_by_page(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The noted ranges are read a page at a time, and a batch stops at its limit: late
    # records in every range are sealed, in seq order, by the batches of one pass.
    monkeypatch.setattr(gaps, "RANGES_PAGE", 2)
    seqs = await _record(platform, 8)
    hidden = seqs[1:7:2]
    await _move(platform, {seq: seq - 10**6 for seq in hidden})
    await seal_pending(platform, lag=timedelta(0))
    async with platform.unit_of_work() as uow:
        assert len(await gaps.live(uow.session)) == 3
    await _move(platform, {seq - 10**6: seq for seq in hidden})
    result = await seal_pending(platform, lag=timedelta(0), batch=2)
    assert (result.sealed, result.late) == (3, 3)
    report = await verify_log(platform)
    assert report.ok, report.problems
    assert report.late == hidden


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_transaction_open_past_the_window_and_the_grace_is_still_sealed(
    platform: Platform, clock: FrozenClock
) -> None:
    # The real thing on PostgreSQL: a record takes its seq, its transaction stays open while
    # later records commit and are sealed, long past the gap's grace; when it commits at
    # last, the sealer finds it (the gap waited for its transaction) and alerts.
    async with platform.services() as (held_uow, held_ctx):
        held = held_ctx.audit.record(
            held_ctx.session,
            EventName.VEHICLE_REGISTERED,
            actor=ACTOR,
            target=Target("vehicle", "veh_held"),
            details={},
        )
        await held_uow.session.flush()  # the INSERT: its seq is drawn now
        later = await _record(platform, 6)
        assert (await seal_pending(platform, lag=timedelta(0), late_window=3)).sealed == 6
        for _ in range(3):  # the grace passes, the gap gets its xid bound, and stays
            clock.advance(gaps.GAP_GRACE * 2)
            await seal_pending(platform, lag=timedelta(0), late_window=3)
        async with platform.unit_of_work() as uow:
            assert await gaps.live(uow.session)
        await held_uow.commit()
    result = await seal_pending(platform, lag=timedelta(0), late_window=3)
    assert result.late == 1 and result.overdue == (held["id"],)
    report = await verify_log(platform)
    assert report.ok, report.problems
    assert len(report.late) == 1 and report.late[0] < later[0]
    [alert] = await _late_alerts(platform)
    assert alert.evidence == [held["id"]]


async def test_a_gap_no_transaction_can_fill_is_given_up(
    platform: Platform, clock: FrozenClock, backend: str
) -> None:
    # A rolled-back insert leaves its seq empty for good: the sealer stops looking there
    # once nothing can still fill it. SQLite: after the grace (no writer is ever in flight
    # while the sealer holds the write lock). PostgreSQL: past the grace the gap gets the
    # next xid as its bound, and goes once the oldest running xid has reached it (decided
    # here on given snapshots: the server's is shared with whatever else runs on it).
    first, second = await _record(platform, 2)
    await _move(platform, {second: first + 5})
    await seal_pending(platform, lag=timedelta(0))
    async with platform.unit_of_work() as uow:
        assert await gaps.live(uow.session) == [(first + 1, first + 4)]
    clock.advance(gaps.GAP_GRACE)
    await seal_pending(platform, lag=timedelta(0))
    async with platform.unit_of_work() as uow:
        bound = await uow.session.scalar(select(gaps.AuditSealGap.xid_bound))
        if backend == "sqlite":
            assert await gaps.live(uow.session) == [] and bound is None
            return
        assert bound is not None
        for xmin, kept in ((bound - 1, True), (bound, False)):
            await gaps.retire(
                uow.session, (xmin, bound + 10), now=clock.now(), grace=gaps.GAP_GRACE
            )
            assert bool(await gaps.live(uow.session)) is kept


async def test_the_upgrade_keeps_looking_where_the_old_window_did(tmp_path: Path) -> None:
    # A store sealed by the window-looking sealer: the range it would still have looked in
    # is noted once, so a late record it could have found is not lost by the upgrade.
    engine = create_engine(sqlite_url(tmp_path / "before.db"))
    try:
        await upgrade(engine, "0016")
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO audit_seals (event_seq, event_id, partition, position,"
                    " prev_hash, record_hash, chain_hash, sealed_at, late) VALUES (20000,"
                    " 'evt_1', '2026-12-01', 0, 'p', 'r', 'c', '2026-12-01 00:00:00', 0)"
                )
            )
        await upgrade(engine)
        async with engine.connect() as connection:
            ranges = (await connection.execute(text("SELECT low, high FROM audit_seal_gaps"))).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in ranges] == [(20000 - LATE_WINDOW + 1, 19999)]
