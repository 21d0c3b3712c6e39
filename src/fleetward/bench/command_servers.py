"""The servers of ``fleetward bench commands``: the app (one replica or several) and the bare
ceiling under uvicorn, each in a child process pinned to a core, or in this process; their CPU
read from ``/proc``.

One replica: the child runs on the first core, this process (the vehicles and the client) on
the others. Several: replica ``i`` on core ``i`` modulo the cores, this process unpinned (it
shares them), all replicas on one store and one Redis (the command bus hands a job to the
replica holding its vehicle's session, ``commands/bus.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
from fastapi import FastAPI, Response

from fleetward.api.commands import CommandBody
from fleetward.bench.processes import cpu_seconds, free_port
from fleetward.observability.logging import configure_logging
from fleetward.settings import Settings

HOST: Final = "127.0.0.1"
# How the parent hands the store and Redis to the servers: in the environment, never on a
# command line (``ps`` shows arguments; a URL may carry a password).
STORE_ENV: Final = "FLEETWARD_DATABASE_URL"
REDIS_ENV: Final = "FLEETWARD_REDIS_URL"
SETTINGS_FILE: Final = "bench-settings.json"
BODY_FILE: Final = "body.json"
# The core a child runs on (one replica: the core the parent kept free for it).
_CORE_ENV: Final = "FLEETWARD_BENCH_SERVER_CORE"
# A path: the app server runs under cProfile and writes its statistics there when stopped.
_PROFILE_ENV: Final = "FLEETWARD_BENCH_PROFILE"
READY_TIMEOUT_S: Final = 60.0


@dataclass
class Server:
    base_url: str
    cpu: Callable[[], float | None]
    stop: Callable[[], Any]
    threads: Callable[[], dict[str, float]] = dict


def _threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s main thread (the event loop) and of its other threads (the
    store driver's: aiosqlite runs each connection's calls in a thread of its own)."""
    found: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                raw = (task / "stat").read_text()
                name = "event loop" if task.name == str(pid) else "other threads"
                fields = raw.rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / tick
                found[name] = found.get(name, 0.0) + cpu
    return {name: round(cpu, 2) for name, cpu in sorted(found.items())}


def process_cpu() -> float:
    return time.process_time()


async def _wait_ready(base_url: str, path: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError("the server exited during start-up")
            try:
                if (await http.get(path)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not become ready")


def _spawn(
    kind: str,
    directory: Path,
    port: int,
    database_url: str | None,
    *,
    redis_url: str | None,
    core: int | None,
    log_name: str,
) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if k not in (STORE_ENV, REDIS_ENV)}
    if database_url is not None:
        environment[STORE_ENV] = database_url
    if redis_url is not None:
        environment[REDIS_ENV] = redis_url
    if core is not None:
        environment[_CORE_ENV] = str(core)
    module = "fleetward.bench.commands"
    log = directory / log_name  # a file: a full pipe would stall the server
    with log.open("wb") as sink:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", module, "--serve", kind, str(directory), str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
        )


@asynccontextmanager
async def child_server(
    kind: str,
    directory: Path,
    port: int,
    database_url: str | None,
    *,
    redis_url: str | None = None,
    core: int | None = None,
    log_name: str | None = None,
) -> AsyncIterator[Server]:
    """``kind`` ("app" or "bare") under uvicorn in a child process, on ``core`` (default: the
    core :func:`pinned` kept for it)."""
    process = _spawn(
        kind,
        directory,
        port,
        database_url,
        redis_url=redis_url,
        core=core,
        log_name=log_name or f"{kind}.log",
    )

    def stop() -> None:
        # SIGINT, as ``fleetward serve`` is stopped: uvicorn shuts down cleanly, then
        # re-raises it (a KeyboardInterrupt: the profile, if any, is still written).
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    base = f"http://{HOST}:{port}"
    try:
        await _wait_ready(base, "/readyz" if kind == "app" else "/", lambda: process.poll() is None)
        yield Server(
            base, lambda: cpu_seconds(process.pid), stop, lambda: _threads_cpu(process.pid)
        )
    finally:
        stop()


