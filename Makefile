# `make demo` and `make test` each do all their own set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast services bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/clera serve

services:
	scripts/ensure-services.sh

# The suite in one Ray session, then the tests that need their own multi-node cluster in another process.
test: $(STAMP) services
	$(BIN)/python -m pytest -q -m "not cluster" -p no:cacheprovider
	$(BIN)/python -m pytest -q -m cluster -p no:cacheprovider

bench: $(STAMP) services
	$(BIN)/python bench/realtime.py --quick
	$(BIN)/python bench/gateway.py --quick

clean:
	rm -rf $(VENV) .clera build *.egg-info
