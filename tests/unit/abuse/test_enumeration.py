"""Enumeration guard, audit notices, flow-only plans and the catalog's degrade field."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conftest import T0
from fleetward.abuse.enumeration import (
    EnumerationConfig,
    EnumerationGuard,
    InMemoryDistinct,
    Level,
    Signal,
    Touched,
    vehicle_touched,
    vin_touched,
)
from fleetward.abuse.notices import Notices
from fleetward.abuse.policy import Degrade, Flow, QuotaPolicy
from fleetward.abuse.quotas import Dimension
from fleetward.abuse.runtime import enumeration_config
from fleetward.abuse.store import QuotaUnavailable
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, Impact
from fleetward.core.surfaces import Surface
from fleetward.core.vin import make_vin
from fleetward.settings import Settings

CONFIG = EnumerationConfig(slow_distinct=3, stop_distinct=5, slow_run=3, stop_run=5)
# Distinct thresholds out of reach: only the sequence signal can escalate.
RUNS_ONLY = EnumerationConfig(slow_distinct=100, stop_distinct=200, slow_run=3, stop_run=5)


def _vin(serial: int) -> str:
    return make_vin("1FW", "AB123", f"KP{serial:06d}").value


# (first, second, is a step of one, why)
STEPS = [
    (
        vehicle_touched("veh_" + "0" * 25 + "1"),
        vehicle_touched("veh_" + "0" * 25 + "2"),
        True,
        "ascending numeric suffix",
    ),
    (
        vehicle_touched("veh_" + "a" * 26),
        vehicle_touched("veh_" + "a" * 25 + "b"),
        True,
        "ascending base32 suffix",
    ),
    (
        vin_touched(_vin(41)),
        vin_touched(_vin(42)),
        True,
        "consecutive VIN serials: the check digit differs, the family does not",
    ),
    (
        vin_touched(_vin(41)),
        vin_touched(make_vin("1FW", "ZZ123", "KP000042").value),
        False,
        "another model's VIN is another family",
    ),
    (
        vehicle_touched("veh_" + "0" * 26),
        vin_touched(_vin(1)),
        False,
        "an id and a VIN never make one run",
    ),
]


@pytest.mark.parametrize(("first", "second", "step", "why"), STEPS, ids=[s[-1] for s in STEPS])
def test_ordinals(first: Touched, second: Touched, step: bool, why: str) -> None:
    same = first.family == second.family
    assert (same and second.ordinal == (first.ordinal or 0) + 1) is step, why


def test_hostile_ids_and_vins_are_counted_never_sequenced() -> None:
    # Oversized, non-ASCII or malformed input still counts as a distinct object.
    for touched in (
        vehicle_touched("veh_" + "Ā" * 10),
        vehicle_touched("no-underscore"),
        vin_touched("1FW" + "I" * 14),  # I is not a VIN letter
        vin_touched("x" * 500),
    ):
        assert touched.family is None and touched.ordinal is None
        assert len(touched.key) <= 40 or touched.key.startswith("vehicle:")


async def test_consecutive_ids_slow_then_stop_at_any_pace() -> None:
    guard = EnumerationGuard(CONFIG)
    now, levels = T0, []
    for n in range(1, 6):
        verdict = await guard.observe("mallory", [vehicle_touched(f"veh_{n:026d}")], now)
        levels.append((verdict.level, verdict.escalated))
        now += timedelta(hours=3)  # one request every three hours
    assert levels == [
        (Level.NORMAL, False),
        (Level.NORMAL, False),
        (Level.SLOWED, True),  # third in a row: suspected, audited once
        (Level.SLOWED, False),
        (Level.STOPPED, True),
    ]
    stopped_at = now - timedelta(hours=3)
    held = guard.stopped("mallory", stopped_at + timedelta(minutes=10))
    assert held is not None and held.retry_after == CONFIG.cooldown - timedelta(minutes=10)
    assert guard.stopped("mallory", stopped_at + CONFIG.cooldown) is None


async def test_consecutive_ids_interleaved_with_a_decoy_still_make_a_run() -> None:
    # One run per actor was broken by any other id of the family: a walker that asked for
    # its own car (or any fixed id) between two guesses never got past a run of 1, and could
    # walk consecutive ids up to the distinct threshold instead of stop_run of them.
    guard = EnumerationGuard(RUNS_ONLY)
    decoy = vehicle_touched("veh_" + "q" * 26)
    levels = []
    for n in range(1, 6):
        await guard.observe("mallory", [decoy], T0)
        verdict = await guard.observe("mallory", [vehicle_touched(f"veh_{n:026d}")], T0)
        levels.append((verdict.level, verdict.signal))
    assert levels[2] == (Level.SLOWED, Signal.SEQUENCE)
    assert levels[-1] == (Level.STOPPED, Signal.SEQUENCE)


@pytest.mark.parametrize("kind", ["ids", "vins"])
async def test_a_walk_downwards_makes_a_run_too(kind: str) -> None:
    # A run only grew by steps above its last object: the same walk taken from the top down
    # (veh_..0049, ..0048, ..0047) never made a run, so it went as far as the distinct
    # threshold instead of stop_run objects.
    guard = EnumerationGuard(RUNS_ONLY)
    levels = []
    for n in range(49, 44, -1):  # base 36: 50 to 49 is no step of one
        touched = vehicle_touched(f"veh_{n:026d}") if kind == "ids" else vin_touched(_vin(n))
        verdict = await guard.observe("mallory", [touched], T0)
        levels.append((verdict.level, verdict.signal))
    assert levels[2] == (Level.SLOWED, Signal.SEQUENCE)
    assert levels[-1] == (Level.STOPPED, Signal.SEQUENCE)


async def test_a_run_keeps_its_direction() -> None:
    # Zig-zagging around a start is two walks (one up, one down), each its own run; a step
    # back down does not extend the run going up.
    guard = EnumerationGuard(RUNS_ONLY)
    verdict = None
    for n in (100, 101, 99, 102, 98, 103, 97):
        verdict = await guard.observe("mallory", [vehicle_touched(f"veh_{n:026d}")], T0)
    assert verdict is not None and verdict.run == 4  # 100..103 up; 99, 98, 97 down: 3


async def test_two_walks_taken_in_turns_each_make_a_run() -> None:
    guard = EnumerationGuard(RUNS_ONLY)
    verdict = None
    for n in range(1, 6):
        other = vehicle_touched(f"veh_{'z' * 20}{n:06d}")  # another walk, same family
        verdict = await guard.observe("mallory", [vehicle_touched(f"veh_{n:026d}"), other], T0)
    assert verdict is not None and verdict.level is Level.STOPPED
    assert verdict.signal is Signal.SEQUENCE


async def test_a_random_walk_is_seen_by_the_distinct_count_only() -> None:
    guard = EnumerationGuard(CONFIG)
    ids = [f"veh_{c * 26}" for c in "qzmbk"]  # no two a small step apart
    verdicts = [await guard.observe("a", [vehicle_touched(i)], T0) for i in ids]
    assert [v.level for v in verdicts] == [Level.NORMAL] * 2 + [Level.SLOWED] * 2 + [Level.STOPPED]
    assert verdicts[-1].signal is Signal.DISTINCT
    assert verdicts[2].delay < verdicts[3].delay <= CONFIG.max_delay


async def test_repeating_known_objects_never_escalates() -> None:
    guard = EnumerationGuard(CONFIG)
    for _ in range(50):
        verdict = await guard.observe("alice", [vehicle_touched("veh_" + "q" * 26)], T0)
        assert verdict.level is Level.NORMAL


async def test_after_the_cool_down_known_objects_pass_and_a_new_one_stops_again() -> None:
    guard = EnumerationGuard(CONFIG)
    ids = [f"veh_{c * 26}" for c in "qzmbkr"]
    for vehicle in ids[:5]:
        await guard.observe("a", [vehicle_touched(vehicle)], T0)
    later = T0 + CONFIG.cooldown
    assert guard.stopped("a", later) is None
    assert (await guard.observe("a", [vehicle_touched(ids[0])], later)).level is Level.SLOWED
    again = await guard.observe("a", [vehicle_touched(ids[5])], later)
    assert again.level is Level.STOPPED and again.escalated


async def test_the_count_slides_out_a_window_after_the_objects() -> None:
    guard = EnumerationGuard(CONFIG)
    ids = [f"veh_{c * 26}" for c in "qzmb"]
    for vehicle in ids:
        await guard.observe("a", [vehicle_touched(vehicle)], T0)
    two_windows_on = T0 + 2 * CONFIG.window
    verdict = await guard.observe("a", [vehicle_touched("veh_" + "k" * 26)], two_windows_on)
    assert verdict.level is Level.NORMAL and verdict.distinct == 1


MIDNIGHT = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.mark.parametrize("after", [timedelta(seconds=1), timedelta(minutes=30), timedelta(hours=2)])
async def test_a_walk_across_midnight_gets_one_budget_not_two(after: timedelta) -> None:
    # Threat: counted in fixed UTC-day windows, a walker took a whole day's budget of
    # distinct vehicles just before midnight and another just after (2x the budget in
    # minutes). Over a sliding day, what it took before midnight still counts after.
    guard = EnumerationGuard(CONFIG)
    before = [f"veh_{c * 26}" for c in "qzmb"]  # stop_distinct - 1: served, slowed
    for vehicle in before:
        verdict = await guard.observe("a", [vehicle_touched(vehicle)], MIDNIGHT - after)
        assert verdict.level is not Level.STOPPED
    served_after = 0
    for c in "krxyw":
        verdict = await guard.observe("a", [vehicle_touched("veh_" + c * 26)], MIDNIGHT + after)
        if verdict.level is Level.STOPPED:
            break
        served_after += 1
    assert verdict.level is Level.STOPPED and verdict.signal is Signal.DISTINCT
    # The first new vehicle after midnight already reached the one budget.
    assert len(before) + served_after < CONFIG.stop_distinct


async def test_the_sliding_count_weighs_the_previous_window_by_what_it_still_covers() -> None:
    counter = InMemoryDistinct(timedelta(days=1))
    for n in range(100):
        await counter.add("a", f"m{n}", MIDNIGHT - timedelta(minutes=1), cap=1_000)
    # At the boundary the previous day counts whole; six hours on, three quarters of it
    # (rounded up);
    # a member seen on both days counts once; a day on, nothing from before midnight.
    assert await counter.add("a", "m0", MIDNIGHT, cap=1_000) == 100
    assert await counter.add("a", "new", MIDNIGHT + timedelta(hours=6), cap=1_000) == 2 + 75
    assert await counter.add("a", "new2", MIDNIGHT + timedelta(days=1), cap=1_000) == 1 + 2


async def test_memory_is_bounded() -> None:
    guard = EnumerationGuard(EnumerationConfig(max_actors=10))
    for n in range(100):
        await guard.observe(f"actor-{n}", [vehicle_touched(f"veh_{n:026d}")], T0)
    assert len(guard._actors) == 10
    distinct = InMemoryDistinct(timedelta(hours=1), max_actors=3)
    for n in range(20):
        assert await distinct.add("a", f"m{n}", T0, cap=5) == min(n + 1, 5)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"slow_distinct": 6, "stop_distinct": 5}, "slow above stop"),
        ({"slow_run": 1}, "a run of one is no run"),
        ({"max_delay": timedelta(seconds=60)}, "an unbounded delay holds connections"),
        ({"cooldown": timedelta(0)}, "a stop without a cool-down is no stop"),
    ],
)
def test_config_rejects(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message is the config's own
        EnumerationConfig(**kwargs)  # type: ignore[arg-type]


def test_settings_configure_the_guard(tmp_path: object) -> None:
    settings = Settings(quota_enumeration_slow_distinct=7, quota_enumeration_stop_distinct=9)
    config = enumeration_config(settings)
    assert (config.slow_distinct, config.stop_distinct) == (7, 9)
    with pytest.raises(ValueError, match="slow_distinct"):
        Settings(quota_enumeration_slow_distinct=10, quota_enumeration_stop_distinct=9)


def test_notices_fold_repeats_within_the_period() -> None:
    notices = Notices(max_keys=2)
    every = timedelta(minutes=1)
    assert notices.due("k", T0, every) == 0
    assert notices.due("k", T0 + timedelta(seconds=1), every) is None
    assert notices.due("k", T0 + timedelta(seconds=2), every) is None
    assert notices.due("k", T0 + every, every) == 2  # the two folded ones are reported
    assert not notices.seen("x", T0)
    notices.mark("x", T0, every)
    assert notices.seen("x", T0) and not notices.seen("x", T0 + every)


def test_a_flow_plan_charges_the_flow_alone() -> None:
    plan = QuotaPolicy().plan_flow(
        Flow.BULK_LOCATION, tenant="t", client="c", user="u", now=T0, objects=3
    )
    (charge,) = plan.charges
    assert (charge.dimension, charge.subject, plan.cost) == (Dimension.FLOW, "u", 3)
    assert plan.may_degrade is False
    once = QuotaPolicy().plan_flow(Flow.OWNERSHIP_TRANSFER, tenant="t", client="c", now=T0)
    assert once.charges[0].subject == "c" and once.charges[0].fixed_cost == 1


def _entry(**kwargs: object) -> CatalogEntry:
    return CatalogEntry(
        surface=Surface.MOBILE,
        owner="team",
        purpose="p",
        callers=frozenset({CallerType.USER}),
        permission=Permission.VEHICLE_READ_STATUS,
        data_class=DataClass.VEHICLE_STATE,
        **kwargs,  # type: ignore[arg-type]
    )


def test_catalog_degrade_defaults_closed_and_never_local_for_safety() -> None:
    assert _entry().degrade is Degrade.FAIL_CLOSED
    assert _entry(degrade=Degrade.LOCAL_LIMIT).as_extensions()["x-fleetward-degrade"] == (
        "local_limit"
    )
    with pytest.raises(ValueError, match="safety"):
        _entry(degrade=Degrade.LOCAL_LIMIT, impact=frozenset({Impact.SAFETY}))


def test_settings_set_flow_capacities() -> None:
    policy = QuotaPolicy.from_settings(Settings(quota_flows={"ownership-transfer": 50}))
    assert policy.flows[Flow.OWNERSHIP_TRANSFER].limit.capacity == 50
    assert policy.flows[Flow.OWNERSHIP_TRANSFER].per_object is False
    assert policy.flows[Flow.REMOTE_UNLOCK].limit.capacity == 30  # the others keep theirs
    with pytest.raises(ValueError, match="not a flow"):
        QuotaPolicy.from_settings(Settings(quota_flows={"teleport": 5}))


async def test_vins_typed_in_lower_case_or_with_spaces_are_the_vins_the_route_compares() -> None:
    # The transfer accept compares VINs whatever their case and surrounding whitespace
    # (vehicles/transfers.normalise_vin); the guard read only upper-case VINs as serials, so
    # a walker typing consecutive VINs in lower case (or with a space) was never sequenced.
    assert vin_touched(f" {_vin(7).lower()} ").key == vin_touched(_vin(7)).key
    guard = EnumerationGuard(RUNS_ONLY)
    levels = []
    for n in range(1, 6):
        typed = _vin(n).lower() if n % 2 else f" {_vin(n)}\t"
        verdict = await guard.observe("mallory", [vin_touched(typed)], T0)
        levels.append((verdict.level, verdict.signal))
    assert levels[2] == (Level.SLOWED, Signal.SEQUENCE)
    assert levels[-1] == (Level.STOPPED, Signal.SEQUENCE)


class _GatedCounter:
    """A shared distinct counter (Redis-like: each answer awaits the store) whose answers
    the test releases one member at a time, in the order it chooses."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.gates = {member: asyncio.Event() for member in counts}

    async def add(self, actor: str, member: str, now: datetime, *, cap: int) -> int:
        await self.gates[member].wait()
        return self.counts[member]


