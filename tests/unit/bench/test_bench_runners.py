"""The benchmark runners run end to end at a tiny size and report every figure.

Smoke tests only: no figure is compared with a threshold (timings belong to
``fleetward bench``, never to the test suite)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from fleetward.bench import authz, http_read, telemetry
from fleetward.cli.bench import app as bench_cli
from fleetward.store.engine import create_engine
from fleetward.store.migrate import upgrade
from fleetward.telemetry import COMPILED
from support.stores import StoreTemplates

AUTHZ_FIGURES = {
    f"{name}_{stat}"
    for name in ("bare", "decide", "decide_cold", "decide_cold_driver", "decide_store")
    for stat in ("per_s", "p50_ms", "p99_ms")
} | {
    "decide_many_per_decision_per_s",
    "ratio_decide_to_bare",
    "ratio_decide_cold_to_bare",
    "ratio_decide_cold_driver_to_bare",
}

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


def _server_url(backend: str, store_templates: StoreTemplates) -> str | None:
    """None (SQLite, the default) or the test PostgreSQL server, named by its maintenance
    database: the benchmark creates a database of its own there."""
    return None if backend == "sqlite" else store_templates.postgres_url("postgres")


async def _database_exists(server: str, name: str) -> bool:
    engine = create_async_engine(http_read.postgres_server(server))
    try:
        async with engine.connect() as connection:
            found = await connection.scalar(
                text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": name}
            )
    finally:
        await engine.dispose()
    return bool(found)


def test_http_read_bench_serves_real_authorized_reads(
    backend: str, store_templates: StoreTemplates
) -> None:
    result = http_read.run(
        12, concurrency=2, rounds=1, database_url=_server_url(backend, store_templates)
    )
    assert result.keys() >= HTTP_FIGURES
    _finite_and_positive(result, HTTP_FIGURES)
    # Every read was allowed: a benchmark of refusals would measure the wrong path.
    assert result["app_failures"] == 0
    assert result["bare_failures"] == 0
    assert result["requests_per_round"] == 12


def _failing_run(server: str, seen: list[str]) -> None:
    """A run that fails once its database exists (the database's name goes to ``seen``)."""
    with http_read._store(server) as store:
        assert store is not None
        name = make_url(store).database
        assert name is not None and name.startswith("fleetward_bench_")
        assert asyncio.run(_database_exists(server, name))
        seen.append(name)
        raise RuntimeError("the run failed")


def test_http_read_store_is_a_fresh_database_dropped_after_the_run(
    backend: str, store_templates: StoreTemplates
) -> None:
    server = _server_url(backend, store_templates)
    if server is None:  # SQLite: the run's temporary directory holds the store
        with http_read._store(None) as store:
            assert store is None
        return
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="the run failed"):
        _failing_run(server, seen)
    # Dropped even though the run failed: a benchmark leaves no database behind.
    assert len(seen) == 1 and not asyncio.run(_database_exists(server, seen[0]))


@pytest.mark.parametrize(
    "url", ["sqlite:///fleetward.db", "sqlite+aiosqlite:///x.db", "mysql://root@localhost/db"]
)
def test_http_read_refuses_a_store_url_that_is_not_postgresql(url: str) -> None:
    # SQLite is the default; the benchmark never migrates and seeds a file it was given.
    with pytest.raises(ValueError, match="postgresql"):
        http_read.run(12, concurrency=1, rounds=1, database_url=url)
    outcome = CliRunner().invoke(bench_cli, ["http-read", "--database-url", url])
    assert outcome.exit_code == 2
    assert "--database-url" in outcome.output


def test_cli_offers_the_http_read_benchmark() -> None:
    outcome = CliRunner().invoke(bench_cli, ["http-read", "--help"])
    assert outcome.exit_code == 0
    assert "--requests" in outcome.output and "--concurrency" in outcome.output
    assert "--database-url" in outcome.output


TELEMETRY_FIGURES = {
    "compiled_stages",
    "history_rows",
    "bare_msgs_per_s",
    "pipeline_msgs_per_s",
    "ratio_pipeline_to_bare",
    "bare_msgs_per_cpu_s",
    "pipeline_msgs_per_cpu_s",
    "ratio_per_cpu_s",
    "latency_offered_msgs_per_s",
    "latency_acked",
    "ack_latency_p50_ms",
    "ack_latency_p99_ms",
    "ack_latency_max_ms",
}


def test_telemetry_bench_keeps_its_sessions_across_slices() -> None:
    """The same 2,000 sessions send in every slice and in the latency run: a counter or
    sequence that did not continue would be refused (stale counter, duplicate), and the
    bench raises on any refused frame."""
    result = telemetry.run(0.4, history=2_000)
    assert result.keys() == TELEMETRY_FIGURES
    assert result["history_rows"] == 2_000
    assert result["compiled_stages"] == len(COMPILED)  # says what was measured
    _finite_and_positive(result, TELEMETRY_FIGURES - {"compiled_stages"})
    assert result["latency_acked"] > 0


def test_telemetry_frames_continue_above_the_last_sealed() -> None:
    world = telemetry._World(engine=None)  # type: ignore[arg-type]
    world.vehicle_ids = ["veh_one"]
    (device,) = world.devices(1)
    device.refill(3)
    first = [telemetry.HEADER.unpack_from(frame)[2:4] for frame in device.frames]
    device.refill(2)
    second = [telemetry.HEADER.unpack_from(frame)[2:4] for frame in device.frames]
    assert first == [(1, 1), (2, 2), (3, 3)]
    assert second == [(4, 4), (5, 5)]


def test_telemetry_history_is_stored_before_measuring(tmp_path: Path) -> None:
    async def stored() -> int:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
        try:
            await upgrade(engine)
            world = telemetry._World(engine)
            await world.create(3)
            await world.history(250)
            async with engine.connect() as connection:
                count = await connection.scalar(text("SELECT count(*) FROM telemetry_messages"))
                devices = await connection.scalar(
                    text("SELECT count(DISTINCT device_id) FROM telemetry_messages")
                )
            assert devices == 3  # 100 messages per past device: 100, 100, 50
            return int(count or 0)
        finally:
            await engine.dispose()

    assert asyncio.run(stored()) == 250


def test_telemetry_refuses_a_negative_history() -> None:
    with pytest.raises(ValueError, match="history"):
        telemetry.run(0.4, history=-1)
