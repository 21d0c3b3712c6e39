"""Ownership transfers: the seller starts one, the buyer proves three things to accept it.

The buyer presents the one-time code the seller passed on, the VIN read off the car, and a
recent multi-factor sign-in (the route demands it). A wrong code is the same answer as no
transfer at all. A right code with a wrong VIN is refused and audited
(``OWNERSHIP_TRANSFER_REFUSED``); after :data:`MAX_VIN_FAILURES` such refusals the transfer
is revoked, so a leaked code cannot be paired with guessed VINs. The refusals are counted
from their audit records, which are the evidence anyway; an accept locks the transfer from
its read and records its refusal before it commits, so accepts sent at once are judged one
after another, each after the last one's refusal was counted.

Accepting is one transaction: the pending transfer is closed by a conditional UPDATE (only
one concurrent accept can win), the ownership moves (the seller's delegations and consents
end, and the vehicle's open dealer cases close, at the same instant, see
:class:`OwnershipService`), and the vehicle's pending driver invitations are revoked.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.exc import IntegrityError

from fleetward.audit.events import Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import Conflict, InvalidInput
from fleetward.core.ids import new_id
from fleetward.identity.models import User
from fleetward.services import ServiceContext
from fleetward.vehicles.errors import NotCurrentOwner, RelationshipRefused
from fleetward.vehicles.handover_models import HandoverStatus, OwnershipTransfer
from fleetward.vehicles.invitations import (
    InvitationService,
    code_digest,
    invalid_code,
    issue_code,
)
from fleetward.vehicles.models import Ownership, Vehicle
from fleetward.vehicles.ownership import OwnershipService

TRANSFER_LIFETIME: Final = timedelta(hours=24)
MAX_VIN_FAILURES: Final = 5
TRANSFER_TARGET: Final = "ownership_transfer"
_VIN_REFUSAL: Final = "vin-mismatch"


class TransferPending(Conflict):
    code = "transfer-pending"
    title = "A transfer is already pending"


class VinMismatch(InvalidInput):
    """The code was right and the VIN was not (nothing was written yet). Carries the
    transfer so the caller records the refusal (:meth:`TransferService.refuse_vin`) in the
    same transaction, before it lets the transfer's lock go."""

    code = "vin-mismatch"
    title = "The VIN does not match"

    def __init__(self, transfer_id: str) -> None:
        super().__init__("the VIN does not match the vehicle", reason="vin")
        self.transfer_id = transfer_id


@dataclass(frozen=True, slots=True)
class IssuedTransfer:
    transfer: OwnershipTransfer
    code: str  # shown once to the seller, never stored


def normalise_vin(value: str) -> bytes:
    return value.strip().upper().encode("utf-8")


def same_vin(given: str, actual: str) -> bool:
    """Constant-time comparison of normalised VINs (whitespace and case do not matter)."""
    return hmac.compare_digest(normalise_vin(given), normalise_vin(actual))


