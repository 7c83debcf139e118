"""Fixtures shared by the integration tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BrokerThread

from .v5helpers import Env

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture
def env(make_broker_thread: Callable[[dict[str, Any]], BrokerThread]) -> Iterator[Env]:
    """Brokers started on demand (``env.start(**mqtt_options)``) and clients (raw and paho,
    MQTT 5 and 3.1.1) that are all closed after the test."""
    e = Env(make_broker_thread)
    yield e
    e.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto of our own on a free loopback port (installed by `make test`)."""
    if not Path(MOSQUITTO).exists():
        pytest.fail(f"{MOSQUITTO} missing: `make test` installs Debian's mosquitto package")
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    "max_queued_messages 10000\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("mosquitto did not start")
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def sns() -> Iterator[Callable[[Any], Any]]:
    """Makes raw MQTT-SN clients of a broker's gateway (test_mqttsn_*.py); all closed at the
    end."""
    from .test_mqttsn_interop import SnRaw, sn_port
    made: list[SnRaw] = []

    def make(b: Any) -> SnRaw:
        s = SnRaw(sn_port(b))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def paho_for() -> Iterator[Callable[[Any], Any]]:
    """Makes a Clients (paho) factory per broker; all closed at the end."""
    from .helpers import Clients
    made: list[Clients] = []

    def make(b: Any) -> Clients:
        c = Clients(b.port)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
