"""The device lifecycle: each transition, its audit event, and the refusals around it.

Refusals are read back from the store (nothing changed). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.investigate import BlastQuery, Subject, blast_radius
from fleetward.core.clock import FrozenClock
from fleetward.core.errors import FleetwardError, InvalidInput
from fleetward.devices.admission import SessionLedger, SessionOpened
from fleetward.devices.errors import (
    CsrRefused,
    ReplacementRefused,
    TransitionRefused,
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
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway.device_client import DeviceCredentials, build_csr, generate_key
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, User
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.models import DealerCase
from support.factories import FACTORY
from support.snapshot import snapshot
from unit.devices.kit import DeviceWorld


async def _certificates(world: DeviceWorld, device: Device) -> list[DeviceCertificate]:
    rows = await world.ctx.session.scalars(
        select(DeviceCertificate)
        .where(DeviceCertificate.device_id == device.id)
        .order_by(DeviceCertificate.issued_at, DeviceCertificate.serial)
    )
    return list(rows)


Move = Callable[[DeviceLifecycle, Device], Awaitable[object]]


def _suspend(lc: DeviceLifecycle, d: Device) -> Awaitable[object]:
    return lc.suspend(d, reason="investigation", actor=FACTORY)


def _revoke(lc: DeviceLifecycle, d: Device) -> Awaitable[object]:
    return lc.revoke(d, reason="compromised", actor=FACTORY)


def _decommission(lc: DeviceLifecycle, d: Device) -> Awaitable[object]:
    return lc.decommission(d, reason="end-of-life", actor=FACTORY)


def _quarantine(lc: DeviceLifecycle, d: Device) -> Awaitable[object]:
    return lc.quarantine(d, reason="clone-test", actor=FACTORY, details={})


async def _suspend_then_resume(lc: DeviceLifecycle, d: Device) -> object:
    await _suspend(lc, d)
    return await lc.resume(d, reason="cleared", actor=FACTORY)


async def _quarantine_then_resume(lc: DeviceLifecycle, d: Device) -> object:
    await _quarantine(lc, d)
    return await lc.resume(d, reason="false-positive", actor=FACTORY)


TRANSITIONS: list[tuple[str, Move, DeviceStatus, EventName, CertificateStatus]] = [
    (
        "suspend",
        _suspend,
        DeviceStatus.SUSPENDED,
        EventName.DEVICE_SUSPENDED,
        CertificateStatus.ACTIVE,
    ),
    (
        "resume",
        _suspend_then_resume,
        DeviceStatus.ACTIVE,
        EventName.DEVICE_RESUMED,
        CertificateStatus.ACTIVE,
    ),
    (
        "release-quarantine",
        _quarantine_then_resume,
        DeviceStatus.ACTIVE,
        EventName.DEVICE_RESUMED,
        CertificateStatus.ACTIVE,
    ),
    (
        "quarantine",
        _quarantine,
        DeviceStatus.QUARANTINED,
        EventName.DEVICE_QUARANTINED,
        CertificateStatus.ACTIVE,
    ),
    ("revoke", _revoke, DeviceStatus.REVOKED, EventName.DEVICE_REVOKED, CertificateStatus.REVOKED),
    (
        "decommission",
        _decommission,
        DeviceStatus.DECOMMISSIONED,
        EventName.DEVICE_DECOMMISSIONED,
        CertificateStatus.REVOKED,
    ),
]


@pytest.mark.parametrize(
    ("case", "move", "status", "event", "certificates"),
    TRANSITIONS,
    ids=[t[0] for t in TRANSITIONS],
)
async def test_transition_and_its_audit_event(
    world: DeviceWorld,
    case: str,
    move: Move,
    status: DeviceStatus,
    event: EventName,
    certificates: CertificateStatus,
) -> None:
    _credentials, device = await world.enrol()
    await move(DeviceLifecycle(world.ctx), device)
    stored = await world.ctx.session.get(Device, device.id)
    assert stored is not None and stored.status is status
    assert (stored.ended_at is not None) is (certificates is CertificateStatus.REVOKED)
    assert [c.status for c in await _certificates(world, device)] == [certificates]
    [record] = await world.events(event.value, device.id)
    assert record.actor_id == FACTORY.id
    assert record.tenant_id == world.car.tenant_id
    assert record.details["vehicle"] == world.car.id


async def test_rotation_keeps_the_old_certificate_until_the_new_one_is_used(
    world: DeviceWorld,
) -> None:
    _credentials, device = await world.enrol()
    lifecycle = DeviceLifecycle(world.ctx)
    csr = build_csr(generate_key(), device_id=device.id, vehicle_id=device.vehicle_id)
    superseded = await lifecycle.rotate(device, csr, world.ca, actor=FACTORY)
    csr = build_csr(generate_key(), device_id=device.id, vehicle_id=device.vehicle_id)
    issued = await lifecycle.rotate(device, csr, world.ca, actor=FACTORY)
    by_serial = {c.serial: c for c in await _certificates(world, device)}
    first, second = by_serial.pop(superseded.serial), by_serial.pop(issued.serial)
    [old] = by_serial.values()
    assert (old.status, first.status, second.status) == (
        CertificateStatus.ACTIVE,  # still what the device uses
        CertificateStatus.REVOKED,  # an unused rotation is superseded by a newer one
        CertificateStatus.PENDING,
    )
    assert first.revoked_reason == "rotation-superseded"
    assert len(await world.events(EventName.DEVICE_ROTATION_STARTED.value, device.id)) == 2
    revoked = await lifecycle.complete_rotation(device, second, actor=FACTORY)
    assert revoked == [old.serial]
    assert (old.status, old.revoked_reason, second.status) == (
        CertificateStatus.REVOKED,
        "rotated",
        CertificateStatus.ACTIVE,
    )
    [completed] = await world.events(EventName.DEVICE_ROTATION_COMPLETED.value, device.id)
    assert completed.details["revoked"] == [old.serial]


async def test_re_enrolment_ends_the_identity_and_enrols_a_fresh_one(world: DeviceWorld) -> None:
    _credentials, device = await world.enrol()
    lifecycle = DeviceLifecycle(world.ctx)
    await lifecycle.quarantine(device, reason="clone-test", actor=FACTORY, details={})
    grant = await lifecycle.re_enrol(device, reason="cloned", actor=FACTORY)
    assert device.status is DeviceStatus.REVOKED and device.ended_at is not None
    assert grant.kind is EnrolmentKind.RE_ENROLMENT and grant.device_id != device.id
    assert await world.events(EventName.DEVICE_REVOKED.value, device.id)
    [started] = await world.events(EventName.DEVICE_REENROLMENT_STARTED.value, device.id)
    assert started.details["new_device"] == grant.device_id
    key = generate_key()
    csr = build_csr(key, device_id=grant.device_id, vehicle_id=device.vehicle_id)
    await Provisioning(world.ctx).enrol(grant.token, csr, world.ca)
    fresh = await world.ctx.session.get(Device, grant.device_id)
    assert fresh is not None and fresh.replaces_device_id == device.id
    assert fresh.status is DeviceStatus.ACTIVE


async def test_tcu_replacement_revokes_the_old_device_in_the_same_transaction(
    world: DeviceWorld,
) -> None:
    _credentials, old = await world.enrol(world.car)
    replacement = await DeviceLifecycle(world.ctx).replace_tcu(
        world.case, world.technician, actor=FACTORY
    )
    assert replacement.revoked_device_id == old.id
    assert old.status is DeviceStatus.REVOKED and old.status_reason == "tcu-replaced"
    assert [c.status for c in await _certificates(world, old)] == [CertificateStatus.REVOKED]
    enrolment = await world.ctx.session.get(DeviceEnrolment, replacement.enrolment.enrolment_id)
    assert enrolment is not None
    assert (enrolment.kind, enrolment.dealer_case_id, enrolment.replaces_device_id) == (
        EnrolmentKind.REPLACEMENT,
        world.case.id,
        old.id,
    )
    [replaced] = await world.events(EventName.DEVICE_TCU_REPLACED.value, world.car.id)
    assert replaced.details["revoked_device"] == old.id
    assert replaced.details["case"] == world.case.id
    # The new TCU enrols while the case is open.
    key = generate_key()
    grant = replacement.enrolment
    csr = build_csr(key, device_id=grant.device_id, vehicle_id=world.car.id)
    issued = await Provisioning(world.ctx).enrol(grant.token, csr, world.ca)
    assert issued.device_id == grant.device_id


@dataclass
class Scene:
    world: DeviceWorld
    device: Device  # the car's live identity
    credentials: DeviceCredentials
    superseded: Device  # the car's first identity, revoked
    revoked: Device
    decommissioned: Device
    lapsing_technician: User
    closed_case: DealerCase


@pytest.fixture
async def scene(world: DeviceWorld) -> Scene:
    ctx = world.ctx
    lifecycle = DeviceLifecycle(ctx)
    _c, superseded = await world.enrol(world.car)
    await lifecycle.revoke(superseded, reason="lost", actor=FACTORY)
    credentials, device = await world.enrol(world.car)
    _c, revoked = await world.enrol(world.other_car)
    await lifecycle.revoke(revoked, reason="lost", actor=FACTORY)
    _c, decommissioned = await world.enrol(world.other_car)
    await lifecycle.decommission(decommissioned, reason="end-of-life", actor=FACTORY)
    lapsing = await Directory(ctx).create_user(
        "lapsing-tech", "Tech", world.dealer, password_hash=None, actor=FACTORY
    )
    await Directory(ctx).grant_membership(
        lapsing,
        world.dealer,
        Role.DEALER_TECHNICIAN,
        actor=FACTORY,
        valid_until=ctx.clock.now() + timedelta(hours=1),
    )
    cases = CaseService(ctx)
    await cases.assign_technician(world.case, lapsing, actor=FACTORY)
    closed = await cases.open_dealer_case(world.dealer, world.car, "done", actor=FACTORY)
    await cases.assign_technician(closed, world.technician, actor=FACTORY)
    await cases.close_dealer_case(closed, actor=FACTORY)
    return Scene(world, device, credentials, superseded, revoked, decommissioned, lapsing, closed)


Attempt = Callable[[Scene], Awaitable[object]]


def _on(pick: str, move: Callable[[DeviceLifecycle, Device], Awaitable[object]]) -> Attempt:
    async def attempt(s: Scene) -> object:
        return await move(DeviceLifecycle(s.world.ctx), getattr(s, pick))

    return attempt


def _rotate(*, device_id: str | None = None, reuse_key: bool = False) -> Attempt:
    async def attempt(s: Scene) -> object:
        key = s.credentials.key if reuse_key else generate_key()
        csr = build_csr(key, device_id=device_id or s.device.id, vehicle_id=s.device.vehicle_id)
        return await DeviceLifecycle(s.world.ctx).rotate(s.device, csr, s.world.ca, actor=FACTORY)

    return attempt


async def _rotate_revoked(s: Scene) -> object:
    csr = build_csr(generate_key(), device_id=s.revoked.id, vehicle_id=s.revoked.vehicle_id)
    return await DeviceLifecycle(s.world.ctx).rotate(s.revoked, csr, s.world.ca, actor=FACTORY)


def _reason(text: str) -> Attempt:
    async def attempt(s: Scene) -> object:
        return await DeviceLifecycle(s.world.ctx).suspend(s.device, reason=text, actor=FACTORY)

    return attempt


def _replace(technician: str, *, closed: bool = False, advance: timedelta | None = None) -> Attempt:
    async def attempt(s: Scene) -> object:
        world = s.world
        if advance is not None:
            clock = world.platform.clock
            assert isinstance(clock, FrozenClock)
            clock.advance(advance)
        who = getattr(s, technician, None) or getattr(world, technician)
        case = s.closed_case if closed else world.case
        return await DeviceLifecycle(world.ctx).replace_tcu(case, who, actor=FACTORY)

    return attempt


async def _re_enrol_decommissioned(s: Scene) -> object:
    return await DeviceLifecycle(s.world.ctx).re_enrol(
        s.decommissioned, reason="retry", actor=FACTORY
    )


async def _re_enrol_superseded(s: Scene) -> object:
    # The car's first identity was replaced: re-enrolling it would give the car two devices.
    return await DeviceLifecycle(s.world.ctx).re_enrol(s.superseded, reason="retry", actor=FACTORY)


REFUSALS: list[tuple[str, Attempt, type[FleetwardError], str | None]] = [
    # A status machine, not a set of flags: no transition from where it does not lead.
    ("suspend-revoked", _on("revoked", _suspend), TransitionRefused, "revoked"),
    (
        "resume-active",
        _on("device", lambda lc, d: lc.resume(d, reason="x", actor=FACTORY)),
        TransitionRefused,
        "active",
    ),
    ("revoke-revoked", _on("revoked", _revoke), TransitionRefused, "revoked"),
    ("decommission-revoked", _on("revoked", _decommission), TransitionRefused, "revoked"),
    # An ended identity is never revived: a decommissioned TCU is not re-enrolled.
    ("revoke-decommissioned", _on("decommissioned", _revoke), TransitionRefused, "decommissioned"),
    ("re-enrol-decommissioned", _re_enrol_decommissioned, TransitionRefused, "decommissioned"),
    ("rotate-revoked", _rotate_revoked, TransitionRefused, "revoked"),
    # One live device per vehicle, re-enrolment included.
    ("re-enrol-superseded", _re_enrol_superseded, VehicleHasDevice, None),
    # Rotation is a new key for the same device and vehicle, nothing else.
    ("rotate-other-device", _rotate(device_id="dev_" + "z" * 26), CsrRefused, "subject"),
    ("rotate-same-key", _rotate(reuse_key=True), CsrRefused, "key-reused"),
    # Reasons are codes: free text could carry personal data into the audit log.
    ("reason-free-text", _reason("Customer John said it was stolen"), InvalidInput, "reason"),
    ("reason-empty", _reason(""), InvalidInput, "reason"),
    ("reason-look-alike", _reason("l\u043est"), InvalidInput, "reason"),
    # TCU replacement only under an open case, by a technician assigned to it, holding the role.
    (
        "replace-closed-case",
        _replace("technician", closed=True),
        ReplacementRefused,
        "case-not-open",
    ),
    ("replace-unassigned", _replace("unassigned_technician"), ReplacementRefused, "not-assigned"),
    ("replace-by-owner", _replace("owner"), ReplacementRefused, "not-assigned"),
    (
        "replace-role-lapsed",
        _replace("lapsing_technician", advance=timedelta(hours=2)),
        ReplacementRefused,
        "not-technician",
    ),
]


@pytest.mark.parametrize(
    ("case", "attempt", "error", "reason"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
async def test_refused_and_store_unchanged(
    scene: Scene, case: str, attempt: Attempt, error: type[FleetwardError], reason: str | None
) -> None:
    before = await snapshot(scene.world.ctx.session)
    with pytest.raises(error) as raised:
        await attempt(scene)
    assert raised.value.status in {403, 404, 409, 422}
    if reason is not None:
        assert raised.value.reason == reason
    assert await snapshot(scene.world.ctx.session) == before


async def _revoked_elsewhere(world: DeviceWorld, device: Device) -> None:
    """An admin's revocation, committed by another transaction."""
    async with world.platform.services() as (uow, ctx):
        fresh = await ctx.session.get(Device, device.id)
        assert fresh is not None
        await DeviceLifecycle(ctx).revoke(fresh, reason="compromised", actor=FACTORY)
        await uow.commit()


