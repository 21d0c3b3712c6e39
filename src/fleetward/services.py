"""What every domain service is handed: one transaction, the clock, the audit recorder, limits.

Services never create engines, clocks or sessions themselves (the composition root does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.recorder import AuditRecorder
from fleetward.core.clock import Clock
from fleetward.core.windows import check_window


@dataclass(frozen=True, slots=True)
class RelationshipLimits:
    max_delegation: timedelta = timedelta(days=90)
    # How far ahead a delegation (or a driver invitation's window) may start.
    max_delegation_lead: timedelta = timedelta(days=90)
    max_consent: timedelta = timedelta(days=365)

    def check_delegation_window(
        self, start: datetime, end: datetime | None, *, now: datetime
    ) -> None:
        """A delegation's (or a driver invitation's) window within these bounds: its length
        and how far ahead it starts (``core.windows.check_window``)."""
        check_window(
            start, end, now=now, max_length=self.max_delegation, max_lead=self.max_delegation_lead
        )


@dataclass(frozen=True, slots=True)
class ServiceContext:
    session: AsyncSession
    clock: Clock
    audit: AuditRecorder
    limits: RelationshipLimits = RelationshipLimits()
