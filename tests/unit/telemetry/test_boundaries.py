"""Telemetry never carries commands and never takes identity from a payload: the package
cannot even reach the code that could start a command or look a device up."""

from __future__ import annotations

import ast
from pathlib import Path

import fleetward.telemetry

PACKAGE = Path(fleetward.telemetry.__file__).parent
# What ingestion may depend on. Commands, devices, identity, authz and the API surfaces are
# deliberately absent: a frame has no path to any of them.
ALLOWED = (
    "fleetward.telemetry",
    "fleetward.core",
    "fleetward.store",
    "fleetward.observability",
    "fleetward.gateway.session",
)


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_ingestion_reaches_nothing_that_can_act_on_a_vehicle() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 12
    for module in modules:
        ours = {name for name in imports(module) if name.startswith("fleetward")}
        stray = {name for name in ours if not name.startswith(ALLOWED)}
        assert stray == set(), module.name


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from fleetward.commands import dispatch\n")
    assert imports(probe) == {"fleetward.commands"}
