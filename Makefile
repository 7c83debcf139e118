# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/default.yaml

.PHONY: run test test-stress setup peers browser redis paho-c mosquitto-clients mqttjs dashboard \
        valgrind lint clean dist compiled test-compiled footprint

# Peers the tests run beside ours (Debian packages; CI and developers run as root).
MOSQUITTO := /usr/sbin/mosquitto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP)

# The dashboard's JavaScript: npm packages (package-lock.json) bundled by esbuild into
# mqttbroker/web/dashboard/dist/, which the HTTP listener serves. Rebuilt when a source changes.
DASH     := mqttbroker/web/dashboard
DASH_SRC := $(DASH)/package.json $(DASH)/package-lock.json $(DASH)/build.mjs \
            $(wildcard $(DASH)/src/*)
$(DASH)/dist/.built: $(DASH_SRC)
	cd $(DASH) && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	touch $@

dashboard: $(DASH)/dist/.built

# The wheel and the sdist in dist/, each carrying the built dashboard: a machine that installs
# them needs no Node.js. `pip install dist/mqttbroker-*.whl` is the lean broker; extras in
# README.md ("Install"). The venv's setuptools builds them (no isolated build env); build/ is
# emptied first, so a module deleted from the tree cannot ride along from an older build.
dist: $(STAMP) $(DASH)/dist/.built
	rm -rf build dist
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w dist .
	$(BIN)/python -c 'from setuptools import build_meta as b; b.build_sdist("dist")' >/dev/null

run: $(STAMP) $(DASH)/dist/.built
	$(BIN)/mqttbroker serve -c $(CONFIG)

$(MOSQUITTO):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto

peers: $(MOSQUITTO)

# Headless Chromium and its WebDriver for the dashboard's browser test (Debian packages).
CHROMIUM := /usr/bin/chromedriver
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

browser: $(CHROMIUM)

# redis-server for the cluster tests (Debian package; each test starts its own on a free port)
REDIS := /usr/bin/redis-server
$(REDIS):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server

redis: $(REDIS)

# Paho C 1.3 (its example clients and libpaho-mqtt3c) for the WebSocket framing tests
# (tests/integration/test_websocket_paho_c.py; Debian package, pulls in libpaho-mqtt1.3)
PAHO_C := /usr/bin/paho_cs_sub
$(PAHO_C):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq paho.mqtt.c-examples

paho-c: $(PAHO_C)

# Mosquitto's command-line clients (mosquitto_pub / mosquitto_sub on libmosquitto) for the
# client-library tests (tests/integration/test_clients_mosquitto.py; Debian package)
MOSQUITTO_CLIENTS := /usr/bin/mosquitto_pub
$(MOSQUITTO_CLIENTS):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients

mosquitto-clients: $(MOSQUITTO_CLIENTS)

# MQTT.js (npm `mqtt`, at the version of its package-lock.json) for the client-library tests
# (tests/integration/test_clients_mqttjs.py runs it through tests/clients/mqttjs/driver.mjs)
MQTTJS := tests/clients/mqttjs
$(MQTTJS)/node_modules/.installed: $(MQTTJS)/package.json $(MQTTJS)/package-lock.json
	cd $(MQTTJS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

mqttjs: $(MQTTJS)/node_modules/.installed

# valgrind (callgrind, callgrind_control) for benchmarks/footprint.py and its smoke test
# (tests/integration/test_bench_footprint.py; Debian package)
VALGRIND := /usr/bin/valgrind
$(VALGRIND):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind

valgrind: $(VALGRIND)

TEST_DEPS := $(STAMP) $(MOSQUITTO) $(CHROMIUM) $(REDIS) $(PAHO_C) $(MOSQUITTO_CLIENTS) \
             $(MQTTJS)/node_modules/.installed $(DASH)/dist/.built $(VALGRIND)

# Two pytest-xdist workers, each taking the next test as it frees up (worksteal): every test
# starts its own brokers on free ports and its own files under tmp_path, so they do not meet.
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist worksteal
test: $(TEST_DEPS)
	$(PYTEST)

# The same suite with one core kept busy by a CPU hog (a Python busy loop) that the recipe
# starts and stops: the EXIT trap kills it however pytest ends (Ctrl-C too), and the
# recipe's status is pytest's.
test-stress: $(TEST_DEPS)
	$(BIN)/python -c 'while True: pass' & hog=$$!; trap 'kill $$hog 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; $(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff mypy types-PyYAML
	$(BIN)/ruff check mqttbroker devices tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist compiled *.egg-info

# Optional speed-up (issue 18, docs/performance.md): the modules of the per-message and
# per-connection paths compiled to C extensions by mypyc, in compiled/mqttbroker (a copy of
# the package whose listed modules are .so files beside their .py). It needs a C compiler and
# Python's headers, and nothing else needs it: `make run` and `make test` run the pure-Python
# package, which stays the fallback and the reference. Run a broker on it with
# `PYTHONPATH=compiled .venv/bin/mqttbroker serve ...`; `make bench` does when a C compiler is
# found; `make test-compiled` runs the whole suite on it. Rebuilt when a source changes.
COMPILED_MODULES := \
	mqttbroker/message.py mqttbroker/router.py mqttbroker/session.py mqttbroker/metrics.py \
	mqttbroker/protocol/constants.py mqttbroker/protocol/codec.py mqttbroker/protocol/reader.py \
	mqttbroker/protocol/primitives.py \
	mqttbroker/protocol/flows.py mqttbroker/protocol/topics.py mqttbroker/protocol/packets.py \
	mqttbroker/protocol/properties.py mqttbroker/protocol/connection.py \
	mqttbroker/client/output.py mqttbroker/client/connection.py \
	mqttbroker/core/delivery.py mqttbroker/core/connect.py mqttbroker/core/registry.py \
	mqttbroker/core/admission.py mqttbroker/core/deadlines.py mqttbroker/core/subscriptions.py \
	mqttbroker/core/turns.py \
	mqttbroker/transports/rawtcp.py mqttbroker/keepalive.py \
	mqttbroker/abuse.py mqttbroker/auth.py mqttbroker/acl.py mqttbroker/ratelimit.py \
	mqttbroker/retained.py mqttbroker/plugins/host.py mqttbroker/config/model.py \
	mqttbroker/broker.py
PY_SOURCES := $(shell find mqttbroker -name '*.py' -not -path '*/node_modules/*')
compiled/.built: $(STAMP) $(PY_SOURCES) pyproject.toml Makefile
	$(BIN)/python -m pip install --quiet 'mypy>=1.10'
	rm -rf compiled && mkdir -p compiled
	tar -cf - --exclude=node_modules --exclude=__pycache__ mqttbroker pyproject.toml \
	    | tar -xf - -C compiled
	cd compiled && ../$(BIN)/mypyc $(COMPILED_MODULES) >mypyc.log 2>&1 \
	    || { tail -30 mypyc.log; exit 1; }
	rm -rf compiled/build
	touch $@

compiled: compiled/.built

# The whole suite on the compiled build: what `make test` runs, with the in-process brokers
# and every process the tests start importing compiled/ (tests/conftest.py).
test-compiled: $(TEST_DEPS) compiled/.built
	MQTTBROKER_COMPILED=compiled $(PYTEST)

# Fuzzing: every target (tests/fuzz/) until Ctrl-C, or FUZZ_SECONDS seconds each; `make test`
# runs them for a bounded time. Crashes land in tests/fuzz/crashes/ (see docs/fuzzing.md).
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.runner

# Benchmarks: this broker, Mosquitto and amqtt side by side (see benchmarks/README.md).
# Ours runs compiled by mypyc (compiled/, `make compiled`) when a C compiler is found, else the
# pure-Python package; the results say which ran. `make bench OURS=pure`: pure Python either way.
OURS ?= compiled
.PHONY: bench
bench: $(STAMP) $(MOSQUITTO)
	@if [ "$(OURS)" = compiled ] && command -v cc >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory compiled \
	    && $(BIN)/python -m benchmarks.run --ours-source compiled; \
	else \
	    echo "benchmarks: ours in pure Python (OURS=$(OURS);" \
	        "C compiler: $$(command -v cc || echo none))"; \
	    $(BIN)/python -m benchmarks.run; \
	fi

# What each broker executes per message of the latency scenario, counted under valgrind's
# callgrind (instructions, hot code lines): figures the machine's noise does not move, ours
# compiled when a C compiler is found, as in `make bench` (see benchmarks/README.md). ~1 min.
footprint: $(STAMP) $(MOSQUITTO) $(VALGRIND)
	@if [ "$(OURS)" = compiled ] && command -v cc >/dev/null 2>&1; then \
	    $(MAKE) --no-print-directory compiled \
	    && $(BIN)/python -m benchmarks.footprint --ours-source compiled; \
	else \
	    $(BIN)/python -m benchmarks.footprint; \
	fi

# Bridge throughput edge -> cloud, Mosquitto's bridge beside ours (see benchmarks/README.md).
.PHONY: bench-bridge
bench-bridge: $(STAMP) $(MOSQUITTO)
	$(BIN)/python -m benchmarks.bridge

# A 1,000,000-message bridge backlog drains while the edge keeps answering PINGREQ within
# 100 ms (issue 16; see benchmarks/README.md). ~2 min.
.PHONY: bench-bridge-drain
bench-bridge-drain: $(STAMP) $(MOSQUITTO)
	$(BIN)/python -m benchmarks.bridge_drain

# MQTT-SN at scale: 10,000 MQTT-SN clients (20% asleep) and QoS 0/1 throughput, each beside
# the same load over MQTT/TCP on our broker (issue 17; see benchmarks/README.md). ~5 min.
.PHONY: bench-mqttsn
bench-mqttsn: $(STAMP)
	$(BIN)/python -m benchmarks.mqttsn
