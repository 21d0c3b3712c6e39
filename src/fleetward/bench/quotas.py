"""Quota check overhead per request, in process and with Redis, against ceilings in the run.

Measured one after another, interleaved in short slices so that load drifting during the
run hits all alike. Each request is a whole quota check as a route would make it: build the
plan (:meth:`QuotaPolicy.plan`) and enforce it (:meth:`GuardedQuotas.enforce`). Requests
alternate between a read of 10 objects (user, client, tenant, global: 4 charges) and a
remote command to one vehicle (+ command type and vehicle: 6 charges), over 10,000 users
and vehicles, with limits high enough that every request passes (the common path):

a. ``dict``: the ceiling in process: one dict lookup and one store per charge, the same
   keys (what any in-process counter must at least do);
b. ``memory``: plan + enforce on :class:`InMemoryQuotaStore`;
c. ``memory_consume``: the store's ``consume`` alone, plans built beforehand;
d. ``ping``: the ceiling with Redis: one PING round trip on the same client;
e. ``redis``: plan + enforce on :class:`RedisQuotaStore` (one EVALSHA);
f. ``redis_consume``: the store's ``consume`` alone.

Targets (issue 8): p99 of (b) <= 0.2 ms, p99 of (e) <= 1 ms on the local Redis. The Redis
keys use a fresh prefix and are deleted afterwards. Run:
``python -m fleetward.bench.quotas [seconds] [redis-url]``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from redis.asyncio import Redis
from redis.exceptions import RedisError

from fleetward.abuse.guard import GuardedQuotas
from fleetward.abuse.memory import InMemoryQuotaStore
from fleetward.abuse.policy import Degrade, QuotaPlan, QuotaPolicy
from fleetward.abuse.quotas import MAX_CAPACITY, Limit
from fleetward.abuse.redis_store import RedisQuotaStore
from fleetward.abuse.store import QuotaStore
from fleetward.authz.permissions import Permission
from fleetward.core.clock import SystemClock

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_ACTORS = 10_000
_WARMUP_CALLS = 500
_SLICE_SECONDS = 0.25
_MINUTE = timedelta(minutes=1)

Call = Callable[[], Awaitable[object]]


def _policy() -> QuotaPolicy:
    wide = MAX_CAPACITY
    return QuotaPolicy(
        user=Limit("user-objects", wide, _MINUTE),
        client=Limit("client-objects", wide, _MINUTE),
        tenant=Limit("tenant-objects", wide, _MINUTE),
        platform=Limit("global-objects", wide, _MINUTE),
        vehicle_commands=Limit("vehicle-commands", 1000, _MINUTE),
        command_capacity=wide,
        command_capacities={},
    )


def _requests(policy: QuotaPolicy, clock: SystemClock) -> Callable[[int], QuotaPlan]:
    def plan(n: int) -> QuotaPlan:
        who = n % _ACTORS
        if n % 2:
            return policy.plan(
                tenant=f"ten_{who % 50}",
                client="cli_mobile",
                user=f"usr_{who}",
                objects=10,
                now=clock.now(),
            )
        return policy.plan(
            tenant=f"ten_{who % 50}",
            client="cli_mobile",
            user=f"usr_{who}",
            vehicles=[f"veh_{who}"],
            command=Permission.VEHICLE_LOCK,
            now=clock.now(),
        )

    return plan


def _checks(store: QuotaStore, policy: QuotaPolicy) -> tuple[Call, Call]:
    """(plan + enforce, consume of prebuilt plans) on ``store``."""
    clock = SystemClock()
    plan = _requests(policy, clock)
    quotas = GuardedQuotas(store)
    counter = itertools.count()
    cycle = itertools.cycle(_prebuilt(policy))

    async def check() -> object:
        return await quotas.enforce(
            plan(next(counter)), now=clock.now(), degrade=Degrade.FAIL_CLOSED
        )

    async def consume() -> object:
        request = next(cycle)
        return await store.consume(request.charges, request.cost, now=clock.now())

    return check, consume


def _dict_ceiling(policy: QuotaPolicy) -> Call:
    keys = [[c.key for c in p.charges] for p in _prebuilt(policy)]
    table: dict[str, int] = {}
    cycle = itertools.cycle(keys)

    async def call() -> object:
        for key in next(cycle):
            table[key] = table.get(key, 0) + 1
        return None

    return call


def _prebuilt(policy: QuotaPolicy) -> list[QuotaPlan]:
    plan = _requests(policy, SystemClock())
    return [plan(n) for n in range(2 * _ACTORS)]


async def _timed(call: Call, seconds: float, samples: list[int]) -> None:
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    while True:
        start = clock()
        await call()
        end = clock()
        samples.append(end - start)
        if end >= deadline:
            return


def _summary(name: str, samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        f"{name}_per_s": len(samples) / (sum(samples) / 1e9),
        f"{name}_p50_ms": statistics.median(ordered) / 1e6,
        f"{name}_p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] / 1e6,
    }


async def _run(calls: dict[str, Call], seconds: float) -> dict[str, list[int]]:
    for call in calls.values():
        for _ in range(_WARMUP_CALLS):
            await call()
    samples: dict[str, list[int]] = {name: [] for name in calls}
    rounds = max(1, round(seconds / _SLICE_SECONDS))
    for _ in range(rounds):
        for name, call in calls.items():
            await _timed(call, seconds / rounds, samples[name])
    return samples


async def _measure(seconds: float, redis_url: str | None) -> dict[str, float | str]:
    policy = _policy()
    memory_check, memory_consume = _checks(InMemoryQuotaStore(), policy)
    calls: dict[str, Call] = {
        "dict": _dict_ceiling(policy),
        "memory": memory_check,
        "memory_consume": memory_consume,
    }
    redis: Redis | None = None
    prefix = f"fw:bench:quota:{secrets.token_hex(4)}:"
    result: dict[str, float | str] = {}
    if redis_url is not None:
        redis = Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            await redis.ping()
        except (RedisError, OSError):
            result["redis"] = "unreachable"
            await redis.aclose()
            redis = None
    if redis is not None:
        client = redis
        redis_check, redis_consume = _checks(RedisQuotaStore(client, prefix=prefix), policy)

        async def ping() -> object:
            return await client.ping()

        calls |= {"ping": ping, "redis": redis_check, "redis_consume": redis_consume}
    try:
        samples = await _run(calls, seconds)
    finally:
        if redis is not None:
            keys = [key async for key in redis.scan_iter(match=prefix + "*", count=1000)]
            for start in range(0, len(keys), 1000):
                await redis.delete(*keys[start : start + 1000])
            await redis.aclose()
    for name, taken in samples.items():
        result.update(_summary(name, taken))
    result["ratio_memory_to_dict_per_s"] = float(result["memory_per_s"]) / float(
        result["dict_per_s"]
    )
    if "redis_per_s" in result:
        result["ratio_redis_to_ping_per_s"] = float(result["redis_per_s"]) / float(
            result["ping_per_s"]
        )
        result["redis_minus_ping_p50_ms"] = float(result["redis_p50_ms"]) - float(
            result["ping_p50_ms"]
        )
    return result


def run(seconds: float = 2.0, redis_url: str | None = DEFAULT_REDIS_URL) -> dict[str, float | str]:
    """Measure (a)-(f) for ``seconds`` each ((d)-(f) only if Redis answers at ``redis_url``);
    rates per second, p50/p99 in milliseconds, ratios to the ceilings."""
    return asyncio.run(_measure(seconds, redis_url))


def main(argv: list[str]) -> None:
    seconds = float(argv[1]) if len(argv) > 1 else 2.0
    url = argv[2] if len(argv) > 2 else DEFAULT_REDIS_URL
    for name, value in run(seconds, url).items():
        shown = f"{value:14.4f}" if isinstance(value, float) else value
        print(f"{name:28} {shown}")


if __name__ == "__main__":
    main(sys.argv)
