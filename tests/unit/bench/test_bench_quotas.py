"""The quota benchmark runs end to end at a tiny size and reports every figure.

A smoke test only: no figure is compared with a threshold (timings belong to
``fleetward bench``, never to the test suite)."""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from fleetward.bench import quotas
from fleetward.cli.bench import app as bench_cli

IN_PROCESS = {
    f"{name}_{stat}"
    for name in ("dict", "memory", "memory_consume")
    for stat in ("per_s", "p50_ms", "p99_ms")
} | {"ratio_memory_to_dict_per_s"}


def test_quota_bench_in_process_reports_every_figure() -> None:
    result = quotas.run(0.02, None)
    assert result.keys() == IN_PROCESS
    for key in IN_PROCESS:
        value = result[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, key


def test_quota_bench_reports_an_unreachable_redis_instead_of_failing() -> None:
    result = quotas.run(0.02, "redis://127.0.0.1:1/0")
    assert result["redis"] == "unreachable" and result.keys() == IN_PROCESS | {"redis"}


def test_quota_bench_cli() -> None:
    outcome = CliRunner().invoke(bench_cli, ["quotas", "--seconds", "0.2", "--no-redis"])
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(outcome.output).keys() == IN_PROCESS
