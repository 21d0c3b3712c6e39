"""``fleetward investigate``: from a request to everything it caused, from a compromised
credential to every vehicle it reached, and governance figures from real data."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetward.app import build_app
from fleetward.audit.governance import command_figures, data_figures, route_figures
from fleetward.audit.investigate import (
    BlastQuery,
    BlastRadius,
    CommandCursor,
    Subject,
    TraceCursor,
    VehicleCursor,
    trace_request,
)
from fleetward.audit.operations import investigate
from fleetward.audit.recorder import Actor
from fleetward.catalog.inventory import inventory
from fleetward.cli.runtime import demo_only, load_or_exit, parse_instant
from fleetward.demo.incident import THIEF_ADDRESS, DemoWorldMissing, Incident, stage_incident
from fleetward.platform import Platform
from fleetward.settings import Settings

app = typer.Typer(no_args_is_help=True, help="investigation: request chain, blast radius, figures")
ACTOR = Actor.system("cli:investigate")


def _echo(document: dict[str, Any]) -> None:
    typer.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def _format(value: str) -> str:
    if value not in ("table", "json", "csv"):
        raise typer.BadParameter("table, json or csv")
    return value


OutputFormat = Annotated[str, typer.Option("--format", help="table, json or csv", callback=_format)]


def _show(result: BlastRadius, output_format: str) -> None:
    """A blast radius as JSON, CSV or a table."""
    if output_format == "json":
        _echo(result.to_json())
    elif output_format == "csv":
        typer.echo(result.to_csv(), nl=False)
        if result.vehicles_truncated:
            typer.echo(
                f"fleetward: {len(result.vehicles)} vehicles listed of "
                f"{result.vehicles_total}; the next page: --vehicles-cursor "
                f"{result.vehicles_next_cursor}",
                err=True,
            )
    else:
        typer.echo(result.to_table(), nl=False)


@app.command("request")
def request_command(
    key: Annotated[str, typer.Argument(help="a request id or a W3C trace id")],
    cursor: Annotated[str | None, typer.Option(help="the next_cursor of the previous page")] = None,
) -> None:
    """The full chain of one request: caller, token, vehicles, software, jobs, telemetry.
    One page of records, the decisive ones first; ``truncated`` and ``next_cursor`` when
    more follow."""
    settings = load_or_exit()
    try:
        after = TraceCursor.parse(cursor) if cursor is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cursor") from None

    async def main() -> dict[str, Any]:
        platform = Platform.build(settings)
        try:
            async with platform.unit_of_work() as uow:
                return (await trace_request(uow.session, key, cursor=after)).to_json()
        finally:
            await platform.close()

    document = asyncio.run(main())
    if not document["total"]:
        typer.echo(f"fleetward: no audit event for request or trace {key}", err=True)
        raise typer.Exit(1)
    _echo(document)


async def run_blast(
    settings: Settings,
    query: BlastQuery,
    cursor: CommandCursor | None = None,
    vehicles_cursor: VehicleCursor | None = None,
    summaries: bool | None = None,
) -> BlastRadius:
    platform = Platform.build(settings)
    try:
        async with platform.services() as (uow, ctx):
            result = await investigate(
                ctx,
                query,
                actor=ACTOR,
                cursor=cursor,
                vehicles_cursor=vehicles_cursor,
                summaries=summaries,
            )
            await uow.commit()
            return result
    finally:
        await platform.close()


@app.command("blast-radius")
def blast_command(
    subject: Annotated[Subject, typer.Argument(help="what is compromised")],
    value: Annotated[
        str | None,
        typer.Argument(help="its id (an address or CIDR network for source-ip; none for window)"),
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO time, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time, exclusive")] = None,
    output_format: OutputFormat = "table",
    cursor: Annotated[
        str | None, typer.Option(help="the commands' next_cursor of the previous page")
    ] = None,
    vehicles_cursor: Annotated[
        str | None, typer.Option(help="the vehicles' next_cursor of the previous page")
    ] = None,
    summaries: Annotated[
        bool | None,
        typer.Option(
            "--summaries/--no-summaries",
            help="list who acted (principals, clients, tokens, families, addresses); default:"
            " yes, but for the window, client and partner sweeps",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Every vehicle touched, command sent and data read by a user, token, token family,
    client, partner, device, source address or network (source-ip 203.0.113.7, or
    203.0.113.0/24: no wider than /16, IPv6 /48), or in a time window. Reads are complete;
    vehicles (touched first) and commands (in order) are pages: ``truncated`` and each
    list's ``next_cursor`` when more follow (--vehicles-cursor, --cursor)."""
    settings = load_or_exit()
    try:
        query = BlastQuery(
            subject, value, parse_instant(since, "--since"), parse_instant(until, "--until")
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        after = CommandCursor.parse(cursor) if cursor is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cursor") from None
    try:
        vehicles_after = (
            VehicleCursor.parse(vehicles_cursor) if vehicles_cursor is not None else None
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--vehicles-cursor") from None
    result = asyncio.run(run_blast(settings, query, after, vehicles_after, summaries))
    _show(result, output_format)


@app.command("figures")
def figures_command(
    probe_report: Annotated[
        Path | None, typer.Option(help="a probe JSON report, for object-level test coverage")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=366, help="audit window in days")] = 30,
) -> None:
    """Governance figures from the catalog, command families, Cedar schema and audit log."""
    settings = load_or_exit()

    async def main() -> dict[str, Any]:
        platform = Platform.build(settings)
        try:
            items = inventory(build_app(settings, platform=platform).router.routes)
            async with platform.unit_of_work() as uow:
                data = await data_figures(
                    uow.session, items, now=platform.clock.now(), window=timedelta(days=days)
                )
            return {
                "routes": route_figures(items, probe_report),
                "commands": command_figures(),
                "audit": data,
            }
        finally:
            await platform.close()

    _echo(asyncio.run(main()))


@app.command("demo-incident")
def demo_incident_command(
    output_format: OutputFormat = "table",
) -> None:
    """Stage the demo world's scripted incident (a stolen token used from a new network
    against three vehicles, docs/operations.md) and investigate it: the blast radius of the
    stolen token family."""
    settings = load_or_exit()
    demo_only(settings, "fleetward investigate demo-incident")
    # The staged requests go through an in-process client: its request log is noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    async def main() -> tuple[Incident, BlastRadius]:
        platform = Platform.build(settings)
        try:
            incident = await stage_incident(platform)
            async with platform.services() as (uow, ctx):
                query = BlastQuery(Subject.TOKEN_FAMILY, incident.token_family)
                result = await investigate(ctx, query, actor=ACTOR)
                await uow.commit()
            return incident, result
        finally:
            await platform.close()

    try:
        incident, result = asyncio.run(main())
    except DemoWorldMissing as exc:
        typer.echo(f"fleetward: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"incident staged: token family {incident.token_family} (frank's), used from "
        f"{THIEF_ADDRESS[0]}; investigating it:",
        err=True,
    )
    _show(result, output_format)
