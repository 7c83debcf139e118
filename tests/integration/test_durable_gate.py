"""sync: commit, from the outside: a PUBACK (and PUBREC, PUBCOMP, a delivery) leaves the broker
only after the change it reports is committed. The test stalls the writer thread and watches
the socket: nothing may arrive until the commit goes through.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.broker import Broker
from mqttbroker.persistence.sqlite import SqliteStorage
from mqttbroker.protocol.packets import Puback, Publish, Pubrec
from tests.conftest import base_config
from tests.integration.rawmqtt import RawClient


@pytest.fixture
async def stalled(tmp_path: Path) -> AsyncIterator[tuple[Broker, threading.Event]]:
    """A durable broker whose commits wait for the returned event."""
    cfg: dict[str, Any] = base_config()
    cfg["persistence"] = {"backend": "sqlite", "path": str(tmp_path / "db.sqlite"),
                          "sync": "commit", "fsync": False}
    broker = Broker(cfg)
    await broker.start()
    storage = broker.storage
    assert isinstance(storage, SqliteStorage)
    gate = threading.Event()
    gate.set()
    real = storage._write

    def write(batch: Any) -> None:
        gate.wait(10)
        real(batch)

    storage._write = write  # type: ignore[method-assign]
    try:
        yield broker, gate
    finally:
        gate.set()
        await broker.shutdown()


async def quiet(client: RawClient, seconds: float) -> bool:
    """Nothing arrives for ``seconds``."""
    try:
        p = await client.read_packet(seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"{p!r} arrived before the commit")


@pytest.mark.parametrize("qos", [1, 2])
async def test_ack_and_delivery_wait_for_the_commit(
        stalled: tuple[Broker, threading.Event], qos: int) -> None:
    broker, gate = stalled
    sub = await RawClient.open(broker.port)
    await sub.connect("durable-sub", clean=False)
    await sub.subscribe("d/#", qos)
    pub = await RawClient.open(broker.port)
    await pub.connect("durable-pub", clean=False)
    gate.clear()  # the writer thread now stalls on its next batch
    await pub.send_packet(Publish("d/1", b"payload", qos, False, False, 7))
    assert await quiet(pub, 0.5), "acknowledged before the commit"
    assert await quiet(sub, 0.1), "delivered before the commit"
    gate.set()
    ack = await pub.read_packet(2.0)
    assert isinstance(ack, Puback if qos == 1 else Pubrec) and ack.packet_id == 7
    got = await sub.read_packet(2.0)
    assert isinstance(got, Publish) and got.payload == b"payload" and got.qos == qos
    for c in (pub, sub):
        await c.close()


async def test_memory_and_periodic_modes_do_not_hold(tmp_path: Path) -> None:
    cfg: dict[str, Any] = base_config()
    cfg["persistence"] = {"backend": "sqlite", "path": str(tmp_path / "db.sqlite"),
                          "sync": "periodic", "flush_interval": 30}
    broker = Broker(cfg)
    await broker.start()
    try:
        pub = await RawClient.open(broker.port)
        await pub.connect("p", clean=False)
        await pub.send_packet(Publish("x", b"1", 1, False, False, 3))
        ack = await asyncio.wait_for(pub.read_packet(1.0), 2)
        assert isinstance(ack, Puback)  # at once: the next commit is 30 s away
        await pub.close()
    finally:
        await broker.shutdown()
