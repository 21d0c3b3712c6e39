"""``fleetward catalog``: the API inventory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fleetward.app import build_app
from fleetward.catalog.inventory import export as export_catalog
from fleetward.cli.runtime import load_or_exit

app = typer.Typer(no_args_is_help=True, help="the API inventory")


@app.command("export")
def export_command(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
) -> None:
    """Write the catalog (every route with its entry) as JSON."""
    settings = load_or_exit()
    document = {"routes": export_catalog(build_app(settings).router.routes)}
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
