"""Plain audit events for the detection tests: ``event(...)`` with sensible defaults."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetward.detection.finding import Finding, Rule
from fleetward.detection.observed import Observed

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
_seq = itertools.count(1)


def event(
    name: str,
    *,
    after: timedelta = timedelta(0),
    actor: str = "usr_mallory",
    actor_type: str = "user",
    object_type: str = "vehicle",
    object_id: str = "veh_1",
    decision: str = "allowed",
    reason: str | None = None,
    tenant: str | None = "ten_consumer",
    **columns: Any,
) -> Observed:
    seq = next(_seq)
    return Observed(
        seq=seq,
        id=f"evt_{seq}",
        name=name,
        at=T0 + after,
        actor_type=actor_type,
        actor_id=actor,
        actor_tenant_id=tenant,
        tenant_id=columns.pop("tenant_id", tenant),
        object_type=object_type,
        object_id=object_id,
        decision=decision,
        reason=reason,
        **columns,
    )


def feed(rule: Rule, events: list[Observed]) -> list[Finding]:
    found: list[Finding] = []
    for e in events:
        if rule.accepts(e):
            found.extend(rule.observe(e))
    return found


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
