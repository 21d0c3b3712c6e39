"""The device side of the MQTT transport: what the simulator and the tests use to be a
vehicle over MQTT, and a reference for TCU teams next to ``docs/mqtt.md``.

The device connects to the broker's device listener with its platform certificate (client id
= its device id), subscribes to its own downward topics, and opens a session with the same
handshake as on a WebSocket (:class:`~fleetward.gateway.device_client.DeviceHandshake`):
HELLO, CHALLENGE, RESPONSE, WELCOME. Frames then go to ``telemetry`` and each reply comes back
on ``replies``; a CLOSED naming its session ends it.

Commands: COMMAND frames (first byte 0x02) arrive on the device's ``commands`` topic and are
returned by :meth:`MqttDeviceConnection.receive` together with the replies, in arrival order,
as a WebSocket's ``receive`` returns both (a command arriving while
:meth:`MqttDeviceConnection.request` awaits its reply is kept for ``receive``); the device
answers with a RESULT frame (0x03) sent like a frame (:meth:`MqttDeviceConnection.send`, on
``telemetry``), which gets no reply.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives import serialization

from fleetward.gateway.device_client import (
    DeviceCredentials,
    DeviceHandshake,
    HandshakeRefused,
    SessionClosed,
)
from fleetward.gateway.device_inbox import DeviceInbox
from fleetward.gateway.handshake import MessageType, Welcome
from fleetward.gateway.mqtt import control
from fleetward.gateway.mqtt.control import Closed, ControlType
from fleetward.gateway.mqtt.pki import pem, write_pem
from fleetward.gateway.mqtt.topics import DEVICE_READS, Channel, device_topic

QOS = 1


@dataclass(frozen=True, slots=True)
class DeviceTls:
    """The files a TCU keeps: its certificate and key, and the CA that signs the broker's
    certificate (the broker is authenticated too)."""

    certificate: Path
    key: Path
    broker_ca: Path

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.broker_ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.certificate), str(self.key))
        return context


def write_credentials(
    credentials: DeviceCredentials, directory: Path, broker_ca: Path
) -> DeviceTls:
    """Store a device's certificate and key as PEM files (key mode 0600) for its TLS client."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    certificate = directory / f"{credentials.device_id}.pem"
    key = directory / f"{credentials.device_id}.key"
    write_pem(certificate, pem(credentials.certificate), 0o644)
    key_pem = credentials.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_pem(key, key_pem, 0o600)
    return DeviceTls(certificate, key, broker_ca)


