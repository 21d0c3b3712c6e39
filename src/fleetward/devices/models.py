"""Device tables: identities, their certificates, enrolment tokens and clone incidents.

Invariants held in SQL as well as by the services: at most one live (not ended) device per
vehicle (partial unique index), a public key is certified at most once (unique digest), an
enrolment token is stored only as its SHA-256 digest.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import ID_LENGTH, Base, id_column, str_enum

_LIVE = text("ended_at IS NULL")


class DeviceStatus(StrEnum):
    """Where a device identity stands. Only ACTIVE devices may open a session; the telemetry
    pipeline treats anything else (QUARANTINED included) as untrusted."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    QUARANTINED = "quarantined"
    REVOKED = "revoked"
    DECOMMISSIONED = "decommissioned"


# Statuses that end an identity for good: a new identity is a new device id and a new key.
ENDED_STATUSES: frozenset[DeviceStatus] = frozenset(
    {DeviceStatus.REVOKED, DeviceStatus.DECOMMISSIONED}
)


class KeyAlgorithm(StrEnum):
    ED25519 = "ed25519"
    P256 = "p256"


class CertificateStatus(StrEnum):
    # Issued by a rotation and not used yet: the previous certificate stays valid until the
    # first handshake with this one, which activates it and revokes the previous one.
    PENDING = "pending"
    ACTIVE = "active"
    REVOKED = "revoked"


class EnrolmentKind(StrEnum):
    INITIAL = "initial"  # a vehicle's first TCU, created by a platform admin
    REPLACEMENT = "replacement"  # a new TCU under an open dealer case
    RE_ENROLMENT = "re_enrolment"  # fresh credentials for a TCU whose identity was ended


class IncidentKind(StrEnum):
    CONCURRENT_SESSION = "concurrent_session"
    PEER_CHANGED = "peer_changed"


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        # Defence in depth: one live identity per vehicle, whatever the code does.
        Index(
            "uq_devices_live_vehicle",
            "vehicle_id",
            unique=True,
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        ),
    )

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    status: Mapped[DeviceStatus] = mapped_column(str_enum(DeviceStatus, "device_status"))
    key_algorithm: Mapped[KeyAlgorithm] = mapped_column(
        str_enum(KeyAlgorithm, "device_key_algorithm")
    )
    enrolment_kind: Mapped[EnrolmentKind] = mapped_column(
        str_enum(EnrolmentKind, "device_enrolment_kind")
    )
    # The identity this one took over from (re-enrolment or TCU replacement).
    replaces_device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"))
    created_at: Mapped[datetime]
    status_changed_at: Mapped[datetime]
    # A stable code (e.g. "tcu-replaced", "clone-concurrent_session"), never free text.
    status_reason: Mapped[str | None] = mapped_column(String(64))
    ended_at: Mapped[datetime | None]
    # The network identity of the last session and when the device was last heard from;
    # clone detection compares a new session against them.
    last_peer: Mapped[str | None] = mapped_column(String(128))
    last_seen_at: Mapped[datetime | None]


class DeviceCertificate(Base):
    __tablename__ = "device_certificates"

    id: Mapped[str] = id_column()
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    # Hex of the X.509 serial number (random, at most 20 bytes).
    serial: Mapped[str] = mapped_column(String(40), unique=True)
    # SHA-256 of the certificate's DER: how a presented certificate is looked up.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    # SHA-256 of the SubjectPublicKeyInfo: a key is certified once, for one device, ever.
    public_key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[CertificateStatus] = mapped_column(
        str_enum(CertificateStatus, "device_certificate_status")
    )
    not_before: Mapped[datetime]
    not_after: Mapped[datetime]
    issued_at: Mapped[datetime]
    first_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))
    # The certificate itself (public data), for investigation and re-delivery.
    der: Mapped[bytes] = mapped_column(LargeBinary)


class DeviceEnrolment(Base):
    """A one-time enrolment token: the only thing that authorizes issuing a device identity."""

    __tablename__ = "device_enrolments"

    id: Mapped[str] = id_column()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[EnrolmentKind] = mapped_column(str_enum(EnrolmentKind, "device_enrolment_kind"))
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), index=True)
    # The id the new device will have; its CSR must name it.
    device_id: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    replaces_device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"))
    dealer_case_id: Mapped[str | None] = mapped_column(ForeignKey("dealer_cases.id"))
    created_by_type: Mapped[str] = mapped_column(String(16))
    created_by_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # Set when a later token for the same vehicle was redeemed: a leaked older token is dead.
    cancelled_at: Mapped[datetime | None]


class DeviceIncident(Base):
    __tablename__ = "device_incidents"

    id: Mapped[str] = id_column()
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    kind: Mapped[IncidentKind] = mapped_column(str_enum(IncidentKind, "device_incident_kind"))
    detected_at: Mapped[datetime] = mapped_column(index=True)
    certificate_serial: Mapped[str] = mapped_column(String(40))
    # The network identity of the session that raised the incident, and the one it clashed with.
    peer: Mapped[str] = mapped_column(String(128))
    previous_peer: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