@pytest.mark.parametrize("first", ["in order", "out of order"])
async def test_requests_counted_while_another_stopped_the_actor_are_refused(first: str) -> None:
    # With a shared counter each request awaits its count; one that was counting while a
    # concurrent one stopped the actor was judged on its own count afterwards: a smaller
    # count (answers arrive in any order) was served as merely slowed, a larger one stopped
    # the actor again and recorded a second escalation.
    a, b = "veh_" + "q" * 26, "veh_" + "z" * 26  # never a run: only the distinct count
    counts = {f"vehicle:{a}": 5, f"vehicle:{b}": 6}
    if first == "out of order":
        counts = {f"vehicle:{a}": 6, f"vehicle:{b}": 5}
    counter = _GatedCounter(counts)
    guard = EnumerationGuard(CONFIG, counter)
    task_a = asyncio.create_task(guard.observe("mallory", [vehicle_touched(a)], T0))
    task_b = asyncio.create_task(guard.observe("mallory", [vehicle_touched(b)], T0))
    await asyncio.sleep(0)  # both are counting
    counter.gates[f"vehicle:{a}"].set()
    stopped = await task_a
    counter.gates[f"vehicle:{b}"].set()
    late = await task_b
    assert (stopped.level, stopped.escalated) == (Level.STOPPED, True)
    assert (late.level, late.escalated) == (Level.STOPPED, False)
    assert late.retry_after == CONFIG.cooldown


