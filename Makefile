# lite-rec: `make run` installs everything and runs the whole pipeline on the embedded
# MovieLens latest-small; `make test` installs and runs the tests. Both work offline.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DAGSTER_HOME := $(CURDIR)/.dagster_home
DAGSTER_PORT := 3000

# Quiet, offline, and no OpenMP busy-waiting (it collapses training on 2 shared cores).
export OMP_WAIT_POLICY := PASSIVE
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export DAGSTER_HOME
export PATH := $(CURDIR)/$(BIN):$(PATH)

# Runs the command after it with SIGINT at its default disposition. A command started in the
# background of a non-interactive shell inherits SIGINT ignored, and `dagster dev` handles
# SIGTERM as it handles SIGINT: without this, it would ignore SIGTERM too.
WITH_DEFAULT_SIGINT := $(BIN)/python -c 'import os, signal, sys; \
	signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])'

.PHONY: install run test dev repro lint clean

install: $(VENV)/.installed

# torch first and exact: the pin makes pip take the CPU wheel on the machine's disk.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf 'telemetry:\n  enabled: false\n' > $@

# The code location is pyproject.toml's [tool.dagster] for both: the run `make run` makes is
# recorded with its origin, so `make dev` lists it on the timeline and on main_job's page.
run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m orchestration.launch main_job

test: install
	$(BIN)/python -m pytest -q -rs

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(WITH_DEFAULT_SIGINT) $(BIN)/dagster dev -h 127.0.0.1 -p $(DAGSTER_PORT)

repro: install
	$(BIN)/dvc repro

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) mlruns data/processed data/item_embeddings models metrics

# The Dagster and MLflow UIs in headless Chromium after a short pipeline run: every page shows
# the metrics, the champion and the gate's decision (tests/browser/ui_check.py); screenshots
# to docs/img. Needs Debian's chromium and chromium-driver (.ci/run installs them).
.PHONY: ui-check
ui-check: install
	$(BIN)/python -m tests.browser.ui_check --out docs/img
