"""Compile modules to C extensions with mypyc, in place, and record what was compiled.

    python tools/build_native.py src/fleetward/telemetry/envelope.py ...

Every source must live in one package directory under ``src/``. The package's previous
extension modules are removed first (a failed build leaves the pure-Python package, never a
mix of old and new), the sources are compiled as one mypyc group whose shared runtime is
``<package>__mypyc`` beside the package, and the manifest of the sources' digests is written
last, for :func:`fleetward.core.native.verify_native`. Only modules without coroutines are
compiled (``docs/decisions.md``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

from fleetward.core.native import NATIVE_MANIFEST, compiled_modules, source_digest  # noqa: E402


def _package_of(sources: list[Path]) -> Path:
    packages = {source.parent for source in sources}
    if len(packages) != 1:
        raise SystemExit("build_native: give sources of one package directory")
    (package,) = packages
    if not package.is_relative_to(SRC):
        raise SystemExit(f"build_native: {package} is not under {SRC}")
    for source in sources:
        if source.suffix != ".py" or not source.is_file():
            raise SystemExit(f"build_native: {source} is not a Python source file")
        if "async def" in source.read_text():
            raise SystemExit(f"build_native: {source.name} holds a coroutine; not compiled")
    return package


def _clean(package: Path) -> None:
    (package / NATIVE_MANIFEST).unlink(missing_ok=True)
    for name in compiled_modules(package):
        for built in package.glob(f"{name}.*"):
            if built.suffix != ".py":
                built.unlink()
    for runtime in package.parent.glob(f"{package.name}__mypyc.*"):
        runtime.unlink()


def build(sources: list[Path]) -> None:
    package = _package_of(sources)
    _clean(package)
    # Imported here: mypyc and setuptools are build tools, present in the dev environment.
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    group = ".".join(package.relative_to(SRC).parts)
    # mypy's cache (it makes rebuilds quicker) kept out of the source tree.
    os.environ.setdefault("MYPY_CACHE_DIR", str(SRC.parent / "build" / "native-cache"))
    with tempfile.TemporaryDirectory(prefix="fleetward-native-") as work:
        os.chdir(SRC)  # module names come from the paths relative to src/
        extensions = mypycify(
            [str(source.relative_to(SRC)) for source in sources],
            group_name=group,
            target_dir=str(Path(work) / "c"),
        )
        setup(
            name="fleetward-native",
            ext_modules=extensions,
            script_args=[
                "--quiet",
                "build_ext",
                "--inplace",
                f"--build-temp={work}/temp",
                f"--build-lib={work}/lib",
            ],
        )
    built = set(compiled_modules(package))
    missing = [source.stem for source in sources if source.stem not in built]
    if missing:
        raise SystemExit(f"build_native: not built: {', '.join(missing)}")
    manifest = {source.stem: source_digest(source) for source in sources}
    (package / NATIVE_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"build_native: {group}: {', '.join(sorted(manifest))}")


if __name__ == "__main__":
    build([Path(arg).resolve() for arg in sys.argv[1:]])
