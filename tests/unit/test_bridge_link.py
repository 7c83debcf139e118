"""BridgeLink (mqttbroker/bridge/link.py) on an event loop with a recording transport and a
remote played byte by byte: the queue's bounds (count and bytes, both policies), draining a
long backlog a batch per turn of the loop, waiting while the socket's buffer is full, the
Receive Maximum window, message expiry while queued, and the queue a previous run stored
coming back in order (what was in flight under its packet identifier). The integration tests
(test_bridge*.py) drive the same code over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mqttbroker.bridge.link import DRAIN_BATCH, BridgeLink
from mqttbroker.config.bridges import BridgeConfig, BridgeQueue, BridgeTopic
from mqttbroker.message import Message
from mqttbroker.metrics import Metrics
from mqttbroker.persistence.base import StoredItem, StoredSession
from mqttbroker.protocol.codec import decode
from mqttbroker.protocol.packets import Publish
from mqttbroker.protocol.properties import PropertyId as Prop
from mqttbroker.protocol.reader import FrameReader

CONNACK_311 = bytes([0x20, 2, 0, 0])


class Transport:
    """What the link writes, decoded; ``pause``/``resume`` as asyncio's flow control."""

    def __init__(self, level: int = 4) -> None:
        self.reader = FrameReader()
        self.level = level
        self.packets: list[Any] = []
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.packets += [decode(f, b, self.level) for f, b in self.reader.feed(data)
                         if f >> 4 != 1]  # (not the CONNECT)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def publishes(self) -> list[Publish]:
        return [p for p in self.packets if isinstance(p, Publish)]


def config(queue: BridgeQueue | None = None, protocol: str = "mqttv311",
           max_inflight: int | None = None) -> BridgeConfig:
    return BridgeConfig("cloud", (("127.0.0.1", 1),),
                        (BridgeTopic("s/#", "out", 1, "", "r/"),), "edge", protocol=protocol,
                        notifications=False, queue=queue or BridgeQueue(),
                        max_inflight=max_inflight)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


async def turns(n: int = 1) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def connect(link: BridgeLink, connack: bytes = CONNACK_311) -> Transport:
    t = Transport(5 if link.config.protocol == "mqttv5" else 4)
    link.connection_made(t)  # type: ignore[arg-type]
    link.data_received(connack)
    return t


def msg(i: int, size: int = 1, expires_at: float | None = None) -> Message:
    return Message(f"s/{i}", b"%0*d" % (size, i), 1, False, None, None, expires_at)


def test_count_bound_drop_oldest_keeps_the_newest() -> None:
    async def t() -> None:
        link = BridgeLink(config(BridgeQueue(max_messages=3)), lambda m: None, Metrics())
        for i in range(5):
            link.deliver(msg(i), 1, False)
        assert [o.message.payload for o in link.backlog] == [b"2", b"3", b"4"]
        assert link.stats.dropped == 2
    run(t)


def test_count_bound_drop_new_keeps_the_oldest() -> None:
    async def t() -> None:
        link = BridgeLink(config(BridgeQueue(max_messages=3, full_policy="drop_new")),
                          lambda m: None, Metrics())
        for i in range(5):
            link.deliver(msg(i), 1, False)
        assert [o.message.payload for o in link.backlog] == [b"0", b"1", b"2"]
        assert link.stats.dropped == 2
    run(t)


def test_byte_bound_counts_payload_bytes() -> None:
    async def t() -> None:
        link = BridgeLink(config(BridgeQueue(max_bytes=25)), lambda m: None, Metrics())
        for i in range(4):
            link.deliver(msg(i, size=10), 1, False)  # 10 bytes each: 2 fit
        assert [o.message.payload for o in link.backlog] == [b"0000000002", b"0000000003"]
        assert link.backlog_bytes == 20 and link.stats.dropped == 2
        await turns()
        assert link.stats.queued == 2 and link.stats.queued_bytes == 20
    run(t)


