"""The evaluator on a real store (SQLite and PostgreSQL): it starts after the newest event,
raises and counts alerts, and a restart (a new evaluator, empty memory) neither misses nor
repeats an event; a seq that commits late is still evaluated, once, however late (its range
is given up only when no transaction can fill it), and the cursor holds a bounded number of
ranges."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from fleetward.audit import gaps
from fleetward.audit.alerts import Alert, AlertStatus
from fleetward.audit.events import Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, Target
from fleetward.core.clock import FrozenClock
from fleetward.detection import cursor
from fleetward.detection import evaluator as evaluator_module
from fleetward.detection.config import EvaluatorConfig, RulesConfig
from fleetward.detection.evaluator import Evaluator
from fleetward.detection.finding import Finding, Rule
from fleetward.detection.observed import Observed
from fleetward.detection.rules import build_rules
from fleetward.platform import Platform
from support.locks import TurnWatch

MALLORY = Actor.user("usr_mallory", "ten_consumer")


def evaluator(platform: Platform, **config: object) -> Evaluator:
    return Evaluator(
        platform.unit_of_work,
        platform.clock,
        platform.audit,
        lambda: build_rules(RulesConfig()),
        EvaluatorConfig(**config),  # type: ignore[arg-type]
    )


async def deny(platform: Platform, *vehicles: str, seq: int | None = None) -> list[str]:
    """Mallory refused on each vehicle, committed; the events' ids."""
    async with platform.unit_of_work() as uow:
        records = [
            platform.audit.record(
                uow.session,
                EventName.AUTHZ_DECISION_MADE,
                actor=MALLORY,
                target=Target("vehicle", vehicle),
                decision=Decision.DENIED,
                reason="no-relationship",
            )
            for vehicle in vehicles
        ]
        if seq is not None:
            for offset, record in enumerate(records):
                record["seq"] = seq + offset
        await uow.commit()
    return [r["id"] for r in records]


async def alerts(platform: Platform) -> list[Alert]:
    async with platform.unit_of_work() as uow:
        return list(await uow.session.scalars(select(Alert).order_by(Alert.first_seen)))


async def raised_events(platform: Platform) -> int:
    async with platform.unit_of_work() as uow:
        query = select(func.count()).where(AuditRecord.name == EventName.ALERT_RAISED.value)
        return int(await uow.session.scalar(query) or 0)


async def test_history_before_the_first_start_raises_nothing(platform: Platform) -> None:
    await deny(platform, *(f"veh_old{i}" for i in range(8)))
    assert await evaluator(platform).run_until_idle() == 0
    assert await alerts(platform) == []


async def test_restart_neither_misses_nor_repeats(platform: Platform, clock: FrozenClock) -> None:
    first = evaluator(platform)
    await first.run_until_idle()  # the cursor starts here
    walk = await deny(platform, *(f"veh_{i}" for i in range(5)))
    assert await first.step() == 5
    assert await first.run_until_idle() == 1  # the alert:raised event (no rule wants it)
    (alert,) = await alerts(platform)
    assert alert.rule == "vin-enumeration" and alert.count == 1
    assert alert.status is AlertStatus.OPEN and alert.evidence == walk
    assert await raised_events(platform) == 1

    # A restart: new memory. Nothing new, so nothing is evaluated again...
    second = evaluator(platform)
    assert await second.run_until_idle() == 0
    (again,) = await alerts(platform)
    assert again.count == 1 and again.evidence == walk
    # ...and the walk goes on: the window, rebuilt from the log, still holds the first five.
    clock.advance(timedelta(minutes=1))
    (sixth,) = await deny(platform, "veh_5")
    await second.run_until_idle()
    (counted,) = await alerts(platform)
    assert counted.id == alert.id and counted.count == 2
    assert counted.evidence == [*walk, sixth]
    assert await raised_events(platform) == 1


