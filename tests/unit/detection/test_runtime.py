"""The runtime's fleet-wide telemetry sample: judged only once there is a baseline (twice
rate_factor short windows, or the long window), then raised and counted as alerts."""

from __future__ import annotations

from sqlalchemy import select

from fleetward.audit.alerts import Alert
from fleetward.detection.config import DetectionConfig
from fleetward.detection.runtime import DetectionRuntime
from fleetward.platform import Platform
from fleetward.telemetry.metrics import MetricsSnapshot, SignalWindow


def flood(counted: int) -> MetricsSnapshot:
    """A surge, ``counted`` seconds into the metrics' 300 s window."""
    surge = {10: SignalWindow(80.0, 1.0), 60: SignalWindow(20.0, 1.0), 300: SignalWindow(4.0, 1.0)}
    covered = {10: min(10, counted), 60: min(60, counted), 300: counted}
    return MetricsSnapshot((10, 60, 300), {"doors.locked": surge}, covered=covered)


async def test_fleet_sample_waits_for_a_baseline(platform: Platform) -> None:
    counted = [99]  # 2 x rate_factor (5) x the short window (10 s) = 100 s
    runtime = DetectionRuntime(platform, DetectionConfig(), metrics=lambda: flood(counted[0]))
    assert await runtime.sample_telemetry() == 0
    counted[0] += 1
    assert await runtime.sample_telemetry() == 1
    assert await runtime.sample_telemetry() == 1
    async with platform.unit_of_work() as uow:
        (alert,) = list(await uow.session.scalars(select(Alert)))
    assert alert.rule == "telemetry-volume" and alert.subject_id == "doors.locked"
    assert alert.count == 2 and alert.evidence == []
