"""``fleetward audit``: seal, verify and export the audit log on the platform host.

The chain key is derived from the platform data key, so these commands run where the
platform's settings (and ``<data dir>/secrets``) are. Acting as the system actor
``cli:audit``: the shell account is the operator's identity.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from fleetward.audit.chain import SealResult, VerifyReport
from fleetward.audit.operations import export_log, seal_pending, verify_log
from fleetward.audit.recorder import Actor
from fleetward.cli.runtime import load_or_exit, parse_instant
from fleetward.platform import Platform

app = typer.Typer(no_args_is_help=True, help="audit log: seal, verify, export")
ACTOR = Actor.system("cli:audit")

Day = Annotated[
    str | None, typer.Option(help="first/last UTC day to check, YYYY-MM-DD", show_default=False)
]


def _day(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").date().isoformat()
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM-DD", param_hint=name) from None


@app.command("seal")
def seal_command(
    lag: Annotated[int, typer.Option(min=0, max=3600, help="seconds a record must age")] = 30,
) -> None:
    """Chain every committed record older than the lag (run it periodically)."""
    settings = load_or_exit()

    async def main() -> SealResult:
        platform = Platform.build(settings)
        try:
            return await seal_pending(platform, lag=timedelta(seconds=lag))
        finally:
            await platform.close()

    result = asyncio.run(main())
    typer.echo(json.dumps({"sealed": result.sealed, "late": result.late}))


@app.command("verify")
def verify_command(since: Day = None, until: Day = None) -> None:
    """Check every day's chain; exit 1 naming the first altered, deleted or inserted record."""
    settings = load_or_exit()
    first, last = _day(since, "--since"), _day(until, "--until")

    async def main() -> VerifyReport:
        platform = Platform.build(settings)
        try:
            return await verify_log(platform, since=first, until=last)
        finally:
            await platform.close()

    report = asyncio.run(main())
    typer.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    if not report.ok:
        p = report.problems[0]
        typer.echo(
            f"fleetward: audit log tampered: first problem: {p.kind.value} at seq {p.seq}"
            f" (event {p.event_id}, day {p.partition}, position {p.position}): {p.detail}",
            err=True,
        )
        raise typer.Exit(1)


@app.command("export")
def export_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="JSON lines file to write")],
    since: Annotated[str | None, typer.Option(help="ISO time, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time, exclusive")] = None,
) -> None:
    """Export records (with their seals) as JSON lines; the export is itself audited."""
    settings = load_or_exit()
    start, end = parse_instant(since, "--since"), parse_instant(until, "--until")

    async def main() -> int:
        platform = Platform.build(settings)
        try:
            with output.open("w", encoding="utf-8") as out:
                return await export_log(platform, out, actor=ACTOR, since=start, until=end)
        finally:
            await platform.close()

    count = asyncio.run(main())
    typer.echo(json.dumps({"exported": count, "file": str(output)}))
