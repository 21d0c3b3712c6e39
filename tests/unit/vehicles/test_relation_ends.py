"""A relation ended twice at once is ended once.

A request reads a delegation, an operator's assignment, a vehicle's group link or a dealer
case as still in force, and ends it; meanwhile another request (a sale, the same click
twice, a colleague) ended it and committed. The late request must keep the earlier end as it
was (its time and its reason) and audit nothing: the end is one fact with one record.

PostgreSQL only: on SQLite (one writer) the two transactions cannot interleave as below.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.identity.models import TenantKind, User
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.models import DriverDelegation, Vehicle
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
