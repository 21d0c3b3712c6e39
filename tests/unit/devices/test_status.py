"""The status port the telemetry pipeline quarantines devices through (own transactions)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.devices.admission import StoreCredentialCheck
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import DeviceStatus
from fleetward.devices.status import StoreDeviceStatus
from fleetward.gateway.handshake import CloseCode
from fleetward.gateway.registry import LiveSession, SessionRegistry
from fleetward.gateway.session import DeviceSession, Transport
from fleetward.gateway.telemetry_link import TelemetryLink
from fleetward.platform import Platform
from support.factories import FACTORY
from unit.devices.kit import build_device_world


@pytest.fixture
async def devices(platform: Platform) -> tuple[str, str]:
    """(an active device, a revoked device), committed."""
    async with platform.services() as (uow, ctx):
        world = await build_device_world(platform, ctx)
        _c, active = await world.enrol(world.car)
        _c, revoked = await world.enrol(world.other_car)
        await DeviceLifecycle(ctx).revoke(revoked, reason="lost", actor=FACTORY)
        await uow.commit()
    return active.id, revoked.id


async def _quarantine_events(platform: Platform) -> list[AuditRecord]:
    async with platform.unit_of_work() as uow:
        rows = await uow.session.scalars(
            select(AuditRecord).where(AuditRecord.name == EventName.DEVICE_QUARANTINED.value)
        )
        return list(rows)


async def test_quarantine_is_recorded_once(platform: Platform, devices: tuple[str, str]) -> None:
    active, _revoked = devices
    port = StoreDeviceStatus(platform)
    await port.quarantine(active, "telemetry-repeated-rejections")
    await port.quarantine(active, "telemetry-repeated-rejections")  # a retry: idempotent
    assert await port.status(active) is DeviceStatus.QUARANTINED
    [event] = await _quarantine_events(platform)
    assert (event.actor_id, event.reason) == ("telemetry", "telemetry-repeated-rejections")
    assert await port.quarantined_devices() == [active]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        # An ended identity stays ended: a quarantine never revives or relabels it.
        ("revoked", "telemetry-repeated-rejections"),
        # Ids that are not ours are ignored, not errors the pipeline would retry forever.
        ("dev_" + "z" * 26, "telemetry"),
        ("'; drop table devices; --", "telemetry"),
    ],
)
async def test_nothing_to_quarantine_changes_nothing(
    platform: Platform, devices: tuple[str, str], target: str, reason: str
) -> None:
    active, revoked = devices
    port = StoreDeviceStatus(platform)
    await port.quarantine(revoked if target == "revoked" else target, reason)
    assert await port.status(revoked) is DeviceStatus.REVOKED
    assert await port.status(active) is DeviceStatus.ACTIVE
    assert await _quarantine_events(platform) == []


async def test_a_quarantine_never_lifts_a_suspension(
    platform: Platform, devices: tuple[str, str]
) -> None:
    # A frame handled as an admin suspends the device: its refusal asks for a quarantine.
    # A quarantined device is admitted (frames set apart); a suspended one is not: the
    # quarantine must leave the suspension as it is.
    active, _revoked = devices
    async with platform.services() as (uow, ctx):
        lifecycle = DeviceLifecycle(ctx)
        await lifecycle.suspend(await lifecycle.get(active), reason="investigation", actor=FACTORY)
        await uow.commit()
    port = StoreDeviceStatus(platform)
    await port.quarantine(active, "telemetry-foreign-identity")
    assert await port.status(active) is DeviceStatus.SUSPENDED
    assert await _quarantine_events(platform) == []


async def test_free_text_reason_is_replaced_by_a_code(
    platform: Platform, devices: tuple[str, str]
) -> None:
    active, _revoked = devices
    await StoreDeviceStatus(platform).quarantine(active, "Frames from\nsomewhere odd")
    [event] = await _quarantine_events(platform)
    assert event.reason == "telemetry"


async def test_a_device_quarantined_before_start_is_released_by_its_next_active_session(
    platform: Platform, devices: tuple[str, str]
) -> None:
    # Quarantined in the store before this process started: the pipeline is seeded with it.
    # Resumed since (by the CLI or another replica) while it had no session here, its next
    # session is admitted active: the pipeline must let its data through again.
    active, _revoked = devices
    await StoreDeviceStatus(platform).quarantine(active, "telemetry-repeated-rejections")
    link = TelemetryLink(platform)
    registry = SessionRegistry(
        platform.clock,
        StoreCredentialCheck(platform.sessions, platform.clock),
        link.observer,
        liveness_window=timedelta(seconds=30),
        poll_interval=timedelta(seconds=60),
    )
    link.attach(registry)
    await link.start()
    try:
        quarantine = link.pipeline.stages.quarantine
        assert quarantine.reason(active) == "quarantined-before-start"
        async with platform.services() as (uow, ctx):
            lifecycle = DeviceLifecycle(ctx)
            await lifecycle.resume(await lifecycle.get(active), reason="ok", actor=FACTORY)
            await uow.commit()
        live = _live_session(platform, active)
        registry.claim(live, status=DeviceStatus.ACTIVE)
        assert quarantine.reason(active) is None
        registry.release(live)
        await registry.idle()
    finally:
        await link.stop()


def _live_session(platform: Platform, device_id: str) -> LiveSession:
    async def closer(code: CloseCode) -> None:
        return None

    now = platform.clock.now()
    session = DeviceSession(
        session_id="ses_" + "s" * 26,
        device_id=device_id,
        vehicle_id="veh_" + "v" * 26,
        tenant_id="ten_" + "t" * 26,
        certificate_serial="ab",
        session_key=bytes(32),
        transport=Transport.WEBSOCKET,
        peer="10.0.0.1",
        software_version="1",
        vehicle_config="c",
        established_at=now,
    )
    return LiveSession(session, now, closer)
