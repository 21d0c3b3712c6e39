"""A gateway served for real (uvicorn, the app's WebSocket route) over a device world, with a
stand-in pipeline that records what it is given: the harness of the gateway suites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from sqlalchemy import select

from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import Device, DeviceStatus, KeyAlgorithm
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway.device_client import (
    DeviceConnection,
    DeviceCredentials,
    connect,
    enrol,
    generate_key,
    websocket_url,
)
from fleetward.gateway.session import DeviceSession
from fleetward.gateway.websocket import Gateway, GatewayConfig, install
from fleetward.platform import Platform
from support.factories import FACTORY
from support.serve import served
from unit.devices.kit import DeviceWorld, build_device_world

SOFTWARE = "tcu-4.2.0"
CONFIG = "cfg-eu-2026a"


class RecordingHandler:
    """A stand-in pipeline: answers each frame with ``ack:`` + frame, and remembers which
    session sent it, which sessions ended and what it was told about devices."""

    def __init__(self) -> None:
        self.seen: list[tuple[DeviceSession, bytes]] = []
        self.ended: list[str] = []
        self.statuses: list[tuple[str, DeviceStatus, str]] = []

    async def handle(self, session: DeviceSession, frame: bytes) -> bytes:
        self.seen.append((session, frame))
        return b"ack:" + frame

    def end_session(self, session_id: str) -> None:
        self.ended.append(session_id)

    def device_status_changed(self, device_id: str, status: DeviceStatus, reason: str) -> None:
        self.statuses.append((device_id, status, reason))


@dataclass
class Server:
    platform: Platform
    clock: FrozenClock
    gateway: Gateway
    handler: RecordingHandler
    base: str
    world: DeviceWorld
    sessions: list[DeviceConnection] = field(default_factory=list)

    @property
    def url(self) -> str:
        return websocket_url(self.base)

    async def enrol(
        self, vehicle_id: str | None = None, algorithm: KeyAlgorithm = KeyAlgorithm.ED25519
    ) -> DeviceCredentials:
        """A device enrolled over HTTP: token from the service, CSR to /gateway/v1/enrol."""
        async with self.platform.services() as (uow, ctx):
            vehicle = await ctx.session.get(type(self.world.car), vehicle_id or self.world.car.id)
            assert vehicle is not None
            grant = await Provisioning(ctx).create_enrolment(vehicle, actor=FACTORY)
            await uow.commit()
        async with httpx.AsyncClient(base_url=self.base) as http:
            return await enrol(
                http,
                grant.token,
                generate_key(algorithm),
                device_id=grant.device_id,
                vehicle_id=grant.vehicle_id,
            )

    async def open(
        self,
        credentials: DeviceCredentials,
        *,
        skew: timedelta = timedelta(0),
        local_address: tuple[str, int] | None = None,
    ) -> DeviceConnection:
        connection = await connect(
            self.url,
            credentials,
            server_id=self.gateway.server_id,
            software_version=SOFTWARE,
            vehicle_config=CONFIG,
            now=lambda: self.clock.now() + skew,
            local_address=local_address,
        )
        self.sessions.append(connection)
        return connection

    async def change(
        self, work: Callable[[DeviceLifecycle, Device], Awaitable[object]], device_id: str
    ) -> None:
        """A lifecycle change committed in the store (as the CLI or another replica would)."""
        async with self.platform.services() as (uow, ctx):
            lifecycle = DeviceLifecycle(ctx)
            await work(lifecycle, await lifecycle.get(device_id))
            await uow.commit()

    async def audit(self, name: EventName) -> list[AuditRecord]:
        async with self.platform.unit_of_work() as uow:
            rows = await uow.session.scalars(
                select(AuditRecord).where(AuditRecord.name == name.value).order_by(AuditRecord.seq)
            )
            return list(rows)

    async def device(self, device_id: str) -> Device:
        async with self.platform.unit_of_work() as uow:
            device = await uow.session.get(Device, device_id)
            assert device is not None
            return device


@asynccontextmanager
async def serving(platform: Platform, port: int, config: GatewayConfig) -> AsyncIterator[Server]:
    clock = platform.clock
    assert isinstance(clock, FrozenClock)
    async with platform.services() as (uow, ctx):
        world = await build_device_world(platform, ctx)
        await uow.commit()
    app = build_app(platform.settings, platform=platform)
    handler = RecordingHandler()
    gateway = install(app, platform, handler=handler, observer=handler, config=config)
    async with served(app, port) as base:
        running = Server(platform, clock, gateway, handler, base, world)
        try:
            yield running
        finally:
            for connection in running.sessions:
                await connection.close()
    await gateway.registry.idle()


FAST = GatewayConfig(
    handshake_timeout=timedelta(seconds=1),
    credential_poll=timedelta(milliseconds=200),
    refusal_flush=timedelta(milliseconds=50),
)