async def test_a_revocation_is_never_undone_by_a_move_judged_before_it(
    world: DeviceWorld,
) -> None:
    # A quarantined device is read (for an admin's resume); another admin's revocation
    # commits before the resume writes: the resume is refused and the device stays revoked.
    _credentials, device = await world.enrol()
    lifecycle = DeviceLifecycle(world.ctx)
    await lifecycle.quarantine(device, reason="clone-test", actor=FACTORY, details={})
    await world.ctx.session.commit()
    await world.ctx.session.refresh(device)
    assert device.status is DeviceStatus.QUARANTINED  # as this transaction read it
    await _revoked_elsewhere(world, device)
    with pytest.raises(TransitionRefused) as refused:
        await lifecycle.resume(device, reason="false-positive", actor=FACTORY)
    assert refused.value.reason == "device-changed"
    device_id = device.id
    await world.ctx.session.rollback()
    status, ended = (
        await world.ctx.session.execute(
            select(Device.status, Device.ended_at).where(Device.id == device_id)
        )
    ).one()
    assert status is DeviceStatus.REVOKED and ended is not None
    assert await world.events(EventName.DEVICE_RESUMED.value, device_id) == []


async def test_a_rotation_revoked_before_its_first_use_is_not_activated(
    world: DeviceWorld,
) -> None:
    # The handshake read the pending certificate of a rotation; the device is revoked before
    # the handshake records the certificate's first use: the certificate stays revoked (it
    # would otherwise leave the CRL the broker trusts) and the session is refused.
    _credentials, device = await world.enrol()
    lifecycle = DeviceLifecycle(world.ctx)
    csr = build_csr(generate_key(), device_id=device.id, vehicle_id=device.vehicle_id)
    issued = await lifecycle.rotate(device, csr, world.ca, actor=FACTORY)
    pending = next(c for c in await _certificates(world, device) if c.serial == issued.serial)
    await world.ctx.session.commit()
    await world.ctx.session.refresh(device)
    await world.ctx.session.refresh(pending)
    assert pending.status is CertificateStatus.PENDING  # as the handshake read it
    await _revoked_elsewhere(world, device)
    with pytest.raises(TransitionRefused) as refused:
        await lifecycle.complete_rotation(device, pending, actor=FACTORY)
    assert refused.value.reason == "certificate-changed"
    device_id = device.id
    await world.ctx.session.rollback()
    statuses = set(
        await world.ctx.session.scalars(
            select(DeviceCertificate.status).where(DeviceCertificate.device_id == device_id)
        )
    )
    assert statuses == {CertificateStatus.REVOKED}


