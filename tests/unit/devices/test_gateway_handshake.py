"""The handshake's wire format and every check that needs no store (table-driven).

A device answers a challenge with its certificate and a signature; each case below alters one
thing a thief, a replayer, a forger or a confused TCU could alter, and names the check that
must stop it. The store's checks (revoked, suspended, quarantined) are in the integration
tests against the real server.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from fleetward.core.clock import FrozenClock
from fleetward.devices.ca import DeviceCa
from fleetward.devices.models import KeyAlgorithm
from fleetward.devices.names import device_urn, vehicle_urn
from fleetward.gateway.device_client import (
    DeviceCredentials,
    DeviceHandshake,
    DevicePrivateKey,
    HandshakeRefused,
    generate_key,
    sign,
)
from fleetward.gateway.handshake import (
    MAX_RESPONSE_BYTES,
    SIGNATURE_CONTEXT,
    Challenge,
    CloseCode,
    HandshakeFailure,
    MessageType,
    Response,
    ServerHandshake,
    Welcome,
    decode,
    encode,
    signature_input,
)

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
SERVER = "https://fleetward.example"
DEVICE = "dev_" + "d" * 26
VEHICLE = "veh_" + "v" * 26
SKEW = timedelta(minutes=2)


@dataclass
class Kit:
    clock: FrozenClock
    ca: DeviceCa
    ca_key: ec.EllipticCurvePrivateKey
    other_ca: DeviceCa
    other_ca_key: ec.EllipticCurvePrivateKey
    key: DevicePrivateKey
    credentials: DeviceCredentials

    def server(self) -> ServerHandshake:
        return ServerHandshake(SERVER, self.ca.certificate, self.clock, SKEW)

    def device(self, credentials: DeviceCredentials | None = None) -> DeviceHandshake:
        return DeviceHandshake(
            credentials or self.credentials,
            server_id=SERVER,
            software_version="tcu-4.2.0",
            vehicle_config="cfg-eu-2026a",
        )


def _ca(clock: FrozenClock) -> tuple[DeviceCa, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = DeviceCa.generate(clock)
    # The same profile with a key the test keeps, to mint certificates the CA never would.
    certificate = (
        x509.CertificateBuilder()
        .subject_name(ca.certificate.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(clock.now())
        .not_valid_after(clock.now() + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return DeviceCa(certificate, key), key


def _leaf(
    kit: Kit,
    *,
    names: list[str] | None = None,
    ca: bool = False,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    not_before: datetime | None = None,
    lifetime: timedelta = timedelta(days=365),
) -> x509.Certificate:
    issuer_cert, issuer_key = issuer or (kit.ca.certificate, kit.ca_key)
    start = not_before or kit.clock.now()
    uris = names if names is not None else [device_urn(DEVICE), vehicle_urn(VEHICLE)]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)]))
        .issuer_name(issuer_cert.subject)
        .public_key(kit.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=True,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def kit() -> Kit:
    clock = FrozenClock(T0)
    ca, ca_key = _ca(clock)
    other_ca, other_ca_key = _ca(clock)
    key = generate_key()
    certificate = ca.issue(key.public_key(), device_id=DEVICE, vehicle_id=VEHICLE, now=T0)
    credentials = DeviceCredentials(DEVICE, VEHICLE, key, certificate, ca.certificate)
    return Kit(clock, ca, ca_key, other_ca, other_ca_key, key, credentials)


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_both_sides_derive_the_same_fresh_key(kit: Kit, algorithm: KeyAlgorithm) -> None:
    key = generate_key(algorithm)
    certificate = kit.ca.issue(key.public_key(), device_id=DEVICE, vehicle_id=VEHICLE, now=T0)
    credentials = DeviceCredentials(DEVICE, VEHICLE, key, certificate)
    keys = []
    for _ in range(2):
        server, device = kit.server(), kit.device(credentials)
        proven = server.verify(device.respond(server.challenge_message, T0))
        welcome, device_keys = device.finish(
            server.welcome(proven, "ses_1", timedelta(seconds=120), 65536)
        )
        assert device_keys.session_key == proven.keys.session_key
        assert len(proven.keys.session_key) == 32
        assert (welcome.session_id, welcome.idle_timeout_s, welcome.max_frame_bytes) == (
            "ses_1",
            120,
            65536,
        )
        assert (proven.device_id, proven.vehicle_id) == (DEVICE, VEHICLE)
        assert proven.software_version == "tcu-4.2.0"
        assert proven.certificate_serial == format(certificate.serial_number, "x")
        keys.append(proven.keys.session_key)
    assert keys[0] != keys[1]  # a new key per session, never reused


Mutation = Callable[[Kit, ServerHandshake, DeviceHandshake], bytes]


def _answer(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    return device.respond(server.challenge_message, kit.clock.now())


def _resigned(kit: Kit, server: ServerHandshake, response: Response) -> bytes:
    """``response`` with a valid signature by the device key over what it now says."""
    signed = sign(kit.key, signature_input(server.challenge, response))
    return replace(response, signature=signed).encode()


def _with_certificate(
    make: Callable[[Kit], x509.Certificate], chain: bytes | None = None
) -> Mutation:
    def mutate(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
        response = Response.decode(_answer(kit, server, device))
        der = make(kit).public_bytes(serialization.Encoding.DER)
        changed = replace(response, certificate=der)
        if chain is not None:
            changed = replace(changed, ca_certificate=chain)
        return _resigned(kit, server, changed)

    return mutate


def _with_certificate_der(make: Callable[[Kit], bytes]) -> Mutation:
    """The device's certificate replaced by raw bytes (re-signed by the device key)."""

    def mutate(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
        response = Response.decode(_answer(kit, server, device))
        return _resigned(kit, server, replace(response, certificate=make(kit)))

    return mutate


def _issuer_not_utf8(kit: Kit) -> bytes:
    # The issuer's organisation (a UTF8String) with a byte that is not UTF-8: the library
    # loads the certificate and parses the issuer only when it is read.
    der = kit.credentials.certificate.public_bytes(serialization.Encoding.DER)
    issuer = kit.ca.certificate.subject.public_bytes()
    at = der.index(issuer) + issuer.index(b"Fleetward")
    return der[:at] + b"\xff" + der[at + 1 :]


def _invalid_version(kit: Kit) -> bytes:
    # X.509 version 0x39 where v3 (2) is: the library refuses it with its own InvalidVersion.
    der = kit.credentials.certificate.public_bytes(serialization.Encoding.DER)
    v3 = bytes.fromhex("a00302010202")
    assert der.count(v3) == 1
    return der.replace(v3, bytes.fromhex("a00302013902"))


def _other_ca_chain(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    response = Response.decode(_answer(kit, server, device))
    other = kit.other_ca.certificate.public_bytes(serialization.Encoding.DER)
    return replace(response, ca_certificate=other).encode()


def _flipped_signature(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    response = Response.decode(_answer(kit, server, device))
    signature = bytearray(response.signature)
    signature[0] ^= 0x01
    return replace(response, signature=bytes(signature)).encode()


def _signed_by_thief(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    response = Response.decode(_answer(kit, server, device))
    thief = ed25519.Ed25519PrivateKey.generate()
    return replace(
        response, signature=thief.sign(signature_input(server.challenge, response))
    ).encode()


def _replayed(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    # A complete, valid answer recorded from an earlier connection.
    earlier = kit.server()
    return kit.device().respond(earlier.challenge_message, kit.clock.now())


def _changed_after_signing(**changes: object) -> Mutation:
    def mutate(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
        response = Response.decode(_answer(kit, server, device))
        return replace(response, **changes).encode()  # type: ignore[arg-type]

    return mutate


def _clock(delta: timedelta) -> Mutation:
    def mutate(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
        return device.respond(server.challenge_message, kit.clock.now() + delta)

    return mutate


def _low_order_point(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    response = Response.decode(_answer(kit, server, device))
    return _resigned(kit, server, replace(response, device_public=bytes(32)))


def _raw(data: bytes) -> Mutation:
    return lambda kit, server, device: data


def _truncated(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    return _answer(kit, server, device)[:-1]


def _trailing(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    return _answer(kit, server, device) + b"\x00"


def _version(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    answer = bytearray(_answer(kit, server, device))
    answer[1] = 2
    return bytes(answer)


def _control_characters(kit: Kit, server: ServerHandshake, device: DeviceHandshake) -> bytes:
    # Built by hand: the codec's own encoder would refuse nothing, the decoder must.
    response = Response.decode(_answer(kit, server, device))
    fields = [
        response.challenge,
        response.device_nonce,
        response.device_public,
        struct.pack(">Q", response.device_time_ms),
        b'tcu\n{"level":"error"}',
        response.vehicle_config.encode(),
        response.certificate,
        response.ca_certificate,
        response.signature,
    ]
    return encode(MessageType.RESPONSE, fields)


_EXPIRED = {"not_before": T0 - timedelta(days=400)}
_FUTURE = {"not_before": T0 + timedelta(hours=1)}
_TWO_VEHICLES = [device_urn(DEVICE), vehicle_urn(VEHICLE), vehicle_urn("veh_" + "w" * 26)]

CASES: list[tuple[str, Mutation, str, CloseCode]] = [
    # Chain: only certificates the platform device CA issued, directly.
    (
        "foreign-ca",
        _with_certificate(lambda k: _leaf(k, issuer=(k.other_ca.certificate, k.other_ca_key))),
        "unknown-ca",
        CloseCode.UNAUTHENTICATED,
    ),
    # A forger who copies our CA's name but not its key.
    (
        "forged-issuer-name",
        _with_certificate(lambda k: _leaf(k, issuer=(k.ca.certificate, k.other_ca_key))),
        "unknown-ca",
        CloseCode.UNAUTHENTICATED,
    ),
    # Certificates the library loads but cannot read (or refuses with an exception of its
    # own) are refused like any other, never an internal error (1011, and no audit record).
    (
        "issuer-not-utf8",
        _with_certificate_der(_issuer_not_utf8),
        "unknown-ca",
        CloseCode.UNAUTHENTICATED,
    ),
    (
        "invalid-x509-version",
        _with_certificate_der(_invalid_version),
        "certificate-malformed",
        CloseCode.UNAUTHENTICATED,
    ),
    ("foreign-ca-chain", _other_ca_chain, "unknown-ca", CloseCode.UNAUTHENTICATED),
    (
        "self-signed",
        _with_certificate(lambda k: _self_signed(k.key)),
        "unknown-ca",
        CloseCode.UNAUTHENTICATED,
    ),
    # The CA's own certificate is not a device.
    (
        "ca-as-leaf",
        _with_certificate(lambda k: k.ca.certificate),
        "binding",
        CloseCode.UNAUTHENTICATED,
    ),
    # Validity by the server's clock.
    (
        "expired",
        _with_certificate(lambda k: _leaf(k, **_EXPIRED)),  # type: ignore[arg-type]
        "certificate-expired",
        CloseCode.UNAUTHENTICATED,
    ),
    (
        "not-yet-valid",
        _with_certificate(lambda k: _leaf(k, **_FUTURE)),  # type: ignore[arg-type]
        "certificate-not-yet-valid",
        CloseCode.UNAUTHENTICATED,
    ),
    # Binding: exactly one device and one vehicle, never an issuer.
    (
        "two-vehicles",
        _with_certificate(lambda k: _leaf(k, names=_TWO_VEHICLES)),
        "binding",
        CloseCode.UNAUTHENTICATED,
    ),
    (
        "no-san",
        _with_certificate(lambda k: _leaf(k, names=[])),
        "binding",
        CloseCode.UNAUTHENTICATED,
    ),
    (
        "leaf-is-ca",
        _with_certificate(lambda k: _leaf(k, ca=True)),
        "binding",
        CloseCode.UNAUTHENTICATED,
    ),
    # Proof of possession: the certificate alone proves nothing.
    ("bad-signature", _flipped_signature, "signature", CloseCode.UNAUTHENTICATED),
    ("thief-signature", _signed_by_thief, "signature", CloseCode.UNAUTHENTICATED),
    # Everything signed is bound: changing any of it after signing breaks the signature.
    (
        "software-changed",
        _changed_after_signing(software_version="tcu-9.9.9"),
        "signature",
        CloseCode.UNAUTHENTICATED,
    ),
    (
        "ephemeral-key-swapped",
        _changed_after_signing(device_public=bytes(range(32))),
        "signature",
        CloseCode.UNAUTHENTICATED,
    ),
    (
        "time-changed",
        _changed_after_signing(device_time_ms=1),
        "signature",
        CloseCode.UNAUTHENTICATED,
    ),
    # Replay: an answer to another connection's challenge.
    ("replayed-handshake", _replayed, "challenge-mismatch", CloseCode.UNAUTHENTICATED),
    # Freshness of the device clock, judged by the server's.
    ("clock-ahead", _clock(timedelta(minutes=3)), "clock-skew", CloseCode.CLOCK_SKEW),
    ("clock-behind", _clock(-timedelta(minutes=3)), "clock-skew", CloseCode.CLOCK_SKEW),
    # A low-order point would make the session key predictable.
    ("low-order-x25519", _low_order_point, "key-exchange", CloseCode.PROTOCOL),
    # Malformed messages stop at the parser.
    ("empty", _raw(b""), "malformed", CloseCode.PROTOCOL),
    ("null", _raw(b"null"), "malformed", CloseCode.PROTOCOL),
    ("json-array", _raw(b"[]"), "malformed", CloseCode.PROTOCOL),
    ("truncated", _truncated, "malformed", CloseCode.PROTOCOL),
    ("trailing-byte", _trailing, "malformed", CloseCode.PROTOCOL),
    ("other-version", _version, "malformed", CloseCode.PROTOCOL),
    ("log-injection", _control_characters, "malformed", CloseCode.PROTOCOL),
    ("huge", _raw(b"\x02\x01" + b"\xff" * MAX_RESPONSE_BYTES), "too-large", CloseCode.TOO_LARGE),
]


def _self_signed(key: DevicePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(device_urn(DEVICE)),
                    x509.UniformResourceIdentifier(vehicle_urn(VEHICLE)),
                ]
            ),
            critical=True,
        )
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )


@pytest.mark.parametrize(("case", "mutate", "reason", "close"), CASES, ids=[c[0] for c in CASES])
def test_refused(kit: Kit, case: str, mutate: Mutation, reason: str, close: CloseCode) -> None:
    server, device = kit.server(), kit.device()
    with pytest.raises(HandshakeFailure) as raised:
        server.verify(mutate(kit, server, device))
    assert (raised.value.reason, raised.value.close) == (reason, close)


def test_device_id_is_reported_only_once_the_ca_vouched_for_it(kit: Kit) -> None:
    server = kit.server()
    foreign = _with_certificate(lambda k: _leaf(k, issuer=(k.other_ca.certificate, k.other_ca_key)))
    with pytest.raises(HandshakeFailure) as raised:
        server.verify(foreign(kit, server, kit.device()))
    assert raised.value.device_id is None  # attacker text never reaches the audit log
    server = kit.server()
    with pytest.raises(HandshakeFailure) as raised:
        server.verify(_flipped_signature(kit, server, kit.device()))
    assert raised.value.device_id == DEVICE


def test_device_refuses_another_servers_challenge(kit: Kit) -> None:
    other = ServerHandshake("https://evil.example", kit.ca.certificate, kit.clock, SKEW)
    with pytest.raises(HandshakeRefused, match="unexpected-server"):
        kit.device().respond(other.challenge_message, T0)


def test_device_refuses_a_low_order_server_key_before_signing(kit: Kit) -> None:
    # Threat: a server (or a relay rewriting the CHALLENGE) sends a low-order X25519 point,
    # forcing an all-zero shared secret, i.e. a session key it knows without the device's
    # ephemeral key. Both sides must refuse it; the device with a handshake refusal (what a
    # TCU backs off on), not a stray ValueError, and without signing that challenge.
    challenge = Challenge.decode(kit.server().challenge_message)
    low_order = replace(challenge, server_public=bytes(32)).encode()
    with pytest.raises(HandshakeRefused, match="key-exchange"):
        kit.device().respond(low_order, T0)


def test_device_refuses_a_welcome_without_key_confirmation(kit: Kit) -> None:
    server, device = kit.server(), kit.device()
    proven = server.verify(device.respond(server.challenge_message, T0))
    welcome = Welcome.decode(server.welcome(proven, "ses_1", timedelta(seconds=60), 1024))
    forged = replace(welcome, confirmation=bytes(32)).encode()
    with pytest.raises(HandshakeRefused, match="confirmation"):
        device.finish(forged)


def test_codec_refuses_what_it_does_not_define() -> None:
    message = encode(MessageType.CHALLENGE, [b"a", b"bc"])
    assert decode(message, MessageType.CHALLENGE, 2) == [b"a", b"bc"]
    for bad, count in ((message, 3), (message + b"x", 2), (message[:-1], 2)):
        with pytest.raises(ValueError, match=r"truncated|trailing"):
            decode(bad, MessageType.CHALLENGE, count)
    with pytest.raises(ValueError, match="type"):
        decode(message, MessageType.RESPONSE, 2)
    with pytest.raises(ValueError, match="length"):
        Challenge.decode(encode(MessageType.CHALLENGE, [bytes(32), bytes(32), b""]))


def test_signature_input_layout_is_the_documented_one() -> None:
    # The vector in docs/vehicle-protocol.md: a change here is a protocol change.
    challenge = Challenge(bytes([1]) * 32, bytes([2]) * 32, "https://fleetward.example")
    response = Response(
        challenge=challenge.challenge,
        device_nonce=bytes([3]) * 32,
        device_public=bytes([4]) * 32,
        device_time_ms=1_795_683_600_000,
        software_version="tcu-4.2.0",
        vehicle_config="cfg-eu-2026a",
        certificate=b"certificate-der",
        ca_certificate=b"",
        signature=b"",
    )
    data = signature_input(challenge, response)
    assert data.startswith(SIGNATURE_CONTEXT) and SIGNATURE_CONTEXT.endswith(b"\x00")
    assert len(data) == 30 + 2 + 25 + 32 * 4 + 8 + 2 + 9 + 2 + 12 + 32
    assert data[30:32] == b"\x00\x19"
    assert data[-32:] == hashlib.sha256(b"certificate-der").digest()
    assert hashlib.sha256(data).hexdigest() == SIGNATURE_INPUT_SHA256


SIGNATURE_INPUT_SHA256 = "042203c8f58ab94ff2d5472d4a03dad26633960d80bd37c156572be5f7d1efd2"
