"""Request bodies and response views of the device routes (``fleetward.api.devices``).

Bodies forbid unknown fields (a device never names its own identity or status); views carry
ids, statuses and certificates, never a key or a token digest.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import select

from fleetward.api.bodies import StrictBody
from fleetward.devices.models import Device, DeviceCertificate, DeviceIncident
from fleetward.devices.provisioning import EnrolmentGrant, IssuedCertificate
from fleetward.services import ServiceContext


class ReasonBody(StrictBody):
    reason: str = Field(min_length=1, max_length=48)


class EnrolmentBody(StrictBody):
    hours: int = Field(default=24, ge=1, le=168)


class ReEnrolBody(StrictBody):
    reason: str = Field(min_length=1, max_length=48)
    hours: int = Field(default=24, ge=1, le=168)


class CsrBody(StrictBody):
    csr: str = Field(min_length=1, max_length=8192)


class EnrolBody(StrictBody):
    token: str = Field(min_length=1, max_length=128)
    csr: str = Field(min_length=1, max_length=8192)


class EnrolmentView(BaseModel):
    """Shown once: only the token's digest is stored."""

    token: str
    enrolment_id: str
    kind: str
    device_id: str
    vehicle_id: str
    expires_at: datetime

    @classmethod
    def of(cls, grant: EnrolmentGrant) -> EnrolmentView:
        return cls(
            token=grant.token,
            enrolment_id=grant.enrolment_id,
            kind=grant.kind.value,
            device_id=grant.device_id,
            vehicle_id=grant.vehicle_id,
            expires_at=grant.expires_at,
        )


class ReplacementView(EnrolmentView):
    revoked_device_id: str | None


class CertificateView(BaseModel):
    device_id: str
    vehicle_id: str
    serial: str
    status: str
    certificate: str
    ca_certificate: str
    not_before: datetime
    not_after: datetime
    # The command service's public key (PEM, Ed25519) and its id: the TCU verifies every
    # command envelope with it (docs/vehicle-protocol.md 6). Given at enrolment, over the
    # same channel as the certificate, never inside a device session.
    command_key: str | None = None
    command_key_id: str | None = None

    @classmethod
    def of(
        cls, issued: IssuedCertificate, command_key: tuple[str, str] | None = None
    ) -> CertificateView:
        """``command_key``: (key id, public key PEM) for an enrolment answer."""
        return cls(
            command_key_id=command_key[0] if command_key else None,
            command_key=command_key[1] if command_key else None,
            device_id=issued.device_id,
            vehicle_id=issued.vehicle_id,
            serial=issued.serial,
            status=issued.status.value,
            certificate=issued.certificate_pem,
            ca_certificate=issued.ca_certificate_pem,
            not_before=issued.not_before,
            not_after=issued.not_after,
        )


class CertificateSummary(BaseModel):
    serial: str
    status: str
    not_before: datetime
    not_after: datetime
    revoked_reason: str | None


class IncidentSummary(BaseModel):
    id: str
    kind: str
    detected_at: datetime
    peer: str
    previous_peer: str | None


class DeviceView(BaseModel):
    id: str
    vehicle_id: str
    status: str
    status_reason: str | None
    key_algorithm: str
    created_at: datetime
    ended_at: datetime | None
    last_seen_at: datetime | None
    last_peer: str | None
    live_sessions: int
    certificates: list[CertificateSummary]
    incidents: list[IncidentSummary]


async def device_view(ctx: ServiceContext, device: Device, *, live_sessions: int) -> DeviceView:
    """A device as an admin sees it: status, certificates, the latest clone incidents."""
    certificates = await ctx.session.scalars(
        select(DeviceCertificate)
        .where(DeviceCertificate.device_id == device.id)
        .order_by(DeviceCertificate.issued_at)
    )
    incidents = await ctx.session.scalars(
        select(DeviceIncident)
        .where(DeviceIncident.device_id == device.id)
        .order_by(DeviceIncident.detected_at.desc())
        .limit(20)
    )
    return DeviceView(
        id=device.id,
        vehicle_id=device.vehicle_id,
        status=device.status.value,
        status_reason=device.status_reason,
        key_algorithm=device.key_algorithm.value,
        created_at=device.created_at,
        ended_at=device.ended_at,
        last_seen_at=device.last_seen_at,
        last_peer=device.last_peer,
        live_sessions=live_sessions,
        certificates=[
            CertificateSummary(
                serial=c.serial,
                status=c.status.value,
                not_before=c.not_before,
                not_after=c.not_after,
                revoked_reason=c.revoked_reason,
            )
            for c in certificates
        ],
        incidents=[
            IncidentSummary(
                id=i.id,
                kind=i.kind.value,
                detected_at=i.detected_at,
                peer=i.peer,
                previous_peer=i.previous_peer,
            )
            for i in incidents
        ],
    )
