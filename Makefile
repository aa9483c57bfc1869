# lite-rec: `make run` installs everything and runs the whole pipeline on the embedded
# MovieLens latest-small; `make test` installs and runs the tests. Both work offline.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DAGSTER_HOME := $(CURDIR)/.dagster_home

# Quiet, offline, and no OpenMP busy-waiting (it collapses training on 2 shared cores).
export OMP_WAIT_POLICY := PASSIVE
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export DAGSTER_HOME
export PATH := $(CURDIR)/$(BIN):$(PATH)

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

run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster job execute -m orchestration.definitions -j main_job

test: install
	$(BIN)/python -m pytest -q -rs

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -m orchestration.definitions -h 127.0.0.1 -p 3000

repro: install
	$(BIN)/dvc repro

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) mlruns data/processed data/item_embeddings models metrics
