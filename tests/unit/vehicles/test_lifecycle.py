"""Relationship lifecycles: history is kept, and a transfer leaves the seller nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.core.clock import FrozenClock
from fleetward.identity.models import TenantKind
from fleetward.services import ServiceContext
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.errors import AlreadyOwned
from fleetward.vehicles.models import DriverDelegation, Ownership, PartnerConsent
from fleetward.vehicles.ownership import OwnershipService
from support.factories import FACTORY, WorldFactory


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
    delegation = await DelegationService(ctx).delegate(
        car,
        seller,
        driver,
        [Permission.VEHICLE_LOCK],
        valid_until=clock.now() + timedelta(days=5),
        actor=FACTORY,
    )
    consent = await ConsentService(ctx).grant(
        partner,
        car,
        seller,
        [Permission.VEHICLE_READ_STATUS],
        valid_until=clock.now() + timedelta(days=5),
        actor=FACTORY,
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
