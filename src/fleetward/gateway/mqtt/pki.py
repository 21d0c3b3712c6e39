"""The service CA: the issuer of the broker's server certificate and of the gateway's own
client certificate, kept apart from the platform device CA.

Why a separate CA: the broker grants the gateway's identity read access to every device's
telemetry. If that identity could chain to the device CA, whoever obtained the device CA key
could mint it. The broker therefore serves devices and services on two listeners, each
trusting only its own CA (``docs/mqtt.md``). In production the operator's PKI may play this
role instead; :class:`ServiceCa` is what ``make run`` and the tests use, and what an operator
without a PKI can use through the same files.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetward.core.clock import Clock

SERVICE_CA_LIFETIME: Final = timedelta(days=3650)
SERVICE_CERTIFICATE_LIFETIME: Final = timedelta(days=365)


@dataclass(frozen=True, slots=True)
class IssuedPair:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    def write(self, certificate_path: Path, key_path: Path) -> None:
        """PEM files; the key unencrypted (read by a service at start) and mode 0600."""
        write_pem(certificate_path, pem(self.certificate), 0o644)
        key = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_pem(key_path, key, 0o600)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_pem(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` atomically (readers never see half a file), created with ``mode``."""
    staging = path.with_name(f".{path.name}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    staging.replace(path)


class ServiceCa:
    """An ECDSA P-256 CA for service identities. Immutable; safe to share."""

    def __init__(self, pair: IssuedPair, clock: Clock) -> None:
        self._pair = pair
        self._clock = clock

    @property
    def certificate(self) -> x509.Certificate:
        return self._pair.certificate

    @classmethod
    def generate(cls, clock: Clock, name: str = "Fleetward Service CA") -> ServiceCa:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fleetward"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        now = clock.now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + SERVICE_CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signing=False), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(IssuedPair(certificate, key), clock)

    def client(self, common_name: str) -> IssuedPair:
        """A client certificate whose CN is the broker username (``use_identity_as_username``)."""
        return self._issue(
            common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName(common_name)]
        )

    def server(self, hosts: list[str]) -> IssuedPair:
        """The broker's server certificate for ``hosts`` (names or IP addresses)."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, names)

    def _issue(
        self, common_name: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]
    ) -> IssuedPair:
        key = ec.generate_private_key(ec.SECP256R1())
        now = self._clock.now()
        ca = self._pair
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(
                min(now + SERVICE_CERTIFICATE_LIFETIME, ca.certificate.not_valid_after_utc)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signing=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                critical=False,
            )
            .sign(ca.key, hashes.SHA256())
        )
        return IssuedPair(certificate, key)


def _key_usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signing,
        crl_sign=not signing,
        encipher_only=False,
        decipher_only=False,
    )
