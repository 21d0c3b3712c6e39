"""A simulated fleet against the real server (uvicorn on loopback, the pipeline as `fleetward
serve` composes it): 20 vehicles of the demo world and the simulator's own fleet, one of each
fault among them, a bounded number of messages each, over the WebSocket.

What it proves: every clean vehicle's messages are acked and each is in the store once, with
its provenance; every fault is answered with its documented status (counted by reason from
the authenticated replies, one row of ``FAULT_TABLE`` each); nothing of a refused message
reaches ``telemetry_messages``; the offline vehicle's outbox arrives labelled
store-and-forward; a sleeping vehicle goes quiet and wakes in a new session; a flood is
refused for quota and only what was admitted is stored; the foreign-identity and clone
vehicles are quarantined and their data kept apart. Runs on SQLite and PostgreSQL.

The quota buckets run on a clock held still (``held_quotas``): no token comes back during
the run, so what the flood gets is decided by counts, never by the machine's speed.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from fleetward.app import build_app
from fleetward.core.clock import FrozenClock
from fleetward.demo.world import VEHICLES, seed_demo_world
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import Device, DeviceIncident, DeviceStatus, IncidentKind
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway import telemetry_link
from fleetward.gateway.device_client import enrol, generate_key
from fleetward.gateway.websocket import gateway_of
from fleetward.platform import Platform
from fleetward.sim.demo import serve_with_fleet
from fleetward.sim.driver import DriveConfig
from fleetward.sim.faults import EXPECTED, Fault, FaultAssignment
from fleetward.sim.provision import SIM_LABEL_PREFIX, devices_file, provision_fleet
from fleetward.sim.runner import FleetMember, FleetReport, FleetRunner, VehicleResult
from fleetward.sim.transport import Endpoint, WebSocketTransport
from fleetward.telemetry.errors import Status
from fleetward.telemetry.models import QuarantinedMessage, TelemetryMessage
from fleetward.telemetry.pipeline import TelemetryPipeline
from fleetward.telemetry.quotas import DEFAULT_DEVICE_RATE, InProcessQuotas
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.registry import VehicleRegistry
from support.factories import FACTORY
from support.serve import served

FLEET = 20
MESSAGES = 9  # per vehicle (ticks); faults on ticks 3, 6 and 9
FLOOD_WINDOW = 16
CONFIG = DriveConfig(
    messages=MESSAGES,
    interval_s=0,
    fault_every=3,
    offline_ticks=2,
    sleep_ticks=1,
    flood_window=FLOOD_WINDOW,
)
BURST = int(DEFAULT_DEVICE_RATE.burst)  # a device's whole quota while the buckets' clock holds

# One row per fault: answered as documented (count), the device's status afterwards, what the
# store holds for it (telemetry rows, of which store-and-forward, quarantined rows judged
# acceptable), and the threat or behaviour it covers.
FAULT_TABLE: list[tuple[Fault, int, DeviceStatus, tuple[int, int, int], str]] = [
    # Offline: 2 + 2 + 1 messages from the outbox, each accepted, labelled.
    (Fault.OFFLINE, 5, DeviceStatus.ACTIVE, (9, 5, 0), "store-and-forward after a gap"),
    (Fault.CLOCK_DRIFT, 3, DeviceStatus.ACTIVE, (6, 0, 0), "the server's clock decides"),
    (Fault.REPLAY, 3, DeviceStatus.ACTIVE, (6, 0, 0), "a replayed frame is refused"),
    (Fault.TAMPER, 3, DeviceStatus.ACTIVE, (6, 0, 0), "integrity beyond TLS"),
    (Fault.OUT_OF_RANGE, 3, DeviceStatus.ACTIVE, (6, 0, 0), "impossible values refused"),
    # A payload naming another vehicle quarantines at once: what follows is kept apart.
    (Fault.FOREIGN, 3, DeviceStatus.QUARANTINED, (2, 0, 4), "identity is the session's"),
    # Both copies are answered "accepted" (neither is told); the data is kept apart.
    (Fault.CLONE, 3, DeviceStatus.QUARANTINED, (2, 0, 7), "cloned credentials detected"),
    (Fault.OVERSIZE, 3, DeviceStatus.ACTIVE, (6, 0, 0), "the size limit comes first"),
    (Fault.GARBAGE, 3, DeviceStatus.ACTIVE, (6, 0, 0), "a non-JSON payload is refused"),
    (Fault.WRONG_FRAME, 3, DeviceStatus.ACTIVE, (6, 0, 0), "not a telemetry frame: refused"),
    # The whole quota, then refusals: nothing above the quota is stored.
    (Fault.FLOOD, 3, DeviceStatus.ACTIVE, (BURST, 0, 0), "one device cannot flood"),
    # Ticks 3, 6, 9 fall asleep, 4 and 7 are quiet, 5 and 8 wake: 7 live messages.
    (Fault.SLEEP, 2, DeviceStatus.ACTIVE, (7, 0, 0), "a parked vehicle sleeps and wakes"),
]


@pytest.fixture
def held_quotas(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's pipeline, with quota buckets on a clock that does not move (the default
    rates: only the refill is held)."""

    class HeldQuotas(TelemetryPipeline):
        @classmethod
        def build(cls, *args: Any, **kwargs: Any) -> TelemetryPipeline:
            kwargs["quotas"] = InProcessQuotas(monotonic=lambda: 0.0)
            return super().build(*args, **kwargs)

    monkeypatch.setattr(telemetry_link, "TelemetryPipeline", HeldQuotas)


