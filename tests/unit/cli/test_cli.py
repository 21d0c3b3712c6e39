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
