"""Vehicle and relationship tables. Every relationship has a validity window."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import Base, id_column, str_enum

_OPEN = text("valid_until IS NULL")


class CaseStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Vehicle(Base):
    __tablename__ = "vehicles"

    id: Mapped[str] = id_column()
    vin: Mapped[str] = mapped_column(String(17), unique=True)
    label: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(100))
    # Market region; commands may be barred per region (authorization issue).
    region: Mapped[str] = mapped_column(String(16))
    # The tenant the vehicle currently lives in (consumer or fleet); history is in the
    # ownership and fleet membership tables.
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    created_at: Mapped[datetime]


class Ownership(Base):
    __tablename__ = "ownerships"
    __table_args__ = (
        # Defence in depth: at most one open ownership per vehicle, whatever the code does.
        Index(
            "uq_ownerships_open_vehicle",
            "vehicle_id",
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
    )

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    owner_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    ended_reason: Mapped[str | None] = mapped_column(String(64))


class DriverDelegation(Base):
    __tablename__ = "driver_delegations"

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    granted_by_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    driver_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    permissions: Mapped[list[str]] = mapped_column(JSON)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class FleetVehicle(Base):
    """Fleet membership of a vehicle."""

    __tablename__ = "fleet_vehicles"
    __table_args__ = (
        Index(
            "uq_fleet_vehicles_open_vehicle",
            "vehicle_id",
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
    )

    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]


class FleetGroup(Base):
    __tablename__ = "fleet_groups"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class GroupVehicle(Base):
    __tablename__ = "group_vehicles"
    # One open link per vehicle and group: two concurrent adds cannot both stand (a removal
    # would close one and leave the vehicle in the group through the other).
    __table_args__ = (
        Index(
            "uq_group_vehicles_open",
            "group_id",
            "vehicle_id",
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
    )

    id: Mapped[str] = id_column()
    group_id: Mapped[str] = mapped_column(ForeignKey("fleet_groups.id"), index=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]


class OperatorAssignment(Base):
    __tablename__ = "operator_assignments"
    # One open assignment per operator and group (an unassignment must end their access).
    __table_args__ = (
        Index(
            "uq_operator_assignments_open",
            "group_id",
            "user_id",
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
    )

    id: Mapped[str] = id_column()
    group_id: Mapped[str] = mapped_column(ForeignKey("fleet_groups.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]


class DealerCase(Base):
    __tablename__ = "dealer_cases"

    id: Mapped[str] = id_column()
    dealer_tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    status: Mapped[CaseStatus] = mapped_column(str_enum(CaseStatus, "dealer_case_status"))
    summary: Mapped[str] = mapped_column(String(500))
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]


class CaseTechnician(Base):
    __tablename__ = "case_technicians"

    id: Mapped[str] = id_column()
    case_id: Mapped[str] = mapped_column(ForeignKey("dealer_cases.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]


class SupportCase(Base):
    __tablename__ = "support_cases"

    id: Mapped[str] = id_column()
    agent_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    # The account the case covers, and optionally one of that account's vehicles.
    subject_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    vehicle_id: Mapped[str | None] = mapped_column(ForeignKey("vehicles.id"))
    status: Mapped[CaseStatus] = mapped_column(str_enum(CaseStatus, "support_case_status"))
    summary: Mapped[str] = mapped_column(String(500))
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]


class PartnerConsent(Base):
    __tablename__ = "partner_consents"

    id: Mapped[str] = id_column()
    partner_tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    granted_by_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