@asynccontextmanager
async def serving(platform: Platform, port: int) -> AsyncIterator[str]:
    """The platform's app on loopback; yields the server's name (its base URL setting)."""
    app = build_app(platform.settings, platform=platform)
    async with served(app, port):
        gateway = gateway_of(app)
        assert gateway is not None
        yield gateway.server_id


async def run_fleet(platform: Platform, port: int, devices_file: Path) -> FleetReport:
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        await uow.commit()
    base = f"http://127.0.0.1:{port}"
    async with serving(platform, port) as server_id:
        async with httpx.AsyncClient(base_url=base) as http:
            fleet = await provision_fleet(platform, http, FLEET, path=devices_file)
        plan = FaultAssignment.each().plan(FLEET)
        members = [
            FleetMember(device.label, device.credentials, fault)
            for device, fault in zip(fleet.devices, plan, strict=True)
        ]
        transport = WebSocketTransport(Endpoint(base, server_id))
        runner = FleetRunner(members, transport, CONFIG, clock=platform.clock.now)
        return await runner.run()


async def stored(platform: Platform, device_id: str) -> tuple[int, int, int]:
    """(telemetry rows, of which store-and-forward, quarantined rows judged acceptable)."""
    async with platform.unit_of_work() as uow:
        session = uow.session
        rows = await session.scalar(
            select(func.count())
            .select_from(TelemetryMessage)
            .where(TelemetryMessage.device_id == device_id)
        )
        forwarded = await session.scalar(
            select(func.count())
            .select_from(TelemetryMessage)
            .where(TelemetryMessage.device_id == device_id, TelemetryMessage.store_and_forward)
        )
        kept_apart = await session.scalar(
            select(func.count())
            .select_from(QuarantinedMessage)
            .where(
                QuarantinedMessage.device_id == device_id,
                QuarantinedMessage.verdict == Status.ACCEPTED.slug,
            )
        )
    return rows or 0, forwarded or 0, kept_apart or 0


async def status_of(platform: Platform, device_id: str) -> DeviceStatus:
    async with platform.unit_of_work() as uow:
        device = await uow.session.get(Device, device_id)
    assert device is not None
    return device.status