@asynccontextmanager
async def replica_servers(
    directory: Path,
    ports: Sequence[int],
    database_url: str | None,
    redis_url: str | None,
) -> AsyncIterator[list[Server]]:
    """One app child per port: replica ``i`` on core ``i`` modulo this machine's cores (one
    replica: on the core :func:`pinned` kept for it). Logs ``app.log``, ``app-1.log``..."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for i, port in enumerate(ports):
            core = cores[i % len(cores)] if len(ports) > 1 and cores else None
            servers.append(
                await stack.enter_async_context(
                    child_server(
                        "app",
                        directory,
                        port,
                        database_url,
                        redis_url=redis_url,
                        core=core,
                        log_name="app.log" if i == 0 else f"app-{i}.log",
                    )
                )
            )
        yield servers


def combined(servers: Sequence[Server]) -> Server:
    """The replicas as one server: CPU and threads summed, the first one's address."""

    def cpu() -> float | None:
        each = [s.cpu() for s in servers]
        return None if any(c is None for c in each) else sum(c for c in each if c is not None)

    def threads() -> dict[str, float]:
        total: dict[str, float] = {}
        for server in servers:
            for name, seconds in server.threads().items():
                total[name] = round(total.get(name, 0.0) + seconds, 2)
        return total

    return Server(servers[0].base_url, cpu, lambda: None, threads)


@asynccontextmanager
async def inprocess_server(app: Any, port: int) -> AsyncIterator[Server]:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=HOST,
            port=port,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws_max_size=256 * 1024,
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            raise RuntimeError("the in-process server stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield Server(f"http://{HOST}:{port}", lambda: None, lambda: None)
    finally:
        server.should_exit = True
        await serving


def bare_app(body: Any) -> Any:
    bare = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @bare.post("/mobile/v1/vehicles/{vehicle_id}/commands/{name}", status_code=202)
    async def create(vehicle_id: str, name: str, payload: CommandBody, response: Response) -> Any:
        response.headers["Location"] = f"/mobile/v1/vehicles/{vehicle_id}/commands/{body['id']}"
        return body

    @bare.get("/")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    return bare


@contextmanager
def pinned(enabled: bool, replicas: int = 1) -> Iterator[str]:
    """One replica: this process on every core but the first (the server's) while the run
    lasts. Several: nothing pinned here (each replica pins itself, :func:`replica_servers`)."""
    if not enabled or not hasattr(os, "sched_getaffinity"):
        yield "not pinned (one process: server, vehicles and client share its core)"
        return
    before = os.sched_getaffinity(0)
    cores = sorted(before)
    if replicas > 1:
        on = [cores[i % len(cores)] for i in range(replicas)]
        yield f"{replicas} replicas on cores {on}, load generator and vehicles unpinned"
        return
    if len(cores) < 2:
        yield f"one core ({cores[0]}): client and server share it"
        return
    os.environ[_CORE_ENV] = str(cores[0])
    os.sched_setaffinity(0, set(cores[1:]))
    try:
        yield f"server on core {cores[0]}, load generator and vehicles on {cores[1:]}"
    finally:
        os.sched_setaffinity(0, before)
        os.environ.pop(_CORE_ENV, None)


# --------------------------------------------------------------------------- the child


def _pin_to_server_core() -> None:
    core = os.environ.get(_CORE_ENV)
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(core)})


def serve(kind: str, directory: Path, port: int) -> None:
    """Serve ``kind`` ("app" or "bare") with one uvicorn worker (the child process)."""
    import uvicorn

    _pin_to_server_core()
    if kind == "app":
        from fleetward.app import build_app

        fields = json.loads((directory / SETTINGS_FILE).read_text())
        # The settings' port is the first replica's for every replica: it names the token
        # issuer, which replicas of one deployment share (a public URL in production).
        settings = Settings(
            **fields,
            database_url=os.environ.get(STORE_ENV),
            redis_url=os.environ.get(REDIS_ENV),
        )
        configure_logging(level=settings.log_level, fmt=settings.log_format)
        app: FastAPI = build_app(settings)
    else:
        app = bare_app(json.loads((directory / BODY_FILE).read_text()))
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        workers=1,
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        ws_max_size=256 * 1024,
    )
    profile = os.environ.get(_PROFILE_ENV)
    if not profile:
        # Stopped with SIGINT, which uvicorn re-raises once it has shut down cleanly.
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run()
        return
    import cProfile

    # The event loop's thread only (the store driver's threads are not seen): for shares.
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run()
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


__all__ = [
    "BODY_FILE",
    "HOST",
    "SETTINGS_FILE",
    "Server",
    "bare_app",
    "child_server",
    "combined",
    "free_port",
    "inprocess_server",
    "pinned",
    "process_cpu",
    "replica_servers",
    "serve",
]
