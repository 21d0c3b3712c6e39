"""The simulator over MQTT: simulated vehicles connect to a real Mosquitto (TLS, client
certificates from provisioning, the rendered ACL; ``support.mosquitto``) and their telemetry
reaches the same pipeline and store as over the WebSocket. Runs on SQLite and PostgreSQL.

What it proves: devices provisioned by the simulator (enrolled over HTTP) open sessions
through the broker with their own certificates; every clean message is acked and stored once;
the tamper fault is refused (``bad-mac``) and nothing of it is stored; a sleeping vehicle
closes its MQTT session and wakes in a new one; every frame went through the broker (the
gateway's consumer counted it), none over the WebSocket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from fleetward.app import build_app
from fleetward.core.clock import FrozenClock
from fleetward.demo.world import seed_demo_world
from fleetward.devices.crl import CrlSigner, crl_pem
from fleetward.gateway.mqtt.consumer import MqttGateway
from fleetward.gateway.mqtt.runtime import MqttTransport
from fleetward.gateway.mqtt.topics import Channel
from fleetward.gateway.websocket import gateway_of
from fleetward.platform import Platform
from fleetward.sim.driver import DriveConfig
from fleetward.sim.faults import EXPECTED, Fault, FaultAssignment
from fleetward.sim.mqtt import MqttSimTransport
from fleetward.sim.provision import provision_fleet
from fleetward.sim.runner import FleetMember, FleetReport, FleetRunner, VehicleResult
from fleetward.telemetry.models import TelemetryMessage
from support.mosquitto import HOST, Broker, start_broker
from support.serve import served


@pytest.fixture
def clock() -> FrozenClock:
    """Today, not the suite's fixed instant: Mosquitto checks the CRL's validity against the
    machine's real clock (OpenSSL), so the CRL the test signs must be current."""
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


VEHICLES = 5
MESSAGES = 6  # per vehicle (ticks); faults on ticks 3 and 6
CONFIG = DriveConfig(messages=MESSAGES, interval_s=0, fault_every=3, sleep_ticks=1)
FAULTS = "tamper,sleep"
WAIT_S = 10.0  # a bound on waiting for the gateway's connection, never a speed expectation


@dataclass
class Running:
    platform: Platform
    broker: Broker
    consumer: MqttGateway
    server_id: str
    base: str


@asynccontextmanager
async def serving_with_broker(
    platform: Platform, port: int, directory: Path
) -> AsyncIterator[Running]:
    """The app on loopback, a Mosquitto trusting the platform's device CA, and the gateway's
    MQTT consumer on the broker's service listener."""
    clock = platform.clock
    assert isinstance(clock, FrozenClock)
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        await uow.commit()
    app = build_app(platform.settings, platform=platform)
    gateway = gateway_of(app)
    assert gateway is not None
    device_ca = gateway.ca_certificate()  # created on first use; the broker trusts it
    signer = CrlSigner.load(platform.settings, platform.identity.data_key)
    async with start_broker(
        directory / "broker",
        device_ca=device_ca,
        crl_pem=crl_pem(signer.sign([], now=clock.now())),
        clock=clock,
    ) as broker:
        async with served(app, port, HOST) as base:
            transport = MqttTransport(
                gateway,
                broker.gateway_config(
                    crl_file=broker.layout.device_crl, broker_pid_file=broker.layout.pid_file
                ),
            )
            await transport.start()
            try:
                async with asyncio.timeout(WAIT_S):
                    await transport.consumer.connected.wait()
                yield Running(platform, broker, transport.consumer, gateway.server_id, base)
            finally:
                await transport.stop()
        await gateway.registry.idle()


async def run_over_mqtt(running: Running, directory: Path) -> FleetReport:
    async with httpx.AsyncClient(base_url=running.base) as http:
        fleet = await provision_fleet(
            running.platform, http, VEHICLES, path=directory / "devices.json"
        )
    plan = FaultAssignment.parse(FAULTS).plan(VEHICLES)
    members = [
        FleetMember(device.label, device.credentials, fault)
        for device, fault in zip(fleet.devices, plan, strict=True)
    ]
    transport = MqttSimTransport(
        HOST,
        running.broker.layout.device_port,
        server_id=running.server_id,
        broker_ca=running.broker.broker_ca,
        credentials_dir=directory / "tcu",
    )
    runner = FleetRunner(members, transport, CONFIG, clock=running.platform.clock.now)
    return await runner.run()


async def stored_sequences(platform: Platform, device_id: str) -> list[int]:
    async with platform.unit_of_work() as uow:
        rows = await uow.session.scalars(
            select(TelemetryMessage.sequence)
            .where(TelemetryMessage.device_id == device_id)
            .order_by(TelemetryMessage.sequence)
        )
        return list(rows)


async def test_a_simulated_fleet_over_mqtt_reaches_the_store(
    platform: Platform, free_port: int, tmp_path: Path
) -> None:
    async with serving_with_broker(platform, free_port, tmp_path) as running:
        report = await run_over_mqtt(running, tmp_path)
        received = dict(running.consumer.received)
        dropped = running.consumer.dropped_frames
    by_fault: dict[Fault | None, list[VehicleResult]] = {}
    for result in report.vehicles:
        by_fault.setdefault(result.fault, []).append(result)
    assert report.total.undocumented == 0
    assert not report.total.ends  # no session refused or ended by the gateway or broker
    assert dropped == 0  # every frame reached a session and was judged

    # Every frame went through the broker: the consumer took each one from its topic.
    for result in report.vehicles:
        assert received[(result.device_id, Channel.TELEMETRY)] == result.tally.messages

    # Clean vehicles: every message acked and stored once.
    clean = by_fault[None]
    assert len(clean) == VEHICLES - 2
    for result in clean:
        assert result.tally.replies == {"accepted": MESSAGES}
        assert len(await stored_sequences(platform, result.device_id)) == MESSAGES

    # Tamper: refused as documented on ticks 3 and 6; only the clean messages are stored.
    (tamper,) = by_fault[Fault.TAMPER]
    assert tamper.tally.faults == {Fault.TAMPER: [2, 0]}
    assert tamper.tally.replies == {"accepted": MESSAGES - 2, EXPECTED[Fault.TAMPER].slug: 2}
    assert len(await stored_sequences(platform, tamper.device_id)) == MESSAGES - 2

    # Sleep: tick 3 falls asleep (BYE, disconnect), 4 is quiet, 5 wakes in a new MQTT
    # session, 6 falls asleep again: 5 live messages, 2 sessions.
    (sleeper,) = by_fault[Fault.SLEEP]
    assert sleeper.tally.faults == {Fault.SLEEP: [1, 0]}
    assert (sleeper.tally.sessions_opened, sleeper.tally.quiet_ticks) == (2, 1)
    assert sleeper.tally.replies == {"accepted": 5}
    assert len(await stored_sequences(platform, sleeper.device_id)) == 5
