"""Quotas as the settings configure them, for the composition root.

In-process buckets on the embedded default; Redis, shared by every replica, when
``redis_url`` is set (with in-process buckets as the ``local_limit`` fallback). The same
choice holds for the enumeration guard's distinct sets and stops (its runs and levels are per
process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from fleetward.abuse.enumeration import EnumerationConfig, EnumerationGuard, RedisDistinct
from fleetward.abuse.guard import GuardedQuotas
from fleetward.abuse.memory import InMemoryQuotaStore
from fleetward.abuse.notices import Notices
from fleetward.abuse.policy import QuotaPolicy
from fleetward.abuse.redis_store import RedisQuotaStore
from fleetward.core.redis_scripts import connect
from fleetward.settings import Settings


@dataclass(slots=True)
class QuotaRuntime:
    policy: QuotaPolicy
    quotas: GuardedQuotas
    redis_store: RedisQuotaStore | None = None
    enumeration: EnumerationGuard = field(
        default_factory=lambda: EnumerationGuard(EnumerationConfig())
    )
    # Which refusals and raised-quota uses are due an audit event again (abuse/notices.py).
    notices: Notices = field(default_factory=Notices)
    # How a slowed actor's request waits (the enumeration delay); tests record instead.
    sleep: Callable[[float], Awaitable[None]] = field(default_factory=lambda: _sleep)

    @classmethod
    def build(cls, settings: Settings) -> QuotaRuntime:
        """Raises ``ValueError`` for a raised quota that names no raisable limit."""
        policy = QuotaPolicy.from_settings(settings)
        enumeration = enumeration_config(settings)
        if settings.redis_url is None:
            return cls(
                policy, GuardedQuotas(InMemoryQuotaStore()), None, EnumerationGuard(enumeration)
            )
        redis = connect(settings.redis_url.get_secret_value())
        store = RedisQuotaStore(redis)
        distinct = RedisDistinct(redis, enumeration.window)
        return cls(
            policy,
            GuardedQuotas(store, InMemoryQuotaStore()),
            store,
            EnumerationGuard(enumeration, distinct, stops=distinct),
        )

    async def close(self) -> None:
        if self.redis_store is not None:
            await self.redis_store.close()


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def enumeration_config(settings: Settings) -> EnumerationConfig:
    return EnumerationConfig(
        window=timedelta(seconds=settings.quota_enumeration_window_seconds),
        slow_distinct=settings.quota_enumeration_slow_distinct,
        stop_distinct=settings.quota_enumeration_stop_distinct,
        slow_run=settings.quota_enumeration_slow_run,
        stop_run=settings.quota_enumeration_stop_run,
        cooldown=timedelta(seconds=settings.quota_enumeration_cooldown_seconds),
    )
