# memorybench — `make bench` and `make test` do all set-up themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help setup bench test test-slow test-all perf report browser lint clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install (skipped when up to date)

# bench times its own setup, sweep and report; their seconds go into results/default/summary.md ("Wall time")
bench:  ## run the default sweep (trains, evaluates, writes results/default/); resumes where it stopped
	@start=$$(date +%s); $(MAKE) --no-print-directory setup || exit $$?; setup_s=$$(( $$(date +%s) - start )); \
	  start=$$(date +%s); echo "$(PY) -m bench -m sweep=default"; $(PY) -m bench -m sweep=default; status=$$?; \
	  sweep_s=$$(( $$(date +%s) - start )); if [ $$status -eq 2 ]; then exit 2; fi; \
	  start=$$(date +%s); echo "$(PY) -m bench.report default"; $(PY) -m bench.report default || exit $$?; \
	  report_s=$$(( $$(date +%s) - start )); \
	  $(PY) -m bench.timing default setup=$$setup_s sweep=$$sweep_s report=$$report_s > /dev/null || exit $$?; \
	  echo "make bench: setup $${setup_s} s, sweep $${sweep_s} s, report $${report_s} s -> results/default/summary.md"; \
	  exit $$status

test: setup  ## fast tests: everything not marked slow
	$(PY) -m pytest -m "not slow" -q

test-slow: setup  ## only the slow tests (sweeps that train, lm-eval's CLI, launchers, LoRA); none selected passes
	$(PY) -m pytest -m slow -q; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no slow tests selected"; exit 0; fi; exit $$status

test-all: setup  ## every test, slow ones included (what .ci/run runs, in two passes)
	$(PY) -m pytest -q

perf: setup  ## time/memory scaling 1K-64K tokens per mechanism -> results/perf/ (summary.md, plots); ~25 min
	$(PY) -m pip install -q -c constraints.txt -e '.[perf]'
	$(PY) -m bench.perf

report: setup  ## rebuild results/<SWEEP>/summary.md and report/ (tables, plots, index.html) from records
	$(PY) -m bench.summary $(or $(SWEEP),default)
	$(PY) -m bench.report $(or $(SWEEP),default)

browser:  ## install Debian's chromium for the dashboard's headless-browser test (needs root; best effort)
	command -v chromium >/dev/null || (apt-get install -y -q chromium >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	  || echo "chromium not installed: the browser test will be skipped"

lint: setup  ## ruff
	$(PY) -m ruff check bench mechanisms tasks tests

clean:  ## remove caches and Hydra outputs (keeps results/)
	rm -rf .cache outputs .pytest_cache
