"""Simulated vehicles over MQTT: each session is a broker connection made with the device's own
certificate (client id = its device id), then the protocol's handshake on its own topics
(``docs/mqtt.md`` section 4), through ``fleetward.gateway.mqtt.device``.

The device's certificate and key are written once per device as PEM files (key mode 0600)
under ``credentials_dir``, as a TCU keeps them for its TLS client; the broker is
authenticated with ``broker_ca``.

Two things MQTT changes for a simulated vehicle:

* a frame the gateway drops unjudged (no session, or its queue full) gets no reply: a reply
  not received within ``reply_timeout_s`` ends the session (``SessionClosed``, code None), as
  docs/mqtt.md tells a TCU to start again. The clock runs only while a frame awaits its reply:
  a link with nothing in flight (the driver's command reader waiting between ticks) waits for
  the next command or reply as long as the session lasts;
* the broker allows one connection per client id, so one device cannot hold two live sessions
  (``concurrent_sessions`` is False): the clone fault is refused over MQTT.

Commands arrive through :meth:`MqttLink.receive` with the replies (COMMAND frames, first byte
0x02, from the device's ``commands`` topic), as on a WebSocket, so the driver's reader hands
them to the vehicle's guard unchanged; the guard's RESULT goes up through :meth:`MqttLink.send`
on ``telemetry`` and awaits no reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Final

import aiomqtt

from fleetward.commands.envelope import COMMAND_TYPE, RESULT_TYPE
from fleetward.gateway.device_client import DeviceCredentials, HandshakeRefused, SessionClosed
from fleetward.gateway.mqtt.device import (
    DeviceTls,
    MqttDeviceConnection,
    connect,
    write_credentials,
)
from fleetward.sim.transport import SimLink, TransportKind

_COMMAND_PREFIX: Final = bytes([COMMAND_TYPE])
_RESULT_PREFIX: Final = bytes([RESULT_TYPE])


class MqttLink:
    """One device session over the broker; closing it sends BYE and disconnects."""

    def __init__(
        self, connection: MqttDeviceConnection, stack: AsyncExitStack, reply_timeout_s: float
    ) -> None:
        self._connection = connection
        self._stack = stack
        self._reply_timeout = reply_timeout_s
        # Frames sent and not answered yet; the instant by which the next reply is due.
        self._unanswered = 0
        self._due = 0.0
        self._sent = asyncio.Event()

    @property
    def session_key(self) -> bytes:
        return self._connection.session_key

    @property
    def session_id(self) -> str:
        return self._connection.session_id

    async def send(self, frame: bytes) -> None:
        if frame[:1] != _RESULT_PREFIX:  # a result gets no reply
            if not self._unanswered:
                self._due = asyncio.get_running_loop().time() + self._reply_timeout
            self._unanswered += 1
            self._sent.set()
        try:
            await self._connection.send(frame)
        except aiomqtt.MqttError:
            raise SessionClosed(None, "broker connection lost") from None

    async def receive(self) -> bytes:
        """The next reply or command. SessionClosed when the session ended, or when a frame
        awaits its reply and none came within ``reply_timeout_s`` (of the frame, or of the
        previous reply)."""
        loop = asyncio.get_running_loop()
        while True:
            self._sent.clear()
            timeout = None
            if self._unanswered:
                timeout = self._due - loop.time()
                if timeout <= 0:
                    raise SessionClosed(None, "no reply")
            message = asyncio.ensure_future(self._connection.receive())
            sent = asyncio.ensure_future(self._sent.wait())
            try:
                await asyncio.wait(
                    {message, sent}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                sent.cancel()
                if not message.done():
                    message.cancel()  # safe: a queued message stays queued
            if not message.done() or message.cancelled():
                continue  # a frame was sent (its reply is now due), or the time ran out
            received = message.result()  # raises SessionClosed when the session ended
            if received[:1] != _COMMAND_PREFIX and self._unanswered:
                self._unanswered -= 1
                self._due = loop.time() + self._reply_timeout
            return received

    async def close(self) -> None:
        try:
            await self._stack.aclose()
        except aiomqtt.MqttError:
            return  # the broker connection was already gone: nothing left to close


class MqttSimTransport:
    """Sessions through the broker's device listener at ``host``:``port``."""

    kind = TransportKind.MQTT
    concurrent_sessions = False

    def __init__(
        self,
        host: str,
        port: int,
        *,
        server_id: str,
        broker_ca: Path,
        credentials_dir: Path,
        connect_timeout_s: float = 10.0,
        reply_timeout_s: float = 10.0,
    ) -> None:
        if connect_timeout_s <= 0 or reply_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if not 1 <= port <= 65535:
            raise ValueError("not a port")
        if not server_id:
            raise ValueError("name the server the handshake must prove")
        self.host = host
        self.port = port
        self._broker_ca = broker_ca
        self._directory = credentials_dir
        self._connect_timeout = connect_timeout_s
        self._reply_timeout = reply_timeout_s
        self.server_id = server_id
        # device id -> (certificate serial, its files): rewritten when the certificate changed
        self._tls: dict[str, tuple[int, DeviceTls]] = {}

    def describe(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    def tls(self, credentials: DeviceCredentials) -> DeviceTls:
        """The device's PEM files, written on first use."""
        serial = credentials.certificate.serial_number
        known = self._tls.get(credentials.device_id)
        if known is None or known[0] != serial:
            files = write_credentials(credentials, self._directory, self._broker_ca)
            known = self._tls[credentials.device_id] = (serial, files)
        return known[1]

    async def open(
        self,
        credentials: DeviceCredentials,
        *,
        software_version: str,
        vehicle_config: str,
        now: Callable[[], datetime],
    ) -> SimLink:
        tls = self.tls(credentials)
        stack = AsyncExitStack()
        try:
            connection = await stack.enter_async_context(
                connect(
                    self.host,
                    self.port,
                    credentials.device_id,
                    tls,
                    connect_timeout=self._connect_timeout,
                )
            )
            async with asyncio.timeout(self._connect_timeout):
                await connection.open_session(
                    credentials,
                    server_id=self.server_id,
                    software_version=software_version,
                    vehicle_config=vehicle_config,
                    now=now,
                )
        except BaseException as exc:
            await _quietly_close(stack)
            if isinstance(exc, aiomqtt.MqttError):
                raise HandshakeRefused("broker") from None
            if isinstance(exc, TimeoutError):
                raise HandshakeRefused("timeout") from None
            raise
        return MqttLink(connection, stack, self._reply_timeout)


async def _quietly_close(stack: AsyncExitStack) -> None:
    try:
        await stack.aclose()
    except aiomqtt.MqttError:
        return
