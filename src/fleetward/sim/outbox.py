"""The store-and-forward outbox of one vehicle: messages sampled while it was offline.

Each message keeps the sequence it was given when sampled and its sampling time; it is sent
later flagged store-and-forward (``docs/telemetry-format.md`` section 4), oldest first, and
dropped only when the platform acked it. The outbox is bounded: when full, the oldest message
is dropped and counted (a real TCU's flash is finite too).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pending:
    sequence: int
    sampled_ms: int
    payload: bytes


class Outbox:
    """Not thread-safe: owned by one driver task."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("an outbox holds at least one message")
        self._capacity = capacity
        self._queue: deque[Pending] = deque()
        self.dropped = 0

    def put(self, message: Pending) -> None:
        if self._queue and message.sequence <= self._queue[-1].sequence:
            raise ValueError("sequences enter the outbox in increasing order")
        if len(self._queue) == self._capacity:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(message)

    def peek(self) -> Pending | None:
        return self._queue[0] if self._queue else None

    def ack(self, sequence: int) -> bool:
        """Drop the oldest message if ``sequence`` is its own (an ack from the platform)."""
        if self._queue and self._queue[0].sequence == sequence:
            self._queue.popleft()
            return True
        return False

    def __len__(self) -> int:
        return len(self._queue)
