"""Reading and acknowledging alerts: the one service the admin API and ``fleetward alerts``
both call. Acknowledging is an audit event (``audit:alert:acknowledged``) in the same
transaction; acknowledging an acknowledged alert changes nothing and records nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from fleetward.audit.alerts import Alert, AlertStatus
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import NotFound
from fleetward.services import ServiceContext


class AlertNotFound(NotFound):
    code = "alert-not-found"
    title = "Alert not found"


@dataclass(frozen=True, slots=True)
class AlertFilter:
    status: AlertStatus | None = None
    rule: str | None = None
    since: datetime | None = None  # alerts seen (last) at or after this time


class AlertService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def page(self, where: AlertFilter, after: str | None, size: int) -> Sequence[Alert]:
        """Up to ``size + 1`` alerts by id after ``after`` (keyset), filtered in the query."""
        query = select(Alert).order_by(Alert.id).limit(size + 1)
        if after is not None:
            query = query.where(Alert.id > after)
        if where.status is not None:
            query = query.where(Alert.status == where.status)
        if where.rule is not None:
            query = query.where(Alert.rule == where.rule)
        if where.since is not None:
            query = query.where(Alert.last_seen >= where.since)
        return list(await self._ctx.session.scalars(query))

    async def get(self, alert_id: str) -> Alert:
        alert = await self._ctx.session.get(Alert, alert_id)
        if alert is None:
            raise AlertNotFound("no such alert")
        return alert

    async def evidence(self, alert: Alert) -> list[AuditRecord]:
        """The evidence events that still exist, in log order."""
        ids = [e for e in alert.evidence if isinstance(e, str)]
        if not ids:
            return []
        rows = await self._ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.id.in_(ids)).order_by(AuditRecord.seq)
        )
        return list(rows)

    async def acknowledge(self, alert: Alert, *, by: Actor) -> bool:
        """Acknowledge an open alert; False (and nothing recorded) when it already was."""
        if alert.status is AlertStatus.ACKNOWLEDGED:
            return False
        # Only if still open as the store has it: two operators acknowledging at once both
        # read it open, and the second must change nothing and record nothing.
        session = self._ctx.session
        result = await session.execute(
            update(Alert)
            .where(Alert.id == alert.id, Alert.status == AlertStatus.OPEN)
            .values(
                status=AlertStatus.ACKNOWLEDGED,
                acknowledged_by=f"{by.type.value}:{by.id}"[:64],
                acknowledged_at=self._ctx.clock.now(),
            )
            .execution_options(synchronize_session=False)
        )
        await session.refresh(alert)  # ours, or the one who acknowledged it first
        if getattr(result, "rowcount", 0) != 1:
            return False
        self._ctx.audit.record(
            self._ctx.session,
            EventName.ALERT_ACKNOWLEDGED,
            actor=by,
            target=Target("alert", alert.id, alert.tenant_id),
            details={"rule": alert.rule, "severity": alert.severity.value},
        )
        await session.flush()
        return True