async def test_a_failed_step_is_evaluated_again_once(platform: Platform) -> None:
    stepper = evaluator(platform)
    await stepper.run_until_idle()
    await deny(platform, *(f"veh_{i}" for i in range(5)))
    # Another evaluator moved the cursor meanwhile: this one's batch must be void.
    async with platform.unit_of_work() as uow:
        position = await cursor.read(uow.session, lock=True)
        assert position is not None
        await cursor.move(
            uow.session, position, cursor.Position(position.seq), platform.clock.now()
        )
        await uow.commit()
    await stepper.run_until_idle()
    (alert,) = await alerts(platform)
    assert alert.count == 1 and len(alert.evidence) == 5


async def test_a_late_commit_is_evaluated_once(platform: Platform) -> None:
    stepper = evaluator(platform)
    await stepper.run_until_idle()
    async with platform.unit_of_work() as uow:
        base = int(await uow.session.scalar(select(func.max(AuditRecord.seq))) or 0)
    # Four refusals commit with seqs above a hole (a transaction still open elsewhere)...
    await deny(platform, "veh_1", "veh_2", "veh_3", "veh_4", seq=base + 1001)
    await stepper.run_until_idle()
    assert await alerts(platform) == []
    # ...then the hole's record commits: it is found, evaluated once, and completes the walk.
    await deny(platform, "veh_0", seq=base + 1000)
    await stepper.run_until_idle()
    await stepper.run_until_idle()
    (alert,) = await alerts(platform)
    assert alert.count == 1 and len(alert.evidence) == 5
    async with platform.unit_of_work() as uow:
        position = await cursor.read(uow.session, lock=False)
    assert position is not None and not gaps.covers(position.pending, base + 1000)


async def position_now(platform: Platform) -> cursor.Position:
    async with platform.unit_of_work() as uow:
        position = await cursor.read(uow.session, lock=False)
    assert position is not None
    return position


async def newest_seq(platform: Platform) -> int:
    async with platform.unit_of_work() as uow:
        return int(await uow.session.scalar(select(func.max(AuditRecord.seq))) or 0)


async def cursor_moved_ahead(platform: Platform) -> int:
    """The cursor placed 1,000 seqs above the newest record, nothing pending: records written
    at seqs above it are never what PostgreSQL's sequence draws for the alerts' records."""
    ahead = await newest_seq(platform) + 1000
    async with platform.unit_of_work() as uow:
        position = await cursor.read(uow.session, lock=True)
        assert position is not None
        await cursor.move(uow.session, position, cursor.Position(ahead), platform.clock.now())
        await uow.commit()
    return ahead


