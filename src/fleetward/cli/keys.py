"""``fleetward keys``: the access-token signing keys."""

from __future__ import annotations

import typer

from fleetward.cli.runtime import load_or_exit
from fleetward.core.clock import SystemClock
from fleetward.identity.runtime import rotate_keyring

app = typer.Typer(no_args_is_help=True, help="access-token signing keys")


@app.command("rotate")
def rotate_command() -> None:
    """Make a new active signing key; the old one verifies until its tokens expire.
    Running servers sharing the data directory adopt the new key within 15 seconds."""
    settings = load_or_exit()
    kid = rotate_keyring(settings, SystemClock())
    typer.echo(f"new active signing key: {kid}")
