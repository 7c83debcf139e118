# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/default.yaml

.PHONY: run test setup peers lint clean

# Peers the tests run beside ours (Debian packages; CI and developers run as root).
MOSQUITTO := /usr/sbin/mosquitto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/mqttbroker serve -c $(CONFIG)

$(MOSQUITTO):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto

peers: $(MOSQUITTO)

test: $(STAMP) $(MOSQUITTO)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff mypy types-PyYAML
	$(BIN)/ruff check mqttbroker devices tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info

# Fuzzing: every target (tests/fuzz/) until Ctrl-C, or FUZZ_SECONDS seconds each; `make test`
# runs them for a bounded time. Crashes land in tests/fuzz/crashes/ (see docs/fuzzing.md).
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.runner

# Benchmarks: this broker, Mosquitto and amqtt side by side (see benchmarks/README.md).
.PHONY: bench
bench: $(STAMP) $(MOSQUITTO)
	$(BIN)/python -m benchmarks.run
