"""Driver invitations: the owner fixes everything, the code is single use and stored hashed."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.core.clock import FrozenClock
from fleetward.core.errors import FleetwardError
from fleetward.core.windows import InvalidWindow
from fleetward.identity.models import TenantKind, User
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles import invitations as invitations_module
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.errors import (
    DelegationTooWide,
    NotCurrentOwner,
    RelationshipRefused,
    UnknownPermission,
)
from fleetward.vehicles.handover_models import DriverInvitation, HandoverStatus
from fleetward.vehicles.invitations import (
    InvalidCode,
    InvitationService,
    IssuedInvitation,
    code_digest,
)
from fleetward.vehicles.models import DriverDelegation, Vehicle
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.transfers import TransferService
from support.factories import FACTORY, WorldFactory
from support.locks import settled

STATUS = Permission.VEHICLE_READ_STATUS


async def _cast(ctx: ServiceContext) -> tuple[User, User, User, Vehicle]:
    world = WorldFactory(ctx)
    consumers = await world.tenant(TenantKind.CONSUMER)
    owner, invitee, other = [await world.user(consumers) for _ in range(3)]
    return owner, invitee, other, await world.owned_vehicle(owner)


async def _invite(
    ctx: ServiceContext, clock: FrozenClock, car: Vehicle, owner: User, days: int = 2
) -> IssuedInvitation:
    return await InvitationService(ctx).invite(
        car, owner, [STATUS], valid_until=clock.now() + timedelta(days=days), actor=FACTORY
    )


async def test_accept_grants_exactly_the_invitation(
    ctx: ServiceContext, clock: FrozenClock
) -> None:
    owner, invitee, _other, car = await _cast(ctx)
    start, end = clock.now() + timedelta(hours=1), clock.now() + timedelta(days=3)
    issued = await InvitationService(ctx).invite(
        car,
        owner,
        [STATUS, Permission.VEHICLE_LOCK],
        valid_from=start,
        valid_until=end,
        actor=FACTORY,
    )
    # Only the hash is stored; the code is nowhere in the row.
    row = issued.invitation
    assert row.code_hash == code_digest(issued.code) and issued.code not in row.code_hash
    assert row.expires_at == clock.now() + timedelta(hours=72)
    assert len(issued.code) >= 43  # 256 bits, url-safe

    delegation = await InvitationService(ctx).accept(issued.code, invitee, actor=FACTORY)
    assert delegation.driver_user_id == invitee.id
    assert sorted(delegation.permissions) == sorted([STATUS.value, Permission.VEHICLE_LOCK.value])
    assert (delegation.valid_from, delegation.valid_until) == (start, end)
    await ctx.session.refresh(row)
    assert row.status is HandoverStatus.ACCEPTED and row.delegation_id == delegation.id
    names = set(await ctx.session.scalars(select(AuditRecord.name)))
    assert {EventName.DRIVER_INVITED.value, EventName.DRIVER_INVITATION_ACCEPTED.value} <= names


async def test_a_started_window_is_cut_to_now_never_extended(
    ctx: ServiceContext, clock: FrozenClock
) -> None:
    owner, invitee, _other, car = await _cast(ctx)
    issued = await _invite(ctx, clock, car, owner, days=2)
    clock.advance(timedelta(hours=10))
    delegation = await InvitationService(ctx).accept(issued.code, invitee, actor=FACTORY)
    assert delegation.valid_from == clock.now()
    assert delegation.valid_until == issued.invitation.valid_until


@pytest.mark.parametrize(
    ("permissions", "error"),
    [
        ([Permission.VEHICLE_TRANSFER.value], DelegationTooWide),  # a driver who sells
        ([Permission.VEHICLE_MANAGE_DRIVERS.value], DelegationTooWide),  # self-widening
        ([Permission.VEHICLE_MANAGE_CONSENTS.value], DelegationTooWide),  # data sharing
        ([Permission.ADMIN_MANAGE_TENANTS.value], DelegationTooWide),  # not even a vehicle one
        (["vehicle:fly"], UnknownPermission),  # unknown string
        ([], DelegationTooWide),  # empty
    ],
)
async def test_invitations_never_exceed_what_an_owner_may_lend(
    ctx: ServiceContext, clock: FrozenClock, permissions: list[str], error: type[Exception]
) -> None:
    owner, _invitee, _other, car = await _cast(ctx)
    with pytest.raises(error):
        await InvitationService(ctx).invite(
            car, owner, permissions, valid_until=clock.now() + timedelta(days=1), actor=FACTORY
        )
    assert list(await ctx.session.scalars(select(DriverInvitation))) == []


async def test_window_and_ownership_are_checked(ctx: ServiceContext, clock: FrozenClock) -> None:
    owner, _invitee, other, car = await _cast(ctx)
    service = InvitationService(ctx)
    with pytest.raises(InvalidWindow):  # longer than the maximum delegation
        await service.invite(
            car, owner, [STATUS], valid_until=clock.now() + timedelta(days=400), actor=FACTORY
        )
    with pytest.raises(InvalidWindow):  # back-dated
        await service.invite(
            car,
            owner,
            [STATUS],
            valid_from=clock.now() - timedelta(days=1),
            valid_until=clock.now() + timedelta(days=1),
            actor=FACTORY,
        )
    with pytest.raises(NotCurrentOwner):  # not the owner
        await _invite(ctx, clock, car, other)


async def test_single_use_expiry_revocation_and_self(
    ctx: ServiceContext, clock: FrozenClock
) -> None:
    owner, invitee, other, car = await _cast(ctx)
    service = InvitationService(ctx)
    used = await _invite(ctx, clock, car, owner)
    revoked = await _invite(ctx, clock, car, owner)
    expiring = await _invite(ctx, clock, car, owner, days=5)
    own = await _invite(ctx, clock, car, owner)
    await service.accept(used.code, invitee, actor=FACTORY)
    assert await service.revoke(revoked.invitation, actor=FACTORY)
    assert not await service.revoke(revoked.invitation, actor=FACTORY)  # nothing left
    with pytest.raises(RelationshipRefused):
        await service.accept(own.code, owner, actor=FACTORY)
    clock.advance(timedelta(hours=72))
    for code in (used.code, revoked.code, expiring.code, "not-a-code"):
        with pytest.raises(InvalidCode):
            await service.accept(code, other, actor=FACTORY)


async def test_a_transfer_voids_the_invitation(ctx: ServiceContext, clock: FrozenClock) -> None:
    owner, invitee, buyer, car = await _cast(ctx)
    issued = await _invite(ctx, clock, car, owner)
    await OwnershipService(ctx).transfer(car, owner, buyer, actor=FACTORY)
    with pytest.raises(InvalidCode):
        await InvitationService(ctx).accept(issued.code, invitee, actor=FACTORY)


async def test_invitee_of_another_tenant_is_a_wrong_code(
    ctx: ServiceContext, clock: FrozenClock
) -> None:
    owner, _invitee, _other, car = await _cast(ctx)
    world = WorldFactory(ctx)
    outsider = await world.user(await world.tenant(TenantKind.CONSUMER))
    issued = await _invite(ctx, clock, car, owner)
    with pytest.raises(InvalidCode):
        await InvitationService(ctx).accept(issued.code, outsider, actor=FACTORY)


async def test_concurrent_accepts_have_one_winner(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock, backend: str
) -> None:
    owner, first, second, car = await _cast(ctx)
    issued = await _invite(ctx, clock, car, owner)
    await ctx.session.commit()
    if backend == "sqlite":
        # SQLite has one writer: two sessions cannot interleave as below (the inner one would
        # wait for the outer's lock); two racing accepts queue on the lock instead.
        async def accept(user: User) -> bool:
            async with platform.services() as (uow, racer):
                try:
                    await InvitationService(racer).accept(issued.code, user, actor=FACTORY)
                except InvalidCode:
                    return False
                await uow.commit()
                return True

        assert sorted(await asyncio.gather(accept(first), accept(second))) == [False, True]
        return
    async with platform.services() as (late_uow, late):
        # The late request has already read the invitation as pending...
        stale = await late.session.get(DriverInvitation, issued.invitation.id)
        assert stale is not None and stale.status is HandoverStatus.PENDING
        async with platform.services() as (uow, early):
            await InvitationService(early).accept(issued.code, first, actor=FACTORY)
            await uow.commit()
        # ...but its conditional UPDATE matches nothing: one invitation, one driver.
        with pytest.raises(InvalidCode):
            await InvitationService(late).accept(issued.code, second, actor=FACTORY)
        await late_uow.commit()


# PostgreSQL only: on SQLite (one writer) the two transactions cannot interleave.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_an_invitation_accepted_while_the_car_is_sold_ends_with_the_sale(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock
) -> None:
    """The seller's driver must not keep the buyer's car: an acceptance that read the seller
    as owner and commits after the sale has revoked the seller's delegations would leave
    a delegation granted by the former owner standing."""
    owner, invitee, buyer, car = await _cast(ctx)
    issued = await _invite(ctx, clock, car, owner)
    sale = await TransferService(ctx).start(car, owner, actor=FACTORY)
    await ctx.session.commit()

    async def sell() -> None:
        async with platform.services() as (uow, selling):
            await TransferService(selling).accept(sale.code, car.vin, buyer, actor=FACTORY)
            await uow.commit()

    async with platform.services() as (accept_uow, accepting):
        delegation = await InvitationService(accepting).accept(issued.code, invitee, actor=FACTORY)
        # The sale runs while the acceptance is still open, and waits on whatever it locked.
        sold = asyncio.create_task(sell())
        await asyncio.sleep(0.5)
        await accept_uow.commit()
    await sold
    async with platform.services() as (_uow, check):
        row = await check.session.get(DriverDelegation, delegation.id)
        owned = await OwnershipService(check).current(car)
    assert owned is not None and owned.owner_user_id == buyer.id
    assert row is not None and row.revoked_at is not None, "the seller's driver kept the car"


# PostgreSQL only: on SQLite (one writer) the two transactions cannot interleave.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_an_acceptance_and_a_sale_at_once_do_not_deadlock(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance closed the invitation (its row locked) and then locked the ownership;
    a sale locks the ownership and then revokes the car's pending invitations. Interleaved,
    each waited on the other: PostgreSQL broke the deadlock by failing one of them (a 503
    for its caller). The acceptance now takes the ownership lock first, as the sale does."""
    owner, invitee, buyer, car = await _cast(ctx)
    issued = await _invite(ctx, clock, car, owner)
    sale = await TransferService(ctx).start(car, owner, actor=FACTORY)
    await ctx.session.commit()
    sold: list[asyncio.Task[None]] = []

    async def sell() -> None:
        async with platform.services() as (uow, selling):
            await TransferService(selling).accept(sale.code, car.vin, buyer, actor=FACTORY)
            await uow.commit()

    class SaleMeanwhile(DelegationService):
        async def delegate(self, *args: Any, **kwargs: Any) -> DriverDelegation:
            # The invitation is closed (its row locked): the sale starts now and runs until
            # it waits on a lock this acceptance holds.
            sold.append(asyncio.create_task(sell()))
            await settled(platform, sold[0])
            return await super().delegate(*args, **kwargs)

    monkeypatch.setattr(invitations_module, "DelegationService", SaleMeanwhile)
    async with platform.services() as (accept_uow, accepting):
        delegation = await InvitationService(accepting).accept(issued.code, invitee, actor=FACTORY)
        await accept_uow.commit()
    await sold[0]
    async with platform.services() as (_uow, check):
        row = await check.session.get(DriverDelegation, delegation.id)
        owned = await OwnershipService(check).current(car)
    assert owned is not None and owned.owner_user_id == buyer.id
    assert row is not None and row.revoked_at is not None, "the seller's driver kept the car"


def test_invalid_code_is_a_plain_404() -> None:
    error = InvalidCode("the code is not valid")
    assert isinstance(error, FleetwardError) and error.status == 404
