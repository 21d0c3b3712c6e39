"""Relationship lifecycles: history is kept, and a transfer leaves the seller nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.core.clock import FrozenClock
from fleetward.core.windows import OverlappingWindow
from fleetward.identity.models import Tenant, TenantKind, User
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.errors import AlreadyOwned, NotCurrentOwner
from fleetward.vehicles.models import DriverDelegation, Ownership, PartnerConsent, Vehicle
from fleetward.vehicles.ownership import OwnershipService
from support.factories import FACTORY, WorldFactory
from support.locks import settled


async def test_transfer_ends_seller_access_and_keeps_history(
    ctx: ServiceContext, clock: FrozenClock
) -> None:
    world = WorldFactory(ctx)
    consumers = await world.tenant(TenantKind.CONSUMER)
    partner = await world.tenant(TenantKind.PARTNER)
    seller = await world.user(consumers)
    buyer = await world.user(consumers)
    driver = await world.user(consumers)
    car = await world.owned_vehicle(seller)
    delegation, consent = await world.grants(
        car, seller, driver, partner, until=clock.now() + timedelta(days=5)
    )
    clock.advance(timedelta(hours=1))
    sale_time = clock.now()

    await OwnershipService(ctx).transfer(car, seller, buyer, actor=FACTORY)

    rows = (
        await ctx.session.scalars(
            select(Ownership).where(Ownership.vehicle_id == car.id).order_by(Ownership.valid_from)
        )
    ).all()
    # History is kept: the seller's row is ended, not deleted, and the buyer's starts then.
    assert [(r.owner_user_id, r.valid_until, r.ended_reason) for r in rows] == [
        (seller.id, sale_time, "transferred"),
        (buyer.id, None, None),
    ]
    assert rows[1].valid_from == sale_time
    current = await OwnershipService(ctx).current(car)
    assert current is not None and current.owner_user_id == buyer.id
    # Everything the seller granted ends at the same instant.
    await ctx.session.refresh(delegation)
    await ctx.session.refresh(consent)
    assert (delegation.revoked_at, delegation.revoked_reason) == (sale_time, "transferred")
    assert (consent.revoked_at, consent.revoked_reason) == (sale_time, "transferred")
    events = (
        await ctx.session.scalars(select(AuditRecord.name).where(AuditRecord.object_id == car.id))
    ).all()
    assert "vehicle:ownership:transferred" in events


async def test_first_owner_cannot_be_replaced_without_transfer(ctx: ServiceContext) -> None:
    world = WorldFactory(ctx)
    consumers = await world.tenant(TenantKind.CONSUMER)
    owner = await world.user(consumers)
    usurper = await world.user(consumers)
    car = await world.owned_vehicle(owner)
    with pytest.raises(AlreadyOwned):
        await OwnershipService(ctx).start(car, usurper, actor=FACTORY)


async def test_delegation_and_consent_are_revoked_not_deleted(
    ctx: ServiceContext, clock: FrozenClock
) -> None:
    world = WorldFactory(ctx)
    consumers = await world.tenant(TenantKind.CONSUMER)
    partner = await world.tenant(TenantKind.PARTNER)
    owner = await world.user(consumers)
    driver = await world.user(consumers)
    car = await world.owned_vehicle(owner)
    delegations = DelegationService(ctx)
    first = await delegations.delegate(
        car,
        owner,
        driver,
        [Permission.VEHICLE_CLIMATE],
        valid_until=clock.now() + timedelta(days=1),
        actor=FACTORY,
    )
    await delegations.revoke(first, actor=FACTORY)
    await delegations.revoke(first, actor=FACTORY)  # a second revoke changes nothing
    # After revocation the driver can be delegated again for the same period.
    second = await delegations.delegate(
        car,
        owner,
        driver,
        [Permission.VEHICLE_LOCK],
        valid_until=clock.now() + timedelta(days=1),
        actor=FACTORY,
    )
    consent = await ConsentService(ctx).grant(
        partner,
        car,
        owner,
        [Permission.VEHICLE_READ_CHARGING],
        valid_until=clock.now() + timedelta(days=1),
        actor=FACTORY,
    )
    await ConsentService(ctx).revoke(consent, actor=FACTORY)
    stored = (await ctx.session.scalars(select(DriverDelegation))).all()
    assert {d.id: d.revoked_at is not None for d in stored} == {first.id: True, second.id: False}
    assert (await ctx.session.get(PartnerConsent, consent.id)) is not None
    revoked_events = (
        await ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.name == "vehicle:driver:revoked")
        )
    ).all()
    assert len(revoked_events) == 1


async def test_a_consent_granted_while_the_car_is_sold_does_not_survive_the_sale(
    ctx: ServiceContext, platform: Platform, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seller consents a partner; the sale completes (another transaction) after the
    # grant checked ownership and before it wrote the consent: the grant is refused, so no
    # consent of the seller's stands on the buyer's car.
    world = WorldFactory(ctx)
    consumers = await world.tenant(TenantKind.CONSUMER)
    partner = await world.tenant(TenantKind.PARTNER)
    seller = await world.user(consumers)
    buyer = await world.user(consumers)
    car = await world.owned_vehicle(seller)
    await ctx.session.commit()
    for row in (partner, seller, buyer, car):
        await ctx.session.refresh(row)
    car_id = car.id
    checked = OwnershipService.current

    async def current_then_sold(service: OwnershipService, *args: Any) -> Ownership | None:
        found = await checked(service, *args)
        async with platform.services() as (uow, other):
            sold = await other.session.get(Vehicle, car_id)
            from_ = await other.session.get(User, seller.id)
            to = await other.session.get(User, buyer.id)
            assert sold is not None and from_ is not None and to is not None
            await OwnershipService(other).transfer(sold, from_, to, actor=FACTORY)
            await uow.commit()
        return found

    monkeypatch.setattr(OwnershipService, "current", current_then_sold)
    with pytest.raises(NotCurrentOwner):
        await ConsentService(ctx).grant(
            partner,
            car,
            seller,
            [Permission.VEHICLE_READ_STATUS],
            valid_until=clock.now() + timedelta(days=5),
            actor=FACTORY,
        )
    await ctx.session.rollback()
    standing = await ctx.session.scalar(
        select(func.count())
        .select_from(PartnerConsent)
        .where(PartnerConsent.vehicle_id == car_id, PartnerConsent.revoked_at.is_(None))
    )
    assert standing == 0


# PostgreSQL only: on SQLite (one writer) the second grant's write waits for the first's
# commit and then finds its snapshot stale.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("kind", ["delegation", "consent"])
async def test_two_grants_at_once_leave_one(
    ctx: ServiceContext, platform: Platform, clock: FrozenClock, kind: str
) -> None:
    # A double submit, or two devices of the owner: two delegations to one driver (or two
    # consents to one partner) for one car at once. Each looked for an overlapping grant
    # before the other was written; the PDP reads one grant per pair, so with two standing
    # its answer would depend on row order. The second waits for the first (the ownership
    # lock) and is then refused.
    world = WorldFactory(ctx)
    consumers = await world.tenant(TenantKind.CONSUMER)
    partner = await world.tenant(TenantKind.PARTNER)
    owner = await world.user(consumers)
    driver = await world.user(consumers)
    car = await world.owned_vehicle(owner)
    await ctx.session.commit()
    ids = (car.id, owner.id, driver.id, partner.id)
    until = clock.now() + timedelta(days=5)

    async def grant(other: ServiceContext) -> None:
        vehicle = await other.session.get(Vehicle, ids[0])
        granter = await other.session.get(User, ids[1])
        assert vehicle is not None and granter is not None
        if kind == "delegation":
            holder = await other.session.get(User, ids[2])
            assert holder is not None
            await DelegationService(other).delegate(
                vehicle,
                granter,
                holder,
                [Permission.VEHICLE_LOCK],
                valid_until=until,
                actor=FACTORY,
            )
        else:
            tenant = await other.session.get(Tenant, ids[3])
            assert tenant is not None
            await ConsentService(other).grant(
                tenant,
                vehicle,
                granter,
                [Permission.VEHICLE_READ_STATUS],
                valid_until=until,
                actor=FACTORY,
            )

    async def second() -> None:
        async with platform.services() as (uow, other):
            await grant(other)
            await uow.commit()

    async with platform.services() as (first_uow, first):
        await grant(first)
        racing = asyncio.create_task(second())
        await settled(platform, racing)
        await first_uow.commit()
    with pytest.raises(OverlappingWindow):
        await racing
    model = DriverDelegation if kind == "delegation" else PartnerConsent
    async with platform.services() as (_uow, check):
        standing = await check.session.scalar(
            select(func.count())
            .select_from(model)
            .where(model.vehicle_id == ids[0], model.revoked_at.is_(None))
        )
    assert standing == 1
