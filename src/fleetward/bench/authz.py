"""Policy decision cost, with the entity construction included, as a ratio to the bare engine.

Measured one after another, interleaved in short slices so that load drifting during the
run hits all alike:

a. ``bare``: ``cedarpy.is_authorized`` with the policy set, schema and entities parsed once
   (the ceiling: what the engine costs when nothing is built per request);
b. ``decide``: :meth:`CedarPdp.decide` on facts already in memory: the scope check, the
   Cedar entities built from the facts (objects, then JSON), the request checked against the
   schema's shape, the evaluation of the action's policy slice, the decision value. The six
   requests repeat, so the engine's parse of each entity text is found in the PDP's parse
   cache (the steady state of a caller repeating a request on the same facts);
b'. ``decide_cold``: the same for an owner read on a vehicle id never seen before, so the
   entity text is new on every call and the engine parses it (JSON parsed and checked
   against the schema): every request on new facts. The facts are what the store's loader
   gives an owner (the owner and the car; no delegation: Vehicle.delegation is only ever
   the asker's own). ``decide_cold_driver``: the same for a driver's lock under their own
   delegation (a record of four values more to parse, the heaviest consumer entity set);
c. ``decide_many_per_decision``: :meth:`CedarPdp.decide_many` over a page of 10 vehicles of
   one owner (one entity load, one batch evaluation), per decision;
d. ``decide_store``: the same as (b) reading its facts from a seeded demo world in SQLite through
   :class:`SessionRelations` (3-4 indexed queries per decision; not part of the issue's
   target, reported so the store's share is visible).

The request mix covers an owner read, a driver command, an operator's bulk command, a
partner read, a stranger (no relationship) and a stale step-up (two evaluations).
The collector is set as the app sets it once started (``core/collector.py``: what start-up
built frozen, the young generation collected every 20,000 allocations), for every
measurement alike.
Run: ``python -m fleetward.bench.authz [seconds]`` (seconds per measurement, default 2).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.authz.decision import (
    AuthzRequest,
    PrincipalKind,
    PrincipalRef,
    RequestContext,
    ResourceKind,
    ResourceRef,
)
from fleetward.authz.entities import (
    Grant,
    ObjectFacts,
    PrincipalFacts,
    Relations,
    SessionRelations,
    VehicleFacts,
)
from fleetward.authz.pdp import CedarPdp, PolicyText, bare_evaluator
from fleetward.authz.permissions import Permission
from fleetward.core.collector import freeze_start_up_objects
from fleetward.demo.world import seed_demo_world
from fleetward.identity.acr import Acr
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.identity.oauth_models import ClientType
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.store.engine import create_engine
from fleetward.store.migrate import upgrade
from fleetward.vehicles.models import Vehicle

_WARMUP_CALLS = 200
_LISTING = 10
_SLICE_SECONDS = 0.25
_NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
_EVERY_SCOPE = frozenset(p.value for p in Permission)


@dataclass(frozen=True, slots=True)
class _Static:
    """A relation source holding facts in memory, keyed by principal id."""

    by_principal: dict[str, Relations]

    async def relations(
        self, principal: PrincipalRef, context: RequestContext, resources: Sequence[ResourceRef]
    ) -> Relations:
        return self.by_principal[principal.id]


def _context(
    tenant: str, *, age: timedelta = timedelta(seconds=30), command: Permission | None = None
) -> RequestContext:
    return RequestContext(_NOW, tenant, _EVERY_SCOPE, Acr.MFA.value, _NOW - age, None, command)


def _user(
    uid: str, tenant: str, kind: TenantKind, role: Role, groups: frozenset[str] = frozenset()
) -> PrincipalFacts:
    ref = PrincipalRef(PrincipalKind.USER, uid)
    return PrincipalFacts(ref, tenant, kind, frozenset({role}), operator_groups=groups)


def _memory_world() -> tuple[_Static, list[AuthzRequest]]:
    day = timedelta(days=1)
    lock = frozenset({Permission.VEHICLE_LOCK})
    status = frozenset({Permission.VEHICLE_READ_STATUS})
    # One car as the loader gives it to each asker: a relation on it (delegation, consent)
    # appears only for its holder.
    owned = VehicleFacts("veh_alice", "ten_consumer", "NA", owner_id="usr_alice")
    driven = replace(owned, delegation=Grant("usr_bob", lock, _NOW - day, _NOW + 6 * day))
    consented = replace(owned, consent=Grant("ten_insureco", status, _NOW - day, _NOW + day))
    fleet_car = VehicleFacts(
        "veh_n1", "ten_acme", "NA", fleet_id="ten_acme", groups=frozenset({"grp_north"})
    )
    north = ResourceRef(ResourceKind.FLEET_GROUP, "grp_north")
    alice = _user("usr_alice", "ten_consumer", TenantKind.CONSUMER, Role.CUSTOMER)
    bob = _user("usr_bob", "ten_consumer", TenantKind.CONSUMER, Role.CUSTOMER)
    mallory = _user("usr_mallory", "ten_consumer", TenantKind.CONSUMER, Role.CUSTOMER)
    frank = _user(
        "usr_frank", "ten_acme", TenantKind.FLEET, Role.FLEET_OPERATOR, frozenset({"grp_north"})
    )
    app = PrincipalFacts(
        PrincipalRef(PrincipalKind.PARTNER, "insureco-app"),
        "ten_insureco",
        TenantKind.PARTNER,
        client_type=ClientType.PARTNER,
    )
    source = _Static(
        {
            alice.ref.id: Relations(alice, {owned.id: owned}),
            bob.ref.id: Relations(bob, {driven.id: driven}),
            mallory.ref.id: Relations(mallory, {owned.id: owned}),
            frank.ref.id: Relations(
                frank, {fleet_car.id: fleet_car}, {north: ObjectFacts(north, "ten_acme")}
            ),
            app.ref.id: Relations(app, {consented.id: consented}),
        }
    )
    car = ResourceRef.vehicle(driven.id)
    consumer = _context("ten_consumer")
    requests = [
        AuthzRequest(alice.ref, Permission.VEHICLE_READ_STATUS, car, consumer),
        AuthzRequest(bob.ref, Permission.VEHICLE_LOCK, car, consumer),
        AuthzRequest(
            frank.ref,
            Permission.FLEET_BULK_COMMAND,
            north,
            _context("ten_acme", command=Permission.VEHICLE_LOCK),
        ),
        AuthzRequest(app.ref, Permission.VEHICLE_READ_STATUS, car, _context("ten_insureco")),
        AuthzRequest(mallory.ref, Permission.VEHICLE_READ_STATUS, car, consumer),
        AuthzRequest(
            alice.ref,
            Permission.VEHICLE_UNLOCK,
            car,
            _context("ten_consumer", age=timedelta(hours=1)),
        ),
    ]
    return source, requests


async def _timed(call: Callable[[], Awaitable[object]], seconds: float, samples: list[int]) -> None:
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    while True:
        start = clock()
        await call()
        end = clock()
        samples.append(end - start)
        if end >= deadline:
            return


def _cycle(calls: list[Callable[[], Awaitable[object]]]) -> Callable[[], Awaitable[object]]:
    state = {"i": 0}

    async def call() -> object:
        state["i"] = (state["i"] + 1) % len(calls)
        return await calls[state["i"]]()

    return call


def _summary(name: str, samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    total = sum(samples) / 1e9
    return {
        f"{name}_per_s": len(samples) / total,
        f"{name}_p50_ms": statistics.median(ordered) / 1e6,
        f"{name}_p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] / 1e6,
    }


async def _measure(seconds: float, with_store: bool) -> dict[str, float]:
    source, requests = _memory_world()
    pdp = CedarPdp(source)
    policy = PolicyText.packaged()
    bare_calls: list[Callable[[], Awaitable[object]]] = []
    for request in requests:
        evaluate = bare_evaluator(policy, source.by_principal[request.principal.id], request)

        async def bare(evaluate: Callable[[], bool] = evaluate) -> object:
            return evaluate()

        bare_calls.append(bare)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "bare": _cycle(bare_calls),
        "decide": _cycle([functools.partial(pdp.decide, r) for r in requests]),
        "listing": _listing(pdp),
        "decide_cold": _cold(pdp),
        "decide_cold_driver": _cold(pdp, driver=True),
    }
    if with_store:
        async with _store_call(pdp) as store:
            calls["decide_store"] = store
            freeze_start_up_objects()
            samples = await _run(calls, seconds)
    else:
        freeze_start_up_objects()
        samples = await _run(calls, seconds)
    result = {
        **_summary("bare", samples["bare"]),
        **_summary("decide", samples["decide"]),
        **_summary("decide_cold", samples["decide_cold"]),
        **_summary("decide_cold_driver", samples["decide_cold_driver"]),
    }
    per_decision = [n // _LISTING for n in samples["listing"]]
    result["decide_many_per_decision_per_s"] = _summary("x", per_decision)["x_per_s"]
    result["ratio_decide_to_bare"] = result["decide_per_s"] / result["bare_per_s"]
    result["ratio_decide_cold_to_bare"] = result["decide_cold_per_s"] / result["bare_per_s"]
    result["ratio_decide_cold_driver_to_bare"] = (
        result["decide_cold_driver_per_s"] / result["bare_per_s"]
    )
    if with_store:
        result.update(_summary("decide_store", samples["decide_store"]))
    return result


async def _run(
    calls: dict[str, Callable[[], Awaitable[object]]], seconds: float
) -> dict[str, list[int]]:
    for call in calls.values():
        for _ in range(_WARMUP_CALLS // 10):
            await call()
    samples: dict[str, list[int]] = {name: [] for name in calls}
    rounds = max(1, round(seconds / _SLICE_SECONDS))
    for _ in range(rounds):
        for name, call in calls.items():
            await _timed(call, seconds / rounds, samples[name])
    return samples


def _listing(pdp: CedarPdp) -> Callable[[], Awaitable[object]]:
    """decide_many over a list page: one owner, _LISTING vehicles, one entity load."""
    owner = _user("usr_owner", "ten_consumer", TenantKind.CONSUMER, Role.CUSTOMER)
    cars = {
        f"veh_{n}": VehicleFacts(f"veh_{n}", "ten_consumer", "NA", owner_id=owner.ref.id)
        for n in range(_LISTING)
    }
    bound = pdp.bind(_Static({owner.ref.id: Relations(owner, cars)}))
    context = _context("ten_consumer")
    requests = [
        AuthzRequest(owner.ref, Permission.VEHICLE_READ_STATUS, ResourceRef.vehicle(v), context)
        for v in cars
    ]
    return functools.partial(bound.decide_many, requests)


@dataclass(frozen=True, slots=True)
class _Fresh:
    """Facts for whichever vehicle is asked, as the store's loader gives them to ``asker``:
    ``usr_owner``'s car, with ``delegated`` as the asker's own delegation on it when it is
    not empty. Never another holder's delegation: the loader reads only the asking
    principal's (``authz/relations/loader.py``), and the schema's Vehicle.delegation is the
    requesting principal's relation to the car."""

    asker: PrincipalFacts
    delegated: frozenset[Permission] = frozenset()

    async def relations(
        self, principal: PrincipalRef, context: RequestContext, resources: Sequence[ResourceRef]
    ) -> Relations:
        day = timedelta(days=1)
        grant = None
        if self.delegated:
            grant = Grant(self.asker.ref.id, self.delegated, _NOW - day, _NOW + day)
        cars = {
            r.id: VehicleFacts(r.id, "ten_consumer", "NA", owner_id="usr_owner", delegation=grant)
            for r in resources
        }
        return Relations(self.asker, cars)


