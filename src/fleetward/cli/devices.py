"""``fleetward devices``: the device lifecycle for operators on the platform host.

Thin commands over the same services as the API, acting as the system actor ``cli:devices``
(the shell account is the operator's identity; the audit log names the command). Sessions of a
device changed here are closed by the running gateway's credential watcher within its poll
interval, not instantly: the API closes them at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import select

from fleetward.audit.recorder import Actor
from fleetward.cli.runtime import load_or_exit
from fleetward.core.errors import FleetwardError
from fleetward.devices.ca import load_device_ca
from fleetward.devices.errors import CaseNotFound
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import DeviceCertificate
from fleetward.devices.provisioning import EnrolmentGrant, Provisioning
from fleetward.identity.directory import Directory
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.settings import Settings
from fleetward.store.uow import UnitOfWork
from fleetward.vehicles.errors import VehicleNotFound
from fleetward.vehicles.models import DealerCase, Vehicle

app = typer.Typer(no_args_is_help=True, help="device identities: enrol, rotate, revoke, ...")
ACTOR = Actor.system("cli:devices")
T = TypeVar("T")

Hours = Annotated[int, typer.Option(min=1, max=168, help="enrolment token lifetime (hours)")]
Reason = Annotated[str, typer.Option(help="a short reason code, e.g. lost, compromised")]


def _run(work: Callable[[Platform, UnitOfWork, ServiceContext], Awaitable[T]]) -> T:
    """Run ``work`` in one committed transaction; a refusal exits with status 1."""
    settings = load_or_exit()

    async def main(settings: Settings) -> T:
        platform = Platform.build(settings)
        try:
            async with platform.services() as (uow, ctx):
                result = await work(platform, uow, ctx)
                await uow.commit()
                return result
        finally:
            await platform.close()

    try:
        return asyncio.run(main(settings))
    except FleetwardError as refused:
        reason = f" ({refused.reason})" if refused.reason else ""
        typer.echo(f"fleetward: {refused.title}: {refused.detail}{reason}", err=True)
        raise typer.Exit(1) from None


def _echo(document: dict[str, Any]) -> None:
    typer.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def _grant(grant: EnrolmentGrant) -> dict[str, Any]:
    return {
        "token": grant.token,
        "enrolment_id": grant.enrolment_id,
        "kind": grant.kind.value,
        "device_id": grant.device_id,
        "vehicle_id": grant.vehicle_id,
        "expires_at": grant.expires_at.isoformat(),
    }


@app.command("enrol")
def enrol_command(vehicle_id: str, hours: Hours = 24) -> None:
    """Create a one-time enrolment token for a vehicle's first TCU (printed once)."""

    async def work(_p: Platform, _u: UnitOfWork, ctx: ServiceContext) -> EnrolmentGrant:
        vehicle = await ctx.session.get(Vehicle, vehicle_id)
        if vehicle is None:
            raise VehicleNotFound("no such vehicle")
        return await Provisioning(ctx).create_enrolment(
            vehicle, actor=ACTOR, lifetime=timedelta(hours=hours)
        )

    _echo(_grant(_run(work)))


@app.command("show")
def show_command(device_id: str) -> None:
    """A device's status and certificates."""

    async def work(_p: Platform, _u: UnitOfWork, ctx: ServiceContext) -> dict[str, Any]:
        device = await DeviceLifecycle(ctx).get(device_id)
        certificates = await ctx.session.scalars(
            select(DeviceCertificate)
            .where(DeviceCertificate.device_id == device.id)
            .order_by(DeviceCertificate.issued_at)
        )
        return {
            "id": device.id,
            "vehicle_id": device.vehicle_id,
            "status": device.status.value,
            "status_reason": device.status_reason,
            "last_seen_at": device.last_seen_at,
            "certificates": [
                {"serial": c.serial, "status": c.status.value, "not_after": c.not_after}
                for c in certificates
            ],
        }

    _echo(_run(work))


def _transition(operation: str) -> Callable[[str, str], None]:
    def command(device_id: str, reason: Reason) -> None:
        async def work(_p: Platform, _u: UnitOfWork, ctx: ServiceContext) -> dict[str, Any]:
            lifecycle = DeviceLifecycle(ctx)
            device = await lifecycle.get(device_id)
            move = {
                "suspend": lifecycle.suspend,
                "resume": lifecycle.resume,
                "revoke": lifecycle.revoke,
                "decommission": lifecycle.decommission,
            }[operation]
            await move(device, reason=reason, actor=ACTOR)
            return {"id": device.id, "status": device.status.value}

        _echo(_run(work))

    command.__doc__ = f"{operation.capitalize()} a device (audited)."
    return command


for _operation in ("suspend", "resume", "revoke", "decommission"):
    app.command(_operation)(_transition(_operation))


@app.command("rotate")
def rotate_command(
    device_id: str,
    csr: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="the new key's CSR")],
) -> None:
    """Certify a device's new key (pending until its first handshake)."""
    csr_pem = csr.read_text(encoding="ascii")

    async def work(platform: Platform, _u: UnitOfWork, ctx: ServiceContext) -> str:
        lifecycle = DeviceLifecycle(ctx)
        device = await lifecycle.get(device_id)
        ca = load_device_ca(platform.settings, platform.identity.data_key, platform.clock)
        return (await lifecycle.rotate(device, csr_pem, ca, actor=ACTOR)).certificate_pem

    typer.echo(_run(work), nl=False)


@app.command("re-enrol")
def re_enrol_command(device_id: str, reason: Reason, hours: Hours = 24) -> None:
    """End a device identity and create an enrolment token for fresh credentials."""

    async def work(_p: Platform, _u: UnitOfWork, ctx: ServiceContext) -> EnrolmentGrant:
        lifecycle = DeviceLifecycle(ctx)
        device = await lifecycle.get(device_id)
        return await lifecycle.re_enrol(
            device, reason=reason, actor=ACTOR, lifetime=timedelta(hours=hours)
        )

    _echo(_grant(_run(work)))


@app.command("replace-tcu")
def replace_tcu_command(
    case_id: str,
    technician: Annotated[str, typer.Option(help="username of the assigned technician")],
    hours: Hours = 24,
) -> None:
    """Replace a vehicle's TCU under an open dealer case (the old device is revoked)."""

    async def work(_p: Platform, _u: UnitOfWork, ctx: ServiceContext) -> dict[str, Any]:
        case = await ctx.session.get(DealerCase, case_id)
        if case is None:
            raise CaseNotFound("no such case")
        user = await Directory(ctx).user(technician)
        replacement = await DeviceLifecycle(ctx).replace_tcu(
            case, user, actor=ACTOR, lifetime=timedelta(hours=hours)
        )
        return {
            "revoked_device_id": replacement.revoked_device_id,
            **_grant(replacement.enrolment),
        }

    _echo(_run(work))


@app.command("ca-certificate")
def ca_certificate_command() -> None:
    """Print the device CA certificate (PEM), creating the CA on first use."""
    settings = load_or_exit()
    platform = Platform.build(settings)
    try:
        pem = load_device_ca(settings, platform.identity.data_key, platform.clock).certificate_pem
    finally:
        asyncio.run(platform.close())
    typer.echo(pem, nl=False)
