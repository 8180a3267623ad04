# Reflex: `make demo` and `make test` are the whole quick start (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAGE ?= dev
SCENARIO ?= scenarios/traffic_spike.yaml
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup services synth lint typecheck test demo bench schema clean fault-matrix promotion-races checkov

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# checkov (IaC scanner) lives in its own virtualenv: its pins conflict with the project's (requirements-checkov.txt).
.venv-checkov/.installed: requirements-checkov.txt
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --upgrade pip
	.venv-checkov/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "Node.js 20+ and npm are required for the CDK CLI"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed .venv-checkov/.installed

services:
	@scripts/ensure_services.sh

# Synthesizes every stack; cdk-nag (AwsSolutions) runs as a validation plugin and fails the synth
# on any unsuppressed finding; cfn-lint then checks every template.
synth: setup
	npx cdk synth --quiet -c stage=$(STAGE)
	$(VENV)/bin/cfn-lint cdk.out/*.template.json

schema: setup
	$(PY) -m simulator.export_schema docs/config.schema.json

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup services lint
	$(PY) -m pytest -n 2 --dist loadfile

# Every cell of the fault matrix (each AWS call x each fault kind); `make test` runs a sample (docs/resilience.md).
fault-matrix: setup
	REFLEX_FULL_FAULT_MATRIX=1 $(PY) -m pytest tests/integration/test_fault_matrix.py -q

# Every interleaving of a guard alarm's rollback with each promotion step (issue 16); `make test` runs a sample.
promotion-races: setup
	REFLEX_FULL_PROMOTION_RACES=1 $(PY) -m pytest tests/integration/test_promotion_races.py -q

demo: synth
	$(PY) -m simulator $(SCENARIO) --config config/$(STAGE).yaml --out out/

bench: setup
	$(PY) benchmarks/cold_start.py

clean:
	rm -rf cdk.out out .pytest_cache .mypy_cache .ruff_cache

# The IaC scanner on the templates of `make synth` (the test suite runs it on both stages in-process).
checkov: setup synth
	.venv-checkov/bin/checkov -d cdk.out --framework cloudformation --compact --quiet
