"""Shared fixtures: a real broker on a free port, started the hbmqtt/amqtt way.

* ``broker`` (async): ``Broker(config)``, ``await start()``, yield, ``await shutdown()`` in the
  test's own event loop; for amqtt clients and raw asyncio sockets.
* ``broker_thread`` (sync): the same broker on its own event loop in a thread, for blocking
  clients such as paho-mqtt. ``.port``, ``.broker`` and ``.call(fn)`` (run ``fn`` on the
  broker's loop and return its result).
* ``broker_config``: the dict both start from; override it in a test module (or use
  ``make_broker_thread(config)``) to change settings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest


def _use_compiled_build() -> None:
    """``MQTTBROKER_COMPILED=DIR`` (`make test-compiled`): the suite runs on the mypyc build in
    DIR (`make compiled`), in this process (DIR goes before the checkout pytest put first on
    sys.path) and in every broker or client process it starts (DIR first on PYTHONPATH); a
    build that is missing, or that this process does not import, stops the run. A process
    the tests start that imported mqttbroker before this file (the fuzz harness, a client
    script run from the checkout) keeps the package it found."""
    folder = os.environ.get("MQTTBROKER_COMPILED")
    if not folder or "mqttbroker" in sys.modules:
        return
    root = Path(folder).resolve()
    sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    import mqttbroker.session

    if not mqttbroker.session.__file__ or not mqttbroker.session.__file__.endswith(".so"):
        raise pytest.UsageError(f"MQTTBROKER_COMPILED={folder}: mqttbroker.session is "
                                f"{mqttbroker.session.__file__}, not a compiled module "
                                "(`make compiled` builds it)")


_use_compiled_build()

from mqttbroker.broker import Broker  # (after the choice of build above)

T = TypeVar("T")


def base_config(**mqtt: Any) -> dict[str, Any]:
    """A config dict with one TCP listener on 127.0.0.1, port 0 (a free one).

    Tests open connections from 127.0.0.1 by the thousand a second (the fuzz tests): no
    per-address connection rate limit unless the test sets one (tests/integration/
    test_abuse.py does)."""
    cfg: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},
        "mqtt": {"max_connection_rate_per_address": 0, **mqtt},
    }
    return cfg


@pytest.fixture
def broker_config() -> dict[str, Any]:
    """Override in a module to change the broker the fixtures start."""
    return base_config()


@pytest.fixture
async def broker(broker_config: dict[str, Any]) -> AsyncIterator[Broker]:
    """hbmqtt-style: a started broker in the test's event loop."""
    b = Broker(broker_config)
    await b.start()
    try:
        yield b
    finally:
        await b.shutdown()


class BrokerThread:
    """A broker running on its own event loop in a daemon thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.broker: Broker | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="broker", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        try:
            self.broker = Broker(self.config)
            await self.broker.start()
        except BaseException as exc:  # noqa: BLE001 - surfaced to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await self.broker.shutdown()

    def start(self) -> BrokerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("broker did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def port(self) -> int:
        assert self.broker is not None
        return self.broker.port

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``fn()`` on the broker's loop (its state is not thread-safe) and return it."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def make_broker_thread() -> Iterator[Callable[[dict[str, Any]], BrokerThread]]:
    """Start any number of threaded brokers with custom configs; all stopped at the end."""
    started: list[BrokerThread] = []

    def make(config: dict[str, Any]) -> BrokerThread:
        bt = BrokerThread(config).start()
        started.append(bt)
        return bt

    yield make
    for bt in started:
        bt.stop()


@pytest.fixture
def broker_thread(broker_config: dict[str, Any],
                  make_broker_thread: Callable[[dict[str, Any]], BrokerThread]) -> BrokerThread:
    """A started broker on its own loop, for blocking clients (paho-mqtt)."""
    return make_broker_thread(broker_config)
