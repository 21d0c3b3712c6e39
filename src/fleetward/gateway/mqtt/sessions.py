"""One MQTT device session: its frames, judged one at a time in arrival order, its replies,
its commands, and its end.

Commands (docs/mqtt.md section 4): once admitted, the session's ``sender`` publishes COMMAND
frames on the device's ``commands`` topic, and the command service is told the session is
ready. Results come up on the device's ``telemetry`` topic, in order with its frames; the
worker hands a message whose first byte is 0x03 to the command service (``on_result``) and
never to the telemetry pipeline, exactly as the WebSocket transport does. Results have a small
allowance of their own in the session's queue, so a backlog of telemetry never crowds out the
answer to a command (and results cannot grow the queue beyond that allowance).

A session is registered in the gateway's :class:`~fleetward.gateway.registry.SessionRegistry`
like a WebSocket session, so a revocation, suspension, rotation or supersession closes it at
once through :meth:`MqttSession.close` (the registry's closer): the worker stops taking
frames, the device is told with a CLOSED on its ``session/down`` topic, and the pipeline
forgets the session's key. Frames still queued are dropped unjudged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from fleetward.gateway.frames import RESULT_FIRST_BYTE
from fleetward.gateway.handshake import CloseCode
from fleetward.gateway.mqtt import control
from fleetward.gateway.mqtt.topics import Channel, device_topic
from fleetward.gateway.registry import LiveSession
from fleetward.gateway.websocket import Gateway
from fleetward.observability.logging import get_logger
from fleetward.telemetry.envelope import SessionMacs
from fleetward.telemetry.errors import Rejected

logger = get_logger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]

# Results queued per session (beside ``session_queue`` telemetry frames) before newer ones are
# dropped: the dispatcher then sees no answer and the job ends ``outcome_unknown``.
RESULT_QUEUE: Final = 8
_RESULT_PREFIX: Final = bytes([RESULT_FIRST_BYTE])


class _Stop:
    """The queue's end marker (a BYE, or a close)."""


_STOP: Final = _Stop()


class MqttSession:
    """Not shared between event loops. ``live`` is set once the handshake admitted it."""

    def __init__(
        self,
        gateway: Gateway,
        device_id: str,
        publish: Publish,
        depth: int,
        *,
        deliver: Publish | None = None,
    ) -> None:
        """``publish``: best effort (session notices, replies). ``deliver``: publishes or
        raises, for commands; None: the session carries no commands."""
        self._gateway = gateway
        self.device_id = device_id
        self._publish = publish
        self._deliver = deliver
        self._depth = depth
        self._queue: asyncio.Queue[bytes | _Stop] = asyncio.Queue()
        self._frames = 0  # telemetry frames queued
        self._results = 0  # results queued
        self._ending = False  # the end marker is queued (at most once)
        self.live: LiveSession | None = None
        self._macs: SessionMacs | None = None

    @property
    def session_id(self) -> str:
        return self.live.session.session_id if self.live else ""

    @property
    def queued(self) -> int:
        """Messages waiting for the worker: frames, results and the end of the session."""
        return self._queue.qsize()

    def _end(self) -> None:
        # Once: a device can repeat BYE as fast as the broker forwards it, and the queue
        # would otherwise grow with each while the worker is held by a slow frame.
        if not self._ending:
            self._ending = True
            self._queue.put_nowait(_STOP)

    async def close(self, code: CloseCode) -> None:
        """The registry's closer (called at most once, after ``closed_with`` was set)."""
        self._end()
        if self.live is not None:
            await self._publish(
                device_topic(self.device_id, Channel.SESSION_DOWN),
                control.closed(code, self.session_id),
            )

    def offer(self, frame: bytes) -> bool:
        """Queue a frame; False when the session is closed or its queue is full (dropped:
        the device gets no reply and retransmits with the same sequence)."""
        if self.live is None or self.live.closed_with is not None:
            return False
        if frame[:1] == _RESULT_PREFIX:
            if self._results >= RESULT_QUEUE:
                return False
            self._results += 1
        else:
            if self._frames >= self._depth:
                return False
            self._frames += 1
        self._queue.put_nowait(frame)
        return True

    def sealed_by(self, frame: bytes) -> bool:
        """Whether ``frame`` is a telemetry frame whose tag verifies under this session's key
        (over MQTT a device's sessions share its topics: this tells whose frame it is)."""
        if self.live is None:
            return False
        if self._macs is None:
            self._macs = SessionMacs(self.live.session.session_key)
        try:
            self._macs.open(frame)
        except Rejected:
            return False
        return True

    def end_by_device(self) -> None:
        """A BYE: the device ends the session (recorded as closed by the device)."""
        self._end()

    async def run(self) -> None:
        """Judge frames until the session ends; then release it everywhere."""
        live = self.live
        if live is None:
            raise RuntimeError("an MQTT session runs only once admitted")
        gateway = self._gateway
        config = gateway.config
        replies = device_topic(self.device_id, Channel.REPLIES)
        try:
            if self._deliver is not None:
                live.sender = self._command_sender(self._deliver)
                gateway.commands.session_ready(live)
            while live.closed_with is None:
                try:
                    async with asyncio.timeout(config.idle_timeout.total_seconds()):
                        item = await self._queue.get()
                except TimeoutError:
                    await live.close(live.idle_code)
                    return
                if isinstance(item, _Stop) or live.closed_with is not None:
                    return
                if live.superseded_by is not None:
                    # Only a frame under this session's own key is queued here once it was
                    # superseded (MqttGateway routes it): its TCU is alive.
                    await gateway.superseded_heard(live)
                    return
                result = item[:1] == _RESULT_PREFIX
                if result:
                    self._results -= 1
                else:
                    self._frames -= 1
                if len(item) > config.max_frame_bytes:
                    await live.close(CloseCode.TOO_LARGE)
                    return
                live.touch(gateway.platform.clock.now())
                if result:
                    # A signed command result: the command service's, never the pipeline's.
                    await gateway.commands.on_result(live, item)
                    continue
                reply = await gateway.handler.handle(live.session, item)
                if live.closed_with is not None:
                    return  # closed (revoked, suspended) while the frame was judged
                await self._publish(replies, reply)
        except Exception as exc:
            logger.error("gateway.mqtt.session_error", error=type(exc).__name__)
            await live.close(CloseCode.INTERNAL)
        finally:
            gateway.registry.release(live)
            try:
                gateway.observer.end_session(live.session.session_id)
            except Exception as exc:  # the observer's failure must not skip the record
                logger.error("gateway.observer_failed", error=type(exc).__name__)
            await gateway.record_close(live)

    def _command_sender(self, deliver: Publish) -> Callable[[bytes], Awaitable[None]]:
        """Commands go to this device's own ``commands`` topic (the session's proven device,
        which is also the topic it came on), at QoS 1; a failed publish raises."""
        topic = device_topic(self.device_id, Channel.COMMANDS)

        async def send(envelope: bytes) -> None:
            await deliver(topic, envelope)

        return send
