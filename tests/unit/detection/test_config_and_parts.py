"""Thresholds from TOML (typos refused), fleet-wide telemetry samples, evidence merging."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetward.detection.config import RULE_SECTIONS, ConfigInvalid, DetectionConfig, load, parse
from fleetward.detection.raising import merge_evidence
from fleetward.detection.rules import RULE_IDS
from fleetward.detection.telemetry import QUOTA_SLUG, FleetRates, FleetTelemetryVolume
from fleetward.detection.windows import Window
from fleetward.telemetry.errors import Status
from fleetward.telemetry.metrics import MetricsSnapshot, SignalWindow, TelemetryMetrics
from unit.detection.kit import T0


def test_no_file_is_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path / "detection.toml") == DetectionConfig()


def test_overrides_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "detection.toml"
    path.write_text(
        "[evaluator]\npoll_seconds = 2.5\n"
        "[rules.vin-enumeration]\ndistinct_vehicles = 8\nwindow = 900\n"
        "[rules.deprecated-api-use]\nenabled = false\n"
        '[rules.bulk-command]\nsensitive_commands = ["vehicle:unlock"]\n',
        encoding="utf-8",
    )
    config = load(path)
    assert config.evaluator.poll_seconds == 2.5
    assert config.rules.enumeration.distinct_vehicles == 8
    assert config.rules.enumeration.window == timedelta(seconds=900)
    assert config.rules.deprecated_api.enabled is False
    assert config.rules.bulk_command.sensitive_commands == ("vehicle:unlock",)


@pytest.mark.parametrize(
    "document",
    [
        {"rules": {"vin-enumeratoin": {}}},  # a misspelt rule id never leaves defaults silently
        {"rules": {"vin-enumeration": {"distinct": 3}}},  # an unknown setting
        {"rules": {"vin-enumeration": {"distinct_vehicles": 0}}},  # zero disables by stealth
        {"rules": {"vin-enumeration": {"distinct_vehicles": True}}},  # a bool is not a count
        {"rules": {"vin-enumeration": {"window": -5}}},  # a negative window
        {"rules": {"vin-enumeration": {"enabled": "no"}}},  # a string is not a switch
        {"rules": {"vin-enumeration": []}},  # not a table
        {"rules": []},  # not a table of rules
        {"alerts": {}},  # an unknown section
    ],
)
def test_invalid_documents_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(ConfigInvalid):
        parse(document)


def test_not_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "detection.toml"
    path.write_text("[rules\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid):
        load(path)


def test_every_rule_has_a_config_section() -> None:
    assert set(RULE_SECTIONS) == set(RULE_IDS)


def _snapshot(short: float, long: float, quota: float = 0.0) -> MetricsSnapshot:
    windows = (10, 60, 300)
    return MetricsSnapshot(
        windows,
        {
            "doors.locked": {
                10: SignalWindow(short, 1.0),
                60: SignalWindow(long, 1.0),
                300: SignalWindow(long, 1.0),
            }
        },
        {QUOTA_SLUG: {10: quota, 60: quota / 2, 300: quota / 5}},
    )


@pytest.mark.parametrize(
    ("short", "long", "quota", "alerts"),
    [
        (60.0, 5.0, 0.0, 1),  # a fleet-wide flood of door events: 12x the baseline
        (8.0, 7.5, 0.0, 0),  # steady traffic
        (3.0, 0.1, 0.0, 0),  # a quiet fleet waking up: a big ratio of very little
        (6.0, 6.0, 4.0, 1),  # steady accepted traffic, but frames refused for quota
    ],
)
def test_fleet_rates(short: float, long: float, quota: float, alerts: int) -> None:
    rates = FleetRates.of(_snapshot(short, long, quota))
    found = FleetTelemetryVolume(DetectionConfig().rules.telemetry_volume).sample(rates, T0)
    assert len(found) == alerts
    assert all(f.rule == "telemetry-volume" and f.evidence == () for f in found)


def test_merge_evidence_keeps_first_and_newest() -> None:
    merged = merge_evidence([f"e{i}" for i in range(10)], ["e3", "e10", "e11"], cap=6)
    assert merged == ["e0", "e1", "e2", "e9", "e10", "e11"]
    assert merge_evidence(["a"], ["a", "b"], cap=50) == ["a", "b"]


def test_window_forgets_old_entries_and_old_keys() -> None:
    window = Window(timedelta(minutes=10), max_keys=2)
    window.add("a", T0, "e1")
    assert [e.event_id for e in window.add("a", T0 + timedelta(minutes=11), "e2")] == ["e2"]
    window.add("b", T0, "e3")
    window.add("c", T0, "e4")  # "a" is the least recently used: dropped
    assert [e.event_id for e in window.add("a", T0, "e5")] == ["e5"]


@pytest.mark.parametrize(
    ("refused", "alerts"),
    [
        # One device sending far above its rate (a stuck loop, a replay tool): its own alert.
        ({"dev_flooding": 50}, 1),
        # Two devices briefly over their burst: below the per-device threshold, quiet.
        ({"dev_a": 3, "dev_b": 5}, 0),
    ],
)
def test_a_device_far_above_its_rate_alerts(refused: dict[str, int], alerts: int) -> None:
    snapshot = dataclasses.replace(_snapshot(5.0, 5.0), quota_devices=refused)
    found = FleetTelemetryVolume(DetectionConfig().rules.telemetry_volume).sample(
        FleetRates.of(snapshot), T0
    )
    assert [(f.subject_type, f.subject_id) for f in found] == [
        ("device", d) for d, n in refused.items() if n >= 20
    ][:alerts]


def test_the_pipeline_metrics_count_quota_refusals_per_device() -> None:
    clock = [100.0]
    metrics = TelemetryMetrics(["Vehicle.Speed"], monotonic=lambda: clock[0])
    for _ in range(25):
        metrics.refused(Status.QUOTA_EXCEEDED, "dev_flooding")
    metrics.refused(Status.BAD_MAC, "dev_other")  # not a quota refusal: not counted
    assert metrics.snapshot().quota_devices == {"dev_flooding": 25}
    clock[0] += 60  # past the shortest window
    assert metrics.snapshot().quota_devices == {}


def test_a_restart_is_not_a_flood_and_a_flood_after_it_is() -> None:
    # The fleet sends 30 speed messages a second, steadily; the process started 45 s ago.
    clock = [100.0]
    metrics = TelemetryMetrics(["Vehicle.Speed"], monotonic=lambda: clock[0])
    rule = FleetTelemetryVolume(DetectionConfig().rules.telemetry_volume)

    def run(seconds: int, per_second: int) -> list[str]:
        for _ in range(seconds):
            clock[0] += 1
            for _ in range(per_second):
                metrics.accepted((50.0,))
        return [f.subject_id for f in rule.sample(FleetRates.of(metrics.snapshot()), T0)]

    assert run(45, 30) == []
    # Five minutes of it, then ten times as much: that is a flood.
    assert run(300, 30) == []
    assert run(10, 300) == ["Vehicle.Speed"]


def test_a_flood_soon_after_a_restart_shows() -> None:
    # 100 s after a restart (the runtime's baseline_seconds), a tenfold flood already shows.
    clock = [100.0]
    metrics = TelemetryMetrics(["Vehicle.Speed"], monotonic=lambda: clock[0])
    rule = FleetTelemetryVolume(DetectionConfig().rules.telemetry_volume)
    for per_second in [30] * 100 + [300] * 10:
        clock[0] += 1
        for _ in range(per_second):
            metrics.accepted((50.0,))
    found = rule.sample(FleetRates.of(metrics.snapshot()), T0)
    assert [f.subject_id for f in found] == ["Vehicle.Speed"]
