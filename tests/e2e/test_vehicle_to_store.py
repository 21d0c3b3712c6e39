"""A vehicle end to end through the platform as `fleetward serve` composes it: enrolment over
HTTP, the WebSocket handshake, a signed telemetry frame, the ack after the durable write, and
the row in the store with its provenance; a tampered frame is refused and stored nowhere."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import func, select

from fleetward.app import build_app
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway.device_client import connect, enrol, generate_key, websocket_url
from fleetward.gateway.websocket import gateway_of
from fleetward.platform import Platform
from fleetward.telemetry.envelope import open_reply, seal
from fleetward.telemetry.errors import Status
from fleetward.telemetry.models import TelemetryMessage
from support.factories import FACTORY
from support.serve import served
from unit.devices.kit import build_device_world


async def test_vehicle_frame_is_acked_after_it_is_stored(
    platform: Platform, free_port: int
) -> None:
    async with platform.services() as (uow, ctx):
        world = await build_device_world(platform, ctx)
        grant = await Provisioning(ctx).create_enrolment(world.car, actor=FACTORY)
        await uow.commit()
    app = build_app(platform.settings, platform=platform)
    async with served(app, free_port) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            credentials = await enrol(
                http,
                grant.token,
                generate_key(),
                device_id=grant.device_id,
                vehicle_id=grant.vehicle_id,
            )
        gateway = gateway_of(app)
        assert gateway is not None
        device = await connect(
            websocket_url(base),
            credentials,
            server_id=gateway.server_id,
            software_version="tcu-4.2.0",
            vehicle_config="cfg-na-2026a",
            now=platform.clock.now,
        )
        now_ms = int(platform.clock.now().timestamp() * 1000)
        payload = json.dumps({"signals": {"Vehicle.Speed": 42.0}}).encode()
        good = seal(device.session_key, payload, counter=1, sequence=1, device_time_ms=now_ms)
        reply = open_reply(device.session_key, await device.request(good))
        tampered = bytearray(
            seal(device.session_key, payload, counter=2, sequence=2, device_time_ms=now_ms)
        )
        tampered[30] ^= 0x01  # one bit of the payload
        refused = open_reply(device.session_key, await device.request(bytes(tampered)))
        await device.close()

    assert (reply.status, reply.sequence) == (Status.ACCEPTED, 1)
    assert refused.status is Status.BAD_MAC
    async with platform.unit_of_work() as uow:
        rows = (await uow.session.scalars(select(TelemetryMessage))).all()
        count = await uow.session.scalar(select(func.count()).select_from(TelemetryMessage))
    assert count == 1  # the tampered frame left nothing behind
    row = rows[0]
    assert (row.device_id, row.vehicle_id, row.sequence) == (grant.device_id, world.car.id, 1)
    assert row.software_version == "tcu-4.2.0"
