"""Fleet-wide rates per signal over sliding windows."""

from __future__ import annotations

import msgspec
import pytest

from fleetward.telemetry.errors import Status
from fleetward.telemetry.freshness import DriftReport
from fleetward.telemetry.metrics import TelemetryMetrics
from unit.telemetry.kit import FakeMonotonic

PATHS = ("Vehicle.Speed", "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked")
UNSET = msgspec.UNSET


def test_rates_and_means_per_window() -> None:
    clock = FakeMonotonic()
    metrics = TelemetryMetrics(PATHS, windows=(10, 60), monotonic=clock)
    for second in range(60):
        clock.advance(1)
        metrics.accepted((50.0, UNSET))
        if second >= 50:  # the last ten seconds: the whole fleet locks its doors
            metrics.accepted((UNSET, True))

    snapshot = metrics.snapshot()
    speed = snapshot.signals["Vehicle.Speed"]
    assert speed[10].messages_per_s == pytest.approx(1.0)
    assert speed[60].messages_per_s == pytest.approx(1.0)
    assert speed[60].mean == pytest.approx(50.0)
    locked = snapshot.signals["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"]
    assert locked[10].messages_per_s == pytest.approx(1.0)
    assert locked[60].messages_per_s == pytest.approx(10 / 60)
    # A sudden fleet-wide change stands out against the long window.
    assert snapshot.change["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"] == pytest.approx(6.0)
    assert snapshot.change["Vehicle.Speed"] == pytest.approx(1.0)


def test_old_buckets_leave_the_windows() -> None:
    clock = FakeMonotonic()
    metrics = TelemetryMetrics(PATHS, windows=(10, 60), monotonic=clock)
    metrics.accepted((10.0, False))
    metrics.refused(Status.BAD_MAC)
    metrics.drift(DriftReport("dev", "ses", 90_000, store_and_forward=False))
    clock.advance(30)
    snapshot = metrics.snapshot()
    assert snapshot.signals["Vehicle.Speed"][10].messages_per_s == 0
    assert snapshot.signals["Vehicle.Speed"][10].mean is None
    # 31 seconds of the 60 s window counted so far (the process started with the first).
    assert snapshot.covered == {10: 10, 60: 31}
    assert snapshot.signals["Vehicle.Speed"][60].messages_per_s == pytest.approx(1 / 31)
    assert snapshot.refused["bad-mac"] == {60: pytest.approx(1 / 31)}
    assert snapshot.drift_reports == {10: 0, 60: 1}
    clock.advance(61)
    assert metrics.snapshot().signals == {}


def test_windows_must_be_whole_seconds() -> None:
    with pytest.raises(ValueError, match="windows"):
        TelemetryMetrics(PATHS, windows=(0,))


def test_a_window_counts_only_the_seconds_since_start() -> None:
    # A steady fleet, 20 messages a second, 40 s after a restart: the 300 s window has seen
    # 40 s of it, and its rate is the fleet's rate, not 40/300 of it.
    clock = FakeMonotonic()
    metrics = TelemetryMetrics(PATHS, windows=(10, 300), monotonic=clock)
    for _ in range(40):
        clock.advance(1)
        for _ in range(20):
            metrics.accepted((50.0, UNSET))
    snapshot = metrics.snapshot()
    speed = snapshot.signals["Vehicle.Speed"]
    assert snapshot.covered == {10: 10, 300: 41}
    assert speed[10].messages_per_s == pytest.approx(20.0)
    assert speed[300].messages_per_s == pytest.approx(20 * 40 / 41)
    assert snapshot.change["Vehicle.Speed"] == pytest.approx(41 / 40)
