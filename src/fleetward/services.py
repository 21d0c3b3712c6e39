"""What every domain service is handed: one transaction, the clock, the audit recorder, limits.

Services never create engines, clocks or sessions themselves (the composition root does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.recorder import AuditRecorder
from fleetward.core.clock import Clock


@dataclass(frozen=True, slots=True)
class RelationshipLimits:
    max_delegation: timedelta = timedelta(days=90)
    # How far ahead a delegation (or a driver invitation's window) may start.
    max_delegation_lead: timedelta = timedelta(days=90)
    max_consent: timedelta = timedelta(days=365)


@dataclass(frozen=True, slots=True)
class ServiceContext:
    session: AsyncSession
    clock: Clock
    audit: AuditRecorder
    limits: RelationshipLimits = RelationshipLimits()
