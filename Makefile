# Jan Server — the commands people and CI use. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null)
STAMP := $(VENV)/.installed

.PHONY: help env run test test-py lint bench clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v uv >/dev/null || python3 -m pip install -q uv
	uv venv -q --allow-existing -p 3.11 $(VENV)
	VIRTUAL_ENV=$(VENV) uv pip install -q -e '.[dev]'
	@touch $@

env: $(STAMP) ## create both environments (functions and the CPU predictor)
	$(MAKE) -C kserve env

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

bench: env ## benchmarks (not part of `make test`): gateway, cold start, key verification, rate limits, usage ledger, predictor
	$(PY) bench/gateway.py
	$(PY) bench/coldstart.py
	$(PY) bench/bench_keys.py
	$(PY) bench/bench_limits.py
	$(PY) bench/bench_usage.py
	$(MAKE) -C kserve bench

clean: ## remove environments and caches (keeps data/)
	rm -rf $(VENV) kserve/.venv .pytest_cache .mypy_cache .ruff_cache
