"""Audit events are typed, carry actor, tenant, object, decision and trace, and commit with
the change they describe."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, func, select

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, Target, pending
from fleetward.core.context import RequestContext, set_request
from fleetward.identity.models import TenantKind
from fleetward.platform import Platform
from support.factories import WorldFactory


async def test_event_has_the_investigation_fields(platform: Platform) -> None:
    set_request(
        RequestContext(request_id="req-abcdef12", trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    )
    try:
        async with platform.services() as (uow, ctx):
            world = WorldFactory(ctx)
            fleet = await world.tenant(TenantKind.FLEET)
            ctx.audit.record(
                ctx.session,
                EventName.FLEET_OPERATOR_ASSIGNED,
                actor=Actor.user("usr_erin", fleet.id),
                target=Target("fleet_group", "grp_1", fleet.id),
                decision=Decision.DENIED,
                reason="not-an-operator",
                details={"operator": "usr_x"},
            )
            await uow.commit()
    finally:
        set_request(None)
    async with platform.unit_of_work() as uow:
        event = await uow.session.scalar(
            select(AuditRecord).where(AuditRecord.name == "fleet:operator:assigned")
        )
    assert event is not None
    assert (event.actor_type, event.actor_id, event.actor_tenant_id) == (
        ActorType.USER,
        "usr_erin",
        fleet.id,
    )
    assert (event.object_type, event.object_id, event.tenant_id) == (
        "fleet_group",
        "grp_1",
        fleet.id,
    )
    assert (event.action, event.decision, event.reason) == (
        "assigned",
        Decision.DENIED,
        "not-an-operator",
    )
    assert (event.request_id, event.trace_id) == (
        "req-abcdef12",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    )
    assert event.details == {"operator": "usr_x"}
    assert event.occurred_at == platform.clock.now()


async def test_events_roll_back_with_the_change(platform: Platform) -> None:
    async with platform.services() as (_uow, ctx):
        await WorldFactory(ctx).tenant(TenantKind.DEALER, slug="ghost")
        # no commit: the tenant and its audit event vanish together
    async with platform.unit_of_work() as uow:
        names = (await uow.session.scalars(select(AuditRecord.name))).all()
    assert "tenant:created" not in names


async def test_event_names_are_typed_and_unique() -> None:
    values = [e.value for e in EventName]
    assert len(values) == len(set(values))
    assert all(v.count(":") in (1, 2) and v == v.lower() for v in values)


def _record(ctx_audit: Any, session: Any, n: int) -> None:
    ctx_audit.record(
        session,
        EventName.VEHICLE_REGISTERED,
        actor=Actor.system("recorder-test"),
        target=Target("vehicle", f"veh_{n:026d}"),
        details={"n": n},
    )


async def _stored(platform: Platform) -> list[int]:
    async with platform.unit_of_work() as uow:
        rows = await uow.session.scalars(
            select(AuditRecord.details).where(AuditRecord.actor_id == "recorder-test")
        )
        return sorted(d["n"] for d in rows)


async def test_a_transactions_records_are_one_insert_at_commit(platform: Platform) -> None:
    inserts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENTS"):
            inserts.append(statement)

    event.listen(platform.engine.sync_engine, "before_cursor_execute", count)
    try:
        async with platform.services() as (uow, ctx):
            for n in range(7):
                _record(ctx.audit, ctx.session, n)
            assert len(pending(ctx.session)) == 7
            await uow.commit()
    finally:
        event.remove(platform.engine.sync_engine, "before_cursor_execute", count)
    assert len(inserts) == 1
    assert await _stored(platform) == list(range(7))


async def test_records_are_seen_by_their_transactions_next_query(platform: Platform) -> None:
    # As the ORM's autoflush would: a service counting records (the transfer's VIN refusals)
    # sees the one it just made.
    async with platform.services() as (uow, ctx):
        _record(ctx.audit, ctx.session, 1)
        seen = await ctx.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.actor_id == "recorder-test")
        )
        assert seen == 1
        assert not pending(ctx.session)
        await uow.commit()
    assert await _stored(platform) == [1]


async def test_without_autoflush_records_wait_for_the_commit(platform: Platform) -> None:
    async with platform.services() as (uow, ctx):
        _record(ctx.audit, ctx.session, 1)
        with ctx.session.no_autoflush:
            seen = await ctx.session.scalar(
                select(func.count())
                .select_from(AuditRecord)
                .where(AuditRecord.actor_id == "recorder-test")
            )
        assert seen == 0
        assert len(pending(ctx.session)) == 1
        await uow.commit()
    assert await _stored(platform) == [1]


async def test_rolled_back_or_abandoned_records_are_not_written(platform: Platform) -> None:
    async with platform.services() as (_uow, ctx):
        _record(ctx.audit, ctx.session, 1)
        await ctx.session.rollback()
        assert not pending(ctx.session)
        _record(ctx.audit, ctx.session, 2)
    # left without commit: the next session starts clean
    async with platform.services() as (uow, ctx):
        assert not pending(ctx.session)
        _record(ctx.audit, ctx.session, 3)
        await uow.commit()
    assert await _stored(platform) == [3]
