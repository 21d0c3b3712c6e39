"""The command line: catalog export writes the inventory; bad settings exit with status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetward.cli.main import app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEETWARD_DATA_DIR", str(tmp_path / "var"))
    return tmp_path


def test_catalog_export_to_file(env: Path) -> None:
    target = env / "catalog.json"
    result = CliRunner().invoke(app, ["catalog", "export", "--output", str(target)])
    assert result.exit_code == 0, result.output
    routes = json.loads(target.read_text(encoding="utf-8"))["routes"]
    by_path = {(r["path"], tuple(r["methods"])): r for r in routes}
    assert by_path[("/readyz", ("GET",))]["permission"] == "public"
    assert by_path[("/mobile/v1/me", ("GET",))]["permission"] == "authenticated"
    assert all(r["owner"] and r["purpose"] and r["callers"] for r in routes)


def test_catalog_export_to_stdout(env: Path) -> None:
    result = CliRunner().invoke(app, ["catalog", "export"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["routes"]


def test_bad_settings_exit_2(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETWARD_PORT", "not-a-port")
    result = CliRunner().invoke(app, ["catalog", "export"])
    assert result.exit_code == 2
    assert "FLEETWARD_PORT" in result.output


PRODUCTION = {
    "FLEETWARD_ENVIRONMENT": "production",
    "FLEETWARD_PUBLIC_URL": "https://fleetward.example.com",
    "FLEETWARD_DATA_KEY": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=",  # test fixture
}


@pytest.mark.parametrize(
    "command", [["demo", "--no-serve"], ["investigate", "demo-incident"]], ids=" ".join
)
def test_the_demo_world_never_goes_into_a_production_store(
    env: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    # The demo's tenants, people (with their logins written to disk), vehicles and staged
    # incident are for development stores: with production settings nothing is created.
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "environment=production" in result.output
    assert not (env / "var").exists()
