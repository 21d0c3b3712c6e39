"""``fleetward sim --vehicles N [--target URL] [--duration SECONDS] [--transport
websocket|mqtt]``: run a simulated fleet against a running platform.

Provisioning happens on the platform host, like ``fleetward devices enrol`` (the store named
by the settings, acting as ``sim:provisioner``); the vehicles then enrol over HTTP at
``--target`` and report over the public protocol: the gateway's WebSocket there, or the MQTT
broker's device listener (``--broker-host``/``--broker-port``, authenticated with
``--broker-ca``). Bounded: it stops after ``--duration`` seconds. See docs/simulator.md.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import httpx
import typer

from fleetward.cli.runtime import load_or_exit
from fleetward.core.clock import SystemClock
from fleetward.demo.world import VEHICLES
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.sim.driver import DriveConfig
from fleetward.sim.faults import Fault, FaultAssignment
from fleetward.sim.mqtt import MqttSimTransport
from fleetward.sim.provision import provision_fleet
from fleetward.sim.runner import FleetMember, FleetReport, FleetRunner
from fleetward.sim.transport import Endpoint, SimTransport, TransportKind, WebSocketTransport

FAULTS_HELP = (
    "faulty vehicles, e.g. 'tamper=2,replay,offline=3' or 'all' (one of each that the"
    " transport allows); faults: " + ", ".join(f.value for f in Fault)
)
DEFAULT_BROKER_PORT = 8883


def sim(
    vehicles: Annotated[
        int, typer.Option(min=1, max=10_000, help="fleet size (the demo world has 10)")
    ] = len(VEHICLES),
    target: Annotated[
        str | None,
        typer.Option(
            "--target", "--url", help="platform base URL (default: the settings' base URL)"
        ),
    ] = None,
    duration: Annotated[
        float, typer.Option(min=0.1, max=86_400, help="stop after this many seconds")
    ] = 60.0,
    transport: Annotated[
        TransportKind, typer.Option(help="how the vehicles reach the gateway")
    ] = TransportKind.WEBSOCKET,
    server_id: Annotated[
        str | None,
        typer.Option(help="what the server calls itself (default: the settings' base URL)"),
    ] = None,
    broker_host: Annotated[
        str, typer.Option(help="mqtt: the broker's device listener host")
    ] = "127.0.0.1",
    broker_port: Annotated[
        int, typer.Option(min=1, max=65535, help="mqtt: the broker's device listener port")
    ] = DEFAULT_BROKER_PORT,
    broker_ca: Annotated[
        Path | None,
        typer.Option(
            help="mqtt: the CA certificate (PEM) that signed the broker's certificate"
            " (default: the settings' mqtt_server_ca)"
        ),
    ] = None,
    messages: Annotated[
        int | None, typer.Option(min=1, help="stop each vehicle after this many messages")
    ] = None,
    interval: Annotated[
        float, typer.Option(min=0.0, help="seconds between a vehicle's messages (0: flat out)")
    ] = 1.0,
    faults: Annotated[str, typer.Option(help=FAULTS_HELP)] = "",
    fault_every: Annotated[
        int, typer.Option(min=2, help="a faulty vehicle commits its fault every N-th message")
    ] = 3,
    connect_concurrency: Annotated[
        int, typer.Option(min=1, max=10_000, help="handshakes in flight at once")
    ] = 64,
    seed: Annotated[int, typer.Option(help="seed of the vehicles' routes and behaviour")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Simulated vehicles, faults included: provision (or reuse) devices for N vehicles and
    drive them over the WebSocket or
    through the MQTT broker; prints what the server answered (accepted, rejected by reason,
    faults answered as documented, ack latency). Stops after --duration seconds (or
    --messages each), whichever comes first."""
    settings = load_or_exit()
    try:
        assignment = _assignment(faults, transport)
        assignment.plan(vehicles)  # refuses more faulty vehicles than the fleet has
        config = DriveConfig(messages=messages, interval_s=interval, fault_every=fault_every)
        base = (target or settings.base_url).rstrip("/")
        endpoint = Endpoint(base, server_id or settings.base_url)
        link = _transport(transport, endpoint, settings, broker_host, broker_port, broker_ca)
    except ValueError as exc:
        typer.echo(f"fleetward sim: {exc}", err=True)
        raise typer.Exit(2) from None
    report = asyncio.run(
        _run(
            settings,
            endpoint,
            link,
            config,
            assignment,
            vehicles,
            duration=duration,
            concurrency=connect_concurrency,
            seed=seed,
        )
    )
    summary = report.summary()
    if as_json:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print(summary)
    if report.total.undocumented:
        raise typer.Exit(1)  # the platform answered a fault otherwise than documented


