# thrifty: two commands on a fresh machine.
#   make demo   runs thrifty end to end on the offline default model
#   make test   runs the whole test suite (lint, fast tier, integration tier)
# Engines, the default model and the corpus are built once under $THRIFTY_HOME
# (default ~/.cache/thrifty) and reused on later runs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
THRIFTY := $(BIN)/thrifty

.PHONY: install chromium demo test lint test-fast test-integration prepare clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The integration tests render the HTML reports in headless Chromium.
chromium:
	bash scripts/ensure_chromium.sh

demo: install
	$(BIN)/python scripts/demo.py

test: lint test-fast test-integration

# ruff, then the layer contract of pyproject.toml ([tool.importlinter]).
lint: install
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/lint-imports

test-fast: install
	$(BIN)/python -m pytest tests/fast -q

# Builds (or reuses) both engines, the default model, the corpus and the demo adapters, then
# runs the tests that use them.
prepare: install
	$(THRIFTY) setup
	$(THRIFTY) models prepare smollm2-135m
	$(THRIFTY) corpora prepare
	$(THRIFTY) adapters demo

test-integration: prepare chromium
	$(BIN)/python -m pytest tests/integration -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
