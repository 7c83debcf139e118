"""Every row of the "Limits" table in docs/durability.md, against a real broker on 127.0.0.1:
what happens when the limit is reached, and that the broker says so (reason codes, metrics,
logs). One or more tests per row; raw sockets where the exact bytes matter, paho-mqtt where a
well-behaved client is the point. Every wait is bounded.

The slow-subscriber row (write_buffer_limit / max_write_buffer) has its own module,
test_slow_subscriber_memory.py (it measures the broker's RSS, so the broker runs as a process);
the in-flight window and inbound QoS 2 rows are test_v5_flow_control.py's.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.packets import Publish, Will
from tests.conftest import BrokerThread, base_config

from .helpers import (
    V311,
    ConnectionClosed,
    Paho,
    RawClient,
    unique_id,
    wait_until,
)
from .v5helpers import Env, P, RawV5

QUOTA_EXCEEDED = 0x97  # MQTT 5 CONNACK / PUBACK / PUBREC / DISCONNECT reason code
PACKET_TOO_LARGE = 0x95
SERVER_UNAVAILABLE = 0x03  # MQTT 3.1.1 CONNACK return code [MQTT 3.2.2.3]


@pytest.fixture
def closing() -> Iterator[list[RawClient]]:
    """Raw clients made outside an Env (other listeners' ports), closed at the end."""
    made: list[RawClient] = []
    yield made
    for r in made:
        r.close()


def metric(env: Env, name: str) -> int:
    bt = env.bt
    return int(bt.call(lambda: getattr(bt.broker.metrics, name)))  # type: ignore[union-attr]


def listener_ports(bt: BrokerThread) -> dict[str, int]:
    """Listener name -> its bound port."""
    addresses = bt.call(lambda: list(bt.broker.addresses))  # type: ignore[union-attr]
    return {name: port for name, _, port in addresses}


def warnings_naming(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    """WARNING (or worse) lines from the broker's loggers that contain every one of ``words``
    (each as a whole word)."""
    out = []
    for rec in caplog.records:
        if rec.levelno < logging.WARNING or not rec.name.startswith("mqttbroker"):
            continue
        text = rec.getMessage()
        if all(re.search(rf"(?<![\w.]){re.escape(w)}(?![\w.])", text) for w in words):
            out.append(text)
    return out


def connect_v5(port: int, cid: str, made: list[RawClient], **kw: Any) -> tuple[RawV5, int]:
    """An MQTT 5 CONNECT; the CONNACK's reason code. A refusal says Session Present 0
    [MQTT-3.2.2-6]."""
    r = RawV5(port)
    made.append(r)
    ack = r.connect5(cid, **kw)
    assert not (ack.return_code and ack.session_present), ack
    return r, ack.return_code


def connect_v311(port: int, cid: str, made: list[RawClient], **kw: Any) -> tuple[RawClient, int]:
    """An MQTT 3.1.1 CONNECT; the CONNACK's return code. A refusal says Session Present 0
    [MQTT-3.2.2-4]."""
    r = RawClient(port, 4)
    made.append(r)
    ack = r.connect(cid, **kw)
    assert not (ack.return_code and ack.session_present), ack
    return r, ack.return_code


def assert_refused_and_closed(r: RawClient) -> None:
    """After a refusing CONNACK the broker closes the connection (MQTT 5 [MQTT-3.2.2-7],
    3.1.1 [MQTT-3.2.2-5]) and sends nothing more."""
    assert r.wait_closed(timeout=3.0) == []


# -- connections per listener ----------------------------------------------------------------


def test_listener_max_connections_refuses_with_connack(
        env: Env, caplog: pytest.LogCaptureFixture, closing: list[RawClient]) -> None:
    """listeners.edge.max-connections 2 (hbmqtt's key): the third client on that listener
    gets CONNACK 0x97 Quota exceeded (MQTT 5) or 0x03 Server unavailable (3.1.1) with
    Session Present 0, then the connection is closed [MQTT-3.2.2-7 (5), MQTT-3.2.2-5 (3.1.1)];
    connections_refused counts each, a WARNING names the listener and the limit. Another
    listener is not affected; when one of the two leaves, a new client gets in."""
    caplog.set_level(logging.INFO)
    cfg = base_config()
    cfg["listeners"] = {
        "main": {"type": "tcp", "bind": "127.0.0.1:0"},
        "edge": {"type": "tcp", "bind": "127.0.0.1:0", "max-connections": 2},
    }
    bt = env.start(cfg)
    ports = listener_ports(bt)
    edge, main = ports["edge"], ports["main"]
    refused0 = metric(env, "connections_refused")

    first, code = connect_v5(edge, unique_id("lim-e1"), closing)
    assert code == 0
    _, code = connect_v311(edge, unique_id("lim-e2"), closing)
    assert code == 0

    over5, code = connect_v5(edge, unique_id("lim-e3"), closing)
    assert code == QUOTA_EXCEEDED, f"CONNACK 0x{code:02X}, expected 0x97"
    assert_refused_and_closed(over5)
    over3, code = connect_v311(edge, unique_id("lim-e4"), closing)
    assert code == SERVER_UNAVAILABLE, f"CONNACK 0x{code:02X}, expected 0x03"
    assert_refused_and_closed(over3)
    assert metric(env, "connections_refused") - refused0 == 2
    assert warnings_naming(caplog, "edge", "2"), (
        "no WARNING naming listener 'edge' and its limit 2: "
        f"{[r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]}")

    # the other listener has no limit of its own
    for i in range(3):
        _, code = connect_v311(main, unique_id(f"lim-m{i}"), closing)
        assert code == 0

    # one leaves: there is room again on edge
    cid = unique_id("lim-e5")
    first.disconnect5()
    wait_until(lambda: metric(env, "clients_connected") == 4, what="the broker to let go")
    _, code = connect_v5(edge, cid, closing)
    assert code == 0
    assert metric(env, "connections_refused") - refused0 == 2


def test_listener_max_connections_paho(make_broker_thread: Callable[[dict[str, Any]],
                                                                    BrokerThread]) -> None:
    """The same seen by paho-mqtt 3.1.1: its CONNACK callback reports "Server unavailable"
    and paho sees the connection end."""
    cfg = base_config()
    cfg["listeners"] = {"default": {"type": "tcp", "bind": "127.0.0.1:0",
                                    "max-connections": 1}}
    bt = make_broker_thread(cfg)
    a = Paho(unique_id("lim-pa"), V311)
    b = Paho(unique_id("lim-pb"), V311)
    try:
        a.connect(bt.port)
        assert b.connect(bt.port, expect=SERVER_UNAVAILABLE) == SERVER_UNAVAILABLE
        assert b.disconnected.wait(3.0), "paho still connected after CONNACK 0x03"
        assert a.client.is_connected()
    finally:
        a.close()
        b.close()


# -- connections in total ---------------------------------------------------------------------


def test_total_max_connections_over_two_listeners(
        env: Env, caplog: pytest.LogCaptureFixture, closing: list[RawClient]) -> None:
    """mqtt.max_connections 3 with two listeners: 2 + 1 fill it; the next on either listener
    is refused (0x97 / 0x03) and closed; connections_refused counts; after one leaves, a new
    client gets in (on the other listener)."""
    caplog.set_level(logging.INFO)
    cfg = base_config(max_connections=3)
    cfg["listeners"] = {
        "a": {"type": "tcp", "bind": "127.0.0.1:0"},
        "b": {"type": "tcp", "bind": "127.0.0.1:0"},
    }
    bt = env.start(cfg)
    ports = listener_ports(bt)
    refused0 = metric(env, "connections_refused")

    a1, code = connect_v5(ports["a"], unique_id("tot-a1"), closing)
    assert code == 0
    _, code = connect_v311(ports["a"], unique_id("tot-a2"), closing)
    assert code == 0
    _, code = connect_v5(ports["b"], unique_id("tot-b1"), closing)
    assert code == 0

    over_b, code = connect_v5(ports["b"], unique_id("tot-b2"), closing)
    assert code == QUOTA_EXCEEDED, f"CONNACK 0x{code:02X}, expected 0x97"
    assert_refused_and_closed(over_b)
    over_a, code = connect_v311(ports["a"], unique_id("tot-a3"), closing)
    assert code == SERVER_UNAVAILABLE, f"CONNACK 0x{code:02X}, expected 0x03"
    assert_refused_and_closed(over_a)
    assert metric(env, "connections_refused") - refused0 == 2
    assert warnings_naming(caplog, "3"), "no WARNING naming the limit 3"

    a1.disconnect5()
    wait_until(lambda: metric(env, "clients_connected") == 2, what="the broker to let go")
    b2, code = connect_v311(ports["b"], unique_id("tot-b3"), closing)
    assert code == 0
    b2.ping()  # in, and served


# -- packet size ------------------------------------------------------------------------------


def test_max_packet_size_disconnects_only_the_offender(env: Env) -> None:
    """max_packet_size 1000: an MQTT 5 client sending a bigger PUBLISH gets DISCONNECT 0x95
    Packet too large [MQTT 3.2.2.3.6, MQTT-4.13.1-1] and is closed; a 3.1.1 one is closed
    (no DISCONNECT in 3.1.1). Clients sending at the limit go on undisturbed."""
    env.start(max_packet_size=1000)
    sub, _ = env.raw_connect(unique_id("mps-sub"))
    assert sub.subscribe5(("mps/#", 0)).return_codes == [0]
    ok, _ = env.raw_connect(unique_id("mps-ok"))
    big, _ = env.raw_connect(unique_id("mps-big"))
    big3 = env.raw3()
    big3.connect(unique_id("mps-big3"))

    big.send(Publish("mps/big", b"x" * 1200))
    assert big.expect_disconnect().reason_code == PACKET_TOO_LARGE
    big3.send(Publish("mps/big3", b"x" * 1200))
    assert big3.wait_closed() == []

    # exactly 1000 bytes: 1 + 2 (remaining length) + 2 + 5 (topic "mps/a") + 1 (no props)
    ok.send(Publish("mps/a", b"y" * 989))
    got = sub.next_publish()
    assert (got.topic, len(got.payload)) == ("mps/a", 989)
    ok.ping()
    sub.ping()


# -- queued messages per session --------------------------------------------------------------


def _offline_subscriber(env: Env, topic: str, qos: int = 1) -> str:
    """A v5 session (expiry 300 s) subscribed to ``topic``, then disconnected."""
    cid = unique_id("q")
    r, _ = env.raw_connect(cid, properties={P.SESSION_EXPIRY_INTERVAL: 300})
    assert r.subscribe5((topic, qos)).return_codes == [qos]
    r.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to let the subscriber go")
    return cid


def _publish_all(env: Env, topic: str, payloads: list[bytes]) -> None:
    pub, _ = env.raw_connect(unique_id("qpub"))
    for p in payloads:
        ack = pub.publish5(topic, p, qos=1)
        assert ack is not None and ack.reason_code < 0x80, ack
    pub.disconnect5()


def _come_back(env: Env, cid: str, expect: int, topic: str) -> list[bytes]:
    """Reconnect (clean start 0) and return exactly what was queued: ``expect`` messages and
    nothing more (a sentinel published afterwards arrives right after them)."""
    r, ack = env.raw_connect(cid, clean_start=False,
                             properties={P.SESSION_EXPIRY_INTERVAL: 300})
    assert ack.session_present is True
    got = [p.payload for p in r.publishes(expect)]
    _publish_all(env, topic, [b"sentinel"])
    assert r.next_publish().payload == b"sentinel", "more was queued than expected"
    r.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to let the subscriber go")
    return got


_QUEUE_WORDS = re.compile(r"queue|drop", re.IGNORECASE)


@pytest.mark.parametrize("policy", ["drop_new", "drop_oldest"])
def test_max_queued_messages_policy(env: Env, policy: str) -> None:
    """max_queued_messages 5: 12 QoS 1 messages for an offline session; on reconnect exactly
    the first 5 (drop_new) or the last 5 (drop_oldest) arrive, in order [MQTT-4.6.0-5]; the
    7 others are counted in publish_dropped."""
    env.start(max_queued_messages=5, queue_full_policy=policy)
    cid = _offline_subscriber(env, "qm/t")
    dropped0 = metric(env, "publish_dropped")
    _publish_all(env, "qm/t", [b"m%d" % i for i in range(12)])
    assert metric(env, "publish_dropped") - dropped0 == 7
    kept = range(5) if policy == "drop_new" else range(7, 12)
    assert _come_back(env, cid, 5, "qm/t") == [b"m%d" % i for i in kept]


def test_queue_full_logged_once_per_episode(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """A full queue is logged once per episode, not once per dropped message: 20 drops, one
    WARNING naming the client; after the queue drained, the next episode gets its own. (The
    end of an episode is an INFO line.)"""
    caplog.set_level(logging.INFO)
    env.start(max_queued_messages=3)
    cid = _offline_subscriber(env, "qlog/t")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name.startswith("mqttbroker") and r.levelno >= logging.WARNING
                and cid in r.getMessage() and _QUEUE_WORDS.search(r.getMessage())]

    before = len(lines())
    _publish_all(env, "qlog/t", [b"%d" % i for i in range(23)])
    assert len(lines()) - before == 1, lines()
    assert len(_come_back(env, cid, 3, "qlog/t")) == 3
    mid = len(lines())
    _publish_all(env, "qlog/t", [b"%d" % i for i in range(10)])
    assert len(lines()) - mid == 1, lines()


# -- queued bytes per session -----------------------------------------------------------------


@pytest.mark.parametrize("policy", ["drop_new", "drop_oldest"])
def test_max_queued_bytes_policy(env: Env, policy: str) -> None:
    """max_queued_bytes 1000 (payload bytes; the message count limit far away): 14 messages
    of 100 bytes: 10 fit exactly; the first 10 (drop_new) or the last 10 (drop_oldest) arrive,
    4 are counted in publish_dropped."""
    env.start(max_queued_bytes=1000, max_queued_messages=1000, queue_full_policy=policy)
    cid = _offline_subscriber(env, "qb/t")
    dropped0 = metric(env, "publish_dropped")
    payloads = [b"%02d" % i + b"." * 98 for i in range(14)]
    _publish_all(env, "qb/t", payloads)
    assert metric(env, "publish_dropped") - dropped0 == 4
    kept = payloads[:10] if policy == "drop_new" else payloads[4:]
    assert _come_back(env, cid, 10, "qb/t") == kept


@pytest.mark.parametrize(("policy", "kept"), [("drop_new", [600, 300, 100]),
                                              ("drop_oldest", [300, 200, 100])])
def test_max_queued_bytes_mixed_sizes(env: Env, policy: str, kept: list[int]) -> None:
    """max_queued_bytes 1000, payloads of 600, 300, 200, 100 bytes. drop_new refuses only the
    arriving message that does not fit (the 200: 1100 > 1000), a later smaller one still
    fits; drop_oldest drops from the head until the new one fits (the 600 goes). Either way
    the queue never holds more than 1000 payload bytes."""
    env.start(max_queued_bytes=1000, queue_full_policy=policy)
    cid = _offline_subscriber(env, "qbm/t")
    dropped0 = metric(env, "publish_dropped")
    _publish_all(env, "qbm/t", [b"a" * 600, b"b" * 300, b"c" * 200, b"d" * 100])
    assert metric(env, "publish_dropped") - dropped0 == 1
    assert [len(p) for p in _come_back(env, cid, 3, "qbm/t")] == kept


# -- retained messages and bytes --------------------------------------------------------------


def _retained_now(env: Env, topic_filter: str) -> dict[str, bytes]:
    """What a fresh subscriber gets as retained on ``topic_filter`` (RETAIN=1
    [MQTT-3.3.1-8]), by topic."""
    r, _ = env.raw_connect(unique_id("rsub"))
    r.subscribe5((topic_filter, 1))
    got = {}
    for p in r.drain(0.4):
        assert isinstance(p, Publish) and p.retain, p
        got[p.topic] = p.payload
        r.ack(p)
    r.disconnect5()
    return got


def _code(ack: Any) -> int:
    assert ack is not None
    return int(ack.reason_code)


def test_max_retained_messages_v5(env: Env) -> None:
    """max_retained_messages 3. A new retained topic past it: MQTT 5 QoS 1 gets PUBACK 0x97
    and QoS 2 PUBREC 0x97 [MQTT 3.4.2.1, 3.5.2.1], and the message is not delivered (a live
    subscriber does not get it); retained_dropped counts. Replacing a retained topic still
    works; deleting one (empty payload [MQTT-3.3.1-10]) makes room."""
    env.start(max_retained_messages=3)
    live, _ = env.raw_connect(unique_id("rlive"))
    live.subscribe5(("rt/#", 1))
    pub, _ = env.raw_connect(unique_id("rpub"))
    dropped0 = metric(env, "retained_dropped")
    for i in (1, 2, 3):
        assert _code(pub.publish5(f"rt/{i}", b"v%d" % i, qos=1, retain=True)) < 0x80
    assert [p.topic for p in live.publishes(3)] == ["rt/1", "rt/2", "rt/3"]

    assert _code(pub.publish5("rt/4", b"v4", qos=1, retain=True)) == QUOTA_EXCEEDED
    assert _code(pub.publish5("rt/5", b"v5", qos=2, retain=True)) == QUOTA_EXCEEDED
    assert live.drain(0.3) == [], "a refused retained message was delivered"
    assert metric(env, "retained_dropped") - dropped0 == 2
    # not retained without RETAIN: the limit is on the store only
    assert _code(pub.publish5("rt/6", b"plain", qos=1)) < 0x80
    assert live.next_publish().payload == b"plain"

    # replacing is not adding
    assert _code(pub.publish5("rt/1", b"v1-new", qos=1, retain=True)) < 0x80
    assert live.next_publish().payload == b"v1-new"
    assert _retained_now(env, "rt/#") == {"rt/1": b"v1-new", "rt/2": b"v2", "rt/3": b"v3"}

    # deleting makes room
    assert _code(pub.publish5("rt/2", b"", qos=1, retain=True)) < 0x80
    live.next_publish()
    assert _code(pub.publish5("rt/4", b"v4", qos=1, retain=True)) < 0x80
    assert live.next_publish().payload == b"v4"
    assert _retained_now(env, "rt/#") == {"rt/1": b"v1-new", "rt/3": b"v3", "rt/4": b"v4"}
    assert metric(env, "retained_dropped") - dropped0 == 2


def test_max_retained_messages_v311_delivered_not_retained(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """MQTT 3.1.1 has no way to refuse a PUBLISH: past max_retained_messages (2) a new
    retained topic is acknowledged and delivered to live subscribers, but not retained (a
    later subscriber does not get it); retained_dropped counts, a WARNING is logged."""
    caplog.set_level(logging.INFO)
    env.start(max_retained_messages=2)
    live = env.raw3()
    live.connect(unique_id("r3live"))
    live.subscribe(("r3/#", 1))
    pub = env.raw3()
    pub.connect(unique_id("r3pub"))
    dropped0 = metric(env, "retained_dropped")
    for i in (1, 2, 3):
        pub.publish(f"r3/{i}", b"v%d" % i, qos=1, retain=True)  # PUBACK for each
    got = []
    for _ in range(3):
        p = live.expect(Publish)
        live.ack(p)
        got.append((p.topic, p.payload))
    assert got == [("r3/1", b"v1"), ("r3/2", b"v2"), ("r3/3", b"v3")]
    assert metric(env, "retained_dropped") - dropped0 == 1
    assert _retained_now(env, "r3/#") == {"r3/1": b"v1", "r3/2": b"v2"}
    assert any(r.levelno >= logging.WARNING and r.name.startswith("mqttbroker")
               and "retain" in r.getMessage().lower() for r in caplog.records), \
        "no WARNING about the message that was not retained"


def test_max_retained_bytes(env: Env) -> None:
    """max_retained_bytes 1000 (payload bytes): 400 + 400 + 200 fit exactly; a new topic of
    even 1 byte is then refused (PUBACK 0x97, not delivered, counted); replacing one works;
    deleting one makes room for a new one."""
    env.start(max_retained_bytes=1000)
    live, _ = env.raw_connect(unique_id("rblive"))
    live.subscribe5(("rb/#", 0))
    pub, _ = env.raw_connect(unique_id("rbpub"))
    dropped0 = metric(env, "retained_dropped")
    for topic, size in (("rb/a", 400), ("rb/b", 400), ("rb/c", 200)):
        assert _code(pub.publish5(topic, b"x" * size, qos=1, retain=True)) < 0x80
    assert len(live.publishes(3)) == 3
    assert _code(pub.publish5("rb/d", b"y", qos=1, retain=True)) == QUOTA_EXCEEDED
    assert live.drain(0.3) == []
    assert metric(env, "retained_dropped") - dropped0 == 1

    assert _code(pub.publish5("rb/a", b"z" * 400, qos=1, retain=True)) < 0x80
    assert _code(pub.publish5("rb/b", b"", qos=1, retain=True)) < 0x80
    assert _code(pub.publish5("rb/d", b"w" * 300, qos=1, retain=True)) < 0x80
    assert {t: len(v) for t, v in _retained_now(env, "rb/#").items()} == \
        {"rb/a": 400, "rb/c": 200, "rb/d": 300}


# -- publish rate per client ------------------------------------------------------------------


class TimedSubscriber:
    """A raw 3.1.1 subscriber whose reader thread stamps every PUBLISH with its arrival time."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.r = RawClient(port, 4)
        self.r.connect(unique_id("tsub"), keep_alive=0)
        self.r.subscribe((topic_filter, 0))
        self.got: list[tuple[float, Publish]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timed-sub", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                p = self.r.recv(0.1)
            except TimeoutError:
                continue
            except (ConnectionClosed, OSError):
                return
            if isinstance(p, Publish):
                with self._cond:
                    self.got.append((time.monotonic(), p))
                    self._cond.notify_all()

    def wait_for(self, topic: str, n: int, timeout: float) -> list[float]:
        """Arrival times of the first ``n`` messages on ``topic``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                times = [t for t, p in self.got if p.topic == topic]
                if len(times) >= n:
                    return times[:n]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(times)} of {n} messages on {topic!r} "
                                         f"within {timeout}s")
                self._cond.wait(left)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.r.close()


@pytest.fixture
def timed() -> Iterator[list[TimedSubscriber]]:
    made: list[TimedSubscriber] = []
    yield made
    for s in made:
        s.close()


def _frames(topic: str, n: int, size: int = 0) -> bytes:
    """``n`` QoS 0 PUBLISH packets (3.1.1), payload ``size`` bytes (or the index)."""
    return b"".join(encode(Publish(topic, b"%06d" % i + b"." * max(size - 6, 0)), 4)
                    for i in range(n))


def test_max_publish_rate_paces_without_dropping(
        env: Env, timed: list[TimedSubscriber], closing: list[RawClient]) -> None:
    """max_publish_rate 50/s: a client writing 150 PUBLISH at once (one send) gets the first
    50 (the bucket's second) through at once and the rest paced: the subscriber receives all
    150, in order, spread over >= ~2 s (asserted >= 1.5 s); nothing is dropped. Another
    client publishing at the same time is not slowed: its 20 arrive promptly."""
    env.start(max_publish_rate=50)
    sub = TimedSubscriber(env.port, "rate/#")
    timed.append(sub)
    dropped0 = metric(env, "publish_dropped")
    slow_id = unique_id("rate-slow")
    slow, _ = connect_v311(env.port, slow_id, closing, keep_alive=0)
    other, _ = connect_v311(env.port, unique_id("rate-other"), closing, keep_alive=0)

    start = time.monotonic()
    slow.send_bytes(_frames("rate/slow", 150))
    time.sleep(0.5)  # the slow one is being paced now
    sent_other = time.monotonic()
    other.send_bytes(_frames("rate/other", 20))

    other_times = sub.wait_for("rate/other", 20, timeout=5)
    slow_times = sub.wait_for("rate/slow", 150, timeout=15)
    span = slow_times[-1] - slow_times[0]
    print(f"\nmax_publish_rate 50/s: 150 messages received over {span:.2f} s "
          f"(first after {slow_times[0] - start:.3f} s); the other client's 20 within "
          f"{other_times[-1] - sent_other:.3f} s")
    assert span >= 1.5, f"150 messages at 50/s arrived within {span:.2f} s"
    assert span < 10
    assert other_times[-1] - sent_other < 1.0, "a client under its limit was slowed down"
    assert other_times[-1] < slow_times[-1] - 0.5, "the other client waited for the slow one"
    payloads = [p.payload for _, p in sub.got if p.topic == "rate/slow"]
    assert payloads == [b"%06d" % i for i in range(150)]
    assert metric(env, "publish_dropped") == dropped0
    slow.ping()
    assert env.connected(slow_id)


def test_max_publish_bytes_rate_paces(env: Env, timed: list[TimedSubscriber],
                                      closing: list[RawClient]) -> None:
    """max_publish_bytes_rate 20 kB/s: 60 messages of 1 kB written at once arrive, all of
    them, over >= ~2 s (the first 20 kB at once; asserted >= 1.5 s)."""
    env.start(max_publish_bytes_rate=20_000)
    sub = TimedSubscriber(env.port, "brate/#")
    timed.append(sub)
    pub, _ = connect_v311(env.port, unique_id("brate"), closing, keep_alive=0)
    pub.send_bytes(_frames("brate/t", 60, size=1000))
    times = sub.wait_for("brate/t", 60, timeout=15)
    span = times[-1] - times[0]
    print(f"\nmax_publish_bytes_rate 20 kB/s: 60 x 1 kB received over {span:.2f} s")
    assert 1.5 <= span < 10, f"60 kB at 20 kB/s arrived over {span:.2f} s"
    pub.ping()


def test_rate_limited_client_keepalive_not_held_against_it(
        env: Env, timed: list[TimedSubscriber]) -> None:
    """Keep-alive 2 s (the broker allows 3 s of silence [MQTT-3.1.2-24]), max_publish_rate
    50/s, 250 PUBLISH written at once: the broker reads this client for ~4 s, longer than the
    keep-alive allows, and must not count its own pause as the client's silence. Afterwards
    the client is still connected (no DISCONNECT 0x8D) and answered."""
    env.start(max_publish_rate=50)
    sub = TimedSubscriber(env.port, "ka/#")
    timed.append(sub)
    cid = unique_id("rate-ka")
    pub, _ = env.raw_connect(cid, keep_alive=2)
    pub.send_bytes(b"".join(encode(Publish("ka/t", b"%d" % i), 5) for i in range(250)))
    times = sub.wait_for("ka/t", 250, timeout=15)
    span = times[-1] - times[0]
    print(f"\nkeep-alive 2 s, paused by the rate limit: 250 messages over {span:.2f} s")
    assert span >= 3.0, f"250 messages at 50/s arrived within {span:.2f} s"
    assert pub.no_packet(0.2), f"the broker sent {pub.pending!r}"
    pub.ping()
    assert env.connected(cid)


def test_rate_limited_client_is_pushed_back_by_tcp(env: Env, closing: list[RawClient]) -> None:
    """max_publish_bytes_rate 1 MB/s, a client trying to write 32 MB (64 kB messages) as fast
    as it can: the broker stops reading it, so the kernel's buffers fill and the client's
    writes block; in 1.5 s far less than the 32 MB is accepted. Nothing is buffered by the
    broker on the client's behalf, and the client stays connected."""
    env.start(max_publish_bytes_rate=1_000_000)
    cid = unique_id("push")
    r, _ = connect_v311(env.port, cid, closing, keep_alive=0)
    data = _frames("push/t", 512, size=65_536)
    view = memoryview(data)
    sock = r.sock
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 1.5
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(view[sent:sent + (1 << 20)])
        except BlockingIOError:
            select.select([], [sock], [], 0.05)
    sock.setblocking(True)
    print(f"\nbytes-rate 1 MB/s: the client could write {sent / 1e6:.1f} MB of "
          f"{len(data) / 1e6:.1f} MB in 1.5 s")
    assert sent < len(data) // 2, f"{sent} bytes accepted: nothing pushed back"
    assert env.connected(cid)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# -- session expiry ---------------------------------------------------------------------------


def test_default_session_expiry_cap_is_seven_days_mqtt_3_2_2_3_2(env: Env) -> None:
    """Default max_session_expiry_interval 604800: a v5 client asking for 0xFFFFFFFF (never
    expire) is told 604800 in the CONNACK's Session Expiry Interval [MQTT 3.2.2.3.2]; one
    asking for less is granted what it asked (nothing sent)."""
    _, ack = env.raw_connect(unique_id("sec"),
                             properties={P.SESSION_EXPIRY_INTERVAL: 0xFFFFFFFF})
    assert ack.properties.get(P.SESSION_EXPIRY_INTERVAL) == 604800, ack.properties
    _, ack = env.raw_connect(unique_id("sec"), properties={P.SESSION_EXPIRY_INTERVAL: 3600})
    assert ack.properties.get(P.SESSION_EXPIRY_INTERVAL, 3600) == 3600, ack.properties


def test_v311_persistent_session_capped(env: Env) -> None:
    """max_session_expiry_interval 1: a 3.1.1 clean-session-0 session (which otherwise never
    expires) survives a short absence (session present [MQTT-3.2.2-2]) but is gone 2 s after
    its client disconnects (session present 0, its queued message gone with it)."""
    env.start(max_session_expiry_interval=1)
    cid = unique_id("se311")
    r = env.raw3()
    assert r.connect(cid, clean=False).session_present is False
    r.subscribe(("se311/t", 1))
    r.disconnect()
    wait_until(lambda: not env.connected(cid), what="the broker to let the client go")

    r = env.raw3()
    assert r.connect(cid, clean=False).session_present is True  # well within 1 s
    r.disconnect()
    wait_until(lambda: not env.connected(cid), what="the broker to let the client go")
    pub = env.raw3()
    pub.connect(unique_id("se311p"))
    pub.publish("se311/t", b"queued", qos=1)
    assert env.has_session(cid)
    time.sleep(2.0)
    assert not env.has_session(cid)
    r = env.raw3()
    assert r.connect(cid, clean=False).session_present is False
    assert r.no_packet(0.3)


# -- sessions held at once --------------------------------------------------------------------


def test_max_sessions_discards_the_longest_offline_then_refuses(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """max_sessions 3. Clients with fresh ids keep coming (the random-client-id flood): each
    new one past the limit discards the session offline longest [MQTT 4.1 lets a server
    discard session state by policy], which then comes back with session present 0; its
    delayed will goes out as it would had the session expired [MQTT-3.1.3-9]. With every
    session connected, a new client gets CONNACK 0x97 Quota exceeded (3.1.1: 0x03)."""
    caplog.set_level(logging.INFO)
    env.start(max_sessions=3)
    watcher, _ = env.raw_connect(unique_id("watch"))  # a clean session: counts while online
    watcher.subscribe5(("gone/#", 0))
    old = unique_id("old")
    r, _ = env.raw_connect(old, properties={P.SESSION_EXPIRY_INTERVAL: 300},
                           will=Will("gone/old", b"evicted", 0, False,
                                     {P.WILL_DELAY_INTERVAL: 600}))
    r.close()  # dropped without DISCONNECT: the will waits 600 s, or for the session's end
    wait_until(lambda: not env.connected(old), what="the broker to see the drop")
    mid = unique_id("mid")
    m, _ = env.raw_connect(mid, properties={P.SESSION_EXPIRY_INTERVAL: 300})
    m.disconnect5()
    wait_until(lambda: not env.connected(mid), what="the broker to let mid go")
    assert env.has_session(old) and env.has_session(mid)
    assert watcher.no_packet(0.2)
    evicted0 = metric(env, "sessions_evicted")
    env.raw_connect(unique_id("new"), properties={P.SESSION_EXPIRY_INTERVAL: 300})
    assert not env.has_session(old), "the longest-offline session was not discarded"
    assert env.has_session(mid)
    assert watcher.next_publish().payload == b"evicted"
    assert metric(env, "sessions_evicted") == evicted0 + 1
    assert warnings_naming(caplog, "max_sessions")
    env.raw_connect(unique_id("new"), properties={P.SESSION_EXPIRY_INTERVAL: 300})
    assert not env.has_session(mid)
    # three sessions now, all connected: a fourth is refused, MQTT 5 and 3.1.1 alike
    made: list[RawClient] = []
    _, code = connect_v5(env.port, unique_id("over"), made)
    assert code == QUOTA_EXCEEDED
    _, code = connect_v311(env.port, unique_id("over"), made)
    assert code == SERVER_UNAVAILABLE
    for c in made:
        c.close()
