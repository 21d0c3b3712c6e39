"""The DPoP replay cache in Redis, shared by every replica (``SET key 1 NX PX ttl``).

With Redis configured the platform runs as several replicas behind one name: a proof seen by
one must be refused by all, or a captured proof and token replay once per replica within the
proof's lifetime. One atomic command: no check-then-set window. Redis errors propagate and
the verifier refuses the proof (fail closed).
"""

from __future__ import annotations

import math
from datetime import timedelta

from redis.asyncio import Redis


class RedisReplayCache:
    """Implements :class:`fleetward.identity.tokens.replay.ReplayCache`."""

    def __init__(self, redis: Redis, *, prefix: str = "fw:replay:") -> None:
        self._redis = redis
        self._prefix = prefix

    async def add_if_absent(self, key: str, ttl: timedelta) -> bool:
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        milliseconds = max(1, math.ceil(ttl.total_seconds() * 1000))
        stored = await self._redis.set(self._prefix + key, 1, nx=True, px=milliseconds)
        return bool(stored)


__all__ = ["RedisReplayCache"]
