"""Driver delegation: an owner lends a subset of their rights for a bounded window."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.authz.permissions import DELEGABLE_PERMISSIONS, Permission
from fleetward.core.ids import new_id
from fleetward.core.windows import OverlappingWindow, overlaps
from fleetward.identity.models import User
from fleetward.services import ServiceContext
from fleetward.store.races import written_if
from fleetward.vehicles.errors import (
    DelegationTooWide,
    NotCurrentOwner,
    RelationshipRefused,
    UnknownPermission,
)
from fleetward.vehicles.models import DriverDelegation, Vehicle
from fleetward.vehicles.ownership import OwnershipService


def parse_permissions(values: Iterable[str]) -> frozenset[Permission]:
    parsed: set[Permission] = set()
    for value in values:
        try:
            parsed.add(Permission(value))
        except ValueError:
            raise UnknownPermission("unknown permission in the list", reason="permission") from None
    return frozenset(parsed)


class DelegationService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def delegate(
        self,
        vehicle: Vehicle,
        owner: User,
        driver: User,
        permissions: Iterable[str],
        *,
        valid_until: datetime,
        actor: Actor,
        valid_from: datetime | None = None,
    ) -> DriverDelegation:
        now = self._ctx.clock.now()
        start = valid_from or now
        granted = parse_permissions(permissions)
        if not granted:
            raise DelegationTooWide("a delegation needs at least one permission", reason="empty")
        wider = granted - DELEGABLE_PERMISSIONS
        if wider:
            raise DelegationTooWide(
                "an owner cannot delegate: " + ", ".join(sorted(p.value for p in wider)),
                reason="not-delegable",
            )
        self._ctx.limits.check_delegation_window(start, valid_until, now=now)
        ownership = await OwnershipService(self._ctx).current(vehicle)
        if ownership is None or ownership.owner_user_id != owner.id:
            raise NotCurrentOwner("only the current owner can delegate this vehicle")
        if driver.id == owner.id:
            raise RelationshipRefused("the owner cannot delegate to themselves", reason="self")
        session = self._ctx.session
        await self._refuse_overlap(vehicle, driver, start, valid_until)
        delegation = DriverDelegation(
            id=new_id("dlg"),
            vehicle_id=vehicle.id,
            granted_by_user_id=owner.id,
            driver_user_id=driver.id,
            permissions=sorted(p.value for p in granted),
            valid_from=start,
            valid_until=valid_until,
            revoked_at=None,
            revoked_reason=None,
            created_at=now,
        )
        session.add(delegation)
        self._ctx.audit.record(
            session,
            EventName.DRIVER_DELEGATED,
            actor=actor,
            target=Target("vehicle", vehicle.id, vehicle.tenant_id),
            details={"driver": driver.id, "permissions": list(delegation.permissions)},
        )
        await session.flush()
        # Asked again once the delegation is written, the open ownership locked: a sale that
        # completed after the first check would otherwise leave the seller's driver with
        # the buyer's car; one that completes later waits for this grant and revokes it.
        if not await OwnershipService(self._ctx).held_by(vehicle, owner):
            raise NotCurrentOwner("only the current owner can delegate this vehicle")
        # And the overlap, now that grants on this car wait for the ownership lock: two
        # grants at once each passed the first look without seeing the other (PostgreSQL).
        await self._refuse_overlap(vehicle, driver, start, valid_until, besides=delegation.id)
        return delegation

    async def _refuse_overlap(
        self,
        vehicle: Vehicle,
        driver: User,
        start: datetime,
        valid_until: datetime | None,
        *,
        besides: str | None = None,
    ) -> None:
        """One delegation per driver, vehicle and moment: the PDP reads one grant per pair."""
        existing = await self._ctx.session.scalars(
            select(DriverDelegation).where(
                DriverDelegation.vehicle_id == vehicle.id,
                DriverDelegation.driver_user_id == driver.id,
                DriverDelegation.revoked_at.is_(None),
                DriverDelegation.id != (besides or ""),
            )
        )
        for other in existing:
            if overlaps(start, valid_until, other.valid_from, other.valid_until):
                raise OverlappingWindow(
                    "the driver already has a delegation in that period", reason="delegation"
                )

    async def revoke(
        self, delegation: DriverDelegation, *, actor: Actor, reason: str = "revoked"
    ) -> bool:
        """Revoke ``delegation``; False when it was revoked already (revoking twice is a
        no-op, never an error that leaks state).

        A conditional UPDATE, not a write of the row as it was read: a revocation that
        committed after this request read the delegation (the sale's, which revokes every
        grant of the seller, or the owner's own second click) is kept as it was, with its
        time and reason, and is audited once."""
        if delegation.revoked_at is not None:
            return False
        session = self._ctx.session
        if not await written_if(
            session,
            delegation,
            DriverDelegation.revoked_at.is_(None),
            revoked_at=self._ctx.clock.now(),
            revoked_reason=reason,
        ):
            return False
        self._ctx.audit.record(
            session,
            EventName.DRIVER_REVOKED,
            actor=actor,
            target=Target("delegation", delegation.id),
            reason=reason,
        )
        await session.flush()
        return True