async def test_a_rotation_is_never_started_on_a_device_revoked_after_it_was_read(
    world: DeviceWorld,
) -> None:
    # An admin's rotation read the device active; another admin's revocation commits before
    # the rotation writes its certificate: without a check at the write, the ended identity
    # would hold a pending certificate its revocation never saw (valid for a year, off the CRL
    # the broker trusts). The rotation is refused and the device keeps only revoked ones.
    _credentials, device = await world.enrol()
    await world.ctx.session.commit()
    await world.ctx.session.refresh(device)
    assert device.status is DeviceStatus.ACTIVE  # as the rotation read it
    await _revoked_elsewhere(world, device)
    csr = build_csr(generate_key(), device_id=device.id, vehicle_id=device.vehicle_id)
    with pytest.raises(TransitionRefused) as refused:
        await DeviceLifecycle(world.ctx).rotate(device, csr, world.ca, actor=FACTORY)
    assert refused.value.reason == "device-changed"
    device_id = device.id
    await world.ctx.session.rollback()
    statuses = set(
        await world.ctx.session.scalars(
            select(DeviceCertificate.status).where(DeviceCertificate.device_id == device_id)
        )
    )
    assert statuses == {CertificateStatus.REVOKED}
    assert await world.events(EventName.DEVICE_ROTATION_STARTED.value, device_id) == []


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_rotation_never_revokes_a_certificate_a_handshake_activated_meanwhile(
    world: DeviceWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second rotation read the first one's certificate as pending; the device's handshake
    # uses it for the first time (activating it, revoking the old one) and commits before the
    # rotation writes. The rotation must not revoke it: the device would hold no usable
    # certificate. PostgreSQL only: on SQLite the rotation holds the write lock from its
    # device check on, so the handshake cannot commit in between.
    _credentials, device = await world.enrol()
    lifecycle = DeviceLifecycle(world.ctx)
    csr = build_csr(generate_key(), device_id=device.id, vehicle_id=device.vehicle_id)
    first = await lifecycle.rotate(device, csr, world.ca, actor=FACTORY)
    await world.ctx.session.commit()
    read_pending = DeviceLifecycle._certificates

    async def handshake_meanwhile(
        self: DeviceLifecycle, judged: Device, statuses: set[CertificateStatus]
    ) -> list[DeviceCertificate]:
        read = await read_pending(self, judged, statuses)
        if statuses == {CertificateStatus.PENDING}:
            async with world.platform.services() as (uow, ctx):
                fresh = await ctx.session.get(Device, judged.id)
                pending = await ctx.session.scalar(
                    select(DeviceCertificate).where(DeviceCertificate.serial == first.serial)
                )
                assert fresh is not None and pending is not None
                await DeviceLifecycle(ctx).complete_rotation(fresh, pending, actor=FACTORY)
                await uow.commit()
        return read

    monkeypatch.setattr(DeviceLifecycle, "_certificates", handshake_meanwhile)
    csr = build_csr(generate_key(), device_id=device.id, vehicle_id=device.vehicle_id)
    second = await lifecycle.rotate(device, csr, world.ca, actor=FACTORY)
    await world.ctx.session.commit()
    statuses = {
        serial: status
        for serial, status in await world.ctx.session.execute(
            select(DeviceCertificate.serial, DeviceCertificate.status).where(
                DeviceCertificate.device_id == device.id
            )
        )
    }
    assert statuses.pop(first.serial) is CertificateStatus.ACTIVE  # what the device now uses
    assert statuses.pop(second.serial) is CertificateStatus.PENDING
    assert list(statuses.values()) == [CertificateStatus.REVOKED]  # the enrolment's, rotated


async def test_a_blast_radius_from_a_device_finds_its_vehicle(world: DeviceWorld) -> None:
    # Threat: a device key is stolen, and the investigator asks what that device reached
    # (fleetward investigate blast-radius device ...). Its records named the vehicle in their
    # details only, never in the column the blast radius reads: the answer was no vehicle.
    _credentials, device = await world.enrol()
    certificate = (await _certificates(world, device))[0]
    await world.ctx.session.commit()
    opened = SessionLedger(world.platform.services).record(
        SessionOpened(
            device_id=device.id,
            certificate_id=certificate.id,
            serial=certificate.serial,
            vehicle_id=device.vehicle_id,
            tenant_id=world.car.tenant_id,
            status=device.status,
            session_id="ses_blast",
            peer="192.0.2.7",
            software_version="1.0.0",
            at=world.platform.clock.now(),
        )
    )
    await opened
    found = await blast_radius(world.ctx.session, BlastQuery(Subject.DEVICE, device.id))
    assert [v.vehicle_id for v in found.vehicles] == [world.car.id]
    assert found.vehicles[0].events == 2  # its provisioning and its session


async def test_a_completed_rotation_to_another_key_type_is_the_devices_key_type(
    world: DeviceWorld,
) -> None:
    # The device identity says which kind of key it holds (the admin's view of it); after a
    # rotation from an Ed25519 key to a P-256 one it went on naming the key it no longer has.
    _credentials, device = await world.enrol(algorithm=KeyAlgorithm.ED25519)
    lifecycle = DeviceLifecycle(world.ctx)
    csr = build_csr(
        generate_key(KeyAlgorithm.P256), device_id=device.id, vehicle_id=device.vehicle_id
    )
    issued = await lifecycle.rotate(device, csr, world.ca, actor=FACTORY)
    pending = next(c for c in await _certificates(world, device) if c.serial == issued.serial)
    await lifecycle.complete_rotation(device, pending, actor=FACTORY)
    await world.ctx.session.commit()
    await world.ctx.session.refresh(device)
    assert device.key_algorithm is KeyAlgorithm.P256