def test_the_fault_table_covers_every_fault() -> None:
    assert [row[0] for row in FAULT_TABLE] == list(Fault)


@pytest.mark.usefixtures("held_quotas")
async def test_sim_fleet_against_the_real_server(
    platform: Platform, free_port: int, tmp_path: Path
) -> None:
    report = await run_fleet(platform, free_port, tmp_path / "devices.json")
    by_fault: dict[Fault | None, list[VehicleResult]] = {}
    for result in report.vehicles:
        by_fault.setdefault(result.fault, []).append(result)

    # The fleet is the demo world's vehicles first, then the simulator's own.
    labels = [result.label for result in report.vehicles]
    assert labels[: len(VEHICLES)] == [label for label, *_ in VEHICLES]
    assert all(label.startswith(SIM_LABEL_PREFIX) for label in labels[len(VEHICLES) :])
    assert len(by_fault[None]) == FLEET - len(Fault)
    assert report.total.undocumented == 0

    # Every clean vehicle's messages: acked, each stored once, none set apart.
    for result in by_fault[None]:
        assert result.tally.replies == {"accepted": MESSAGES}
        assert not result.tally.ends
        assert await stored(platform, result.device_id) == (MESSAGES, 0, 0)
        assert await status_of(platform, result.device_id) is DeviceStatus.ACTIVE

    # Every fault, answered as documented, counted by reason; every acked message stored
    # once (kept apart once quarantined); nothing of a refused one in telemetry_messages.
    for fault, documented, status, in_store, why in FAULT_TABLE:
        (result,) = by_fault[fault]
        tally = result.tally
        assert tally.faults == {fault: [documented, 0]}, why
        rows, _forwarded, kept_apart = await stored(platform, result.device_id)
        assert rows + kept_apart == tally.accepted, why
        assert await stored(platform, result.device_id) == in_store, why
        assert await status_of(platform, result.device_id) is status, why
        if fault is Fault.FLOOD:
            continue  # its refusals are counted below
        refused = {slug: n for slug, n in tally.replies.items() if slug != "accepted"}
        expected = {} if EXPECTED[fault].stored else {EXPECTED[fault].slug: documented}
        assert refused == expected, why
        assert not tally.ends, why  # no session was refused or ended by the server

    # Offline: the outbox arrived, flagged, in order; the device was never suspected.
    (offline,) = by_fault[Fault.OFFLINE]
    assert offline.tally.store_and_forward_sent == 5
    assert offline.tally.sessions_opened == 4  # the first, then one per offline period

    # Sleep: each nap closed the session (3 naps), each wake opened a new one (2 wakes).
    (sleeper,) = by_fault[Fault.SLEEP]
    assert (sleeper.tally.sleeps, sleeper.tally.quiet_ticks) == (3, 2)
    assert sleeper.tally.sessions_opened == 3

    # Flood: ticks 1-2 took 2 tokens; the first flood got the rest of the burst and its
    # window's worth of refusals; the next two were refused at once. The clean messages
    # between them met the empty bucket, were kept and re-sent 5 times, then given up.
    (flood,) = by_fault[Fault.FLOOD]
    assert flood.tally.flooded == (BURST - 2 + FLOOD_WINDOW) + 2 * FLOOD_WINDOW
    assert flood.tally.replies == {
        "accepted": BURST,
        "quota-exceeded": 3 * FLOOD_WINDOW + 4 * 5,
    }
    assert flood.tally.ends == {"clean-refused:quota-exceeded": 4}

    # The clone: a second live session of one identity is an incident and a quarantine.
    (clone,) = by_fault[Fault.CLONE]
    assert clone.tally.sessions_opened == 2
    async with platform.unit_of_work() as uow:
        incidents = (
            await uow.session.scalars(
                select(DeviceIncident.kind).where(DeviceIncident.device_id == clone.device_id)
            )
        ).all()
    assert incidents == [IncidentKind.CONCURRENT_SESSION]


