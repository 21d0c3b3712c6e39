"""Remote commands over the MQTT transport: the command world of ``support.commands`` (the
real app on loopback, the demo world, real tokens), with a real Mosquitto in front of the
gateway (``support.mosquitto``: TLS, client certificates, the rendered ACLs) and the
simulated vehicles connected through the broker instead of the WebSocket.

Besides the simulated cars, a test can open a session of its own as any provisioned device
(:meth:`MqttCommandWorld.session`) to see exactly what arrives and to answer by hand, and can
publish anything as a device and read the broker's verdict (:func:`publish_reason`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from sqlalchemy import select

from fleetward.app import build_app
from fleetward.demo.clients import seed_demo_clients
from fleetward.demo.world import VEHICLES, seed_demo_world
from fleetward.devices.crl import CrlSigner, crl_pem
from fleetward.gateway.device_client import DeviceCredentials
from fleetward.gateway.mqtt.consumer import MqttGateway
from fleetward.gateway.mqtt.device import DeviceTls, MqttDeviceConnection, connect
from fleetward.gateway.mqtt.runtime import MqttTransport
from fleetward.gateway.websocket import Gateway, gateway_of
from fleetward.identity.models import Tenant, User
from fleetward.platform import Platform
from fleetward.sim.driver import VehicleDriver
from fleetward.sim.mqtt import MqttSimTransport
from fleetward.sim.provision import provision_fleet
from fleetward.sim.vehicle import SimVehicle
from fleetward.vehicles.models import Vehicle
from support.commands import DRIVE, CommandWorld, RunningClock, SimCar
from support.mosquitto import HOST, START_TIMEOUT_S, Broker, start_broker
from support.serve import served

WAIT_S = 10.0  # a bound on waiting for an event, never an expectation about speed
SOFTWARE = "tcu-4.2.0"
CONFIG = "cfg-eu-2026a"


@dataclass
class MqttCommandWorld:
    world: CommandWorld
    broker: Broker
    gateway: Gateway
    consumer: MqttGateway
    transport: MqttSimTransport
    credentials: dict[str, DeviceCredentials]  # label -> the provisioned device
    stack: AsyncExitStack  # sessions opened by the test, closed with the world

    def device_id(self, label: str) -> str:
        return self.credentials[label].device_id

    def tls(self, label: str) -> DeviceTls:
        """The device's certificate, key and broker CA as its TLS client keeps them."""
        return self.transport.tls(self.credentials[label])

    async def connect(self, label: str) -> MqttDeviceConnection:
        """A broker connection as the device (subscribed to its own topics), no session."""
        return await self.stack.enter_async_context(
            connect(HOST, self.broker.layout.device_port, self.device_id(label), self.tls(label))
        )

    async def session(self, label: str) -> MqttDeviceConnection:
        """A session of the device's own, opened through the broker."""
        connection = await self.connect(label)
        await connection.open_session(
            self.credentials[label],
            server_id=self.gateway.server_id,
            software_version=SOFTWARE,
            vehicle_config=CONFIG,
            now=self.world.clock.now,
        )
        return connection


@asynccontextmanager
async def mqtt_command_world(
    platform: Platform,
    clock: RunningClock,
    port: int,
    directory: Path,
    *,
    provision: tuple[str, ...] = ("ALICE-1",),
    drive: tuple[str, ...] = ("ALICE-1",),
) -> AsyncIterator[MqttCommandWorld]:
    """Devices for the vehicles ``provision`` (enrolled over HTTP); simulated cars driven
    over MQTT for ``drive`` (a subset), parked and reporting."""
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        await seed_demo_clients(ctx, platform.settings.data_dir)
        await uow.commit()
    app = build_app(platform.settings, platform=platform)
    gateway = gateway_of(app)
    assert gateway is not None
    device_ca = gateway.ca_certificate()  # created on first use; the broker trusts it
    signer = CrlSigner.load(platform.settings, platform.identity.data_key)
    async with (
        start_broker(
            directory / "broker",
            device_ca=device_ca,
            crl_pem=crl_pem(signer.sign([], now=clock.now())),
            clock=clock,
        ) as broker,
        AsyncExitStack() as stack,
    ):
        async with served(app, port, HOST) as base:
            transport = MqttTransport(
                gateway,
                broker.gateway_config(
                    crl_file=broker.layout.device_crl, broker_pid_file=broker.layout.pid_file
                ),
            )
            await transport.start()
            running: MqttCommandWorld | None = None
            try:
                async with asyncio.timeout(WAIT_S):
                    await transport.consumer.connected.wait()
                async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                    async with platform.unit_of_work() as uow:
                        users = {u.username: u for u in await uow.session.scalars(select(User))}
                        tenants = {t.slug: t for t in await uow.session.scalars(select(Tenant))}
                        vehicles = {v.label: v for v in await uow.session.scalars(select(Vehicle))}
                    order = [label for label, *_rest in VEHICLES]
                    fleet = await provision_fleet(
                        platform,
                        http,
                        max(order.index(label) for label in provision) + 1,
                        path=directory / "sim-devices.json",
                    )
                    credentials = {d.label: d.credentials for d in fleet.devices}
                    sim = MqttSimTransport(
                        HOST,
                        broker.layout.device_port,
                        server_id=gateway.server_id,
                        broker_ca=broker.broker_ca,
                        credentials_dir=directory / "tcu",
                    )
                    cars: dict[str, SimCar] = {}
                    for label in drive:
                        vehicle = SimVehicle(seed=len(cars) + 1)
                        vehicle.sleep()  # parked and locked ...
                        vehicle.wake()  # ... and awake: it reports, and stays parked (DRIVE)
                        driver = VehicleDriver(
                            vehicle, credentials[label], sim, DRIVE, clock=platform.clock.now
                        )
                        cars[label] = SimCar(label, driver)
                    world = CommandWorld(platform, app, http, clock, users, tenants, vehicles, cars)
                    running = MqttCommandWorld(
                        world, broker, gateway, transport.consumer, sim, credentials, stack
                    )
                    for car in cars.values():
                        car.online()
                    yield running
            finally:
                if running is not None:
                    for car in running.world.cars.values():
                        await car.offline()
                await stack.aclose()
                await transport.stop()
        await gateway.registry.idle()


async def publish_reason(
    port: int, context: ssl.SSLContext, client_id: str, topic: str, payload: bytes
) -> str:
    """Publish ``payload`` once at QoS 1 with a device's TLS identity and return the reason of
    the broker's MQTT 5 PUBACK (``"Success"``, ``"Not authorized"``), which aiomqtt does not
    expose. ``client_id`` must differ from the device's own, or the broker would end the
    device's other connection."""
    return await asyncio.to_thread(_publish_reason, port, context, client_id, topic, payload)


def _publish_reason(
    port: int, context: ssl.SSLContext, client_id: str, topic: str, payload: bytes
) -> str:
    reasons: list[str] = []
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.tls_set_context(context)
    client.on_publish = lambda _client, _userdata, _mid, reason, _properties: reasons.append(
        str(reason)
    )
    client.connect(HOST, port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(START_TIMEOUT_S)
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0] if reasons else "no puback"
