"""The device credential lifecycle. Every transition is audited in its own transaction.

============  ==========================================  ===========================
operation     from                                        to
============  ==========================================  ===========================
rotate        active                                      active (new cert pending)
suspend       active                                      suspended
resume        suspended, quarantined                      active
quarantine    active                                      quarantined (clone detector)
revoke        active, suspended, quarantined              revoked (ended)
decommission  active, suspended, quarantined              decommissioned (ended)
re-enrol      any but decommissioned                      revoked (ended) + enrolment
replace TCU   the vehicle's live device, if any           revoked (ended) + enrolment
============  ==========================================  ===========================

Ending an identity revokes all its certificates in the same transaction. Closing the live
sessions of a device is the caller's job once the transaction committed (the gateway's
registry does it at once in-process; its watcher catches changes made by other processes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509
from sqlalchemy import or_, select, update
from sqlalchemy.orm.attributes import set_committed_value

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import InvalidInput, JsonValue
from fleetward.core.ids import is_id
from fleetward.devices.ca import DeviceCa
from fleetward.devices.csr import check_csr, key_algorithm
from fleetward.devices.errors import DeviceNotFound, ReplacementRefused, TransitionRefused
from fleetward.devices.models import (
    CertificateStatus,
    Device,
    DeviceCertificate,
    DeviceStatus,
    EnrolmentKind,
)
from fleetward.devices.names import DEVICE_ID_PREFIX
from fleetward.devices.provisioning import (
    DEFAULT_ENROLMENT_LIFETIME,
    EnrolmentGrant,
    IssuedCertificate,
    Provisioning,
    on_vehicle,
)
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, User
from fleetward.services import ServiceContext
from fleetward.store.races import written_if
from fleetward.vehicles.models import CaseStatus, CaseTechnician, DealerCase, Vehicle

_REASON: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
_LIVE: Final = frozenset({DeviceStatus.ACTIVE, DeviceStatus.SUSPENDED, DeviceStatus.QUARANTINED})
# Only an active device: a quarantined device is still admitted (its frames set apart), so a
# quarantine of a suspended one (a frame in flight as it was suspended) would undo the
# suspension. A suspended device's clone incident is still recorded.
QUARANTINABLE: Final = frozenset({DeviceStatus.ACTIVE})


@dataclass(frozen=True, slots=True)
class Replacement:
    revoked_device_id: str | None
    enrolment: EnrolmentGrant


def check_reason(reason: str) -> str:
    """Reasons are short stable codes ("lost", "compromised"), never free text."""
    if not isinstance(reason, str) or not _REASON.fullmatch(reason):
        raise InvalidInput(
            "a reason is a short code of lowercase letters, digits and dashes", reason="reason"
        )
    return reason


class DeviceLifecycle:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def get(self, device_id: str) -> Device:
        device = (
            await self._ctx.session.get(Device, device_id)
            if is_id(device_id, DEVICE_ID_PREFIX)
            else None
        )
        if device is None:
            raise DeviceNotFound("no such device")
        return device

    async def suspend(self, device: Device, *, reason: str, actor: Actor) -> Device:
        await self._move(
            device,
            {DeviceStatus.ACTIVE},
            DeviceStatus.SUSPENDED,
            reason,
            actor,
            EventName.DEVICE_SUSPENDED,
        )
        return device

    async def resume(self, device: Device, *, reason: str, actor: Actor) -> Device:
        # Releasing a quarantine is an admin's judgement (a false positive); a device whose
        # key was really copied is revoked and re-enrolled instead.
        await self._move(
            device,
            {DeviceStatus.SUSPENDED, DeviceStatus.QUARANTINED},
            DeviceStatus.ACTIVE,
            reason,
            actor,
            EventName.DEVICE_RESUMED,
        )
        return device

    async def quarantine(
        self, device: Device, *, reason: str, actor: Actor, details: dict[str, JsonValue]
    ) -> Device:
        await self._move(
            device,
            QUARANTINABLE,
            DeviceStatus.QUARANTINED,
            reason,
            actor,
            EventName.DEVICE_QUARANTINED,
            details,
        )
        return device

    async def revoke(self, device: Device, *, reason: str, actor: Actor) -> Device:
        await self._move(
            device, _LIVE, DeviceStatus.REVOKED, reason, actor, EventName.DEVICE_REVOKED
        )
        return device

    async def decommission(self, device: Device, *, reason: str, actor: Actor) -> Device:
        await self._move(
            device,
            _LIVE,
            DeviceStatus.DECOMMISSIONED,
            reason,
            actor,
            EventName.DEVICE_DECOMMISSIONED,
        )
        return device

    async def rotate(
        self, device: Device, csr_pem: str, ca: DeviceCa, *, actor: Actor
    ) -> IssuedCertificate:
        """A new certificate for a new key of the same device, pending until first used."""
        self._require(device, {DeviceStatus.ACTIVE})
        checked = check_csr(csr_pem, device_id=device.id, vehicle_id=device.vehicle_id)
        provisioning = Provisioning(self._ctx)
        await provisioning.refuse_reused_key(checked)
        # Still active at the write, and held so until this commits: a revocation committed
        # since the read would never see (nor revoke, nor list) the certificate issued here.
        await self._write_status(device, DeviceStatus.ACTIVE, status=DeviceStatus.ACTIVE)
        now = self._ctx.clock.now()
        # A rotation that was never completed is superseded: only the newest stays pending.
        # Only while it is still pending: a handshake that used it since this read (its first
        # use, which activates it and revokes the old one) made it the device's certificate.
        for stale in await self._certificates(device, {CertificateStatus.PENDING}):
            await written_if(
                self._ctx.session,
                stale,
                DeviceCertificate.status == CertificateStatus.PENDING,
                status=CertificateStatus.REVOKED,
                revoked_at=now,
                revoked_reason="rotation-superseded",
            )
        issued = await provisioning.issue(device, checked, ca, status=CertificateStatus.PENDING)
        await self._audit(
            EventName.DEVICE_ROTATION_STARTED,
            device,
            actor,
            None,
            {"serial": issued.serial, "key_algorithm": checked.algorithm.value},
        )
        return issued

    async def complete_rotation(
        self, device: Device, certificate: DeviceCertificate, *, actor: Actor
    ) -> list[str]:
        """First use of a pending certificate: activate it, revoke the ones it replaces.
        Returns the serials revoked."""
        now = self._ctx.clock.now()
        # Only while it is still pending: a revocation (of it, or of the whole device) that
        # committed after the handshake read it must never be undone by its first use.
        activated = await self._ctx.session.execute(
            update(DeviceCertificate)
            .where(
                DeviceCertificate.id == certificate.id,
                DeviceCertificate.status == CertificateStatus.PENDING,
            )
            .values(status=CertificateStatus.ACTIVE)
            .execution_options(synchronize_session=False)
        )
        if activated.rowcount != 1:  # type: ignore[attr-defined]
            raise TransitionRefused(
                "the rotated certificate is no longer pending", reason="certificate-changed"
            )
        set_committed_value(certificate, "status", CertificateStatus.ACTIVE)
        # The identity now holds this key: a rotation may change its type (Ed25519, P-256).
        algorithm = key_algorithm(x509.load_der_x509_certificate(certificate.der).public_key())
        if algorithm is not None:
            device.key_algorithm = algorithm
        replaced = [
            old
            for old in await self._certificates(device, {CertificateStatus.ACTIVE})
            if old.id != certificate.id
        ]
        for old in replaced:
            _revoke_certificate(old, now, "rotated")
        serials: list[JsonValue] = [old.serial for old in replaced]
        await self._audit(
            EventName.DEVICE_ROTATION_COMPLETED,
            device,
            actor,
            None,
            {"serial": certificate.serial, "revoked": serials},
        )
        return [old.serial for old in replaced]

    async def re_enrol(
        self,
        device: Device,
        *,
        reason: str,
        actor: Actor,
        lifetime: timedelta = DEFAULT_ENROLMENT_LIFETIME,
    ) -> EnrolmentGrant:
        """End this identity (if it is still live) and enrol a fresh one for its vehicle."""
        check_reason(reason)
        if device.status is DeviceStatus.DECOMMISSIONED:
            raise TransitionRefused(
                "a decommissioned device is not re-enrolled", reason=device.status.value
            )
        if device.status in _LIVE:
            await self._end(device, DeviceStatus.REVOKED, reason, actor, EventName.DEVICE_REVOKED)
        vehicle = await self._vehicle(device)
        grant = await Provisioning(self._ctx).create_enrolment(
            vehicle,
            actor=actor,
            kind=EnrolmentKind.RE_ENROLMENT,
            lifetime=lifetime,
            replaces=device,
        )
        await self._audit(
            EventName.DEVICE_REENROLMENT_STARTED,
            device,
            actor,
            reason,
            {"enrolment": grant.enrolment_id, "new_device": grant.device_id},
        )
        return grant

    async def replace_tcu(
        self,
        case: DealerCase,
        technician: User,
        *,
        actor: Actor,
        lifetime: timedelta = DEFAULT_ENROLMENT_LIFETIME,
    ) -> Replacement:
        """Under an open dealer case with ``technician`` assigned: revoke the vehicle's live
        device and enrol its replacement, in this one transaction."""
        await self._require_case(case, technician)
        vehicle = await self._ctx.session.get(Vehicle, case.vehicle_id)
        if vehicle is None:
            raise ReplacementRefused("the case names no vehicle", reason="case-not-open")
        provisioning = Provisioning(self._ctx)
        old = await provisioning.live_device(vehicle.id)
        if old is not None:
            await self._end(
                old, DeviceStatus.REVOKED, "tcu-replaced", actor, EventName.DEVICE_REVOKED
            )
        grant = await provisioning.create_enrolment(
            vehicle,
            actor=actor,
            kind=EnrolmentKind.REPLACEMENT,
            lifetime=lifetime,
            replaces=old,
            case=case,
        )
        self._ctx.audit.record(
            self._ctx.session,
            EventName.DEVICE_TCU_REPLACED,
            actor=actor,
            target=Target("vehicle", vehicle.id, vehicle.tenant_id),
            details={
                "case": case.id,
                "dealer": case.dealer_tenant_id,
                "revoked_device": old.id if old else None,
                "new_device": grant.device_id,
                "enrolment": grant.enrolment_id,
            },
        )
        await self._ctx.session.flush()
        return Replacement(old.id if old else None, grant)

    # ------------------------------------------------------------------ internals

    async def _require_case(self, case: DealerCase, technician: User) -> None:
        if case.status is not CaseStatus.OPEN:
            raise ReplacementRefused("the dealer case is not open", reason="case-not-open")
        now = self._ctx.clock.now()
        assigned = await self._ctx.session.scalar(
            select(CaseTechnician.id).where(
                CaseTechnician.case_id == case.id,
                CaseTechnician.user_id == technician.id,
                CaseTechnician.valid_from <= now,
                or_(CaseTechnician.valid_until.is_(None), CaseTechnician.valid_until > now),
            )
        )
        if assigned is None:
            raise ReplacementRefused(
                "the technician is not assigned to this case", reason="not-assigned"
            )
        directory = Directory(self._ctx)
        dealer = await directory.tenant_by_id(case.dealer_tenant_id)
        if Role.DEALER_TECHNICIAN not in await directory.active_roles(technician, dealer):
            raise ReplacementRefused(
                "not a technician of the case's dealer", reason="not-technician"
            )

    def _require(
        self, device: Device, allowed: set[DeviceStatus] | frozenset[DeviceStatus]
    ) -> None:
        if device.status not in allowed:
            raise TransitionRefused(
                f"not allowed while the device is {device.status.value}",
                reason=device.status.value,
            )

    async def _move(
        self,
        device: Device,
        allowed: set[DeviceStatus] | frozenset[DeviceStatus],
        target: DeviceStatus,
        reason: str,
        actor: Actor,
        event: EventName,
        details: dict[str, JsonValue] | None = None,
    ) -> None:
        check_reason(reason)
        self._require(device, allowed)
        if target in (DeviceStatus.REVOKED, DeviceStatus.DECOMMISSIONED):
            await self._end(device, target, reason, actor, event)
            return
        before = device.status
        await self._write_status(
            device,
            before,
            status=target,
            status_changed_at=self._ctx.clock.now(),
            status_reason=reason,
        )
        await self._audit(event, device, actor, reason, {"from": before.value, **(details or {})})

    async def _end(
        self, device: Device, target: DeviceStatus, reason: str, actor: Actor, event: EventName
    ) -> None:
        now = self._ctx.clock.now()
        before = device.status
        await self._write_status(
            device, before, status=target, status_changed_at=now, status_reason=reason, ended_at=now
        )
        revoked: list[JsonValue] = []
        for certificate in await self._certificates(
            device, {CertificateStatus.ACTIVE, CertificateStatus.PENDING}
        ):
            _revoke_certificate(certificate, now, f"device-{target.value}")
            revoked.append(certificate.serial)
        await self._audit(event, device, actor, reason, {"from": before.value, "revoked": revoked})

    async def _write_status(self, device: Device, judged: DeviceStatus, **values: Any) -> None:
        """Write a move only while the device is still in the status it was judged in:
        another transaction may have moved it since this one read it, and an admin's
        revocation must never be undone by a resume, suspension or quarantine judged before
        it. Refused otherwise (the caller asks again, against the status it has now)."""
        written = await self._ctx.session.execute(
            update(Device)
            .where(Device.id == device.id, Device.status == judged)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if written.rowcount != 1:  # type: ignore[attr-defined]
            raise TransitionRefused(
                "the device changed meanwhile; ask again", reason="device-changed"
            )
        for key, value in values.items():
            set_committed_value(device, key, value)

    async def _certificates(
        self, device: Device, statuses: set[CertificateStatus]
    ) -> list[DeviceCertificate]:
        rows = await self._ctx.session.scalars(
            select(DeviceCertificate)
            .where(DeviceCertificate.device_id == device.id, DeviceCertificate.status.in_(statuses))
            .order_by(DeviceCertificate.issued_at)
        )
        return list(rows)

    async def _vehicle(self, device: Device) -> Vehicle:
        vehicle = await self._ctx.session.get(Vehicle, device.vehicle_id)
        if vehicle is None:  # a foreign key guarantees it; a missing row is a broken store
            raise DeviceNotFound("the device's vehicle is missing")
        return vehicle

    async def _audit(
        self,
        event: EventName,
        device: Device,
        actor: Actor,
        reason: str | None,
        details: dict[str, JsonValue],
    ) -> None:
        vehicle = await self._vehicle(device)
        record = self._ctx.audit.record(
            self._ctx.session,
            event,
            actor=actor,
            target=Target("device", device.id, vehicle.tenant_id),
            reason=reason,
            details={"vehicle": device.vehicle_id, **details},
        )
        on_vehicle(record, device.vehicle_id)
        await self._ctx.session.flush()


def _revoke_certificate(certificate: DeviceCertificate, now: datetime, reason: str) -> None:
    certificate.status = CertificateStatus.REVOKED
    certificate.revoked_at = now
    certificate.revoked_reason = reason
