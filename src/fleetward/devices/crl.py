"""Certificate revocation lists from the platform device CA, for relying parties that check
revocation themselves (the MQTT broker's ``crlfile``).

The store is the source of truth: a CRL lists every certificate the store marks revoked that
has not yet expired (an expired certificate fails validity anyway, so the list stays
bounded). It is signed with the device CA key, loaded from the same encrypted file as
:mod:`fleetward.devices.ca` (that module's :class:`DeviceCa` never hands its key out), and it
has a short ``nextUpdate``: a relying party refuses every device once a CRL is stale, so a
publisher that stops publishing fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.core.datakey import DataKey
from fleetward.devices.ca import (
    CA_PASSPHRASE_PURPOSE,
    KEY_FILE,
    DeviceCa,
    DeviceCaError,
    ca_directory,
)
from fleetward.devices.models import CertificateStatus, DeviceCertificate
from fleetward.settings import Settings

# A CRL is re-signed well before this; a relying party holding an older one refuses all.
DEFAULT_CRL_LIFETIME: Final = timedelta(days=7)

_REASONS: Final = {
    "rotated": x509.ReasonFlags.superseded,
    "rotation-superseded": x509.ReasonFlags.superseded,
    "device-decommissioned": x509.ReasonFlags.cessation_of_operation,
}


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    serial: str  # hex, as stored
    revoked_at: datetime
    reason: str | None


class CrlSigner:
    """Signs CRLs for the device CA. Immutable; safe to share."""

    def __init__(self, ca_certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        if ca_certificate.public_key() != key.public_key():
            raise DeviceCaError("the device CA certificate does not match its key")
        self._certificate = ca_certificate
        self._key = key

    @classmethod
    def load(cls, settings: Settings, data_key: DataKey) -> CrlSigner:
        """The deployment's device CA key (which must already exist), to sign CRLs."""
        directory = ca_directory(settings)
        passphrase = data_key.derive(CA_PASSPHRASE_PURPOSE)
        ca = DeviceCa.load(directory, passphrase)  # the permission and match checks
        try:
            key = serialization.load_pem_private_key(
                (directory / KEY_FILE).read_bytes(), passphrase
            )
        except (ValueError, TypeError):
            raise DeviceCaError("the device CA does not load (wrong data key?)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise DeviceCaError("the device CA key is not an EC key")
        return cls(ca.certificate, key)

    @property
    def ca_certificate(self) -> x509.Certificate:
        return self._certificate

    def sign(
        self,
        revoked: Sequence[RevokedEntry],
        *,
        now: datetime,
        lifetime: timedelta = DEFAULT_CRL_LIFETIME,
    ) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._certificate.subject)
            .last_update(now)
            .next_update(now + lifetime)
            # Increases with time: a relying party can tell the newer of two CRLs.
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        for entry in revoked:
            item = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry.serial, 16))
                .revocation_date(min(entry.revoked_at, now))
            )
            reason = _REASONS.get(entry.reason or "")
            if reason is not None:
                item = item.add_extension(x509.CRLReason(reason), critical=False)
            builder = builder.add_revoked_certificate(item.build())
        return builder.sign(self._key, hashes.SHA256())


async def revoked_entries(session: AsyncSession, now: datetime) -> list[RevokedEntry]:
    """Every revoked device certificate still within its validity, oldest first."""
    rows = await session.execute(
        select(
            DeviceCertificate.serial,
            DeviceCertificate.revoked_at,
            DeviceCertificate.revoked_reason,
        )
        .where(
            DeviceCertificate.status == CertificateStatus.REVOKED,
            DeviceCertificate.not_after >= now,
        )
        .order_by(DeviceCertificate.serial)
    )
    return [RevokedEntry(serial, revoked_at or now, reason) for serial, revoked_at, reason in rows]


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)
