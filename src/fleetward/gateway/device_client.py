"""The device side of the gateway protocol: key, CSR, enrolment, handshake and frames.

What the simulator and the tests use to be a vehicle, and a reference implementation that a
TCU team can read next to ``docs/vehicle-protocol.md``. It speaks only the public protocol:
nothing here reaches into the server.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from fleetward.devices.models import KeyAlgorithm
from fleetward.devices.names import device_subject, expected_names
from fleetward.gateway.device_inbox import DeviceInbox
from fleetward.gateway.handshake import (
    NONCE_BYTES,
    Challenge,
    Response,
    SessionKeys,
    Welcome,
    confirmation,
    derive_keys,
    epoch_ms,
    signature_input,
    transcript_hash,
)

ENROL_PATH: Final = "/gateway/v1/enrol"
WEBSOCKET_PATH: Final = "/gateway/v1/ws"

DevicePrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class HandshakeRefused(Exception):
    """The server closed the connection during the handshake (``code`` is its close code), or
    the server failed the device's own checks (``code`` is None)."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(f"{reason} ({code})" if code is not None else reason)
        self.reason = reason
        self.code = code


class SessionClosed(Exception):
    """The established session ended; ``code`` is the close code the server sent."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"session closed: {code} {reason}")
        self.code = code
        self.reason = reason


class EnrolmentFailed(Exception):
    def __init__(self, status: int, problem: str) -> None:
        super().__init__(f"enrolment refused: {status} {problem}")
        self.status = status
        self.problem = problem


def _command_key(key_id: str, pem: str) -> tuple[str, ed25519.Ed25519PublicKey]:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("the command service key is Ed25519")
    return key_id, key


def generate_key(algorithm: KeyAlgorithm = KeyAlgorithm.ED25519) -> DevicePrivateKey:
    if algorithm is KeyAlgorithm.P256:
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def build_csr(key: DevicePrivateKey, *, device_id: str, vehicle_id: str) -> str:
    """The CSR the platform expects: CN=<device id>, SAN = the device and vehicle URNs."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(device_subject(device_id))
        .add_extension(
            x509.SubjectAlternativeName(expected_names(device_id, vehicle_id)), critical=False
        )
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode("ascii")


