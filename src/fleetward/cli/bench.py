"""``fleetward bench``: benchmarks as ratios to a ceiling measured in the same run."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fleetward.bench import authz, telemetry, tokens

app = typer.Typer(no_args_is_help=True, help="benchmarks (never part of make test)")


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
) -> None:
    """The ingest pipeline vs the bare ceiling (MAC + decode + batched insert)."""
    typer.echo(json.dumps(telemetry.run(seconds), indent=2, sort_keys=True, default=str))