def test_long_backlog_drains_a_batch_per_turn_in_order() -> None:
    async def t() -> None:
        link = BridgeLink(config(max_inflight=65535), lambda m: None, Metrics())
        n = DRAIN_BATCH * 3 + 7
        for i in range(n):
            link.deliver(msg(i), 1, False)
        tr = connect(link)
        assert len(tr.publishes()) == DRAIN_BATCH  # the first batch, then the loop goes on
        await turns(4)
        pubs = tr.publishes()
        assert [p.payload for p in pubs] == [b"%d" % i for i in range(n)]
        assert [p.topic for p in pubs[:2]] == ["r/s/0", "r/s/1"]
        assert link.stats.inflight == n and link.stats.queued == n
    run(t)


def test_full_socket_buffer_pauses_draining() -> None:
    async def t() -> None:
        link = BridgeLink(config(), lambda m: None, Metrics())
        tr = connect(link)
        link.pause_writing()
        for i in range(10):
            link.deliver(msg(i), 1, False)
        await turns(3)
        assert tr.publishes() == [] and len(link.backlog) == 10
        link.resume_writing()
        assert len(tr.publishes()) == 10
    run(t)


def test_a_3x_remote_gets_20_in_flight_unless_configured() -> None:
    """A 3.x remote cannot announce a Receive Maximum, and Mosquitto drops what comes beyond
    its max_inflight_messages (20) with a PUBACK 3.1.1 cannot qualify: 20 unless told."""
    async def t() -> None:
        for given, window in ((None, 20), (5, 5)):
            link = BridgeLink(config(max_inflight=given), lambda m: None, Metrics())
            tr = connect(link)
            for i in range(30):
                link.deliver(msg(i), 1, False)
            await turns(2)
            assert len(tr.publishes()) == window
            link.data_received(bytes([0x40, 2, 0, tr.publishes()[0].packet_id or 0]))
            assert len(tr.publishes()) == window + 1
    run(t)


def test_window_is_the_remote_receive_maximum_and_acks_open_it() -> None:
    async def t() -> None:
        link = BridgeLink(config(protocol="mqttv5"), lambda m: None, Metrics())
        # CONNACK with Receive Maximum 2
        tr = connect(link, bytes([0x20, 6, 0, 0, 3, 0x21, 0, 2]))
        for i in range(5):
            link.deliver(msg(i), 1, False)
        await turns(2)
        assert [p.payload for p in tr.publishes()] == [b"0", b"1"]
        link.data_received(bytes([0x40, 2, 0, tr.publishes()[0].packet_id or 0]))
        assert [p.payload for p in tr.publishes()] == [b"0", b"1", b"2"]
        assert link.stats.sent == 1 and link.stats.queued == 4
    run(t)


def test_expired_while_queued_is_dropped_and_the_rest_carries_what_is_left() -> None:
    async def t() -> None:
        link = BridgeLink(config(protocol="mqttv5"), lambda m: None, Metrics())
        now = asyncio.get_running_loop().time()
        link.deliver(msg(0, expires_at=now - 1), 1, False)
        link.deliver(msg(1, expires_at=now + 30.2), 1, False)
        tr = connect(link, bytes([0x20, 3, 0, 0, 0]))
        await turns()
        [p] = tr.publishes()
        assert p.payload == b"1" and p.properties[Prop.MESSAGE_EXPIRY_INTERVAL] == 31
        assert link.stats.dropped == 1
    run(t)


def test_stored_queue_comes_back_in_order_in_flight_under_its_id() -> None:
    async def t() -> None:
        link = BridgeLink(config(), lambda m: None, Metrics())
        m = [msg(i) for i in range(3)]
        link.restore(StoredSession("$bridge/cloud", 0, None, items=[
            StoredItem(1, m[0], 2, False, packet_id=7, state=1),   # PUBLISH sent
            StoredItem(2, m[1], 2, False, packet_id=8, state=2),   # PUBREC came
            StoredItem(3, m[2], 1, False)]))                       # queued
        assert link.stats.queued == 3 and link.stats.inflight == 2
        # the remote kept the session: PUBLISH 7 again (DUP), PUBREL 8, then the queue
        tr = connect(link, bytes([0x20, 2, 1, 0]))
        await turns()
        kinds = [(type(p).__name__, getattr(p, "packet_id", None)) for p in tr.packets]
        assert kinds[:2] == [("Publish", 7), ("Pubrel", 8)]
        first = tr.publishes()[0]
        assert first.dup and first.payload == b"0"
        assert [p.payload for p in tr.publishes()] == [b"0", b"2"]
    run(t)
