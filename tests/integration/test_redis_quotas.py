"""Quotas shared through the real Redis: many concurrent clients on three separate connection
pools ("replicas") get exactly the capacity, never more, all or nothing; losing Redis (a
closed port, a connection cut mid-run, a closed store) is never an allowance, and
GuardedQuotas fails closed or degrades as each call asks.

Needs Redis at FLEETWARD_TEST_REDIS_URL (default 127.0.0.1:6379/15): fails when
FLEETWARD_REQUIRE_SERVICES is set and Redis is unreachable, is skipped otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from conftest import require_service
from fleetward.abuse.enumeration import (
    EnumerationConfig,
    EnumerationGuard,
    Level,
    RedisDistinct,
    Signal,
    vehicle_touched,
)
from fleetward.abuse.errors import QuotaStoreDown
from fleetward.abuse.guard import GuardedQuotas
from fleetward.abuse.policy import Degrade, QuotaPolicy
from fleetward.abuse.quotas import Charge, Dimension, Limit
from fleetward.abuse.redis_store import RedisQuotaStore
from fleetward.abuse.runtime import QuotaRuntime
from fleetward.abuse.store import QuotaUnavailable
from fleetward.authz.permissions import Permission
from fleetward.core.clock import SystemClock
from fleetward.settings import Settings

REDIS_URL = os.environ.get("FLEETWARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REPLICAS = 3
CLIENTS = 50
DAY = timedelta(days=1)  # long windows: no refill while a test runs
CALL_BUDGET = timedelta(seconds=5)


def _client(url: str = REDIS_URL) -> Redis:
    return Redis.from_url(url, socket_timeout=5, socket_connect_timeout=0.5)


@dataclass
class Replicas:
    prefix: str
    admin: Redis
    clients: list[Redis] = field(default_factory=list)

    def stores(self) -> list[RedisQuotaStore]:
        # These tests count what concurrent replicas draw, not how fast: a call budget well
        # above the production default, so that a parallel suite's busy core cannot turn a
        # slow answer into a QuotaUnavailable (the budget's own tests use a dead or cut link).
        return [
            RedisQuotaStore(client, prefix=self.prefix, timeout=CALL_BUDGET)
            for client in self.clients
        ]

    async def spent(self, charge: Charge) -> int:
        """Whole units drawn from a bucket, read straight from Redis (now fixed: no refill)."""
        credit = await self.admin.hget(self.prefix + charge.key, "c")
        full = charge.limit.full_credit
        return (full - int(credit)) // charge.limit.window_ms if credit is not None else 0


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    require_service("Redis", REDIS_URL)
    prefix = f"fw:test:quota:{secrets.token_hex(4)}:"
    shared = Replicas(prefix, _client(), [_client() for _ in range(REPLICAS)])
    try:
        yield shared
    finally:
        keys = [key async for key in shared.admin.scan_iter(match=prefix + "*")]
        if keys:
            await shared.admin.delete(*keys)
        for client in [shared.admin, *shared.clients]:
            await client.aclose()


async def test_concurrent_replicas_get_exactly_the_capacity(replicas: Replicas) -> None:
    stores = replicas.stores()
    now = SystemClock().now()
    tenant = Charge(Dimension.TENANT, "ten_shared", Limit("tenant-objects", 100, DAY))
    users = [Charge(Dimension.USER, f"usr_{n}", Limit("user-objects", 4, DAY)) for n in range(50)]

    async def client(n: int) -> int:
        store = stores[n % REPLICAS]
        passed = 0
        for _ in range(6):  # 50 x 6 = 300 attempts; the users alone would allow 200
            verdict = await store.consume([users[n], tenant], 1, now=now)
            passed += verdict.allowed
        return passed

    per_client = await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    assert sum(per_client) == 100  # the tenant bucket binds: exactly its capacity
    assert await replicas.spent(tenant) == 100
    # All or nothing: every user bucket was drawn exactly as often as that user passed, so
    # no refused request took a unit from the user bucket that still had room.
    for n, passed in enumerate(per_client):
        assert await replicas.spent(users[n]) == passed <= 4


async def test_concurrent_mixed_costs_never_overdraw(replicas: Replicas) -> None:
    stores = replicas.stores()
    now = SystemClock().now()
    shared = Charge(Dimension.GLOBAL, "platform", Limit("global-objects", 1_000, DAY))
    rng = random.Random(8)
    costs = [[rng.randint(1, 9) for _ in range(8)] for _ in range(CLIENTS)]  # ~2,000 asked

    async def client(n: int) -> int:
        drawn = 0
        for cost in costs[n]:
            verdict = await stores[n % REPLICAS].consume([shared], cost, now=now)
            drawn += cost if verdict.allowed else 0
        return drawn

    drawn = sum(await asyncio.gather(*(client(n) for n in range(CLIENTS))))
    assert drawn == await replicas.spent(shared)
    assert 1_000 - 8 <= drawn <= 1_000  # never more; what is left is smaller than a cost


async def test_script_reloads_after_noscript(replicas: Replicas) -> None:
    """A restarted or failed-over Redis has no scripts: EVALSHA falls back to loading it."""
    store = replicas.stores()[0]
    charge = [Charge(Dimension.USER, "usr_ns", Limit("user-objects", 5, DAY))]
    now = SystemClock().now()
    assert (await store.consume(charge, 1, now=now)).allowed
    await replicas.admin.script_flush()
    assert (await store.consume(charge, 1, now=now)).remaining == 3


async def test_keys_expire_when_their_bucket_is_full_again(replicas: Replicas) -> None:
    store = replicas.stores()[0]
    charge = Charge(Dimension.USER, "usr_ttl", Limit("user-objects", 60, timedelta(minutes=1)))
    await store.consume([charge], 3, now=SystemClock().now())
    ttl_ms = await replicas.admin.pttl(replicas.prefix + charge.key)
    assert 0 < ttl_ms <= 3_000  # 3 units at one per second


async def test_closed_port_is_unavailable_and_guarded_quotas_follow_the_mode() -> None:
    dead = RedisQuotaStore(_client("redis://127.0.0.1:1/0"))
    now = SystemClock().now()
    charge = [Charge(Dimension.USER, "usr_x", Limit("user-objects", 5, DAY))]
    with pytest.raises(QuotaUnavailable):
        await dead.consume(charge, 1, now=now)
    policy = QuotaPolicy()
    read = policy.plan(tenant="ten", client="cli", user="usr", objects=1, now=now)
    command = policy.plan(
        tenant="ten",
        client="cli",
        user="usr",
        vehicles=["veh_1"],
        command=Permission.VEHICLE_UNLOCK,
        now=now,
    )
    guarded = GuardedQuotas(dead)
    with pytest.raises(QuotaStoreDown):
        await guarded.enforce(read, now=now, degrade=Degrade.FAIL_CLOSED)
    assert (await guarded.enforce(read, now=now, degrade=Degrade.LOCAL_LIMIT)).degraded
    with pytest.raises(QuotaStoreDown):
        await guarded.enforce(command, now=now, degrade=Degrade.LOCAL_LIMIT)
    await dead.close()


class Proxy:
    """A TCP relay in front of Redis that can be cut: Redis lost mid-run, as a network
    partition or a crashed server would make it."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 6379
        self._path = parts.path
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}{self._path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
        self._writers += [writer, upstream_writer]
        pipes = (
            asyncio.ensure_future(self._pipe(reader, upstream_writer)),
            asyncio.ensure_future(self._pipe(upstream_reader, writer)),
        )
        self._tasks.update(pipes)
        await asyncio.gather(*pipes)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_redis_lost_mid_run_is_never_an_allowance(replicas: Replicas) -> None:
    proxy = Proxy(REDIS_URL)
    url = await proxy.start()
    proxied = [_client(url) for _ in range(REPLICAS)]
    stores = [RedisQuotaStore(client, prefix=replicas.prefix) for client in proxied]
    limit = Limit("user-objects", 10_000, DAY)
    now = SystemClock().now()
    cut, answered = asyncio.Event(), asyncio.Event()
    after_cut: list[str] = []
    before_cut = 0

    async def client(n: int) -> None:
        nonlocal before_cut
        store = stores[n % REPLICAS]
        charge = [Charge(Dimension.USER, f"usr_{n}", limit)]
        for _ in range(2_000):  # bounded, should the cut never come
            started_after_cut = cut.is_set()
            try:
                outcome = "allowed" if (await store.consume(charge, 1, now=now)).allowed else "no"
            except QuotaUnavailable:
                outcome = "unavailable"
            if started_after_cut:
                after_cut.append(outcome)
                if len(after_cut) >= 3 * CLIENTS:
                    return
            elif outcome == "allowed":
                before_cut += 1
                if before_cut >= CLIENTS:
                    answered.set()
            await asyncio.sleep(0.002)

    async def cutter() -> None:
        # Cut once Redis has answered through the relay, while the clients keep asking.
        await asyncio.wait_for(answered.wait(), timeout=10)
        await proxy.cut()
        cut.set()

    try:
        await asyncio.gather(cutter(), *(client(n) for n in range(CLIENTS)))
        assert before_cut > 0  # Redis answered before the cut
        assert after_cut and set(after_cut) == {"unavailable"}
        # GuardedQuotas over the lost store: commands fail closed, reads degrade if asked.
        guarded = GuardedQuotas(stores[0])
        policy = QuotaPolicy()
        command = policy.plan(
            tenant="t",
            client="c",
            user="u",
            vehicles=["v"],
            command=Permission.VEHICLE_LOCK,
            now=now,
        )
        with pytest.raises(QuotaStoreDown):
            await guarded.enforce(command, now=now, degrade=Degrade.LOCAL_LIMIT)
        read = policy.plan(tenant="t", client="c", user="u", objects=2, now=now)
        assert (await guarded.enforce(read, now=now, degrade=Degrade.LOCAL_LIMIT)).degraded
    finally:
        for client_ in proxied:
            await client_.aclose()


async def test_a_store_closed_mid_run_answers_nothing(replicas: Replicas) -> None:
    store = replicas.stores()[0]
    charge = [Charge(Dimension.USER, "usr_c", Limit("user-objects", 100_000, DAY))]
    now = SystemClock().now()
    answered, closed = asyncio.Event(), asyncio.Event()
    after_close: list[str] = []

    async def client() -> None:
        for _ in range(2_000):  # bounded, should the close never come
            started_after_close = closed.is_set()
            try:
                outcome = str((await store.consume(charge, 1, now=now)).allowed)
            except QuotaUnavailable:
                outcome = "unavailable"
            if started_after_close:
                after_close.append(outcome)
                return
            answered.set()
            await asyncio.sleep(0.001)

    async def closer() -> None:
        await asyncio.wait_for(answered.wait(), timeout=10)
        await store.close()
        closed.set()

    await asyncio.gather(closer(), *(client() for _ in range(10)))
    # redis-py would quietly reconnect; the closed store refuses instead.
    assert after_close == ["unavailable"] * 10


async def test_runtime_uses_redis_when_configured(tmp_path: Path, replicas: Replicas) -> None:
    runtime = QuotaRuntime.build(Settings(data_dir=tmp_path, redis_url=REDIS_URL))
    user = f"usr_{secrets.token_hex(4)}"
    try:
        assert runtime.redis_store is not None
        now: datetime = SystemClock().now()
        plan = runtime.policy.plan(tenant="ten_rt", client="cli_rt", user=user, now=now)
        verdict = await runtime.quotas.enforce(plan, now=now, degrade=Degrade.FAIL_CLOSED)
        assert verdict.allowed and not verdict.degraded
        assert await replicas.admin.exists(f"fw:quota:user|user-objects|600|60000|{user}")
    finally:
        await runtime.close()
        keys = [k async for k in replicas.admin.scan_iter(match="fw:quota:*|ten_rt")]
        keys += [k async for k in replicas.admin.scan_iter(match="fw:quota:*|cli_rt")]
        keys += [k async for k in replicas.admin.scan_iter(match=f"fw:quota:*|{user}")]
        keys += [k async for k in replicas.admin.scan_iter(match="fw:quota:global|*")]
        if keys:
            await replicas.admin.delete(*keys)


async def test_enumeration_distinct_sets_are_shared_by_replicas(replicas: Replicas) -> None:
    """Three replicas count one actor's distinct vehicles in one Redis set: the guard on any
    replica sees the walk the others saw, and the set expires with its window."""
    window = timedelta(hours=1)
    counters = [
        RedisDistinct(c, window, prefix=replicas.prefix + "enum:") for c in replicas.clients
    ]
    config = EnumerationConfig(window=window, slow_distinct=3, stop_distinct=6)
    guards = [EnumerationGuard(config, counter) for counter in counters]
    now = SystemClock().now()
    levels = []
    for n, letter in enumerate("qzmbkr"):
        touched = [vehicle_touched("veh_" + letter * 26)]
        levels.append((await guards[n % 3].observe("usr_walker", touched, now)).level)
    assert levels[:2] == [Level.NORMAL, Level.NORMAL]
    assert levels[2:5] == [Level.SLOWED] * 3
    assert levels[5] is Level.STOPPED  # on replica 3, from vehicles seen on 1 and 2 too
    # Concurrent adds of the same members count once.
    results = await asyncio.gather(
        *(counters[i % 3].add("usr_same", f"m{i % 4}", now, cap=100) for i in range(40))
    )
    assert max(results) == 4
    keys = [k async for k in replicas.admin.scan_iter(match=replicas.prefix + "enum:*")]
    ttls = [await replicas.admin.pttl(k) for k in keys]
    assert ttls and all(0 < ttl <= 2 * 3_600_000 for ttl in ttls)


async def test_enumeration_across_midnight_gets_one_budget_on_redis(replicas: Replicas) -> None:
    """Threat: with day windows, a walker took a day's budget of distinct vehicles just
    before midnight and another just after. The replicas' shared sets slide: the vehicles
    of the day before still count after midnight, on whichever replica is asked."""
    window = timedelta(days=1)
    counters = [
        RedisDistinct(c, window, prefix=replicas.prefix + "enum:") for c in replicas.clients
    ]
    config = EnumerationConfig(window=window, slow_distinct=3, stop_distinct=6)
    guards = [EnumerationGuard(config, counter) for counter in counters]
    midnight = datetime(2026, 11, 27, tzinfo=UTC)
    for n, letter in enumerate("qzmbk"):  # stop_distinct - 1, on every replica in turn
        touched = [vehicle_touched("veh_" + letter * 26)]
        verdict = await guards[n % 3].observe(
            "usr_walker", touched, midnight - timedelta(seconds=1)
        )
        assert verdict.level is not Level.STOPPED
    after = await guards[1].observe(
        "usr_walker", [vehicle_touched("veh_" + "r" * 26)], midnight + timedelta(seconds=1)
    )
    assert after.level is Level.STOPPED and after.signal is Signal.DISTINCT
    # A vehicle seen on both sides of midnight counts once.
    assert await counters[2].add("usr_both", "m", midnight - timedelta(seconds=1), cap=100) == 1
    assert await counters[0].add("usr_both", "m", midnight + timedelta(seconds=1), cap=100) == 1
    assert await counters[1].add("usr_both", "n", midnight + timedelta(hours=12), cap=100) == 2


async def test_enumeration_counts_locally_when_redis_is_down() -> None:
    dead = RedisDistinct(_client("redis://127.0.0.1:1/0"), timedelta(hours=1))
    with pytest.raises(QuotaUnavailable):
        await dead.add("a", "m", SystemClock().now(), cap=10)
    guard = EnumerationGuard(EnumerationConfig(slow_distinct=2, stop_distinct=3), dead)
    now = SystemClock().now()
    levels = [
        (await guard.observe("a", [vehicle_touched("veh_" + c * 26)], now)).level for c in "qzm"
    ]
    # Never an exemption: the walk is still seen, in this process's own sets.
    assert levels == [Level.NORMAL, Level.SLOWED, Level.STOPPED]


async def test_an_enumeration_stop_holds_on_every_replica(replicas: Replicas) -> None:
    """Threat: a walker stopped on one replica (here by the sequence signal, which each
    replica follows alone) went on through the others: the load balancer sent its next
    requests elsewhere, where the stop was unknown. The stop is shared: every replica
    refuses the actor for the rest of the cool-down, without a second escalation."""
    window = timedelta(hours=1)
    counters = [
        RedisDistinct(c, window, prefix=replicas.prefix + "enum:") for c in replicas.clients
    ]
    config = EnumerationConfig(
        window=window, slow_distinct=100, stop_distinct=200, slow_run=3, stop_run=5
    )
    guards = [EnumerationGuard(config, counter, stops=counter) for counter in counters]
    now = SystemClock().now().replace(microsecond=0)  # whole milliseconds, as Redis keeps
    verdicts = [
        await guards[0].observe("usr_walker", [vehicle_touched(f"veh_{n:026d}")], now)
        for n in range(1, 6)
    ]
    assert verdicts[-1].level is Level.STOPPED and verdicts[-1].escalated
    later = now + timedelta(seconds=10)
    for guard, n in ((guards[1], 6), (guards[2], 1), (guards[1], 7)):
        verdict = await guard.observe("usr_walker", [vehicle_touched(f"veh_{n:026d}")], later)
        assert verdict.level is Level.STOPPED and not verdict.escalated
        assert verdict.retry_after == config.cooldown - timedelta(seconds=10)
    # Another actor is not held; the stop expires with its cool-down.
    other = await guards[1].observe("usr_other", [vehicle_touched("veh_" + "q" * 26)], later)
    assert other.level is Level.NORMAL
    [key] = [k async for k in replicas.admin.scan_iter(match=replicas.prefix + "enum:stop|*")]
    assert 0 < await replicas.admin.pttl(key) <= config.cooldown // timedelta(milliseconds=1)
    after = now + config.cooldown + timedelta(seconds=1)
    again = await guards[2].observe("usr_walker", [vehicle_touched(f"veh_{1:026d}")], after)
    assert again.level is Level.NORMAL


async def test_replicas_built_with_redis_share_enumeration_stops(tmp_path: Path) -> None:
    # As the app builds them: two replicas' runtimes from the same settings.
    require_service("Redis", REDIS_URL)
    settings = Settings(data_dir=tmp_path, redis_url=REDIS_URL)
    one, two = QuotaRuntime.build(settings), QuotaRuntime.build(settings)
    actor = f"usr_walker_{secrets.token_hex(6)}"
    now = SystemClock().now()
    try:
        stop_run = one.enumeration.config.stop_run
        for n in range(1, stop_run + 1):
            last = await one.enumeration.observe(actor, [vehicle_touched(f"veh_{n:026d}")], now)
        assert last.level is Level.STOPPED
        elsewhere = await two.enumeration.observe(
            actor, [vehicle_touched(f"veh_{stop_run + 1:026d}")], now
        )
        assert elsewhere.level is Level.STOPPED
    finally:
        await one.close()
        await two.close()
