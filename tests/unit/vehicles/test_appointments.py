"""The booking service: its own rules (dealer, schedule, note, states), refusals that change
nothing, and one audit event per change. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.core.clock import FrozenClock
from fleetward.demo.world import seed_demo_world
from fleetward.identity.directory import Directory
from fleetward.identity.models import Tenant
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.appointments import (
    AppointmentRefused,
    AppointmentService,
    AppointmentStateConflict,
    check_note,
    check_schedule,
)
from fleetward.vehicles.records import AppointmentStatus, ServiceAppointment
from fleetward.vehicles.registry import VehicleRegistry
from support.snapshot import snapshot

ACTOR = Actor.system("test")


@pytest.fixture
async def world(platform: Platform, ctx: ServiceContext) -> ServiceContext:
    await seed_demo_world(ctx, platform.passwords)
    return ctx


async def _tenant(ctx: ServiceContext, slug: str) -> Tenant:
    found = await ctx.session.scalar(select(Tenant).where(Tenant.slug == slug))
    assert found is not None
    return found


async def _count(ctx: ServiceContext, model: type, **where: str) -> int:
    query = select(func.count()).select_from(model)
    for column, value in where.items():
        query = query.where(getattr(model, column) == value)
    return int(await ctx.session.scalar(query) or 0)


async def _book(ctx: ServiceContext, **changes: object) -> ServiceAppointment:
    vehicle = await VehicleRegistry(ctx).by_label("ALICE-1")
    alice = await Directory(ctx).user("alice")
    arguments: dict[str, object] = {
        "dealer_id": (await _tenant(ctx, "downtown-motors")).id,
        "scheduled_for": ctx.clock.now() + timedelta(days=3),
        "note": "",
        "booked_by": alice.id,
        "actor": Actor.user(alice.id),
    }
    arguments.update(changes)
    return await AppointmentService(ctx).book(vehicle, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(seconds=-1), False),  # the past
        (timedelta(0), False),  # now is not ahead
        (timedelta(seconds=1), True),
        (timedelta(days=180), True),  # the last allowed instant
        (timedelta(days=180, seconds=1), False),  # too far ahead
    ],
)
def test_schedule_bounds(clock: FrozenClock, offset: timedelta, accepted: bool) -> None:
    when = clock.now() + offset
    if accepted:
        check_schedule(when, clock.now())
    else:
        with pytest.raises(AppointmentRefused):
            check_schedule(when, clock.now())


def test_naive_times_are_refused(clock: FrozenClock) -> None:
    with pytest.raises(AppointmentRefused) as refused:
        check_schedule(clock.now().replace(tzinfo=None) + timedelta(days=1), clock.now())
    assert refused.value.reason == "naive"


@pytest.mark.parametrize(
    ("note", "accepted"),
    [
        ("", True),
        ("n" * 500, True),
        ("n" * 501, False),
        ("two\nlines\tand a tab", True),
        ("nul\x00byte", False),
        ("escape\x1b[31m", False),
        ("bidi \u202e override", False),
        ("caf\u00e9 \u2013 ok", True),
    ],
)
def test_note_rules(note: str, accepted: bool) -> None:
    if accepted:
        check_note(note)
    else:
        with pytest.raises(AppointmentRefused):
            check_note(note)


@pytest.mark.parametrize(
    "dealer",
    ["consumer", "insureco", "fleetward-ops", "unknown", "malformed", "disabled"],
)
async def test_only_an_active_dealer_is_a_dealer(world: ServiceContext, dealer: str) -> None:
    ctx = world
    if dealer == "unknown":
        dealer_id = "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"
    elif dealer == "malformed":
        dealer_id = "veh_" + (await VehicleRegistry(ctx).by_label("ALICE-1")).id[4:]
    elif dealer == "disabled":
        tenant = await _tenant(ctx, "downtown-motors")
        tenant.disabled_at = ctx.clock.now()
        dealer_id = tenant.id
    else:
        dealer_id = (await _tenant(ctx, dealer)).id
    with pytest.raises(AppointmentRefused) as refused:
        await _book(ctx, dealer_id=dealer_id)
    # The same answer whatever the reason, so the body cannot probe the tenant directory.
    assert refused.value.reason == "dealer"
    assert refused.value.detail == "dealer_id does not name a dealer"
    assert await _count(ctx, ServiceAppointment) == 0
    assert await _count(ctx, AuditRecord, name="vehicle:appointment:booked") == 0


async def test_booking_is_requested_and_audited(world: ServiceContext) -> None:
    ctx = world
    appointment = await _book(ctx, note="tyres")
    assert appointment.status is AppointmentStatus.REQUESTED
    assert appointment.created_at == appointment.updated_at == ctx.clock.now()
    assert await _count(ctx, AuditRecord, name="vehicle:appointment:booked") == 1


async def test_state_machine(world: ServiceContext) -> None:
    ctx = world
    service = AppointmentService(ctx)
    vehicle = await VehicleRegistry(ctx).by_label("ALICE-1")
    first = await _book(ctx)
    await service.confirm(first, actor=ACTOR)
    assert first.status is AppointmentStatus.CONFIRMED
    with pytest.raises(AppointmentStateConflict):
        await service.confirm(first, actor=ACTOR)  # only a requested one is confirmed
    await service.cancel(first, tenant_id=vehicle.tenant_id, actor=ACTOR)  # confirmed: open
    assert first.status is AppointmentStatus.CANCELLED
    with pytest.raises(AppointmentStateConflict):
        await service.cancel(first, tenant_id=vehicle.tenant_id, actor=ACTOR)
    with pytest.raises(AppointmentStateConflict):
        await service.confirm(first, actor=ACTOR)
    assert first.status is AppointmentStatus.CANCELLED
    done = await _book(ctx)
    done.status = AppointmentStatus.COMPLETED
    with pytest.raises(AppointmentStateConflict):
        await service.cancel(done, tenant_id=vehicle.tenant_id, actor=ACTOR)
    assert await _count(ctx, AuditRecord, name="vehicle:appointment:confirmed") == 1
    assert await _count(ctx, AuditRecord, name="vehicle:appointment:cancelled") == 1


@pytest.mark.parametrize("move", ["confirm-requested", "cancel-requested", "cancel-confirmed"])
async def test_an_appointment_whose_time_has_passed_no_longer_changes(
    world: ServiceContext, clock: FrozenClock, move: str
) -> None:
    # Once its slot has come, the visit happened or did not: a confirmation after the fact
    # promises a slot that is gone, a cancellation would rewrite a missed visit as cancelled.
    ctx = world
    service = AppointmentService(ctx)
    vehicle = await VehicleRegistry(ctx).by_label("ALICE-1")
    appointment = await _book(ctx, scheduled_for=ctx.clock.now() + timedelta(hours=2))
    if move == "cancel-confirmed":
        await service.confirm(appointment, actor=ACTOR)
    await ctx.session.commit()
    await ctx.session.refresh(appointment)
    clock.advance(timedelta(hours=2))  # the slot itself: no longer ahead
    before = await snapshot(ctx.session)
    attempt = (
        service.confirm(appointment, actor=ACTOR)
        if move == "confirm-requested"
        else service.cancel(appointment, tenant_id=vehicle.tenant_id, actor=ACTOR)
    )
    with pytest.raises(AppointmentStateConflict) as refused:
        await attempt
    assert refused.value.reason == "past"
    problem = refused.value.to_problem()
    assert (problem["status"], problem["type"]) == (409, AppointmentStateConflict.problem_type())
    await ctx.session.rollback()
    assert await snapshot(ctx.session) == before


async def test_with_dealer_hides_other_dealers_appointments(world: ServiceContext) -> None:
    ctx = world
    appointment = await _book(ctx)
    service = AppointmentService(ctx)
    dealer = await _tenant(ctx, "downtown-motors")
    other = await _tenant(ctx, "insureco")
    assert await service.with_dealer(appointment.id, dealer.id) is appointment
    assert await service.with_dealer(appointment.id, other.id) is None
    assert await service.with_dealer("apt_aaaaaaaaaaaaaaaaaaaaaaaaaa", dealer.id) is None


async def test_a_confirm_racing_a_cancel_does_not_write_over_it(
    world: ServiceContext, platform: Platform
) -> None:
    # The customer cancels after the dealer's request read the appointment as requested: the
    # dealer's confirm must not write over the cancel.
    ctx = world
    appointment = await _book(ctx)
    tenant_id = (await VehicleRegistry(ctx).by_label("ALICE-1")).tenant_id
    await ctx.session.commit()
    await ctx.session.refresh(appointment)  # read as requested
    appointment_id = appointment.id
    async with platform.services() as (uow, other):
        theirs = await other.session.get(ServiceAppointment, appointment_id)
        assert theirs is not None
        await AppointmentService(other).cancel(theirs, tenant_id=tenant_id, actor=ACTOR)
        await uow.commit()
    with pytest.raises(AppointmentStateConflict) as refused:
        await AppointmentService(ctx).confirm(appointment, actor=ACTOR)
    assert refused.value.reason == "changed"
    await ctx.session.rollback()
    stored = await ctx.session.scalar(
        select(ServiceAppointment.status).where(ServiceAppointment.id == appointment_id)
    )
    assert stored is AppointmentStatus.CANCELLED
