"""Quota domain, cost rule, policy, raised quotas, degrade modes and the refusals' headers.

Store arithmetic shared by both stores is in test_store_conformance.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import T0
from fleetward.abuse.errors import (
    QuotaExceeded,
    QuotaStoreDown,
    TooManyTargets,
    rate_limit_headers,
)
from fleetward.abuse.guard import GuardedQuotas
from fleetward.abuse.memory import InMemoryQuotaStore
from fleetward.abuse.policy import Degrade, Flow, QuotaPlan, QuotaPolicy
from fleetward.abuse.quotas import (
    MAX_CAPACITY,
    MAX_COST,
    Charge,
    Dimension,
    Limit,
    QuotaVerdict,
    request_cost,
)
from fleetward.abuse.raised import InMemoryRaisedQuotas, RaisedQuota
from fleetward.abuse.runtime import QuotaRuntime
from fleetward.abuse.store import QuotaUnavailable
from fleetward.authz.permissions import Permission
from fleetward.settings import Settings

MINUTE = timedelta(minutes=1)


# --- limits, charges and the cost rule ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "capacity", "window"),
    [
        ("", 10, MINUTE),  # a nameless limit cannot be reported or audited
        ('bad"name', 10, MINUTE),  # would break out of the RateLimit structured string
        ("a|b", 10, MINUTE),  # "|" separates the parts of a store key
        ("Upper", 10, MINUTE),  # one spelling per name
        ("x" * 65, 10, MINUTE),  # bounded header size
        ("ok", 0, MINUTE),  # a zero-capacity bucket is a deny-all in disguise
        ("ok", MAX_CAPACITY + 1, MINUTE),  # beyond the bound that keeps Lua arithmetic exact
        ("ok", True, MINUTE),  # a bool is not a capacity
        ("ok", 10, timedelta(milliseconds=1500)),  # headers carry whole seconds
        ("ok", 10, timedelta(0)),  # no refill period
        ("ok", 10, timedelta(days=2)),  # beyond the bound that keeps Lua arithmetic exact
    ],
)
def test_invalid_limits_are_refused(name: str, capacity: int, window: timedelta) -> None:
    with pytest.raises(ValueError, match="limit"):
        Limit(name, capacity, window)


def test_charge_keys_are_stable_and_distinct() -> None:
    limit = Limit("user-objects", 600, MINUTE)
    charge = Charge(Dimension.USER, "usr_1", limit)
    assert charge.key == "user|user-objects|600|60000|usr_1"
    others = {
        Charge(Dimension.CLIENT, "usr_1", limit).key,
        Charge(Dimension.USER, "usr_2", limit).key,
        Charge(Dimension.USER, "usr_1", limit.with_capacity(601)).key,
        Charge(Dimension.USER, "usr_1", Limit("user-objects", 600, 2 * MINUTE)).key,
        Charge(Dimension.USER, "usr_1|x", limit).key,  # "|" in a subject stays unambiguous
    }
    assert charge.key not in others and len(others) == 5


@pytest.mark.parametrize(
    ("subject", "fixed_cost"),
    [
        ("", None),  # every bucket belongs to someone
        ("x" * 257, None),  # bounded key size
        ("usr\n1", None),  # control characters in keys and logs
        ("usr_1", 0),  # a charge that costs nothing is no limit
        ("usr_1", MAX_COST + 1),  # beyond the cap
    ],
)
def test_invalid_charges_are_refused(subject: str, fixed_cost: int | None) -> None:
    with pytest.raises(ValueError, match=r"subject|cost"):
        Charge(Dimension.USER, subject, Limit("x", 1, MINUTE), fixed_cost)


@pytest.mark.parametrize(
    ("targets", "cost"),
    [(0, 1), (1, 1), (10_000, 10_000), (MAX_COST, MAX_COST), (10**12, MAX_COST)],
)
def test_cost_is_the_number_of_targets_at_least_one_and_capped(targets: int, cost: int) -> None:
    assert request_cost(targets) == cost


def test_a_capped_cost_exceeds_every_limit() -> None:
    assert request_cost(10**12) > MAX_CAPACITY


@pytest.mark.parametrize("targets", [-1, True, 2.0])
def test_cost_rejects_nonsense(targets: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        request_cost(targets)  # type: ignore[arg-type]


# --- the policy: a request becomes charges ------------------------------------------------


def by_dimension(plan: QuotaPlan) -> dict[Dimension, list[Charge]]:
    result: dict[Dimension, list[Charge]] = {}
    for charge in plan.charges:
        result.setdefault(charge.dimension, []).append(charge)
    return result


def test_a_command_to_vehicles_charges_every_dimension() -> None:
    plan = QuotaPolicy().plan(
        tenant="ten_t",
        client="cli_c",
        user="usr_u",
        vehicles=["veh_1", "veh_2", "veh_1"],
        command=Permission.VEHICLE_UNLOCK,
        now=T0,
    )
    assert plan.cost == 3  # three targets, a repeat included
    dims = by_dimension(plan)
    assert [(c.subject, c.cost_for(plan.cost)) for c in dims[Dimension.VEHICLE]] == [
        ("veh_1", 2),
        ("veh_2", 1),
    ]
    assert dims[Dimension.COMMAND][0].limit.name == "command-vehicle:unlock"
    assert dims[Dimension.COMMAND][0].subject == "usr_u"
    for dimension, subject in [
        (Dimension.USER, "usr_u"),
        (Dimension.CLIENT, "cli_c"),
        (Dimension.TENANT, "ten_t"),
        (Dimension.GLOBAL, "platform"),
    ]:
        (charge,) = dims[dimension]
        assert charge.subject == subject and charge.cost_for(plan.cost) == 3
    assert not plan.may_degrade and plan.raised == ()


def test_a_read_pays_for_its_objects_and_may_degrade() -> None:
    plan = QuotaPolicy().plan(tenant="ten_t", client="cli_c", user="usr_u", objects=25, now=T0)
    assert plan.cost == 25 and plan.may_degrade
    assert set(by_dimension(plan)) == {
        Dimension.USER,
        Dimension.CLIENT,
        Dimension.TENANT,
        Dimension.GLOBAL,
    }


def test_a_client_acting_as_itself_is_the_actor() -> None:
    plan = QuotaPolicy().plan(
        tenant="ten_p", client="cli_partner", command=Permission.VEHICLE_LOCK, now=T0
    )
    dims = by_dimension(plan)
    assert Dimension.USER not in dims
    assert dims[Dimension.COMMAND][0].subject == "cli_partner"


@pytest.mark.parametrize(
    ("flow", "user", "flow_subject", "expected_subject", "expected_cost"),
    [
        # Unlock attempts count per vehicle: three vehicles are three attempts.
        (Flow.REMOTE_UNLOCK, "usr_u", None, "usr_u", 3),
        # One ownership transfer is one transfer, however many objects it touches.
        (Flow.OWNERSHIP_TRANSFER, "usr_u", None, "usr_u", 1),
        # Before sign-in a flow counts for what the caller names (a hashed username).
        (Flow.LOGIN, None, "acct_9f2c", "acct_9f2c", 1),
        # A signed-in user is never counted under a caller-chosen subject.
        (Flow.TOTP, "usr_u", "acct_other", "usr_u", 1),
    ],
)
def test_sensitive_flows_have_their_own_limit(
    flow: Flow,
    user: str | None,
    flow_subject: str | None,
    expected_subject: str,
    expected_cost: int,
) -> None:
    plan = QuotaPolicy().plan(
        tenant="ten_t",
        client="cli_c",
        user=user,
        vehicles=["veh_1", "veh_2", "veh_3"],
        flow=flow,
        flow_subject=flow_subject,
        now=T0,
    )
    (charge,) = by_dimension(plan)[Dimension.FLOW]
    assert charge.limit.name == f"flow-{flow}"
    assert (charge.subject, charge.cost_for(plan.cost)) == (expected_subject, expected_cost)
    assert not plan.may_degrade


def test_too_many_targets_is_refused_before_any_charge() -> None:
    policy = QuotaPolicy(max_targets=100)
    with pytest.raises(TooManyTargets) as refused:
        policy.plan(tenant="t", client="c", vehicles=["v"] * 60, objects=41, now=T0)
    assert refused.value.status == 422 and refused.value.extra["max-targets"] == 100
    with pytest.raises(ValueError, match="objects"):
        policy.plan(tenant="t", client="c", objects=-1, now=T0)


def test_policy_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, quota_user_per_minute=50, quota_vehicle_commands_per_minute=3
    )
    policy = QuotaPolicy.from_settings(settings)
    assert (policy.user.capacity, policy.vehicle_commands.capacity) == (50, 3)
    assert policy.user.name == "user-objects" and policy.user.window == MINUTE


@pytest.mark.parametrize(
    "changes",
    [
        {"quota_user_per_minute": 200_000},  # a user allowed more than their tenant
        {"quota_tenant_per_minute": 2_000_000},  # a tenant allowed more than the platform
        {"quota_client_per_minute": 2_000_000},  # a client allowed more than the platform
        {"quota_vehicle_commands_per_minute": 0},  # a vehicle that can never be commanded
        {"quota_max_targets": 10_001},  # beyond what one request may name
    ],
)
def test_settings_refuse_inconsistent_quotas(tmp_path: Path, changes: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="quota"):
        Settings(data_dir=tmp_path, **changes)


# --- raised quotas -----------------------------------------------------------------------


def raise_for(
    limit: str, capacity: int, expires: datetime, tenant: str = "ten_rent"
) -> RaisedQuota:
    return RaisedQuota(tenant, limit, capacity, "ops@rent.example", "evening lock run", expires)


async def test_a_raised_quota_applies_while_valid_and_is_reported() -> None:
    expires = T0 + timedelta(days=30)
    raised = InMemoryRaisedQuotas([raise_for("user-objects", 6_000, expires)])
    policy = QuotaPolicy(raised=raised)
    store = GuardedQuotas(InMemoryQuotaStore())

    def plan(tenant: str, now: datetime) -> QuotaPlan:
        return policy.plan(tenant=tenant, client="cli", user="usr_op", objects=5_000, now=now)

    granted = plan("ten_rent", T0)
    assert granted.raised == (raised.lookup("ten_rent", "user-objects", T0),)
    assert (await store.enforce(granted, now=T0, degrade=Degrade.FAIL_CLOSED)).allowed
    # Another tenant's user gets the configured limit: 5,000 objects can never pass.
    other = plan("ten_other", T0)
    assert other.raised == ()
    with pytest.raises(QuotaExceeded) as refused:
        await store.enforce(other, now=T0, degrade=Degrade.FAIL_CLOSED)
    assert refused.value.reason == "user-objects" and not refused.value.verdict.retryable
    # Expired: back to the configured limit, on the next request.
    assert plan("ten_rent", expires).raised == ()


def test_raises_never_lower_a_limit_nor_touch_the_global_one() -> None:
    expires = T0 + timedelta(days=1)
    raised = InMemoryRaisedQuotas(
        [raise_for("user-objects", 10, expires), raise_for("global-objects", 9_000_000, expires)]
    )
    plan = QuotaPolicy(raised=raised).plan(tenant="ten_rent", client="c", user="u", now=T0)
    assert plan.raised == ()
    limits = {c.dimension: c.limit.capacity for c in plan.charges}
    assert limits[Dimension.USER] == 600 and limits[Dimension.GLOBAL] == 1_200_000


def test_raised_quota_registry() -> None:
    registry = InMemoryRaisedQuotas()
    first = raise_for("tenant-objects", 500_000, T0 + timedelta(days=1))
    registry.grant(first)
    assert registry.lookup("ten_rent", "tenant-objects", T0) == first
    registry.grant(raise_for("tenant-objects", 600_000, T0 + timedelta(days=2)))
    assert len(registry.all()) == 1  # one raise per (tenant, limit): granting replaces
    registry.revoke("ten_rent", "tenant-objects")
    assert registry.lookup("ten_rent", "tenant-objects", T0) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"owner": " "},  # every raise has someone who answers for it
        {"reason": ""},  # and a reason an auditor can read
        {"capacity": 0},
        {"expires_at": datetime(2027, 1, 1)},
    ],
)
def test_raised_quota_needs_owner_reason_and_expiry(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "tenant": "ten_rent",
        "limit_name": "user-objects",
        "capacity": 6_000,
        "owner": "ops",
        "reason": "why",
        "expires_at": T0,
    }
    fields.update(changes)
    with pytest.raises(ValueError, match="raised"):
        RaisedQuota(**fields)  # type: ignore[arg-type]


def test_raises_from_settings(tmp_path: Path) -> None:
    raise_entry = {
        "tenant": "ten_rent",
        "limit": "command-vehicle:lock",
        "capacity": 20_000,
        "owner": "ops@rent.example",
        "reason": "nightly lock of the whole fleet",
        "expires_at": "2027-01-01T00:00:00Z",
    }
    policy = QuotaPolicy.from_settings(Settings(data_dir=tmp_path, quota_raised=[raise_entry]))
    plan = policy.plan(
        tenant="ten_rent",
        client="c",
        user="u",
        vehicles=["v"],
        command=Permission.VEHICLE_LOCK,
        now=T0,
    )
    assert [q.owner for q in plan.raised] == ["ops@rent.example"]
    for bad in ("global-objects", "no-such-limit"):
        settings = Settings(data_dir=tmp_path, quota_raised=[{**raise_entry, "limit": bad}])
        with pytest.raises(ValueError, match="can be raised"):
            QuotaPolicy.from_settings(settings)


# --- degrade modes -----------------------------------------------------------------------


class DownStore:
    """A shared store that cannot answer, counting how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = True
        self.inner = InMemoryQuotaStore()

    async def consume(self, charges: Sequence[Charge], cost: int, *, now: datetime) -> QuotaVerdict:
        self.calls += 1
        if self.down:
            raise QuotaUnavailable("connection refused")
        return await self.inner.consume(charges, cost, now=now)