def _assignment(faults: str, transport: TransportKind) -> FaultAssignment:
    # Over MQTT one device holds one broker connection: no clone (docs/simulator.md).
    allowed = [f for f in Fault if transport is TransportKind.WEBSOCKET or f is not Fault.CLONE]
    if faults.strip() == "all":
        return FaultAssignment.each(allowed)
    assignment = FaultAssignment.parse(faults)
    refused = [fault.value for fault in assignment.counts if fault not in allowed]
    if refused:
        raise ValueError(f"not over {transport.value}: {', '.join(refused)}")
    return assignment


def _transport(
    kind: TransportKind,
    endpoint: Endpoint,
    settings: Settings,
    broker_host: str,
    broker_port: int,
    broker_ca: Path | None,
) -> SimTransport:
    if kind is TransportKind.WEBSOCKET:
        return WebSocketTransport(endpoint)
    ca = broker_ca or settings.mqtt_server_ca
    if ca is None:
        raise ValueError("--transport mqtt needs --broker-ca (or the mqtt_server_ca setting)")
    if not ca.is_file():
        raise ValueError(f"no broker CA certificate at {ca}")
    return MqttSimTransport(
        broker_host,
        broker_port,
        server_id=endpoint.server_id,
        broker_ca=ca.resolve(),
        credentials_dir=settings.data_dir / "sim" / "mqtt",
    )


async def _run(
    settings: Settings,
    endpoint: Endpoint,
    transport: SimTransport,
    config: DriveConfig,
    assignment: FaultAssignment,
    vehicles: int,
    *,
    duration: float,
    concurrency: int,
    seed: int,
) -> FleetReport:
    platform = Platform.build(settings)
    try:
        # Enrolment is HTTP on either transport (POST /gateway/v1/enrol).
        async with httpx.AsyncClient(base_url=endpoint.base_url, timeout=30.0) as http:
            provisioned = await provision_fleet(platform, http, vehicles)
    finally:
        await platform.close()
    if provisioned.skipped:
        typer.echo(
            f"skipped (a device the simulator did not create): {', '.join(provisioned.skipped)}",
            err=True,
        )
    if not provisioned.devices:
        typer.echo("fleetward sim: no vehicle to simulate", err=True)
        raise typer.Exit(1)
    try:
        plan = assignment.plan(len(provisioned.devices))
    except ValueError as exc:  # vehicles were skipped: fewer than the faults need
        typer.echo(f"fleetward sim: {exc}", err=True)
        raise typer.Exit(1) from None
    members = [
        FleetMember(device.label, device.credentials, fault)
        for device, fault in zip(provisioned.devices, plan, strict=True)
    ]
    typer.echo(
        f"{len(members)} vehicles ({provisioned.enrolled} enrolled, {provisioned.reused} reused)"
        f" -> {transport.describe()}",
        err=True,
    )
    runner = FleetRunner(
        members,
        transport,
        config,
        clock=SystemClock().now,
        duration_s=duration,
        connect_concurrency=concurrency,
        seed=seed,
    )
    return await runner.run()


def _print(summary: dict[str, object]) -> None:
    for key, value in summary.items():
        typer.echo(f"{key:>24}: {json.dumps(value, sort_keys=True)}")
