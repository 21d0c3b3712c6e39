"""What a rule says: a :class:`Finding`, and the :class:`Rule` seam the evaluator calls.

A finding names its alert by ``dedup_key``: findings with the same key are one alert whose
``count`` is how many findings it gathered. Keys are deterministic functions of the events
(rule, subject, UTC day of the event), so replaying the same events gives the same keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from fleetward.audit.alerts import AlertSeverity
from fleetward.detection.observed import Observed

DEDUP_KEY_MAX: Final = 128
SUMMARY_MAX: Final = 256
SUBJECT_ID_MAX: Final = 64


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: AlertSeverity
    dedup_key: str
    subject_type: str
    subject_id: str
    tenant_id: str | None
    summary: str
    evidence: tuple[str, ...]  # audit event ids, oldest first
    at: datetime
    # The event that triggered it (None for a sample): a finding is applied once per trigger.
    trigger_seq: int | None = None


class Rule(Protocol):
    """One detection. ``observe`` is called with every event ``accepts`` (by default: whose
    name is in ``names``), in ``seq`` order, from one task; it keeps whatever windows it needs
    in memory (bounded). Implementations never do I/O and never raise on odd details (they
    skip the event)."""

    @property
    def id(self) -> str: ...

    @property
    def severity(self) -> AlertSeverity: ...

    @property
    def names(self) -> frozenset[str]: ...

    def accepts(self, event: Observed) -> bool:
        """Whether ``observe`` wants this event (cheap; called for every event)."""
        ...

    def observe(self, event: Observed) -> Sequence[Finding]: ...


def dedup_key(rule: str, subject: str, at: datetime) -> str:
    """``rule|subject|YYYY-MM-DD``: one alert per rule, subject and UTC day; a subject too
    long for the column is hashed (still deterministic)."""
    day = at.date().isoformat()
    key = f"{rule}|{subject}|{day}"
    if len(key) <= DEDUP_KEY_MAX:
        return key
    digest = hashlib.sha256(subject.encode("utf-8")).hexdigest()[:48]
    return f"{rule}|{digest}|{day}"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BaseRule:
    """Shared by the rules: their identity and a finding builder."""

    id: str = ""
    severity: AlertSeverity = AlertSeverity.MEDIUM
    names: frozenset[str] = frozenset()

    def accepts(self, event: Observed) -> bool:
        return event.name in self.names

    def actor_finding(self, event: Observed, summary: str, evidence: Sequence[str]) -> Finding:
        """A finding about the event's actor (in the actor's own tenant)."""
        return self.finding(
            event,
            subject_type=event.actor_type,
            subject_id=event.actor_id,
            tenant_id=event.actor_tenant_id,
            summary=summary,
            evidence=evidence,
        )

    def finding(
        self,
        event: Observed,
        *,
        subject_type: str,
        subject_id: str,
        tenant_id: str | None,
        summary: str,
        evidence: Sequence[str],
        key_subject: str | None = None,
    ) -> Finding:
        subject = key_subject or f"{subject_type}:{subject_id}"
        return Finding(
            rule=self.id,
            severity=self.severity,
            dedup_key=dedup_key(self.id, subject, event.at),
            subject_type=clip(subject_type, 32),
            subject_id=clip(subject_id, SUBJECT_ID_MAX),
            tenant_id=tenant_id,
            summary=clip(summary, SUMMARY_MAX),
            evidence=tuple(evidence),
            at=event.at,
            trigger_seq=event.seq,
        )
