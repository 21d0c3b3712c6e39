"""Findings become alert rows: a new ``dedup_key`` raises an alert (and an
``audit:alert:raised`` event); a known one counts the finding on the same alert.

Runs in the evaluator's transaction, so alerts, their audit events and the cursor commit
together. An acknowledged alert keeps counting (and stays acknowledged): a new UTC day
raises a new alert, so a renewed attack is never hidden behind yesterday's acknowledgment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.alerts import Alert, AlertStatus
from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, AuditRecorder, Target
from fleetward.core.ids import new_id
from fleetward.detection.finding import Finding

DETECTION: Final = Actor.system("detection")


def merge_evidence(current: Sequence[str], new: Iterable[str], cap: int) -> list[str]:
    """The ids of both, each once, in order; past ``cap``, the first half and the newest."""
    merged = list(current)
    seen = set(merged)
    for event_id in new:
        if event_id not in seen:
            seen.add(event_id)
            merged.append(event_id)
    if len(merged) <= cap:
        return merged
    head = cap // 2
    return merged[:head] + merged[len(merged) - (cap - head) :]


async def apply(
    session: AsyncSession,
    audit: AuditRecorder,
    findings: Sequence[Finding],
    *,
    evidence_cap: int,
) -> list[Alert]:
    """Apply findings in order; returns the alerts raised (new ones only)."""
    if not findings:
        return []
    keys = {f.dedup_key for f in findings}
    rows = await session.scalars(select(Alert).where(Alert.dedup_key.in_(keys)))
    alerts = {a.dedup_key: a for a in rows}
    raised: list[Alert] = []
    for finding in findings:
        alert = alerts.get(finding.dedup_key)
        if alert is None:
            alert = alerts[finding.dedup_key] = _raise(session, audit, finding, evidence_cap)
            raised.append(alert)
            continue
        alert.count += 1
        alert.last_seen = max(alert.last_seen, finding.at)
        alert.summary = finding.summary
        alert.evidence = merge_evidence(alert.evidence, finding.evidence, evidence_cap)
    await session.flush()
    return raised


def _raise(session: AsyncSession, audit: AuditRecorder, finding: Finding, cap: int) -> Alert:
    alert = Alert(
        id=new_id("alr"),
        rule=finding.rule,
        severity=finding.severity,
        status=AlertStatus.OPEN,
        tenant_id=finding.tenant_id,
        subject_type=finding.subject_type,
        subject_id=finding.subject_id,
        summary=finding.summary,
        evidence=merge_evidence([], finding.evidence, cap),
        dedup_key=finding.dedup_key,
        first_seen=finding.at,
        last_seen=finding.at,
        count=1,
        acknowledged_by=None,
        acknowledged_at=None,
    )
    session.add(alert)
    # Ids and codes only: the summary stays on the alert (it may name a client or a range).
    audit.record(
        session,
        EventName.ALERT_RAISED,
        actor=DETECTION,
        target=Target("alert", alert.id, alert.tenant_id),
        details={
            "rule": finding.rule,
            "severity": finding.severity.value,
            "subject_type": finding.subject_type,
            "subject_id": finding.subject_id,
        },
    )
    return alert
