"""Provisioning: what an enrolment token and a CSR may obtain, and everything they may not.

Every refusal is read back from the store: nothing changed (the token is not spent, no device
or certificate exists). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fleetward.audit.events import EventName
from fleetward.core.clock import FrozenClock
from fleetward.core.errors import FleetwardError
from fleetward.core.ids import new_id
from fleetward.devices.errors import (
    CsrRefused,
    EnrolmentTokenInvalid,
    InvalidLifetime,
    VehicleHasDevice,
)
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import (
    CertificateStatus,
    Device,
    DeviceCertificate,
    DeviceEnrolment,
    DeviceStatus,
    EnrolmentKind,
    KeyAlgorithm,
)
from fleetward.devices.names import device_urn, vehicle_urn
from fleetward.devices.provisioning import TOKEN_PREFIX, EnrolmentGrant, Provisioning
from fleetward.gateway.device_client import DevicePrivateKey, build_csr, generate_key
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.models import Vehicle
from support.factories import FACTORY, WorldFactory
from support.snapshot import snapshot
from unit.devices.kit import DeviceWorld, san_uris


@dataclass
class Scene:
    world: DeviceWorld
    grant: EnrolmentGrant  # fresh, for other_car
    used_token: str
    cancelled_token: str
    case_closed_token: str
    old_key: DevicePrivateKey  # certified for the car's first device
    third_car: Vehicle  # has a live device


@pytest.fixture
async def scene(world: DeviceWorld) -> Scene:
    ctx = world.ctx
    provisioning = Provisioning(ctx)
    old_key = generate_key()
    used = await provisioning.create_enrolment(world.car, actor=FACTORY)
    await provisioning.enrol(
        used.token,
        build_csr(old_key, device_id=used.device_id, vehicle_id=world.car.id),
        world.ca,
    )
    third_car = await WorldFactory(ctx).owned_vehicle(world.owner)
    first = await provisioning.create_enrolment(third_car, actor=FACTORY)
    second = await provisioning.create_enrolment(third_car, actor=FACTORY)
    await provisioning.enrol(
        first.token,
        build_csr(generate_key(), device_id=first.device_id, vehicle_id=third_car.id),
        world.ca,
    )
    replacement = await DeviceLifecycle(ctx).replace_tcu(
        world.case, world.technician, actor=FACTORY
    )
    await CaseService(ctx).close_dealer_case(world.case, actor=FACTORY)
    grant = await provisioning.create_enrolment(world.other_car, actor=FACTORY)
    return Scene(
        world,
        grant,
        used.token,
        second.token,
        replacement.enrolment.token,
        old_key,
        third_car,
    )


Attempt = Callable[[Scene], Awaitable[object]]


def _csr(
    *,
    key: DevicePrivateKey | None = None,
    subject: list[x509.NameAttribute] | None = None,
    names: list[x509.GeneralName] | None = None,
    ca: bool | None = None,
    key_usage: bool = False,
    omit_san: bool = False,
) -> Callable[[Scene], str]:
    """A hostile or odd CSR for the scene's fresh enrolment (defaults are the valid one)."""

    def build(s: Scene) -> str:
        device_id, vehicle_id = s.grant.device_id, s.grant.vehicle_id
        the_key = key or generate_key()
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name(subject or [x509.NameAttribute(NameOID.COMMON_NAME, device_id)])
        )
        if not omit_san:
            default = [
                x509.UniformResourceIdentifier(device_urn(device_id)),
                x509.UniformResourceIdentifier(vehicle_urn(vehicle_id)),
            ]
            builder = builder.add_extension(
                x509.SubjectAlternativeName(names if names is not None else default),
                critical=False,
            )
        if ca is not None:
            builder = builder.add_extension(
                x509.BasicConstraints(ca=ca, path_length=None), critical=True
            )
        if key_usage:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        algorithm = None if isinstance(the_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        signed = builder.sign(the_key, algorithm)  # type: ignore[arg-type]
        return signed.public_bytes(serialization.Encoding.PEM).decode("ascii")

    return build


def _redeem(csr: Callable[[Scene], str] | str, token: str | None = None) -> Attempt:
    async def attempt(s: Scene) -> object:
        pem = csr if isinstance(csr, str) else csr(s)
        return await Provisioning(s.world.ctx).enrol(token or s.grant.token, pem, s.world.ca)

    return attempt


def _token(pick: Callable[[Scene], str], *, advance: timedelta | None = None) -> Attempt:
    async def attempt(s: Scene) -> object:
        if advance is not None:
            clock = s.world.platform.clock
            assert isinstance(clock, FrozenClock)
            clock.advance(advance)
        valid_csr = _csr()(s)
        return await Provisioning(s.world.ctx).enrol(pick(s), valid_csr, s.world.ca)

    return attempt


def _tampered_signature(s: Scene) -> str:
    der = bytearray(
        x509.load_pem_x509_csr(_csr()(s).encode()).public_bytes(serialization.Encoding.DER)
    )
    der[-1] ^= 0x01  # the last byte of the signature
    csr = x509.load_der_x509_csr(bytes(der))
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _unsupported_curve(s: Scene) -> str:
    """A valid CSR whose key names a curve the crypto library does not know (its OID
    rewritten: secp256r1 1.2.840.10045.3.1.7 -> 1.2.840.10045.3.1.9)."""
    der = x509.load_pem_x509_csr(_csr(key=ec.generate_private_key(ec.SECP256R1()))(s).encode())
    raw = der.public_bytes(serialization.Encoding.DER)
    p256 = bytes.fromhex("06082a8648ce3d030107")
    assert raw.count(p256) == 1
    tampered = raw.replace(p256, bytes.fromhex("06082a8648ce3d030109"))
    body = base64.encodebytes(tampered).decode("ascii")
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def _invalid_version(s: Scene) -> str:
    """A valid CSR with its version (v1, 0) rewritten to 57: the library refuses it with an
    exception of its own (InvalidVersion), which is no ValueError."""
    raw = x509.load_pem_x509_csr(_csr()(s).encode()).public_bytes(serialization.Encoding.DER)
    version_then_subject = bytes.fromhex("02010030")
    assert raw.count(version_then_subject) == 1
    tampered = raw.replace(version_then_subject, bytes.fromhex("02013930"))
    body = base64.encodebytes(tampered).decode("ascii")
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


def _other_vehicle(s: Scene) -> list[x509.GeneralName]:
    return [
        x509.UniformResourceIdentifier(device_urn(s.grant.device_id)),
        x509.UniformResourceIdentifier(vehicle_urn(s.world.car.id)),
    ]


def _names(build: Callable[[Scene], list[x509.GeneralName]]) -> Callable[[Scene], str]:
    def csr(s: Scene) -> str:
        return _csr(names=build(s))(s)

    return csr


def _with_key_of_car(s: Scene) -> str:
    return _csr(key=s.old_key)(s)


async def _second_device_for_vehicle(s: Scene) -> object:
    return await Provisioning(s.world.ctx).create_enrolment(s.third_car, actor=FACTORY)


def _lifetime(delta: timedelta) -> Attempt:
    async def attempt(s: Scene) -> object:
        return await Provisioning(s.world.ctx).create_enrolment(
            s.world.other_car, actor=FACTORY, lifetime=delta
        )

    return attempt


def _urn(kind: str) -> Callable[[Scene], list[x509.GeneralName]]:
    def names(s: Scene) -> list[x509.GeneralName]:
        device = x509.UniformResourceIdentifier(device_urn(s.grant.device_id))
        vehicle = x509.UniformResourceIdentifier(vehicle_urn(s.grant.vehicle_id))
        if kind == "other-device":
            return [x509.UniformResourceIdentifier(device_urn("dev_" + "a" * 26)), vehicle]
        if kind == "two-vehicles":
            return [device, vehicle, x509.UniformResourceIdentifier(vehicle_urn(s.world.car.id))]
        if kind == "dns":
            return [device, vehicle, x509.DNSName("tcu.example.com")]
        if kind == "device-only":
            return [device]
        if kind == "duplicated":
            return [device, vehicle, vehicle]
        raise KeyError(kind)

    return names


_CN = NameOID.COMMON_NAME
CASES: list[tuple[str, Attempt, type[FleetwardError], str | None]] = [
    # A device can never become an issuer: a CA request is refused by name, whatever it says.
    ("csr-ca-request", _redeem(_csr(ca=True)), CsrRefused, "ca-request"),
    (
        "csr-ca-request-other-vehicle",
        _redeem(lambda s: _csr(ca=True, names=_other_vehicle(s))(s)),
        CsrRefused,
        "ca-request",
    ),
    # The platform decides the names: a CSR naming anything else is refused.
    ("csr-other-vehicle", _redeem(_names(_other_vehicle)), CsrRefused, "san"),
    ("csr-other-device", _redeem(_names(_urn("other-device"))), CsrRefused, "san"),
    # A certificate for two vehicles is a shared fleet certificate in the making.
    ("csr-two-vehicles", _redeem(_names(_urn("two-vehicles"))), CsrRefused, "san"),
    ("csr-extra-dns-name", _redeem(_names(_urn("dns"))), CsrRefused, "san"),
    ("csr-no-vehicle", _redeem(_names(_urn("device-only"))), CsrRefused, "san"),
    ("csr-duplicated-name", _redeem(_names(_urn("duplicated"))), CsrRefused, "san"),
    ("csr-no-san", _redeem(_csr(omit_san=True)), CsrRefused, "san"),
    (
        "csr-subject-fleet",
        _redeem(_csr(subject=[x509.NameAttribute(_CN, "fleet-wide")])),
        CsrRefused,
        "subject",
    ),
    (
        "csr-subject-extra-attribute",
        _redeem(
            lambda s: _csr(
                subject=[
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fleetward"),
                    x509.NameAttribute(_CN, s.grant.device_id),
                ]
            )(s)
        ),
        CsrRefused,
        "subject",
    ),
    # Extensions are the platform's to set (server auth would make a TCU a web server).
    ("csr-extra-extension", _redeem(_csr(key_usage=True)), CsrRefused, "extension"),
    # Only Ed25519 and P-256 keys: no RSA, no other curve.
    (
        "csr-rsa-key",
        _redeem(lambda s: _csr(key=rsa.generate_private_key(65537, 2048))(s)),  # type: ignore[arg-type]
        CsrRefused,
        "key-type",
    ),
    (
        "csr-p384-key",
        _redeem(lambda s: _csr(key=ec.generate_private_key(ec.SECP384R1()))(s)),
        CsrRefused,
        "key-type",
    ),
    # A key the library cannot even load is a key type we do not certify, not a crash
    # (an unaudited 500 on the enrolment route).
    ("csr-unsupported-curve", _redeem(_unsupported_curve), CsrRefused, "key-type"),
    # Proof of possession: a CSR whose signature does not verify proves nothing.
    ("csr-bad-signature", _redeem(_tampered_signature), CsrRefused, "signature"),
    # Hostile input never reaches the CA.
    (
        "csr-garbage",
        _redeem("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"),
        CsrRefused,
        "malformed",
    ),
    ("csr-invalid-version", _redeem(_invalid_version), CsrRefused, "malformed"),
    ("csr-null", _redeem("null"), CsrRefused, "malformed"),
    ("csr-array", _redeem("[]"), CsrRefused, "malformed"),
    ("csr-empty", _redeem(""), CsrRefused, "malformed"),
    ("csr-huge", _redeem("A" * 100_000), CsrRefused, "malformed"),
    (
        "csr-non-ascii",
        _redeem("-----BEGIN CERTIFICATE REQUEST-----\u00e9"),
        CsrRefused,
        "malformed",
    ),
    # Unique credentials: a key certified for one device is never certified again.
    ("csr-key-reused", _redeem(_with_key_of_car), CsrRefused, "key-reused"),
    # The token authorizes the issue: unknown, spent, cancelled, expired ones do not.
    (
        "token-unknown",
        _token(lambda s: TOKEN_PREFIX + "x" * 43),
        EnrolmentTokenInvalid,
        "unknown",
    ),
    ("token-malformed", _token(lambda s: "not-a-token"), EnrolmentTokenInvalid, "malformed"),
    (
        "token-look-alike-prefix",
        _token(lambda s: "\uff46" + s.grant.token[1:]),
        EnrolmentTokenInvalid,
        "malformed",
    ),
    ("token-used", _token(lambda s: s.used_token), EnrolmentTokenInvalid, "used"),
    ("token-cancelled", _token(lambda s: s.cancelled_token), EnrolmentTokenInvalid, "cancelled"),
    (
        "token-expired",
        _token(lambda s: s.grant.token, advance=timedelta(hours=24)),
        EnrolmentTokenInvalid,
        "expired",
    ),
    # A replacement's token dies with its dealer case.
    (
        "token-case-closed",
        _token(lambda s: s.case_closed_token),
        EnrolmentTokenInvalid,
        "case-closed",
    ),
    # One live device per vehicle: no second enrolment while one is live.
    ("second-device-for-vehicle", _second_device_for_vehicle, VehicleHasDevice, None),
    # Tokens are short-lived.
    ("lifetime-too-long", _lifetime(timedelta(days=8)), InvalidLifetime, "enrolment"),
    ("lifetime-too-short", _lifetime(timedelta(minutes=1)), InvalidLifetime, "enrolment"),
]


@pytest.mark.parametrize(("case", "attempt", "error", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_refused_and_store_unchanged(
    scene: Scene, case: str, attempt: Attempt, error: type[FleetwardError], reason: str | None
) -> None:
    before = await snapshot(scene.world.ctx.session)
    with pytest.raises(error) as raised:
        await attempt(scene)
    assert raised.value.status in {401, 403, 404, 409, 422}
    if reason is not None:
        assert raised.value.reason == reason
    assert raised.value.to_problem()["type"] == error.problem_type()
    assert await snapshot(scene.world.ctx.session) == before


async def test_a_key_certified_by_a_concurrent_enrolment_is_refused_not_a_500(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two enrolments with one key at once: both read no certificate of it, and the second
    # to write meets the unique index. That is the same refusal as a key certified before.
    async def read_before_the_other_committed(self: Provisioning, checked: object) -> None:
        return None

    monkeypatch.setattr(Provisioning, "refuse_reused_key", read_before_the_other_committed)
    with pytest.raises(CsrRefused) as raised:
        await _redeem(_with_key_of_car)(scene)
    assert raised.value.reason == "key-reused"
    assert raised.value.status == 422


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
async def test_certificate_binds_one_device_to_one_vehicle(
    world: DeviceWorld, algorithm: KeyAlgorithm
) -> None:
    credentials, device = await world.enrol(world.car, algorithm=algorithm)
    certificate = credentials.certificate
    assert san_uris(certificate) == [device_urn(device.id), vehicle_urn(world.car.id)]
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    certificate.verify_directly_issued_by(world.ca.certificate)
    now = world.platform.clock.now()
    assert certificate.not_valid_before_utc == now
    assert certificate.not_valid_after_utc == now + timedelta(days=365)
    row = await world.ctx.session.scalar(
        select(DeviceCertificate).where(DeviceCertificate.device_id == device.id)
    )
    assert row is not None and row.status is CertificateStatus.ACTIVE
    assert row.serial == format(certificate.serial_number, "x")
    assert device.status is DeviceStatus.ACTIVE and device.key_algorithm is algorithm
    assert device.enrolment_kind is EnrolmentKind.INITIAL
    [event] = await world.events(EventName.DEVICE_PROVISIONED.value, device.id)
    assert event.details["serial"] == row.serial


async def test_token_is_stored_only_as_its_digest(world: DeviceWorld) -> None:
    grant = await Provisioning(world.ctx).create_enrolment(world.car, actor=FACTORY)
    assert grant.token.startswith(TOKEN_PREFIX) and len(grant.token) > 40
    assert grant.token not in repr(grant)
    stored = repr(await snapshot(world.ctx.session))
    assert grant.token not in stored
    assert grant.token[len(TOKEN_PREFIX) :] not in stored
    row = await world.ctx.session.get(DeviceEnrolment, grant.enrolment_id)
    assert row is not None and row.device_id == grant.device_id and row.used_at is None


async def test_redeeming_one_token_cancels_the_vehicles_others(world: DeviceWorld) -> None:
    provisioning = Provisioning(world.ctx)
    first = await provisioning.create_enrolment(world.car, actor=FACTORY)
    second = await provisioning.create_enrolment(world.car, actor=FACTORY)
    other_vehicle = await provisioning.create_enrolment(world.other_car, actor=FACTORY)
    csr = build_csr(generate_key(), device_id=first.device_id, vehicle_id=world.car.id)
    await provisioning.enrol(first.token, csr, world.ca)
    rows = {row.id: row for row in await world.ctx.session.scalars(select(DeviceEnrolment))}
    assert rows[first.enrolment_id].used_at is not None
    assert rows[second.enrolment_id].cancelled_at is not None
    assert rows[other_vehicle.enrolment_id].cancelled_at is None  # another vehicle's token


def _live_device_row(vehicle_id: str, now: datetime) -> Device:
    return Device(
        id=new_id("dev"),
        vehicle_id=vehicle_id,
        status=DeviceStatus.ACTIVE,
        key_algorithm=KeyAlgorithm.ED25519,
        enrolment_kind=EnrolmentKind.INITIAL,
        replaces_device_id=None,
        created_at=now,
        status_changed_at=now,
        status_reason=None,
        ended_at=None,
        last_peer=None,
        last_seen_at=None,
    )


async def test_store_refuses_a_second_live_device_for_a_vehicle(world: DeviceWorld) -> None:
    _credentials, device = await world.enrol(world.car)
    now = world.platform.clock.now()
    await DeviceLifecycle(world.ctx).revoke(device, reason="lost", actor=FACTORY)
    # An ended identity does not count: the vehicle may have a new live one...
    world.ctx.session.add(_live_device_row(world.car.id, now))
    await world.ctx.session.flush()
    # ...but never two. Defence in depth: a code path that skipped the check cannot store it.
    world.ctx.session.add(_live_device_row(world.car.id, now))
    with pytest.raises(IntegrityError):
        await world.ctx.session.flush()
