# Two commands do everything: `make run` and `make test`. Both set up on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint setup clean-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## run: migrate the embedded database, seed the demo world and serve the platform
run: $(STAMP)
	$(BIN)/fleetward demo

## test: the whole suite (unit, integration, e2e, security), one worker per CPU (pytest-xdist)
test: $(STAMP)
	$(BIN)/python -m pytest -n auto

## lint: ruff and mypy (strict on src/)
lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean-data:
	rm -rf var
