"""Stage 4: duplicates and late messages, by the device's sequence number.

The sequence is per device and independent of sessions: a TCU keeps it across reconnects and
reboots and gives a retransmitted message its original sequence. The store's primary key
``(device_id, sequence)`` makes storing idempotent whatever this tracker remembers; the
tracker only answers the common cases without a write (a retransmission of a message stored
recently, or of one whose batch is still being written) and labels late messages.

A message is *late* when a higher sequence of the same device was accepted before it (a
store-and-forward backlog draining after live messages). Late messages are stored like any
other; readers order a device's history by sequence
(:func:`fleetward.telemetry.history.device_history`), so late data takes its place in the
device's own order, not in arrival order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from enum import Enum

# Sequences remembered as stored, per device. Older retransmissions still end up stored once
# (the primary key), they are just answered ``accepted`` instead of ``duplicate``.
DEFAULT_REMEMBERED = 128


class Seen(Enum):
    NEW = "new"
    STORED = "stored"
    IN_FLIGHT = "in-flight"


class _Device:
    __slots__ = ("highest", "in_flight", "order", "stored")

    def __init__(self) -> None:
        self.highest = 0
        self.stored: set[int] = set()
        self.order: deque[int] = deque()
        self.in_flight: dict[int, asyncio.Future[None]] = {}


class SequenceTracker:
    """Not thread-safe: one event loop. No method awaits, so a check and the ``track`` that
    follows it in the same synchronous step cannot interleave with another frame."""

    def __init__(self, *, remembered: int = DEFAULT_REMEMBERED) -> None:
        if remembered < 1:
            raise ValueError("remembered must be positive")
        self._remembered = remembered
        self._devices: dict[str, _Device] = {}

    def classify(self, device_id: str, sequence: int) -> tuple[Seen, asyncio.Future[None] | None]:
        device = self._devices.get(device_id)
        if device is None:
            return Seen.NEW, None
        if sequence in device.stored:
            return Seen.STORED, None
        pending = device.in_flight.get(sequence)
        if pending is not None:
            return Seen.IN_FLIGHT, pending
        return Seen.NEW, None

    def admit(self, device_id: str, sequence: int) -> bool:
        """Record ``sequence`` as accepted for writing; returns whether it is late."""
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = _Device()
        if sequence < device.highest:
            return True
        device.highest = sequence
        return False

    def track(self, device_id: str, sequence: int, write: asyncio.Future[None]) -> None:
        """``write`` resolves when ``sequence`` committed; copies arriving meanwhile wait."""
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = _Device()
        device.in_flight[sequence] = write

    def settle(self, device_id: str, sequence: int, *, stored: bool) -> None:
        """The write of ``sequence`` finished (committed when ``stored``)."""
        device = self._devices.get(device_id)
        if device is None:
            return
        device.in_flight.pop(sequence, None)
        if stored and sequence not in device.stored:
            device.stored.add(sequence)
            device.order.append(sequence)
            if len(device.order) > self._remembered:
                device.stored.discard(device.order.popleft())
