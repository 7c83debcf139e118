"""ClientProtocol (protocol/client_protocol.py, what a bridge speaks to a remote broker) over
real sockets, against our broker and against Mosquitto (started by the test): the sans-I/O
client side completes CONNECT, SUBSCRIBE and QoS 0/1/2 flows with real servers, MQTT 3.1.1
and 5.0, and gets each QoS 2 message exactly once."""

from __future__ import annotations

import socket
import time

import pytest

from mqttbroker.protocol.client_protocol import (
    ClientProtocol,
    Connected,
    Delivered,
    Event,
    Message,
    Subscribed,
)

from .helpers import unique_id
from .v5helpers import Env

pytestmark = pytest.mark.timeout(30)


class Wire:
    """A ClientProtocol on a blocking socket (the bridge will drive it from asyncio)."""

    def __init__(self, port: int, proto: ClientProtocol) -> None:
        self.proto = proto
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.sock.settimeout(0.2)
        self.events: list[Event] = []
        self.sock.sendall(proto.connect(time.monotonic()))

    def pump(self) -> None:
        out = self.proto.data_to_send()
        if out:
            self.sock.sendall(out)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        if data:
            self.events += self.proto.receive_data(data, time.monotonic())
        out = self.proto.data_to_send()
        if out:
            self.sock.sendall(out)

    def wait(self, kind: type, count: int = 1, timeout: float = 5.0) -> list[Event]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [e for e in self.events if isinstance(e, kind)]
            if len(got) >= count:
                return got
            self.pump()
        raise AssertionError(f"no {count} x {kind.__name__} in {timeout}s: {self.events}")

    def close(self) -> None:
        self.sock.close()


def exchange(port: int, level: int) -> None:
    sub = Wire(port, ClientProtocol(unique_id("cps-"), level=level))
    pub = Wire(port, ClientProtocol(unique_id("cpp-"), level=level))
    try:
        sub.wait(Connected)
        pub.wait(Connected)
        now = time.monotonic()
        sub.proto.subscribe([("cp/#", 2)], now, no_local=level == 5,
                            retain_as_published=level == 5)
        [s] = sub.wait(Subscribed)
        assert isinstance(s, Subscribed) and s.codes == (2,)
        ids = [pub.proto.publish(f"cp/{q}", f"m{q}".encode(), q, False, now) for q in (0, 1, 2)]
        delivered = pub.wait(Delivered, 2)
        assert sorted(d.packet_id for d in delivered if isinstance(d, Delivered)) == \
            sorted(i for i in ids if i is not None)
        got = sub.wait(Message, 3)
        by_topic = {m.topic: m for m in got if isinstance(m, Message)}
        assert {t: m.payload for t, m in by_topic.items()} == \
            {"cp/0": b"m0", "cp/1": b"m1", "cp/2": b"m2"}
        for m in by_topic.values():
            if m.packet_id is not None:
                sub.proto.acknowledge(m.packet_id, m.qos, time.monotonic())
        end = time.monotonic() + 0.5  # the flows finish; no duplicate arrives
        while time.monotonic() < end:
            sub.pump()
        assert len([e for e in sub.events if isinstance(e, Message)]) == 3
        assert not pub.proto.outflows and not sub.proto.inbound_qos2
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("level", [4, 5])
def test_client_protocol_against_our_broker(env: Env, level: int) -> None:
    env.start()
    exchange(env.port, level)


@pytest.mark.parametrize("level", [4, 5])
def test_client_protocol_against_mosquitto(mosquitto: int, level: int) -> None:
    exchange(mosquitto, level)
