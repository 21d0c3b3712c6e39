"""Drives one simulated vehicle over its device sessions: sample, seal, send, judge the reply.

Per tick the vehicle advances ``step_s`` simulated seconds and reports its signals in one
message. On its fault ticks (every ``fault_every``-th message) it commits its fault instead
(see ``faults``) and checks the reply against the documented one. Messages are numbered with a
per-device sequence that never goes back (it starts from the device clock in microseconds, so
a later run of the same device continues above an earlier one) and a per-session counter.

A retryable reply (quota, store) keeps the message: it is sent again after ``retry_after_ms``
with a new counter and the same sequence, as a TCU must.

Sessions come from a :class:`~fleetward.sim.transport.SimTransport` (WebSocket or MQTT); the
driver does not know which.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from fleetward.commands.envelope import COMMAND_TYPE
from fleetward.gateway.device_client import DeviceCredentials, HandshakeRefused, SessionClosed
from fleetward.gateway.handshake import epoch_ms
from fleetward.sim.command_guard import CommandGuard, GuardAction, GuardOutcome
from fleetward.sim.commands import SimCommandExecutor
from fleetward.sim.faults import DEFAULT_DRIFT_MS, DEFAULT_FLOOD_MAX, EXPECTED, Fault
from fleetward.sim.frames import encode_payload, faulty_frame
from fleetward.sim.outbox import Outbox, Pending
from fleetward.sim.tally import Tally
from fleetward.sim.transport import Endpoint, SimLink, SimTransport
from fleetward.sim.vehicle import SimVehicle
from fleetward.telemetry.envelope import Reply, open_reply, seal
from fleetward.telemetry.errors import Status

__all__ = ["DriveConfig", "Endpoint", "VehicleDriver"]

MAX_ATTEMPTS: Final = 5
# The clone's copy of the device numbers its messages far from the original's.
CLONE_SEQUENCE_OFFSET: Final = 1 << 40
_COMMAND_PREFIX: Final = bytes([COMMAND_TYPE])


@dataclass(frozen=True, slots=True)
class DriveConfig:
    messages: int | None = 20  # per vehicle (ticks); None: until the runner stops it
    interval_s: float = 1.0  # wall-clock pause between ticks (0: as fast as acks come)
    # The pause after the first tick instead (None: interval_s): a fleet whose vehicles
    # connect together spreads its reports over the interval with it, as a real fleet's are.
    first_pause_s: float | None = None
    step_s: float = 5.0  # simulated seconds per tick
    fault_every: int = 3
    offline_ticks: int = 4
    sleep_ticks: int = 2  # quiet ticks of a sleeping vehicle before it wakes
    drift_ms: int = DEFAULT_DRIFT_MS
    flood_max: int = DEFAULT_FLOOD_MAX  # messages of one flood at most
    flood_window: int = 16  # flood messages sent ahead of their replies
    outbox_capacity: int = 1000
    vehicle_config: str = "cfg-sim-2026a"

    def __post_init__(self) -> None:
        if self.messages is not None and self.messages < 1:
            raise ValueError("messages must be positive")
        if self.fault_every < 2:
            raise ValueError("fault_every must be at least 2 (a vehicle also sends clean data)")
        if self.first_pause_s is not None and self.first_pause_s < 0:
            raise ValueError("the first pause must not be negative")
        if self.interval_s < 0 or self.step_s <= 0 or self.offline_ticks < 1:
            raise ValueError("interval, step and offline ticks must be positive")
        if self.sleep_ticks < 1 or self.flood_max < 1 or self.flood_window < 1:
            raise ValueError("sleep ticks, flood size and flood window must be positive")


class _Link:
    """One session with its counter; the counter starts at 1 on every new session.

    With a command guard, a reader task takes every message the server sends: command
    envelopes go to the guard (and its signed answer goes back up at once), replies to
    telemetry are queued for :meth:`receive` in order. Sends are serialised."""

    def __init__(
        self,
        connection: SimLink,
        guard: CommandGuard | None = None,
        on_command: Callable[[GuardOutcome], None] | None = None,
    ) -> None:
        self.connection = connection
        self.counter = 0
        self.last_frame: bytes | None = None
        self._guard = guard
        self._on_command = on_command
        self._replies: asyncio.Queue[bytes | SessionClosed] = asyncio.Queue()
        self._sending = asyncio.Lock()
        self._reader = asyncio.create_task(self._read()) if guard is not None else None

    def next_counter(self) -> int:
        self.counter += 1
        return self.counter

    async def send(self, frame: bytes) -> None:
        async with self._sending:
            await self.connection.send(frame)

    async def receive(self) -> bytes:
        if self._reader is None:
            return await self.connection.receive()
        item = await self._replies.get()
        if isinstance(item, SessionClosed):
            self._replies.put_nowait(item)  # every later receive fails the same way
            raise item
        return item

    async def _read(self) -> None:
        guard = self._guard
        while guard is not None:
            try:
                message = await self.connection.receive()
            except SessionClosed as closed:
                self._replies.put_nowait(closed)
                return
            if message[:1] != _COMMAND_PREFIX:
                self._replies.put_nowait(message)
                continue
            answer, outcome = await guard.handle(message)
            if answer is not None:
                try:
                    await self.send(answer)
                except SessionClosed as closed:
                    self._replies.put_nowait(closed)
                    return
            if self._on_command is not None:
                self._on_command(outcome)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.connection.close()


class VehicleDriver:
    """Runs one vehicle. Not thread-safe: one task."""

    def __init__(
        self,
        vehicle: SimVehicle,
        credentials: DeviceCredentials,
        transport: SimTransport,
        config: DriveConfig,
        *,
        clock: Callable[[], datetime],
        fault: Fault | None = None,
        foreign_vehicle_id: str = "",
        connect_gate: asyncio.Semaphore | None = None,
    ) -> None:
        if fault is Fault.FOREIGN and not foreign_vehicle_id:
            raise ValueError("the foreign fault needs another vehicle's id")
        if fault is Fault.CLONE and not transport.concurrent_sessions:
            raise ValueError(f"the clone fault needs two live sessions: not over {transport.kind}")
        self.vehicle = vehicle
        self.credentials = credentials
        self.fault = fault
        self.tally = Tally()
        self._transport = transport
        self._config = config
        self._clock = clock
        self._foreign = foreign_vehicle_id
        self._gate = connect_gate or asyncio.Semaphore(1)
        self._sequence = epoch_ms(clock()) * 1000
        self._clone_sequence = self._sequence + CLONE_SEQUENCE_OFFSET
        self._outbox = Outbox(config.outbox_capacity)
        self._link: _Link | None = None
        self._clone: _Link | None = None
        self._offline_left = 0
        self._quiet_left = 0
        # Commands: one guard per vehicle (its counter window outlives sessions), answered
        # on whichever session they arrive; an executed one makes the vehicle report at once.
        self._report = asyncio.Event()
        self.guard = (
            CommandGuard(
                vehicle_id=credentials.vehicle_id,
                device_id=credentials.device_id,
                device_key=credentials.key,
                trusted_keys=credentials.command_keys,
                clock=clock,
                receiver=SimCommandExecutor(vehicle),
            )
            if credentials.command_keys
            else None
        )

    async def run(self, stop: asyncio.Event) -> Tally:
        """Drive until ``messages`` ticks are done, ``stop`` is set, or the server ends it."""
        try:
            self._link = await self._open()
            tick = 0
            while not stop.is_set() and (
                self._config.messages is None or tick < self._config.messages
            ):
                tick += 1
                if self._report.is_set():
                    # A command changed the vehicle: report its state now (no time passes).
                    self._report.clear()
                else:
                    self.vehicle.step(self._config.step_s)
                fault_tick = self.fault is not None and tick % self._config.fault_every == 0
                await self._tick(fault_tick)
                pause = self._config.interval_s
                if tick == 1 and self._config.first_pause_s is not None:
                    pause = self._config.first_pause_s
                if pause > 0:
                    await _pause(stop, pause, self._report)
            if self._offline_left and not stop.is_set():
                await self._come_back()
        except HandshakeRefused as refused:
            self.tally.ends[f"handshake:{refused.code or refused.reason}"] += 1
        except SessionClosed as closed:
            self.tally.ends[f"closed:{closed.code}"] += 1
        finally:
            await self._close_all()
        self.tally.outbox_dropped = self._outbox.dropped
        return self.tally

    # ------------------------------------------------------------------ ticks

    async def _tick(self, fault_tick: bool) -> None:
        if self._quiet_left:  # asleep: nothing sampled, nothing sent
            self._quiet_left -= 1
            self.tally.quiet_ticks += 1
            return
        if self.vehicle.asleep:
            await self._wake()
            return
        sequence = self._next_sequence()
        payload = encode_payload(self.vehicle.signals())
        now_ms = epoch_ms(self._clock())
        if self._offline_left:
            self._outbox.put(Pending(sequence, now_ms, payload))
            self._offline_left -= 1
            if not self._offline_left:
                await self._come_back()
            return
        fault = self.fault if fault_tick else None
        if fault is Fault.OFFLINE:
            await self._go_offline()
            self._outbox.put(Pending(sequence, now_ms, payload))
            self._offline_left = self._config.offline_ticks - 1
            if not self._offline_left:
                await self._come_back()
            return
        if fault is Fault.CLONE:
            await self._clone_sends(payload, now_ms)
            return
        if fault is Fault.SLEEP:
            await self._fall_asleep(sequence, now_ms)
            return
        link = self._require_link()
        if fault is Fault.FLOOD:
            await self._flood(link, payload)
            return
        if fault is None:
            await self._send_clean(link, sequence, now_ms, payload)
            return
        frame = faulty_frame(
            fault,
            link.connection.session_key,
            self.vehicle.signals(),
            counter=link.next_counter(),
            sequence=sequence,
            now_ms=now_ms,
            previous=link.last_frame,
            foreign_vehicle_id=self._foreign,
            drift_ms=self._config.drift_ms,
        )
        status = await self._exchange(link, frame)
        self.tally.fault(fault, as_documented=status is EXPECTED[fault])

    async def _send_clean(self, link: _Link, sequence: int, now_ms: int, payload: bytes) -> Status:
        status = await self._deliver(link, sequence, now_ms, payload, store_and_forward=False)
        if not status.stored:
            self.tally.ends[f"clean-refused:{status.slug}"] += 1
        return status

    async def _deliver(
        self,
        link: _Link,
        sequence: int,
        sampled_ms: int,
        payload: bytes,
        *,
        store_and_forward: bool,
    ) -> Status:
        """Send one message until it is stored or refused for good (retryable: kept)."""
        status = Status.STORE_UNAVAILABLE
        for _attempt in range(MAX_ATTEMPTS):
            frame = seal(
                link.connection.session_key,
                payload,
                counter=link.next_counter(),
                sequence=sequence,
                device_time_ms=sampled_ms,
                store_and_forward=store_and_forward,
            )
            reply = await self._request(link, frame)
            status = reply.status
            if not status.retryable:
                if status.stored:
                    link.last_frame = frame
                return status
            await asyncio.sleep(reply.retry_after_ms / 1000)
        return status

    async def _exchange(self, link: _Link, frame: bytes) -> Status:
        return (await self._request(link, frame)).status

    async def _request(self, link: _Link, frame: bytes) -> Reply:
        started = time.perf_counter()
        await link.send(frame)
        return self._judge(link, await link.receive(), started)

    def _judge(self, link: _Link, raw: bytes, started: float) -> Reply:
        """Authenticate a reply and count it (``started``: when its frame was sent)."""
        try:
            reply = open_reply(link.connection.session_key, raw)
        except ValueError:
            # Not from the server that holds the session key: never act on it.
            raise SessionClosed(None, "unauthenticated reply") from None
        now = time.perf_counter()
        self.tally.reply(reply.status, now - started, at=now)
        return reply

    # ------------------------------------------------------------------ rate

    async def _flood(self, link: _Link, payload: bytes) -> None:
        """Send fresh messages back to back (up to ``flood_window`` ahead of their replies)
        until the platform refuses one for quota, or ``flood_max`` were sent. As documented:
        every reply ``accepted`` or ``quota-exceeded`` with a retry time, and a refusal before
        the cap. A flooding vehicle drops what was refused (nothing of it is stored)."""
        config = self._config
        in_flight: deque[float] = deque()
        sent = 0
        refused = False
        documented = True
        while in_flight or (sent < config.flood_max and not refused):
            while sent < config.flood_max and not refused and len(in_flight) < config.flood_window:
                frame = seal(
                    link.connection.session_key,
                    payload,
                    counter=link.next_counter(),
                    sequence=self._next_sequence(),
                    device_time_ms=epoch_ms(self._clock()),
                )
                in_flight.append(time.perf_counter())
                await link.send(frame)
                sent += 1
            reply = self._judge(link, await link.receive(), in_flight.popleft())
            if reply.status is Status.QUOTA_EXCEEDED:
                refused = True
                documented = documented and reply.retry_after_ms > 0
            elif reply.status is not Status.ACCEPTED:
                documented = False
        self.tally.flooded += sent
        self.tally.fault(Fault.FLOOD, as_documented=documented and refused)

    # ------------------------------------------------------------------ faults with sessions

    async def _go_offline(self) -> None:
        # A clean close first: reconnecting from the same address right after one is fine
        # (docs/vehicle-protocol.md 4.8); a dropped link would have to wait 30 s.
        link = self._require_link()
        self._link = None
        await link.close()

    async def _come_back(self) -> None:
        """Reconnect and send the outbox, oldest first, flagged store-and-forward."""
        link = self._link = await self._open()
        while (pending := self._outbox.peek()) is not None:
            status = await self._deliver(
                link, pending.sequence, pending.sampled_ms, pending.payload, store_and_forward=True
            )
            self.tally.store_and_forward_sent += 1
            self.tally.fault(Fault.OFFLINE, as_documented=status is EXPECTED[Fault.OFFLINE])
            if status.retryable:
                return  # kept: sent again after the next offline period or at the end
            self._outbox.ack(pending.sequence)

    async def _fall_asleep(self, sequence: int, now_ms: int) -> None:
        """Park and fall asleep: report the parked state once, close the session cleanly (a
        TCU powering its modem down) and stay quiet for ``sleep_ticks`` ticks."""
        self.vehicle.sleep()
        payload = encode_payload(self.vehicle.signals())
        await self._send_clean(self._require_link(), sequence, now_ms, payload)
        await self._go_offline()
        self._quiet_left = self._config.sleep_ticks
        self.tally.sleeps += 1

    async def _wake(self) -> None:
        """Wake: a new session, and the current state as a live message (nothing was sampled
        while asleep, so nothing is store-and-forward)."""
        self.vehicle.wake()
        self._link = link = await self._open()
        status = await self._send_clean(
            link,
            self._next_sequence(),
            epoch_ms(self._clock()),
            encode_payload(self.vehicle.signals()),
        )
        self.tally.fault(Fault.SLEEP, as_documented=status is EXPECTED[Fault.SLEEP])

    async def _clone_sends(self, payload: bytes, now_ms: int) -> None:
        """A copy of this device, with the same credentials, in a second live session."""
        if self._clone is None:
            self._clone = await self._open()
        self._clone_sequence += 1
        status = await self._deliver(
            self._clone, self._clone_sequence, now_ms, payload, store_and_forward=False
        )
        self.tally.fault(Fault.CLONE, as_documented=status is EXPECTED[Fault.CLONE])

    # ------------------------------------------------------------------ sessions

    async def _open(self) -> _Link:
        async with self._gate:
            started = time.perf_counter()
            connection = await self._transport.open(
                self.credentials,
                software_version=self.vehicle.state.software_version,
                vehicle_config=self._config.vehicle_config,
                now=self._clock,
            )
            self.tally.handshake(time.perf_counter() - started)
        return _Link(connection, self.guard, self._commanded)

    def _commanded(self, outcome: GuardOutcome) -> None:
        self.tally.commands[f"{outcome.action.value}:{outcome.reason}"] += 1
        if outcome.action is GuardAction.ACTED:
            self._report.set()

    def _require_link(self) -> _Link:
        if self._link is None:
            raise SessionClosed(None, "no session")
        return self._link

    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    async def _close_all(self) -> None:
        for link in (self._link, self._clone):
            if link is not None:
                await link.close()
        self._link = self._clone = None


async def _pause(stop: asyncio.Event, seconds: float, wake: asyncio.Event) -> None:
    """Sleep ``seconds``, or less if ``stop`` or ``wake`` is set meanwhile."""
    stopped = asyncio.ensure_future(stop.wait())
    woken = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({stopped, woken}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in (stopped, woken):
            waiter.cancel()
