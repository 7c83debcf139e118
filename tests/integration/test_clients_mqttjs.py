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
    ROOT,
    DriverProcess,
    MakeBroker,
    check_persistent_session,
    check_qos,
    check_retained,
    check_will,
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


@transports
@versions
def test_qos(make_broker_thread: MakeBroker, mqttjs: Callable[[], DriverProcess],
             version: int, transport: str) -> None:
    """MQTT.js publishes and receives at QoS 0, 1 and 2."""
    bt = make_broker_thread(ws_config())
    check_qos(mqttjs(), bt, url_for(bt, transport), version)


@transports
@versions
def test_retained(make_broker_thread: MakeBroker, mqttjs: Callable[[], DriverProcess],
                  version: int, transport: str) -> None:
    """MQTT.js's retained message is kept; it gets one already kept, with the flag."""
    bt = make_broker_thread(ws_config())
    check_retained(mqttjs(), bt, url_for(bt, transport), version)


@transports
@versions
def test_will(make_broker_thread: MakeBroker, mqttjs: Callable[[], DriverProcess],
              version: int, transport: str) -> None:
    """Node.js killed: MQTT.js's will is published."""
    bt = make_broker_thread(ws_config())
    check_will(mqttjs(), bt, url_for(bt, transport), version)


@transports
@versions
def test_persistent_session(make_broker_thread: MakeBroker,
                            mqttjs: Callable[[], DriverProcess], version: int,
                            transport: str) -> None:
    """MQTT.js with ``clean: false`` gets the QoS 1 and 2 messages queued while away."""
    bt = make_broker_thread(ws_config())
    check_persistent_session(mqttjs(), bt, url_for(bt, transport), version)
