"""The commands benchmark runs end to end at a tiny size and reports sane figures.

A smoke test only: no figure is compared with a threshold (timings belong to ``fleetward
bench commands``, never to the test suite). In-process mode: the server, the simulated
vehicles and the client share this process's event loop.
"""

from __future__ import annotations

import gc
import math
from typing import Any

import pytest

from fleetward.bench.commands import BenchConfig, Phase, run

LATENCIES = ("accept", "executed_seen", "executed_recorded")


def _sane_latencies(phase: dict[str, Any]) -> None:
    for name in LATENCIES:
        p50, p99, top = (phase[f"{name}_{stat}_ms"] for stat in ("p50", "p99", "max"))
        assert all(math.isfinite(v) for v in (p50, p99, top)), name
        assert 0 < p50 <= p99 <= top, name
    # Recorded (the server's clock, inside the recording transaction) comes before the
    # observer sees the commit, and both come after the 202 was sent back... or around it:
    # the 202 and the outcome race, so only the first order is certain.
    assert phase["executed_recorded_p50_ms"] <= phase["executed_seen_p50_ms"]


def test_five_vehicles_ten_commands_every_one_executed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The load generator freezes its objects once the fleet is connected; recorded here, not
    # done (frozen objects in the test session's process would never be collected). The app's
    # own start-up freeze is told one happened already.
    frozen: list[int] = []
    monkeypatch.setattr(gc, "get_freeze_count", lambda: 1)
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))
    config = BenchConfig(
        vehicles=5,
        rate=20,
        seconds=0.5,  # 10 commands
        lock_rate=10,
        lock_seconds=0.5,  # 5 locks, one per vehicle
        steps=(20.0,),
        step_seconds=0.5,
        bare_seconds=0.5,
        warmup=5,
        idle_seconds=0.2,
        inprocess=True,
        capture_logs=False,  # leave the test session's logging as it is
    )
    report = run(config)
    assert report["fleet_frozen"] is True and frozen == [1]

    app = report["app"]
    assert app["sent"] == 10
    assert app["statuses"] == {"202": 10}
    assert app["outcomes"] == {"executed": 10} and app["executed"] == 10
    _sane_latencies(app)
    assert app["server_cpu_s"] > 0 and app["per_cpu_s"] > 0

    lock = report["lock"]
    assert lock["outcomes"] == {"executed": 5}
    _sane_latencies(lock)

    bare = report["bare"]
    assert bare["statuses"] == {"202": 10}  # the ceiling answers the same POST, not a 422
    assert bare["per_cpu_s"] > 0
    assert "ratio_per_cpu_s" in report and report["ratio_per_cpu_s"] > 0

    (step,) = report["steps"]
    assert step["offered_per_s"] == 20 and isinstance(step["sustained"], bool)
    assert report["idle_before_server_cpu_per_s"] >= 0
    assert report["idle_after_server_cpu_per_s"] >= 0
    assert isinstance(step["p99_within_target"], bool)
    # The budget one command has at the headline rate beside the idle load, and what the
    # phases spent above that load (it can come out below zero only if the idle figure
    # overstates the load, never above the phase's whole CPU per command).
    idle = report["idle_after_server_cpu_per_s"]
    assert report["cpu_budget_ms_per_command_at_rate"] == round(1000 * (1 - idle) / 20, 3)
    for phase in (step, app):
        above = phase["server_cpu_ms_per_command_above_idle"]
        assert above is not None
        assert above <= 1000 * phase["server_cpu_s"] / phase["executed"]

    # What the vehicles did matches what the platform recorded: every executed job was
    # acted on once by its vehicle (warm-up, bare sample, step, lock and headline).
    total = config.warmup + 1 + 10 + 5 + 10
    assert report["vehicles_did"]["commands"] == {"acted:ok": total}
    assert not report["vehicles_did"]["ends"]
    assert report["observer_polls"] > 0


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"command": "lock"}, "non-exclusive"),  # one in flight per vehicle: not throughput
        ({"command": "unlock"}, "non-exclusive"),  # exclusive and a state precondition
        ({"command": "charging_control"}, "precondition"),  # refused unless plugged in
        ({"vehicles": 0}, "vehicles"),
        ({"rate": 0}, "positive rate"),
        ({"steps": (0.0,)}, "step rates"),
    ],
)
def test_a_config_that_would_not_measure_throughput_is_refused(
    bad: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        BenchConfig(**bad)


def test_cpu_above_idle_takes_the_idle_load_out_per_executed_command() -> None:
    # 3 s of server CPU over 10 s of wall time, an idle load of 0.1 CPU-s a second, 100
    # commands executed and 2 refused: (3 - 1) s over 100 commands is 20 ms each.
    phase = Phase("step", 10.0, 102)
    phase.server_cpu_s, phase.wall_s = 3.0, 10.0
    phase.outcomes.update({"executed": 100, "rejected": 2})
    assert phase.above_idle_ms(0.1) == 20.0
    assert phase.above_idle_ms(None) is None
    phase.outcomes.clear()
    assert phase.above_idle_ms(0.1) is None  # nothing executed: no per-command figure
