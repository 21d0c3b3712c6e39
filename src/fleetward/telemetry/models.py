"""Telemetry tables: accepted messages with their provenance, and quarantined messages.

Quarantined data lives in its own table and is never mixed into ``telemetry_messages``:
nothing that reads telemetry can pick it up by accident.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import ID_LENGTH, Base, id_column

# Provenance fields come from the device's certificate and handshake; the pipeline refuses a
# session whose values do not fit (a handshake bug), so a batch can never fail on them.
SERIAL_LENGTH = 64
SOFTWARE_VERSION_LENGTH = 64
VEHICLE_CONFIG_LENGTH = 128
VERDICT_LENGTH = 32


class TelemetryMessage(Base):
    """One accepted message. ``(device_id, sequence)`` is the key that makes storing a
    retransmission a no-op; sequences are the device's, independent of sessions."""

    __tablename__ = "telemetry_messages"
    __table_args__ = (
        Index("ix_telemetry_messages_vehicle_device_time", "vehicle_id", "device_time"),
    )

    device_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    vehicle_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("vehicles.id"))
    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    session_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    certificate_serial: Mapped[str] = mapped_column(String(SERIAL_LENGTH))
    software_version: Mapped[str] = mapped_column(String(SOFTWARE_VERSION_LENGTH))
    vehicle_config: Mapped[str] = mapped_column(String(VEHICLE_CONFIG_LENGTH))
    received_at: Mapped[datetime]
    device_time: Mapped[datetime]
    # Sent from the device's outbox after an offline period (authenticated flag in the frame).
    store_and_forward: Mapped[bool]
    # A higher sequence of this device had been accepted before this one arrived.
    late: Mapped[bool]
    # Validated signal values by VSS path (only catalogued signals, within their ranges).
    signals: Mapped[dict[str, Any]] = mapped_column(JSON)


class QuarantinedMessage(Base):
    """An authentic, fresh message from a quarantined device, kept apart for investigation.

    ``verdict`` is the status the message would have had (``accepted`` or the rejection), and
    ``payload`` the exact bytes the device authenticated, unparsed.
    """

    __tablename__ = "quarantined_messages"

    id: Mapped[str] = id_column()
    device_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    vehicle_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("vehicles.id"))
    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    session_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    certificate_serial: Mapped[str] = mapped_column(String(SERIAL_LENGTH))
    software_version: Mapped[str] = mapped_column(String(SOFTWARE_VERSION_LENGTH))
    vehicle_config: Mapped[str] = mapped_column(String(VEHICLE_CONFIG_LENGTH))
    received_at: Mapped[datetime]
    device_time: Mapped[datetime]
    sequence: Mapped[int] = mapped_column(BigInteger)
    store_and_forward: Mapped[bool]
    verdict: Mapped[str] = mapped_column(String(VERDICT_LENGTH))
    quarantine_reason: Mapped[str] = mapped_column(String(VERDICT_LENGTH))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