def _cold(pdp: CedarPdp, *, driver: bool = False) -> Callable[[], Awaitable[object]]:
    """decide() on a vehicle id never asked before (a new entity text every call): the
    owner's status read, or with ``driver`` a driver's lock under their own delegation."""
    if driver:
        asker = _user("usr_driver", "ten_consumer", TenantKind.CONSUMER, Role.CUSTOMER)
        action = Permission.VEHICLE_LOCK
        source = _Fresh(asker, frozenset({action}))
    else:
        asker = _user("usr_owner", "ten_consumer", TenantKind.CONSUMER, Role.CUSTOMER)
        action = Permission.VEHICLE_READ_STATUS
        source = _Fresh(asker)
    bound = pdp.bind(source)
    context = _context("ten_consumer")
    counter = itertools.count()

    async def call() -> object:
        car = ResourceRef.vehicle(f"veh_cold_{next(counter)}")
        decision = await bound.decide(AuthzRequest(asker.ref, action, car, context))
        if not decision.allowed:
            raise AssertionError(f"the cold request was refused: {decision.reason}")
        return decision

    return call


@asynccontextmanager
async def _store_call(pdp: CedarPdp) -> AsyncIterator[Callable[[], Awaitable[object]]]:
    """decide() reading a seeded SQLite demo world (the session stays open for the run)."""
    with tempfile.TemporaryDirectory(prefix="fleetward-bench-") as name:
        platform = await _seeded(Path(name))
        try:
            async with platform.sessions() as session:
                yield await _store_requests(pdp, platform, session)
        finally:
            await platform.close()


