"""The Paho C client (Debian's ``libpaho-mqtt1.3``: ``libpaho-mqtt3c``, its synchronous API)
against our broker, over TCP (``tcp://``) and WebSocket (``ws://``), MQTT 3.1.1
(``MQTTClient_connect``) and 5.0 (``MQTTClient_connect5``) (issue 19, point 4).

The library is called through ctypes by a driver in a child process
(``python -m tests.integration.pahoc``), since Debian's example programs cannot ask for a
persistent session or a will: QoS 0/1/2 both ways, retained messages both ways, a will when
the process is killed, and a persistent session (clean session 0; 5.0: clean start 0 and a
session expiry) that gets what was published while it was away. The checks are in
:mod:`tests.integration.clientprocs`; paho-mqtt (Python) is the other side of each.

Paho C is installed by ``make test`` (``make paho-c``: Debian's ``paho.mqtt.c-examples``,
which pulls in the library); without it these tests fail and say so, they are not skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import BrokerThread

from . import pahoc
from .clientprocs import (
    CHECKS,
    DriverProcess,
    MakeBroker,
    port_of,
    processes,
    ws_config,
    ws_uri,
)
from .helpers import HOST

transports = pytest.mark.parametrize("transport", ["tcp", "ws"])
versions = pytest.mark.parametrize("version", [pahoc.MQTT_3_1_1, pahoc.MQTT_5],
                                   ids=["3.1.1", "5.0"])


@pytest.fixture
def paho_c() -> Iterator[Callable[[], DriverProcess]]:
    """Starts Paho C driver processes; every one is killed at the end of the test."""
    if not pahoc.installed():
        pytest.fail(f"Paho C's {pahoc.LIBPAHO} is not installed: {pahoc.INSTALL_HINT}")
    command = [sys.executable, "-m", pahoc.__name__]
    with processes() as procs:
        yield lambda: procs.add(DriverProcess(command, "Paho C"))


def url_for(bt: BrokerThread, transport: str) -> str:
    return f"tcp://{HOST}:{port_of(bt, 'tcp')}" if transport == "tcp" else ws_uri(bt)


@pytest.mark.parametrize("check", sorted(CHECKS))
@transports
@versions
def test_client(make_broker_thread: MakeBroker, paho_c: Callable[[], DriverProcess],
                version: int, transport: str, check: str) -> None:
    """Paho C against a broker of its own, one check of :data:`clientprocs.CHECKS` (QoS 0/1/2
    both ways, retained both ways, a will when its process is killed, a persistent session)."""
    bt = make_broker_thread(ws_config())
    CHECKS[check](paho_c(), bt, url_for(bt, transport), version)
