"""Ownership transfers: code AND VIN, one pending per vehicle, five wrong VINs revoke, and
acceptance moves everything in one transaction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.core.clock import FrozenClock
from fleetward.identity.models import TenantKind, User
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.errors import NotCurrentOwner, RelationshipRefused
from fleetward.vehicles.handover_models import (
    DriverInvitation,
    HandoverStatus,
    OwnershipTransfer,
)
from fleetward.vehicles.invitations import InvalidCode, InvitationService, code_digest
from fleetward.vehicles.models import DriverDelegation, PartnerConsent, Vehicle
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.transfers import (
    MAX_VIN_FAILURES,
    TransferPending,
    TransferService,
    VinMismatch,
    same_vin,
)
from support.factories import FACTORY, WorldFactory


async def _cast(ctx: ServiceContext) -> tuple[User, User, User, Vehicle]:
    world = WorldFactory(ctx)
    consumers = await world.tenant(TenantKind.CONSUMER)
    seller, buyer, driver = [await world.user(consumers) for _ in range(3)]
    return seller, buyer, driver, await world.owned_vehicle(seller)


@pytest.mark.parametrize(
    ("given", "same"),
    [
        ("1FWAA00000A000000", True),  # exact
        (" 1fwaa00000a000000 ", True),  # read off the car: case and spaces do not matter
        ("1FWAA00000A000001", False),  # one character off
        ("1FWAA00000A00000", False),  # truncated
        ("1FWAA00000A000000X", False),  # extended
        ("1FWAA00000A00000\u0406", False),  # unicode look-alike
        ("", False),
    ],
)
def test_vin_comparison(given: str, same: bool) -> None:
    assert same_vin(given, "1FWAA00000A000000") is same


async def test_accept_moves_everything_at_once(ctx: ServiceContext, clock: FrozenClock) -> None:
    seller, buyer, driver, car = await _cast(ctx)
    partner = await WorldFactory(ctx).tenant(TenantKind.PARTNER)
    await WorldFactory(ctx).grants(
        car, seller, driver, partner, until=clock.now() + timedelta(days=3)
    )
    invitation = await InvitationService(ctx).invite(
        car,
        seller,
        [Permission.VEHICLE_READ_STATUS],
        valid_until=clock.now() + timedelta(days=1),
        actor=FACTORY,
    )
    issued = await TransferService(ctx).start(car, seller, actor=FACTORY)
    assert issued.transfer.code_hash == code_digest(issued.code)
    assert issued.transfer.expires_at == clock.now() + timedelta(hours=24)

    owned = await TransferService(ctx).accept(issued.code, car.vin.lower(), buyer, actor=FACTORY)

    assert owned.owner_user_id == buyer.id
    current = await OwnershipService(ctx).current(car)
    assert current is not None and current.owner_user_id == buyer.id
    live = DriverDelegation.revoked_at.is_(None)
    assert list(await ctx.session.scalars(select(DriverDelegation).where(live))) == []
    consents = await ctx.session.scalars(
        select(PartnerConsent).where(PartnerConsent.revoked_at.is_(None))
    )
    assert list(consents) == []
    await ctx.session.refresh(invitation.invitation)
    assert invitation.invitation.status is HandoverStatus.REVOKED
    await ctx.session.refresh(issued.transfer)
    assert issued.transfer.status is HandoverStatus.ACCEPTED
    assert issued.transfer.buyer_user_id == buyer.id
    with pytest.raises(InvalidCode):  # spent
        await TransferService(ctx).accept(issued.code, car.vin, driver, actor=FACTORY)


async def test_start_rules(ctx: ServiceContext, clock: FrozenClock) -> None:
    seller, buyer, _driver, car = await _cast(ctx)
    service = TransferService(ctx)
    with pytest.raises(NotCurrentOwner):  # only the owner sells
        await service.start(car, buyer, actor=FACTORY)
    first = await service.start(car, seller, actor=FACTORY)
    with pytest.raises(TransferPending):  # one pending per vehicle
        await service.start(car, seller, actor=FACTORY)
    assert await service.cancel(first.transfer, actor=FACTORY)
    assert not await service.cancel(first.transfer, actor=FACTORY)
    second = await service.start(car, seller, actor=FACTORY)
    clock.advance(timedelta(hours=24))
    with pytest.raises(InvalidCode):  # expired
        await service.accept(second.code, car.vin, buyer, actor=FACTORY)
    third = await service.start(car, seller, actor=FACTORY)  # a lapsed one does not block
    await ctx.session.refresh(second.transfer)
    assert second.transfer.status is HandoverStatus.EXPIRED
    assert third.transfer.status is HandoverStatus.PENDING


async def test_refusals(ctx: ServiceContext) -> None:
    seller, buyer, _driver, car = await _cast(ctx)
    service = TransferService(ctx)
    issued = await service.start(car, seller, actor=FACTORY)
    with pytest.raises(InvalidCode):  # a wrong code is no transfer at all
        await service.accept("A" * 43, car.vin, buyer, actor=FACTORY)
    with pytest.raises(RelationshipRefused):  # the seller cannot buy their own car
        await service.accept(issued.code, car.vin, seller, actor=FACTORY)
    with pytest.raises(VinMismatch) as refused:
        await service.accept(issued.code, "1FWAA00000A000000", buyer, actor=FACTORY)
    assert refused.value.transfer_id == issued.transfer.id and refused.value.status == 422
    outsider = await WorldFactory(ctx).user(await WorldFactory(ctx).tenant(TenantKind.CONSUMER))
    with pytest.raises(InvalidCode):  # the buyer could never act in the vehicle's tenant
        await service.accept(issued.code, car.vin, outsider, actor=FACTORY)


async def test_five_wrong_vins_revoke(platform: Platform, ctx: ServiceContext) -> None:
    seller, buyer, _driver, car = await _cast(ctx)
    issued = await TransferService(ctx).start(car, seller, actor=FACTORY)
    await ctx.session.commit()
    outcomes = []
    for _ in range(MAX_VIN_FAILURES):
        # Each refusal is recorded in a transaction of its own, as the route does.
        async with platform.services() as (uow, own):
            outcomes.append(
                await TransferService(own).refuse_vin(issued.transfer.id, buyer.id, actor=FACTORY)
            )
            await uow.commit()
    assert outcomes == [False] * (MAX_VIN_FAILURES - 1) + [True]
    async with platform.services() as (_uow, fresh):
        transfer = await fresh.session.get(OwnershipTransfer, issued.transfer.id)
        assert transfer is not None and transfer.status is HandoverStatus.REVOKED
        assert await TransferService(fresh).vin_failures(issued.transfer.id) == MAX_VIN_FAILURES
        refusals = await fresh.session.scalars(
            select(AuditRecord).where(
                AuditRecord.name == EventName.OWNERSHIP_TRANSFER_REFUSED.value
            )
        )
        # Audited without the VIN tried or the code.
        for record in refusals:
            assert car.vin not in str(record.details) and issued.code not in str(record.details)
        with pytest.raises(InvalidCode):
            await TransferService(fresh).accept(issued.code, car.vin, buyer, actor=FACTORY)


async def test_pending_invitations_of_other_vehicles_survive(
    ctx: ServiceContext, clock: FrozenClock
) -> None:
    seller, buyer, _driver, car = await _cast(ctx)
    other_car = await WorldFactory(ctx).owned_vehicle(seller)
    kept = await InvitationService(ctx).invite(
        other_car,
        seller,
        [Permission.VEHICLE_READ_STATUS],
        valid_until=clock.now() + timedelta(days=1),
        actor=FACTORY,
    )
    issued = await TransferService(ctx).start(car, seller, actor=FACTORY)
    await TransferService(ctx).accept(issued.code, car.vin, buyer, actor=FACTORY)
    row = await ctx.session.get(DriverInvitation, kept.invitation.id)
    assert row is not None and row.status is HandoverStatus.PENDING


async def test_the_grants_a_sale_ends_are_each_audited(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock
) -> None:
    # Investigation follows a driver or a partner to the vehicles they could reach: the sale
    # that ended their grant must say so for each grant, as a manual revocation does (the
    # pending invitations it withdraws already are), with the sale as the reason.
    seller, buyer, driver, car = await _cast(ctx)
    partner = await WorldFactory(ctx).tenant(TenantKind.PARTNER)
    delegation, consent = await WorldFactory(ctx).grants(
        car, seller, driver, partner, until=clock.now() + timedelta(days=3)
    )
    issued = await TransferService(ctx).start(car, seller, actor=FACTORY)
    await TransferService(ctx).accept(issued.code, car.vin, buyer, actor=FACTORY)
    await ctx.session.commit()
    async with platform.services() as (_uow, fresh):
        records = list(
            await fresh.session.scalars(
                select(AuditRecord).where(
                    AuditRecord.name.in_(
                        [EventName.DRIVER_REVOKED.value, EventName.PARTNER_CONSENT_REVOKED.value]
                    )
                )
            )
        )
    assert sorted((r.name, r.object_id, r.reason) for r in records) == sorted(
        [
            (EventName.DRIVER_REVOKED.value, delegation.id, "transferred"),
            (EventName.PARTNER_CONSENT_REVOKED.value, consent.id, "transferred"),
        ]
    )


async def test_the_sale_and_the_lapse_are_audited_with_their_transfer(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock
) -> None:
    # Investigation must tie an ownership change to the transfer the buyer accepted and to
    # the seller, and see a transfer that lapsed unaccepted (its code is dead from then on):
    # ids only, never the code or the VIN.
    seller, buyer, _driver, car = await _cast(ctx)
    service = TransferService(ctx)
    lapsed = await service.start(car, seller, actor=FACTORY)
    clock.advance(timedelta(hours=24))
    sold = await service.start(car, seller, actor=FACTORY)  # closes the lapsed one
    await service.accept(sold.code, car.vin, buyer, actor=FACTORY)
    await ctx.session.commit()
    async with platform.services() as (_uow, fresh):
        records = list(
            await fresh.session.scalars(
                select(AuditRecord).where(
                    AuditRecord.name.in_(
                        [
                            EventName.OWNERSHIP_TRANSFERRED.value,
                            EventName.OWNERSHIP_TRANSFER_EXPIRED.value,
                        ]
                    )
                )
            )
        )
    by_name = {r.name: r for r in records}
    assert len(records) == len(by_name) == 2
    transferred = by_name[EventName.OWNERSHIP_TRANSFERRED.value]
    assert (transferred.object_type, transferred.object_id) == ("vehicle", car.id)
    assert transferred.details == {
        "owner": buyer.id,
        "seller": seller.id,
        "transfer": sold.transfer.id,
    }
    expired = by_name[EventName.OWNERSHIP_TRANSFER_EXPIRED.value]
    assert (expired.object_type, expired.object_id) == ("ownership_transfer", lapsed.transfer.id)
    assert expired.actor_type.value == "system" and expired.reason == "expired"
    assert expired.details == {
        "vehicle": car.id,
        "seller": seller.id,
        "expires_at": lapsed.transfer.expires_at.isoformat(),
    }
    for record in records:
        for secret in (car.vin, lapsed.code, sold.code):
            assert secret not in str(record.details)
