"""``fleetward`` command line."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from fleetward.cli import alerts as alerts_cli
from fleetward.cli import audit as audit_cli
from fleetward.cli import bench as bench_cli
from fleetward.cli import catalog as catalog_cli
from fleetward.cli import devices as devices_cli
from fleetward.cli import investigate as investigate_cli
from fleetward.cli import keys as keys_cli
from fleetward.cli import probe as probe_cli
from fleetward.cli import sim as sim_cli
from fleetward.cli import token as token_cli
from fleetward.cli.runtime import (
    demo_only,
    demo_setup,
    load_or_exit,
    migrate_store,
    serve_app,
    serve_demo,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Fleetward platform")
app.add_typer(catalog_cli.app, name="catalog")
app.command(name="token")(token_cli.token)
app.add_typer(bench_cli.app, name="bench")
app.add_typer(keys_cli.app, name="keys")
app.add_typer(devices_cli.app, name="devices")
app.command(name="sim")(sim_cli.sim)
app.add_typer(probe_cli.app, name="probe")
app.add_typer(alerts_cli.app, name="alerts")
app.add_typer(audit_cli.app, name="audit")
app.add_typer(investigate_cli.app, name="investigate")


@app.command()
def serve() -> None:
    """Serve the platform on the configured host and port (the store must be migrated)."""
    serve_app(load_or_exit())


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema to the newest migration."""
    settings = load_or_exit()
    asyncio.run(migrate_store(settings))
    typer.echo("store migrated")


@app.command()
def demo(
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="set up the demo world and exit")
    ] = False,
    sim: Annotated[
        bool,
        typer.Option("--sim/--no-sim", help="run a simulated fleet of the demo world's vehicles"),
    ] = True,
) -> None:
    """First run: migrate, seed the demo world and write its logins; then serve."""
    settings = load_or_exit()
    demo_only(settings, "fleetward demo")
    credentials = asyncio.run(demo_setup(settings))
    base = settings.base_url
    typer.echo(
        "\nFleetward demo\n"
        f"  API:           {base}\n"
        f"  readiness:     {base}/readyz\n"
        f"  OpenAPI:       {base}/openapi.json\n"
        f"  demo logins:   {credentials}  (mode 0600; one entry per demo person)\n"
    )
    if not no_serve:
        serve_demo(settings, sim=sim)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
