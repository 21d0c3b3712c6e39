"""Quotas as the settings configure them, for the composition root.

In-process buckets on the embedded default; Redis, shared by every replica, when
``redis_url`` is set (with in-process buckets as the ``local_limit`` fallback).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from fleetward.abuse.guard import GuardedQuotas
from fleetward.abuse.memory import InMemoryQuotaStore
from fleetward.abuse.policy import QuotaPolicy
from fleetward.abuse.redis_store import DEFAULT_TIMEOUT, RedisQuotaStore
from fleetward.settings import Settings


@dataclass(slots=True)
class QuotaRuntime:
    policy: QuotaPolicy
    quotas: GuardedQuotas
    redis_store: RedisQuotaStore | None = None

    @classmethod
    def build(cls, settings: Settings) -> QuotaRuntime:
        """Raises ``ValueError`` for a raised quota that names no raisable limit."""
        policy = QuotaPolicy.from_settings(settings)
        if settings.redis_url is None:
            return cls(policy, GuardedQuotas(InMemoryQuotaStore()))
        timeout = DEFAULT_TIMEOUT.total_seconds()
        redis = Redis.from_url(
            settings.redis_url.get_secret_value(),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        store = RedisQuotaStore(redis)
        return cls(policy, GuardedQuotas(store, InMemoryQuotaStore()), store)

    async def close(self) -> None:
        if self.redis_store is not None:
            await self.redis_store.close()
