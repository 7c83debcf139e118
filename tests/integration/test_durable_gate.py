"""sync: commit, from the outside: a PUBACK or PUBREC (and a QoS 2 delivery, whose packet
identifier must survive a crash) leaves the broker only after the change it reports is
committed. The test stalls the writer thread and watches the sockets.

A QoS 1 delivery need not wait: if the broker dies before the commit, the publisher never got
its PUBACK and sends again, and a QoS 1 duplicate is allowed [MQTT-4.3.2].
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
from mqttbroker.protocol.packets import (
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
)
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
    if qos == 2:
        assert await quiet(sub, 0.1), "QoS 2 delivered before its packet id was committed"
    else:
        early = await sub.read_packet(1.0)
        assert isinstance(early, Publish) and early.payload == b"payload"
        assert await quiet(pub, 0.1), "acknowledged before the commit"
    gate.set()
    ack = await pub.read_packet(2.0)
    assert isinstance(ack, Puback if qos == 1 else Pubrec) and ack.packet_id == 7
    if qos == 2:
        got = await sub.read_packet(2.0)
        assert isinstance(got, Publish) and got.payload == b"payload" and got.qos == 2
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


async def test_pubrel_and_pubcomp_wait_for_the_commit(
        stalled: tuple[Broker, threading.Event]) -> None:
    """PUBREL tells the subscriber to forget the packet id (so the AWAIT_PUBCOMP state must be
    stored: resending the PUBLISH after a crash would deliver it twice); PUBCOMP lets the
    publisher reuse its id (so the released id must be stored: else a new message under the
    same id would be taken for a resend and lost)."""
    broker, gate = stalled
    sub = await RawClient.open(broker.port)
    await sub.connect("q2-sub", clean=False)
    await sub.subscribe("q2/#", 2)
    pub = await RawClient.open(broker.port)
    await pub.connect("q2-pub", clean=False)
    await pub.send_packet(Publish("q2/a", b"x", 2, False, False, 11))
    assert isinstance(await pub.read_packet(2.0), Pubrec)
    got = await sub.read_packet(2.0)
    assert isinstance(got, Publish) and got.packet_id is not None
    gate.clear()
    await sub.send_packet(Pubrec(got.packet_id))
    await pub.send_packet(Pubrel(11))
    assert await quiet(sub, 0.5), "PUBREL before the PUBREC state was committed"
    assert await quiet(pub, 0.1), "PUBCOMP before the released id was committed"
    gate.set()
    rel = await sub.read_packet(2.0)
    assert isinstance(rel, Pubrel) and rel.packet_id == got.packet_id
    comp = await pub.read_packet(2.0)
    assert isinstance(comp, Pubcomp) and comp.packet_id == 11
    for c in (pub, sub):
        await c.close()


async def test_suback_is_held_and_retained_messages_do_not_overtake_it(
        stalled: tuple[Broker, threading.Event]) -> None:
    """A stored subscription is committed before its SUBACK (after a crash, a session said to
    be present must hold it); the retained messages it brings come after the SUBACK."""
    broker, gate = stalled
    pub = await RawClient.open(broker.port)
    await pub.connect("ret-pub")
    for i in range(5):
        await pub.send_packet(Publish(f"ret/{i}", b"r%d" % i, 1, True, False, i + 1))
        assert isinstance(await pub.read_packet(2.0), Puback)
    sub = await RawClient.open(broker.port)
    await sub.connect("ret-sub", clean=False)
    gate.clear()
    await sub.send_packet(Subscribe(1, [Subscription("ret/#", 0)]))
    assert await quiet(sub, 0.5), "SUBACK or a retained message before the commit"
    gate.set()
    first = await sub.read_packet(2.0)
    assert isinstance(first, Suback), first
    got = [await sub.read_packet(2.0) for _ in range(5)]
    assert sorted(p.payload for p in got if isinstance(p, Publish)) == \
        [b"r%d" % i for i in range(5)]
    for c in (pub, sub):
        await c.close()