def sign(key: DevicePrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    device_id: str
    vehicle_id: str
    key: DevicePrivateKey = field(repr=False)
    certificate: x509.Certificate
    ca_certificate: x509.Certificate | None = None
    # The command service keys this TCU trusts, by key id (given at enrolment).
    command_keys: Mapping[str, ed25519.Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def from_pem(
        cls,
        key: DevicePrivateKey,
        certificate_pem: str,
        ca_certificate_pem: str | None = None,
        *,
        device_id: str,
        vehicle_id: str,
        command_key: tuple[str, str] | None = None,
    ) -> DeviceCredentials:
        """``command_key``: (key id, PEM of the command service's Ed25519 public key)."""
        return cls(
            device_id,
            vehicle_id,
            key,
            x509.load_pem_x509_certificate(certificate_pem.encode("ascii")),
            x509.load_pem_x509_certificate(ca_certificate_pem.encode("ascii"))
            if ca_certificate_pem
            else None,
            command_keys=dict([_command_key(*command_key)]) if command_key else {},
        )

    @property
    def command_key_pems(self) -> dict[str, str]:
        return {
            key_id: key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode("ascii")
            for key_id, key in self.command_keys.items()
        }

    def with_certificate(self, key: DevicePrivateKey, certificate_pem: str) -> DeviceCredentials:
        """The same device with a rotated key and certificate."""
        return replace(
            self, key=key, certificate=x509.load_pem_x509_certificate(certificate_pem.encode())
        )

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def ca_certificate_der(self) -> bytes:
        if self.ca_certificate is None:
            return b""
        return self.ca_certificate.public_bytes(serialization.Encoding.DER)


async def enrol(
    http: httpx.AsyncClient,
    token: str,
    key: DevicePrivateKey,
    *,
    device_id: str,
    vehicle_id: str,
) -> DeviceCredentials:
    """Redeem an enrolment token for a certificate of ``key`` (``http`` has the base URL)."""
    csr = build_csr(key, device_id=device_id, vehicle_id=vehicle_id)
    response = await http.post(ENROL_PATH, json={"token": token, "csr": csr})
    if response.status_code != 200:
        problem = response.json().get("type", "") if response.content else ""
        raise EnrolmentFailed(response.status_code, str(problem))
    body = response.json()
    command_key = body.get("command_key")
    command_key_id = body.get("command_key_id")
    return DeviceCredentials.from_pem(
        key,
        body["certificate"],
        body["ca_certificate"],
        device_id=body["device_id"],
        vehicle_id=body["vehicle_id"],
        command_key=(command_key_id, command_key) if command_key and command_key_id else None,
    )


class DeviceHandshake:
    """The device's half of one handshake: answer a CHALLENGE, check the WELCOME."""

    def __init__(
        self,
        credentials: DeviceCredentials,
        *,
        server_id: str,
        software_version: str,
        vehicle_config: str,
    ) -> None:
        self._credentials = credentials
        self._server_id = server_id
        self._software_version = software_version
        self._vehicle_config = vehicle_config
        self._ephemeral = x25519.X25519PrivateKey.generate()
        self._transcript: bytes | None = None
        self._shared: bytes | None = None

    def respond(self, challenge_message: bytes, now: datetime) -> bytes:
        try:
            challenge = Challenge.decode(challenge_message)
        except ValueError:
            raise HandshakeRefused("malformed-challenge") from None
        if not hmac.compare_digest(challenge.server_id.encode(), self._server_id.encode()):
            # Signing a challenge from another server would let it act as this device there.
            raise HandshakeRefused("unexpected-server")
        try:
            shared = self._ephemeral.exchange(
                x25519.X25519PublicKey.from_public_bytes(challenge.server_public)
            )
        except ValueError:  # a low-order point gives an all-zero secret: refused, unsigned
            raise HandshakeRefused("key-exchange") from None
        unsigned = Response(
            challenge=challenge.challenge,
            device_nonce=secrets.token_bytes(NONCE_BYTES),
            device_public=self._ephemeral.public_key().public_bytes_raw(),
            device_time_ms=epoch_ms(now),
            software_version=self._software_version,
            vehicle_config=self._vehicle_config,
            certificate=self._credentials.certificate_der,
            ca_certificate=self._credentials.ca_certificate_der,
            signature=b"",
        )
        signature = sign(self._credentials.key, signature_input(challenge, unsigned))
        message = replace(unsigned, signature=signature).encode()
        self._transcript = transcript_hash(challenge_message, message)
        self._shared = shared
        return message

    def finish(self, welcome_message: bytes) -> tuple[Welcome, SessionKeys]:
        if self._transcript is None or self._shared is None:
            raise HandshakeRefused("out-of-order")
        try:
            welcome = Welcome.decode(welcome_message)
        except ValueError:
            raise HandshakeRefused("malformed-welcome") from None
        keys = derive_keys(self._shared, self._transcript)
        if not hmac.compare_digest(welcome.confirmation, confirmation(keys, self._transcript)):
            raise HandshakeRefused("confirmation")
        return welcome, keys


class DeviceConnection:
    """An established session. Not safe for concurrent use: one send/receive at a time."""

    def __init__(self, websocket: ClientConnection, welcome: Welcome, keys: SessionKeys) -> None:
        self._websocket = websocket
        self.welcome = welcome
        self.session_id = welcome.session_id
        self.session_key = keys.session_key
        self._inbox = DeviceInbox()

    async def send(self, frame: bytes) -> None:
        """A telemetry frame, or a command RESULT (which gets no reply)."""
        try:
            await self._websocket.send(frame)
        except ConnectionClosed as closed:
            raise _session_closed(closed) from None

    async def receive(self) -> bytes:
        """The next reply or COMMAND frame, in arrival order (those a :meth:`request` passed
        over first); SessionClosed once the session ended."""
        return await self._inbox.next(self._arrive)

    async def request(self, frame: bytes) -> bytes:
        """Send a telemetry frame and return its reply; a COMMAND (or a reply to an earlier
        frame) arriving meanwhile is kept for :meth:`receive`."""
        await self.send(frame)
        return await self._inbox.reply_to(frame, self.session_key, self._arrive)

    async def _arrive(self) -> bytes:
        try:
            message = await self._websocket.recv()
        except ConnectionClosed as closed:
            raise _session_closed(closed) from None
        if isinstance(message, str):
            raise SessionClosed(None, "unexpected text frame")
        return message

    async def wait_closed(self) -> int | None:
        """Wait for the server to end the session; its close code."""
        await self._websocket.wait_closed()
        return self._websocket.close_code

    @property
    def close_code(self) -> int | None:
        return self._websocket.close_code

    async def close(self) -> None:
        await self._websocket.close()


def _session_closed(closed: ConnectionClosed) -> SessionClosed:
    received = closed.rcvd
    return SessionClosed(
        received.code if received else None, received.reason if received else "no close frame"
    )


def websocket_url(base_url: str) -> str:
    """``http://host:port`` -> ``ws://host:port/gateway/v1/ws`` (https -> wss)."""
    if base_url.startswith("https://"):
        return "wss://" + base_url.removeprefix("https://").rstrip("/") + WEBSOCKET_PATH
    if base_url.startswith("http://"):
        return "ws://" + base_url.removeprefix("http://").rstrip("/") + WEBSOCKET_PATH
    raise ValueError("the base URL must be http:// or https://")


async def connect(
    url: str,
    credentials: DeviceCredentials,
    *,
    server_id: str,
    software_version: str,
    vehicle_config: str,
    now: Callable[[], datetime] | None = None,
    open_timeout: float = 10.0,
    local_address: tuple[str, int] | None = None,
) -> DeviceConnection:
    """Open a session: connect, answer the challenge, check the welcome.

    ``now`` is the device clock (the server judges it); ``local_address`` binds the source
    address (a device on another network, e.g. the simulator's cloned-credentials fault)."""
    clock = now or (lambda: datetime.now(UTC))
    # Compression off: frames travel exactly as MAC'd, and no compression side channel.
    websocket = await ws_connect(
        url, open_timeout=open_timeout, compression=None, local_addr=local_address
    )
    try:
        handshake = DeviceHandshake(
            credentials,
            server_id=server_id,
            software_version=software_version,
            vehicle_config=vehicle_config,
        )
        challenge = await websocket.recv()
        if isinstance(challenge, str):
            raise HandshakeRefused("text-challenge")
        await websocket.send(handshake.respond(challenge, clock()))
        welcome_message = await websocket.recv()
        if isinstance(welcome_message, str):
            raise HandshakeRefused("text-welcome")
        welcome, keys = handshake.finish(welcome_message)
    except ConnectionClosed as closed:
        received = closed.rcvd
        raise HandshakeRefused(
            received.reason if received else "closed", received.code if received else None
        ) from None
    except BaseException:
        await websocket.close()
        raise
    return DeviceConnection(websocket, welcome, keys)
