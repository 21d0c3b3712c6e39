"""Ownership transfer routes on the mobile surface (included by :mod:`fleetward.api.handovers`).

The seller starts a transfer (``vehicle:transfer``: owner only, never a driver or a dealer,
and a recent multi-factor sign-in) and receives a one-time code for the buyer; the seller may
withdraw it. The buyer accepts with the code, the VIN read off the car and a recent
multi-factor sign-in. A wrong code is 404; a right code with a wrong VIN is 422, audited
before the answer, and the fifth such refusal revokes the transfer (accepts of one transfer
are judged one at a time, so guesses sent at once are counted too). There is no dealer
route: a dealer can never reassign an owner.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from fastapi import Depends, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from fleetward.abuse.policy import Flow
from fleetward.api.auth import Caller, StepUp, authenticate
from fleetward.api.authorize import not_found
from fleetward.api.bodies import StrictBody
from fleetward.api.handover_access import (
    SURFACE,
    IssuedView,
    actor_of,
    consumer_of,
    entry,
    owner_of,
)
from fleetward.api.objects import platform_of
from fleetward.api.quota_guard import charge_flow, watch_vin
from fleetward.api.routing import surface_router
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import AUTHENTICATED, catalogued
from fleetward.vehicles.handover_models import OwnershipTransfer
from fleetward.vehicles.invitations import MAX_CODE_LENGTH
from fleetward.vehicles.transfers import TransferService, VinMismatch

router = surface_router(SURFACE)
_authenticated = Depends(authenticate(SURFACE))
_stepped_up = Depends(authenticate(SURFACE, step_up=StepUp()))


class TransferAcceptBody(StrictBody):
    code: Annotated[str, Field(min_length=1, max_length=MAX_CODE_LENGTH)]
    vin: Annotated[str, Field(min_length=1, max_length=32)]


class TransferStartBody(StrictBody):
    """Starting a transfer takes no input: the seller, the vehicle and the deadline are the
    server's. A body, if sent, must be empty, so no field (owner, buyer, status) slips in."""


_NO_INPUT: Final = TransferStartBody()


class OwnershipView(BaseModel):
    vehicle_id: str
    owner_since: datetime


@router.post(
    "/vehicles/{vehicle_id}/transfers",
    name="mobile:transfers:start",
    response_model=IssuedView,
    status_code=201,
)
@catalogued(
    entry(
        "start selling the vehicle: a one-time code for the buyer (needs a recent MFA sign-in)",
        Permission.VEHICLE_TRANSFER,
        rate=5,
    )
)
async def start_transfer(
    vehicle_id: str,
    request: Request,
    body: TransferStartBody = _NO_INPUT,
    caller: Caller = _stepped_up,
) -> IssuedView:
    await charge_flow(request, caller, Flow.OWNERSHIP_TRANSFER)
    async with platform_of(request).services() as (uow, ctx):
        vehicle, seller = await owner_of(
            request, caller, Permission.VEHICLE_TRANSFER, vehicle_id, ctx
        )
        issued = await TransferService(ctx).start(vehicle, seller, actor=actor_of(caller))
        await uow.commit()
    return IssuedView(
        id=issued.transfer.id, code=issued.code, expires_at=issued.transfer.expires_at
    )


@router.delete(
    "/vehicles/{vehicle_id}/transfers/{transfer_id}",
    name="mobile:transfers:cancel",
    status_code=204,
    response_class=Response,
)
@catalogued(entry("the seller withdraws a pending transfer", Permission.VEHICLE_TRANSFER))
async def cancel_transfer(
    vehicle_id: str, transfer_id: str, request: Request, caller: Caller = _authenticated
) -> Response:
    async with platform_of(request).services() as (uow, ctx):
        vehicle, seller = await owner_of(
            request, caller, Permission.VEHICLE_TRANSFER, vehicle_id, ctx
        )
        transfer = await ctx.session.scalar(
            select(OwnershipTransfer).where(
                OwnershipTransfer.id == transfer_id,
                OwnershipTransfer.vehicle_id == vehicle.id,
                OwnershipTransfer.seller_user_id == seller.id,
            )
        )
        if transfer is None or not await TransferService(ctx).cancel(
            transfer, actor=actor_of(caller)
        ):
            raise not_found()
        await uow.commit()
    return Response(status_code=204)


@router.post("/transfers/accept", name="mobile:transfers:accept", response_model=OwnershipView)
@catalogued(
    entry(
        "the buyer accepts a transfer: one-time code, the car's VIN and a recent MFA sign-in",
        AUTHENTICATED,
        objects=("ownership_transfer", "vehicle"),
        rate=5,
    )
)
async def accept_transfer(
    body: TransferAcceptBody, request: Request, caller: Caller = _stepped_up
) -> OwnershipView:
    await watch_vin(request, caller, body.vin)
    # One accept of a transfer at a time, each judged after the last one's refusal was
    # counted: the transfer's row is locked from its read (PostgreSQL), the store's write
    # lock held from the start (SQLite). Otherwise VINs sent at once were all judged before
    # any of their refusals was counted, and five wrong VINs did not end the transfer.
    async with platform_of(request).services(write_lock=True) as (uow, ctx):
        buyer = await consumer_of(ctx, caller)
        transfers = TransferService(ctx)
        try:
            ownership = await transfers.accept(body.code, body.vin, buyer, actor=actor_of(caller))
        except VinMismatch as refused:
            # Nothing was written before the VIN was judged: the refusal (and, at the
            # limit, the transfer's revocation) is committed, the lock let go, then the 422.
            await transfers.refuse_vin(
                refused.transfer_id, caller.claims.sub, actor=actor_of(caller)
            )
            await uow.commit()
            raise
        await uow.commit()
    return OwnershipView(vehicle_id=ownership.vehicle_id, owner_since=ownership.valid_from)


__all__ = ["router"]
