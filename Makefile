# Two commands do everything on a fresh machine:  make run  (the main job)  ·  make test
# Settings already in the environment win over the defaults below.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow/mlflow.db
export MLU_PROFILE ?= mini
# OpenMP threads sleep while they wait instead of spinning: with any other busy process on the
# machine, spinning threads made torch 8-14x slower (issue #14's measurement); numbers are the same.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup run test ui clean

setup: $(VENV)/.installed  ## create .venv and install mlu (quick when already done)

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $@

run: setup  ## materialize the main job into dagster_home/ (embedded SQLite, no network)
	$(BIN)/mlu run

test: setup  ## the whole test-suite
	$(BIN)/python -m pytest

ui: setup  ## the Dagster UI (127.0.0.1:3000) and the MLflow UI (127.0.0.1:5000); Ctrl-C stops both
	bash scripts/ui.sh

clean:  ## forget everything mlu made (keeps .venv and the release cache)
	rm -rf data mlflow dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/.logs_queue dagster_home/.nux dagster_home/.telemetry
