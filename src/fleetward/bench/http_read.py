"""An authorized object read over HTTP, as a ratio to a bare FastAPI route in the same run.

Two servers, each uvicorn with one worker in a process of its own, pinned to one core when the
machine has more than one (the client runs on the others):

a. ``bare``: a FastAPI app with one route, ``GET /mobile/v1/vehicles/{id}/status``, returning
   the JSON the real route answered (no authentication, no store): the ceiling;
b. ``app``: :func:`fleetward.app.build_app` over a seeded demo world, asked as alice for
   ALICE-1 with a real access token: token validation (the verified-token cache on,
   revocation checked), the request's quota charged (the per-user limit raised for this
   one-person load), the PDP reading relationships from the store, the decision's audit
   record, the status read, the commit. Any answer but 200 is counted as a failure.

The store is SQLite in a temporary directory, or with ``database_url`` (a PostgreSQL URL, as
``FLEETWARD_DATABASE_URL`` takes it) a fresh database created on that server for the run
(``CREATE DATABASE``) and dropped after it, whatever happens; the database the URL names is
only used to create and drop it. Either way the store is migrated and the demo world seeded.

An async httpx client sends ``requests`` requests per round with ``concurrency`` in flight,
alternating bare and app rounds (b a b a ...) so that load drifting during the run hits both.
Figures: requests per second (wall clock), p50/p99 latency seen by the client, and requests
per CPU-second of the server process (from ``/proc``; independent of how fast the client is:
an httpx client on a shared machine can be the limit for the bare route). The ratios
``app / bare`` are the figures to compare across machines.
Run: ``python -m fleetward.bench.http_read [requests [database_url]]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import httpx
from sqlalchemy import make_url, select
from sqlalchemy.ext.asyncio import create_async_engine

from fleetward.authz.permissions import Permission
from fleetward.bench.processes import cpu_seconds, free_port
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.models import Tenant, User
from fleetward.settings import Settings

_HOST: Final = "127.0.0.1"
# How the parent hands the store to the servers: in the environment, never on a command line
# (``ps`` shows arguments; a URL may carry a password).
_STORE_ENV: Final = "FLEETWARD_DATABASE_URL"
_POSTGRES_SCHEMES: Final = ("postgresql://", "postgresql+asyncpg://", "postgres://")
_PATH: Final = "/mobile/v1/vehicles/{}/status"
_WARMUP: Final = 200
_START_TIMEOUT: Final = 60.0


def _settings(directory: Path, port: int, database_url: str | None = None) -> Settings:
    # The port is part of the token issuer (the base URL): the same on both sides. The store
    # is always given (None: SQLite in ``directory``), so a FLEETWARD_DATABASE_URL in the
    # caller's environment can never point the benchmark at a real database.
    return Settings(
        data_dir=directory / "var",
        database_url=database_url,
        host=_HOST,
        port=port,
        password_hash_memory_kib=19_456,
        password_hash_time_cost=2,
        # One person reads thousands of times a second here: the per-user default (600
        # objects a minute) would refuse almost every read. The quota check still runs on
        # every request (against the user, client, tenant and platform buckets).
        quota_user_per_minute=120_000,
    )


def postgres_server(database_url: str) -> str:
    """The asyncpg URL of the server ``database_url`` names; anything but PostgreSQL is
    refused (SQLite is the default: the benchmark never writes into a given SQLite file)."""
    if not database_url.startswith(_POSTGRES_SCHEMES):
        raise ValueError("database_url must be a postgresql:// URL (omit it for SQLite)")
    return Settings(database_url=database_url).resolved_database_url


async def _admin(server: str, statement: str) -> None:
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@contextmanager
def _store(database_url: str | None) -> Iterator[str | None]:
    """The store of one run: None (SQLite in the run's directory), or the URL of a fresh
    PostgreSQL database on ``database_url``'s server, dropped when the run ends."""
    if database_url is None:
        yield None
        return
    server = postgres_server(database_url)
    name = f"fleetward_bench_{secrets.token_hex(6)}"  # [a-z0-9_]: safe to quote as is
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _prepare(directory: Path, port: int, database_url: str | None = None) -> tuple[str, str]:
    """Migrate and seed the demo world; (ALICE-1's id, an access token for alice)."""
    from fleetward.cli.runtime import migrate_store
    from fleetward.demo.world import seed_demo_world
    from fleetward.platform import Platform
    from fleetward.vehicles.models import Vehicle

    settings = _settings(directory, port, database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await migrate_store(settings)
    platform = Platform.build(settings)
    try:
        async with platform.services() as (uow, ctx):
            await seed_demo_world(ctx, platform.passwords, data_key=platform.identity.data_key)
            await uow.commit()
        async with platform.sessions() as session:
            alice = await session.scalar(select(User).where(User.username == "alice"))
            home = await session.scalar(select(Tenant).where(Tenant.slug == "consumer"))
            car = await session.scalar(select(Vehicle).where(Vehicle.label == "ALICE-1"))
        if alice is None or home is None or car is None:
            raise RuntimeError("the demo world has no alice, consumer tenant or ALICE-1")
        now = platform.clock.now()
        token = platform.identity.tokens.issue(
            subject=alice.id,
            client_id=f"cli_{Surface.MOBILE.value}",
            tenant=home.id,
            surface=Surface.MOBILE,
            scopes=[Permission.VEHICLE_READ_STATUS.value],
            auth_time=now - timedelta(seconds=30),
            acr=Acr.MFA.value,
            amr=["pwd", "otp"],
            token_family=None,
            subject_type="user",
        ).token
        return car.id, token
    finally:
        await platform.close()


@contextmanager
def _server(
    kind: str, directory: Path, port: int, database_url: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "fleetward.bench.http_read", "--serve", kind]
    log = directory / f"{kind}.log"  # a file, not a pipe: a full pipe would stall the server
    environment = {k: v for k, v in os.environ.items() if k != _STORE_ENV}
    if database_url is not None:
        environment[_STORE_ENV] = database_url
    with log.open("wb") as errors:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*command, str(directory), str(port)],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=environment,
        )
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the {kind} server exited early: {tail}")
            try:
                with socket.create_connection((_HOST, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the {kind} server did not start in time") from None
                time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _round(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], count: int, concurrency: int
) -> tuple[float, list[int], int]:
    """(wall seconds, latencies in ns, non-200 answers) of ``count`` requests."""
    latencies: list[int] = []
    failures = 0
    remaining = count

    async def worker() -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter_ns()
            response = await client.get(url, headers=headers)
            latencies.append(time.perf_counter_ns() - start)
            if response.status_code != 200:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, failures


async def _drive(
    targets: dict[str, tuple[str, dict[str, str], int]],
    requests: int,
    concurrency: int,
    rounds: int,
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    wall = dict.fromkeys(targets, 0.0)
    cpu: dict[str, float | None] = dict.fromkeys(targets, 0.0)
    samples: dict[str, list[int]] = {name: [] for name in targets}
    failures = dict.fromkeys(targets, 0)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        for url, headers, _ in targets.values():
            await _round(client, url, headers, min(_WARMUP, requests), concurrency)
        for _ in range(rounds):
            for name, (url, headers, pid) in targets.items():
                before = cpu_seconds(pid)
                seconds, latencies, failed = await _round(
                    client, url, headers, requests, concurrency
                )
                after = cpu_seconds(pid)
                wall[name] += seconds
                samples[name].extend(latencies)
                failures[name] += failed
                spent = cpu[name]
                cpu[name] = (
                    None
                    if spent is None or before is None or after is None
                    else (spent + after - before)
                )
    result: dict[str, float] = {}
    for name in targets:
        ordered = sorted(samples[name])
        result[f"{name}_per_s"] = len(ordered) / wall[name]
        result[f"{name}_p50_ms"] = statistics.median(ordered) / 1e6
        result[f"{name}_p99_ms"] = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] / 1e6
        result[f"{name}_failures"] = float(failures[name])
        spent = cpu[name]
        if spent:
            result[f"{name}_per_cpu_s"] = len(ordered) / spent
    result["ratio_per_s"] = result["app_per_s"] / result["bare_per_s"]
    if "app_per_cpu_s" in result and "bare_per_cpu_s" in result:
        result["ratio_per_cpu_s"] = result["app_per_cpu_s"] / result["bare_per_cpu_s"]
    result["requests_per_round"] = float(requests)
    result["rounds"] = float(rounds)
    result["concurrency"] = float(concurrency)
    return result


def run(
    requests: int = 2000,
    *,
    concurrency: int = 16,
    rounds: int = 3,
    database_url: str | None = None,
) -> dict[str, float]:
    """Measure (a) and (b); rates per second, p50/p99 in milliseconds. The app's answers must
    all be 200 (``app_failures`` counts the others; a benchmark of refusals is worthless).
    ``database_url``: a PostgreSQL server to run the app's store on (a fresh database, dropped
    after the run); None: SQLite in a temporary directory."""
    with (
        tempfile.TemporaryDirectory(prefix="fleetward-http-read-") as name,
        _store(database_url) as store,
    ):
        directory = Path(name)
        app_port, bare_port = free_port(), free_port()
        vehicle_id, token = asyncio.run(_prepare(directory, app_port, store))
        path = _PATH.format(vehicle_id)
        auth = {"authorization": f"Bearer {token}"}
        with _server("app", directory, app_port, store) as app_server:
            answer = httpx.get(f"http://{_HOST}:{app_port}{path}", headers=auth, timeout=30.0)
            if answer.status_code != 200:
                raise RuntimeError(f"the authorized read answered {answer.status_code}")
            (directory / "body.json").write_bytes(answer.content)
            with _server("bare", directory, bare_port) as bare_server:
                targets = {
                    "bare": (f"http://{_HOST}:{bare_port}{path}", {}, bare_server.pid),
                    "app": (f"http://{_HOST}:{app_port}{path}", auth, app_server.pid),
                }
                return asyncio.run(_drive(targets, requests, concurrency, rounds))


# --------------------------------------------------------------------------- the servers


def _pin_to_one_core() -> None:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[0]})


def _bare_app(body: Any) -> Any:
    from fastapi import FastAPI

    bare = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @bare.get("/mobile/v1/vehicles/{vehicle_id}/status")
    async def status(vehicle_id: str) -> Any:
        return body

    return bare


def serve(kind: str, directory: Path, port: int) -> None:
    """Serve ``kind`` ("app" or "bare") with one uvicorn worker (the child process)."""
    import uvicorn

    from fleetward.app import build_app

    _pin_to_one_core()
    if kind == "app":
        app = build_app(_settings(directory, port, os.environ.get(_STORE_ENV)))
    else:
        app = _bare_app(json.loads((directory / "body.json").read_text()))
    config = uvicorn.Config(
        app,
        host=_HOST,
        port=port,
        workers=1,
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


def main(argv: list[str]) -> None:
    if len(argv) == 5 and argv[1] == "--serve":
        serve(argv[2], Path(argv[3]), int(argv[4]))
        return
    requests = int(argv[1]) if len(argv) > 1 else 2000
    database_url = argv[2] if len(argv) > 2 else None
    for key, value in run(requests, database_url=database_url).items():
        print(f"{key:24} {value:14.4f}")


if __name__ == "__main__":
    main(sys.argv)
