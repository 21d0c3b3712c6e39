"""``fleetward bench commands --replicas 2``: two app servers in child processes on one store
and one Redis, the vehicles split between them, every command sent to the replica that does
NOT hold its vehicle's session, and every one executed. A smoke test of the benchmark's
replica mode (no figure is compared with a threshold); the hand-over itself is proved in
``test_command_bus.py``. Redis is required (FLEETWARD_REQUIRE_SERVICES in CI)."""

from __future__ import annotations

import os

import pytest

from conftest import require_service
from fleetward.bench.commands import BenchConfig, run

REDIS_URL = os.environ.get("FLEETWARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def test_two_replicas_execute_every_command_sent_across_them() -> None:
    require_service("Redis", REDIS_URL)
    config = BenchConfig(
        vehicles=6,
        rate=10,
        seconds=0.6,  # 6 commands
        lock_seconds=0,
        steps=(10.0,),
        step_seconds=0.6,
        bare_seconds=0,
        warmup=4,
        idle_seconds=0.2,
        replicas=2,
        redis_url=REDIS_URL,
    )
    report = run(config)
    assert report["config"]["replicas"] == 2
    assert report["placement"].startswith("2 replicas on cores")
    assert report["app"]["outcomes"] == {"executed": 6}
    assert report["steps"][0]["outcomes"] == {"executed": 6}
    assert report["vehicles_did"]["commands"] == {"acted:ok": 4 + 6 + 6}
    assert not report["vehicles_did"]["ends"]
    # Both servers' CPU is counted (each reads its own /proc entry).
    assert report["app"]["server_cpu_s"] > 0


@pytest.mark.parametrize(
    "bad",
    [
        {"replicas": 2},  # no Redis: the replicas could not hand each other commands
        {"replicas": 2, "redis_url": REDIS_URL, "inprocess": True},
        {"replicas": 0},
        {"replicas": 17, "redis_url": REDIS_URL},
    ],
)
def test_a_replica_config_that_cannot_run_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="replicas"):
        BenchConfig(**bad)  # type: ignore[arg-type]
