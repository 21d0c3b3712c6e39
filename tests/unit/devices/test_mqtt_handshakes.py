"""The MQTT handshake's refusals: what one device's messages out of turn can cost the gateway.

On a WebSocket, a refused handshake ends its connection: a new one costs the device a TCP (and
TLS) handshake. Over MQTT, a device holding one broker connection can publish on its
``session/up`` topic as fast as the broker forwards, with no round trip, and each message the
gateway refuses is an audit write and a CLOSED. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.ids import new_id
from fleetward.gateway.handler import NoObserver, UnavailableHandler
from fleetward.gateway.handshake import CloseCode, HandshakeFailure
from fleetward.gateway.mqtt.handshakes import MqttHandshakes
from fleetward.gateway.websocket import Gateway, GatewayConfig
from fleetward.platform import Platform

PEER = "mqtt:broker.test"


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))


async def _refusals(platform: Platform) -> int:
    async with platform.unit_of_work() as uow:
        count = await uow.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.name == EventName.DEVICE_HANDSHAKE_FAILED.value)
        )
    return int(count or 0)


async def test_a_flood_of_refused_session_messages_costs_one_write_at_a_time(
    platform: Platform,
) -> None:
    # Threat: one device (or a thief of its broker credentials) floods session/up with
    # messages out of turn; each refusal was a task, a transaction and an audit record, with
    # nothing bounding how many ran at once: the gateway's memory and the store's write
    # capacity were the device's to take.
    gateway = Gateway(platform, UnavailableHandler(), NoObserver(), GatewayConfig())
    published = Published()
    handshakes = MqttHandshakes(gateway, published, PEER)
    flooder, neighbour = new_id("dev"), new_id("dev")

    def refuse(device_id: str) -> asyncio.Task[None]:
        failure = HandshakeFailure("malformed", CloseCode.PROTOCOL, device_id)
        return asyncio.get_running_loop().create_task(handshakes.refuse(device_id, failure))

    flood = [refuse(flooder) for _ in range(50)]
    # Another device's refusal is never dropped for the flooder's.
    await asyncio.gather(*flood, refuse(neighbour))

    assert await _refusals(platform) == 2
    assert len(published.messages) == 2
    # Once the flooder's refusal is recorded, its next one is recorded again.
    await refuse(flooder)
    assert await _refusals(platform) == 3