class _FailingCounter:
    """A shared counter that is down until told otherwise; counts the calls it gets."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def add(self, actor: str, member: str, now: datetime, *, cap: int) -> int:
        self.calls += 1
        if self.down:
            raise QuotaUnavailable("distinct counter unavailable: TimeoutError")
        return 1


async def test_a_shared_counter_that_failed_is_not_asked_again_for_a_second() -> None:
    # Redis hanging: every request waited for the counter's timeout (250 ms) before counting
    # locally. After a failure the guard counts locally at once, and asks again a second on.
    counter = _FailingCounter()
    guard = EnumerationGuard(CONFIG, counter, retry_shared_after=timedelta(seconds=1))
    ids = ["veh_" + c * 26 for c in "qwzxy"]
    await guard.observe("mallory", [vehicle_touched(ids[0])], T0)
    assert counter.calls == 1
    verdict = await guard.observe("mallory", [vehicle_touched(ids[1])], T0 + timedelta(seconds=0.5))
    assert counter.calls == 1  # not asked: counted in this process
    assert verdict.distinct == 2  # and still counted
    counter.down = False
    await guard.observe("mallory", [vehicle_touched(ids[2])], T0 + timedelta(seconds=1))
    assert counter.calls == 2  # asked again, answered: the shared count is used from here
    await guard.observe("mallory", [vehicle_touched(ids[3])], T0 + timedelta(seconds=1.1))
    assert counter.calls == 3
