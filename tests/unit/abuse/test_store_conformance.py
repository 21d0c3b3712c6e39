"""Every QuotaStore behaves the same: the in-process store and the Redis Lua script give the
same verdicts, consume all or nothing, refill exactly and never admit more than capacity.

The Redis case needs the real server (FLEETWARD_TEST_REDIS_URL, default 127.0.0.1:6379/15):
it fails when FLEETWARD_REQUIRE_SERVICES is set and the server is unreachable, and is
skipped otherwise."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from redis.asyncio import Redis

from conftest import T0, require_service
from fleetward.abuse.memory import InMemoryQuotaStore
from fleetward.abuse.quotas import MAX_COST, Charge, Dimension, Limit, QuotaVerdict
from fleetward.abuse.redis_store import RedisQuotaStore
from fleetward.abuse.store import QuotaStore

REDIS_URL = os.environ.get("FLEETWARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
MS = timedelta(milliseconds=1)
# 60 s / 7 is not a whole number of milliseconds: the case where float arithmetic slips.
SEVEN = Limit("seven", 7, timedelta(seconds=60))
TEN = Limit("ten", 10, timedelta(seconds=60))
THREE = Limit("three", 3, timedelta(seconds=60))
# The largest bucket the bounds allow: its credit is near 2**50, still exact in Lua.
HUGE = Limit("huge", 10_000_000, timedelta(days=1))


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QuotaStore]:
    if request.param == "memory":
        yield InMemoryQuotaStore()
        return
    require_service("Redis", REDIS_URL)
    redis = Redis.from_url(REDIS_URL)
    prefix = f"fw:test:quota:{secrets.token_hex(4)}:"
    try:
        yield RedisQuotaStore(redis, prefix=prefix)
    finally:
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def user(limit: Limit, subject: str = "usr_a", fixed_cost: int | None = None) -> Charge:
    return Charge(Dimension.USER, subject, limit, fixed_cost)


async def test_exactly_capacity_then_refused(store: QuotaStore) -> None:
    charge = [user(SEVEN)]
    verdicts = [await store.consume(charge, 1, now=T0) for _ in range(8)]
    assert [v.allowed for v in verdicts] == [True] * 7 + [False]
    assert [v.remaining for v in verdicts[:7]] == [6, 5, 4, 3, 2, 1, 0]
    refused = verdicts[7]
    assert refused.limit_name == "seven" and refused.retryable
    # One unit comes back every 60000/7 ms, rounded up to the next whole millisecond.
    assert refused.retry_after == 8572 * MS
    assert refused.reset_after == timedelta(seconds=60)


async def test_retry_after_is_exact(store: QuotaStore) -> None:
    charge = [user(SEVEN)]
    for _ in range(7):
        await store.consume(charge, 1, now=T0)
    wait = (await store.consume(charge, 1, now=T0)).retry_after
    assert not (await store.consume(charge, 1, now=T0 + wait - MS)).allowed
    assert (await store.consume(charge, 1, now=T0 + wait)).allowed
    assert not (await store.consume(charge, 1, now=T0 + wait)).allowed


async def test_refill_is_continuous_and_stops_at_capacity(store: QuotaStore) -> None:
    charge = [user(TEN)]
    assert (await store.consume(charge, 10, now=T0)).remaining == 0
    later = T0 + timedelta(seconds=30)  # half a window: half the capacity
    assert (await store.consume(charge, 5, now=later)).remaining == 0
    assert not (await store.consume(charge, 1, now=later)).allowed
    # A long silence refills to capacity, never beyond it.
    much_later = later + timedelta(days=3)
    assert (await store.consume(charge, 10, now=much_later)).allowed
    assert not (await store.consume(charge, 1, now=much_later)).allowed


async def test_all_or_nothing_across_charges(store: QuotaStore) -> None:
    wide, narrow = Charge(Dimension.TENANT, "ten_a", TEN), user(THREE)
    assert (await store.consume([wide, narrow], 3, now=T0)).allowed
    refused = await store.consume([wide, narrow], 2, now=T0)
    assert not refused.allowed and refused.limit_name == "three"
    # The refused request drew nothing from the bucket that had room.
    left = await store.consume([wide], 7, now=T0)
    assert left.allowed and left.remaining == 0


async def test_first_exceeded_is_reported_and_retry_covers_every_exceeded(
    store: QuotaStore,
) -> None:
    a, b = user(SEVEN, "usr_a"), Charge(Dimension.CLIENT, "cli_a", THREE)
    assert (await store.consume([a, b], 3, now=T0)).allowed
    refused = await store.consume([a, b], 4, now=T0)
    # "seven" has exactly 4 left: only "three" is exceeded, reported even though listed second.
    assert not refused.allowed and refused.limit_name == "three"
    assert (await store.consume([a], 4, now=T0)).allowed  # drains "seven"
    both = await store.consume([a, b], 1, now=T0)
    assert both.limit_name == "seven"  # first in the request's order
    # The whole request passes only when both have a unit: the longer wait (60000/3 ms).
    assert both.retry_after == 20_000 * MS


async def test_allowed_verdict_reports_the_tightest_limit(store: QuotaStore) -> None:
    verdict = await store.consume([Charge(Dimension.TENANT, "ten_a", TEN), user(THREE)], 2, now=T0)
    assert verdict.allowed and (verdict.limit_name, verdict.remaining) == ("three", 1)
    assert verdict.retry_after == timedelta(0)
    assert verdict.reset_after == 40_000 * MS  # two units at 20 s each


async def test_more_than_capacity_is_never_retryable_and_consumes_nothing(
    store: QuotaStore,
) -> None:
    refused = await store.consume([user(TEN)], 11, now=T0)
    assert not refused.allowed and not refused.retryable
    assert refused.retry_after == timedelta(seconds=60)
    assert (await store.consume([user(TEN)], 10, now=T0)).allowed
    capped = await store.consume([user(HUGE, "usr_h")], MAX_COST, now=T0)
    assert not capped.allowed and not capped.retryable


async def test_fixed_cost_charges_pay_their_own_amount(store: QuotaStore) -> None:
    per_object = user(TEN)
    per_vehicle = Charge(Dimension.VEHICLE, "veh_1", THREE, fixed_cost=1)
    verdict = await store.consume([per_object, per_vehicle], 5, now=T0)
    assert verdict.allowed and (verdict.limit_name, verdict.remaining) == ("three", 2)
    assert (await store.consume([per_object], 5, now=T0)).remaining == 0


async def test_a_clock_behind_the_bucket_refills_nothing(store: QuotaStore) -> None:
    charge = [user(TEN)]
    later = T0 + timedelta(seconds=30)
    await store.consume(charge, 5, now=later)
    # A replica whose clock lags 30 s draws from the same credit: no refill, no loss from
    # "negative" elapsed time.
    lagging = await store.consume(charge, 1, now=T0)
    assert lagging.allowed and lagging.remaining == 4
    # The bucket keeps the later time: at `later` nothing has refilled since.
    assert (await store.consume(charge, 4, now=later)).remaining == 0
    assert not (await store.consume(charge, 1, now=later)).allowed
    assert not (await store.consume(charge, 1, now=T0)).allowed
    assert (await store.consume(charge, 1, now=later + timedelta(seconds=6))).allowed


async def test_huge_limits_stay_exact(store: QuotaStore) -> None:
    charge = [user(HUGE)]
    assert (await store.consume(charge, 9_999_999, now=T0)).remaining == 1
    assert (await store.consume(charge, 1, now=T0)).remaining == 0
    refused = await store.consume(charge, 1, now=T0)
    assert not refused.allowed and refused.retry_after == 9 * MS  # 8.64 ms, rounded up
    assert (await store.consume(charge, 1, now=T0 + 9 * MS)).allowed


async def test_subjects_and_limits_are_separate_buckets(store: QuotaStore) -> None:
    assert (await store.consume([user(THREE, "usr_a")], 3, now=T0)).allowed
    assert (await store.consume([user(THREE, "usr_b")], 3, now=T0)).allowed
    # Same name, new parameters (a raised quota): a fresh bucket.
    assert (await store.consume([user(THREE.with_capacity(4), "usr_a")], 4, now=T0)).allowed
    assert not (await store.consume([user(THREE, "usr_a")], 1, now=T0)).allowed


@pytest.mark.parametrize(
    ("charges", "cost"),
    [
        ([user(TEN)], 0),  # every request costs at least 1
        ([user(TEN)], MAX_COST + 1),  # beyond the cap: the caller skipped request_cost
        ([], 1),  # a request with no charge would be unlimited
        ([user(TEN), user(TEN)], 1),  # one bucket twice: checked once, drawn twice
    ],
)
async def test_malformed_requests_are_refused_before_any_store_work(
    store: QuotaStore, charges: list[Charge], cost: int
) -> None:
    with pytest.raises(ValueError, match=r"cost|charges"):
        await store.consume(charges, cost, now=T0)


async def test_naive_times_are_refused(store: QuotaStore) -> None:
    with pytest.raises(ValueError, match="aware"):
        await store.consume([user(TEN)], 1, now=datetime(2026, 1, 1))


async def test_same_verdicts_as_the_reference_arithmetic(store: QuotaStore) -> None:
    """A scripted mix of costs and times: every verdict equals the in-process store's."""
    reference = InMemoryQuotaStore()
    charges = [user(SEVEN), Charge(Dimension.TENANT, "ten_a", TEN), user(HUGE, "usr_h")]
    steps = [(1, 0), (3, 0), (3, 1), (1, 4_000), (2, 8_571), (5, 1), (1, 60_000), (7, 9)]
    now = T0
    for cost, advance_ms in steps:
        now += advance_ms * MS
        expected: QuotaVerdict = await reference.consume(charges, cost, now=now)
        assert await store.consume(charges, cost, now=now) == expected