def read_plan(policy: QuotaPolicy | None = None, objects: int = 1) -> QuotaPlan:
    return (policy or QuotaPolicy()).plan(
        tenant="ten_t", client="cli_c", user="usr_u", objects=objects, now=T0
    )


async def test_fail_closed_refuses_when_the_store_is_down() -> None:
    quotas = GuardedQuotas(DownStore())
    with pytest.raises(QuotaStoreDown) as refused:
        await quotas.enforce(read_plan(), now=T0, degrade=Degrade.FAIL_CLOSED)
    assert (refused.value.status, refused.value.reason) == (503, "quota-store-unavailable")
    assert refused.value.headers["Retry-After"] == "1"


async def test_local_limit_counts_in_process_and_says_so() -> None:
    quotas = GuardedQuotas(DownStore())
    policy = QuotaPolicy(user=Limit("user-objects", 3, MINUTE))
    first = await quotas.enforce(read_plan(policy, 2), now=T0, degrade=Degrade.LOCAL_LIMIT)
    assert first.allowed and first.degraded and first.remaining == 1
    # The local limit is a limit: it refuses too.
    with pytest.raises(QuotaExceeded):
        await quotas.enforce(read_plan(policy, 2), now=T0, degrade=Degrade.LOCAL_LIMIT)


