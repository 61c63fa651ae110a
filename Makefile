# The two commands a newcomer needs: `make demo` and `make test`. Both work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_HOME ?= $(CURDIR)/.demo-home

.PHONY: demo test lint unit bench bench-quick clean

# Debian packages (listed in scripts/ensure-system-deps): creating .venv needs python3-venv, `make
# test` and `make bench` a few more (SoftHSM2 for the PKCS#11 tests and the HSM benchmark, ...).
# Installed there as root, otherwise make stops here with one line naming them.
ifneq ($(filter test unit bench,$(MAKECMDGOALS)),)
SYSTEM_DEPS_ERROR := $(shell PYTHON=$(PYTHON) scripts/ensure-system-deps 3>&1 1>&2 2>&3)
else ifeq ($(filter clean,$(MAKECMDGOALS))$(wildcard $(BIN)/.installed),)
SYSTEM_DEPS_ERROR := $(shell PYTHON=$(PYTHON) scripts/ensure-system-deps --base 3>&1 1>&2 2>&3)
endif
ifneq ($(SYSTEM_DEPS_ERROR),)
$(error $(SYSTEM_DEPS_ERROR))
endif

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

demo: $(BIN)/.installed
	rm -rf $(DEMO_HOME)
	$(BIN)/eventward --home $(DEMO_HOME) demo

lint: $(BIN)/.installed
	$(BIN)/ruff check --no-cache src tests bench

# Slow scale tests (@pytest.mark.slow) run with the benchmarks, keeping `make test` under 10 minutes.
# Two workers (pytest-xdist): most tests wait on servers and subprocesses, so two keep both cores busy;
# --dist loadscope keeps each module's fixtures (servers, homes) in one worker.
TEST_WORKERS ?= 2
unit: $(BIN)/.installed
	$(BIN)/pytest -m "not slow" -n $(TEST_WORKERS) --dist loadscope

test: lint unit

# Confluent CSFLE (the anchor in bench/bench_anchors.py) in a virtualenv of its own: its rules extra
# pins google-re2 below eventward's. Optional: without it (no PyPI) the anchor records why it skipped.
CSFLE_VENV := .venv-csfle
$(CSFLE_VENV)/.installed:
	-$(PYTHON) -m venv $(CSFLE_VENV) && $(CSFLE_VENV)/bin/pip install -q \
		'confluent-kafka[schemaregistry,rules]==2.16.1' jsonschema==4.26.0 fastavro==1.13.1 && touch $@

bench: $(BIN)/.installed $(CSFLE_VENV)/.installed
	$(BIN)/pytest -m slow
	$(BIN)/python -m bench.run

bench-quick: $(BIN)/.installed
	$(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) $(CSFLE_VENV) $(DEMO_HOME) .pytest_cache build src/*.egg-info