async def _seeded(directory: Path) -> Platform:
    engine = create_engine(f"sqlite+aiosqlite:///{directory / 'bench.db'}")
    await upgrade(engine)
    settings = Settings(
        data_dir=directory / "var", password_hash_memory_kib=19_456, password_hash_time_cost=2
    )
    platform = Platform.build(settings, engine=engine)
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        await uow.commit()
    return platform


async def _store_requests(
    pdp: CedarPdp, platform: Platform, session: AsyncSession
) -> Callable[[], Awaitable[object]]:
    users = {u.username: u.id for u in await session.scalars(select(User))}
    tenants = {t.slug: t.id for t in await session.scalars(select(Tenant))}
    vehicles = {v.label: v.id for v in await session.scalars(select(Vehicle))}
    bound = pdp.bind(SessionRelations(session))
    now = platform.clock.now()
    calls: list[Callable[[], Awaitable[object]]] = []
    for who, slug, permission, label in (
        ("alice", "consumer", Permission.VEHICLE_READ_STATUS, "ALICE-1"),
        ("bob", "consumer", Permission.VEHICLE_LOCK, "ALICE-1"),
        ("frank", "acme-logistics", Permission.VEHICLE_READ_STATUS, "ACME-N1"),
        ("mallory", "consumer", Permission.VEHICLE_READ_STATUS, "ALICE-1"),
    ):
        context = RequestContext(now, tenants[slug], _EVERY_SCOPE, Acr.MFA.value, now)
        principal = PrincipalRef(PrincipalKind.USER, users[who])
        request = AuthzRequest(principal, permission, ResourceRef.vehicle(vehicles[label]), context)
        calls.append(functools.partial(bound.decide, request))
    return _cycle(calls)


def run(seconds: float = 2.0, *, with_store: bool = True) -> dict[str, float]:
    """Measure (a)-(d) for ``seconds`` each; rates per second, p50/p99 in milliseconds."""
    return asyncio.run(_measure(seconds, with_store))


def main(argv: list[str]) -> None:
    seconds = float(argv[1]) if len(argv) > 1 else 2.0
    for name, value in run(seconds).items():
        print(f"{name:28} {value:14.4f}")


if __name__ == "__main__":
    main(sys.argv)
