"""What a vehicle's history is made of: trips, charging sessions, diagnostic reports, and the
service appointments booked for it.

Every row belongs to exactly one vehicle and is only ever reached through it (a record asked
for under another vehicle is not found). Trips carry coordinates: they are location history
and are only shown with ``vehicle:read_location`` as well as ``vehicle:read_trips``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import Base, id_column, str_enum


class Trip(Base):
    __tablename__ = "trips"
    __table_args__ = (Index("ix_trips_vehicle_started", "vehicle_id", "started_at"),)

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime]
    distance_km: Mapped[float] = mapped_column(Float)
    energy_kwh: Mapped[float | None] = mapped_column(Float)
    start_latitude: Mapped[float] = mapped_column(Float)
    start_longitude: Mapped[float] = mapped_column(Float)
    end_latitude: Mapped[float] = mapped_column(Float)
    end_longitude: Mapped[float] = mapped_column(Float)


class ChargerKind(StrEnum):
    AC = "ac"
    DC = "dc"


class ChargingSession(Base):
    __tablename__ = "charging_sessions"
    __table_args__ = (Index("ix_charging_sessions_vehicle_started", "vehicle_id", "started_at"),)

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"))
    started_at: Mapped[datetime]
    # None while the vehicle is still charging.
    ended_at: Mapped[datetime | None]
    energy_kwh: Mapped[float] = mapped_column(Float)
    start_soc_percent: Mapped[float] = mapped_column(Float)
    end_soc_percent: Mapped[float | None] = mapped_column(Float)
    charger_kind: Mapped[ChargerKind] = mapped_column(str_enum(ChargerKind, "charger_kind"))


class DiagnosticSource(StrEnum):
    VEHICLE = "vehicle"  # reported by the vehicle on its own
    DEALER = "dealer"  # produced by a diagnostic run under a dealer case


class DiagnosticReport(Base):
    __tablename__ = "diagnostic_reports"
    __table_args__ = (Index("ix_diagnostic_reports_vehicle_created", "vehicle_id", "created_at"),)

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"))
    created_at: Mapped[datetime]
    source: Mapped[DiagnosticSource] = mapped_column(
        str_enum(DiagnosticSource, "diagnostic_source")
    )
    software_version: Mapped[str] = mapped_column(String(64))
    # SAE J2012 / ISO 15031-6 trouble codes such as "P0420".
    trouble_codes: Mapped[list[str]] = mapped_column(JSON)
    summary: Mapped[str] = mapped_column(String(500))


class AppointmentStatus(StrEnum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class ServiceAppointment(Base):
    __tablename__ = "service_appointments"

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    dealer_tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    booked_by_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    scheduled_for: Mapped[datetime]
    status: Mapped[AppointmentStatus] = mapped_column(
        str_enum(AppointmentStatus, "appointment_status")
    )
    # The status is the version: a move is written only while the appointment is still as it
    # was read (a dealer's confirm cannot write over the customer's cancel).
    __mapper_args__ = {
        "version_id_col": status,
        "version_id_generator": False,
    }
    note: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
