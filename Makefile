# memorybench — `make bench` and `make test` do all set-up themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup bench test test-all report lint clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install (skipped when up to date)

bench: setup  ## run the default sweep (trains, evaluates, writes results/default/)
	$(PY) -m bench -m sweep=default

test: setup  ## fast tests (what CI runs)
	$(PY) -m pytest -m "not slow" -q

test-all: setup  ## every test, slow ones included
	$(PY) -m pytest -q

report: setup  ## rewrite results/<SWEEP>/summary.md from its records (SWEEP=default)
	$(PY) -m bench.summary $(or $(SWEEP),default)

lint: setup  ## ruff
	$(PY) -m ruff check bench mechanisms tasks tests

clean:  ## remove caches and Hydra outputs (keeps results/)
	rm -rf .cache outputs .pytest_cache
