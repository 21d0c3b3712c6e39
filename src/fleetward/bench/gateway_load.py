"""Many vehicles connected to one gateway process (``python -m fleetward.bench.gateway_load``).

The issue's target: 2,000 simulated vehicles connected to one ``fleetward serve`` on the
embedded store without errors. This benchmark

1. makes a fresh data directory (SQLite store, device CA, data key) and migrates it;
2. provisions one device identity per vehicle in this process, through the provisioning
   services (enrolment, CSR check, certificate) in chunked transactions, exactly what
   ``POST /gateway/v1/enrol`` runs minus HTTP (over HTTP, 2,000 enrolments take minutes);
3. starts ``fleetward serve`` on that directory in a child process (one gateway process);
4. drives the fleet with the simulator's runner as a library (:class:`FleetRunner` over the
   WebSocket transport): every vehicle connects (``connect_concurrency`` handshakes in
   flight), then reports every ``interval`` seconds, each waiting for its ack, for
   ``seconds``;
5. stops the server and reports what the vehicles saw (sessions opened, how sessions were
   refused or ended, replies other than accepted, ack and handshake latency, messages per
   second), the server's CPU seconds, and the error events in the server's log by name.

Errors are anything but a clean run: a handshake closed by the server, a rejected message,
a session ended by the server, or an error event in the server's log. Bounded: the run
stops after ``seconds`` (default 30); provisioning 2,000 devices takes ~10-30 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
from sqlalchemy import insert

from fleetward.audit.recorder import Actor
from fleetward.bench.processes import cpu_seconds, free_port
from fleetward.core.ids import new_id
from fleetward.devices.ca import load_device_ca
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway.device_client import DeviceCredentials, build_csr, generate_key
from fleetward.identity.models import Tenant, TenantKind
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.sim.driver import DriveConfig
from fleetward.sim.runner import FleetMember, FleetRunner
from fleetward.sim.transport import Endpoint, WebSocketTransport
from fleetward.store.migrate import upgrade
from fleetward.vehicles.models import Vehicle

PROVISIONER: Final = Actor.system("bench:gateway-load")
DEFAULT_VEHICLES: Final = 2000
DEFAULT_SECONDS: Final = 30.0
CHUNK: Final = 250
READY_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 20.0


def _environment(directory: Path, port: int) -> dict[str, str]:
    return {
        "FLEETWARD_DATA_DIR": str(directory),
        "FLEETWARD_HOST": "127.0.0.1",
        "FLEETWARD_PORT": str(port),
        "FLEETWARD_LOG_LEVEL": "WARNING",
        "FLEETWARD_LOG_FORMAT": "json",
    }


async def _provision(settings: Settings, vehicles: int) -> list[FleetMember]:
    platform = Platform.build(settings)
    try:
        await upgrade(platform.engine)
        now = datetime.now(UTC)
        tenant_id = new_id("ten")
        ids = [new_id("veh") for _ in range(vehicles)]
        async with platform.engine.begin() as connection:
            # Fixture rows, like the telemetry benchmark's: the vehicles are not under test.
            await connection.execute(
                insert(Tenant),
                [
                    {
                        "id": tenant_id,
                        "slug": "gateway-load",
                        "name": "Gateway load",
                        "kind": TenantKind.FLEET,
                        "created_at": now,
                        "disabled_at": None,
                    }
                ],
            )
            await connection.execute(
                insert(Vehicle),
                [
                    {
                        "id": vid,
                        "vin": f"GWL{n:014d}",
                        "label": f"GWL-{n:05d}",
                        "model": "Bench",
                        "region": "NA",
                        "tenant_id": tenant_id,
                        "created_at": now,
                    }
                    for n, vid in enumerate(ids)
                ],
            )
        ca = load_device_ca(settings, platform.identity.data_key, platform.clock)
        members: list[FleetMember] = []
        for offset in range(0, vehicles, CHUNK):
            async with platform.services() as (uow, ctx):
                provisioning = Provisioning(ctx)
                for vid in ids[offset : offset + CHUNK]:
                    vehicle = await ctx.session.get(Vehicle, vid)
                    if vehicle is None:
                        raise RuntimeError("a vehicle just inserted is missing")
                    grant = await provisioning.create_enrolment(vehicle, actor=PROVISIONER)
                    key = generate_key()
                    csr = build_csr(key, device_id=grant.device_id, vehicle_id=vid)
                    issued = await provisioning.enrol(grant.token, csr, ca)
                    credentials = DeviceCredentials.from_pem(
                        key,
                        issued.certificate_pem,
                        issued.ca_certificate_pem,
                        device_id=issued.device_id,
                        vehicle_id=vid,
                    )
                    members.append(FleetMember(vehicle.label, credentials))
                await uow.commit()
        return members
    finally:
        await platform.close()


def _cpu_seconds(pid: int) -> float:
    """The server's CPU seconds so far (Linux ``/proc``: the benchmark needs it)."""
    seconds = cpu_seconds(pid)
    if seconds is None:
        raise RuntimeError("the server's CPU time cannot be read (no /proc, or it exited)")
    return seconds


