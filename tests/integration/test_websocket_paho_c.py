"""Paho C 1.3 over WebSocket: one MQTT packet per WebSocket frame (issue 14, point 6).

Paho C 1.3 (Debian's ``libpaho-mqtt1.3``, common on Linux gateways) reads only the first MQTT
packet of a WebSocket frame and leaves the rest until more bytes arrive on the socket. A frame
may legally hold several packets [MQTT-6.0.0-2], but a broker that packs them makes such a
client see a burst of 3 QoS 0 messages as 2, and a resumed session's 3 queued messages as 1,
until its next keep-alive exchange brings the rest. So the broker sends one packet per frame,
as Mosquitto does (``ws-pack-packets: true`` on a listener packs them again).

* The real Paho C client, over ``ws://``: Debian's example subscriber ``paho_cs_sub`` gets all
  of a burst promptly; a persistent session (clean session 0, which no example program can
  ask for) made through ``libpaho-mqtt3c`` by ctypes, in a child process (this module run with
  ``python -m``), gets all the messages queued while it was away.
* Frame by frame, with the ``websockets`` library's client: every binary frame holds exactly
  one packet (small and 70 kB ones: all three WebSocket length encodings), and with
  ``ws-pack-packets: true`` the packets of one write share a frame again.

The publisher writes its burst with one ``sendall``: paho-mqtt (Python) writes each PUBLISH as
it is called, so the broker could read them one at a time and answer each in a frame of its
own, which would hide the packing. The keep-alive of the Paho C clients is 60 s, so a message
left behind in a frame arrives only after it; every wait here is ``TIMEOUT`` (5 s) at most.

Paho C is installed by ``make test`` (``make paho-c``: Debian's ``paho.mqtt.c-examples``);
without it these tests fail and say so, they are not skipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from mqttbroker.protocol.codec import decode, encode
from mqttbroker.protocol.packets import (
    Connack,
    Connect,
    Packet,
    Publish,
    Suback,
    Subscribe,
    Subscription,
)
from mqttbroker.protocol.reader import FrameReader
from tests.conftest import BrokerThread

from . import pahoc
from .clientprocs import (
    Lines,
    MakeBroker,
    away_with_queue,
    port_of,
    subscribed,
    ws_config,
    ws_uri,
)
from .helpers import TIMEOUT, Paho, RawClient, unique_id, wait_until

PAHO_CS_SUB = "/usr/bin/paho_cs_sub"  # paho.mqtt.c-examples: the synchronous subscriber
KEEPALIVE = 60  # seconds: what was left in a frame would come only after this
_RECEIVE_FOR = 60.0  # seconds the receiving child runs at most (the test kills it sooner)


# -- brokers ------------------------------------------------------------------------------------

def publish_burst(bt: BrokerThread, topic: str, payloads: list[bytes], qos: int = 0) -> None:
    """PUBLISH ``payloads`` over TCP in ONE socket write, so the broker reads them at once
    and delivers them in one event-loop turn (the first written at once, the rest together)."""
    pub = RawClient(port_of(bt, "tcp"))
    try:
        assert pub.connect(unique_id("pub")).return_code == 0
        pub.send(*(Publish(topic, p, qos, False, False, i + 1 if qos else None)
                   for i, p in enumerate(payloads)))
        if qos:
            for _ in payloads:
                pub.recv()  # PUBACK: the broker has them
    finally:
        pub.sock.close()


# -- Paho C processes ---------------------------------------------------------------------------

@pytest.fixture
def spawn() -> Iterator[Callable[[list[str]], Lines]]:
    """Start child processes; every one is killed at the end of the test."""
    started: list[Lines] = []

    def start(args: list[str]) -> Lines:
        p = Lines(args)
        started.append(p)
        return p

    yield start
    for p in started:
        with contextlib.suppress(Exception):
            p.kill()


@pytest.fixture
def paho_cs_sub() -> str:
    if not os.access(PAHO_CS_SUB, os.X_OK):
        pytest.fail(f"Paho C's {PAHO_CS_SUB} is not installed: {pahoc.INSTALL_HINT}")
    return PAHO_CS_SUB


@pytest.fixture
def libpaho() -> None:
    if not pahoc.installed():
        pytest.fail(f"Paho C's {pahoc.LIBPAHO} is not installed: {pahoc.INSTALL_HINT}")


def paho_c_session(phase: str, uri: str, client_id: str, topic: str) -> list[str]:
    """The command running :func:`_paho_c_session` in a child process."""
    return [sys.executable, "-m", __name__, phase, uri, client_id, topic]


# -- Paho C through the real client -------------------------------------------------------------

def test_paho_c_subscriber_gets_a_whole_burst(make_broker_thread: MakeBroker,
                                              spawn: Callable[[list[str]], Lines],
                                              paho_cs_sub: str) -> None:
    """3 QoS 0 messages read by the broker at once go to a Paho C subscriber over ws:// in
    one write; packed in frames, Paho C shows 2 until its keep-alive, one per frame all 3."""
    bt = make_broker_thread(ws_config())
    cid, topic = unique_id("pahoc"), "gw/burst"
    sub = spawn([paho_cs_sub, "--connection", ws_uri(bt), "--clientid", cid, "--topic", topic,
                 "--qos", "0", "--keepalive", str(KEEPALIVE)])
    wait_until(lambda: subscribed(bt, cid, topic), what=f"paho_cs_sub's subscription "
               f"(its output: {sub.lines!r})")
    payloads = [f"burst-{i}" for i in range(3)]
    publish_burst(bt, topic, [p.encode() for p in payloads])
    lines = sub.wait_for(lambda ls: len(ls) >= 3, "all 3 messages of the burst (Paho C reads "
                         "one MQTT packet per WebSocket frame)")
    assert lines == payloads


def test_paho_c_persistent_session_gets_its_whole_queue(make_broker_thread: MakeBroker,
                                                        spawn: Callable[[list[str]], Lines],
                                                        libpaho: None) -> None:
    """A Paho C session with clean session 0 subscribes at QoS 1 and disconnects; 3 QoS 1
    messages queue for it; when it comes back, the broker writes them after CONNACK in one
    write: packed in one frame, Paho C shows 1 until its keep-alive, one per frame all 3."""
    bt = make_broker_thread(ws_config())
    cid, topic = unique_id("pahoc"), "gw/queued"
    first = spawn(paho_c_session("subscribe", ws_uri(bt), cid, topic))
    first.wait_for(lambda ls: "disconnected" in ls, "the Paho C session to subscribe and "
                   "disconnect")
    assert first.wait_exit() == 0, first.lines
    assert first.lines[0] == "connected session_present=0", first.lines
    assert subscribed(bt, cid, topic)

    publisher = Paho(unique_id("pub"))
    try:
        publisher.connect(port_of(bt, "tcp"))
        payloads = [f"queued-{i}" for i in range(3)]
        for p in payloads:
            publisher.publish(topic, p.encode(), qos=1)  # waits for its PUBACK
    finally:
        publisher.close()
    wait_until(lambda: away_with_queue(bt, cid) == 3, what="3 messages queued for the "
               "session while it is away")

    back = spawn(paho_c_session("receive", ws_uri(bt), cid, topic))
    lines = back.wait_for(lambda ls: len(ls) >= 4, "the session's 3 queued messages (Paho C "
                          "reads one MQTT packet per WebSocket frame)")
    assert lines == ["connected session_present=1", *(f"message {p}" for p in payloads)]


# -- frame by frame -----------------------------------------------------------------------------

class WsFrames:
    """An MQTT 3.1.1 client over a WebSocket that keeps the packets of each frame apart (the
    broker never fragments a message, so one message received is one frame)."""

    def __init__(self, uri: str) -> None:
        self.ws: ClientConnection = ws_connect(uri, subprotocols=[Subprotocol("mqtt")],
                                               open_timeout=TIMEOUT, close_timeout=1,
                                               max_size=2**21)
        self.frames: list[list[Packet]] = []

    def send(self, *packets: Packet) -> None:
        self.ws.send(b"".join(encode(p, 4) for p in packets))

    def packets(self) -> list[Packet]:
        return [p for frame in self.frames for p in frame]

    def collect(self, n: int, timeout: float = TIMEOUT) -> list[Packet]:
        """Read frames until ``n`` packets came in all; each frame's packets are decoded on
        their own, so a packet cut across frames would fail here."""
        deadline = time.monotonic() + timeout
        while len(self.packets()) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.packets())} of {n} packets: "
                                     f"{self.frames!r}")
            data = self.ws.recv(timeout=left)
            assert isinstance(data, bytes), f"[MQTT-6.0.0-1] a text frame: {data!r}"
            reader = FrameReader()
            frame = [decode(first, body, 4) for first, body in reader.feed(data)]
            assert frame and not reader.buffered(), f"a frame of partial packets: {data!r}"
            self.frames.append(frame)
        return self.packets()

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def ws_clients() -> Iterator[Callable[[str], WsFrames]]:
    made: list[WsFrames] = []

    def make(uri: str) -> WsFrames:
        c = WsFrames(uri)
        made.append(c)
        return c

    yield make
    for c in made:
        with contextlib.suppress(Exception):
            c.close()


@pytest.mark.parametrize("pack", [False, True], ids=["one-per-frame", "ws-pack-packets"])
def test_frames_and_packets(make_broker_thread: MakeBroker,
                            ws_clients: Callable[[str], WsFrames], pack: bool) -> None:
    """By default every binary frame holds one whole packet: a burst of small and big
    PUBLISHes (WebSocket lengths in 7, 16 and 64 bits), and a resumed session's queue. With
    ``ws-pack-packets: true`` the queue written after CONNACK in one write is one frame."""
    bt = make_broker_thread(ws_config(**({"ws-pack-packets": True} if pack else {})))
    cid, topic = unique_id("frames"), "gw/frames"
    c = ws_clients(ws_uri(bt))
    c.send(Connect("MQTT", 4, cid, False, KEEPALIVE),
           Subscribe(1, [Subscription(topic, 1)]))
    first = c.collect(2)
    assert isinstance(first[0], Connack) and isinstance(first[1], Suback)

    payloads = [b"first", b"second", bytes(300), b"x" * 70_000, b"last"]
    publish_burst(bt, topic, payloads)
    burst = c.collect(2 + len(payloads))[2:]
    assert [p.payload for p in burst if isinstance(p, Publish)] == payloads
    if not pack:
        assert all(len(frame) == 1 for frame in c.frames), [len(f) for f in c.frames]
    c.close()
    wait_until(lambda: away_with_queue(bt, cid) is not None, what="the session to go offline")

    queued = [f"q{i}".encode() for i in range(3)]
    publish_burst(bt, topic, queued, qos=1)
    wait_until(lambda: away_with_queue(bt, cid) == 3, what="3 queued messages")
    back = ws_clients(ws_uri(bt))
    back.send(Connect("MQTT", 4, cid, False, KEEPALIVE))
    got = back.collect(4)
    assert isinstance(got[0], Connack) and got[0].session_present
    assert [p.payload for p in got[1:] if isinstance(p, Publish)] == queued
    sizes = [len(frame) for frame in back.frames]
    # CONNACK goes out at once; the queue follows in one write at the end of the turn
    assert sizes == ([1, 3] if pack else [1, 1, 1, 1]), sizes


# -- the Paho C session client (a child process) -------------------------------------------------

def _paho_c_session(phase: str, uri: str, client_id: str, topic: str) -> int:
    """Paho C's synchronous client (libpaho-mqtt3c), clean session 0, keep-alive 60 s.
    ``subscribe``: connect, subscribe to ``topic`` at QoS 1, disconnect. ``receive``: connect
    and print each message as it is received. One line per step, flushed."""
    lib = pahoc.load()

    def say(line: str) -> None:
        print(line, flush=True)

    client = ctypes.c_void_p()
    rc = lib.MQTTClient_create(ctypes.byref(client), uri.encode(), client_id.encode(),
                               pahoc.PERSISTENCE_NONE, None)
    if rc != 0:
        say(f"create failed: {rc}")
        return 1
    try:
        opts = pahoc.ConnectOptions(struct_id=b"MQTC", struct_version=8,
                                    keepAliveInterval=KEEPALIVE, cleansession=0, reliable=1,
                                    connectTimeout=int(TIMEOUT),
                                    MQTTVersion=pahoc.MQTT_3_1_1, maxInflightMessages=-1)
        rc = lib.MQTTClient_connect(client, ctypes.byref(opts))
        if rc != 0:
            say(f"connect failed: {rc}")
            return 1
        say(f"connected session_present={opts.returned.sessionPresent}")
        if phase == "subscribe":
            rc = lib.MQTTClient_subscribe(client, topic.encode(), 1)
            if rc not in (0, 1):  # success, or the granted QoS
                say(f"subscribe failed: {rc}")
                return 1
            say("subscribed")
            lib.MQTTClient_disconnect(client, 1000)
            say("disconnected")
            return 0
        deadline = time.monotonic() + _RECEIVE_FOR
        while time.monotonic() < deadline:
            name = ctypes.c_void_p()
            length = ctypes.c_int()
            msg = ctypes.POINTER(pahoc.Message)()
            rc = lib.MQTTClient_receive(client, ctypes.byref(name), ctypes.byref(length),
                                        ctypes.byref(msg), 100)
            if rc == pahoc.DISCONNECTED:
                say("connection lost")
                return 1
            if msg:
                m = msg.contents
                say("message " + ctypes.string_at(m.payload, m.payloadlen).decode())
                lib.MQTTClient_freeMessage(ctypes.byref(msg))
                lib.MQTTClient_free(name)
        return 0
    finally:
        lib.MQTTClient_destroy(ctypes.byref(client))


if __name__ == "__main__":
    sys.exit(_paho_c_session(*sys.argv[1:5]))
