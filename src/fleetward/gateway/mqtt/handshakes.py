"""The session handshake over MQTT: the WebSocket handshake's own messages and checks
(:class:`~fleetward.gateway.handshake.ServerHandshake`, then the gateway's shared admission),
carried on ``session/up`` and ``session/down``.

HELLO asks for a CHALLENGE; the RESPONSE must arrive within the handshake timeout and answer
that challenge (one pending challenge per device: a new HELLO replaces it, so an old RESPONSE
fails as a replay). One challenge per device is made at a time: HELLOs that arrive while it
is published are folded into one more, made after them.

One more check than on a WebSocket: the certificate proven in the handshake must name the
device whose topic carried it (the broker authenticated the sender as that device; a RESPONSE
carrying another device's certificate is refused, ``topic-mismatch``).
Every refusal is audited like a WebSocket refusal and answered with CLOSED(code).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final

from fleetward.gateway.handshake import CloseCode, HandshakeFailure, ServerHandshake
from fleetward.gateway.mqtt import control
from fleetward.gateway.mqtt.sessions import MqttSession, Publish
from fleetward.gateway.mqtt.topics import Channel, device_topic
from fleetward.gateway.session import Transport
from fleetward.gateway.websocket import Gateway
from fleetward.observability.logging import get_logger

logger = get_logger(__name__)

# The refusal budget's source for a device over MQTT (a WebSocket's is its network).
MQTT_SOURCE_PREFIX: Final = "mqtt:"


@dataclass(eq=False)
class _Pending:
    handshake: ServerHandshake
    timer: asyncio.Task[None] | None = field(default=None, repr=False)


class MqttHandshakes:
    """Pending challenges, per device. For one event loop."""

    def __init__(self, gateway: Gateway, publish: Publish, peer: str) -> None:
        self._gateway = gateway
        self._publish = publish
        self._peer = peer
        self._pending: dict[str, _Pending] = {}
        # Devices whose refusal is being recorded: one at a time per device. A device can
        # publish on session/up without waiting for any answer, and each refusal is a write.
        self._refusing: set[str] = set()
        self.dropped_refusals = 0
        # Devices whose challenge is being made and published: one at a time per device. A
        # HELLO that arrives meanwhile marks the device for one more challenge, made after it.
        self._greeting: set[str] = set()
        self._greet_again: set[str] = set()
        self.folded_hellos = 0

    def __len__(self) -> int:
        return len(self._pending)

    async def hello(self, device_id: str) -> None:
        """A new challenge for the device, replacing its pending one. While one is being made
        and published for the device, a further HELLO only asks for one more after it (counted
        in ``folded_hellos``): a device flooding HELLO costs one key generation and one publish
        at a time, not one each running at once, and the challenge left pending was made after
        its latest HELLO (a device that retries answers the last CHALLENGE it received)."""
        if device_id in self._greeting:
            self._greet_again.add(device_id)
            self.folded_hellos += 1
            return
        self._greeting.add(device_id)
        try:
            while True:
                await self._challenge(device_id)
                if device_id not in self._greet_again:
                    return
                self._greet_again.discard(device_id)
        finally:
            self._greeting.discard(device_id)
            self._greet_again.discard(device_id)

    async def _challenge(self, device_id: str) -> None:
        gateway = self._gateway
        handshake = ServerHandshake(
            gateway.server_id,
            gateway.ca_certificate(),
            gateway.platform.clock,
            gateway.config.clock_skew,
        )
        self._drop(device_id)
        pending = _Pending(handshake)
        self._pending[device_id] = pending
        pending.timer = asyncio.get_running_loop().create_task(
            self._expire(device_id, pending), name="gateway-mqtt-handshake-timer"
        )
        await self._publish(
            device_topic(device_id, Channel.SESSION_DOWN), handshake.challenge_message
        )

    async def response(self, device_id: str, message: bytes, session: MqttSession) -> bool:
        """Verify and admit; on success ``session.live`` is set and WELCOME sent. False
        (refused, audited, device told) otherwise."""
        pending = self._drop(device_id)
        try:
            if pending is None:
                raise HandshakeFailure("no-challenge", CloseCode.PROTOCOL, device_id)
            proven = pending.handshake.verify(message)
            if proven.device_id != device_id:
                raise HandshakeFailure("topic-mismatch", CloseCode.UNAUTHENTICATED, device_id)
            session.live = await self._gateway.admit(
                proven, peer=self._peer, transport=Transport.MQTT, closer=session.close
            )
        except HandshakeFailure as failure:
            await self.refuse(device_id, failure)
            return False
        except Exception as exc:  # as on a WebSocket: 1011, logged by type only
            logger.error("gateway.handshake_error", error=type(exc).__name__)
            await self._publish(
                device_topic(device_id, Channel.SESSION_DOWN), control.closed(CloseCode.INTERNAL)
            )
            return False
        live = session.live
        config = self._gateway.config
        down = device_topic(device_id, Channel.SESSION_DOWN)
        if live.closed_with is not None:  # closed while it was being admitted
            await self._publish(down, control.closed(live.closed_with, live.session.session_id))
            return True
        welcome = pending.handshake.welcome(
            proven, live.session.session_id, config.idle_timeout, config.max_frame_bytes
        )
        await self._publish(down, welcome)
        return True

    async def refuse(self, device_id: str, failure: HandshakeFailure) -> None:
        """Audit a refusal (the device id is the broker-authenticated one of the topic) and
        tell the device its close code. While one of the device's refusals is being recorded,
        its next ones are dropped unrecorded and unanswered (counted): a device flooding its
        session topic costs one write at a time, not a task and a transaction per message."""
        if device_id in self._refusing:
            self.dropped_refusals += 1
            return
        self._refusing.add(device_id)
        try:
            await self._refuse(device_id, failure)
        finally:
            self._refusing.discard(device_id)

    async def _refuse(self, device_id: str, failure: HandshakeFailure) -> None:
        # Within the gateway's refusal budget, per device (its broker identity is the source):
        # one at a time was still one audit write per store round trip for as long as the
        # device publishes. Past the budget the refusal is counted; the device is told alike.
        if failure.device_id is None:
            failure = HandshakeFailure(failure.reason, failure.close, device_id)
        await self._gateway.record_refusal(
            failure, peer=self._peer, source=f"{MQTT_SOURCE_PREFIX}{device_id}"
        )
        await self._publish(
            device_topic(device_id, Channel.SESSION_DOWN), control.closed(failure.close)
        )

    async def stop(self) -> None:
        for device_id in list(self._pending):
            self._drop(device_id)

    def _drop(self, device_id: str) -> _Pending | None:
        pending = self._pending.pop(device_id, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        return pending

    async def _expire(self, device_id: str, pending: _Pending) -> None:
        await asyncio.sleep(self._gateway.config.handshake_timeout.total_seconds())
        if self._pending.get(device_id) is not pending:
            return
        del self._pending[device_id]
        await self.refuse(device_id, HandshakeFailure("timeout", CloseCode.TIMEOUT))
