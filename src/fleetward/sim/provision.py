"""Provisioning a simulated fleet: which vehicles, their enrolments, and their device keys.

Design. Enrolment tokens are created on the platform host, the way ``fleetward devices enrol``
creates them: through the provisioning services, in one audited transaction, acting as the
system actor ``sim:provisioner`` (no admin password or token is needed, and none is stored).
Each simulated TCU then does what a real one does: it generates its key, builds its CSR and
redeems its token over HTTP (``POST /gateway/v1/enrol``) against the running server. The keys
and certificates are kept in ``<data dir>/sim/devices.json`` (mode 0600, like the demo logins)
so that the next run reuses the same device identities.

Which vehicles: the demo world's, in the order of ``fleetward.demo.world.VEHICLES``; a larger
fleet adds vehicles ``SIM-00001``… in a fleet tenant ``sim-fleet`` (created on first use).
A vehicle whose live device the file does not know is left alone: the simulator never takes
over a device identity it did not create. One it created that is no longer active (a previous
run's faults quarantined it) is re-enrolled (the old identity is revoked, audited).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from fleetward.audit.recorder import Actor
from fleetward.core.vin import random_vin
from fleetward.demo.world import VEHICLES
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import DeviceStatus
from fleetward.devices.provisioning import EnrolmentGrant, Provisioning
from fleetward.gateway.device_client import (
    DeviceCredentials,
    EnrolmentFailed,
    enrol,
    generate_key,
)
from fleetward.identity.directory import Directory
from fleetward.identity.errors import UnknownTenant
from fleetward.identity.models import Tenant, TenantKind
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.errors import DuplicateVin
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.registry import VehicleRegistry

PROVISIONER: Final = Actor.system("sim:provisioner")
SIM_TENANT_SLUG: Final = "sim-fleet"
SIM_LABEL_PREFIX: Final = "SIM-"
REPROVISION_REASON: Final = "sim-reprovision"
_VIN_ATTEMPTS: Final = 5
ENROL_CONCURRENCY: Final = 8
ENROL_ATTEMPTS: Final = 5
ENROL_BACKOFF_S: Final = 0.2


def devices_file(data_dir: Path) -> Path:
    return data_dir / "sim" / "devices.json"


@dataclass(frozen=True, slots=True)
class SimDevice:
    label: str
    credentials: DeviceCredentials


@dataclass(frozen=True, slots=True)
class ProvisionedFleet:
    devices: tuple[SimDevice, ...]
    enrolled: int  # new identities this run
    reused: int
    skipped: tuple[str, ...]  # labels of vehicles with a device the simulator did not create


class DeviceFile:
    """The simulator's device keys and certificates, by vehicle id (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def load(self) -> dict[str, SimDevice]:
        if not self._path.exists():
            return {}
        raw = json.loads(self._path.read_text(encoding="utf-8"))
        found: dict[str, SimDevice] = {}
        for vehicle_id, entry in raw.items():
            key = serialization.load_pem_private_key(entry["key"].encode("ascii"), None)
            command_keys = entry.get("command_keys") or {}
            credentials = DeviceCredentials.from_pem(
                key,  # type: ignore[arg-type]  # written by save(): Ed25519 or P-256 only
                entry["certificate"],
                entry["ca_certificate"],
                device_id=entry["device_id"],
                vehicle_id=vehicle_id,
                # Devices enrolled before commands existed trust no command key.
                command_key=next(iter(command_keys.items()), None),
            )
            found[vehicle_id] = SimDevice(entry["label"], credentials)
        return found

    def save(self, devices: dict[str, SimDevice]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        document = {
            vehicle_id: {
                "label": device.label,
                "device_id": device.credentials.device_id,
                "key": device.credentials.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode("ascii"),
                "certificate": device.credentials.certificate.public_bytes(
                    serialization.Encoding.PEM
                ).decode("ascii"),
                "ca_certificate": (
                    device.credentials.ca_certificate.public_bytes(
                        serialization.Encoding.PEM
                    ).decode("ascii")
                    if device.credentials.ca_certificate
                    else ""
                ),
                "command_keys": device.credentials.command_key_pems,
            }
            for vehicle_id, device in devices.items()
        }
        temporary = self._path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
        os.replace(temporary, self._path)


async def fleet_vehicles(ctx: ServiceContext, count: int) -> list[Vehicle]:
    """The first ``count`` vehicles of the simulated fleet, registering sim vehicles as
    needed beyond the demo world's."""
    demo_labels = [label for label, *_rest in VEHICLES]
    rows = await ctx.session.scalars(select(Vehicle).where(Vehicle.label.in_(demo_labels)))
    by_label = {vehicle.label: vehicle for vehicle in rows}
    chosen = [by_label[label] for label in demo_labels if label in by_label][:count]
    if len(chosen) == count:
        return chosen
    tenant = await _sim_tenant(ctx)
    existing = await ctx.session.scalars(
        select(Vehicle)
        .where(Vehicle.tenant_id == tenant.id, Vehicle.label.startswith(SIM_LABEL_PREFIX))
        .order_by(Vehicle.label)
    )
    chosen.extend(list(existing)[: count - len(chosen)])
    registry = VehicleRegistry(ctx)
    rng = random.SystemRandom()
    number = len(chosen) - len(by_label) + 1
    while len(chosen) < count:
        chosen.append(await _register(registry, rng, tenant, f"{SIM_LABEL_PREFIX}{number:05d}"))
        number += 1
    return chosen


async def _sim_tenant(ctx: ServiceContext) -> Tenant:
    directory = Directory(ctx)
    try:
        return await directory.tenant(SIM_TENANT_SLUG)
    except UnknownTenant:
        return await directory.create_tenant(
            SIM_TENANT_SLUG, "Simulated fleet", TenantKind.FLEET, actor=PROVISIONER
        )


async def _register(
    registry: VehicleRegistry, rng: random.Random, tenant: Tenant, label: str
) -> Vehicle:
    for _attempt in range(_VIN_ATTEMPTS):
        try:
            return await registry.register(
                random_vin(rng, wmi="1FV").value,
                label=label,
                model="Fleetward Hauler",
                region="NA",
                tenant=tenant,
                actor=PROVISIONER,
            )
        except DuplicateVin:
            continue  # a random VIN met an existing one: draw again (nothing was written)
    raise DuplicateVin("no free VIN found for a simulated vehicle")


async def provision_fleet(
    platform: Platform, http: httpx.AsyncClient, count: int, *, path: Path | None = None
) -> ProvisionedFleet:
    """Device identities for ``count`` vehicles; ``http`` reaches the running server."""
    if count < 1:
        raise ValueError("a fleet has at least one vehicle")
    store = DeviceFile(path or devices_file(platform.settings.data_dir))
    known = store.load()
    grants: list[tuple[str, EnrolmentGrant]] = []
    reused: list[SimDevice] = []
    skipped: list[str] = []
    async with platform.services() as (uow, ctx):
        vehicles = await fleet_vehicles(ctx, count)
        provisioning = Provisioning(ctx)
        for vehicle in vehicles:
            ours = known.get(vehicle.id)
            live = await provisioning.live_device(vehicle.id)
            if live is None:
                grants.append(
                    (vehicle.label, await provisioning.create_enrolment(vehicle, actor=PROVISIONER))
                )
            elif ours is None or ours.credentials.device_id != live.id:
                skipped.append(vehicle.label)
            elif live.status is DeviceStatus.ACTIVE:
                reused.append(ours)
            else:
                grant = await DeviceLifecycle(ctx).re_enrol(
                    live, reason=REPROVISION_REASON, actor=PROVISIONER
                )
                grants.append((vehicle.label, grant))
        await uow.commit()
    enrolled: list[SimDevice] = []
    try:
        await _redeem(http, grants, enrolled)
    finally:
        # Kept even if a redemption failed midway: those identities are ours to reuse.
        for device in enrolled:
            known[device.credentials.vehicle_id] = device
        store.save(known)
    order = {vehicle.id: n for n, vehicle in enumerate(vehicles)}
    devices = sorted([*reused, *enrolled], key=lambda d: order[d.credentials.vehicle_id])
    return ProvisionedFleet(tuple(devices), len(enrolled), len(reused), tuple(skipped))


async def _redeem(
    http: httpx.AsyncClient,
    grants: Sequence[tuple[str, EnrolmentGrant]],
    enrolled: list[SimDevice],
) -> None:
    """Each simulated TCU makes its key and redeems its token, as a real one does
    (``ENROL_CONCURRENCY`` at a time; ``enrolled`` holds every one that succeeded)."""
    gate = asyncio.Semaphore(ENROL_CONCURRENCY)

    async def one(label: str, grant: EnrolmentGrant) -> None:
        key = generate_key()
        for attempt in range(ENROL_ATTEMPTS):
            try:
                async with gate:
                    credentials = await enrol(
                        http,
                        grant.token,
                        key,
                        device_id=grant.device_id,
                        vehicle_id=grant.vehicle_id,
                    )
                break
            except EnrolmentFailed as failed:
                # A server error spent nothing (the token is spent only in a committed
                # transaction): retry with back-off. A refusal is final.
                if failed.status < 500 or attempt == ENROL_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(ENROL_BACKOFF_S * 2**attempt)
        enrolled.append(SimDevice(label, credentials))

    async with asyncio.TaskGroup() as group:
        for label, grant in grants:
            group.create_task(one(label, grant))
