"""Remote commands end to end under load (``fleetward bench commands``).

The issue's target: with 1,000 simulated vehicles connected, the round trip from the API
request to ``executed`` at p50 and p99 (p99 <= 100 ms on loopback at 200 commands/s), and the
maximum sustained commands/s per core. This benchmark

1. makes a fresh store (SQLite in a temporary directory, or a fresh PostgreSQL database that
   is dropped afterwards), migrates it, seeds the demo world and its OAuth clients, adds one
   bench owner (a customer of the consumer tenant) and ``vehicles`` vehicles owned by them,
   and provisions one device identity per vehicle in this process through the provisioning
   services, as ``gateway_load`` does (enrolment, CSR check, certificate, and the command
   service's public key a TCU gets at enrolment), not over HTTP;
2. serves the app: by default ``build_app`` under uvicorn in a child process pinned to the
   first core, this process (HTTP client, simulated fleet, observer) pinned to the others;
   with ``inprocess`` the server runs in this process's event loop (one core for everything);
3. connects every vehicle over the WebSocket (the simulator's :class:`VehicleDriver`, parked,
   reporting every ``report_interval_s``, each at its own phase of it after the first report,
   and at once after each command it executes) and
   waits until every one has had a message accepted, then freezes this process's objects out
   of the cyclic collector (``freeze_fleet``: its full passes over the fleet stalled the load
   generator by ~150 ms);
4. measures, open loop (each request sent at its scheduled instant, whatever the earlier
   ones are doing; latency counted from that instant, so a late client does not hide a
   slow server):

   * ``bare``: a FastAPI app with the same POST route and body model, answering 202 with
     the JSON the real route returned (no authentication, no store): the ceiling;
   * ``app``: ``POST /mobile/v1/vehicles/{id}/commands/{command}`` with an Idempotency-Key
     and a step-up token (acr mfa, recent auth_time), round-robin over the fleet, at
     ``rate`` for ``seconds``; then ``lock`` (security-exclusive: one in flight per
     vehicle) at the same rate; then ``steps`` of rising rates for the maximum.

The end of a round trip is when the platform has RECORDED the outcome: an observer polls the
store every ``poll_ms`` (one indexed ``SELECT ... WHERE id IN (jobs in flight)`` on a
connection of its own, not the app's: on SQLite it takes no write lock) and takes the
instant it first sees the job out of the in-flight states (``seen``). That is an upper
bound, late by at most one poll; the job's ``result_at`` (the server's clock when it recorded
the verified result, inside the recording transaction, before its commit) is a lower bound.
Both are reported. Polling the API instead would cost the server an authenticated,
authorized and audited read per poll (several times the command itself); following the SSE
stream would hold a request per job and read the job at every change.

Quotas: the defaults would refuse this load from one user (600 objects/min per user, 300
commands/min per command type and actor, 10 commands/min per vehicle). The bench raises them
through Settings (``quota_user_per_minute``, ``quota_vehicle_commands_per_minute`` and an
approved raise of the bench tenant's command limits, ``quota_raised``), and the enumeration
detector's distinct-vehicle thresholds (``quota_enumeration_slow_distinct`` and
``..._stop_distinct``: one person touching 1,000 vehicles is what it slows, by up to 2 s a
request, and then stops); nothing else differs from a production configuration.

Figures: latencies (ms, p50/p99/max), rates, the server's CPU per command (from ``/proc``;
``per_cpu_s`` is commands per CPU-second of the server process, the "per core" figure), the
ratio to the bare route, the client's lag behind schedule (a lagging client means the figure
is the client's), what the vehicles did, and error events in the server's log.
Run: ``python -m fleetward.bench.commands [vehicles [seconds]]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fleetward.audit.recorder import Actor
from fleetward.authz.permissions import Permission
from fleetward.bench.command_servers import (
    BODY_FILE,
    HOST,
    SETTINGS_FILE,
    Server,
    bare_app,
    child_server,
    combined,
    free_port,
    inprocess_server,
    pinned,
    process_cpu,
    replica_servers,
    serve,
)
from fleetward.bench.http_read import _store as fresh_store
from fleetward.commands.families import COMMANDS
from fleetward.commands.models import CommandJob
from fleetward.commands.signing import CommandSigner
from fleetward.core.collector import freeze_live_objects
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.demo.clients import seed_demo_clients
from fleetward.demo.world import seed_demo_world
from fleetward.devices.ca import load_device_ca
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway.device_client import DeviceCredentials, build_csr, generate_key
from fleetward.identity.acr import Acr
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, User
from fleetward.observability.logging import configure_logging
from fleetward.platform import Platform
from fleetward.settings import RaisedQuotaSetting, Settings
from fleetward.sim.driver import DriveConfig, VehicleDriver
from fleetward.sim.transport import Endpoint, WebSocketTransport
from fleetward.sim.vehicle import SimVehicle
from fleetward.store.migrate import upgrade
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.ownership import OwnershipService

BENCH_ACTOR: Final = Actor.system("bench:commands")
OWNER: Final = "bench-owner"
CLIENT_ID: Final = "fleetward-mobile"
CHUNK: Final = 250
CONNECT_TIMEOUT_S: Final = 180.0
# A job in one of these is still on its way; anything else is its recorded outcome.
IN_FLIGHT: Final = frozenset({"requested", "authorized", "queued", "delivered"})
# A step is "sustained" when every command was executed, the client kept to its schedule
# and the round trip's p99 stayed below this (beyond it the queue is growing: p99 explodes).
SUSTAINED_P99_MS: Final = 1000.0
CLIENT_LAG_LIMIT_MS: Final = 50.0
WARMUP_RATE: Final = 20.0
TARGET_P99_MS: Final = 100.0
DEFAULT_STEPS: Final = (
    5.0,
    10.0,
    15.0,
    20.0,
    25.0,
    30.0,
    40.0,
    50.0,
    60.0,
    80.0,
    100.0,
    150.0,
    200.0,
)
# A request, and the wait for its outcome, give up after this (a saturated server queues).
REQUEST_TIMEOUT_S: Final = 120.0


@dataclass(frozen=True, slots=True)
class BenchConfig:
    vehicles: int = 1000
    rate: float = 200.0  # commands per second of the headline run
    seconds: float = 10.0  # at `rate`: 200/s for 10 s is ~70 s of backlog to drain today
    command: str = "horn_lights"
    lock_seconds: float = 10.0  # 0: no lock run
    lock_rate: float = 20.0
    steps: tuple[float, ...] = DEFAULT_STEPS  # rates of the search for the maximum
    step_seconds: float = 10.0
    bare_seconds: float = 10.0  # 0: no bare ceiling
    warmup: int = 100  # commands before anything is measured (at WARMUP_RATE)
    idle_seconds: float = 5.0  # the server's own CPU with no requests (before and after)
    poll_ms: float = 5.0
    report_interval_s: float = 30.0
    inprocess: bool = False
    # In-process: the app's log goes to the run's app.log (summarised in the report) instead
    # of this process's stderr. Replaces this process's logging configuration.
    capture_logs: bool = True
    database_url: str | None = None  # a PostgreSQL server; None: SQLite
    # App servers (each a process on a core of its own); more than one needs Redis, through
    # which they hand each other commands (commands/bus.py). Every command is sent to another
    # replica than its vehicle's: the hand-over is always on the path.
    replicas: int = 1
    redis_url: str | None = None
    # Freeze this process's objects once the fleet is connected (see _measure). Off for a
    # process that lives on after the run: frozen objects are never collected.
    freeze_fleet: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.vehicles <= 10_000:
            raise ValueError("need 1..10000 vehicles")
        if self.command not in COMMANDS or COMMANDS[self.command].exclusive:
            raise ValueError("the throughput command must be a non-exclusive command")
        if COMMANDS[self.command].needs is not None:
            raise ValueError("the throughput command must have no vehicle-state precondition")
        if not (0 < self.rate <= 5000 and 0 < self.seconds <= 600 and self.step_seconds > 0):
            raise ValueError("need a positive rate (<= 5000/s) and 1..600 seconds")
        if any(not 0 < r <= 5000 for r in self.steps) or self.poll_ms <= 0:
            raise ValueError("step rates must be within 0..5000/s, the poll positive")
        if not 1 <= self.replicas <= 16:
            raise ValueError("need 1..16 replicas")
        if self.replicas > 1 and (self.redis_url is None or self.inprocess):
            raise ValueError("several replicas run as child processes and need a Redis URL")


# --------------------------------------------------------------------------- settings


def _settings(directory: Path, port: int, database_url: str | None, tenant_id: str) -> Settings:
    """The server's settings (the child rebuilds them from the same file): production
    defaults, the benchmark's quotas raised, logs as JSON warnings and errors."""
    return Settings(**_settings_fields(directory, port, tenant_id), database_url=database_url)