@pytest.mark.parametrize(
    "plan_changes",
    [
        {"command": Permission.VEHICLE_UNLOCK, "vehicles": ["veh_1"]},  # commands fail closed
        {"flow": Flow.OWNERSHIP_TRANSFER},  # sensitive flows fail closed
    ],
)
async def test_commands_and_flows_never_degrade_whatever_the_route_asks(
    plan_changes: dict[str, object],
) -> None:
    plan = QuotaPolicy().plan(tenant="t", client="c", user="u", now=T0, **plan_changes)  # type: ignore[arg-type]
    quotas = GuardedQuotas(DownStore())
    with pytest.raises(QuotaStoreDown):
        await quotas.enforce(plan, now=T0, degrade=Degrade.LOCAL_LIMIT)
    # Also through the low-level call, with the charges alone.
    with pytest.raises(QuotaStoreDown):
        await quotas.consume(plan.charges, plan.cost, now=T0, degrade=Degrade.LOCAL_LIMIT)


async def test_the_down_store_is_not_asked_again_until_the_retry_period() -> None:
    store = DownStore()
    quotas = GuardedQuotas(store, retry_primary_after=timedelta(seconds=2))
    for seconds in (0, 1):
        verdict = await quotas.enforce(
            read_plan(), now=T0 + timedelta(seconds=seconds), degrade=Degrade.LOCAL_LIMIT
        )
        assert verdict.degraded
    assert store.calls == 1 and quotas.primary_down
    store.down = False
    back = await quotas.enforce(
        read_plan(), now=T0 + timedelta(seconds=2), degrade=Degrade.LOCAL_LIMIT
    )
    assert not back.degraded and store.calls == 2 and not quotas.primary_down


