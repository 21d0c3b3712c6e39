"""``fleetward devices``: the lifecycle from the operator's shell, on the embedded store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from fleetward.audit.models import AuditRecord
from fleetward.cli.devices import app
from fleetward.cli.runtime import migrate_store
from fleetward.devices.ca import load_device_ca
from fleetward.devices.models import Device, DeviceStatus
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway.device_client import build_csr, generate_key
from fleetward.identity.models import TenantKind
from fleetward.platform import Platform
from fleetward.settings import Settings, load_settings
from support.factories import WorldFactory


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FLEETWARD_DATA_DIR", str(tmp_path / "var"))
    settings = load_settings()
    asyncio.run(migrate_store(settings))
    return settings


def _vehicle(settings: Settings) -> str:
    async def seed() -> str:
        platform = Platform.build(settings)
        try:
            async with platform.services() as (uow, ctx):
                world = WorldFactory(ctx)
                owner = await world.user(await world.tenant(TenantKind.CONSUMER))
                vehicle = await world.owned_vehicle(owner)
                await uow.commit()
                return vehicle.id
        finally:
            await platform.close()

    return asyncio.run(seed())


def _redeem(settings: Settings, token: str, device_id: str, vehicle_id: str) -> None:
    async def redeem() -> None:
        platform = Platform.build(settings)
        try:
            async with platform.services() as (uow, ctx):
                ca = load_device_ca(settings, platform.identity.data_key, platform.clock)
                csr = build_csr(generate_key(), device_id=device_id, vehicle_id=vehicle_id)
                await Provisioning(ctx).enrol(token, csr, ca)
                await uow.commit()
        finally:
            await platform.close()

    asyncio.run(redeem())


def _stored(settings: Settings, device_id: str) -> tuple[DeviceStatus, list[str]]:
    async def read() -> tuple[DeviceStatus, list[str]]:
        platform = Platform.build(settings)
        try:
            async with platform.unit_of_work() as uow:
                device = await uow.session.get(Device, device_id)
                assert device is not None
                names = await uow.session.scalars(
                    select(AuditRecord.name).where(AuditRecord.object_id == device_id)
                )
                return device.status, list(names)
        finally:
            await platform.close()

    return asyncio.run(read())


def test_enrol_show_suspend_resume_revoke(env: Settings) -> None:
    runner = CliRunner()
    vehicle_id = _vehicle(env)
    enrolled = runner.invoke(app, ["enrol", vehicle_id, "--hours", "2"])
    assert enrolled.exit_code == 0, enrolled.output
    grant = json.loads(enrolled.stdout)
    assert grant["vehicle_id"] == vehicle_id and grant["token"].startswith("fwenrol_")
    _redeem(env, grant["token"], grant["device_id"], vehicle_id)
    device_id = grant["device_id"]
    shown = runner.invoke(app, ["show", device_id])
    assert json.loads(shown.stdout)["status"] == "active"
    for command, status in (("suspend", "suspended"), ("resume", "active"), ("revoke", "revoked")):
        result = runner.invoke(app, [command, device_id, "--reason", "investigation"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["status"] == status
    stored, events = _stored(env, device_id)
    assert stored is DeviceStatus.REVOKED
    assert {
        "device:identity:suspended",
        "device:identity:resumed",
        "device:identity:revoked",
    } <= set(events)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Refusals exit 1 with the problem's title and reason, never a traceback.
        (["revoke", "dev_" + "a" * 26, "--reason", "lost"], "Device not found"),
        (["suspend", "not-an-id", "--reason", "lost"], "Device not found"),
        (["replace-tcu", "dcs_" + "a" * 26, "--technician", "nobody"], "Case not found"),
        (["enrol", "veh_" + "a" * 26], "Vehicle not found"),
    ],
)
def test_refusals_exit_1_with_the_problem(env: Settings, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_free_text_reason_is_refused(env: Settings) -> None:
    runner = CliRunner()
    vehicle_id = _vehicle(env)
    grant = json.loads(runner.invoke(app, ["enrol", vehicle_id]).stdout)
    _redeem(env, grant["token"], grant["device_id"], vehicle_id)
    result = runner.invoke(app, ["revoke", grant["device_id"], "--reason", "Owner said so"])
    assert result.exit_code == 1 and "(reason)" in result.output
    assert _stored(env, grant["device_id"])[0] is DeviceStatus.ACTIVE


def test_ca_certificate_is_printed(env: Settings) -> None:
    result = CliRunner().invoke(app, ["ca-certificate"])
    assert result.exit_code == 0
    assert result.stdout.startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" not in result.stdout
