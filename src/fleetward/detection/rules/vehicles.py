"""Rules on what vehicles and devices did: unanswered commands, quarantined devices."""

from __future__ import annotations

from collections.abc import Sequence

from fleetward.audit.alerts import AlertSeverity
from fleetward.audit.events import EventName
from fleetward.detection.config import NoAcknowledgmentConfig, TelemetryVolumeConfig
from fleetward.detection.finding import BaseRule, Finding
from fleetward.detection.observed import Observed
from fleetward.detection.windows import Window, describe


class CommandNoAcknowledgment(BaseRule):
    """A command delivered to a vehicle that never answered (``outcome_unknown``): it may or
    may not have acted. A door that may be unlocked needs a human, and a vehicle that stops
    answering commands may have lost its TCU, its key or its integrity."""

    id = "command-no-acknowledgment"
    severity = AlertSeverity.MEDIUM
    names = frozenset({EventName.COMMAND_OUTCOME_UNKNOWN.value})

    def __init__(self, config: NoAcknowledgmentConfig) -> None:
        self._config = config
        self._window = Window(config.window)

    def observe(self, event: Observed) -> Sequence[Finding]:
        entries = self._window.add(event.object_id, event.at, event.id)
        if len(entries) < self._config.unanswered:
            return ()
        command = event.details.get("command", "a command")
        summary = (
            f"vehicle {event.object_id} never acknowledged {command} "
            f"({len(entries)} unanswered in {describe(self._config.window)})"
        )
        return (
            self.finding(
                event,
                subject_type="vehicle",
                subject_id=event.object_id,
                tenant_id=event.tenant_id,
                summary=summary,
                evidence=[e.event_id for e in entries],
            ),
        )


class DeviceQuarantine(BaseRule):
    """Per-device abnormal telemetry: the pipeline quarantines a device whose frames keep
    being refused (over its quota, failing integrity, replayed, malformed). A flooding or
    cloned TCU shows here. Part of ``telemetry-volume``; the fleet-wide half samples the
    pipeline's rates (detection/telemetry.py)."""

    id = "telemetry-volume"
    severity = AlertSeverity.MEDIUM
    names = frozenset({EventName.DEVICE_QUARANTINED.value})

    def __init__(self, config: TelemetryVolumeConfig) -> None:
        self._config = config
        self._window = Window(config.window)

    def observe(self, event: Observed) -> Sequence[Finding]:
        entries = self._window.add(event.object_id, event.at, event.id)
        if len(entries) < self._config.quarantines:
            return ()
        return (
            self.finding(
                event,
                subject_type="device",
                subject_id=event.object_id,
                tenant_id=event.tenant_id,
                summary=f"device {event.object_id} quarantined ({event.reason or 'no reason'}), "
                f"{len(entries)} time(s) in {describe(self._config.window)}",
                evidence=[e.event_id for e in entries],
            ),
        )
