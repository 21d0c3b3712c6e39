"""Driver invitations: an owner invites someone to drive with a one-time code.

The owner fixes everything (permissions, window) when inviting; the invitee only presents
the code, so accepting can never widen or extend what the owner chose. The code is shown
once; only its SHA-256 is stored. A wrong, used, revoked or expired code all answer the same
:class:`InvalidCode`. Acceptance is single use even under concurrent accepts: the status
moves from pending in one conditional UPDATE, and only the request that moved it proceeds.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import CursorResult, select, update

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.authz.permissions import DELEGABLE_PERMISSIONS, Permission
from fleetward.core.errors import NotFound
from fleetward.core.ids import new_id
from fleetward.identity.models import User
from fleetward.services import ServiceContext
from fleetward.vehicles.delegation import DelegationService, parse_permissions
from fleetward.vehicles.errors import DelegationTooWide, NotCurrentOwner, RelationshipRefused
from fleetward.vehicles.handover_models import DriverInvitation, HandoverStatus
from fleetward.vehicles.models import DriverDelegation, Vehicle
from fleetward.vehicles.ownership import OwnershipService

INVITATION_LIFETIME: Final = timedelta(hours=72)
# 32 random bytes: 256 bits, well above the 128 a guess must beat.
CODE_BYTES: Final = 32
# A code as the API accepts it: url-safe base64 of CODE_BYTES (43 characters), with room.
MAX_CODE_LENGTH: Final = 128


class InvalidCode(NotFound):
    """Wrong, used, revoked or expired: one answer, so a code holder learns nothing more."""

    code = "invalid-code"
    title = "No such code"


def invalid_code() -> InvalidCode:
    return InvalidCode("the code is not valid")


def issue_code() -> str:
    """A fresh one-time code (url-safe, 256 bits of entropy)."""
    return secrets.token_urlsafe(CODE_BYTES)


def code_digest(code: str) -> str:
    """What is stored and looked up: the code's SHA-256. The code has 256 bits of entropy, so
    an unsalted hash cannot be reversed, and a database reader cannot accept anything."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def delegable(values: Iterable[str]) -> frozenset[Permission]:
    """A non-empty subset of what an owner may lend (422 otherwise)."""
    granted = parse_permissions(values)
    if not granted:
        raise DelegationTooWide("an invitation needs at least one permission", reason="empty")
    wider = granted - DELEGABLE_PERMISSIONS
    if wider:
        raise DelegationTooWide(
            "an owner cannot delegate: " + ", ".join(sorted(p.value for p in wider)),
            reason="not-delegable",
        )
    return granted


@dataclass(frozen=True, slots=True)
class IssuedInvitation:
    invitation: DriverInvitation
    code: str  # shown once to the owner, never stored


def effective_status(invitation: DriverInvitation, now: datetime) -> HandoverStatus:
    """A pending invitation past its deadline is expired, whether or not a row says so."""
    if invitation.status is HandoverStatus.PENDING and invitation.expires_at <= now:
        return HandoverStatus.EXPIRED
    return invitation.status


