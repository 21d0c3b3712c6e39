"""The store's side of a device handshake: may this proven certificate open a session now?

The gateway has already proven possession of the key of a certificate the device CA issued,
valid now, naming one device and one vehicle. Admission adds what only the store knows: the
certificate is one we issued to that device (looked up by fingerprint), not revoked, and the
device is active and still bound to that vehicle. It also records the session's opening and
closing, and answers the session registry's periodic "is this still allowed?" question.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.recorder import Actor, AuditRecorder, Target
from fleetward.core.clock import Clock
from fleetward.core.errors import JsonValue
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import (
    CertificateStatus,
    Device,
    DeviceCertificate,
    DeviceStatus,
)
from fleetward.services import ServiceContext
from fleetward.vehicles.models import Vehicle

_REFUSAL_BY_STATUS = {
    DeviceStatus.SUSPENDED: "device-suspended",
    DeviceStatus.REVOKED: "device-revoked",
    DeviceStatus.DECOMMISSIONED: "device-decommissioned",
}
# A quarantined device still connects: its frames are set apart by the pipeline and kept for
# investigation, and it is not told. Only an operator suspends or revokes it.
ADMITTED_STATUSES = frozenset({DeviceStatus.ACTIVE, DeviceStatus.QUARANTINED})


class AdmissionRefused(Exception):
    """reason: unknown-certificate, binding, certificate-revoked, certificate-expired,
    device-suspended, device-revoked, device-decommissioned."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Admitted:
    device: Device
    certificate: DeviceCertificate
    tenant_id: str

    @property
    def first_use_of_rotation(self) -> bool:
        return self.certificate.status is CertificateStatus.PENDING


def device_actor(device_id: str, tenant_id: str | None = None) -> Actor:
    return Actor(ActorType.DEVICE, device_id, tenant_id)


class DeviceAdmission:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def check(self, *, device_id: str, vehicle_id: str, fingerprint: str) -> Admitted:
        session = self._ctx.session
        now = self._ctx.clock.now()
        certificate = await session.scalar(
            select(DeviceCertificate).where(DeviceCertificate.fingerprint == fingerprint)
        )
        if certificate is None:
            # Signed by our CA but not in our records: a CA key leak or a restored backup.
            raise AdmissionRefused("unknown-certificate")
        device = await session.get(Device, device_id)
        if certificate.device_id != device_id or device is None or device.vehicle_id != vehicle_id:
            raise AdmissionRefused("binding")
        # The device's status first: it names why (revoked, suspended) better than the
        # certificate revocation that ending an identity also causes.
        if device.status not in ADMITTED_STATUSES:
            raise AdmissionRefused(_REFUSAL_BY_STATUS[device.status])
        if certificate.status is CertificateStatus.REVOKED:
            raise AdmissionRefused("certificate-revoked")
        if not certificate.not_before <= now <= certificate.not_after:
            raise AdmissionRefused("certificate-expired")
        vehicle = await session.get(Vehicle, vehicle_id)
        if vehicle is None:
            raise AdmissionRefused("binding")
        return Admitted(device, certificate, vehicle.tenant_id)

    async def replaced_serials(self, admitted: Admitted) -> frozenset[str]:
        """The active certificates a pending one replaces on its first use."""
        rows = await self._ctx.session.scalars(
            select(DeviceCertificate.serial).where(
                DeviceCertificate.device_id == admitted.device.id,
                DeviceCertificate.status == CertificateStatus.ACTIVE,
            )
        )
        return frozenset(rows)

    async def opened(
        self,
        admitted: Admitted,
        *,
        session_id: str,
        peer: str,
        software_version: str,
        details: dict[str, JsonValue],
    ) -> list[str]:
        """Record an admitted session; completes a rotation on its first use. Returns the
        serials that rotation revoked (their sessions must end)."""
        device = admitted.device
        actor = device_actor(device.id, admitted.tenant_id)
        now = self._ctx.clock.now()
        revoked: list[str] = []
        if admitted.first_use_of_rotation:
            revoked = await DeviceLifecycle(self._ctx).complete_rotation(
                device, admitted.certificate, actor=actor
            )
        if admitted.certificate.first_used_at is None:
            admitted.certificate.first_used_at = now
        device.last_peer = peer
        device.last_seen_at = now
        self._ctx.audit.record(
            self._ctx.session,
            EventName.DEVICE_SESSION_OPENED,
            actor=actor,
            target=Target("device", device.id, admitted.tenant_id),
            details={
                "session": session_id,
                "vehicle": device.vehicle_id,
                "serial": admitted.certificate.serial,
                "peer": peer,
                "software_version": software_version,
                "status": device.status.value,
                **details,
            },
        )
        await self._ctx.session.flush()
        return revoked

    async def closed(
        self, *, device_id: str, tenant_id: str, session_id: str, last_activity: datetime, code: str
    ) -> None:
        device = await self._ctx.session.get(Device, device_id)
        if device is not None and (
            device.last_seen_at is None or device.last_seen_at < last_activity
        ):
            device.last_seen_at = last_activity
        self._ctx.audit.record(
            self._ctx.session,
            EventName.DEVICE_SESSION_CLOSED,
            actor=device_actor(device_id, tenant_id),
            target=Target("device", device_id, tenant_id),
            details={"session": session_id, "close": code},
        )
        await self._ctx.session.flush()


def record_refusal(
    audit: AuditRecorder,
    session: AsyncSession,
    *,
    reason: str,
    device_id: str | None,
    peer: str,
    close: str,
) -> None:
    """A refused handshake. ``device_id`` only when our CA vouched for it."""
    actor = device_actor(device_id) if device_id else Actor.system("gateway")
    audit.record(
        session,
        EventName.DEVICE_HANDSHAKE_FAILED,
        actor=actor,
        target=Target("device", device_id or "unknown"),
        decision=Decision.DENIED,
        reason=reason,
        details={"peer": peer, "close": close},
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the store says about the credentials of live sessions."""

    statuses: Mapping[str, DeviceStatus]  # device id -> status; a missing device is gone
    withdrawn_serials: frozenset[str]  # certificates revoked, expired or unknown


class StoreCredentialCheck:
    """Re-reads the credentials of live sessions, for changes made outside this process (the
    CLI, another replica). Opens a short session of its own per call; safe for concurrent use."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    async def current(self, live: Sequence[tuple[str, str]]) -> Credentials:
        """``live``: (device id, certificate serial) of each live session."""
        if not live:
            return Credentials({}, frozenset())
        now = self._clock.now()
        serials = sorted({serial for _, serial in live})
        async with self._sessions() as session:
            device_rows = await session.execute(
                select(Device.id, Device.status).where(
                    Device.id.in_(sorted({device for device, _ in live}))
                )
            )
            statuses = {device_id: status for device_id, status in device_rows}
            certificate_rows = await session.execute(
                select(DeviceCertificate.serial).where(
                    DeviceCertificate.serial.in_(serials),
                    DeviceCertificate.status != CertificateStatus.REVOKED,
                    DeviceCertificate.not_after >= now,
                )
            )
            valid = {serial for (serial,) in certificate_rows}
        return Credentials(statuses, frozenset(serials) - valid)