def _settings_fields(directory: Path, port: int, tenant_id: str) -> dict[str, Any]:
    """The servers' settings file (never a secret: the store's and Redis's URLs travel in
    the children's environment)."""
    expires = datetime.now(UTC) + timedelta(days=1)
    raised = [
        RaisedQuotaSetting(
            tenant=tenant_id,
            limit=f"command-{spec.permission.value}",
            capacity=10_000_000,
            owner="bench",
            reason="fleetward bench commands: one user commands 1,000 vehicles",
            expires_at=expires,
        ).model_dump(mode="json")
        for spec in COMMANDS.values()
        if tenant_id
    ]
    return {
        "data_dir": str(directory / "var"),
        "host": HOST,
        "port": port,
        "password_hash_memory_kib": 19_456,
        "password_hash_time_cost": 2,
        "log_level": "WARNING",
        "log_format": "json",
        "quota_user_per_minute": 120_000,
        "quota_vehicle_commands_per_minute": 1000,
        "quota_raised": raised,
        # One person commanding 1,000 distinct vehicles is what the enumeration detector
        # slows (beyond 200 distinct vehicles a day: up to 2 s a request) and then stops
        # (500): right for a person, not this benchmark's owner. The check still runs.
        "quota_enumeration_slow_distinct": 1_000_000,
        "quota_enumeration_stop_distinct": 1_000_000,
        # A channel of this run's own (replicas only use it; runs sharing a Redis never mix).
        "command_bus_channel": f"fleetward-bench:{directory.name}",
    }


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True, slots=True)
class BenchWorld:
    owner_id: str
    tenant_id: str
    vehicle_ids: tuple[str, ...]
    credentials: tuple[DeviceCredentials, ...]


