"""Fuzz a live broker over real sockets: random bytes and mutated valid packets.

One broker (on its own thread) takes every example. After each example a fresh client must
still complete CONNECT/CONNACK; no example may reach the broker's "internal error" path (an
exception other than ProtocolError while handling a peer's bytes is a decoder bug, even though
the broker survives it); at the end a paho-mqtt client connects, subscribes, publishes at QoS
0, 1 and 2 and receives all three, and the broker thread is alive.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from mqttbroker.protocol.properties import PropertyId
from tests.conftest import BrokerThread, base_config
from tests.integration.rawmqtt import RawClient, connect_bytes, frame

# the thread method: a signal-raised timeout inside a hypothesis test counts as one more failing
# example (and shrinking goes on); the thread method dumps every stack and ends the run
pytestmark = pytest.mark.timeout(120, method="thread")

MAX_PACKET = 65536
CONNECT_TIMEOUT = 1.0
FUZZ = settings(max_examples=50, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class _Errors(logging.Handler):
    """Collects ERROR records from the broker (its thread logs them)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self._lock:
            out, self.records = self.records, []
        return out


class FuzzBroker:
    def __init__(self, bt: BrokerThread, errors: _Errors) -> None:
        self.bt = bt
        self.errors = errors
        self.examples = 0

    @property
    def port(self) -> int:
        return self.bt.port


@pytest.fixture(scope="module")
def fuzz_broker() -> Iterator[FuzzBroker]:
    bt = BrokerThread(base_config(max_packet_size=MAX_PACKET,
                                  connect_timeout=CONNECT_TIMEOUT)).start()
    errors = _Errors()
    # asyncio logs exceptions that escape callbacks (timers, connection_lost) on its own logger
    loggers = [logging.getLogger("mqttbroker"), logging.getLogger("asyncio")]
    for logger in loggers:
        logger.addHandler(errors)
    try:
        yield FuzzBroker(bt, errors)
    finally:
        for logger in loggers:
            logger.removeHandler(errors)
        bt.stop()


# -- blocking socket helpers (hypothesis drives plain functions) -----------------------------------