async def test_an_embedded_runtime_has_no_store_to_lose(tmp_path: Path) -> None:
    runtime = QuotaRuntime.build(Settings(data_dir=tmp_path))
    verdict = await runtime.quotas.enforce(
        read_plan(runtime.policy), now=T0, degrade=Degrade.FAIL_CLOSED
    )
    assert verdict.allowed and not verdict.degraded and runtime.redis_store is None
    await runtime.close()


# --- refusals and headers ----------------------------------------------------------------


async def test_quota_exceeded_problem_and_headers() -> None:
    quotas = GuardedQuotas(InMemoryQuotaStore())
    policy = QuotaPolicy(user=Limit("user-objects", 6, MINUTE))
    await quotas.enforce(read_plan(policy, 6), now=T0, degrade=Degrade.FAIL_CLOSED)
    with pytest.raises(QuotaExceeded) as refused:
        await quotas.enforce(read_plan(policy, 1), now=T0, degrade=Degrade.FAIL_CLOSED)
    error = refused.value
    assert (error.status, error.code, error.reason) == (429, "quota-exceeded", "user-objects")
    # 10 s per unit at 6 per minute.
    assert error.headers == {
        "Retry-After": "10",
        "RateLimit-Policy": '"user-objects";q=6;w=60',
        "RateLimit": '"user-objects";r=0;t=10',
    }
    body = error.to_problem("/mobile/v1/vehicles")
    assert body["type"] == "urn:fleetward:problem:quota-exceeded"
    assert body["violated-policies"] == ["user-objects"] and body["retryable"] is True


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    limit = Limit("fast", 10_000, timedelta(seconds=1))
    verdict = QuotaVerdict(False, limit, 0, timedelta(milliseconds=1), timedelta(seconds=1))
    assert QuotaExceeded(verdict).headers["Retry-After"] == "1"
    with pytest.raises(ValueError, match="denied"):
        QuotaExceeded(QuotaVerdict(True, limit, 5, timedelta(0), timedelta(seconds=1)))


