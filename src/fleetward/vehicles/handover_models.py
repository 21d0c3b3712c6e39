"""Pending handovers: a driver invitation waiting to be accepted, an ownership transfer
waiting for the buyer.

Both are accepted with a one-time code the initiator passes on out of band; only the code's
SHA-256 is stored, so a database reader cannot accept anything.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import ID_LENGTH, Base, id_column, str_enum


class HandoverStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"  # withdrawn by the person who started it
    EXPIRED = "expired"


_PENDING = text("status = 'pending'")


class DriverInvitation(Base):
    __tablename__ = "driver_invitations"

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    invited_by_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The delegation the invitee receives on acceptance.
    permissions: Mapped[list[str]] = mapped_column(JSON)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    # The invitation itself must be accepted before this instant.
    expires_at: Mapped[datetime]
    status: Mapped[HandoverStatus] = mapped_column(str_enum(HandoverStatus, "handover_status"))
    created_at: Mapped[datetime]
    accepted_by_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    delegation_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    closed_at: Mapped[datetime | None]


class OwnershipTransfer(Base):
    __tablename__ = "ownership_transfers"
    __table_args__ = (
        # At most one pending transfer per vehicle.
        Index(
            "uq_ownership_transfers_pending_vehicle",
            "vehicle_id",
            unique=True,
            sqlite_where=_PENDING,
            postgresql_where=_PENDING,
        ),
    )

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"))
    seller_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    status: Mapped[HandoverStatus] = mapped_column(str_enum(HandoverStatus, "transfer_status"))
    created_at: Mapped[datetime]
    buyer_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    closed_at: Mapped[datetime | None]
