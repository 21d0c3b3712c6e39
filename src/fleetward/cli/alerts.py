"""``fleetward alerts``: detection alerts from the operator's shell (list, show, ack).

Thin commands over the same service as the admin API (detection/service.py), on the
configured store. Acknowledging acts as the system actor ``cli:alerts`` (the shell account is
the operator's identity) and is recorded as ``audit:alert:acknowledged`` like the API's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from fleetward.audit.alerts import Alert, AlertStatus
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.cli.runtime import load_or_exit, utc_instant
from fleetward.core.errors import FleetwardError
from fleetward.detection.service import AlertFilter, AlertService
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.store.uow import UnitOfWork

app = typer.Typer(no_args_is_help=True, help="detection alerts: list, show, acknowledge")
ACTOR = Actor.system("cli:alerts")
T = TypeVar("T")


def _run(work: Callable[[UnitOfWork, ServiceContext], Awaitable[T]]) -> T:
    """Run ``work`` in one committed transaction; a refusal exits with status 1."""
    settings = load_or_exit()

    async def main() -> T:
        platform = Platform.build(settings)
        try:
            async with platform.services() as (uow, ctx):
                result = await work(uow, ctx)
                await uow.commit()
                return result
        finally:
            await platform.close()

    try:
        return asyncio.run(main())
    except FleetwardError as refused:
        typer.echo(f"fleetward: {refused.title}: {refused.detail}", err=True)
        raise typer.Exit(1) from None


def alert_document(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "rule": alert.rule,
        "severity": alert.severity.value,
        "status": alert.status.value,
        "tenant_id": alert.tenant_id,
        "subject_type": alert.subject_type,
        "subject_id": alert.subject_id,
        "summary": alert.summary,
        "count": alert.count,
        "first_seen": alert.first_seen.isoformat(),
        "last_seen": alert.last_seen.isoformat(),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
        "evidence": list(alert.evidence),
    }


def event_document(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "occurred_at": record.occurred_at.isoformat(),
        "actor": f"{record.actor_type.value}:{record.actor_id}",
        "object": f"{record.object_type}:{record.object_id}",
        "decision": record.decision.value,
        "reason": record.reason,
        "request_id": record.request_id,
        "client_id": record.client_id,
        "token_family": record.token_family,
        "source_ip": record.source_ip,
        "endpoint": record.endpoint,
    }


Status = Annotated[AlertStatus | None, typer.Option(help="open or acknowledged")]
Rule = Annotated[str | None, typer.Option(help="a rule id, e.g. vin-enumeration")]
Since = Annotated[
    datetime | None, typer.Option(help="seen at or after (ISO 8601, UTC if no offset)")
]
Limit = Annotated[int, typer.Option(min=1, max=1000, help="at most this many")]
Json = Annotated[bool, typer.Option("--json", help="one JSON document instead of a table")]


@app.command("list")
def list_command(
    status: Status = None,
    rule: Rule = None,
    since: Since = None,
    limit: Limit = 50,
    json_: Json = False,
) -> None:
    """Alerts (by id), filtered by status, rule and recency."""
    if since is not None:
        aware = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        since = utc_instant(aware, "--since")
    where = AlertFilter(status=status, rule=rule, since=since)

    async def work(_u: UnitOfWork, ctx: ServiceContext) -> list[Alert]:
        return list((await AlertService(ctx).page(where, None, limit))[:limit])

    alerts = _run(work)
    if json_:
        typer.echo(json.dumps([alert_document(a) for a in alerts], indent=2, sort_keys=True))
        return
    for a in alerts:
        typer.echo(
            f"{a.id}  {a.severity.value:<6}  {a.status.value:<12}  {a.rule:<32}  "
            f"x{a.count:<4}  {a.last_seen.isoformat()}  {a.summary}"
        )
    if not alerts:
        typer.echo("no alerts")


@app.command("show")
def show_command(alert_id: str) -> None:
    """One alert and its evidence events, as JSON."""

    async def work(_u: UnitOfWork, ctx: ServiceContext) -> dict[str, Any]:
        service = AlertService(ctx)
        alert = await service.get(alert_id)
        document = alert_document(alert)
        document["evidence_events"] = [event_document(e) for e in await service.evidence(alert)]
        return document

    typer.echo(json.dumps(_run(work), indent=2, sort_keys=True))


@app.command("ack")
def ack_command(alert_id: str) -> None:
    """Acknowledge an alert (an audit event; acknowledging twice records nothing)."""

    async def work(_u: UnitOfWork, ctx: ServiceContext) -> bool:
        service = AlertService(ctx)
        return await service.acknowledge(await service.get(alert_id), by=ACTOR)

    changed = _run(work)
    typer.echo(f"{'acknowledged' if changed else 'already acknowledged'}: {alert_id}")