async def test_a_second_run_reuses_its_devices_and_leaves_others_alone(
    platform: Platform, free_port: int, tmp_path: Path
) -> None:
    """Reused: an active device the simulator created. Re-enrolled: one of its devices a
    previous run got quarantined. Skipped: a vehicle whose device the simulator did not
    create (it never takes over an identity)."""
    devices_file = tmp_path / "devices.json"
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        await uow.commit()
    base = f"http://127.0.0.1:{free_port}"
    async with serving(platform, free_port) as server_id:
        async with httpx.AsyncClient(base_url=base) as http:
            first = await provision_fleet(platform, http, 2, path=devices_file)
            async with platform.services() as (uow, ctx):
                lifecycle = DeviceLifecycle(ctx)
                suspect = await lifecycle.get(first.devices[1].credentials.device_id)
                await lifecycle.quarantine(suspect, reason="test", actor=FACTORY, details={})
                await uow.commit()
            # Someone else's device on the third vehicle (not redeemed by the simulator).
            async with platform.services() as (uow, ctx):
                grant = await Provisioning(ctx).create_enrolment(
                    await VehicleRegistry(ctx).by_label(VEHICLES[2][0]), actor=FACTORY
                )
                await uow.commit()
            await enrol(
                http,
                grant.token,
                generate_key(),
                device_id=grant.device_id,
                vehicle_id=grant.vehicle_id,
            )
            again = await provision_fleet(platform, http, 3, path=devices_file)
        members = [FleetMember(d.label, d.credentials) for d in again.devices]
        transport = WebSocketTransport(Endpoint(base, server_id))
        runner = FleetRunner(members, transport, CONFIG, clock=platform.clock.now)
        report = await runner.run()
    assert (first.enrolled, first.reused) == (2, 0)
    assert (again.enrolled, again.reused, again.skipped) == (1, 1, (VEHICLES[2][0],))
    reused, renewed = again.devices
    assert reused.credentials.device_id == first.devices[0].credentials.device_id
    assert renewed.credentials.vehicle_id == first.devices[1].credentials.vehicle_id
    assert renewed.credentials.device_id != first.devices[1].credentials.device_id
    assert await status_of(platform, first.devices[1].credentials.device_id) is (
        DeviceStatus.REVOKED
    )
    assert report.total.replies == {"accepted": 2 * MESSAGES}


async def test_the_demo_serves_with_a_live_fleet(
    platform: Platform, free_port: int, clock: FrozenClock
) -> None:
    """What `make run` does after seeding: serve, and once up, the demo world's vehicles
    enrol and report in the same process; stopping the server stops the fleet."""
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        await uow.commit()
    settings = platform.settings.model_copy(update={"port": free_port})
    demo = Platform.build(settings, clock=clock, engine=platform.engine)
    app = build_app(settings, platform=demo)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port, log_config=None, lifespan="on")
    )
    serving_task = asyncio.create_task(serve_with_fleet(server, demo))
    try:
        async with asyncio.timeout(60):  # a hang fails the test rather than blocking the run
            # The store is the only witness (the fleet runs inside the server): poll it.
            while True:
                if len(await reporting_vehicles(platform)) == len(VEHICLES):
                    break
                await asyncio.sleep(0.05)
    finally:
        server.should_exit = True
        await serving_task
    async with platform.unit_of_work() as uow:
        labels = (
            await uow.session.scalars(
                select(Vehicle.label).where(Vehicle.id.in_(await reporting_vehicles(platform)))
            )
        ).all()
    assert sorted(labels) == sorted(label for label, *_ in VEHICLES)
    devices = devices_file(settings.data_dir)
    assert stat.S_IMODE(devices.stat().st_mode) == 0o600


async def reporting_vehicles(platform: Platform) -> set[str]:
    async with platform.unit_of_work() as uow:
        return set(await uow.session.scalars(select(TelemetryMessage.vehicle_id).distinct()))
