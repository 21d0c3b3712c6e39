"""Replay detection for one-time values (DPoP proof ``jti``s).

The protocol is one atomic operation so that a Redis implementation (``SET key 1 NX PX ttl``)
is a drop-in: a check-then-set in two steps would let two concurrent requests both see
"absent" and both be accepted.
"""

from __future__ import annotations

import heapq
import threading
from datetime import timedelta
from typing import Protocol

from fleetward.core.clock import Clock


class ReplayCache(Protocol):
    """Remembers keys for a while. Must be safe for concurrent use.

    ``add_if_absent`` atomically records ``key`` for ``ttl`` and returns ``True`` if it was not
    already recorded, ``False`` if it was (a replay). Raising means "cannot tell"; callers
    refuse the request (fail closed).
    """

    async def add_if_absent(self, key: str, ttl: timedelta) -> bool: ...


class ReplayCacheFullError(RuntimeError):
    """Raised instead of forgetting live entries: evicting one would re-open a replay window."""


class InMemoryReplayCache:
    """Process-local replay cache with expiry, bounded to ``max_entries`` live keys."""

    def __init__(self, clock: Clock, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (expiry, key); may hold stale pairs
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    async def add_if_absent(self, key: str, ttl: timedelta) -> bool:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        now = self._clock.now().timestamp()
        with self._lock:
            self._purge(now)
            if key in self._expiry:
                return False
            if len(self._expiry) >= self._max_entries:
                raise ReplayCacheFullError("replay cache is full of live entries")
            expires = now + ttl.total_seconds()
            self._expiry[key] = expires
            heapq.heappush(self._heap, (expires, key))
            return True

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires:
                del self._expiry[key]