async def _wait_ready(base_url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(base_url=base_url, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode}")
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def _log_errors(log: Path) -> dict[str, int]:
    events: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
            events[f"{entry.get('event')}:{entry.get('error') or entry.get('error_type')}"] += 1
    return dict(sorted(events.items()))


async def _drive(
    members: list[FleetMember],
    base_url: str,
    server_id: str,
    *,
    seconds: float,
    interval: float,
    connect_concurrency: int,
) -> dict[str, Any]:
    runner = FleetRunner(
        members,
        WebSocketTransport(Endpoint(base_url, server_id)),
        DriveConfig(messages=None, interval_s=interval),
        clock=lambda: datetime.now(UTC),
        duration_s=seconds,
        connect_concurrency=connect_concurrency,
    )
    report = await runner.run()
    return report.summary()


def run(
    vehicles: int = DEFAULT_VEHICLES,
    seconds: float = DEFAULT_SECONDS,
    *,
    interval: float = 1.0,
    connect_concurrency: int = 64,
) -> dict[str, Any]:
    """Provision ``vehicles`` devices, serve, drive them for ``seconds``; the report."""
    if not (1 <= vehicles <= 10_000 and 1 <= seconds <= 600 and interval >= 0):
        raise ValueError("need 1..10000 vehicles, 1..600 seconds and a non-negative interval")
    with tempfile.TemporaryDirectory(prefix="fleetward-gwload-") as raw:
        directory = Path(raw)
        port = free_port()
        environment = _environment(directory, port)
        settings = Settings(data_dir=directory, host="127.0.0.1", port=port)
        started = time.perf_counter()
        members = asyncio.run(_provision(settings, vehicles))
        provisioned_s = time.perf_counter() - started
        log = directory / "server.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [sys.executable, "-m", "fleetward", "serve"],
                env={**os.environ, **environment},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            try:
                base_url = settings.base_url
                asyncio.run(_wait_ready(base_url, server))
                cpu_before = _cpu_seconds(server.pid)
                summary = asyncio.run(
                    _drive(
                        members,
                        base_url,
                        settings.base_url,
                        seconds=seconds,
                        interval=interval,
                        connect_concurrency=connect_concurrency,
                    )
                )
                server_cpu = _cpu_seconds(server.pid) - cpu_before
            finally:
                server.send_signal(signal.SIGINT)
                try:
                    server.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
        errors = _log_errors(log)
    clean = (
        summary["sessions_opened"] >= vehicles
        and not summary["session_ends"]
        and not summary["rejected"]
        and not errors
    )
    return {
        "vehicles": vehicles,
        "provisioning_s": round(provisioned_s, 1),
        "server_cpu_s": round(server_cpu, 2),
        "server_log_errors": errors,
        "clean": clean,
        **summary,
    }


def main(argv: list[str]) -> None:
    vehicles = int(argv[1]) if len(argv) > 1 else DEFAULT_VEHICLES
    seconds = float(argv[2]) if len(argv) > 2 else DEFAULT_SECONDS
    print(json.dumps(run(vehicles, seconds), indent=2, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv)
