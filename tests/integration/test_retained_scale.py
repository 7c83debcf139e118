"""Many retained messages survive a restart and all reach a new '#' subscriber under flow
control, none dropped (the persistence issue's scale point; docs/durability.md).

The broker runs as a process (``sync: commit``, ``fsync: false``). A raw socket writes N
retained QoS 1 PUBLISHes with distinct topics in large pipelined batches and waits for every
PUBACK. The broker is stopped with SIGTERM (exit 0)
and started again on the same database. Then, one after the other:

* an MQTT 5 subscriber of '#' at QoS 1 with Receive Maximum 20 that acknowledges what it reads:
  the broker never has more than 20 unacknowledged [MQTT-3.3.4-9], and every one of the N
  topics arrives exactly once, RETAIN=1 [MQTT-3.3.1-8];
* a 3.1.1 subscriber of '#' at QoS 0 that reads slowly (small receive buffer, a capped read
  rate): every one of the N topics arrives exactly once.

Size: ``RETAINED_SCALE_N`` (default 100,000, the issue's number: about 5 s on a 2-core
machine), payload bytes ``RETAINED_SCALE_PAYLOAD`` (default 64). The ``slow`` variant uses
``RETAINED_SCALE_SLOW_N`` (default 1,000,000, the default max_retained_messages); it runs with
``-m slow`` or ``RETAINED_SCALE_SLOW=1`` and is skipped otherwise.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.packets import Connect, Subscribe, Subscription
from mqttbroker.protocol.primitives import encode_varint
from mqttbroker.protocol.properties import PropertyId
from mqttbroker.protocol.reader import FrameReader

from .brokerproc import HOST, BrokerProc, broker_procs

DEFAULT_N = int(os.environ.get("RETAINED_SCALE_N", "100000"))
SLOW_N = int(os.environ.get("RETAINED_SCALE_SLOW_N", "1000000"))
PAYLOAD = int(os.environ.get("RETAINED_SCALE_PAYLOAD", "64"))
QOS0_READ_RATE = 8_000_000  # bytes/s the slow QoS 0 subscriber reads at most
IDLE = 10.0  # a subscriber that receives nothing for this long has got all it will get


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., BrokerProc]]:
    with broker_procs(tmp_path) as make:
        yield make


def topic_of(i: int) -> str:
    return f"rs/{i // 1000}/{i % 1000}"


def _varint_at(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


class Conn:
    """A raw connection: CONNECT/CONNACK, SUBSCRIBE/SUBACK, and a frame reader."""

    def __init__(self, port: int, level: int, rcvbuf: int | None = None) -> None:
        self.level = level
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = FrameReader()
        self.frames: list[tuple[int, bytes]] = []

    def next_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        while not self.frames:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no packet within {timeout}s")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the broker closed the connection")
            self.frames.extend(self.reader.feed(data))
        return self.frames.pop(0)

    def connect(self, cid: str, properties: dict[int, int] | None = None) -> None:
        self.sock.sendall(encode(Connect("MQTT", self.level, cid, True, 300, None, None, None,
                                         dict(properties or {})), self.level))
        first, body = self.next_frame()
        assert first == 0x20 and body[1] == 0, f"CONNACK {first:#x} {body!r}"

    def subscribe(self, topic_filter: str, qos: int) -> None:
        self.sock.sendall(encode(Subscribe(1, [Subscription(topic_filter, qos)]), self.level))
        first, body = self.next_frame()
        assert first == 0x90, f"expected SUBACK, got {first:#x}"
        granted = body[-1]
        assert granted == qos, f"SUBACK {granted:#x}"

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def seed(port: int, n: int, payload: int, window: int = 10_000) -> float:
    """Publish ``n`` retained QoS 1 messages (topic ``topic_of(i)``, payload ``payload`` bytes
    starting with ``i:``) from one raw 3.1.1 connection, in big writes with up to ``window``
    unacknowledged; returns once every PUBACK came (the seconds it took)."""
    t0 = time.monotonic()
    c = Conn(port, 4)
    try:
        c.connect("rs-seeder")
        pad = b"x" * payload
        outstanding: set[int] = set()
        i = 0
        c.sock.settimeout(30)
        while i < n or outstanding:
            batch: list[bytes] = []
            while i < n and len(outstanding) < window and len(batch) < 2000:
                pid = i % 65535 + 1
                t = topic_of(i).encode()
                body = (len(t).to_bytes(2, "big") + t + pid.to_bytes(2, "big")
                        + (b"%d:" % i + pad)[:max(payload, 1)])
                batch.append(b"\x33" + encode_varint(len(body)) + body)  # QoS 1, RETAIN
                outstanding.add(pid)
                i += 1
            if batch:
                c.sock.sendall(b"".join(batch))
            if len(outstanding) < window and i < n:
                c.sock.setblocking(False)
                try:
                    data = c.sock.recv(262144)
                except BlockingIOError:
                    data = None
                finally:
                    c.sock.settimeout(30)
            else:
                try:
                    data = c.sock.recv(262144)
                except TimeoutError:
                    raise AssertionError(
                        f"no PUBACK for 30 s while seeding ({i} sent, {len(outstanding)} "
                        "unacknowledged)") from None
            if data is None:
                continue
            assert data, f"the broker closed the connection while seeding ({i} sent)"
            for first, body in c.reader.feed(data):
                assert first == 0x40, f"expected PUBACK, got {first:#x}"
                outstanding.discard((body[0] << 8) | body[1])
        c.sock.sendall(b"\xe0\x00")
    finally:
        c.close()
    return time.monotonic() - t0


def read_qos1_v5(port: int, n: int, receive_maximum: int = 20,
                 deadline_s: float = 60.0) -> tuple[Counter[str], int, int, int]:
    """Subscribe '#' at QoS 1 (MQTT 5, Receive Maximum ``receive_maximum``), acknowledging every
    PUBLISH after each read. Returns (topics received with their counts, the most
    unacknowledged at once, how many came without RETAIN, how many were not QoS 1)."""
    c = Conn(port, 5)
    got: Counter[str] = Counter()
    unacked: set[int] = set()
    most = no_retain = wrong_qos = 0
    try:
        c.connect("rs-q1", {PropertyId.RECEIVE_MAXIMUM: receive_maximum})
        c.subscribe("#", 1)
        c.sock.settimeout(IDLE)
        deadline = time.monotonic() + deadline_s
        total = 0
        frames = c.frames
        c.frames = []
        while total < n and time.monotonic() < deadline:
            if not frames:
                try:
                    data = c.sock.recv(262144)
                except TimeoutError:
                    break
                if not data:
                    break
                frames = c.reader.feed(data)
            acks = []
            for first, body in frames:
                if first >> 4 != 3:
                    continue
                qos = (first >> 1) & 3
                end = 2 + ((body[0] << 8) | body[1])
                topic = body[2:end].decode()
                got[topic] += 1
                total += 1
                no_retain += not first & 1
                if qos != 1:
                    wrong_qos += 1
                    continue
                pid = (body[end] << 8) | body[end + 1]
                unacked.add(pid)
                most = max(most, len(unacked))
                acks.append(b"\x40\x02" + body[end:end + 2])
            frames = []
            if acks:
                c.sock.sendall(b"".join(acks))
                unacked.clear()
    finally:
        c.close()
    return got, most, no_retain, wrong_qos


def read_qos0_slow(port: int, n: int, deadline_s: float = 60.0) -> tuple[Counter[str], int]:
    """Subscribe '#' at QoS 0 (3.1.1) with a 16 KiB receive buffer, reading at most
    QOS0_READ_RATE bytes/s. Returns (topics received with their counts, how many came without
    RETAIN)."""
    c = Conn(port, 4, rcvbuf=16384)
    got: Counter[str] = Counter()
    no_retain = 0
    try:
        c.connect("rs-q0-slow")
        c.subscribe("#", 0)
        c.sock.settimeout(IDLE)
        deadline = time.monotonic() + deadline_s
        total = 0
        frames = c.frames
        c.frames = []
        t0 = time.monotonic()
        read = 0
        while total < n and time.monotonic() < deadline:
            if not frames:
                ahead = read / QOS0_READ_RATE - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
                try:
                    data = c.sock.recv(16384)
                except TimeoutError:
                    break
                if not data:
                    break
                read += len(data)
                frames = c.reader.feed(data)
            for first, body in frames:
                if first >> 4 == 3:
                    got[body[2:2 + ((body[0] << 8) | body[1])].decode()] += 1
                    no_retain += not first & 1
                    total += 1
            frames = []
    finally:
        c.close()
    return got, no_retain


def check(what: str, got: Counter[str], n: int, broker: BrokerProc) -> None:
    expected = {topic_of(i) for i in range(n)}
    lost = expected - set(got)
    twice = {t: k for t, k in got.items() if k > 1}
    strange = set(got) - expected
    sample = sorted(lost, key=lambda t: tuple(int(x) for x in t.split("/")[1:]))[:20]
    assert not lost, (
        f"{what}: {len(lost)} of {n} retained topics never arrived (got {len(got)} distinct, "
        f"{sum(got.values())} in all); e.g. {sample}\n{broker.log_tail(20)}")
    assert not twice, f"{what}: {len(twice)} topics came more than once, e.g. " \
        f"{list(twice.items())[:10]}"
    assert not strange, f"{what}: topics nobody retained: {sorted(strange)[:10]}"


def run_scale(procs: Callable[..., BrokerProc], n: int,
              deadline_s: float = 25.0) -> dict[str, float]:
    broker = procs(mqtt={"max_retained_messages": 0, "max_retained_bytes": 0}).start()
    times: dict[str, float] = {}
    times["seed"] = seed(broker.port, n, PAYLOAD)
    t0 = time.monotonic()
    broker.restart()
    times["restart"] = time.monotonic() - t0

    t0 = time.monotonic()
    got, most, no_retain, wrong_qos = read_qos1_v5(broker.port, n, deadline_s=deadline_s)
    times["qos1"] = time.monotonic() - t0
    check("QoS 1 subscriber (Receive Maximum 20)", got, n, broker)
    assert most <= 20, (
        f"{most} QoS 1 PUBLISH unacknowledged at once; Receive Maximum is 20 [MQTT-3.3.4-9]")
    assert no_retain == 0, f"{no_retain} retained messages came with RETAIN=0 [MQTT-3.3.1-8]"
    assert wrong_qos == 0, (
        f"{wrong_qos} came at a QoS other than 1 = min(published 1, granted 1) [MQTT-3.8.4-6]")

    t0 = time.monotonic()
    got0, no_retain0 = read_qos0_slow(broker.port, n, deadline_s=deadline_s)
    times["qos0"] = time.monotonic() - t0
    check("slow QoS 0 subscriber", got0, n, broker)
    assert no_retain0 == 0, f"{no_retain0} came with RETAIN=0 [MQTT-3.3.1-8]"
    return times


@pytest.mark.timeout(90)
def test_retained_messages_at_scale_survive_restart(procs: Callable[..., BrokerProc]) -> None:
    """N retained messages (RETAINED_SCALE_N, default 100,000) survive a SIGTERM restart and all
    reach a QoS 1 '#' subscriber with a window of 20 and a slow QoS 0 '#' subscriber, each
    exactly once (see the module docstring)."""
    times = run_scale(procs, DEFAULT_N)
    print(f"retained scale N={DEFAULT_N}: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))


def _slow_enabled(config: pytest.Config) -> bool:
    return os.environ.get("RETAINED_SCALE_SLOW") == "1" or "slow" in (
        config.getoption("markexpr", "") or "")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_retained_messages_at_slow_scale_survive_restart(procs: Callable[..., BrokerProc],
                                                         request: pytest.FixtureRequest) -> None:
    """The same with RETAINED_SCALE_SLOW_N (default 1,000,000) retained messages; run with
    ``-m slow`` or RETAINED_SCALE_SLOW=1 (skipped otherwise)."""
    if not _slow_enabled(request.config):
        pytest.skip("slow variant: run with -m slow or RETAINED_SCALE_SLOW=1")
    times = run_scale(procs, SLOW_N, deadline_s=300)
    print(f"retained scale N={SLOW_N}: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
