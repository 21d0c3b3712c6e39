"""How a simulated vehicle reaches the gateway: a :class:`SimTransport` opens device sessions,
each a :class:`SimLink` that carries sealed frames up and authenticated replies down.

Two transports, the two of the vehicle protocol: :class:`WebSocketTransport` (the embedded
gateway, ``fleetward.gateway.device_client``) and ``sim.mqtt.MqttSimTransport`` (through the
broker, ``fleetward.gateway.mqtt.device``). Both speak only the public protocol; the driver
does not know which one it uses, except that a transport may refuse two live sessions of one
device (``concurrent_sessions``: the clone fault needs them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from fleetward.gateway.device_client import DeviceCredentials, connect, websocket_url


class TransportKind(StrEnum):
    WEBSOCKET = "websocket"
    MQTT = "mqtt"


class SimLink(Protocol):
    """One established device session. One task uses it; ``send`` may run ahead of
    ``receive`` (replies come back in the order the frames were sent). Both raise
    ``SessionClosed`` when the session ended."""

    @property
    def session_key(self) -> bytes: ...

    async def send(self, frame: bytes) -> None: ...

    async def receive(self) -> bytes: ...

    async def close(self) -> None: ...


class SimTransport(Protocol):
    kind: TransportKind
    # Whether one device may hold two live sessions through it (the clone fault).
    concurrent_sessions: bool

    def describe(self) -> str:
        """Where the sessions go, for the operator (no secret in it)."""
        ...

    async def open(
        self,
        credentials: DeviceCredentials,
        *,
        software_version: str,
        vehicle_config: str,
        now: Callable[[], datetime],
    ) -> SimLink:
        """Open a session (handshake included); ``HandshakeRefused`` when refused."""
        ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the fleet enrols and connects, and what the server must call itself
    (``server_id``: signed into its CHALLENGE; a TCU refuses any other)."""

    base_url: str
    server_id: str

    @property
    def websocket(self) -> str:
        return websocket_url(self.base_url)


class WebSocketTransport:
    """Sessions over the gateway's WebSocket (``/gateway/v1/ws``)."""

    kind = TransportKind.WEBSOCKET
    concurrent_sessions = True

    def __init__(self, endpoint: Endpoint, *, open_timeout_s: float = 10.0) -> None:
        if open_timeout_s <= 0:
            raise ValueError("the open timeout must be positive")
        self.endpoint = endpoint
        self._open_timeout = open_timeout_s

    def describe(self) -> str:
        return self.endpoint.websocket

    async def open(
        self,
        credentials: DeviceCredentials,
        *,
        software_version: str,
        vehicle_config: str,
        now: Callable[[], datetime],
    ) -> SimLink:
        return await connect(
            self.endpoint.websocket,
            credentials,
            server_id=self.endpoint.server_id,
            software_version=software_version,
            vehicle_config=vehicle_config,
            now=now,
            open_timeout=self._open_timeout,
        )
