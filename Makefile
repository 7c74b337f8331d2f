# The front door. A newcomer needs two targets: `make run` and `make test`.
# Every target installs what it needs first, so both work on a fresh machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0
WORKERS ?= 2
# Python sources we lint and type-check (gen/ is generated and excluded).
SOURCES := common auth_svc job_svc worker_svc migrations scripts tests gen/jobqueue/client.py

.PHONY: help install services migrate run gen gen-check lint hadolint test test-faults bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt gen/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e ./gen
	touch $@

install: $(VENV)/.installed  ## create .venv and install the pinned dependencies

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

services:  ## start the local PostgreSQL and RabbitMQ if they are down
	scripts/ensure_services.sh

migrate: install services  ## create the database if needed and apply migrations
	$(PY) -m migrations

run: install services migrate  ## run auth, jobs and $(WORKERS) workers locally; Ctrl-C stops them
	$(PY) scripts/run_system.py --workers $(WORKERS)

gen: install  ## regenerate gen/ from protos/
	scripts/gen_protos.sh gen

gen-check: install  ## fail if gen/ is not what protos/ generates
	scripts/check_generated.sh

lint: install $(BUF)  ## ruff, mypy --strict, buf lint and buf breaking
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/mypy $(SOURCES)
	$(BUF) lint protos
	# Edits to protos/ must not break clients built from the last commit (wire or JSON names).
	$(BUF) breaking protos --against '.git#ref=HEAD,subdir=protos'

hadolint: install  ## lint every Dockerfile
	$(VENV)/bin/hadolint */Dockerfile

test: install services lint gen-check hadolint  ## everything CI checks: lint, generated code, all tests
	$(PY) -m pytest

test-faults: install services  ## only the fault-injection suite (tests/faults), with its summary table
	$(PY) -m pytest tests/faults

# e.g. BENCH_ARGS="--mode open -R 400 --seconds 10"; `$(PY) scripts/bench.py --help` lists the flags.
BENCH_ARGS ?=
bench: install services migrate  ## benchmark the local system (BENCH_ARGS=...); appends to bench/results.jsonl
	$(PY) scripts/bench.py $(BENCH_ARGS)

clean:  ## remove the virtualenv, tools and local state
	rm -rf $(VENV) .tools var
