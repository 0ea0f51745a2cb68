# `make demo` and `make test` each do all their own set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint services bench clean dist

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/clera serve

services:
	scripts/ensure-services.sh

# What `ray up cluster.yaml` / `cluster.aws.yaml` ships to the nodes: the wheel and serve_config.yaml.
DIST ?= dist
dist: $(STAMP)
	rm -rf $(DIST) build
	$(BIN)/python -m pip wheel -q --no-deps -w $(DIST) .
	rm -rf build
	cp serve_config.yaml $(DIST)/

# ruff's rules and mypy's strict checks, as configured in pyproject.toml; `make test` runs them first.
lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/mypy

# Lint, then the suite in one Ray session, then, in another process, the tests that need a Ray of their
# own (a multi-node cluster, or the commands `clera serve` and `serve run`, which start one).
test: $(STAMP) lint services
	$(BIN)/python -m pytest -q -m "not cluster and not own_ray" -p no:cacheprovider
	$(BIN)/python -m pytest -q -m "cluster or own_ray" -p no:cacheprovider

bench: $(STAMP) services
	$(BIN)/python bench/realtime.py --quick
	$(BIN)/python bench/gateway.py --quick
	$(BIN)/python bench/intents.py
	$(BIN)/python bench/chat.py --quick
	$(BIN)/python bench/closure.py --quick
	$(BIN)/python bench/scaleout.py --quick

clean:
	rm -rf $(VENV) .clera build dist *.egg-info .mypy_cache .ruff_cache
