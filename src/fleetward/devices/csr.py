"""Checks a device's certificate signing request before the CA sees its key.

The platform decides what a device certificate says; a CSR may only ask for exactly that:
subject ``CN=<device id>``, a SAN with the device URI and the vehicle URI the enrolment names
and nothing else, an Ed25519 or P-256 key never certified before, and a valid self-signature
(proof that the requester holds the key). A request to be a CA is refused by name, so a device
can never obtain a certificate that certifies others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtensionOID, NameOID

from fleetward.devices.ca import DevicePublicKey
from fleetward.devices.errors import CsrRefused
from fleetward.devices.models import KeyAlgorithm
from fleetward.devices.names import bound_ids

MAX_CSR_BYTES: Final = 8192
# PKCS#9 extensionRequest: the only CSR attribute a device may send.
_EXTENSION_REQUEST: Final = x509.ObjectIdentifier("1.2.840.113549.1.9.14")
_UNPARSEABLE: Final = (
    ValueError,
    UnicodeError,
    TypeError,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,  # the library's own exception for a version it does not define
)
_ALLOWED_EXTENSIONS: Final = frozenset(
    {ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.BASIC_CONSTRAINTS}
)


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    """A CSR that passed every check: the key it proves possession of, and its digest."""

    public_key: DevicePublicKey
    algorithm: KeyAlgorithm
    public_key_sha256: str


def public_key_digest(key: DevicePublicKey) -> str:
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def key_algorithm(key: object) -> KeyAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return KeyAlgorithm.ED25519
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return KeyAlgorithm.P256
    return None


def check_csr(pem: str, *, device_id: str, vehicle_id: str) -> CheckedRequest:
    """The checked request, or :class:`CsrRefused` naming the first rule it breaks."""
    if not isinstance(pem, str) or not pem or len(pem) > MAX_CSR_BYTES:
        raise CsrRefused("the CSR is missing or too large", reason="malformed")
    try:
        csr = x509.load_pem_x509_csr(pem.encode("ascii"))
        extensions = list(csr.extensions)
        attributes = [attribute.oid for attribute in csr.attributes]
        subject = list(csr.subject)
        key = csr.public_key()
        signature_valid = csr.is_signature_valid
    except _UNPARSEABLE:
        raise CsrRefused("the CSR does not parse", reason="malformed") from None
    except UnsupportedAlgorithm:
        # A key the library cannot load (an unknown algorithm or curve): not a key we certify.
        raise CsrRefused("device keys are Ed25519 or ECDSA P-256", reason="key-type") from None
    if not signature_valid:
        raise CsrRefused("the CSR's signature does not verify", reason="signature")
    algorithm = key_algorithm(key)
    if algorithm is None or not isinstance(
        key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey)
    ):
        raise CsrRefused("device keys are Ed25519 or ECDSA P-256", reason="key-type")
    for extension in extensions:
        # Checked before the names: a CA request is refused as such whatever it names.
        if isinstance(extension.value, x509.BasicConstraints) and extension.value.ca:
            raise CsrRefused("a device cannot be a certificate authority", reason="ca-request")
    if any(extension.oid not in _ALLOWED_EXTENSIONS for extension in extensions):
        raise CsrRefused("the CSR asks for an extension the platform sets", reason="extension")
    if any(oid != _EXTENSION_REQUEST for oid in attributes):
        raise CsrRefused("the CSR carries an attribute that is not allowed", reason="attribute")
    if len(subject) != 1 or subject[0].oid != NameOID.COMMON_NAME or subject[0].value != device_id:
        raise CsrRefused("the subject must be exactly CN=<device id>", reason="subject")
    names = [e.value for e in extensions if isinstance(e.value, x509.SubjectAlternativeName)]
    if len(names) != 1 or bound_ids(names[0]) != (device_id, vehicle_id):
        raise CsrRefused("the SAN must name exactly this device and this vehicle", reason="san")
    return CheckedRequest(key, algorithm, public_key_digest(key))
