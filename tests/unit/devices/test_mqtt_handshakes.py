"""The MQTT handshake's refusals: what one device's messages out of turn can cost the gateway.

On a WebSocket, a refused handshake ends its connection: a new one costs the device a TCP (and
TLS) handshake. Over MQTT, a device holding one broker connection can publish on its
``session/up`` topic as fast as the broker forwards, with no round trip, and each message the
gateway refuses is an audit write and a CLOSED. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.core.ids import new_id
from fleetward.gateway.device_client import DeviceCredentials, DeviceHandshake
from fleetward.gateway.handler import NoObserver, UnavailableHandler
from fleetward.gateway.handshake import CloseCode, HandshakeFailure, MessageType
from fleetward.gateway.mqtt import control
from fleetward.gateway.mqtt.handshakes import MqttHandshakes
from fleetward.gateway.mqtt.sessions import MqttSession
from fleetward.gateway.mqtt.topics import Channel, device_topic
from fleetward.gateway.websocket import Gateway, GatewayConfig
from fleetward.platform import Platform
from unit.devices.kit import build_device_world

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


async def test_one_devices_refusals_are_recorded_within_a_budget_and_counted(
    platform: Platform,
) -> None:
    # Threat: the flood above, sustained. One write at a time is still one audit record per
    # store round trip for as long as the device publishes: hundreds a second from one broker
    # identity, where a WebSocket peer gets 10 a minute recorded (each refusal there costs it
    # a connection, here nothing). Past the same budget, per device, a refusal is counted;
    # the device is told its close code either way.
    config = GatewayConfig(refusals_per_network=3)
    gateway = Gateway(platform, UnavailableHandler(), NoObserver(), config)
    published = Published()
    handshakes = MqttHandshakes(gateway, published, PEER)
    flooder, neighbour = new_id("dev"), new_id("dev")

    async def refuse(device_id: str) -> None:
        failure = HandshakeFailure("malformed", CloseCode.PROTOCOL, device_id)
        await handshakes.refuse(device_id, failure)

    for _ in range(20):
        await refuse(flooder)
    await refuse(neighbour)

    assert await _refusals(platform) == 4  # three of the flooder's, the neighbour's
    assert gateway.refusals.unrecorded == 17
    assert len(published.messages) == 21  # every refusal still answered


class HeldPublish:
    """A broker whose acknowledgements have not come back yet: every publish waits for
    ``release``. Records what was published, and how many publishes per topic were waiting at
    once (``reached`` is set when ``watched`` is first published to)."""

    def __init__(self, watched: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.release = asyncio.Event()
        self.reached = asyncio.Event()
        self.most_waiting: Counter[str] = Counter()
        self._watched = watched
        self._waiting: Counter[str] = Counter()

    async def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self._waiting[topic] += 1
        self.most_waiting[topic] = max(self.most_waiting[topic], self._waiting[topic])
        if topic == self._watched:
            self.reached.set()
        try:
            await self.release.wait()
        finally:
            self._waiting[topic] -= 1


async def test_a_hello_flood_makes_one_challenge_at_a_time_and_the_last_hello_is_answered(
    platform: Platform,
) -> None:
    # Threat: one device (or a thief of its broker credentials) floods session/up with HELLO;
    # each one cost a key generation and a publish, all running at once, without limit. Now
    # one challenge per device is being made at a time: HELLOs that arrive meanwhile are
    # folded into one more challenge, made after the latest of them, so a device that
    # retries its HELLO still gets a challenge it can answer.
    async with platform.services() as (uow, ctx):
        world = await build_device_world(platform, ctx)
        credentials, _ = await world.enrol()
        await uow.commit()
    gateway = Gateway(platform, UnavailableHandler(), NoObserver(), GatewayConfig())
    device_id, neighbour = credentials.device_id, new_id("dev")
    down = device_topic(device_id, Channel.SESSION_DOWN)
    published = HeldPublish(watched=device_topic(neighbour, Channel.SESSION_DOWN))
    handshakes = MqttHandshakes(gateway, published, PEER)
    loop = asyncio.get_running_loop()
    flood = [loop.create_task(handshakes.hello(device_id)) for _ in range(50)]
    # Another device's HELLO, after the flood's: answered while the flood's is in flight.
    other = loop.create_task(handshakes.hello(neighbour))
    await published.reached.wait()
    assert published.most_waiting[down] == 1
    published.release.set()
    await asyncio.gather(*flood, other)
    challenges = [payload for topic, payload in published.messages if topic == down]
    assert len(challenges) == 2
    assert len(handshakes) == 2  # one pending challenge per device
    # The device answers the last challenge it received: that one is the pending one.
    response = DeviceHandshake(
        credentials,
        server_id=gateway.server_id,
        software_version="tcu-4.2.0",
        vehicle_config="cfg-eu-2026a",
    ).respond(challenges[-1], platform.clock.now())
    session = MqttSession(gateway, device_id, published, 8)
    try:
        assert await handshakes.response(device_id, response, session)
        assert session.live is not None and session.live.closed_with is None
    finally:
        await handshakes.stop()
        if session.live is not None:
            gateway.registry.release(session.live)
        await gateway.registry.idle()


async def test_a_flood_of_byes_queues_one_end_of_session(platform: Platform) -> None:
    # Threat: a device floods session/up with BYE naming its own session while its worker is
    # held (a frame waiting on a slow store write): each BYE queued one more end marker, and
    # nothing bounded the queue the frames' own allowance keeps bounded.
    async with platform.services() as (uow, ctx):
        world = await build_device_world(platform, ctx)
        credentials, _ = await world.enrol()
        await uow.commit()
    gateway = Gateway(platform, UnavailableHandler(), NoObserver(), GatewayConfig())
    device_id = credentials.device_id
    published = Published()
    handshakes = MqttHandshakes(gateway, published, PEER)
    await handshakes.hello(device_id)
    [(_topic, challenge)] = published.messages
    response = DeviceHandshake(
        credentials,
        server_id=gateway.server_id,
        software_version="tcu-4.2.0",
        vehicle_config="cfg-eu-2026a",
    ).respond(challenge, platform.clock.now())
    session = MqttSession(gateway, device_id, published, 8)
    try:
        assert await handshakes.response(device_id, response, session)
        assert session.offer(b"\x01frame")
        for _ in range(1000):
            session.end_by_device()
        assert session.queued == 2  # the frame and one end of the session
        await session.run()  # judges the frame, then ends: recorded closed by the device
        assert session.live is not None and session.live.closed_with is None
    finally:
        await handshakes.stop()
        if session.live is not None:
            gateway.registry.release(session.live)
        await gateway.registry.idle()


async def _events(platform: Platform, name: EventName, device_id: str) -> list[AuditRecord]:
    async with platform.unit_of_work() as uow:
        rows = await uow.session.scalars(
            select(AuditRecord)
            .where(AuditRecord.name == name.value, AuditRecord.object_id == device_id)
            .order_by(AuditRecord.seq)
        )
        return list(rows)


async def test_a_device_opening_sessions_in_a_loop_over_mqtt_is_refused_past_its_budget(
    platform: Platform, clock: FrozenClock
) -> None:
    # Threat: over MQTT a device opens session after session with HELLO and RESPONSE on one
    # broker connection, not even a new TCP connection each: every opening was a store write
    # and an audit record, and superseded the device's session. Past its budget (3 here) a
    # handshake is refused with CLOSED(4429) before the store is touched, the breach is
    # recorded once, and the device gets in again as the budget refills.
    async with platform.services() as (uow, ctx):
        world = await build_device_world(platform, ctx)
        looping, _ = await world.enrol()
        other, _ = await world.enrol(world.other_car)
        await uow.commit()
    config = GatewayConfig(handshake_burst=3, handshake_refill=timedelta(seconds=60))
    gateway = Gateway(platform, UnavailableHandler(), NoObserver(), config)
    published = Published()
    handshakes = MqttHandshakes(gateway, published, PEER)

    async def cycle(credentials: DeviceCredentials) -> bytes:
        """HELLO, RESPONSE, and the session ended at once; what the gateway answered."""
        device_id = credentials.device_id
        down = device_topic(device_id, Channel.SESSION_DOWN)
        await handshakes.hello(device_id)
        challenge = [payload for topic, payload in published.messages if topic == down][-1]
        response = DeviceHandshake(
            credentials,
            server_id=gateway.server_id,
            software_version="tcu-4.2.0",
            vehicle_config="cfg-eu-2026a",
        ).respond(challenge, clock.now())
        session = MqttSession(gateway, device_id, published, 8)
        opened = await handshakes.response(device_id, response, session)
        if session.live is not None:
            gateway.registry.release(session.live)
        answer = [payload for topic, payload in published.messages if topic == down][-1]
        assert opened == (answer[0] == MessageType.WELCOME)
        return answer

    try:
        for _ in range(3):
            assert (await cycle(looping))[0] == MessageType.WELCOME
        for _ in range(3):
            refused = control.Closed.decode(await cycle(looping))
            assert refused == control.Closed(CloseCode.TOO_MANY_HANDSHAKES, "")
        opened = await _events(platform, EventName.DEVICE_SESSION_OPENED, looping.device_id)
        assert len(opened) == 3  # nothing written for the refused ones
        failures = await _events(platform, EventName.DEVICE_HANDSHAKE_FAILED, looping.device_id)
        assert [f.reason for f in failures] == ["session-churn"] * 3
        [breach] = await _events(platform, EventName.DEVICE_SESSION_CHURN, looping.device_id)
        assert breach.details["transport"] == "mqtt"
        # Another device is not affected.
        assert (await cycle(other))[0] == MessageType.WELCOME
        # After the refill the looping device opens one session, then is refused again.
        clock.advance(timedelta(seconds=60))
        assert (await cycle(looping))[0] == MessageType.WELCOME
        assert control.Closed.decode(await cycle(looping)).code == CloseCode.TOO_MANY_HANDSHAKES
    finally:
        await handshakes.stop()
        await gateway.registry.idle()
