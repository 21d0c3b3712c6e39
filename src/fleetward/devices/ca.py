"""The platform device CA: the only issuer of device certificates.

An ECDSA P-256 key and a self-signed CA certificate (``basicConstraints CA:TRUE, pathlen:0``,
so it can certify devices and nothing that certifies further). The key lives in
``<data dir>/device-ca/ca-key.pem`` as encrypted PKCS#8 (passphrase derived from the platform
data key, purpose ``fleetward:device-ca:v1``), mode 0600; the certificate beside it. Both are
created together on first use, atomically: a crash or a concurrent first start never leaves a
key without its certificate, and the loser of a race reads the winner's CA.

Every certificate it issues is a leaf (``CA:FALSE``), for client authentication only, naming
exactly one device and one vehicle (see :mod:`fleetward.devices.names`).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetward.core.clock import Clock
from fleetward.core.datakey import DataKey
from fleetward.core.keydir import create_key_directory
from fleetward.devices.names import device_subject, expected_names
from fleetward.settings import Settings

CA_PASSPHRASE_PURPOSE: Final = "fleetward:device-ca:v1"  # noqa: S105 - a KDF label, not a secret
CA_LIFETIME: Final = timedelta(days=3650)
DEVICE_CERTIFICATE_LIFETIME: Final = timedelta(days=365)
KEY_FILE: Final = "ca-key.pem"
CERTIFICATE_FILE: Final = "ca-cert.pem"

DevicePublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class DeviceCaError(Exception):
    """The CA on disk is unreadable, does not decrypt, or its key and certificate differ."""


class DeviceCa:
    """Immutable after construction: safe to share between tasks and threads."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        if certificate.public_key() != key.public_key():
            # A certificate swapped on disk would make the gateway trust another issuer.
            raise DeviceCaError("the device CA certificate does not match its key")
        self._certificate = certificate
        self._key = key

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def certificate_pem(self) -> str:
        return self._certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @classmethod
    def generate(cls, clock: Clock) -> DeviceCa:
        key = ec.generate_private_key(ec.SECP256R1())
        now = clock.now()
        # A random suffix keeps two deployments' CAs apart even to a reader of names only.
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fleetward"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"Fleetward Device CA {secrets.token_hex(4)}"
                ),
            ]
        )
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, directory: Path, passphrase: bytes) -> DeviceCa:
        key_path = directory / KEY_FILE
        if key_path.stat().st_mode & 0o077:
            raise DeviceCaError(f"{key_path} must not be readable by group or others")
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), passphrase)
            certificate = x509.load_pem_x509_certificate(
                (directory / CERTIFICATE_FILE).read_bytes()
            )
        except (ValueError, TypeError):
            raise DeviceCaError("the device CA does not load (wrong data key?)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise DeviceCaError("the device CA key is not an EC key")
        return cls(certificate, key)

    def save(self, directory: Path, passphrase: bytes) -> None:
        """Write key and certificate into a new ``directory``; fails if it exists
        (core/keydir.py)."""
        key_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
        create_key_directory(
            directory,
            {
                KEY_FILE: (key_pem, 0o600),
                CERTIFICATE_FILE: (self.certificate_pem.encode("ascii"), 0o644),
            },
        )

    @classmethod
    def load_or_create(cls, directory: Path, passphrase: bytes, clock: Clock) -> DeviceCa:
        if (directory / KEY_FILE).exists():
            return cls.load(directory, passphrase)
        ca = cls.generate(clock)
        try:
            ca.save(directory, passphrase)
        except OSError:
            if (directory / KEY_FILE).exists():
                return cls.load(directory, passphrase)  # another process created it first
            raise
        return ca

    def issue(
        self,
        public_key: DevicePublicKey,
        *,
        device_id: str,
        vehicle_id: str,
        now: datetime,
        lifetime: timedelta = DEVICE_CERTIFICATE_LIFETIME,
    ) -> x509.Certificate:
        """A leaf certificate binding ``public_key`` to one device and one vehicle."""
        not_after = min(now + lifetime, self._certificate.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(device_subject(device_id))
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(expected_names(device_id, vehicle_id)),
                critical=True,  # the subject is only a label: the SAN is the identity
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def issued(self, certificate: x509.Certificate) -> bool:
        """Whether this CA signed ``certificate`` (issuer name and signature)."""
        if certificate.issuer != self._certificate.subject:
            return False
        try:
            certificate.verify_directly_issued_by(self._certificate)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


def ca_directory(settings: Settings) -> Path:
    return settings.data_dir / "device-ca"


def load_device_ca(settings: Settings, data_key: DataKey, clock: Clock) -> DeviceCa:
    """The deployment's device CA, created on first use."""
    passphrase = data_key.derive(CA_PASSPHRASE_PURPOSE)
    return DeviceCa.load_or_create(ca_directory(settings), passphrase, clock)
