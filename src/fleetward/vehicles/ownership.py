"""Ownership: the first owner, transfers, and who owns a vehicle now.

A transfer ends the seller's ownership and starts the buyer's at the same instant, and ends
every delegation and partner consent the seller granted: a former owner keeps nothing. It
also closes the vehicle's open dealer cases (the dealer serviced the car for the seller) and
cancels its open service appointments (booked in the seller's name).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import null, select, update
from sqlalchemy.sql import Executable

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.ids import new_id
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, Tenant, User
from fleetward.services import ServiceContext
from fleetward.vehicles.appointments import AppointmentService
from fleetward.vehicles.errors import AlreadyOwned, NotCurrentOwner, RelationshipRefused
from fleetward.vehicles.models import (
    CaseStatus,
    DealerCase,
    DriverDelegation,
    Ownership,
    PartnerConsent,
    Vehicle,
)

TRANSFERRED = "transferred"


class OwnershipService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def current(self, vehicle: Vehicle, at: datetime | None = None) -> Ownership | None:
        when = at or self._ctx.clock.now()
        return await self._ctx.session.scalar(
            select(Ownership).where(
                Ownership.vehicle_id == vehicle.id,
                Ownership.valid_from <= when,
                (Ownership.valid_until.is_(None)) | (Ownership.valid_until > when),
            )
        )

    async def start(self, vehicle: Vehicle, owner: User, *, actor: Actor) -> Ownership:
        """First registration of an owner; refused while anyone owns the vehicle."""
        if await self._open(vehicle) is not None:
            raise AlreadyOwned("the vehicle already has an owner; use a transfer")
        return self._begin(vehicle, owner, actor, EventName.OWNERSHIP_STARTED)

    async def transfer(
        self,
        vehicle: Vehicle,
        seller: User,
        buyer: User,
        *,
        actor: Actor,
        transfer_id: str | None = None,
    ) -> Ownership:
        """Move the ownership from ``seller`` to ``buyer`` now. The ``OWNERSHIP_TRANSFERRED``
        record names the buyer (``owner``), the ``seller`` and the handover ``transfer`` the
        buyer accepted (None for a move made without one: seeding, administration); ids
        only, no personal data."""
        current = await self._open(vehicle)
        if current is None or current.owner_user_id != seller.id:
            raise NotCurrentOwner("the seller does not own this vehicle")
        if buyer.id == seller.id:
            raise RelationshipRefused("a vehicle cannot be sold to its owner", reason="self")
        now = self._ctx.clock.now()
        session = self._ctx.session
        current.valid_until = now
        current.ended_reason = TRANSFERRED
        await session.flush()  # the partial unique index needs the old row closed first
        # Each grant the sale ends is audited as a revocation of its own would be.
        await self._end_each(
            update(DriverDelegation)
            .where(
                DriverDelegation.vehicle_id == vehicle.id,
                DriverDelegation.granted_by_user_id == seller.id,
                DriverDelegation.revoked_at.is_(None),
                DriverDelegation.valid_until > now,
            )
            .values(revoked_at=now, revoked_reason=TRANSFERRED)
            .returning(DriverDelegation.id, null()),
            EventName.DRIVER_REVOKED,
            "delegation",
            vehicle,
            actor,
        )
        await self._end_each(
            update(PartnerConsent)
            .where(
                PartnerConsent.vehicle_id == vehicle.id,
                PartnerConsent.granted_by_user_id == seller.id,
                PartnerConsent.revoked_at.is_(None),
                PartnerConsent.valid_until > now,
            )
            .values(revoked_at=now, revoked_reason=TRANSFERRED)
            .returning(PartnerConsent.id, PartnerConsent.partner_tenant_id),
            EventName.PARTNER_CONSENT_REVOKED,
            "partner_consent",
            vehicle,
            actor,
        )
        # The dealer serviced the car for the seller: its technicians would otherwise keep
        # reading the buyer's diagnostics and status and running diagnostics on the buyer's
        # car. Each close is audited as a close of its own would be; the buyer brings the
        # car in anew.
        await self._end_each(
            update(DealerCase)
            .where(DealerCase.vehicle_id == vehicle.id, DealerCase.status == CaseStatus.OPEN)
            .values(status=CaseStatus.CLOSED, closed_at=now)
            .returning(DealerCase.id, DealerCase.dealer_tenant_id),
            EventName.DEALER_CASE_CLOSED,
            "dealer_case",
            vehicle,
            actor,
        )
        await AppointmentService(self._ctx).cancel_open(vehicle, actor=actor, reason=TRANSFERRED)
        ownership = self._begin(
            vehicle,
            buyer,
            actor,
            EventName.OWNERSHIP_TRANSFERRED,
            details={"seller": seller.id, "transfer": transfer_id},
        )
        await session.flush()
        return ownership

    async def _end_each(
        self,
        ending: Executable,
        event: EventName,
        kind: str,
        vehicle: Vehicle,
        actor: Actor,
    ) -> None:
        """Run ``ending`` (an UPDATE ... RETURNING each ended row's id and tenant) and audit
        every row it ended, as the sale's doing."""
        session = self._ctx.session
        for row_id, tenant_id in (await session.execute(ending)).all():
            self._ctx.audit.record(
                session,
                event,
                actor=actor,
                target=Target(kind, row_id, tenant_id),
                reason=TRANSFERRED,
                details={"vehicle": vehicle.id},
            )

    async def in_good_standing(self, vehicle: Vehicle, owner: User) -> bool:
        """Whether ``owner`` could still act on ``vehicle`` as its owner now: not disabled,
        and a customer of the vehicle's (enabled) tenant now. A handover the owner started (a
        sale, a driver invitation) is accepted on the owner's authority: once that authority
        is gone (the account disabled after a takeover, the membership ended), it is void,
        as the owner's own requests are refused (``principal-disabled``)."""
        if owner.disabled_at is not None:
            return False
        tenant = await self._ctx.session.get(Tenant, vehicle.tenant_id)
        if tenant is None or tenant.disabled_at is not None:
            return False
        return Role.CUSTOMER in await Directory(self._ctx).active_roles(owner, tenant)

    async def held_by(self, vehicle: Vehicle, owner: User) -> bool:
        """Whether ``owner`` holds the vehicle's open ownership, the row locked until this
        transaction ends (PostgreSQL; on SQLite a transaction that has written holds the
        store's write lock). Asked after a grant made in the owner's name is written: a
        transfer that committed before is seen, and one that commits later waits for the
        grant and then revokes it with the seller's other grants."""
        open_row = await self._open(vehicle, lock=True)
        return open_row is not None and open_row.owner_user_id == owner.id

    async def locked(self, vehicle: Vehicle) -> Ownership | None:
        """The vehicle's open ownership (None: no owner), its row locked as by
        :meth:`held_by`. For a write made on a decision about the vehicle by someone other
        than its owner as well (a driver's or a fleet's booking): asked again after this, the
        decision sees a sale that committed before, and a sale that commits later waits."""
        return await self._open(vehicle, lock=True)

    async def _open(self, vehicle: Vehicle, *, lock: bool = False) -> Ownership | None:
        query = select(Ownership).where(
            Ownership.vehicle_id == vehicle.id, Ownership.valid_until.is_(None)
        )
        return await self._ctx.session.scalar(query.with_for_update() if lock else query)

    def _begin(
        self,
        vehicle: Vehicle,
        owner: User,
        actor: Actor,
        event: EventName,
        *,
        details: dict[str, str | None] | None = None,
    ) -> Ownership:
        ownership = Ownership(
            id=new_id("own"),
            vehicle_id=vehicle.id,
            owner_user_id=owner.id,
            valid_from=self._ctx.clock.now(),
            valid_until=None,
            ended_reason=None,
        )
        self._ctx.session.add(ownership)
        self._ctx.audit.record(
            self._ctx.session,
            event,
            actor=actor,
            target=Target("vehicle", vehicle.id, vehicle.tenant_id),
            details={"owner": owner.id, **(details or {})},
        )
        return ownership
