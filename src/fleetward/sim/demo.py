"""A simulated fleet for ``fleetward demo``: the demo world's vehicles report to the platform
served in the same process, from the moment the server is up until it stops.

The fleet is provisioned as ``fleetward sim`` provisions one (``provision``), reusing the
device identities of earlier runs. Every vehicle is clean: the demo's data is what the cast
(docs/demo-world.md) reads. Faults are for ``fleetward sim --faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Final

import httpx
import uvicorn

from fleetward.demo.world import VEHICLES
from fleetward.observability.logging import get_logger
from fleetward.platform import Platform
from fleetward.sim.driver import DriveConfig
from fleetward.sim.provision import provision_fleet
from fleetward.sim.runner import FleetMember, FleetRunner
from fleetward.sim.transport import Endpoint, WebSocketTransport

_log = get_logger("fleetward.sim")

DEMO_CONFIG: Final = DriveConfig(messages=None, interval_s=2.0, step_s=2.0)
GARAGED: Final = "ALICE-1"
# A demo is stopped by its user; the fleet also stops by itself after this long.
DEMO_MAX_DURATION_S: Final = 12 * 3600.0
PROGRESS_EVERY_S: Final = 30.0
_START_POLL_S: Final = 0.05


async def serve_with_fleet(
    server: uvicorn.Server, platform: Platform, sockets: list[socket.socket] | None = None
) -> None:
    """Serve (on ``sockets`` when given, bound by the caller) until the server stops;
    meanwhile run the demo fleet against it."""
    serving = asyncio.create_task(server.serve(sockets=sockets))
    while not server.started:
        if serving.done():
            await serving  # start-up failed: its error, not a hang
            return
        await asyncio.sleep(_START_POLL_S)
    fleet = asyncio.create_task(_run_fleet(platform))
    try:
        await serving
    finally:
        fleet.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fleet


async def _run_fleet(platform: Platform) -> None:
    settings = platform.settings
    # Connect to this process's own listener; the server still names itself by base_url.
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104 - compared, not bound
    local = f"http://{host}:{settings.port}"
    try:
        async with httpx.AsyncClient(base_url=local, timeout=30.0) as http:
            provisioned = await provision_fleet(platform, http, len(VEHICLES))
    except Exception as exc:  # the platform keeps serving without a fleet
        _log.error("sim.provisioning_failed", error=type(exc).__name__)
        return
    # ALICE-1 is parked at home (so that alice can unlock it, warm it up, charge it); the
    # rest of the fleet drives its loop.
    members = [
        FleetMember(device.label, device.credentials, garaged=device.label == GARAGED)
        for device in provisioned.devices
    ]
    if not members:
        _log.warning("sim.no_vehicles", skipped=len(provisioned.skipped))
        return
    runner = FleetRunner(
        members,
        WebSocketTransport(Endpoint(local, settings.base_url)),
        DEMO_CONFIG,
        clock=platform.clock.now,
        duration_s=DEMO_MAX_DURATION_S,
    )
    _log.info(
        "sim.fleet_started",
        vehicles=len(members),
        enrolled=provisioned.enrolled,
        reused=provisioned.reused,
        skipped=list(provisioned.skipped),
    )
    progress = asyncio.create_task(_progress(runner))
    try:
        report = await runner.run()
    finally:
        progress.cancel()
    _log.info("sim.fleet_stopped", **report.summary())


async def _progress(runner: FleetRunner) -> None:
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        total = runner.live_total()
        _log.info(
            "sim.fleet_reporting",
            messages=total.messages,
            accepted=total.accepted,
            sessions=total.sessions_opened,
        )
