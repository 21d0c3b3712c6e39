"""A relation ended twice at once is ended once.

A request reads a delegation, a partner consent, an operator's assignment, a vehicle's group
link or a dealer case as still in force, and ends it; meanwhile another request (a sale, the
same click twice, a colleague) ended it and committed. The late request must keep the earlier
end as it was (its time and its reason) and audit nothing: the end is one fact with one record.

PostgreSQL only: on SQLite (one writer) the two transactions cannot interleave as below.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, TenantKind, User
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.errors import CaseNotOpen
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.models import (
    CaseStatus,
    DealerCase,
    DriverDelegation,
    FleetGroup,
    GroupVehicle,
    OperatorAssignment,
    PartnerConsent,
    SupportCase,
    Vehicle,
)
from fleetward.vehicles.transfers import TransferService
from support.factories import FACTORY, WorldFactory

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


async def _records(ctx: ServiceContext, name: EventName, object_id: str) -> int:
    count = await ctx.session.scalar(
        select(func.count())
        .select_from(AuditRecord)
        .where(AuditRecord.name == name.value, AuditRecord.object_id == object_id)
    )
    return int(count or 0)


async def _sold_car(ctx: ServiceContext) -> tuple[User, User, User, Vehicle]:
    world = WorldFactory(ctx)
    consumers = await world.tenant(TenantKind.CONSUMER)
    seller, buyer, driver = [await world.user(consumers) for _ in range(3)]
    return seller, buyer, driver, await world.owned_vehicle(seller)


async def test_a_driver_revoked_by_a_sale_meanwhile_keeps_the_sales_revocation(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock
) -> None:
    seller, buyer, driver, car = await _sold_car(ctx)
    partner = await WorldFactory(ctx).tenant(TenantKind.PARTNER)
    delegation, _ = await WorldFactory(ctx).grants(
        car, seller, driver, partner, until=clock.now() + timedelta(days=3)
    )
    sale = await TransferService(ctx).start(car, seller, actor=FACTORY)
    await ctx.session.commit()
    sold_at = clock.now()
    async with platform.services() as (late_uow, late):
        # The seller's revocation has read the driver as in force (DELETE .../drivers/{id})...
        stale = await late.session.get(DriverDelegation, delegation.id)
        assert stale is not None and stale.revoked_at is None
        # ...when the buyer's acceptance ends every grant of the seller, and commits.
        async with platform.services() as (uow, selling):
            await TransferService(selling).accept(sale.code, car.vin, buyer, actor=FACTORY)
            await uow.commit()
        clock.advance(timedelta(seconds=5))
        revoked = await DelegationService(late).revoke(stale, actor=FACTORY)
        await late_uow.commit()
    async with platform.services() as (_uow, check):
        row = await check.session.get(DriverDelegation, delegation.id)
        assert row is not None
        # The sale's revocation stands: its instant and its reason, one record.
        assert (row.revoked_at, row.revoked_reason) == (sold_at, "transferred")
        assert await _records(check, EventName.DRIVER_REVOKED, delegation.id) == 1
    assert revoked is False  # nothing was left to revoke (the route answers 404)


async def test_a_consent_revoked_by_a_sale_meanwhile_keeps_the_sales_revocation(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock
) -> None:
    seller, buyer, driver, car = await _sold_car(ctx)
    partner = await WorldFactory(ctx).tenant(TenantKind.PARTNER)
    _, consent = await WorldFactory(ctx).grants(
        car, seller, driver, partner, until=clock.now() + timedelta(days=3)
    )
    sale = await TransferService(ctx).start(car, seller, actor=FACTORY)
    await ctx.session.commit()
    sold_at = clock.now()
    async with platform.services() as (late_uow, late):
        # The seller's revocation has read the consent as in force (DELETE .../consents/{id})...
        stale = await late.session.get(PartnerConsent, consent.id)
        assert stale is not None and stale.revoked_at is None
        # ...when the buyer's acceptance ends every grant of the seller, and commits.
        async with platform.services() as (uow, selling):
            await TransferService(selling).accept(sale.code, car.vin, buyer, actor=FACTORY)
            await uow.commit()
        clock.advance(timedelta(seconds=5))
        revoked = await ConsentService(late).revoke(stale, actor=FACTORY)
        await late_uow.commit()
    async with platform.services() as (_uow, check):
        row = await check.session.get(PartnerConsent, consent.id)
        assert row is not None
        # The sale's revocation stands: its instant and its reason, one record.
        assert (row.revoked_at, row.revoked_reason) == (sold_at, "transferred")
        assert await _records(check, EventName.PARTNER_CONSENT_REVOKED, consent.id) == 1
    assert revoked is False  # nothing was left to revoke (the route answers 404)


async def _group(ctx: ServiceContext) -> tuple[FleetGroup, GroupVehicle, OperatorAssignment]:
    world = WorldFactory(ctx)
    fleet = await world.tenant(TenantKind.FLEET)
    car = await world.vehicle(fleet)
    fleets = FleetService(ctx)
    await fleets.add_vehicle(fleet, car, actor=FACTORY)
    group = await fleets.create_group(fleet, "north", actor=FACTORY)
    operator = await world.user(fleet)
    await Directory(ctx).grant_membership(operator, fleet, Role.FLEET_OPERATOR, actor=FACTORY)
    link = await fleets.add_to_group(group, car, actor=FACTORY)
    assignment = await fleets.assign_operator(group, operator, actor=FACTORY)
    await ctx.session.commit()
    return group, link, assignment


async def test_an_operator_unassigned_twice_at_once_is_unassigned_once(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock
) -> None:
    _group_row, _link, assignment = await _group(ctx)
    ended_at = clock.now()
    async with platform.services() as (late_uow, late):
        # Two admins (or one double click) unassign the operator: the late one has read the
        # assignment as current (DELETE /groups/{gid}/operators/{aid})...
        stale = await late.session.get(OperatorAssignment, assignment.id)
        assert stale is not None and stale.valid_until is None
        async with platform.services() as (uow, early):
            row = await early.session.get(OperatorAssignment, assignment.id)
            assert row is not None
            await FleetService(early).unassign_operator(row, actor=FACTORY)
            await uow.commit()
        clock.advance(timedelta(seconds=5))
        ended = await FleetService(late).unassign_operator(stale, actor=FACTORY)
        await late_uow.commit()
    async with platform.services() as (_uow, check):
        row = await check.session.get(OperatorAssignment, assignment.id)
        assert row is not None and row.valid_until == ended_at  # the first end stands
        assert await _records(check, EventName.FLEET_OPERATOR_UNASSIGNED, assignment.id) == 1
    assert ended is False  # the route answers 404, as to an assignment already ended


async def test_a_vehicle_removed_twice_at_once_is_removed_once(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock
) -> None:
    group, link, _assignment = await _group(ctx)
    removed_at = clock.now()
    async with platform.services() as (late_uow, late):
        stale_group = await late.session.get(FleetGroup, group.id)
        stale = await late.session.get(GroupVehicle, link.id)
        assert stale_group is not None and stale is not None and stale.valid_until is None
        async with platform.services() as (uow, early):
            early_group = await early.session.get(FleetGroup, group.id)
            row = await early.session.get(GroupVehicle, link.id)
            assert early_group is not None and row is not None
            await FleetService(early).remove_from_group(early_group, row, actor=FACTORY)
            await uow.commit()
        clock.advance(timedelta(seconds=5))
        removed = await FleetService(late).remove_from_group(stale_group, stale, actor=FACTORY)
        await late_uow.commit()
    async with platform.services() as (_uow, check):
        row = await check.session.get(GroupVehicle, link.id)
        assert row is not None and row.valid_until == removed_at  # the first end stands
        records = await check.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(
                AuditRecord.name == EventName.FLEET_GROUP_VEHICLE_REMOVED.value,
                AuditRecord.object_id == group.id,
            )
        )
        assert records == 1
    assert removed is False  # the route answers 404, as to a link already closed


async def _open_case(ctx: ServiceContext, kind: str) -> DealerCase | SupportCase:
    world = WorldFactory(ctx)
    customer = await world.user(await world.tenant(TenantKind.CONSUMER))
    cases = CaseService(ctx)
    if kind == "dealer":
        car = await world.owned_vehicle(customer)
        dealer = await world.tenant(TenantKind.DEALER)
        return await cases.open_dealer_case(dealer, car, "brakes", actor=FACTORY)
    agent = await world.user(await world.tenant(TenantKind.OPERATOR), Role.SUPPORT_AGENT)
    return await cases.open_support_case(agent, customer, "login", actor=FACTORY)


async def _read(
    ctx: ServiceContext, case: DealerCase | SupportCase
) -> DealerCase | SupportCase | None:
    if isinstance(case, DealerCase):
        return await ctx.session.get(DealerCase, case.id)
    return await ctx.session.get(SupportCase, case.id)


async def _close_case(ctx: ServiceContext, case: DealerCase | SupportCase) -> None:
    if isinstance(case, DealerCase):
        await CaseService(ctx).close_dealer_case(case, actor=FACTORY)
    else:
        await CaseService(ctx).close_support_case(case, actor=FACTORY)


@pytest.mark.parametrize(
    ("kind", "closed_event"),
    [("dealer", EventName.DEALER_CASE_CLOSED), ("support", EventName.SUPPORT_CASE_CLOSED)],
)
async def test_a_case_closed_twice_at_once_is_closed_once(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock, kind: str, closed_event: EventName
) -> None:
    case = await _open_case(ctx, kind)
    await ctx.session.commit()
    closed_at = clock.now()
    async with platform.services() as (late_uow, late):
        # Two closes at once (two technicians on a dealer case; an agent's double click on
        # POST /cases/{cid}/close): the late one has read the case open...
        stale = await _read(late, case)
        assert stale is not None and stale.status is CaseStatus.OPEN
        async with platform.services() as (uow, early):
            row = await _read(early, case)
            assert row is not None
            await _close_case(early, row)
            await uow.commit()
        clock.advance(timedelta(seconds=5))
        with pytest.raises(CaseNotOpen):  # the route answers 404, as to a case closed before
            await _close_case(late, stale)
        await late_uow.commit()
    async with platform.services() as (_uow, check):
        row = await _read(check, case)
        assert row is not None and row.closed_at == closed_at  # the first close stands
        assert await _records(check, closed_event, case.id) == 1
