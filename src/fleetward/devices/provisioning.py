"""Provisioning: one-time enrolment tokens, and issuing a device identity for one.

A platform admin (or, for a TCU replacement, a technician under an open dealer case) creates an
enrolment for a vehicle. It reserves the new device id and yields a token shown once; only its
SHA-256 is stored. The TCU generates its own key, builds a CSR naming that device id and the
vehicle, and redeems the token with it: the token is spent, the key is certified, and every
other unused token for the vehicle is cancelled, all in one transaction. The key never leaves
the TCU.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from fleetward.audit.events import ActorType, EventName
from fleetward.audit.recorder import Actor, AuditRow, Target
from fleetward.core.ids import new_id
from fleetward.devices.ca import DeviceCa
from fleetward.devices.csr import CheckedRequest, check_csr
from fleetward.devices.errors import (
    CsrRefused,
    EnrolmentTokenInvalid,
    InvalidLifetime,
    VehicleHasDevice,
)
from fleetward.devices.models import (
    CertificateStatus,
    Device,
    DeviceCertificate,
    DeviceEnrolment,
    DeviceStatus,
    EnrolmentKind,
)
from fleetward.devices.names import DEVICE_ID_PREFIX
from fleetward.services import ServiceContext
from fleetward.store.constraints import violates_unique
from fleetward.vehicles.models import CaseStatus, DealerCase, Vehicle

DEFAULT_ENROLMENT_LIFETIME: Final = timedelta(hours=24)
MIN_ENROLMENT_LIFETIME: Final = timedelta(minutes=5)
MAX_ENROLMENT_LIFETIME: Final = timedelta(days=7)
# A recognisable prefix lets secret scanners find a leaked token; 256 random bits follow.
TOKEN_PREFIX: Final = "fwenrol_"  # noqa: S105 - a prefix, not a secret
_MAX_TOKEN_LENGTH: Final = 128


@dataclass(frozen=True, slots=True)
class EnrolmentGrant:
    """A new enrolment. ``token`` exists only here: the store keeps its digest."""

    token: str = field(repr=False)
    enrolment_id: str
    kind: EnrolmentKind
    device_id: str
    vehicle_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    device_id: str
    vehicle_id: str
    serial: str
    status: CertificateStatus
    certificate_pem: str
    ca_certificate_pem: str
    not_before: datetime
    not_after: datetime


def on_vehicle(row: AuditRow, vehicle_id: str | None) -> None:
    """Name a device record's vehicle in its vehicle column. A device is bound to one vehicle,
    and the blast radius of a device (or of whoever acted on it) finds the vehicles reached
    through that column only (``audit.investigate``); the recorder fills it for a vehicle
    target or a ``vehicle_id`` detail, and device records target the device."""
    row["vehicle_id"] = vehicle_id


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


def serial_hex(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


class Provisioning:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def live_device(self, vehicle_id: str) -> Device | None:
        return await self._ctx.session.scalar(
            select(Device).where(Device.vehicle_id == vehicle_id, Device.ended_at.is_(None))
        )

    async def create_enrolment(
        self,
        vehicle: Vehicle,
        *,
        actor: Actor,
        kind: EnrolmentKind = EnrolmentKind.INITIAL,
        lifetime: timedelta = DEFAULT_ENROLMENT_LIFETIME,
        replaces: Device | None = None,
        case: DealerCase | None = None,
    ) -> EnrolmentGrant:
        """An enrolment for a vehicle without a live device. Callers that replace a device
        end it first, in the same transaction."""
        if not MIN_ENROLMENT_LIFETIME <= lifetime <= MAX_ENROLMENT_LIFETIME:
            raise InvalidLifetime(
                "an enrolment lives between 5 minutes and 7 days", reason="enrolment"
            )
        if await self.live_device(vehicle.id) is not None:
            raise VehicleHasDevice("the vehicle already has a device identity")
        now = self._ctx.clock.now()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        enrolment = DeviceEnrolment(
            id=new_id("enr"),
            token_hash=token_digest(token),
            kind=kind,
            vehicle_id=vehicle.id,
            device_id=new_id(DEVICE_ID_PREFIX),
            replaces_device_id=replaces.id if replaces else None,
            dealer_case_id=case.id if case else None,
            created_by_type=actor.type.value,
            created_by_id=actor.id,
            created_at=now,
            expires_at=now + lifetime,
            used_at=None,
            cancelled_at=None,
        )
        self._ctx.session.add(enrolment)
        self._ctx.audit.record(
            self._ctx.session,
            EventName.DEVICE_ENROLMENT_CREATED,
            actor=actor,
            target=Target("vehicle", vehicle.id, vehicle.tenant_id),
            details={
                "enrolment": enrolment.id,
                "kind": kind.value,
                "device": enrolment.device_id,
                "case": enrolment.dealer_case_id,
                "expires_at": enrolment.expires_at.isoformat(),
            },
        )
        await self._ctx.session.flush()
        return EnrolmentGrant(
            token, enrolment.id, kind, enrolment.device_id, vehicle.id, enrolment.expires_at
        )

    async def enrol(self, token: str, csr_pem: str, ca: DeviceCa) -> IssuedCertificate:
        """Spend ``token`` and certify the CSR's key as the enrolment's device."""
        enrolment = await self._redeemable(token)
        checked = check_csr(csr_pem, device_id=enrolment.device_id, vehicle_id=enrolment.vehicle_id)
        await self.refuse_reused_key(checked)
        if await self.live_device(enrolment.vehicle_id) is not None:
            raise VehicleHasDevice("the vehicle already has a device identity")
        # Every check is done: nothing is written before this point.
        session = self._ctx.session
        now = self._ctx.clock.now()
        spent = await session.execute(
            update(DeviceEnrolment)
            .where(
                DeviceEnrolment.id == enrolment.id,
                DeviceEnrolment.used_at.is_(None),
                DeviceEnrolment.cancelled_at.is_(None),
            )
            .values(used_at=now)
        )
        if getattr(spent, "rowcount", 0) != 1:
            raise EnrolmentTokenInvalid("the enrolment token was already used", reason="used")
        await session.execute(
            update(DeviceEnrolment)
            .where(
                DeviceEnrolment.vehicle_id == enrolment.vehicle_id,
                DeviceEnrolment.id != enrolment.id,
                DeviceEnrolment.used_at.is_(None),
                DeviceEnrolment.cancelled_at.is_(None),
            )
            .values(cancelled_at=now)
        )
        device = Device(
            id=enrolment.device_id,
            vehicle_id=enrolment.vehicle_id,
            status=DeviceStatus.ACTIVE,
            key_algorithm=checked.algorithm,
            enrolment_kind=enrolment.kind,
            replaces_device_id=enrolment.replaces_device_id,
            created_at=now,
            status_changed_at=now,
            status_reason=None,
            ended_at=None,
            last_peer=None,
            last_seen_at=None,
        )
        session.add(device)
        await session.flush()
        issued = await self.issue(device, checked, ca, status=CertificateStatus.ACTIVE)
        vehicle = await session.get(Vehicle, device.vehicle_id)
        provisioned = self._ctx.audit.record(
            session,
            EventName.DEVICE_PROVISIONED,
            actor=Actor(ActorType.DEVICE, device.id),
            target=Target("device", device.id, vehicle.tenant_id if vehicle else None),
            details={
                "vehicle": device.vehicle_id,
                "enrolment": enrolment.id,
                "kind": enrolment.kind.value,
                "serial": issued.serial,
                "key_algorithm": checked.algorithm.value,
            },
        )
        on_vehicle(provisioned, device.vehicle_id)
        await session.flush()
        return issued

    async def issue(
        self, device: Device, checked: CheckedRequest, ca: DeviceCa, *, status: CertificateStatus
    ) -> IssuedCertificate:
        """Certify a checked key for ``device``; refuses a key certified before."""
        session = self._ctx.session
        await self.refuse_reused_key(checked)
        now = self._ctx.clock.now()
        certificate = ca.issue(
            checked.public_key, device_id=device.id, vehicle_id=device.vehicle_id, now=now
        )
        row = DeviceCertificate(
            id=new_id("dcr"),
            device_id=device.id,
            serial=serial_hex(certificate),
            fingerprint=certificate_fingerprint(certificate),
            public_key_sha256=checked.public_key_sha256,
            status=status,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            issued_at=now,
            first_used_at=None,
            revoked_at=None,
            revoked_reason=None,
            der=certificate.public_bytes(serialization.Encoding.DER),
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError as error:
            if not violates_unique(error, DeviceCertificate.__table__.c.public_key_sha256):
                raise
            # Certified meanwhile: a concurrent enrolment or rotation with the same key
            # committed after refuse_reused_key read. The same refusal, not a 500 (this
            # transaction is spent; the caller's unit of work rolls it back).
            raise CsrRefused("this key was certified before", reason="key-reused") from None
        return IssuedCertificate(
            device_id=device.id,
            vehicle_id=device.vehicle_id,
            serial=row.serial,
            status=status,
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            ca_certificate_pem=ca.certificate_pem,
            not_before=row.not_before,
            not_after=row.not_after,
        )

    async def refuse_reused_key(self, checked: CheckedRequest) -> None:
        reused = await self._ctx.session.scalar(
            select(DeviceCertificate.id).where(
                DeviceCertificate.public_key_sha256 == checked.public_key_sha256
            )
        )
        if reused is not None:
            # Unique credentials per device: a key is certified once, ever. This is also
            # what makes a shared fleet certificate impossible.
            raise CsrRefused("this key was certified before", reason="key-reused")

    async def named_by(self, token: object) -> DeviceEnrolment | None:
        """The enrolment ``token`` belongs to, whatever its state (spent, cancelled, expired):
        what a refused redemption is recorded against. None for a malformed or unknown one."""
        if (
            not isinstance(token, str)
            or not token.startswith(TOKEN_PREFIX)
            or len(token) > _MAX_TOKEN_LENGTH
        ):
            return None
        return await self._ctx.session.scalar(
            select(DeviceEnrolment).where(DeviceEnrolment.token_hash == token_digest(token))
        )

    async def _redeemable(self, token: str) -> DeviceEnrolment:
        if (
            not isinstance(token, str)
            or not token.startswith(TOKEN_PREFIX)
            or len(token) > _MAX_TOKEN_LENGTH
        ):
            raise EnrolmentTokenInvalid("the enrolment token is malformed", reason="malformed")
        session = self._ctx.session
        enrolment = await self.named_by(token)
        if enrolment is None:
            raise EnrolmentTokenInvalid("the enrolment token is not known", reason="unknown")
        if enrolment.used_at is not None:
            raise EnrolmentTokenInvalid("the enrolment token was already used", reason="used")
        if enrolment.cancelled_at is not None:
            raise EnrolmentTokenInvalid("the enrolment token was cancelled", reason="cancelled")
        if self._ctx.clock.now() >= enrolment.expires_at:
            raise EnrolmentTokenInvalid("the enrolment token has expired", reason="expired")
        if enrolment.dealer_case_id is not None:
            case = await session.get(DealerCase, enrolment.dealer_case_id)
            if case is None or case.status is not CaseStatus.OPEN:
                # A replacement is authorized by its case: when the case closes, so does it.
                raise EnrolmentTokenInvalid(
                    "the dealer case of this enrolment is closed", reason="case-closed"
                )
        return enrolment
