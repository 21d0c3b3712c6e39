"""Partner consents: an owner lets one partner read chosen data kinds of one vehicle for a
bounded window. Consents are read-only by construction (no command permission is consentable).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.authz.permissions import CONSENTABLE_PERMISSIONS
from fleetward.core.ids import new_id
from fleetward.core.windows import OverlappingWindow, check_window
from fleetward.identity.models import Tenant, TenantKind, User
from fleetward.services import ServiceContext
from fleetward.store.races import written_if
from fleetward.vehicles.delegation import parse_permissions
from fleetward.vehicles.errors import DelegationTooWide, NotCurrentOwner, RelationshipRefused
from fleetward.vehicles.models import PartnerConsent, Vehicle
from fleetward.vehicles.ownership import OwnershipService


class ConsentService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def grant(
        self,
        partner: Tenant,
        vehicle: Vehicle,
        owner: User,
        scopes: Iterable[str],
        *,
        valid_until: datetime,
        actor: Actor,
    ) -> PartnerConsent:
        now = self._ctx.clock.now()
        granted = parse_permissions(scopes)
        if not granted or granted - CONSENTABLE_PERMISSIONS:
            raise DelegationTooWide(
                "partners may be consented read scopes only", reason="not-consentable"
            )
        if partner.kind is not TenantKind.PARTNER:
            raise RelationshipRefused("consents are granted to partner tenants", reason="tenant")
        check_window(now, valid_until, now=now, max_length=self._ctx.limits.max_consent)
        ownership = await OwnershipService(self._ctx).current(vehicle)
        if ownership is None or ownership.owner_user_id != owner.id:
            raise NotCurrentOwner("only the current owner can consent for this vehicle")
        await self._refuse_overlap(vehicle, partner)
        consent = PartnerConsent(
            id=new_id("cns"),
            partner_tenant_id=partner.id,
            vehicle_id=vehicle.id,
            granted_by_user_id=owner.id,
            scopes=sorted(p.value for p in granted),
            valid_from=now,
            valid_until=valid_until,
            revoked_at=None,
            revoked_reason=None,
        )
        self._ctx.session.add(consent)
        self._ctx.audit.record(
            self._ctx.session,
            EventName.PARTNER_CONSENT_GRANTED,
            actor=actor,
            target=Target("vehicle", vehicle.id, vehicle.tenant_id),
            details={"partner": partner.id, "scopes": list(consent.scopes)},
        )
        await self._ctx.session.flush()
        # Asked again once the consent is written: a sale that completed after the first
        # check would otherwise leave the seller's consent standing for the buyer's car.
        if not await OwnershipService(self._ctx).held_by(vehicle, owner):
            raise NotCurrentOwner("only the current owner can consent for this vehicle")
        # And the overlap, now that grants on this car wait for the ownership lock: two
        # grants at once each passed the first look without seeing the other (PostgreSQL).
        await self._refuse_overlap(vehicle, partner, besides=consent.id)
        return consent

    async def _refuse_overlap(
        self, vehicle: Vehicle, partner: Tenant, *, besides: str | None = None
    ) -> None:
        """One consent in force per partner and vehicle: the PDP reads one grant per pair, so
        a second would make the answer depend on row order. Narrowing is revoke, then grant."""
        existing = await self._ctx.session.scalar(
            select(PartnerConsent.id).where(
                PartnerConsent.vehicle_id == vehicle.id,
                PartnerConsent.partner_tenant_id == partner.id,
                PartnerConsent.revoked_at.is_(None),
                PartnerConsent.valid_until > self._ctx.clock.now(),
                PartnerConsent.id != (besides or ""),
            )
        )
        if existing is not None:
            raise OverlappingWindow(
                "this partner already has a consent for this vehicle", reason="consent"
            )

    async def revoke(self, consent: PartnerConsent, *, actor: Actor) -> bool:
        """Revoke ``consent``; False when it was revoked already (revoking twice is a no-op).

        A conditional UPDATE, not a write of the row as it was read: a revocation that
        committed after this request read the consent (the sale's, which revokes every grant
        of the seller, or the owner's own second click) is kept as it was, with its time and
        reason, and is audited once."""
        if consent.revoked_at is not None:
            return False
        if not await written_if(
            self._ctx.session,
            consent,
            PartnerConsent.revoked_at.is_(None),
            revoked_at=self._ctx.clock.now(),
            revoked_reason="revoked",
        ):
            return False
        self._ctx.audit.record(
            self._ctx.session,
            EventName.PARTNER_CONSENT_REVOKED,
            actor=actor,
            target=Target("partner_consent", consent.id, consent.partner_tenant_id),
        )
        await self._ctx.session.flush()
        return True
