"""How far back a caller may see a vehicle's history (trips, charging, diagnostics, commands,
appointments).

A vehicle's history belongs to whoever had it at the time: the buyer of a used car never
sees the seller's trips, a driver sees only what happened since their delegation began, a
fleet's admin only since the vehicle joined the fleet, a fleet operator only since it joined
a group they are assigned to (a van moved from another depot's group brings none of that
depot's trips), a partner only since the owner's consent. :func:`history_since` answers with
the start of the caller's relationship in force now, which routes apply in the SQL ``WHERE``
(``recorded_at >= since``); ``None`` means the caller has no relationship that reaches any
history, and must be shown nothing.

It is a bound applied AFTER the PDP allowed the request, never a grant: a relationship found
here that the PDP did not accept changes nothing, because the route was refused first.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from fleetward.authz.permissions import Permission
from fleetward.identity.models import Membership, Role
from fleetward.identity.tokens import AccessTokenClaims
from fleetward.services import ServiceContext
from fleetward.vehicles.models import (
    CaseStatus,
    CaseTechnician,
    DealerCase,
    DriverDelegation,
    FleetGroup,
    FleetVehicle,
    GroupVehicle,
    OperatorAssignment,
    Ownership,
    PartnerConsent,
    Vehicle,
)


async def history_since(
    ctx: ServiceContext,
    claims: AccessTokenClaims,
    vehicle_id: str,
    *,
    permission: Permission | None = None,
) -> datetime | None:
    """The earliest instant of ``vehicle_id``'s history the caller may see, or ``None``.

    With ``permission``, a delegation or consent only counts when it grants that permission
    (the window is that of the grant the PDP relied on, not of another one).
    """
    now = ctx.clock.now()
    session = ctx.session
    if claims.sub_type != "user":
        # An application acting for itself: a partner's consent for its tenant.
        return await _consent_start(session, claims.tenant, vehicle_id, now, permission)
    roles = await _roles(session, claims, now)
    if not roles:
        # Defence in depth (the PDP refuses such a token first): a person reaches history
        # only through the tenant they are a member of now.
        return None
    starts = [
        await _ownership_start(session, claims, vehicle_id, now),
        await _delegation_start(session, claims, vehicle_id, now, permission),
        await _fleet_start(session, claims, vehicle_id, now, roles),
        await _dealer_start(session, claims, vehicle_id, now),
    ]
    found = [s for s in starts if s is not None]
    return min(found) if found else None


async def _roles(
    session: AsyncSession, claims: AccessTokenClaims, now: datetime
) -> frozenset[Role]:
    """The caller's roles in force in the token's tenant (none: not a member now)."""
    found = await session.scalars(
        select(Membership.role).where(
            Membership.user_id == claims.sub,
            Membership.tenant_id == claims.tenant,
            _in_force(Membership.valid_from, Membership.valid_until, now),
        )
    )
    return frozenset(found)


_FLEET_ROLES = frozenset({Role.FLEET_ADMIN, Role.FLEET_OPERATOR})


def _in_force(
    start: InstrumentedAttribute[datetime],
    end: InstrumentedAttribute[datetime | None],
    now: datetime,
) -> ColumnElement[bool]:
    return and_(start <= now, or_(end.is_(None), end > now))


async def _ownership_start(
    session: AsyncSession, claims: AccessTokenClaims, vehicle_id: str, now: datetime
) -> datetime | None:
    found: datetime | None = await session.scalar(
        select(Ownership.valid_from)
        .join(Vehicle, Vehicle.id == Ownership.vehicle_id)
        .where(
            Ownership.vehicle_id == vehicle_id,
            Ownership.owner_user_id == claims.sub,
            Vehicle.tenant_id == claims.tenant,
            _in_force(Ownership.valid_from, Ownership.valid_until, now),
        )
    )
    return found


async def _delegation_start(
    session: AsyncSession,
    claims: AccessTokenClaims,
    vehicle_id: str,
    now: datetime,
    permission: Permission | None,
) -> datetime | None:
    rows = await session.execute(
        select(DriverDelegation.valid_from, DriverDelegation.permissions)
        .join(Vehicle, Vehicle.id == DriverDelegation.vehicle_id)
        .where(
            DriverDelegation.vehicle_id == vehicle_id,
            DriverDelegation.driver_user_id == claims.sub,
            DriverDelegation.revoked_at.is_(None),
            DriverDelegation.valid_from <= now,
            DriverDelegation.valid_until > now,
            Vehicle.tenant_id == claims.tenant,
        )
    )
    starts = [
        start
        for start, granted in rows
        if permission is None or permission.value in (granted or [])
    ]
    return min(starts) if starts else None


async def _fleet_start(
    session: AsyncSession,
    claims: AccessTokenClaims,
    vehicle_id: str,
    now: datetime,
    roles: frozenset[Role],
) -> datetime | None:
    """A fleet admin: since the vehicle joined the fleet. A fleet operator: since it joined a
    group they are assigned to now (the earliest such link in force), and never before its
    current stay in the fleet began."""
    if not roles & _FLEET_ROLES:
        return None
    joined: datetime | None = await session.scalar(
        select(FleetVehicle.valid_from).where(
            FleetVehicle.vehicle_id == vehicle_id,
            FleetVehicle.tenant_id == claims.tenant,
            _in_force(FleetVehicle.valid_from, FleetVehicle.valid_until, now),
        )
    )
    if joined is None or Role.FLEET_ADMIN in roles:
        return joined
    grouped: datetime | None = await session.scalar(
        select(func.min(GroupVehicle.valid_from))
        .join(FleetGroup, FleetGroup.id == GroupVehicle.group_id)
        .join(OperatorAssignment, OperatorAssignment.group_id == GroupVehicle.group_id)
        .where(
            GroupVehicle.vehicle_id == vehicle_id,
            FleetGroup.tenant_id == claims.tenant,
            OperatorAssignment.user_id == claims.sub,
            _in_force(GroupVehicle.valid_from, GroupVehicle.valid_until, now),
            _in_force(OperatorAssignment.valid_from, OperatorAssignment.valid_until, now),
        )
    )
    if grouped is None:
        return None
    return max(joined, grouped)


async def _custody_start(session: AsyncSession, vehicle_id: str, now: datetime) -> datetime | None:
    """When the vehicle's current keeper (owner, else fleet) got it."""
    owned: datetime | None = await session.scalar(
        select(Ownership.valid_from).where(
            Ownership.vehicle_id == vehicle_id,
            _in_force(Ownership.valid_from, Ownership.valid_until, now),
        )
    )
    if owned is not None:
        return owned
    fleet: datetime | None = await session.scalar(
        select(FleetVehicle.valid_from).where(
            FleetVehicle.vehicle_id == vehicle_id,
            _in_force(FleetVehicle.valid_from, FleetVehicle.valid_until, now),
        )
    )
    return fleet


