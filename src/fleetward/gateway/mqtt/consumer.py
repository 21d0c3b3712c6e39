"""The gateway's MQTT client: consumes every device's upward topics from the broker's service
listener and feeds the same registry and pipeline as the WebSocket transport.

Identity: a message's device is the id in its topic, which the broker's ACL lets only that
device's certificate publish to (CRL-checked at connect); a session exists only after the
handshake proved possession of a certificate naming that same device. Frames on a device's
telemetry topic go to its newest session; a frame with no session is dropped (never judged,
never stored).

Work is never done on the receiving loop: handshakes run as tasks, and each session judges its
frames on its own task, in order, one at a time (the :class:`FrameHandler` contract), so a
slow durable write of one device never holds up another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Coroutine
from typing import Any, Final

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY

from fleetward.gateway.handshake import CloseCode, HandshakeFailure, MessageType
from fleetward.gateway.mqtt import control
from fleetward.gateway.mqtt.config import MqttGatewayConfig
from fleetward.gateway.mqtt.control import ControlType
from fleetward.gateway.mqtt.handshakes import MqttHandshakes
from fleetward.gateway.mqtt.sessions import MqttSession
from fleetward.gateway.mqtt.topics import GATEWAY_READS, Channel, parse, pattern
from fleetward.gateway.websocket import Gateway
from fleetward.observability.logging import get_logger

logger = get_logger(__name__)

RECONNECT_MIN_S: Final = 0.5
RECONNECT_MAX_S: Final = 30.0
QOS: Final = 1


class MqttGateway:
    """One per gateway process, beside the WebSocket route, sharing its :class:`Gateway`."""

    def __init__(self, gateway: Gateway, config: MqttGatewayConfig) -> None:
        self._gateway = gateway
        self._config = config
        self._client: aiomqtt.Client | None = None
        # The peer recorded for MQTT sessions: the broker the device came through (the
        # device's own address is known only to the broker).
        self.peer = f"mqtt:{config.host}"
        self._handshakes = MqttHandshakes(gateway, self._publish, self.peer)
        self._sessions: dict[str, MqttSession] = {}
        # Per device, the session its newest one superseded as silent, while under watch.
        self._watched: dict[str, MqttSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        # Messages taken from the broker per (device, channel), and frames dropped unjudged
        # (no session, or its queue full): what an operator watches, and the tests read.
        self.received: Counter[tuple[str, Channel]] = Counter()
        self.dropped_frames = 0

    def session(self, device_id: str) -> MqttSession | None:
        return self._sessions.get(device_id)

    async def start(self) -> None:
        """Connect and subscribe in the background; returns at once (see ``connected``)."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="gateway-mqtt")

    async def stop(self) -> None:
        """End every session (devices are told 1011: retry), then disconnect."""
        for session in [*self._sessions.values(), *self._watched.values()]:
            if session.live is not None:
                await session.live.close(CloseCode.INTERNAL)
        await self._handshakes.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    # ------------------------------------------------------------------ connection

    async def _run(self) -> None:
        config = self._config
        delay = RECONNECT_MIN_S
        while True:
            try:
                async with aiomqtt.Client(
                    config.host,
                    config.port,
                    identifier=config.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    tls_context=config.tls_context(),
                    keepalive=config.keepalive_s,
                    clean_start=MQTT_CLEAN_START_FIRST_ONLY,
                ) as client:
                    for channel in GATEWAY_READS:
                        await client.subscribe(pattern(channel, "+"), qos=QOS)
                    self._client = client
                    self.connected.set()
                    delay = RECONNECT_MIN_S
                    async for message in client.messages:
                        self._dispatch(str(message.topic), message.payload)
            except aiomqtt.MqttError as exc:
                logger.warning("gateway.mqtt.disconnected", error=type(exc).__name__)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _publish(self, topic: str, payload: bytes) -> None:
        """Best effort: a device that misses a message times out and starts again."""
        try:
            await self._deliver(topic, payload)
        except aiomqtt.MqttError as exc:
            logger.warning("gateway.mqtt.publish_failed", error=type(exc).__name__)

    async def _deliver(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1, or raise ``aiomqtt.MqttError``: what a command's sender uses, so
        the command service knows a send failed (the job's outcome is then unknown)."""
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("not connected to the broker")
        await client.publish(topic, payload, qos=QOS)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, topic: str, payload: object) -> None:
        parsed = parse(topic)
        if parsed is None or not isinstance(payload, bytes):
            return  # not ours (the ACL lets nothing else reach us); nothing to judge
        device_id, channel = parsed
        self.received[(device_id, channel)] += 1
        if channel is Channel.TELEMETRY:
            # Telemetry frames and command results (first byte 0x03), in the order the device
            # published them: the session's worker tells them apart, as on a WebSocket. A
            # frame under the key of the session the newest one superseded is that session's
            # (its TCU is alive: the gateway's clone response), never the newest's.
            watched = self._watched.get(device_id)
            if watched is not None and watched.sealed_by(payload):
                if not watched.offer(payload):
                    self.dropped_frames += 1
                return
            session = self._sessions.get(device_id)
            if session is None or not session.offer(payload):
                self.dropped_frames += 1
            return
        kind = control.kind(payload)
        if kind == ControlType.HELLO and payload == control.HELLO:
            self._spawn(self._handshakes.hello(device_id))
        elif kind == MessageType.RESPONSE:
            self._spawn(self._respond(device_id, payload))
        elif kind == ControlType.BYE:
            self._bye(device_id, payload)
        else:
            failure = HandshakeFailure("malformed", CloseCode.PROTOCOL, device_id)
            self._spawn(self._handshakes.refuse(device_id, failure))

    def _bye(self, device_id: str, payload: bytes) -> None:
        try:
            session_id = control.read_bye(payload)
        except ValueError:
            return
        session = self._sessions.get(device_id)
        if session is not None and session.session_id == session_id:
            session.end_by_device()

    async def _respond(self, device_id: str, message: bytes) -> None:
        session = MqttSession(
            self._gateway,
            device_id,
            self._publish,
            self._config.session_queue,
            deliver=self._deliver,
        )
        if not await self._handshakes.response(device_id, message, session):
            return
        previous = self._sessions.get(device_id)
        self._sessions[device_id] = session
        self._spawn(self._serve(session))
        replaced = previous.live if previous is not None else None
        if previous is not None and replaced is not None and replaced.superseded_by is not None:
            # Superseded as silent: kept under watch until its idle deadline (one per device;
            # an earlier one under watch is closed), told nothing until then.
            earlier = self._watched.get(device_id)
            self._watched[device_id] = previous
            if earlier is not None and earlier.live is not None:
                await earlier.live.close(CloseCode.SUPERSEDED)
        elif previous is not None and previous.live is not None:
            # Only a device's newest session is reachable here (its topics are routed to it):
            # the one it replaces would linger, unreachable, until its idle timeout, and one
            # broker connection could hold any number of sessions.
            self._gateway.registry.release(previous.live)
            await previous.live.close(CloseCode.SUPERSEDED)

    async def _serve(self, session: MqttSession) -> None:
        try:
            await session.run()
        finally:
            if self._sessions.get(session.device_id) is session:
                del self._sessions[session.device_id]
            if self._watched.get(session.device_id) is session:
                del self._watched[session.device_id]

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("gateway.mqtt.task_failed", error=type(task.exception()).__name__)
