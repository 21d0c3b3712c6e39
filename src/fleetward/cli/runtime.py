"""Shared steps of the commands: settings, logging, migration, demo setup and serving."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import typer
import uvicorn
from starlette.types import ASGIApp

from fleetward.app import build_app
from fleetward.cli.listener import listening_sockets
from fleetward.core.clock import in_utc
from fleetward.demo.clients import seed_demo_clients
from fleetward.demo.credentials import write_credentials
from fleetward.demo.world import reset_passwords, seed_demo_world
from fleetward.observability.logging import configure_logging
from fleetward.platform import Platform
from fleetward.settings import Environment, Settings, SettingsError, load_settings
from fleetward.sim.demo import serve_with_fleet
from fleetward.store.migrate import upgrade


def parse_instant(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 time with an offset from the option ``name``, or None; no local times."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("expected an ISO 8601 time with offset", param_hint=name) from None
    if parsed.tzinfo is None:
        raise typer.BadParameter(
            "the time needs an offset, e.g. 2026-12-01T00:00Z", param_hint=name
        )
    return utc_instant(parsed, name)


def utc_instant(moment: datetime, name: str) -> datetime:
    """``moment`` (aware) in UTC, or a usage error when UTC cannot hold it (an offset at
    either end of the calendar: 0001-01-01T00:00+05:00), as the admin API refuses it; the
    store would fail on it with a traceback."""
    try:
        return in_utc(moment)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


def load_or_exit() -> Settings:
    """Settings, or a readable message and exit status 2: invalid settings never start."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(f"fleetward: {exc}", err=True)
        sys.exit(2)
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


def demo_only(settings: Settings, what: str) -> None:
    """Exit with status 2 when ``settings`` are a production deployment's: the demo world's
    tenants, people, vehicles and staged incidents never go into a production store."""
    if settings.environment is Environment.PRODUCTION:
        typer.echo(
            f"fleetward: {what} is for development stores, not environment=production", err=True
        )
        sys.exit(2)


def _prepare_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


async def migrate_store(settings: Settings) -> None:
    _prepare_data_dir(settings)
    platform = Platform.build(settings)
    try:
        await upgrade(platform.engine)
    finally:
        await platform.close()


async def demo_setup(settings: Settings) -> Path:
    """Migrate and seed; (re)write the credentials file when the world is new or it is lost."""
    await migrate_store(settings)
    platform = Platform.build(settings)
    path = settings.demo_credentials_path
    try:
        async with platform.services() as (uow, ctx):
            result = await seed_demo_world(
                ctx, platform.passwords, data_key=platform.identity.data_key
            )
            logins = result.logins
            if not result.created and not path.exists():
                logins = await reset_passwords(
                    ctx, platform.passwords, data_key=platform.identity.data_key
                )
            if logins:
                # The file is written before the commit: a crash leaves old passwords valid
                # rather than new ones nobody knows.
                write_credentials(path, logins)
            await seed_demo_clients(ctx, settings.data_dir)
            await uow.commit()
    finally:
        await platform.close()
    return path


def serve_app(settings: Settings) -> None:
    _prepare_data_dir(settings)
    config = _server_config(build_app(settings), settings)
    uvicorn.Server(config).run(sockets=listening_sockets(config, settings))


def serve_demo(settings: Settings, *, sim: bool) -> None:
    """Serve; with ``sim``, the demo world's vehicles report from a simulated fleet run in
    this process once the server is up (``fleetward.sim.demo``)."""
    if not sim:
        serve_app(settings)
        return
    _prepare_data_dir(settings)
    platform = Platform.build(settings)
    config = _server_config(build_app(settings, platform=platform), settings)
    sockets = listening_sockets(config, settings)
    asyncio.run(serve_with_fleet(uvicorn.Server(config), platform, sockets))


def _server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    return server_config(app, host=settings.host, port=settings.port)


# How long a stop (SIGTERM, SIGINT) waits for open connections and requests before it cancels
# them and shuts the application down (docs/operations.md).
GRACEFUL_SHUTDOWN_S: Final = 15


def server_config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    lifespan: Literal["auto", "on", "off"] = "auto",
    graceful_shutdown_s: int = GRACEFUL_SHUTDOWN_S,
) -> uvicorn.Config:
    """How Fleetward is served (``fleetward serve``, the demo, and the tests' servers)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan=lifespan,
        log_config=None,  # our structlog configuration (with redaction) handles uvicorn's logs
        # Forwarded headers are the app's to read, from trusted proxies only (api.middleware).
        proxy_headers=False,
        server_header=False,
        # Before the handshake a peer is anonymous: cap what it may send in one message.
        ws_max_size=256 * 1024,
        # No permessage-deflate (docs/vehicle-protocol.md): frames travel as they were MAC'd,
        # no compression side channel, and no inflate buffers for anonymous peers.
        ws_per_message_deflate=False,
        # A stop is bounded: a connection that never closes (seen once in CI: the demo still
        # "waiting for connections to close" 60 s after SIGTERM) does not keep the process.
        timeout_graceful_shutdown=graceful_shutdown_s,
    )
