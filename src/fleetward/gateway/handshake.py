"""The device handshake: wire format, signature input, key schedule, and the server's checks.

Three binary WebSocket messages (``docs/vehicle-protocol.md`` is the normative description)::

    server -> device  CHALLENGE  challenge(32) server_x25519(32) server_id
    device -> server  RESPONSE   challenge(32) nonce(32) device_x25519(32) time_ms(8)
                                 software_version vehicle_config certificate ca_certificate
                                 signature
    server -> device  WELCOME    session_id confirmation(32) idle_timeout_s(4) max_frame(4)

Every message is ``type u8 | version u8 | field*``, each field ``length u16 BE | bytes``, with a
fixed number of fields per type and nothing after the last one. The device signs
:func:`signature_input` with its certificate's key; both sides derive the session key from an
ephemeral X25519 exchange with HKDF-SHA256 salted by the transcript hash, so the key is fresh
per session and never sent.

:class:`ServerHandshake` performs every check that needs no store (challenge, chain to the
device CA, validity, binding, proof of possession, clock skew, key exchange); the store's
checks (revocation, suspension, quarantine) follow in the gateway. The client side lives in
:mod:`fleetward.gateway.device_client` and uses the same codec.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fleetward.core.clock import Clock
from fleetward.devices.names import bound_ids

PROTOCOL_VERSION: Final = 1
SIGNATURE_CONTEXT: Final = b"fleetward-device-handshake-v1\x00"
SESSION_KEY_INFO: Final = b"fleetward-session-key-v1"
CONFIRMATION_LABEL: Final = b"fleetward-server-finished-v1"
NONCE_BYTES: Final = 32
X25519_BYTES: Final = 32
MAX_RESPONSE_BYTES: Final = 16 * 1024
MAX_CERTIFICATE_BYTES: Final = 4096
MAX_SERVER_ID_BYTES: Final = 255
MAX_SOFTWARE_VERSION_BYTES: Final = 64
MAX_VEHICLE_CONFIG_BYTES: Final = 128
_U64: Final = struct.Struct(">Q")
_U32: Final = struct.Struct(">I")
_U16: Final = struct.Struct(">H")


class MessageType(IntEnum):
    CHALLENGE = 0x01
    RESPONSE = 0x02
    WELCOME = 0x03


class CloseCode(IntEnum):
    """WebSocket close codes the gateway uses. 40xx end an established session, 44xx/45xx
    refuse a handshake. Credential problems all share 4401: the device learns that it was
    refused, not which check failed (the audit log has the reason)."""

    REVOKED = 4001  # the device or certificate was revoked, decommissioned or expired
    SUSPENDED = 4002
    SUPERSEDED = 4004  # a new session of the same device replaced a silent one
    ROTATED = 4005  # the device's new certificate was used: the old session ends
    IDLE = 4006  # nothing received within the idle timeout
    # A message to the device could not be written within the send timeout: the device does
    # not read what it is sent (its socket does not drain), so the session is given up.
    SEND_TIMEOUT = 4007
    PROTOCOL = 4400  # a malformed, unexpected or non-binary message
    UNAUTHENTICATED = 4401
    TIMEOUT = 4408  # the handshake did not complete in time
    TOO_LARGE = 4413
    CLOCK_SKEW = 4425  # the device's clock is outside the accepted window: fix it, retry
    # The device opened sessions faster than its budget (a burst, then one a minute by
    # default): nothing was recorded but the refusal; retry after the refill (gateway/churn.py).
    TOO_MANY_HANDSHAKES = 4429
    INTERNAL = 1011
    # The session cannot be taken now: the store could not record it (contention), or the
    # device already holds as many live sessions as allowed. Nothing was recorded and the
    # credentials were not judged wanting; retry with back-off (RFC 6455's 1013).
    TRY_AGAIN_LATER = 1013

    @property
    def phrase(self) -> str:
        return self.name.lower().replace("_", "-")


class HandshakeFailure(Exception):
    """A refused handshake. ``reason`` is a stable code for the audit log only; the device
    sees ``close``. ``device_id`` is set only once the certificate chained to the CA (so it
    is the platform's own statement, never attacker text)."""

    def __init__(self, reason: str, close: CloseCode, device_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close = close
        self.device_id = device_id


# --------------------------------------------------------------------------- codec


def encode(kind: MessageType, fields: Sequence[bytes]) -> bytes:
    parts = [bytes([kind, PROTOCOL_VERSION])]
    for value in fields:
        if len(value) > 0xFFFF:
            raise ValueError("a handshake field is at most 65535 bytes")
        parts.append(_U16.pack(len(value)))
        parts.append(value)
    return b"".join(parts)


def decode(data: bytes, kind: MessageType, count: int) -> list[bytes]:
    """The ``count`` fields of a ``kind`` message; ValueError for anything else."""
    if len(data) < 2 or data[0] != kind or data[1] != PROTOCOL_VERSION:
        raise ValueError("unexpected message type or version")
    fields: list[bytes] = []
    offset = 2
    for _ in range(count):
        if offset + 2 > len(data):
            raise ValueError("truncated message")
        (length,) = _U16.unpack_from(data, offset)
        offset += 2
        if offset + length > len(data):
            raise ValueError("truncated field")
        fields.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise ValueError("trailing bytes")
    return fields


def _exact(value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise ValueError("a fixed-size field has the wrong size")
    return value


def _text(value: bytes, limit: int) -> str:
    # Printable ASCII only: these strings end up in provenance records and logs.
    if not 1 <= len(value) <= limit or any(b < 0x20 or b > 0x7E for b in value):
        raise ValueError("text fields are 1..limit bytes of printable ASCII")
    return value.decode("ascii")


@dataclass(frozen=True, slots=True)
class Challenge:
    challenge: bytes
    server_public: bytes
    server_id: str

    def encode(self) -> bytes:
        return encode(
            MessageType.CHALLENGE,
            [self.challenge, self.server_public, self.server_id.encode("utf-8")],
        )

    @classmethod
    def decode(cls, data: bytes) -> Challenge:
        challenge, server_public, server_id = decode(data, MessageType.CHALLENGE, 3)
        if not 1 <= len(server_id) <= MAX_SERVER_ID_BYTES:
            raise ValueError("server id length")
        return cls(
            _exact(challenge, NONCE_BYTES),
            _exact(server_public, X25519_BYTES),
            server_id.decode("utf-8"),
        )


@dataclass(frozen=True, slots=True)
class Response:
    challenge: bytes
    device_nonce: bytes
    device_public: bytes
    device_time_ms: int
    software_version: str
    vehicle_config: str
    certificate: bytes  # DER
    ca_certificate: bytes  # DER of the platform device CA, or empty
    signature: bytes

    def encode(self) -> bytes:
        return encode(
            MessageType.RESPONSE,
            [
                self.challenge,
                self.device_nonce,
                self.device_public,
                _U64.pack(self.device_time_ms),
                self.software_version.encode("ascii"),
                self.vehicle_config.encode("ascii"),
                self.certificate,
                self.ca_certificate,
                self.signature,
            ],
        )

    @classmethod
    def decode(cls, data: bytes) -> Response:
        (
            challenge,
            nonce,
            public,
            time_ms,
            software,
            config,
            certificate,
            ca_certificate,
            signature,
        ) = decode(data, MessageType.RESPONSE, 9)
        if not 1 <= len(certificate) <= MAX_CERTIFICATE_BYTES:
            raise ValueError("certificate length")
        if len(ca_certificate) > MAX_CERTIFICATE_BYTES or not 1 <= len(signature) <= 128:
            raise ValueError("chain or signature length")
        return cls(
            challenge=_exact(challenge, NONCE_BYTES),
            device_nonce=_exact(nonce, NONCE_BYTES),
            device_public=_exact(public, X25519_BYTES),
            device_time_ms=_U64.unpack(_exact(time_ms, 8))[0],
            software_version=_text(software, MAX_SOFTWARE_VERSION_BYTES),
            vehicle_config=_text(config, MAX_VEHICLE_CONFIG_BYTES),
            certificate=certificate,
            ca_certificate=ca_certificate,
            signature=signature,
        )


@dataclass(frozen=True, slots=True)
class Welcome:
    session_id: str
    confirmation: bytes
    idle_timeout_s: int
    max_frame_bytes: int

    def encode(self) -> bytes:
        return encode(
            MessageType.WELCOME,
            [
                self.session_id.encode("ascii"),
                self.confirmation,
                _U32.pack(self.idle_timeout_s),
                _U32.pack(self.max_frame_bytes),
            ],
        )

    @classmethod
    def decode(cls, data: bytes) -> Welcome:
        session_id, confirmation, idle, max_frame = decode(data, MessageType.WELCOME, 4)
        return cls(
            _text(session_id, 64),
            _exact(confirmation, 32),
            _U32.unpack(_exact(idle, 4))[0],
            _U32.unpack(_exact(max_frame, 4))[0],
        )


# --------------------------------------------------------------------------- cryptography


def _field(value: bytes) -> bytes:
    return _U16.pack(len(value)) + value


def signature_input(challenge: Challenge, response: Response) -> bytes:
    """The bytes the device signs (the ``signature`` field itself excluded)."""
    return b"".join(
        [
            SIGNATURE_CONTEXT,
            _field(challenge.server_id.encode("utf-8")),
            challenge.challenge,
            challenge.server_public,
            response.device_nonce,
            response.device_public,
            _U64.pack(response.device_time_ms),
            _field(response.software_version.encode("ascii")),
            _field(response.vehicle_config.encode("ascii")),
            hashlib.sha256(response.certificate).digest(),
        ]
    )


def transcript_hash(challenge_message: bytes, response_message: bytes) -> bytes:
    return hashlib.sha256(challenge_message + response_message).digest()


@dataclass(frozen=True, slots=True)
class SessionKeys:
    session_key: bytes = field(repr=False)
    confirmation_key: bytes = field(repr=False)


def derive_keys(shared_secret: bytes, transcript: bytes) -> SessionKeys:
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=transcript, info=SESSION_KEY_INFO).derive(
        shared_secret
    )
    return SessionKeys(okm[:32], okm[32:])


def confirmation(keys: SessionKeys, transcript: bytes) -> bytes:
    return hmac.new(keys.confirmation_key, CONFIRMATION_LABEL + transcript, "sha256").digest()


def verify_signature(public_key: object, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
            return True
        if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
            public_key.curve, ec.SECP256R1
        ):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False


def issued_by(ca_certificate: x509.Certificate, certificate: x509.Certificate) -> bool:
    try:
        # Inside the try: the library parses a loaded certificate's issuer only when it is
        # read, and an issuer that does not parse (ValueError) names no CA of ours.
        if certificate.issuer != ca_certificate.subject:
            return False
        certificate.verify_directly_issued_by(ca_certificate)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


# --------------------------------------------------------------------------- server side


@dataclass(frozen=True, slots=True)
class ProvenDevice:
    """What a verified RESPONSE establishes: a holder of the key of a certificate issued by
    the device CA, valid now, naming one device and one vehicle, answering this challenge."""

    device_id: str
    vehicle_id: str
    certificate_fingerprint: str
    certificate_serial: str
    software_version: str
    vehicle_config: str
    device_time: datetime
    transcript: bytes
    keys: SessionKeys
    # The certificate's public key (DER SubjectPublicKeyInfo): it verifies the device's
    # signed command results for the whole session.
    public_key_der: bytes = b""


class ServerHandshake:
    """One connection's handshake. Not reusable: the challenge and the ephemeral key are
    made for this connection and forgotten with it."""

    def __init__(
        self, server_id: str, ca_certificate: x509.Certificate, clock: Clock, skew: timedelta
    ) -> None:
        self._ca = ca_certificate
        self._ca_der = ca_certificate.public_bytes(serialization.Encoding.DER)
        self._clock = clock
        self._skew = skew
        self._ephemeral = x25519.X25519PrivateKey.generate()
        self.challenge = Challenge(
            challenge=secrets.token_bytes(NONCE_BYTES),
            server_public=self._ephemeral.public_key().public_bytes_raw(),
            server_id=server_id,
        )
        self.challenge_message = self.challenge.encode()

    def verify(self, message: bytes) -> ProvenDevice:
        """Every check that needs no store, in an order where nothing costly or
        store-touching happens before the cheap checks passed."""
        if len(message) > MAX_RESPONSE_BYTES:
            raise HandshakeFailure("too-large", CloseCode.TOO_LARGE)
        try:
            response = Response.decode(message)
        except (ValueError, UnicodeError, struct.error):
            raise HandshakeFailure("malformed", CloseCode.PROTOCOL) from None
        if not hmac.compare_digest(response.challenge, self.challenge.challenge):
            # An answer to another connection's challenge: a replayed handshake.
            raise HandshakeFailure("challenge-mismatch", CloseCode.UNAUTHENTICATED)
        certificate = self._chained(response)
        ids = self._bound(certificate)
        device_id, vehicle_id = ids
        if not verify_signature(
            certificate.public_key(),
            response.signature,
            signature_input(self.challenge, response),
        ):
            raise HandshakeFailure("signature", CloseCode.UNAUTHENTICATED, device_id)
        now = self._clock.now()
        # Compared in integer milliseconds first: any u64 is a valid input, and only an
        # in-window time is turned into a datetime.
        if abs(response.device_time_ms - epoch_ms(now)) > self._skew / timedelta(milliseconds=1):
            raise HandshakeFailure("clock-skew", CloseCode.CLOCK_SKEW, device_id)
        device_time = datetime.fromtimestamp(response.device_time_ms / 1000, UTC)
        try:
            shared = self._ephemeral.exchange(
                x25519.X25519PublicKey.from_public_bytes(response.device_public)
            )
        except ValueError:  # a low-order point gives an all-zero secret: refused
            raise HandshakeFailure("key-exchange", CloseCode.PROTOCOL, device_id) from None
        transcript = transcript_hash(self.challenge_message, message)
        return ProvenDevice(
            device_id=device_id,
            vehicle_id=vehicle_id,
            certificate_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
            certificate_serial=format(certificate.serial_number, "x"),
            software_version=response.software_version,
            vehicle_config=response.vehicle_config,
            device_time=device_time,
            transcript=transcript,
            keys=derive_keys(shared, transcript),
            public_key_der=certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def welcome(
        self, proven: ProvenDevice, session_id: str, idle_timeout: timedelta, max_frame: int
    ) -> bytes:
        return Welcome(
            session_id=session_id,
            confirmation=confirmation(proven.keys, proven.transcript),
            idle_timeout_s=int(idle_timeout.total_seconds()),
            max_frame_bytes=max_frame,
        ).encode()

    def _chained(self, response: Response) -> x509.Certificate:
        try:
            certificate = x509.load_der_x509_certificate(response.certificate)
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
            raise HandshakeFailure("certificate-malformed", CloseCode.UNAUTHENTICATED) from None
        # The only chain there is: our CA directly. A second certificate, if sent, must be
        # the CA itself; anything else is another issuer's chain.
        if response.ca_certificate and not hmac.compare_digest(
            response.ca_certificate, self._ca_der
        ):
            raise HandshakeFailure("unknown-ca", CloseCode.UNAUTHENTICATED)
        if not issued_by(self._ca, certificate):
            raise HandshakeFailure("unknown-ca", CloseCode.UNAUTHENTICATED)
        return certificate

    def _bound(self, certificate: x509.Certificate) -> tuple[str, str]:
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except (x509.ExtensionNotFound, ValueError, x509.DuplicateExtension):
            raise HandshakeFailure("binding", CloseCode.UNAUTHENTICATED) from None
        ids = bound_ids(names.value)
        if ids is None or constraints.value.ca:
            raise HandshakeFailure("binding", CloseCode.UNAUTHENTICATED)
        now = self._clock.now()
        if now < certificate.not_valid_before_utc:
            raise HandshakeFailure("certificate-not-yet-valid", CloseCode.UNAUTHENTICATED, ids[0])
        if now > certificate.not_valid_after_utc:
            raise HandshakeFailure("certificate-expired", CloseCode.UNAUTHENTICATED, ids[0])
        return ids
