"""`fleetward investigate demo-incident`: the demo world's scripted incident (a stolen token
used from a new network against three vehicles) is staged through the real routes and
investigated with one command; the blast radius is exactly those three vehicles."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine, select

from fleetward.vehicles.models import Vehicle
from support.server import fleetward_env, run_cli


def test_the_demo_incident_is_investigated_with_one_command(tmp_path: Path, free_port: int) -> None:
    data = tmp_path / "var"
    env = fleetward_env(data, free_port)
    seeded = run_cli("demo", "--no-serve", env=env)
    assert seeded.returncode == 0, seeded.stderr
    result = run_cli("investigate", "demo-incident", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert "incident staged: token family fam_incident_" in result.stderr
    report = json.loads(result.stdout)
    engine = create_engine(f"sqlite:///{data / 'fleetward.db'}")
    with engine.connect() as connection:
        labels = dict(connection.execute(select(Vehicle.id, Vehicle.label)).all())
    engine.dispose()
    touched = sorted(labels[v["vehicle_id"]] for v in report["vehicles"] if v["touched"])
    attempted = sorted(labels[v["vehicle_id"]] for v in report["vehicles"] if not v["touched"])
    assert touched == ["ACME-N1", "ACME-N2", "ACME-N3"]
    assert attempted == ["ACME-S1", "ACME-S2"]  # refused: not the operator's group
    assert "Bearer" not in result.stdout + result.stderr  # the stolen token is never printed
    # The thief's address alone finds the same vehicles, and the stolen family behind it.
    by_address = run_cli(
        "investigate", "blast-radius", "source-ip", "203.0.113.0/24", "--format", "json", env=env
    )
    assert by_address.returncode == 0, by_address.stderr
    address = json.loads(by_address.stdout)
    assert address["vehicles"] == report["vehicles"]
    assert address["token_families"] == [report["query"]["value"]]
    assert address["source_ips"] == ["203.0.113.77"]


def test_without_the_demo_world_it_says_so(tmp_path: Path, free_port: int) -> None:
    env = fleetward_env(tmp_path / "var", free_port)
    assert run_cli("migrate", env=env).returncode == 0
    result = run_cli("investigate", "demo-incident", env=env)
    assert result.returncode == 1
    assert "fleetward demo --no-serve" in result.stderr
