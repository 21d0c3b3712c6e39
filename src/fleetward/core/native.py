"""Modules compiled to native code, and the check that each still matches its source.

The telemetry frame path's synchronous stages are compiled with mypyc (``make native``, which
``make run`` and ``make test`` run first; ``tools/build_native.py``; the reasons are in
``docs/decisions.md``). An extension module sits next to its ``.py`` and wins the import, so
a source edited after the build would silently run the old code. The build writes a manifest
of the digests of the sources it compiled; :func:`verify_native` compares them on import of
the package and refuses a stale build (fail closed: code nobody can read never runs).
"""

from __future__ import annotations

import hashlib
import json
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

NATIVE_MANIFEST = "native-build.json"


class StaleNativeBuild(ImportError):
    """A compiled module does not match its source (or its build left no manifest)."""


def source_digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def compiled_modules(package_dir: Path) -> tuple[str, ...]:
    """The names of the modules of ``package_dir`` present as extension modules."""
    names = {
        entry.name.partition(".")[0]
        for entry in package_dir.iterdir()
        if entry.name.endswith(tuple(EXTENSION_SUFFIXES))
    }
    return tuple(sorted(names))


def verify_native(package_dir: Path) -> tuple[str, ...]:
    """Check every compiled module of ``package_dir`` against the manifest written when it was
    built; returns their names (empty when the package runs as pure Python)."""
    compiled = compiled_modules(package_dir)
    if not compiled:
        return ()
    remedy = "run `make native` (or delete the extension modules to run the Python sources)"
    try:
        recorded = json.loads((package_dir / NATIVE_MANIFEST).read_text())
    except (OSError, ValueError):
        raise StaleNativeBuild(
            f"{package_dir.name}: compiled modules without a manifest: {remedy}"
        ) from None
    if not isinstance(recorded, dict):
        raise StaleNativeBuild(f"{package_dir.name}: unreadable native manifest: {remedy}")
    for name in compiled:
        source = package_dir / f"{name}.py"
        if not source.exists() or recorded.get(name) != source_digest(source):
            raise StaleNativeBuild(
                f"{package_dir.name}.{name} was compiled from another version of {name}.py: "
                + remedy
            )
    return compiled
