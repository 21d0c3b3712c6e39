"""Compiled stages: a build that no longer matches its sources never imports, and the build
in use is the one `make native` produced for every stage it lists."""

from __future__ import annotations

import importlib.util
import json
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

import pytest

import fleetward.telemetry
from fleetward.core.native import (
    NATIVE_MANIFEST,
    StaleNativeBuild,
    compiled_modules,
    source_digest,
    verify_native,
)

ROOT = Path(__file__).resolve().parents[3]
SUFFIX = EXTENSION_SUFFIXES[0]


def _package(tmp_path: Path, *, compiled: tuple[str, ...], manifest: dict[str, str] | None) -> Path:
    package = tmp_path / "pkg"
    package.mkdir()
    for name in ("stage", "other"):
        (package / f"{name}.py").write_text(f"NAME = {name!r}\n")
    for name in compiled:
        (package / f"{name}{SUFFIX}").write_bytes(b"\x7fELF not really")
    if manifest is not None:
        (package / NATIVE_MANIFEST).write_text(json.dumps(manifest))
    return package


def _built(tmp_path: Path) -> Path:
    """A package whose ``stage`` was compiled from its current source."""
    package = _package(tmp_path, compiled=("stage",), manifest=None)
    (package / NATIVE_MANIFEST).write_text(
        json.dumps({"stage": source_digest(package / "stage.py")})
    )
    return package


def test_a_package_without_compiled_modules_runs_its_sources(tmp_path: Path) -> None:
    package = _package(tmp_path, compiled=(), manifest=None)
    assert verify_native(package) == ()


def test_compiled_modules_matching_their_sources_are_named(tmp_path: Path) -> None:
    package = _built(tmp_path)
    assert compiled_modules(package) == ("stage",)
    assert verify_native(package) == ("stage",)


def test_a_source_edited_after_the_build_refuses_to_import(tmp_path: Path) -> None:
    package = _built(tmp_path)
    (package / "stage.py").write_text("NAME = 'edited'\n")
    with pytest.raises(StaleNativeBuild, match=r"pkg\.stage was compiled from another version"):
        verify_native(package)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (None, "without a manifest"),
        ({}, "compiled from another version"),  # a module the build did not list
        ({"stage": "0" * 64}, "compiled from another version"),
    ],
)
def test_a_build_it_cannot_vouch_for_refuses_to_import(
    tmp_path: Path, manifest: dict[str, str] | None, message: str
) -> None:
    package = _package(tmp_path, compiled=("stage",), manifest=manifest)
    with pytest.raises(StaleNativeBuild, match=message):
        verify_native(package)


def test_a_compiled_module_whose_source_is_gone_refuses_to_import(tmp_path: Path) -> None:
    package = _built(tmp_path)
    (package / "stage.py").unlink()
    with pytest.raises(StaleNativeBuild, match="compiled from another version"):
        verify_native(package)


def test_an_unreadable_manifest_refuses_to_import(tmp_path: Path) -> None:
    package = _package(tmp_path, compiled=("stage",), manifest=None)
    (package / NATIVE_MANIFEST).write_text('["stage"]')
    with pytest.raises(StaleNativeBuild, match="unreadable"):
        verify_native(package)


def _makefile_native_sources() -> tuple[str, ...]:
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("NATIVE_SOURCES :="):
            names = line.split(",", 1)[1].rstrip(")").split()
            return tuple(sorted(name.removesuffix(".py") for name in names))
    raise AssertionError("Makefile lists no NATIVE_SOURCES")


def test_the_suite_runs_the_compiled_stages_make_native_lists() -> None:
    # `make test` builds them first; run `make native` before calling pytest directly.
    listed = _makefile_native_sources()
    assert listed == fleetward.telemetry.COMPILED
    for name in listed:
        module = sys.modules.get(f"fleetward.telemetry.{name}") or importlib.import_module(
            f"fleetward.telemetry.{name}"
        )
        assert str(module.__file__).endswith(SUFFIX), name


def _build_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_native", ROOT / "tools/build_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_refuses_modules_with_coroutines_and_mixed_packages() -> None:
    tool = _build_tool()
    telemetry = ROOT / "src/fleetward/telemetry"
    with pytest.raises(SystemExit, match="holds a coroutine"):
        tool._package_of([telemetry / "envelope.py", telemetry / "pipeline.py"])
    with pytest.raises(SystemExit, match="one package directory"):
        tool._package_of([telemetry / "envelope.py", ROOT / "src/fleetward/core/clock.py"])
    assert tool._package_of([telemetry / "envelope.py"]) == telemetry
