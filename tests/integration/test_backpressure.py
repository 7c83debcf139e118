"""Backpressure: a subscriber that reads slowly slows its publishers down instead of losing
QoS 0 messages or growing the broker's buffers; one that stops reading is given up on after a
grace period, and other subscribers never notice."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from mqttbroker.broker import Broker
from mqttbroker.client import SLOW_CONSUMER_GRACE
from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.packets import Publish
from mqttbroker.protocol.reader import FrameReader
from tests.conftest import base_config
from tests.integration.rawmqtt import RawClient

N = 4000
FRAME = encode(Publish("bp/x", b"p" * 1000), 4)  # one 1 KB QoS 0 PUBLISH


@pytest.fixture
def broker_config() -> dict[str, object]:
    return base_config(write_buffer_limit=16 * 1024)


async def count_publishes(r: RawClient, n: int, timeout: float, delay: float = 0.0) -> int:
    """Read raw frames and count PUBLISH packets; ``delay`` between reads makes a slow
    reader."""
    reader = FrameReader()
    got = 0
    deadline = time.monotonic() + timeout
    while got < n and time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(r.reader.read(8192), 1.0)
        except TimeoutError:
            continue
        if not data:
            break
        got += sum(1 for first, _ in reader.feed(data) if first >> 4 == 3)
        if delay:
            await asyncio.sleep(delay)
    return got


async def test_slow_qos0_subscriber_loses_nothing(broker: Broker) -> None:
    """4 MB of QoS 0 to a subscriber reading 8 KB at a time with pauses: with a 16 KB
    write_buffer_limit, the publisher is held back rather than messages dropped."""
    sub = await RawClient.open(broker.port)
    await sub.connect("slow-sub")
    await sub.subscribe("bp/#", 0)
    pub = await RawClient.open(broker.port)
    await pub.connect("fast-pub")
    frame = FRAME

    async def publish_all() -> None:
        for _ in range(N // 100):
            await pub.send(frame * 100)

    sender = asyncio.create_task(publish_all())
    got = await count_publishes(sub, N, timeout=30, delay=0.002)
    await sender
    assert got == N, f"received {got} of {N}"
    assert broker.metrics.publish_dropped == 0


async def test_stuck_subscriber_does_not_stop_the_others(broker: Broker) -> None:
    """A subscriber that never reads holds the publisher back only for the grace period;
    then the publisher goes on, a healthy subscriber gets everything, QoS 0 to the stuck one
    is dropped and counted."""
    stuck = await RawClient.open(broker.port)
    stuck.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await stuck.connect("stuck")
    await stuck.subscribe("bp/#", 0)
    healthy = await RawClient.open(broker.port)
    await healthy.connect("healthy")
    await healthy.subscribe("bp/#", 0)
    pub = await RawClient.open(broker.port)
    await pub.connect("pub")
    frame = FRAME
    n = 12000  # 12 MB: far past what the kernel's socket buffers can take

    async def publish_all() -> None:
        for _ in range(n // 100):
            await pub.send(frame * 100)

    sender = asyncio.create_task(publish_all())
    started = time.monotonic()
    got = await count_publishes(healthy, n, timeout=SLOW_CONSUMER_GRACE + 20)
    await asyncio.wait_for(sender, 10)
    assert got == n, f"healthy subscriber received {got} of {n}"
    assert time.monotonic() - started < SLOW_CONSUMER_GRACE + 20
    assert broker.metrics.publish_dropped > 0  # what the stuck one could not take
    assert "healthy" in broker.connections and "pub" in broker.connections