class InvitationService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def invite(
        self,
        vehicle: Vehicle,
        owner: User,
        permissions: Iterable[str],
        *,
        valid_until: datetime,
        actor: Actor,
        valid_from: datetime | None = None,
    ) -> IssuedInvitation:
        now = self._ctx.clock.now()
        start = valid_from or now
        granted = delegable(permissions)
        self._ctx.limits.check_delegation_window(start, valid_until, now=now)
        ownership = await OwnershipService(self._ctx).current(vehicle)
        if ownership is None or ownership.owner_user_id != owner.id:
            raise NotCurrentOwner("only the current owner can invite drivers")
        code = issue_code()
        invitation = DriverInvitation(
            id=new_id("inv"),
            vehicle_id=vehicle.id,
            invited_by_user_id=owner.id,
            code_hash=code_digest(code),
            permissions=sorted(p.value for p in granted),
            valid_from=start,
            valid_until=valid_until,
            expires_at=now + INVITATION_LIFETIME,
            status=HandoverStatus.PENDING,
            created_at=now,
            accepted_by_user_id=None,
            delegation_id=None,
            closed_at=None,
        )
        session = self._ctx.session
        session.add(invitation)
        self._ctx.audit.record(
            session,
            EventName.DRIVER_INVITED,
            actor=actor,
            target=Target("vehicle", vehicle.id, vehicle.tenant_id),
            details={
                "invitation": invitation.id,
                "permissions": list(invitation.permissions),
                "expires_at": invitation.expires_at.isoformat(),
            },
        )
        await session.flush()
        return IssuedInvitation(invitation, code)

    async def revoke(self, invitation: DriverInvitation, *, actor: Actor) -> bool:
        """Withdraw a pending invitation; False when it was no longer pending."""
        now = self._ctx.clock.now()
        if not await self._close(invitation, HandoverStatus.REVOKED, now):
            return False
        self._ctx.audit.record(
            self._ctx.session,
            EventName.DRIVER_INVITATION_REVOKED,
            actor=actor,
            target=Target("driver_invitation", invitation.id),
            details={"vehicle": invitation.vehicle_id},
        )
        return True

    async def revoke_pending(self, vehicle: Vehicle, *, actor: Actor, reason: str) -> int:
        """Withdraw every pending invitation of ``vehicle`` (its owner changed)."""
        pending = await self._ctx.session.scalars(
            select(DriverInvitation).where(
                DriverInvitation.vehicle_id == vehicle.id,
                DriverInvitation.status == HandoverStatus.PENDING,
            )
        )
        count = 0
        for invitation in list(pending):
            if await self._close(invitation, HandoverStatus.REVOKED, self._ctx.clock.now()):
                count += 1
                self._ctx.audit.record(
                    self._ctx.session,
                    EventName.DRIVER_INVITATION_REVOKED,
                    actor=actor,
                    target=Target("driver_invitation", invitation.id),
                    reason=reason,
                    details={"vehicle": vehicle.id},
                )
        return count

    async def accept(self, code: str, invitee: User, *, actor: Actor) -> DriverDelegation:
        """The invitee becomes a driver with exactly the invitation's permissions and window
        (its start moved to now if it has begun: never wider, never longer)."""
        now = self._ctx.clock.now()
        session = self._ctx.session
        invitation = await session.scalar(
            select(DriverInvitation).where(DriverInvitation.code_hash == code_digest(code))
        )
        if (
            invitation is None
            or effective_status(invitation, now) is not HandoverStatus.PENDING
            or invitation.valid_until <= now  # the window it offered is already over
        ):
            raise invalid_code()
        if invitee.id == invitation.invited_by_user_id:
            raise RelationshipRefused("the owner cannot accept their own invitation", reason="self")
        vehicle = await session.get(Vehicle, invitation.vehicle_id)
        owner = await session.get(User, invitation.invited_by_user_id)
        if (
            vehicle is None
            or owner is None
            or vehicle.tenant_id != invitee.home_tenant_id  # the invitee could never drive it
            # The owner's authority is gone (disabled, no longer a customer): so is the offer.
            or not await OwnershipService(self._ctx).in_good_standing(vehicle, owner)
            # Changed hands: the invitation is void. Asked with the open ownership locked
            # BEFORE the invitation's row is: a sale locks the ownership, then the car's
            # pending invitations, and the other order deadlocked with it (PostgreSQL).
            or not await OwnershipService(self._ctx).held_by(vehicle, owner)
        ):
            raise invalid_code()
        if not await self._close(invitation, HandoverStatus.ACCEPTED, now, accepted_by=invitee.id):
            raise invalid_code()  # another accept won the race
        delegation = await DelegationService(self._ctx).delegate(
            vehicle,
            owner,
            invitee,
            invitation.permissions,
            valid_from=max(invitation.valid_from, now),
            valid_until=invitation.valid_until,
            actor=actor,
        )
        invitation.delegation_id = delegation.id
        self._ctx.audit.record(
            session,
            EventName.DRIVER_INVITATION_ACCEPTED,
            actor=actor,
            target=Target("driver_invitation", invitation.id),
            details={"vehicle": vehicle.id, "delegation": delegation.id},
        )
        await session.flush()
        return delegation

    async def _close(
        self,
        invitation: DriverInvitation,
        status: HandoverStatus,
        now: datetime,
        *,
        accepted_by: str | None = None,
    ) -> bool:
        """Move a pending, unexpired invitation to ``status``; True only for the one request
        whose UPDATE matched (concurrent requests serialise on the row)."""
        values: dict[str, object] = {"status": status, "closed_at": now}
        if accepted_by is not None:
            values["accepted_by_user_id"] = accepted_by
        result = await self._ctx.session.execute(
            update(DriverInvitation)
            .where(
                DriverInvitation.id == invitation.id,
                DriverInvitation.status == HandoverStatus.PENDING,
                DriverInvitation.expires_at > now,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if not isinstance(result, CursorResult) or result.rowcount != 1:
            return False
        await self._ctx.session.refresh(invitation)
        return True


__all__ = [
    "CODE_BYTES",
    "INVITATION_LIFETIME",
    "MAX_CODE_LENGTH",
    "InvalidCode",
    "InvitationService",
    "IssuedInvitation",
    "code_digest",
    "delegable",
    "effective_status",
    "invalid_code",
    "issue_code",
]
