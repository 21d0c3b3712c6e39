"""Fleet-wide telemetry volume, sampled from the pipeline's own metrics.

The pipeline keeps per-signal message rates over sliding windows (10 s, 60 s, 300 s:
``TelemetryPipeline.metrics()``) and refusals per status. A signal whose short-window rate is
far above its long-window rate (the fleet's recent baseline), and high in absolute terms, is a
flood: a fleet-wide replay, a misbehaving software release, or a botnet of cloned devices.
Frames refused for quota fleet-wide point the same way. Per-device volume is the device
quarantine half of the rule (rules/vehicles.py): the pipeline quarantines a device whose
frames keep being refused, and its per-device quota refuses frames above the device's rate;
a device with many such refusals in the short window is an alert of its own here.

The metrics are per process; a replica samples its own share of the fleet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from fleetward.audit.alerts import AlertSeverity
from fleetward.detection.config import TelemetryVolumeConfig
from fleetward.detection.finding import Finding, clip, dedup_key
from fleetward.telemetry.errors import Status
from fleetward.telemetry.metrics import MetricsSnapshot

RULE_ID: Final = "telemetry-volume"
QUOTA_SLUG: Final = Status.QUOTA_EXCEEDED.slug


@dataclass(frozen=True, slots=True)
class FleetRates:
    """Messages per second per signal over the shortest and longest windows, and quota
    refusals per second over the shortest window."""

    short_window: int
    long_window: int
    signals: Mapping[str, tuple[float, float]]
    quota_refusals_per_s: float
    # device id -> frames refused for its quota over the shortest window.
    quota_devices: Mapping[str, int] = field(default_factory=dict)
    # Seconds of the longest window the metrics have counted (all of it once they have run
    # that long): the baseline the rates are judged against.
    counted: int = 0

    @classmethod
    def of(cls, snapshot: MetricsSnapshot) -> FleetRates:
        short, long = snapshot.windows[0], snapshot.windows[-1]
        signals = {
            path: (windows[short].messages_per_s, windows[long].messages_per_s)
            for path, windows in snapshot.signals.items()
        }
        refused = snapshot.refused.get(QUOTA_SLUG, {}).get(short, 0.0)
        counted = snapshot.covered.get(long, long)
        return cls(short, long, signals, refused, dict(snapshot.quota_devices), counted)


class FleetTelemetryVolume:
    """The fleet-wide half of ``telemetry-volume``: judges one sample of the rates."""

    id = RULE_ID
    severity = AlertSeverity.MEDIUM

    def __init__(self, config: TelemetryVolumeConfig) -> None:
        self._config = config

    def sample(self, rates: FleetRates, at: datetime) -> Sequence[Finding]:
        config = self._config
        found: list[Finding] = []
        for path, (short, long) in sorted(rates.signals.items()):
            if short < config.min_rate_per_s or short < config.rate_factor * long:
                continue
            found.append(
                self._finding(
                    "signal",
                    path,
                    f"fleet-wide {path}: {short:.1f} msg/s over {rates.short_window} s, "
                    f"{short / long if long else float('inf'):.1f}x the {rates.long_window} s "
                    f"rate ({long:.1f} msg/s)",
                    at,
                )
            )
        for device_id, count in sorted(rates.quota_devices.items()):
            if count >= config.device_quota_refusals:
                found.append(
                    self._finding(
                        "device",
                        device_id,
                        f"device {device_id}: {count} telemetry frames refused for its quota "
                        f"over {rates.short_window} s (far above its rate)",
                        at,
                    )
                )
        if rates.quota_refusals_per_s >= config.quota_refusals_per_s:
            found.append(
                self._finding(
                    "fleet",
                    "telemetry-quota",
                    f"fleet-wide: {rates.quota_refusals_per_s:.1f} telemetry frames/s refused "
                    f"for quota over {rates.short_window} s",
                    at,
                )
            )
        return found

    def _finding(self, subject_type: str, subject_id: str, summary: str, at: datetime) -> Finding:
        return Finding(
            rule=self.id,
            severity=self.severity,
            dedup_key=dedup_key(self.id, f"{subject_type}:{subject_id}", at),
            subject_type=subject_type,
            subject_id=clip(subject_id, 64),
            tenant_id=None,
            summary=clip(summary, 256),
            evidence=(),
            at=at,
        )
