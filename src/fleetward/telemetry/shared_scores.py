"""Quarantine scores shared by replicas through Redis (with ``redis_url`` set).

Without it each process scored a device's refused frames on its own, so a device sending bad
frames through two replicas needed twice as many to be quarantined. Here every refused
frame's weight goes into one sorted set per device (score: the caller's wall-clock time in
milliseconds; member: a unique tag and the weight), and one Lua script drops what fell out
of the window, adds the frame, sums and, at the threshold, deletes the set and answers
"crossed": Redis runs the script whole, so of two replicas adding the last weights
concurrently exactly one is told, and the decision is taken once.

Memory is bounded: a set lives only while its sum is below the threshold and every weight
is at least 1, so it never holds ``threshold`` members, and it expires one window after its
latest frame. Replicas must keep their clocks NTP-synced (as for the API quotas,
:mod:`fleetward.abuse.redis_store`). One key per call: fine on Redis Cluster.

Any error, timeout or malformed reply raises :class:`ScoresUnavailable`; the quarantine
policy then decides on its own process's score (never more lenient than without Redis).
"""

from __future__ import annotations

import itertools
import secrets
from datetime import timedelta
from typing import Final, Protocol

from redis.asyncio import Redis

from fleetward.core.redis_scripts import DEFAULT_TIMEOUT, ScriptStore

DEFAULT_PREFIX: Final = "fw:tq:score:"

# KEYS[1]: the device's score. ARGV: now (ms), cutoff (ms: entries at or before it are out
# of the window, as in the in-process policy), window (ms, the key's lifetime), threshold,
# weight, a tag unique to this call. Times come as decimal strings from the caller (never
# Lua numbers turned into strings: tostring() keeps 14 significant digits).
# Reply: 1 when this frame brought the score to the threshold (the set is gone), else 0.
_ADD: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[6] .. ':' .. ARGV[5])
local total = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + tonumber(string.match(member, ':(%d+)$'))
end
if total >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 0
"""


class ScoresUnavailable(Exception):
    """The shared scores could not answer (unreachable, timed out, malformed reply). The
    frame may or may not have been counted there."""


class SharedScores(Protocol):
    """Per-device scores shared by every replica. Safe for concurrent use from one event
    loop; ``add`` is atomic across replicas. Raises :class:`ScoresUnavailable` on failure."""

    async def add(
        self, device_id: str, weight: int, *, now_ms: int, threshold: int, window_ms: int
    ) -> bool:
        """Add ``weight`` at ``now_ms``; True only for the call that brought the score over
        the last ``window_ms`` to ``threshold``. ``ValueError`` for a weight outside
        1..threshold or a window under 1 ms."""
        ...

    async def forget(self, device_id: str) -> None:
        """Drop the device's score (its quarantine was lifted)."""
        ...

    async def close(self) -> None: ...


class RedisScores(ScriptStore):
    """:class:`SharedScores` in Redis. ``timeout`` bounds each call: a frame's reply waits
    for it, so a hanging Redis costs each refused frame at most that long."""

    what = "shared scores"
    unavailable = ScoresUnavailable

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(redis, _ADD, prefix=prefix, timeout=timeout)
        # Members must be unique per frame: this process's random tag and a counter.
        self._tag = secrets.token_hex(6)
        self._calls = itertools.count()

    async def add(
        self, device_id: str, weight: int, *, now_ms: int, threshold: int, window_ms: int
    ) -> bool:
        if not 1 <= weight <= threshold or window_ms < 1:
            raise ValueError("a weight is between 1 and the threshold; a window is positive")
        self._refuse_if_closed()
        args = (
            str(now_ms),
            str(now_ms - window_ms),
            str(window_ms),
            str(threshold),
            str(weight),
            f"{self._tag}{next(self._calls)}",
        )
        reply = await self._call(self._script(keys=[self._prefix + device_id], args=args))
        if reply not in (0, 1) or type(reply) is not int:
            raise ScoresUnavailable("shared scores: malformed reply")
        return reply == 1

    async def forget(self, device_id: str) -> None:
        self._refuse_if_closed()
        await self._call(self._redis.delete(self._prefix + device_id))