async def _prepare(platform: Platform, vehicles: int) -> BenchWorld:
    """Migrate, seed the demo world and clients, the bench owner and their fleet."""
    settings = platform.settings
    await upgrade(platform.engine)
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        await seed_demo_clients(ctx, settings.data_dir)
        directory = Directory(ctx)
        home = await directory.tenant("consumer")
        owner = await directory.create_user(
            OWNER,
            "Bench owner",
            home,
            password_hash=platform.passwords.hash(new_id("pwd")),
            actor=BENCH_ACTOR,
        )
        await directory.grant_membership(owner, home, Role.CUSTOMER, actor=BENCH_ACTOR)
        await uow.commit()
        owner_id, tenant_id = owner.id, home.id
    now = datetime.now(UTC)
    ids = [new_id("veh") for _ in range(vehicles)]
    async with platform.engine.begin() as connection:
        # Fixture rows (as in gateway_load): registering vehicles is not under test.
        await connection.execute(
            insert(Vehicle),
            [
                {
                    "id": vid,
                    "vin": f"CMD{n:014d}",
                    "label": f"CMD-{n:05d}",
                    "model": "Bench",
                    "region": "NA",
                    "tenant_id": tenant_id,
                    "created_at": now,
                }
                for n, vid in enumerate(ids)
            ],
        )
    signer = CommandSigner.load_or_create(settings, platform.identity.data_key)
    command_key = (signer.key_id, signer.public_key_pem)
    ca = load_device_ca(settings, platform.identity.data_key, platform.clock)
    credentials: list[DeviceCredentials] = []
    for offset in range(0, vehicles, CHUNK):
        async with platform.services() as (uow, ctx):
            owner_row = await ctx.session.get(User, owner_id)
            if owner_row is None:
                raise RuntimeError("the bench owner just created is missing")
            owners = OwnershipService(ctx)
            provisioning = Provisioning(ctx)
            for vid in ids[offset : offset + CHUNK]:
                vehicle = await ctx.session.get(Vehicle, vid)
                if vehicle is None:
                    raise RuntimeError("a vehicle just inserted is missing")
                await owners.start(vehicle, owner_row, actor=BENCH_ACTOR)
                grant = await provisioning.create_enrolment(vehicle, actor=BENCH_ACTOR)
                key = generate_key()
                csr = build_csr(key, device_id=grant.device_id, vehicle_id=vid)
                issued = await provisioning.enrol(grant.token, csr, ca)
                credentials.append(
                    DeviceCredentials.from_pem(
                        key,
                        issued.certificate_pem,
                        issued.ca_certificate_pem,
                        device_id=issued.device_id,
                        vehicle_id=vid,
                        command_key=command_key,
                    )
                )
            await uow.commit()
    return BenchWorld(owner_id, tenant_id, tuple(ids), tuple(credentials))


def _token(platform: Platform, world: BenchWorld) -> str:
    """A step-up token of the bench owner (mfa, authenticated seconds ago): minted per
    phase, so step-up's 5-minute max_age never runs out during a long run."""
    now = platform.clock.now()
    scopes = sorted(
        {Permission.VEHICLE_READ_STATUS.value} | {s.permission.value for s in COMMANDS.values()}
    )
    return platform.identity.tokens.issue(
        subject=world.owner_id,
        client_id=CLIENT_ID,
        tenant=world.tenant_id,
        surface=Surface.MOBILE,
        scopes=scopes,
        auth_time=now - timedelta(seconds=5),
        acr=Acr.MFA.value,
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="user",
    ).token