class TransferService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def start(self, vehicle: Vehicle, seller: User, *, actor: Actor) -> IssuedTransfer:
        now = self._ctx.clock.now()
        session = self._ctx.session
        ownership = await OwnershipService(self._ctx).current(vehicle)
        if ownership is None or ownership.owner_user_id != seller.id:
            raise NotCurrentOwner("only the current owner can transfer this vehicle")
        await self._expire_lapsed(vehicle, now)
        pending = await session.scalar(
            select(OwnershipTransfer.id).where(
                OwnershipTransfer.vehicle_id == vehicle.id,
                OwnershipTransfer.status == HandoverStatus.PENDING,
            )
        )
        if pending is not None:
            raise TransferPending("this vehicle already has a pending transfer")
        code = issue_code()
        transfer = OwnershipTransfer(
            id=new_id("trf"),
            vehicle_id=vehicle.id,
            seller_user_id=seller.id,
            code_hash=code_digest(code),
            expires_at=now + TRANSFER_LIFETIME,
            status=HandoverStatus.PENDING,
            created_at=now,
            buyer_user_id=None,
            closed_at=None,
        )
        session.add(transfer)
        self._ctx.audit.record(
            session,
            EventName.OWNERSHIP_TRANSFER_STARTED,
            actor=actor,
            target=Target("vehicle", vehicle.id, vehicle.tenant_id),
            details={"transfer": transfer.id, "expires_at": transfer.expires_at.isoformat()},
        )
        try:
            await session.flush()
        except IntegrityError:
            # A concurrent start won (one pending transfer per vehicle, by unique index).
            raise TransferPending("this vehicle already has a pending transfer") from None
        return IssuedTransfer(transfer, code)

    async def cancel(self, transfer: OwnershipTransfer, *, actor: Actor) -> bool:
        """The seller withdraws a pending transfer; False when it was no longer pending."""
        now = self._ctx.clock.now()
        if not await self._close(transfer, HandoverStatus.REVOKED, now):
            return False
        self._ctx.audit.record(
            self._ctx.session,
            EventName.OWNERSHIP_TRANSFER_CANCELLED,
            actor=actor,
            target=Target(TRANSFER_TARGET, transfer.id),
            details={"vehicle": transfer.vehicle_id},
        )
        return True

    async def accept(self, code: str, vin: str, buyer: User, *, actor: Actor) -> Ownership:
        now = self._ctx.clock.now()
        session = self._ctx.session
        # Locked until this transaction ends (PostgreSQL; the route holds SQLite's write
        # lock): a concurrent accept of the same transfer waits, then reads it as this one
        # left it, its VIN refusal counted (the caller records it before committing).
        transfer = await session.scalar(
            select(OwnershipTransfer)
            .where(OwnershipTransfer.code_hash == code_digest(code))
            .with_for_update()
        )
        if transfer is None or not _open(transfer, now):
            raise invalid_code()
        if buyer.id == transfer.seller_user_id:
            raise RelationshipRefused("the seller cannot accept their own transfer", reason="self")
        vehicle = await session.get(Vehicle, transfer.vehicle_id)
        seller = await session.get(User, transfer.seller_user_id)
        if vehicle is None or seller is None:
            raise invalid_code()
        if vehicle.tenant_id != buyer.home_tenant_id:
            raise invalid_code()  # the buyer could never act on this vehicle's tenant
        if not await OwnershipService(self._ctx).in_good_standing(vehicle, seller):
            raise invalid_code()  # the seller's authority is gone: so is the sale
        if not same_vin(vin, vehicle.vin):
            raise VinMismatch(transfer.id)
        ownership = await OwnershipService(self._ctx).current(vehicle)
        if ownership is None or ownership.owner_user_id != seller.id:
            raise invalid_code()
        if not await self._close(transfer, HandoverStatus.ACCEPTED, now, buyer=buyer.id):
            raise invalid_code()  # another accept (or the seller's cancel) won the race
        owned = await OwnershipService(self._ctx).transfer(
            vehicle, seller, buyer, actor=actor, transfer_id=transfer.id
        )
        await InvitationService(self._ctx).revoke_pending(
            vehicle, actor=actor, reason="ownership-transferred"
        )
        await session.flush()
        return owned

    async def refuse_vin(self, transfer_id: str, buyer_id: str, *, actor: Actor) -> bool:
        """Record one wrong-VIN attempt (in the transaction that judged it, which the caller
        commits); revoke the transfer at the limit. True when this attempt revoked it."""
        now = self._ctx.clock.now()
        session = self._ctx.session
        # Lock the transfer so concurrent refusals are counted one after another.
        transfer = await session.scalar(
            select(OwnershipTransfer).where(OwnershipTransfer.id == transfer_id).with_for_update()
        )
        if transfer is None:
            return False
        self._ctx.audit.record(
            session,
            EventName.OWNERSHIP_TRANSFER_REFUSED,
            actor=actor,
            target=Target(TRANSFER_TARGET, transfer.id),
            decision=Decision.DENIED,
            reason=_VIN_REFUSAL,
            details={"vehicle": transfer.vehicle_id, "buyer": buyer_id},
        )
        await session.flush()
        failures = await self.vin_failures(transfer.id)
        if failures < MAX_VIN_FAILURES or not await self._close(
            transfer, HandoverStatus.REVOKED, now
        ):
            return False
        self._ctx.audit.record(
            session,
            EventName.OWNERSHIP_TRANSFER_CANCELLED,
            actor=Actor.system("transfers"),
            target=Target(TRANSFER_TARGET, transfer.id),
            reason="too-many-vin-failures",
            details={"vehicle": transfer.vehicle_id, "failures": failures},
        )
        return True

    async def vin_failures(self, transfer_id: str) -> int:
        count = await self._ctx.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(
                AuditRecord.object_type == TRANSFER_TARGET,
                AuditRecord.object_id == transfer_id,
                AuditRecord.name == EventName.OWNERSHIP_TRANSFER_REFUSED.value,
                AuditRecord.reason == _VIN_REFUSAL,
            )
        )
        return int(count or 0)

    async def _expire_lapsed(self, vehicle: Vehicle, now: datetime) -> None:
        """A pending transfer past its deadline no longer blocks a new one. Each transfer
        this closes as expired is audited (``OWNERSHIP_TRANSFER_EXPIRED``, by the system:
        nobody cancelled it), with its vehicle, seller and deadline; ids only."""
        session = self._ctx.session
        lapsed = await session.execute(
            update(OwnershipTransfer)
            .where(
                OwnershipTransfer.vehicle_id == vehicle.id,
                OwnershipTransfer.status == HandoverStatus.PENDING,
                OwnershipTransfer.expires_at <= now,
            )
            .values(status=HandoverStatus.EXPIRED, closed_at=now)
            .returning(
                OwnershipTransfer.id,
                OwnershipTransfer.seller_user_id,
                OwnershipTransfer.expires_at,
            )
            .execution_options(synchronize_session=False)
        )
        for transfer_id, seller_id, expires_at in lapsed.all():
            self._ctx.audit.record(
                session,
                EventName.OWNERSHIP_TRANSFER_EXPIRED,
                actor=Actor.system("transfers"),
                target=Target(TRANSFER_TARGET, transfer_id),
                reason="expired",
                details={
                    "vehicle": vehicle.id,
                    "seller": seller_id,
                    "expires_at": expires_at.isoformat(),
                },
            )

    async def _close(
        self,
        transfer: OwnershipTransfer,
        status: HandoverStatus,
        now: datetime,
        *,
        buyer: str | None = None,
    ) -> bool:
        values: dict[str, object] = {"status": status, "closed_at": now}
        if buyer is not None:
            values["buyer_user_id"] = buyer
        result = await self._ctx.session.execute(
            update(OwnershipTransfer)
            .where(
                OwnershipTransfer.id == transfer.id,
                OwnershipTransfer.status == HandoverStatus.PENDING,
                OwnershipTransfer.expires_at > now,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if not isinstance(result, CursorResult) or result.rowcount != 1:
            return False
        await self._ctx.session.refresh(transfer)
        return True


def _open(transfer: OwnershipTransfer, now: datetime) -> bool:
    return transfer.status is HandoverStatus.PENDING and transfer.expires_at > now


__all__ = [
    "MAX_VIN_FAILURES",
    "TRANSFER_LIFETIME",
    "IssuedTransfer",
    "TransferPending",
    "TransferService",
    "VinMismatch",
    "normalise_vin",
    "same_vin",
]