class MqttDeviceConnection:
    """A device's broker connection and (once opened) its session. One request at a time."""

    def __init__(self, client: aiomqtt.Client, device_id: str) -> None:
        self._client = client
        self.device_id = device_id
        self._down: asyncio.Queue[bytes] = asyncio.Queue()
        # What the session receives (replies and commands, in arrival order), then the
        # session's end (its CLOSED, or the broker connection lost).
        self._inbound: asyncio.Queue[bytes | SessionClosed] = asyncio.Queue()
        # What a request passed over (commands, replies to earlier frames), for receive.
        self._inbox = DeviceInbox()
        # Messages on any topic other than this device's own downward ones: the broker's ACL
        # delivers none (tests assert it stays empty). Never handed to the session.
        self.unexpected: asyncio.Queue[bytes] = asyncio.Queue()
        self.session_id = ""
        self.session_key = b""
        self.welcome: Welcome | None = None
        self.closed: Closed | None = None

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish anywhere (what a misbehaving device would try; the broker decides)."""
        await self._client.publish(topic, payload, qos=QOS)

    async def subscribe(self, topic: str) -> None:
        """Subscribe anywhere (the broker's ACL decides what is ever delivered)."""
        await self._client.subscribe(topic, qos=QOS)

    async def open_session(
        self,
        credentials: DeviceCredentials,
        *,
        server_id: str,
        software_version: str,
        vehicle_config: str,
        now: Callable[[], datetime],
    ) -> None:
        handshake = DeviceHandshake(
            credentials,
            server_id=server_id,
            software_version=software_version,
            vehicle_config=vehicle_config,
        )
        up = device_topic(self.device_id, Channel.SESSION_UP)
        # Nothing of an earlier session reaches this one.
        self._inbound, self._inbox = asyncio.Queue(), DeviceInbox()
        await self.publish(up, control.HELLO)
        challenge = await self._handshake_message(MessageType.CHALLENGE)
        await self.publish(up, handshake.respond(challenge, now()))
        welcome, keys = handshake.finish(await self._handshake_message(MessageType.WELCOME))
        self.welcome, self.session_id = welcome, welcome.session_id
        self.session_key = keys.session_key
        self.closed = None

    @property
    def commands(self) -> asyncio.Queue[bytes]:
        """Former name of :attr:`unexpected` (commands now come through :meth:`receive`)."""
        return self.unexpected

    async def send(self, frame: bytes) -> None:
        """A telemetry frame, or a command RESULT: both go on ``telemetry``."""
        await self.publish(device_topic(self.device_id, Channel.TELEMETRY), frame)

    async def request(self, frame: bytes) -> bytes:
        """Send a telemetry frame and wait for its reply; a COMMAND (or a reply to an earlier
        frame) arriving meanwhile is kept for :meth:`receive`. SessionClosed when the gateway
        ends the session first."""
        await self.send(frame)
        return await self._inbox.reply_to(frame, self.session_key, self._arrive)

    async def receive(self) -> bytes:
        """The next reply or COMMAND frame, in arrival order (those a :meth:`request` passed
        over first); SessionClosed once the session ended (a CLOSED naming it, or the broker
        connection lost). Safe to cancel: nothing is lost."""
        return await self._inbox.next(self._arrive)

    async def _arrive(self) -> bytes:
        item = await self._inbound.get()
        if isinstance(item, SessionClosed):
            self._inbound.put_nowait(item)  # every later receive fails the same way
            raise item
        return item

    async def wait_closed(self) -> int:
        """Wait for a CLOSED naming this session; its close code."""
        while self.closed is None:
            message = await self._down.get()
            if control.kind(message) != ControlType.CLOSED:
                continue
            notice = Closed.decode(message)
            if notice.session_id == self.session_id:
                self.closed = notice
        return self.closed.code

    async def bye(self) -> None:
        if self.session_id:
            await self.publish(
                device_topic(self.device_id, Channel.SESSION_UP), control.bye(self.session_id)
            )
            self.session_id = ""

    async def _handshake_message(self, expected: MessageType) -> bytes:
        while True:
            message = await self._down.get()
            kind = control.kind(message)
            if kind == expected:
                return message
            if kind == ControlType.CLOSED:
                notice = Closed.decode(message)
                if not notice.session_id:
                    raise HandshakeRefused("refused", notice.code)

    async def _route(self) -> None:
        for_down = device_topic(self.device_id, Channel.SESSION_DOWN)
        for_session = {
            device_topic(self.device_id, Channel.REPLIES),
            device_topic(self.device_id, Channel.COMMANDS),
        }
        try:
            async for message in self._client.messages:
                payload = message.payload
                if not isinstance(payload, bytes):
                    continue
                topic = str(message.topic)
                if topic == for_down:
                    self._down.put_nowait(payload)
                    self._session_notice(payload)
                elif topic in for_session:
                    self._inbound.put_nowait(payload)
                else:
                    self.unexpected.put_nowait(payload)
        except aiomqtt.MqttError:
            self._inbound.put_nowait(SessionClosed(None, "broker connection lost"))

    def _session_notice(self, message: bytes) -> None:
        """A CLOSED naming the current session ends what :meth:`receive` returns."""
        if not self.session_id or control.kind(message) != ControlType.CLOSED:
            return
        try:
            notice = Closed.decode(message)
        except ValueError:
            return
        if notice.session_id == self.session_id:
            self.closed = notice
            self._inbound.put_nowait(SessionClosed(notice.code, "closed"))


@asynccontextmanager
async def connect(
    host: str, port: int, device_id: str, tls: DeviceTls, *, connect_timeout: float = 10.0
) -> AsyncIterator[MqttDeviceConnection]:
    """A broker connection as ``device_id`` (its client id), subscribed to its own downward
    topics. The session is opened with :meth:`MqttDeviceConnection.open_session`."""
    async with aiomqtt.Client(
        host,
        port,
        identifier=device_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=tls.context(),
        timeout=connect_timeout,
    ) as client:
        connection = MqttDeviceConnection(client, device_id)
        for channel in DEVICE_READS:
            await client.subscribe(device_topic(device_id, channel), qos=QOS)
        router = asyncio.get_running_loop().create_task(connection._route())
        try:
            yield connection
            # Best effort: the broker may have dropped the connection already (a second
            # connection with the same certificate replaces it), and then there is no
            # session left to end.
            with suppress(aiomqtt.MqttError):
                await connection.bye()
        finally:
            router.cancel()
            with suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await router


def device_clock() -> datetime:
    return datetime.now(UTC)
