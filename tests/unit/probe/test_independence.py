"""The probe's oracle is independent of the code under test: no module of the probe (except
the seeding hook, which runs on the deployment host and uses the platform's services) imports
the authorization engine, the API or the store, or reads the Cedar policies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fleetward.probe

FORBIDDEN = ("fleetward.authz", "fleetward.api", "fleetward.store")
PROBE = Path(fleetward.probe.__file__).parent
# The seeding hook (seed.py and the modules it is split into) is the one exception.
SEEDING = ("seed", "seed_world", "seed_records", "seed_cast")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROBE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _probe_modules() -> list[Path]:
    return sorted(
        path for path in PROBE.rglob("*.py") if not (path.parent == PROBE and path.stem in SEEDING)
    )


def _package_of(path: Path) -> str:
    module = _module_name(path)
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(source: str, package: str) -> set[str]:
    """Every module ``source`` (a module of ``package``) imports, relative ones resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) or getattr(node.func, "attr", None))
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
    return found


def _forbidden(names: set[str]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN))


def test_the_walk_sees_the_probe_and_leaves_out_only_the_seeding_hook() -> None:
    names = {_module_name(p) for p in _probe_modules()}
    assert {"fleetward.probe.oracle", "fleetward.probe.spec.models"} <= names
    assert not any(name.startswith("fleetward.probe.seed") for name in names)


@pytest.mark.parametrize("path", _probe_modules(), ids=lambda p: _module_name(p))
def test_no_probe_module_imports_the_code_under_test(path: Path) -> None:
    bad = _forbidden(_imports(path.read_text(encoding="utf-8"), _package_of(path)))
    assert not bad, f"{_module_name(path)} imports {bad}: the oracle must not ask the code"


@pytest.mark.parametrize("path", _probe_modules(), ids=lambda p: _module_name(p))
def test_no_probe_module_reads_the_policies(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    strings = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]
    assert not [s for s in strings if ".cedar" in s or "authz/policy" in s]


@pytest.mark.parametrize(
    "source",
    [
        "from fleetward.authz.pdp import CedarPdp",
        "import fleetward.store.engine",
        "from ...api import vehicles",  # relative, from fleetward.probe.generate
        "from ... import authz",
        "importlib.import_module('fleetward.authz.policy')",
    ],
)
def test_the_walk_catches_a_forbidden_import(source: str) -> None:
    # The check must be able to fail: each spelling of a forbidden import is seen.
    assert _forbidden(_imports(source, "fleetward.probe.generate"))


def test_the_walk_lets_the_probes_own_imports_through() -> None:
    allowed = "from fleetward.probe.model import Case\nfrom ..spec import models\n"
    assert not _forbidden(_imports(allowed, "fleetward.probe.generate"))