async def test_a_gap_no_transaction_can_fill_is_given_up(
    platform: Platform, clock: FrozenClock, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rolled-back insert leaves its seqs empty for good: the evaluator stops looking there
    # once nothing can still fill them. SQLite: after the grace (no writer is in flight
    # while a step holds the write lock). PostgreSQL: past the grace the range takes the
    # next xid as its bound, and goes once the oldest running xid has reached it (decided
    # here on given snapshots: the server's is shared with whatever else runs on it).
    stepper = evaluator(platform, gap_grace=timedelta(minutes=5))
    await stepper.run_until_idle()
    base = await newest_seq(platform)
    await deny(platform, "veh_1", seq=base + 5000)
    await stepper.run_until_idle()
    [gap] = (await position_now(platform)).pending
    assert (gap.low, gap.high, gap.xid_bound) == (base + 1, base + 4999, None)
    clock.advance(timedelta(minutes=4))
    await stepper.step()
    assert (await position_now(platform)).pending == (gap,)  # within the grace: kept as is
    clock.advance(timedelta(minutes=2))
    await stepper.step()
    pending = (await position_now(platform)).pending
    if backend == "sqlite":
        assert pending == ()
        return
    [bound_gap] = pending
    bound = bound_gap.xid_bound
    assert bound is not None
    for xmin, kept in ((bound - 1, True), (bound, False)):

        async def given(_: object, snapshot: tuple[int, int] = (xmin, bound + 10)) -> object:
            return snapshot

        monkeypatch.setattr(gaps, "oldest_running", given)
        await stepper.step()
        assert bool((await position_now(platform)).pending) is kept


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_transaction_open_past_the_grace_is_still_evaluated(
    platform: Platform, clock: FrozenClock
) -> None:
    # The real thing on PostgreSQL: a refusal takes its seq, its transaction stays open
    # while four more commit and are evaluated, long past the (lowered) grace; when it
    # commits at last, the evaluator still finds it (its range waited for its transaction)
    # and it completes the walk. The alert is dated by the records, not by the late step.
    stepper = evaluator(platform, gap_grace=timedelta(seconds=30))
    await stepper.run_until_idle()
    recorded_at = clock.now()
    async with platform.services() as (held_uow, held_ctx):
        held = held_ctx.audit.record(
            held_ctx.session,
            EventName.AUTHZ_DECISION_MADE,
            actor=MALLORY,
            target=Target("vehicle", "veh_0"),
            decision=Decision.DENIED,
            reason="no-relationship",
        )
        await held_uow.session.flush()  # the INSERT: its seq is drawn now
        walk = await deny(platform, "veh_1", "veh_2", "veh_3", "veh_4")
        assert await stepper.run_until_idle() == 4
        for _ in range(4):  # the grace passes, the range gets its xid bound, and stays
            clock.advance(timedelta(minutes=10))
            assert await stepper.run_until_idle() == 0
        [gap] = (await position_now(platform)).pending
        assert gap.xid_bound is not None
        assert await alerts(platform) == []
        await held_uow.commit()
    assert await stepper.step() == 1
    (alert,) = await alerts(platform)
    assert sorted(alert.evidence) == sorted([*walk, held["id"]]) and alert.count == 1
    assert alert.first_seen == recorded_at
    assert (await position_now(platform)).pending == ()


async def test_a_late_commit_in_a_gap_wider_than_the_bound_is_evaluated(
    platform: Platform,
) -> None:
    # A bulk operation's transaction draws 20,000 seqs and commits after a later record:
    # the cursor kept the newest 10,000 missing seqs only, so the operation's first records
    # were never evaluated, silently. Ranges keep the whole gap in one entry. (Seqs are
    # written here above what PostgreSQL's sequence will draw for the alert's own record.)
    stepper = evaluator(platform)
    await stepper.run_until_idle()
    base = await newest_seq(platform)
    walk = await deny(platform, "veh_1", "veh_2", "veh_3", "veh_4", seq=base + 20_001)
    assert await stepper.run_until_idle() == 4
    (late,) = await deny(platform, "veh_0", seq=base + 8_001)
    await stepper.run_until_idle()
    (alert,) = await alerts(platform)
    assert sorted(alert.evidence) == sorted([*walk, late]) and alert.count == 1
    pending = (await position_now(platform)).pending
    assert not gaps.covers(pending, base + 8_001)
    assert (pending[-1].low, pending[-1].high) == (base + 8_002, base + 20_000)


async def test_a_record_found_inside_a_range_splits_it(platform: Platform) -> None:
    # Late records found in the middle of a range: each is evaluated once, and the seqs on
    # both sides of it are still looked in.
    stepper = evaluator(platform)
    await stepper.run_until_idle()
    base = await cursor_moved_ahead(platform)
    await deny(platform, "veh_9", "veh_10", seq=base + 10)
    assert await stepper.run_until_idle() == 2
    await deny(platform, "veh_5", seq=base + 5)
    assert await stepper.run_until_idle() == 1
    ranges = (await position_now(platform)).ranges
    assert ranges == {(base + 1, base + 4), (base + 6, base + 9)}
    await deny(platform, "veh_2", seq=base + 2)
    await deny(platform, "veh_8", seq=base + 8)
    await stepper.run_until_idle()
    (alert,) = await alerts(platform)
    assert alert.count == 1 and len(alert.evidence) == 5  # each found once
    ranges = (await position_now(platform)).ranges
    assert ranges == {
        (base + 1, base + 1),
        (base + 3, base + 4),
        (base + 6, base + 7),
        (base + 9, base + 9),
    }
    assert await stepper.run_until_idle() == 0


async def test_the_cursor_holds_a_bounded_number_of_ranges(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At the bound the cursor does not move past another missing range (it would have to
    # forget one): it waits before the record that would open it, and goes on once a range
    # is filled (or given up).
    monkeypatch.setattr(cursor, "PENDING_MAX", 2)
    stepper = evaluator(platform)
    await stepper.run_until_idle()
    base = await cursor_moved_ahead(platform)
    for offset in (2, 4, 6, 8):
        await deny(platform, f"veh_{offset}", seq=base + offset)
    assert await stepper.run_until_idle() == 2
    position = await position_now(platform)
    assert position.seq == base + 4 and position.ranges == {
        (base + 1, base + 1),
        (base + 3, base + 3),
    }
    await deny(platform, "veh_1", seq=base + 1)
    assert await stepper.run_until_idle() == 1 + 1  # the late one, then base + 6
    position = await position_now(platform)
    assert position.seq == base + 6 and position.ranges == {
        (base + 3, base + 3),
        (base + 5, base + 5),
    }


async def test_a_cursor_written_before_ranges_is_read_as_ranges(platform: Platform) -> None:
    # Rows written by the evaluator before ranges hold {seq: first missed}: nothing pending
    # then is lost by the upgrade.
    stepper = evaluator(platform)
    await stepper.run_until_idle()
    base = await newest_seq(platform)
    seen = platform.clock.now()
    old = {str(base - s): (seen - timedelta(seconds=s)).isoformat() for s in (3, 2, 0)}
    async with platform.unit_of_work() as uow:
        await uow.session.execute(update(cursor.DetectionCursor).values(pending=old))
        await uow.commit()
    position = await position_now(platform)
    assert [(g.low, g.high, g.seen_at) for g in position.pending] == [
        (base - 3, base - 2, seen - timedelta(seconds=3)),
        (base, base, seen),
    ]


async def test_replicas_taking_turns_see_the_whole_walk(platform: Platform) -> None:
    one, two = evaluator(platform), evaluator(platform)
    await one.run_until_idle()
    first = await deny(platform, "veh_0", "veh_1", "veh_2")
    assert await one.step() == 3
    # The other replica's memory is behind the cursor: it catches up, then sees the rest.
    rest = await deny(platform, "veh_3", "veh_4")
    assert await two.step() == 2
    (alert,) = await alerts(platform)
    assert alert.evidence == [*first, *rest] and alert.count == 1
    (sixth,) = await deny(platform, "veh_5")
    await one.run_until_idle()
    (counted,) = await alerts(platform)
    assert counted.count == 2 and counted.evidence[-1] == sixth
    assert await raised_events(platform) == 1


async def test_replicas_stepping_at_once_take_turns(
    platform: Platform, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two replicas (on SQLite: two processes on one store file) step at the same moment. The
    # first has read the cursor and the new events when the second starts: the second must
    # wait for the first's commit and then go on from where it left the cursor (the one event
    # it added: its alert's audit:alert:raised), not evaluate the same batch and void the
    # first's with CursorMoved (logged as a failed round, the rules then replayed).
    one, two = evaluator(platform), evaluator(platform)
    await one.run_until_idle()
    events = await deny(platform, *(f"veh_{i}" for i in range(5)))
    one_evaluated, one_goes_on = asyncio.Event(), asyncio.Event()
    evaluate = evaluator_module.evaluate

    def evaluate_then_note(rules: Sequence[Rule], batch: Sequence[Observed]) -> list[Finding]:
        found = evaluate(rules, batch)
        if batch and rules is one.rules:
            one_evaluated.set()
        return found

    apply = evaluator_module.raising.apply
    paused_once = False

    async def apply_held_for_one(*args: object, **kwargs: object) -> list[Alert]:
        # The first replica's step is held after it evaluated, before it writes anything.
        nonlocal paused_once
        if one_evaluated.is_set() and not paused_once:
            paused_once = True
            await one_goes_on.wait()
        return await apply(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluator_module, "evaluate", evaluate_then_note)
    monkeypatch.setattr(evaluator_module.raising, "apply", apply_held_for_one)
    turns = TurnWatch(monkeypatch)
    first = asyncio.create_task(one.step())
    await one_evaluated.wait()
    second = asyncio.create_task(two.step())
    await turns.waiting(platform, backend, second)
    one_goes_on.set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert results == [5, 1]
    (alert,) = await alerts(platform)
    assert alert.evidence == events and alert.count == 1
    assert await raised_events(platform) == 1
    # Both go on from the same cursor: nothing is evaluated again, nothing is left.
    assert await one.run_until_idle() == 0 and await two.run_until_idle() == 0


async def test_replicas_starting_at_once_place_one_cursor(
    platform: Platform, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two replicas start on a store detection never ran on. The first has found no cursor
    # and is about to place it when the second looks: the second must not fail on the
    # cursor's key (an IntegrityError, logged as a failed round) but find the first's cursor
    # (or wait for it) and go on from it.
    one, two = evaluator(platform), evaluator(platform)
    one_found_none, one_goes_on = asyncio.Event(), asyncio.Event()
    read = cursor.read

    async def read_then_pause(*args: object, **kwargs: object) -> cursor.Position | None:
        position = await read(*args, **kwargs)  # type: ignore[arg-type]
        if position is None and kwargs.get("lock") and not one_found_none.is_set():
            one_found_none.set()  # the first replica, in its step, before it writes
            await one_goes_on.wait()
        return position

    monkeypatch.setattr(cursor, "read", read_then_pause)
    turns = TurnWatch(monkeypatch)
    first = asyncio.create_task(one.step())
    await one_found_none.wait()
    second = asyncio.create_task(two.step())
    await turns.waiting(platform, backend, second)
    one_goes_on.set()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert results == [0, 0]
    # Both follow the one cursor: what comes next is evaluated once, by one of them.
    events = await deny(platform, *(f"veh_{i}" for i in range(5)))
    assert await one.run_until_idle() == 5 + 1  # and its alert's audit:alert:raised
    assert await two.run_until_idle() == 0
    (alert,) = await alerts(platform)
    assert alert.evidence == events and alert.count == 1


async def test_a_late_commit_another_replica_evaluated_is_in_every_replicas_windows(
    platform: Platform,
) -> None:
    # Replica two evaluates a record that filled a gap (a late commit: the cursor's seq does
    # not move, only its pending list shrinks). Replica one's windows must take it in too,
    # or its next step judges the walk without it and the alert is never raised.
    one, two = evaluator(platform), evaluator(platform)
    await one.run_until_idle()
    async with platform.unit_of_work() as uow:
        base = int(await uow.session.scalar(select(func.max(AuditRecord.seq))) or 0)
    walk = await deny(platform, "veh_1", "veh_2", "veh_3", seq=base + 1001)
    assert await one.run_until_idle() == 3  # base + 1 .. base + 1000 pending
    await two.run_until_idle()  # warmed up to the cursor: nothing new
    (late,) = await deny(platform, "veh_0", seq=base + 1000)
    assert await two.run_until_idle() == 1  # the late one: four distinct vehicles so far
    (fifth,) = await deny(platform, "veh_4", seq=base + 2000)
    assert await one.run_until_idle() == 1 + 1  # the fifth, then its alert's event
    (alert,) = await alerts(platform)
    assert sorted(alert.evidence) == sorted([*walk, late, fifth]) and alert.count == 1
