"""Detection alerts on the admin surface (``/admin/v1/alerts``): list, read with evidence,
acknowledge.

Reading asks the PDP for ``admin:read_alerts`` and acknowledging for ``admin:manage_alerts``,
both on the platform itself (policy ``platform-admin``): alerts name actors, vehicles, token
families and addresses across every tenant, so they are a platform function and anyone else
is refused with 403, whatever the alert id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import Depends, Query, Request
from pydantic import BaseModel

from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import authorize
from fleetward.api.objects import (
    Cursor,
    Instant,
    Limit,
    Page,
    cut_page,
    decode_cursor,
    encode_cursor,
    object_entry,
    page_size,
    platform_of,
)
from fleetward.api.routing import surface_router
from fleetward.audit.alerts import Alert, AlertSeverity, AlertStatus
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.authz.decision import THE_PLATFORM
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, Impact, catalogued
from fleetward.core.surfaces import Surface
from fleetward.detection.service import AlertFilter, AlertService
from fleetward.services import ServiceContext

OWNER: Final = "security-team"
READ: Final = Permission.ADMIN_READ_ALERTS
MANAGE: Final = Permission.ADMIN_MANAGE_ALERTS
PLATFORM: Final = THE_PLATFORM

RuleId = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]

router = surface_router(Surface.ADMIN)
admin = Depends(authenticate(Surface.ADMIN))


class AlertView(BaseModel):
    id: str
    rule: str
    severity: AlertSeverity
    status: AlertStatus
    tenant_id: str | None
    subject_type: str
    subject_id: str
    summary: str
    count: int
    first_seen: datetime
    last_seen: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    evidence: list[str]

    @classmethod
    def of(cls, alert: Alert) -> AlertView:
        return cls(
            id=alert.id,
            rule=alert.rule,
            severity=alert.severity,
            status=alert.status,
            tenant_id=alert.tenant_id,
            subject_type=alert.subject_type,
            subject_id=alert.subject_id,
            summary=alert.summary,
            count=alert.count,
            first_seen=alert.first_seen,
            last_seen=alert.last_seen,
            acknowledged_by=alert.acknowledged_by,
            acknowledged_at=alert.acknowledged_at,
            evidence=[e for e in alert.evidence if isinstance(e, str)],
        )


class EvidenceEvent(BaseModel):
    """An audit event as evidence: ids, codes and the request's facts, never a secret."""

    id: str
    name: str
    occurred_at: datetime
    actor_type: str
    actor_id: str
    actor_tenant_id: str | None
    tenant_id: str | None
    object_type: str
    object_id: str
    action: str
    decision: str
    reason: str | None
    request_id: str | None
    client_id: str | None
    token_id: str | None
    token_family: str | None
    source_ip: str | None
    endpoint: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, record: AuditRecord) -> EvidenceEvent:
        return cls(
            id=record.id,
            name=record.name,
            occurred_at=record.occurred_at,
            actor_type=record.actor_type.value,
            actor_id=record.actor_id,
            actor_tenant_id=record.actor_tenant_id,
            tenant_id=record.tenant_id,
            object_type=record.object_type,
            object_id=record.object_id,
            action=record.action,
            decision=record.decision.value,
            reason=record.reason,
            request_id=record.request_id,
            client_id=record.client_id,
            token_id=record.token_id,
            token_family=record.token_family,
            source_ip=record.source_ip,
            endpoint=record.endpoint,
            details=dict(record.details or {}),
        )


class AlertDetail(AlertView):
    evidence_events: list[EvidenceEvent]


def _entry(purpose: str, permission: Permission, *, writes: bool = False) -> CatalogEntry:
    return object_entry(
        Surface.ADMIN,
        purpose,
        permission,
        DataClass.INTERNAL,
        owner=OWNER,
        objects=("alert",),
        tags=("detection",),
        caller=CallerType.ADMIN,
        impact=frozenset({Impact.OPERATIONAL, Impact.PRIVACY}),
        rate=30 if writes else 120,
    )


async def _require(
    request: Request, caller: Caller, ctx: ServiceContext, permission: Permission
) -> None:
    await authorize(request, caller, permission, PLATFORM, object_route=False, ctx=ctx)


@router.get("/alerts", name="admin:alerts:list", response_model=Page[AlertView])
@catalogued(_entry("detection alerts, a page at a time, by status, rule and recency", READ))
async def list_alerts(
    request: Request,
    caller: Caller = admin,
    status: AlertStatus | None = None,
    rule: RuleId = None,
    since: Instant | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AlertView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    where = AlertFilter(status=status, rule=rule, since=since)
    async with platform.services() as (uow, ctx):
        await _require(request, caller, ctx, READ)
        page, more = cut_page(await AlertService(ctx).page(where, after, size), size)
        await uow.commit()
    return Page[AlertView](
        items=[AlertView.of(a) for a in page],
        next_cursor=encode_cursor(page[-1].id) if more else None,
    )


@router.get("/alerts/{alert_id}", name="admin:alerts:read", response_model=AlertDetail)
@catalogued(_entry("one detection alert with the audit events it rests on", READ))
async def read_alert(alert_id: str, request: Request, caller: Caller = admin) -> AlertDetail:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require(request, caller, ctx, READ)
        service = AlertService(ctx)
        alert = await service.get(alert_id)
        events = await service.evidence(alert)
        await uow.commit()
    view = AlertView.of(alert)
    return AlertDetail(**view.model_dump(), evidence_events=[EvidenceEvent.of(e) for e in events])


@router.post(
    "/alerts/{alert_id}/acknowledge", name="admin:alerts:acknowledge", response_model=AlertView
)
@catalogued(
    _entry("acknowledges a detection alert (recorded as an audit event)", MANAGE, writes=True)
)
async def acknowledge_alert(alert_id: str, request: Request, caller: Caller = admin) -> AlertView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require(request, caller, ctx, MANAGE)
        service = AlertService(ctx)
        alert = await service.get(alert_id)
        await service.acknowledge(alert, by=Actor.user(caller.claims.sub, caller.claims.tenant))
        await uow.commit()
    return AlertView.of(alert)


__all__ = ["router"]
