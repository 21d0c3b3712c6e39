# Two commands do everything: `make run` and `make test`. Both set up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint setup native clean-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The telemetry frame path's synchronous stages, compiled with mypyc (docs/decisions.md);
# rebuilt whenever one of them changes. The package refuses to import a stale build.
NATIVE_SOURCES := $(addprefix src/fleetward/telemetry/,envelope.py freshness.py limits.py metrics.py ordering.py quotas.py)
NATIVE := src/fleetward/telemetry/native-build.json

$(NATIVE): $(STAMP) $(NATIVE_SOURCES) Makefile tools/build_native.py src/fleetward/core/native.py
	$(BIN)/python tools/build_native.py $(NATIVE_SOURCES)

native: $(NATIVE)

setup: $(STAMP) $(NATIVE)

## run: migrate the embedded database, seed the demo world and serve the platform
run: $(NATIVE)
	$(BIN)/fleetward demo

## test: the whole suite (unit, integration, e2e, security), one worker per CPU (pytest-xdist)
test: $(NATIVE)
	$(BIN)/python -m pytest -n auto

## lint: ruff and mypy (strict on src/)
lint: $(STAMP)
	$(BIN)/ruff check src tests tools
	$(BIN)/ruff format --check src tests tools
	$(BIN)/mypy
	$(BIN)/mypy --strict tools

clean-data:
	rm -rf var