# --------------------------------------------------------------------------- the fleet


class Fleet:
    """The simulated vehicles: one driver task each, parked, over the WebSocket."""

    def __init__(
        self, credentials: Sequence[DeviceCredentials], base_urls: Sequence[str], interval_s: float
    ) -> None:
        # Vehicle n connects to replica n modulo their count; every replica calls itself by
        # the first one's address (their settings' base URL: one deployment, one name).
        transports = [WebSocketTransport(Endpoint(url, base_urls[0])) for url in base_urls]
        gate = asyncio.Semaphore(64)
        self.drivers: list[VehicleDriver] = []
        for n, creds in enumerate(credentials):
            transport = transports[n % len(transports)]
            # Each reports once connected, then at its own phase of the interval: a fleet's
            # reports are spread over it, not in bursts of every vehicle that connected
            # together (250 a second for ~4 s of every 30 here, without the phases).
            config = DriveConfig(
                messages=None,
                interval_s=interval_s,
                step_s=0.001,
                first_pause_s=interval_s * (n + 1) / len(credentials),
            )
            vehicle = SimVehicle(seed=n + 1)
            vehicle.sleep()  # parked and locked ...
            vehicle.wake()  # ... and awake: it reports and stays parked (tiny steps)
            self.drivers.append(
                VehicleDriver(
                    vehicle,
                    creds,
                    transport,
                    config,
                    clock=lambda: datetime.now(UTC),
                    connect_gate=gate,
                )
            )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self, timeout_s: float = CONNECT_TIMEOUT_S) -> float:
        """Connect every vehicle; seconds until each had a message accepted."""
        started = time.perf_counter()
        self._tasks = [asyncio.create_task(d.run(self._stop)) for d in self.drivers]
        deadline = started + timeout_s
        while True:
            ready = sum(1 for d in self.drivers if d.tally.replies.get("accepted", 0) >= 1)
            if ready == len(self.drivers):
                return time.perf_counter() - started
            ended = [t for t in self._tasks if t.done()]
            if ended or time.perf_counter() > deadline:
                ends = self.counts()["ends"]
                raise RuntimeError(f"{ready}/{len(self.drivers)} vehicles connected; ends {ends}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def counts(self) -> dict[str, Any]:
        commands: Counter[str] = Counter()
        replies: Counter[str] = Counter()
        ends: Counter[str] = Counter()
        for driver in self.drivers:
            commands.update(driver.tally.commands)
            replies.update(driver.tally.replies)
            ends.update(driver.tally.ends)
        return {"commands": dict(commands), "replies": dict(replies), "ends": dict(ends)}


# --------------------------------------------------------------------------- the observer


@dataclass(slots=True)
class Outcome:
    state: str
    seen: float  # perf_counter() when the observer first saw it
    result_at: datetime | None


class Observer:
    """Polls the store for the outcome of the jobs in flight (a connection of its own)."""

    def __init__(self, database_url: str, poll_s: float) -> None:
        self._engine: AsyncEngine = create_async_engine(database_url)
        self._poll_s = poll_s
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._task: asyncio.Task[None] | None = None
        self.polls = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._engine.dispose()

    def watch(self, job_id: str) -> asyncio.Future[Outcome]:
        future = self._waiting.get(job_id)
        if future is None:
            future = self._waiting[job_id] = asyncio.get_running_loop().create_future()
        return future

    async def states(self) -> dict[str, dict[str, int]]:
        """Jobs in the store by command and state (the end of the run: what became of them)."""
        async with self._engine.connect() as connection:
            result = await connection.execute(
                select(CommandJob.command, CommandJob.state, func.count()).group_by(
                    CommandJob.command, CommandJob.state
                )
            )
            found: dict[str, dict[str, int]] = {}
            for command, state, count in result.all():
                found.setdefault(str(command), {})[str(getattr(state, "value", state))] = count
            return found

    def forget(self, job_id: str) -> None:
        self._waiting.pop(job_id, None)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            if not self._waiting:
                continue
            ids = list(self._waiting)
            rows: list[Any] = []
            async with self._engine.connect() as connection:
                for offset in range(0, len(ids), 500):
                    result = await connection.execute(
                        select(CommandJob.id, CommandJob.state, CommandJob.result_at).where(
                            CommandJob.id.in_(ids[offset : offset + 500])
                        )
                    )
                    rows.extend(result.all())
            self.polls += 1
            seen = time.perf_counter()
            for job_id, state, result_at in rows:
                value = getattr(state, "value", state)
                if value in IN_FLIGHT:
                    continue
                future = self._waiting.pop(job_id, None)
                if future is not None and not future.done():
                    future.set_result(Outcome(str(value), seen, result_at))


# --------------------------------------------------------------------------- load


@dataclass(slots=True)
class Phase:
    name: str
    rate: float
    count: int
    accept_ms: list[float] = field(default_factory=list)  # until the 202 (or the bare 202)
    seen_ms: list[float] = field(default_factory=list)  # until the observer saw `executed`
    recorded_ms: list[float] = field(default_factory=list)  # until result_at (server clock)
    lag_ms: list[float] = field(default_factory=list)  # how late the client sent
    statuses: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    server_cpu_s: float | None = None
    client_cpu_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        executed = self.outcomes.get("executed", 0)
        done = len(self.seen_ms) if self.seen_ms else len(self.accept_ms)
        out: dict[str, Any] = {
            "offered_per_s": self.rate,
            "sent": self.count,
            "statuses": dict(self.statuses),
            "achieved_per_s": round(done / self.wall_s, 1) if self.wall_s else 0.0,
            "client_cpu_s": round(self.client_cpu_s, 2),
            "client_lag_p99_ms": _pct(self.lag_ms, 0.99),
            "client_lag_max_ms": round(max(self.lag_ms), 2) if self.lag_ms else None,
        }
        for key, values in (
            ("accept", self.accept_ms),
            ("executed_seen", self.seen_ms),
            ("executed_recorded", self.recorded_ms),
        ):
            if values:
                out[f"{key}_p50_ms"] = _pct(values, 0.5)
                out[f"{key}_p99_ms"] = _pct(values, 0.99)
                out[f"{key}_max_ms"] = round(max(values), 2)
        if self.outcomes:
            out["outcomes"] = dict(self.outcomes)
            out["executed"] = executed
        if self.server_cpu_s is not None:
            out["server_cpu_s"] = round(self.server_cpu_s, 2)
            if self.server_cpu_s > 0:
                out["server_cpu_ms_per_request"] = round(1000 * self.server_cpu_s / self.count, 3)
                # Per CPU-second: executed commands (answers, for the bare route); a refused
                # request is cheaper than a command and must not count as one.
                useful = executed if self.outcomes else self.count
                out["per_cpu_s"] = round(useful / self.server_cpu_s, 1)
        return out

    def above_idle_ms(self, idle_cpu_per_s: float | None) -> float | None:
        """Server CPU per executed command beyond what the idle server spends in the same
        wall time (the fleet's reports, the sweep, sealing): the cost that grows with the
        rate, the figure that says whether a rate fits in a core."""
        executed = self.outcomes.get("executed", 0)
        if self.server_cpu_s is None or idle_cpu_per_s is None or executed == 0:
            return None
        return round(1000 * (self.server_cpu_s - idle_cpu_per_s * self.wall_s) / executed, 3)

    def within_target(self) -> bool:
        """The issue's target: every command executed, round trip p99 <= 100 ms."""
        return (
            self.outcomes.get("executed", 0) == self.count
            and (_pct(self.seen_ms, 0.99) or math.inf) <= TARGET_P99_MS
        )

    def sustained(self) -> bool:
        return (
            self.outcomes.get("executed", 0) == self.count
            and (_pct(self.seen_ms, 0.99) or 0.0) <= SUSTAINED_P99_MS
            and (_pct(self.lag_ms, 0.99) or 0.0) <= CLIENT_LAG_LIMIT_MS
        )


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    if q == 0.5:
        return round(statistics.median(ordered), 2)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def _open_loop(
    http: httpx.AsyncClient,
    phase: Phase,
    url_of: Callable[[int], str],
    headers_of: Callable[[int], dict[str, str]],
    body: dict[str, Any],
    observer: Observer | None,
    cpu_of_server: Callable[[], float | None],
) -> Phase:
    """Send ``phase.count`` POSTs at ``phase.rate``, each at its scheduled instant."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / phase.rate
    cpu_before, client_before = cpu_of_server(), time.process_time()
    t0 = time.perf_counter() + 0.05
    wall0 = time.time() + (t0 - time.perf_counter())
    last_done = t0

    async def one(i: int, scheduled: float) -> None:
        nonlocal last_done
        phase.lag_ms.append((time.perf_counter() - scheduled) * 1000)
        try:
            response = await http.post(url_of(i), json=body, headers=headers_of(i))
        except httpx.HTTPError as exc:
            phase.statuses[type(exc).__name__] += 1
            return
        answered = time.perf_counter()
        phase.statuses[str(response.status_code)] += 1
        phase.accept_ms.append((answered - scheduled) * 1000)
        last_done = max(last_done, answered)
        if observer is None or response.status_code != 202:
            return
        job_id = response.json()["id"]
        waiting = observer.watch(job_id)
        try:
            outcome = await asyncio.wait_for(waiting, timeout=REQUEST_TIMEOUT_S)
        except TimeoutError:
            observer.forget(job_id)
            phase.outcomes["not-settled"] += 1
            return
        phase.outcomes[outcome.state] += 1
        if outcome.state == "executed":
            phase.seen_ms.append((outcome.seen - scheduled) * 1000)
            last_done = max(last_done, outcome.seen)
            if outcome.result_at is not None:
                at = outcome.result_at
                at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
                wall_scheduled = wall0 + (scheduled - t0)
                phase.recorded_ms.append((at.timestamp() - wall_scheduled) * 1000)

    tasks: list[asyncio.Task[None]] = []
    for i in range(phase.count):
        scheduled = t0 + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    phase.wall_s = last_done - t0
    cpu_after = cpu_of_server()
    phase.client_cpu_s = time.process_time() - client_before
    if cpu_before is not None and cpu_after is not None:
        phase.server_cpu_s = cpu_after - cpu_before
    return phase


# --------------------------------------------------------------------------- the run


def _log_errors(directory: Path) -> dict[str, int]:
    events: Counter[str] = Counter()
    lines = [
        line
        for log in sorted(directory.glob("app*.log"))
        for line in log.read_text(errors="replace").splitlines()
    ]
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip():
                events[f"unstructured:{line.strip()[:80]}"] += 1
            continue
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            # What failed: an exception's type, or the problem code of an answered 5xx.
            kind = entry.get("error") or entry.get("error_type") or entry.get("problem")
            events[f"{entry.get('level')}:{entry.get('event')}:{kind}"] += 1
    return dict(sorted(events.items()))


def _load() -> dict[str, Any]:
    try:
        one, five, _fifteen = os.getloadavg()
    except OSError:
        return {}
    out: dict[str, Any] = {"loadavg_1m": round(one, 2), "loadavg_5m": round(five, 2)}
    with contextlib.suppress(OSError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        out["cpu_pressure_some_avg10"] = float(some.split()[1].split("=")[1])
    return out


async def _run(config: BenchConfig, directory: Path, store: str | None) -> dict[str, Any]:
    ports = [free_port() for _ in range(config.replicas)]
    port = ports[0]
    # The tenant's id is known once seeded: settings without the raise first, to seed.
    settings = _settings(directory, port, store, "")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    platform = Platform.build(settings)
    report: dict[str, Any] = {"config": _config_summary(config), "load_before": _load()}
    try:
        started = time.perf_counter()
        world = await _prepare(platform, config.vehicles)
        report["provisioning_s"] = round(time.perf_counter() - started, 1)
    finally:
        await platform.close()
    fields = _settings_fields(directory, port, world.tenant_id)
    (directory / SETTINGS_FILE).write_text(json.dumps(fields))
    settings = _settings(directory, port, store, world.tenant_id)
    platform = Platform.build(settings)
    try:
        if config.inprocess:
            from fleetward.app import build_app

            app = build_app(settings, platform=platform)
            with contextlib.ExitStack() as stack:
                if config.capture_logs:
                    sink = stack.enter_context((directory / "app.log").open("w"))
                    configure_logging(level=settings.log_level, fmt="json", stream=sink)
                async with inprocess_server(app, port) as server:
                    report.update(await _measure(config, platform, world, [server], directory))
                if config.capture_logs:
                    configure_logging(level=settings.log_level, fmt="json")  # back to stderr
            report["server_log"] = _log_errors(directory)
        else:
            async with replica_servers(directory, ports, store, config.redis_url) as servers:
                report.update(await _measure(config, platform, world, servers, directory))
            report["server_log"] = _log_errors(directory)
    finally:
        await platform.close()
    report["load_after"] = _load()
    return report


def _config_summary(config: BenchConfig) -> dict[str, Any]:
    return {
        "vehicles": config.vehicles,
        "rate": config.rate,
        "seconds": config.seconds,
        "command": config.command,
        "mode": "in-process" if config.inprocess else "server in a child process",
        "replicas": config.replicas,
        "store": "sqlite" if config.database_url is None else "postgresql",
        "poll_ms": config.poll_ms,
        "report_interval_s": config.report_interval_s,
    }


async def _measure(
    config: BenchConfig,
    platform: Platform,
    world: BenchWorld,
    servers: Sequence[Server],
    directory: Path,
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    server = servers[0] if len(servers) == 1 else combined(servers)
    fleet = Fleet(world.credentials, [s.base_url for s in servers], config.report_interval_s)
    observer = Observer(platform.settings.resolved_database_url, config.poll_ms / 1000)
    observer.start()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    cpu = server.cpu if not config.inprocess else process_cpu
    ids = world.vehicle_ids
    parameters = {"cabin_celsius": 21} if config.command == "climate" else {}
    body = {"parameters": parameters}
    run_id = new_id("run").split("_", 1)[-1][:10]
    try:
        report["connect_s"] = round(await fleet.start(), 1)
        if config.freeze_fleet:
            # The simulated fleet (its sessions, keys and buffers) and the client live as long
            # as the run: frozen out of the cyclic collector, whose full passes over them
            # otherwise stalled this load generator (client lag p99 ~150 ms at 20/s, so the
            # steps measured the client, not the server; ~1-4 ms with the freeze). Again if
            # the in-process app froze its start-up already: the fleet came after.
            freeze_live_objects()
        report["fleet_frozen"] = config.freeze_fleet
        async with httpx.AsyncClient(
            base_url=server.base_url, limits=limits, timeout=REQUEST_TIMEOUT_S
        ) as http:

            async def app_phase(name: str, command: str, rate: float, count: int) -> Phase:
                token = _token(platform, world)
                auth = f"Bearer {token}"
                phase = Phase(name, rate, count)
                cmd_body = (
                    {"parameters": {"cabin_celsius": 21}}
                    if command == "climate"
                    else {"parameters": {}}
                )
                return await _open_loop(
                    http,
                    phase,
                    lambda i: _command_url(servers, ids, i, command),
                    lambda i: {"authorization": auth, "idempotency-key": f"{run_id}-{name}-{i}"},
                    cmd_body,
                    observer,
                    cpu,
                )

            if config.idle_seconds > 0:
                # No requests: what the server spends on its own with the fleet connected
                # (the vehicles' periodic reports, the dispatcher's sweep of an empty store).
                report["idle_before_server_cpu_per_s"] = await _idle(cpu, config.idle_seconds)
            warm = await app_phase("warmup", config.command, WARMUP_RATE, config.warmup)
            report["warmup"] = warm.summary()
            if config.bare_seconds > 0:
                report["bare"] = await _bare_phase(
                    config, directory, body, ids, world, platform, http
                )
            # Rising rates first (the maximum), then lock, then the headline rate last: a
            # rate the server cannot sustain leaves a backlog that would skew what follows.
            steps: list[dict[str, Any]] = []
            measured_steps: list[Phase] = []
            best: Phase | None = None
            for rate in config.steps:
                phase = await app_phase(
                    f"step{int(rate)}", config.command, rate, int(rate * config.step_seconds)
                )
                summary = phase.summary()
                summary["sustained"] = phase.sustained()
                summary["p99_within_target"] = phase.within_target()
                steps.append(summary)
                measured_steps.append(phase)
                if not summary["sustained"]:
                    break
                best = phase
                await asyncio.sleep(1.0)  # let the sweep and telemetry settle between steps
            if steps:
                report["steps"] = steps
                report["max_sustained_per_s"] = best.rate if best is not None else None
                within = [s["offered_per_s"] for s in steps if s["p99_within_target"]]
                report["max_per_s_p99_within_100ms"] = max(within) if within else None
            if config.lock_seconds > 0:
                count = max(1, int(config.lock_rate * config.lock_seconds))
                lock = await app_phase("lock", "lock", config.lock_rate, count)
                report["lock"] = lock.summary()
            if config.idle_seconds > 0:
                # The same, with the jobs above in the store (the sweep reads them).
                report["idle_after_server_cpu_per_s"] = await _idle(cpu, config.idle_seconds)
            count = max(1, int(config.rate * config.seconds))
            headline = await app_phase("app", config.command, config.rate, count)
            report["app"] = headline.summary()
            idle = report.get("idle_after_server_cpu_per_s")
            if idle is not None:
                # What one command may cost at the headline rate for the server to keep up
                # on one core, beside its idle load; and what each measured phase cost.
                report["cpu_budget_ms_per_command_at_rate"] = round(
                    1000 * (len(servers) - idle) / config.rate, 3
                )
                for phase, summary in zip(measured_steps, steps, strict=True):
                    summary["server_cpu_ms_per_command_above_idle"] = phase.above_idle_ms(idle)
                report["app"]["server_cpu_ms_per_command_above_idle"] = headline.above_idle_ms(idle)
            bare = report.get("bare")
            # Per server CPU-second, at the highest sustained rate (else the headline's).
            measured = best.summary() if best is not None else report["app"]
            if bare and bare.get("per_cpu_s") and measured.get("per_cpu_s"):
                report["app_per_cpu_s"] = measured["per_cpu_s"]
                report["ratio_per_cpu_s"] = round(measured["per_cpu_s"] / bare["per_cpu_s"], 4)
        # Executed jobs whose effect shows in telemetry (lock) are confirmed by the sweep.
        await asyncio.sleep(2.0)
        report["jobs_by_command_state"] = await observer.states()
    finally:
        await fleet.stop()
        await observer.close()
    report["server_threads_cpu_s"] = server.threads()
    report["vehicles_did"] = fleet.counts()
    report["observer_polls"] = observer.polls
    return report


def _command_url(servers: Sequence[Server], ids: Sequence[str], i: int, command: str) -> str:
    """Request ``i``: the ``i``-th vehicle round robin; with replicas, sent to the one after
    its vehicle's (vehicle n is connected to replica n modulo their count)."""
    n = i % len(ids)
    path = f"/mobile/v1/vehicles/{ids[n]}/commands/{command}"
    if len(servers) == 1:
        return path
    return servers[(n + 1) % len(servers)].base_url + path


async def _idle(cpu: Callable[[], float | None], seconds: float) -> float | None:
    """CPU-seconds per second the server spends while no request is sent."""
    before = cpu()
    await asyncio.sleep(seconds)
    after = cpu()
    return None if before is None or after is None else round((after - before) / seconds, 3)


async def _bare_phase(
    config: BenchConfig,
    directory: Path,
    body: dict[str, Any],
    ids: Sequence[str],
    world: BenchWorld,
    platform: Platform,
    http_app: httpx.AsyncClient,
) -> dict[str, Any]:
    """The ceiling: the same POST answered by a bare FastAPI route with the JSON the real
    route answered, at the same rate, on the same core."""
    sample = await http_app.post(
        f"/mobile/v1/vehicles/{ids[0]}/commands/{config.command}",
        json=body,
        headers={
            "authorization": f"Bearer {_token(platform, world)}",
            "idempotency-key": "bare-sample",
        },
    )
    if sample.status_code != 202:
        raise RuntimeError(f"the sample command answered {sample.status_code}: {sample.text}")
    (directory / BODY_FILE).write_bytes(sample.content)
    port = free_port()
    count = max(1, int(config.rate * config.bare_seconds))
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)

    async def measure(server: Server, cpu: Callable[[], float | None]) -> dict[str, Any]:
        async with httpx.AsyncClient(
            base_url=server.base_url, limits=limits, timeout=REQUEST_TIMEOUT_S
        ) as http:
            url = f"/mobile/v1/vehicles/{ids[0]}/commands/{config.command}"
            warm = Phase("bare-warm", config.rate, min(200, count))
            await _open_loop(http, warm, lambda i: url, lambda i: {}, body, None, cpu)
            phase = Phase("bare", config.rate, count)
            await _open_loop(http, phase, lambda i: url, lambda i: {}, body, None, cpu)
            return phase.summary()

    if config.inprocess:
        async with inprocess_server(bare_app(json.loads(sample.content)), port) as server:
            return await measure(server, process_cpu)
    # Pinned to the first core: with replicas, that of the first.
    core = min(os.sched_getaffinity(0)) if config.replicas > 1 else None
    async with child_server("bare", directory, port, None, core=core) as server:
        return await measure(server, server.cpu)


def run(config: BenchConfig | None = None) -> dict[str, Any]:
    """Provision, serve, connect the fleet and measure; the report (see the module doc)."""
    config = config or BenchConfig()
    with (
        tempfile.TemporaryDirectory(prefix="fleetward-bench-commands-") as name,
        fresh_store(config.database_url) as store,
        pinned(not config.inprocess, config.replicas) as placement,
    ):
        report = asyncio.run(_run(config, Path(name), store))
        report["placement"] = placement
        return report


def main(argv: list[str]) -> None:
    if len(argv) == 5 and argv[1] == "--serve":
        serve(argv[2], Path(argv[3]), int(argv[4]))
        return
    vehicles = int(argv[1]) if len(argv) > 1 else 1000
    seconds = float(argv[2]) if len(argv) > 2 else 20.0
    print(json.dumps(run(BenchConfig(vehicles=vehicles, seconds=seconds)), indent=2))


if __name__ == "__main__":
    main(sys.argv)