def _recv_until_closed(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until the peer closes: (closed, bytes read)."""
    got = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, bytes(got)
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return False, bytes(got)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return True, bytes(got)
        if not data:
            return True, bytes(got)
        got += data


def _recv_exactly(sock: socket.socket, n: int, timeout: float) -> bytes:
    sock.settimeout(timeout)
    got = b""
    while len(got) < n:
        data = sock.recv(n - len(got))
        if not data:
            break
        got += data
    return got


def probe(port: int, what: str) -> None:
    """The broker still accepts a connection and answers CONNECT with CONNACK 0."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(connect_bytes(f"probe-{uuid.uuid4().hex[:8]}"))
        ack = _recv_exactly(s, 4, 3.0)
        assert ack == b"\x20\x02\x00\x00", f"after {what}: CONNACK {ack!r}"
        s.sendall(b"\xc0\x00")
        assert _recv_exactly(s, 2, 3.0) == b"\xd0\x00", f"after {what}: no PINGRESP"
        s.sendall(b"\xe0\x00")


def describe(records: list[logging.LogRecord]) -> str:
    """The broker's ERROR lines with their tracebacks."""
    fmt = logging.Formatter()
    return "broker logged an internal error:\n" + "\n".join(
        r.getMessage() + ("\n" + fmt.formatException(r.exc_info) if r.exc_info else "")
        for r in records)


def check_alive(fb: FuzzBroker, what: str) -> None:
    assert fb.bt._thread.is_alive(), f"broker thread died after {what}"
    probe(fb.port, what)
    errors = fb.errors.take()
    assert not errors, f"after {what}: {describe(errors)}"


def send_example(fb: FuzzBroker, data: bytes, with_connect: bool, level: int,
                 ending: str) -> None:
    """One example on a fresh socket: [CONNECT,] the bytes, then an ending."""
    fb.examples += 1
    with socket.create_connection(("127.0.0.1", fb.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if with_connect:
            s.sendall(connect_bytes(f"fuzz-{fb.examples}", level=level))
            ack = _recv_exactly(s, 2, 3.0)
            assert ack[:1] == b"\x20", f"no CONNACK to a valid CONNECT: {ack!r}"
        try:
            s.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            return  # the broker already closed us: fine
        if ending == "half-close":
            # the broker handles everything sent, sees EOF and must close its side
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                return
            closed, _ = _recv_until_closed(s, 3.0)
            assert closed, f"broker kept a half-closed connection open after {data!r}"
        elif ending == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:  # "linger": give the broker a moment, then a plain close
            _recv_until_closed(s, 0.02)


# -- strategies ---------------------------------------------------------------------------------

TOPIC_CHARS = st.sampled_from(list("ab/+#$ \x00é\u20ac\U0001f600"))
topics = st.text(TOPIC_CHARS, max_size=12)
small_bytes = st.binary(max_size=40)
pids = st.integers(0, 0xFFFF)


def _publish(topic: str, payload: bytes, qos: int, retain: bool, dup: bool, pid: int) -> Publish:
    return Publish(topic, payload, qos, retain, dup, pid if qos else None)


def _connect(level: int, cid: str, clean: bool, keep: int, user: str | None,
             password: bytes | None, will: Will | None) -> Connect:
    return Connect("MQIsdp" if level == 3 else "MQTT", level, cid, clean, keep, user, password,
                   will)


wills = st.none() | st.builds(Will, topics, small_bytes, st.integers(0, 2), st.booleans())
publishes = st.builds(_publish, topics, st.binary(max_size=8) | small_bytes, st.integers(0, 2),
                      st.booleans(), st.booleans(), pids)
subscribes = st.builds(Subscribe, pids, st.lists(
    st.builds(Subscription, topics, st.integers(0, 2)), max_size=3))
unsubscribes = st.builds(Unsubscribe, pids, st.lists(topics, max_size=3))
connects = st.builds(_connect, st.sampled_from([3, 4, 5]), st.text(max_size=8), st.booleans(),
                     st.integers(0, 0xFFFF), st.none() | st.text(max_size=6),
                     st.none() | small_bytes, wills)
# what a client sends, the packets with fields weighted up; then packets only a server sends
packets: st.SearchStrategy[Packet] = st.one_of(
    publishes, publishes, subscribes, subscribes, unsubscribes, connects,
    st.builds(Puback, pids), st.builds(Pubrec, pids), st.builds(Pubrel, pids),
    st.builds(Pubcomp, pids), st.builds(Pingreq), st.builds(Disconnect),
    st.one_of(st.builds(Connack, st.booleans(), st.integers(0, 5)),
              st.builds(Suback, pids, st.lists(st.sampled_from([0, 1, 2, 0x80]), max_size=3)),
              st.builds(Unsuback, pids), st.builds(Pingresp)),
)


# weighted towards what trips decoders: a field cut short, a length or flag bit changed
_OPS = st.sampled_from(["chop"] * 5 + ["flip"] * 4 + ["set"] * 3 + ["extend"] * 2 + ["insert"] * 2
                       + ["delete"] * 2 + ["truncate", "dup"])


def _mutate(draw: st.DrawFn, data: bytearray, max_ops: int, at_least: int = 0) -> bytearray:
    """Damage ``data`` with ``at_least`` to ``max_ops`` byte-level edits (one small edit finds
    more than many: several tend to trip the first check a decoder makes)."""
    for _ in range(draw(st.integers(at_least, max_ops))):
        op = draw(_OPS)
        n = len(data)
        if n == 0:
            data += draw(st.binary(min_size=1, max_size=4))
            continue
        i = draw(st.integers(0, n - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":  # bytes that mean something to a decoder
            data[i] = draw(st.sampled_from([0x00, 0x01, 0x03, 0x7F, 0x80, 0xFF, 0xC0, 0xED,
                                            0x23, 0x2B]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[i:]
        elif op == "chop":  # a field cut short at the end
            del data[-draw(st.integers(1, 3)):]
        elif op == "extend":  # bytes after the last field
            data += draw(st.binary(min_size=1, max_size=3))
        else:  # "dup"
            data[i:i] = data[i:i + draw(st.integers(1, 16))]
    return data


def _split(raw: bytes) -> tuple[int, bytes]:
    """(first byte, body) of one encoded packet."""
    i = 1
    while raw[i] & 0x80:
        i += 1
    return raw[0], raw[i + 1:]


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[bytes, int, str]:
    """Valid packets for one protocol level, damaged two ways: inside a packet's body (then
    framed with a correct Remaining Length, so the damage reaches the decoder) and across the
    whole byte stream (framing itself). Returns (bytes, level, how CONNECT is sent):
    ``"clean"`` a valid CONNECT goes first, on its own; ``"mutated"`` a CONNECT heads the
    stream and may be damaged too; ``"none"`` no CONNECT at all."""
    level = draw(st.sampled_from([3, 4, 4, 5]))
    connect_mode = draw(st.sampled_from(["clean", "clean", "mutated", "none"]))
    parts = draw(st.lists(packets, min_size=1, max_size=3))
    if connect_mode == "mutated":
        c = draw(connects)
        c.protocol_level, c.protocol_name = level, ("MQIsdp" if level == 3 else "MQTT")
        parts.insert(0, c)
    data = bytearray()
    for p in parts:
        try:
            raw = encode(p, level)
        except (ValueError, TypeError, OverflowError):
            continue
        if draw(st.booleans()):  # damage the body, keep the frame consistent
            first, body = _split(raw)
            if draw(st.integers(0, 9)) == 0:
                first ^= 1 << draw(st.integers(0, 3))  # the fixed-header flags
            raw = frame(first, bytes(_mutate(draw, bytearray(body), 2, at_least=1)))
        data += raw
    if not data:
        data += b"\xc0\x00"
    return bytes(_mutate(draw, data, 2)), level, connect_mode


endings = st.sampled_from(["half-close", "linger", "reset"])


# -- tests ----------------------------------------------------------------------------------------

@FUZZ
@given(data=st.binary(max_size=300), with_connect=st.booleans(), ending=endings)
def test_random_bytes_never_take_the_broker_down(fuzz_broker: FuzzBroker, data: bytes,
                                                 with_connect: bool, ending: str) -> None:
    send_example(fuzz_broker, data, with_connect, 4, ending)
    check_alive(fuzz_broker, f"random bytes {data!r} (connect={with_connect}, {ending})")


@settings(FUZZ, max_examples=150)
@given(stream=mutated_streams(), ending=endings)
def test_mutated_packets_never_take_the_broker_down(fuzz_broker: FuzzBroker,
                                                    stream: tuple[bytes, int, str],
                                                    ending: str) -> None:
    data, level, connect_mode = stream
    send_example(fuzz_broker, data, connect_mode == "clean", level, ending)
    check_alive(fuzz_broker, f"mutated stream {data!r} (level {level}, CONNECT {connect_mode}, "
                             f"{ending})")


def _garbage(kind: int, rng: random.Random) -> tuple[bool, bytes]:
    """(send a valid CONNECT first?, bytes) for one of five kinds of hostile connection."""
    if kind == 0:  # random bytes that do not start a CONNECT
        return False, bytes([rng.choice([0x00, 0x20, 0x30, 0x82, 0xC0, 0xFF])]) + rng.randbytes(
            rng.randint(1, 200))
    if kind == 1:  # half a CONNECT, then silence: closed at connect_timeout
        c = connect_bytes(f"half-{rng.random()}")
        return False, c[: rng.randint(1, len(c) - 1)]
    if kind == 2:  # a good CONNECT, then a reserved packet type
        return True, b"\x00\x00" + rng.randbytes(rng.randint(0, 50))
    if kind == 3:  # a Remaining Length that runs on past four bytes
        return False, b"\x10\xff\xff\xff\xff\x01"
    # a good CONNECT, then a PUBLISH announcing more than max_packet_size
    return True, b"\x30\x80\x80\x40"  # Remaining Length 1 MiB


async def test_50_concurrent_garbage_connections(fuzz_broker: FuzzBroker) -> None:
    rng = random.Random(1883)
    port = fuzz_broker.port
    healthy = await RawClient.open(port)
    assert (await healthy.connect("fuzz-healthy", keepalive=0)).return_code == 0
    assert (await healthy.subscribe("fuzz/ok/#", qos=1)).return_codes == [1]

    async def hostile(i: int) -> bool:
        with_connect, data = _garbage(i % 5, rng)
        c = await RawClient.open(port)
        if with_connect:
            assert (await c.connect(f"garbage-{i}")).return_code == 0
        await c.send(data)
        closed = await c.expect_closed(CONNECT_TIMEOUT + 2.0)
        await c.close()
        return closed

    results = await asyncio.gather(*(hostile(i) for i in range(50)))
    left_open = [i for i, closed in enumerate(results) if not closed]
    assert not left_open, f"garbage connections not closed by the broker: {left_open}"

    pub = await RawClient.open(port)
    assert (await pub.connect("fuzz-publisher")).return_code == 0
    await pub.publish("fuzz/ok/after", b"still here", qos=1)
    msg = await healthy.next_publish(2.0)
    assert (msg.topic, msg.payload) == ("fuzz/ok/after", b"still here")
    await pub.disconnect()
    await healthy.disconnect()
    await asyncio.sleep(0.1)
    check_alive(fuzz_broker, "50 concurrent garbage connections")
    b = fuzz_broker.bt.broker
    assert b is not None
    # the probe's own connection may still be closing; none of the 50 may linger
    open_ids = fuzz_broker.bt.call(
        lambda: sorted(c.client_id or "-" for c in getattr(b, "_open", ())))
    assert not [cid for cid in open_ids if cid.startswith("garbage-")], open_ids


def _corpus() -> list[tuple[str, int, bool, Packet]]:
    """(name, level, after a CONNECT?, packet): valid packets with every optional part."""
    pp = PropertyId
    will4 = Will("fuzz/will", b"bye", 1, False)
    will5 = Will("fuzz/will", b"bye", 1, False, {pp.MESSAGE_EXPIRY_INTERVAL: 5,
                                                 pp.CONTENT_TYPE: "text/plain",
                                                 pp.USER_PROPERTY: [("k", "v")]})
    pub_props: dict[int, Any] = {pp.PAYLOAD_FORMAT_INDICATOR: 1, pp.MESSAGE_EXPIRY_INTERVAL: 60,
                 pp.CONTENT_TYPE: "t", pp.RESPONSE_TOPIC: "fuzz/r", pp.CORRELATION_DATA: b"c",
                 pp.USER_PROPERTY: [("a", "b")]}
    out: list[tuple[str, int, bool, Packet]] = [
        ("connect-3.1", 3, False, Connect("MQIsdp", 3, "trunc", True, 30, "u", b"pw", will4)),
        ("connect-3.1.1", 4, False, Connect("MQTT", 4, "trunc", True, 30, "u", b"pw", will4)),
        ("connect-5", 5, False, Connect("MQTT", 5, "trunc", True, 30, "u", b"pw", will5,
                                        {pp.SESSION_EXPIRY_INTERVAL: 0, pp.RECEIVE_MAXIMUM: 10,
                                         pp.USER_PROPERTY: [("a", "b")]})),
    ]
    for level in (4, 5):
        props: dict[int, Any] = pub_props if level == 5 else {}
        out += [
            (f"publish-qos0-v{level}", level, True, Publish("fuzz/t", b"", 0, False, False, None,
                                                             props)),
            (f"publish-qos1-v{level}", level, True, Publish("fuzz/t", b"", 1, True, False, 7,
                                                             props)),
            (f"publish-qos2-v{level}", level, True, Publish("fuzz/t", b"pl", 2, False, False, 8,
                                                             props)),
            (f"subscribe-v{level}", level, True, Subscribe(
                9, [Subscription("fuzz/+/x", 1), Subscription("fuzz/#", 2, level == 5)],
                {pp.SUBSCRIPTION_IDENTIFIER: [3]} if level == 5 else {})),
            (f"unsubscribe-v{level}", level, True, Unsubscribe(10, ["fuzz/+/x", "fuzz/#"])),
            (f"puback-v{level}", level, True, Puback(11, 0x10 if level == 5 else 0,
                                                     {pp.REASON_STRING: "r"} if level == 5
                                                     else {})),
            (f"pubrec-v{level}", level, True, Pubrec(12)),
            (f"pubrel-v{level}", level, True, Pubrel(13)),
            (f"pubcomp-v{level}", level, True, Pubcomp(14)),
            (f"disconnect-v{level}", level, True, Disconnect(0x04 if level == 5 else 0)),
        ]
    return out


def test_every_truncation_and_extension_of_valid_packets(fuzz_broker: FuzzBroker) -> None:
    """Systematic mutations the random ones rarely hit: every packet in the corpus with its body
    cut at every length, and with one extra byte, each correctly framed (so the damage reaches
    the decoder) and sent on its own connection. None may reach the internal-error path."""
    cases = 0
    for name, level, after_connect, packet in _corpus():
        first, body = _split(encode(packet, level))
        variants = [(f"{name} cut to {k} of {len(body)} bytes", body[:k])
                    for k in range(len(body))]
        variants += [(f"{name} + {extra!r}", body + extra) for extra in (b"\x00", b"\xff")]
        for what, damaged in variants:
            send_example(fuzz_broker, frame(first, damaged), after_connect, level, "half-close")
            errors = fuzz_broker.errors.take()
            assert not errors, f"{what} ({frame(first, damaged)!r}): {describe(errors)}"
            cases += 1
    assert cases > 200
    check_alive(fuzz_broker, f"{cases} truncated/extended packets")


def paho_roundtrip(port: int) -> None:
    """A normal client connects, subscribes, publishes QoS 0/1/2 and receives all three."""
    topic = f"fuzz/final/{uuid.uuid4().hex}"
    got: list[tuple[int, bytes]] = []
    all_in = threading.Event()
    subscribed = threading.Event()
    connected = threading.Event()

    def on_connect(client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            connected.set()

    def on_subscribe(client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        subscribed.set()

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        got.append((msg.qos, bytes(msg.payload)))
        if len(got) >= 3:
            all_in.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"paho-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv311)
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    try:
        assert connected.wait(5), "paho could not connect"
        c.subscribe(topic, qos=2)
        assert subscribed.wait(5), "no SUBACK"
        for qos in (0, 1, 2):
            c.publish(topic, f"qos{qos}".encode(), qos=qos).wait_for_publish(5)
        assert all_in.wait(5), f"received only {got}"
        assert sorted(got) == [(0, b"qos0"), (1, b"qos1"), (2, b"qos2")]
    finally:
        c.disconnect()
        c.loop_stop()


def test_normal_client_works_after_fuzzing(fuzz_broker: FuzzBroker) -> None:
    """Runs after the fuzz tests in this module (same broker): a paho client still gets
    QoS 0, 1 and 2 through, and the broker thread is alive."""
    paho_roundtrip(fuzz_broker.port)
    assert fuzz_broker.bt._thread.is_alive()
    check_alive(fuzz_broker, "the paho round trip")
