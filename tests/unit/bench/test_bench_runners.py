"""The benchmark runners run end to end at a tiny size and report every figure.

Smoke tests only: no figure is compared with a threshold (timings belong to
``fleetward bench``, never to the test suite)."""

from __future__ import annotations

import math

from typer.testing import CliRunner

from fleetward.bench import authz, http_read
from fleetward.cli.bench import app as bench_cli

AUTHZ_FIGURES = {
    f"{name}_{stat}"
    for name in ("bare", "decide", "decide_cold", "decide_store")
    for stat in ("per_s", "p50_ms", "p99_ms")
} | {"decide_many_per_decision_per_s", "ratio_decide_to_bare", "ratio_decide_cold_to_bare"}

HTTP_FIGURES = {
    f"{name}_{stat}"
    for name in ("bare", "app")
    for stat in ("per_s", "p50_ms", "p99_ms", "failures")
} | {"ratio_per_s", "requests_per_round", "rounds", "concurrency"}


def _finite_and_positive(result: dict[str, float], keys: set[str]) -> None:
    for key in keys:
        assert math.isfinite(result[key]) and result[key] >= 0, key


def test_authz_bench_reports_every_figure_with_the_store() -> None:
    result = authz.run(0.02, with_store=True)
    assert result.keys() >= AUTHZ_FIGURES
    _finite_and_positive(result, AUTHZ_FIGURES)
    assert result["decide_per_s"] > 0 and result["bare_per_s"] > 0


def test_authz_bench_runs_without_the_store() -> None:
    result = authz.run(0.02, with_store=False)
    assert not any(key.startswith("decide_store") for key in result)
    assert AUTHZ_FIGURES - {k for k in AUTHZ_FIGURES if k.startswith("decide_store")} <= (
        result.keys()
    )


def test_http_read_bench_serves_real_authorized_reads() -> None:
    result = http_read.run(12, concurrency=2, rounds=1)
    assert result.keys() >= HTTP_FIGURES
    _finite_and_positive(result, HTTP_FIGURES)
    # Every read was allowed: a benchmark of refusals would measure the wrong path.
    assert result["app_failures"] == 0
    assert result["bare_failures"] == 0
    assert result["requests_per_round"] == 12


def test_cli_offers_the_http_read_benchmark() -> None:
    outcome = CliRunner().invoke(bench_cli, ["http-read", "--help"])
    assert outcome.exit_code == 0
    assert "--requests" in outcome.output and "--concurrency" in outcome.output
