# Jan Server — the commands people and CI use. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null)
STAMP := $(VENV)/.installed
JS_SDK := tests/sdk/js/node_modules/.package-lock.json

.PHONY: help env run test test-py lint bench clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# Exactly the versions in uv.lock (--locked also fails when the lock no longer matches
# pyproject.toml: run `uv lock` after changing a dependency). The `local` extra is the
# embedded PostgreSQL of `make run` (and of the tests that start it); images leave it out.
$(STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install -q uv
	uv sync -q --locked -p 3.11 --extra dev --extra local
	@touch $@

env: $(STAMP) $(JS_SDK) ## create the environments from their lock files (functions, the CPU predictor, the JS SDK tests)
	$(MAKE) -C kserve env

# The official `openai` JavaScript SDK that tests/sdk drives, exactly as package-lock.json has it.
$(JS_SDK): tests/sdk/js/package.json tests/sdk/js/package-lock.json
	npm ci --prefix tests/sdk/js --no-audit --no-fund

run: env ## start the predictor on :8101 and every area on :8080 (embedded PostgreSQL)
	bash scripts/run-local.sh

lint: $(STAMP) ## ruff and mypy (strict)
	$(VENV)/bin/ruff check functions tests
	$(VENV)/bin/ruff format --check functions tests
	$(VENV)/bin/mypy

test-py: $(STAMP)
	$(VENV)/bin/pytest -q

test: env lint ## the whole suite: lint, then every test (functions and predictor)
	$(MAKE) test-py
	$(MAKE) -C kserve test

bench: env ## benchmarks (not part of `make test`): gateway, cold start, key verification, rate limits, usage ledger, prompt-cache affinity, stored chat completions, predictor
	$(PY) bench/gateway.py
	$(PY) bench/coldstart.py
	$(PY) bench/bench_keys.py
	$(PY) bench/bench_limits.py
	$(PY) bench/bench_usage.py
	$(PY) bench/bench_affinity.py
	$(PY) bench/bench_stored.py
	$(MAKE) -C kserve bench

clean: ## remove environments and caches (keeps data/)
	rm -rf $(VENV) kserve/.venv .pytest_cache .mypy_cache .ruff_cache