def test_rate_limit_headers_on_success() -> None:
    limit = Limit("user-objects", 600, MINUTE)
    verdict = QuotaVerdict(True, limit, 597, timedelta(0), timedelta(milliseconds=300))
    assert rate_limit_headers(verdict) == {
        "RateLimit-Policy": '"user-objects";q=600;w=60',
        "RateLimit": '"user-objects";r=597;t=1',
    }


# --- the in-process store stays bounded -------------------------------------------------


async def test_memory_store_is_bounded_and_forgets_full_buckets() -> None:
    store = InMemoryQuotaStore(max_buckets=3)
    limit = Limit("x", 2, MINUTE)
    for n in range(10):
        await store.consume([Charge(Dimension.USER, f"usr_{n}", limit)], 1, now=T0)
    assert len(store) == 3 and store.evicted_live == 7
    # Once refilled, buckets are dropped by the sweep of later calls.
    later = T0 + MINUTE
    await store.consume([Charge(Dimension.USER, "usr_new", limit)], 1, now=later)
    assert len(store) == 1


def test_a_command_plan_holds_only_the_commands_own_limits() -> None:
    # The request guard already drew user, client, tenant and global for the same targets:
    # a command adds its type per actor and one unit per vehicle, never those again.
    plan = QuotaPolicy().plan_command(
        Permission.VEHICLE_UNLOCK,
        tenant="ten_a",
        client="cli_a",
        now=T0,
        user="usr_a",
        vehicles=["veh_1", "veh_2", "veh_1"],
    )
    assert {c.dimension for c in plan.charges} == {Dimension.COMMAND, Dimension.VEHICLE}
    assert plan.cost == 3 and not plan.may_degrade
    per_vehicle = {
        c.subject: c.fixed_cost for c in plan.charges if c.dimension is Dimension.VEHICLE
    }
    assert per_vehicle == {"veh_1": 2, "veh_2": 1}
    with pytest.raises(ValueError, match="at least one vehicle"):
        QuotaPolicy().plan_command(
            Permission.VEHICLE_LOCK, tenant="t", client="c", now=T0, vehicles=[]
        )