async def _dealer_start(
    session: AsyncSession, claims: AccessTokenClaims, vehicle_id: str, now: datetime
) -> datetime | None:
    """A technician on an open case assigned to them works for the vehicle's current keeper:
    they see the keeper's history (never a previous owner's), or only the case's own time
    when the vehicle has no keeper."""
    opened: datetime | None = await session.scalar(
        select(DealerCase.opened_at)
        .join(CaseTechnician, CaseTechnician.case_id == DealerCase.id)
        .where(
            DealerCase.vehicle_id == vehicle_id,
            DealerCase.dealer_tenant_id == claims.tenant,
            DealerCase.status == CaseStatus.OPEN,
            CaseTechnician.user_id == claims.sub,
            _in_force(CaseTechnician.valid_from, CaseTechnician.valid_until, now),
        )
        .order_by(DealerCase.opened_at)
        .limit(1)
    )
    if opened is None:
        return None
    custody = await _custody_start(session, vehicle_id, now)
    return custody if custody is not None else opened


async def _consent_start(
    session: AsyncSession,
    partner_tenant_id: str,
    vehicle_id: str,
    now: datetime,
    permission: Permission | None,
) -> datetime | None:
    rows = await session.execute(
        select(PartnerConsent.valid_from, PartnerConsent.scopes).where(
            PartnerConsent.vehicle_id == vehicle_id,
            PartnerConsent.partner_tenant_id == partner_tenant_id,
            PartnerConsent.revoked_at.is_(None),
            PartnerConsent.valid_from <= now,
            PartnerConsent.valid_until > now,
        )
    )
    starts = [
        start for start, scopes in rows if permission is None or permission.value in (scopes or [])
    ]
    return min(starts) if starts else None


__all__ = ["history_since"]
