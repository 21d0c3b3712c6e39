"""Audit events are typed, carry actor, tenant, object, decision and trace, and commit with
the change they describe."""

from __future__ import annotations

from sqlalchemy import select

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, Target
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
