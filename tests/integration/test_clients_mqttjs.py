"""MQTT.js (npm ``mqtt``, the JavaScript client of browsers and Node.js) against our broker,
over TCP (``mqtt://``) and WebSocket (``ws://``), MQTT 3.1.1 and 5.0 (issue 19, point 4).

Node.js runs tests/clients/mqttjs/driver.mjs, which drives one MQTT.js client by JSON lines
(the protocol and the checks are in :mod:`tests.integration.clientprocs`): QoS 0/1/2 both
ways, retained messages both ways, a will when the process is killed, and a persistent
session (``clean: false``; 5.0 with ``properties.sessionExpiryInterval``) that gets what was
published while it was away. paho-mqtt (Python) is the other side of each check.

MQTT.js comes from npm at the version in tests/clients/mqttjs/package-lock.json, installed by
``make test`` (``make mqttjs``); without it (or without Node.js) these tests fail and say so.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import BrokerThread

from .clientprocs import (
    CHECKS,
    ROOT,
    DriverProcess,
    MakeBroker,
    port_of,
    processes,
    ws_config,
    ws_uri,
)
from .helpers import HOST

MQTTJS = ROOT / "tests" / "clients" / "mqttjs"
INSTALL_HINT = "run `make mqttjs` (`make test` does it: npm ci in tests/clients/mqttjs)"

transports = pytest.mark.parametrize("transport", ["tcp", "ws"])
versions = pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])

@pytest.fixture
def mqttjs() -> Iterator[Callable[[], DriverProcess]]:
    """Starts MQTT.js driver processes; every one is killed at the end of the test."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (`node`) is not installed: MQTT.js needs it (Node.js 20)")
    if not (MQTTJS / "node_modules" / "mqtt" / "package.json").is_file():
        pytest.fail(f"MQTT.js is not installed in {MQTTJS}: {INSTALL_HINT}")
    with processes() as procs:
        yield lambda: procs.add(DriverProcess([node, str(MQTTJS / "driver.mjs")], "MQTT.js"))


def url_for(bt: BrokerThread, transport: str) -> str:
    return f"mqtt://{HOST}:{port_of(bt, 'tcp')}" if transport == "tcp" else ws_uri(bt)


@pytest.mark.parametrize("check", sorted(CHECKS))
@transports
@versions
def test_client(make_broker_thread: MakeBroker, mqttjs: Callable[[], DriverProcess],
                version: int, transport: str, check: str) -> None:
    """MQTT.js against a broker of its own, one check of :data:`clientprocs.CHECKS` (QoS 0/1/2
    both ways, retained both ways, a will when its process is killed, a persistent session)."""
    bt = make_broker_thread(ws_config())
    CHECKS[check](mqttjs(), bt, url_for(bt, transport), version)
