"""``fleetward bench``: benchmarks as ratios to a ceiling measured in the same run."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fleetward.bench import (
    authz,
    blast_radius,
    commands,
    gateway_load,
    http_read,
    quotas,
    telemetry,
    tokens,
)

app = typer.Typer(no_args_is_help=True, help="benchmarks (never part of make test)")


def _postgres_only(value: str | None) -> str | None:
    """``--database-url``: a PostgreSQL server, or None (SQLite in a temporary directory)."""
    if value is not None:
        try:
            http_read.postgres_server(value)
        except ValueError as exc:  # not a PostgreSQL URL: never a store to migrate and seed
            raise typer.BadParameter(str(exc)) from None
    return value


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="a PostgreSQL server (postgresql://user@host:port/db, as FLEETWARD_DATABASE_URL):"
        " the store is a fresh database there, dropped after the run;"
        " default: SQLite in a temporary directory",
        show_default=False,
        callback=_postgres_only,
    ),
]


@app.command("tokens")
def tokens_command(
    seconds: Annotated[float, typer.Option(min=0.2, max=60, help="seconds per measurement")] = 2.0,
) -> None:
    """Access token validation vs the bare ES256 verification of the same token."""
    typer.echo(json.dumps(tokens.run(seconds), indent=2, sort_keys=True))


@app.command("authz")
def authz_command(
    seconds: Annotated[float, typer.Option(min=0.2, max=60, help="seconds per measurement")] = 2.0,
) -> None:
    """PDP decisions (with entity construction) vs bare Cedar evaluation."""
    typer.echo(json.dumps(authz.run(seconds), indent=2, sort_keys=True, default=str))


@app.command("telemetry")
def telemetry_command(
    seconds: Annotated[float, typer.Option(min=0.2, max=60, help="seconds per measurement")] = 3.0,
    history: Annotated[
        int, typer.Option(min=0, max=10_000_000, help="messages stored before measuring")
    ] = telemetry.DEFAULT_HISTORY,
) -> None:
    """The ingest pipeline vs the bare ceiling (MAC + decode + batched insert)."""
    typer.echo(json.dumps(telemetry.run(seconds, history), indent=2, sort_keys=True, default=str))


@app.command("http-read")
def http_read_command(
    requests: Annotated[int, typer.Option(min=10, max=100_000, help="requests per round")] = 2000,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="requests in flight")] = 16,
    rounds: Annotated[int, typer.Option(min=1, max=20, help="rounds per server")] = 3,
    database_url: DatabaseUrl = None,
) -> None:
    """An authorized object read over HTTP vs a bare FastAPI route (one uvicorn worker each)."""
    result = http_read.run(
        requests, concurrency=concurrency, rounds=rounds, database_url=database_url
    )
    store = "sqlite" if database_url is None else "postgresql"
    typer.echo(json.dumps({**result, "store": store}, indent=2, sort_keys=True, default=str))


@app.command("gateway-load")
def gateway_load_command(
    vehicles: Annotated[int, typer.Option(min=1, max=10_000, help="simulated vehicles")] = 2000,
    seconds: Annotated[float, typer.Option(min=1, max=600, help="seconds of traffic")] = 30.0,
) -> None:
    """Many simulated vehicles connected to one gateway process: sessions, acks, errors."""
    typer.echo(
        json.dumps(gateway_load.run(vehicles, seconds), indent=2, sort_keys=True, default=str)
    )


@app.command("quotas")
def quotas_command(
    seconds: Annotated[float, typer.Option(min=0.2, max=60, help="seconds per measurement")] = 2.0,
    redis_url: Annotated[
        str,
        typer.Option(help="the Redis to measure against (a fresh key prefix, deleted after)"),
    ] = quotas.DEFAULT_REDIS_URL,
    redis: Annotated[bool, typer.Option(help="measure with Redis too")] = True,
) -> None:
    """Quota check per request (plan + enforce) in process vs a dict, and on Redis vs PING."""
    result = quotas.run(seconds, redis_url if redis else None)
    typer.echo(json.dumps(result, indent=2, sort_keys=True))


@app.command("commands")
def commands_command(
    vehicles: Annotated[int, typer.Option(min=1, max=10_000, help="simulated vehicles")] = 1000,
    rate: Annotated[
        float, typer.Option(min=1, max=5000, help="commands/s of the headline run (last)")
    ] = 200.0,
    seconds: Annotated[float, typer.Option(min=1, max=600, help="seconds of the headline")] = 10.0,
    command: Annotated[
        str, typer.Option(help="the throughput command (non-exclusive, no precondition)")
    ] = "horn_lights",
    steps: Annotated[
        str, typer.Option(help="rates (commands/s, comma-separated) searched for the maximum")
    ] = ",".join(str(int(r)) for r in commands.DEFAULT_STEPS),
    step_seconds: Annotated[float, typer.Option(min=1, max=120, help="seconds per step")] = 10.0,
    lock_rate: Annotated[float, typer.Option(min=1, max=5000, help="lock commands/s")] = 20.0,
    lock_seconds: Annotated[float, typer.Option(min=0, max=600, help="0: no lock run")] = 10.0,
    inprocess: Annotated[
        bool,
        typer.Option(help="server in this process (one core for all) instead of a pinned child"),
    ] = False,
    database_url: DatabaseUrl = None,
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            max=16,
            help="app servers, each on a core (more than one needs --redis-url: they hand"
            " each other commands through it; each command goes to another than its car's)",
        ),
    ] = 1,
    redis_url: Annotated[
        str | None,
        typer.Option(
            help="the Redis the replicas share (redis://host:port/db)", show_default=False
        ),
    ] = None,
) -> None:
    """Remote commands, API request to `executed`, with simulated vehicles connected."""
    try:
        rates = tuple(float(r) for r in steps.split(",") if r.strip())
        config = commands.BenchConfig(
            vehicles=vehicles,
            rate=rate,
            seconds=seconds,
            command=command,
            steps=rates,
            step_seconds=step_seconds,
            lock_rate=lock_rate,
            lock_seconds=lock_seconds,
            inprocess=inprocess,
            database_url=database_url,
            replicas=replicas,
            redis_url=redis_url,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(json.dumps(commands.run(config), indent=2, sort_keys=True, default=str))


@app.command("blast-radius")
def blast_radius_command(
    events: Annotated[int, typer.Option(min=1000, max=20_000_000, help="audit events")] = 1_000_000,
    users: Annotated[
        int, typer.Option(min=10, max=1_000_000, help="users (5 vehicles each)")
    ] = 10_000,
    repeats: Annotated[int, typer.Option(min=1, max=50, help="runs per query")] = 5,
    database_url: DatabaseUrl = None,
) -> None:
    """Blast-radius queries over a large synthetic audit log vs the bare indexed count."""
    result = blast_radius.run(events, users, repeats, database_url)
    typer.echo(json.dumps(result, indent=2, sort_keys=True))
