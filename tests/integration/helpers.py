"""Helpers for the integration tests: real clients over real sockets, every wait bounded.

* :class:`Paho`: a paho-mqtt client run by its own network thread, with blocking
  ``connect``/``subscribe``/``publish`` that wait at most ``timeout`` seconds for the broker's
  answer, and a :class:`Collector` of the messages it receives.
* :class:`RawClient`: a blocking socket speaking MQTT through ``mqttbroker.protocol``'s codec,
  for what a well-behaved client library will not do (withhold PUBACK, resend a PUBLISH with
  DUP, stay silent past the keep-alive, drop the socket without DISCONNECT).
* :class:`Clients`: makes both for one broker port and closes everything at the end of a test.
* :func:`amqtt_client`: an amqtt ``MQTTClient`` as an async context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mqttbroker.errors import ProtocolError
from mqttbroker.protocol.codec import decode, encode
from mqttbroker.protocol.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
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
from mqttbroker.protocol.primitives import encode_varint
from mqttbroker.protocol.reader import FrameReader

T = TypeVar("T")

HOST = "127.0.0.1"
TIMEOUT = 5.0  # the longest any single wait for the broker may take

V31 = mqtt.MQTTv31
V311 = mqtt.MQTTv311
#: parametrize a test over MQTT 3.1 and 3.1.1 (paho protocol constants)
protocols = pytest.mark.parametrize("protocol", [V31, V311], ids=["3.1", "3.1.1"])
#: parametrize a raw-socket test over protocol levels 3 (3.1) and 4 (3.1.1)
levels = pytest.mark.parametrize("level", [3, 4], ids=["3.1", "3.1.1"])

# paho reports a 3.1/3.1.1 CONNACK return code as an MQTT 5 ReasonCode: map it back by name
_CONNACK_CODES = {
    "Success": 0,
    "Unsupported protocol version": 1,
    "Client identifier not valid": 2,
    "Server unavailable": 3,
    "Bad user name or password": 4,
    "Not authorized": 5,
}

_ids = itertools.count(1)


def unique_id(prefix: str = "c") -> str:
    """A client id no other test uses (3.1 allows at most 23 characters)."""
    return f"{prefix}{next(_ids)}-{int(time.time() * 1000) % 100000}"[:23]


def wait_until(predicate: Callable[[], T], timeout: float = TIMEOUT, interval: float = 0.01,
               what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_until(predicate: Callable[[], T], timeout: float = TIMEOUT,
                      interval: float = 0.01, what: str = "condition") -> T:
    """:func:`wait_until` for async tests: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# -- received messages ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Msg:
    """One received PUBLISH, as the client saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool = False


class Collector:
    """Thread-safe list of received messages with bounded waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._messages: list[Msg] = []

    def add(self, m: Msg) -> None:
        with self._cond:
            self._messages.append(m)
            self._cond.notify_all()

    @property
    def messages(self) -> list[Msg]:
        with self._cond:
            return list(self._messages)

    def __len__(self) -> int:
        with self._cond:
            return len(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def topic(self, topic: str) -> list[Msg]:
        """Messages received on exactly ``topic``."""
        return [m for m in self.messages if m.topic == topic]

    def wait_for(self, n: int, timeout: float = TIMEOUT) -> list[Msg]:
        """Wait until at least ``n`` messages arrived; return them all."""
        return self.wait_until(lambda ms: len(ms) >= n, timeout, f"{n} message(s)")

    def wait_until(self, predicate: Callable[[list[Msg]], bool], timeout: float = TIMEOUT,
                   what: str = "messages") -> list[Msg]:
        """Wait until ``predicate(messages)`` holds; return the messages."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; got "
                        f"{len(self._messages)}: {self._messages[:10]!r}")
                self._cond.wait(left)
            return list(self._messages)

    def wait_topic(self, topic: str, timeout: float = TIMEOUT) -> Msg:
        """Wait for the first message on ``topic`` and return it."""
        msgs = self.wait_until(lambda ms: any(m.topic == topic for m in ms), timeout,
                               f"a message on {topic!r}")
        return next(m for m in msgs if m.topic == topic)

    async def await_for(self, n: int, timeout: float = TIMEOUT) -> list[Msg]:
        """:meth:`wait_for` for async tests (polls, never blocks the event loop)."""
        await await_until(lambda: len(self) >= n, timeout, what=f"{n} message(s)")
        return self.messages


# -- paho-mqtt --------------------------------------------------------------------------------------

class Paho:
    """A paho-mqtt client with bounded, blocking request/answer helpers.

    paho's automatic reconnect is off, so a refused or dropped connection stays down (and a
    dropped client never comes back to take its own session over again).
    """

    def __init__(self, client_id: str = "", protocol: int = V311, clean_session: bool = True,
                 *, username: str | None = None, password: str | None = None,
                 will: tuple[str, bytes, int, bool] | None = None) -> None:
        self.protocol = protocol
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion(protocol),
                                  clean_session=clean_session,
                                  reconnect_on_failure=False)
        if client_id == "" and protocol == V31:
            # paho invents an id for 3.1; keep it empty to test the broker's answer
            self.client._client_id = b""
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        self.messages = Collector()
        self.connack = threading.Event()
        self.connack_code: int | None = None
        self.session_present: bool | None = None
        self.disconnected = threading.Event()
        self._acks: dict[int, Any] = {}
        self._acks_cond = threading.Condition()
        self._started = False
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe

    # paho callbacks (its network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connack_code = _CONNACK_CODES.get(reason.getName(), -1)
        self.session_present = bool(flags.session_present)
        self.connack.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, m: mqtt.MQTTMessage) -> None:
        self.messages.add(Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain), bool(m.dup)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[Any],
                      properties: Any) -> None:
        with self._acks_cond:
            self._acks[mid] = [c.value for c in codes]
            self._acks_cond.notify_all()

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, codes: Any,
                        properties: Any) -> None:
        with self._acks_cond:
            self._acks[mid] = True
            self._acks_cond.notify_all()

    def _wait_ack(self, mid: int, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._acks_cond:
            while mid not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout}s")
                self._acks_cond.wait(left)
            return self._acks.pop(mid)

    # requests
    def connect(self, port: int, keepalive: int = 60, timeout: float = TIMEOUT,
                expect: int | None = 0) -> int:
        """Connect and wait for CONNACK; return its code (asserted equal to ``expect``)."""
        self.client.connect(HOST, port, keepalive)
        self.client.loop_start()
        self._started = True
        if not self.connack.wait(timeout):
            raise AssertionError(f"no CONNACK within {timeout}s")
        assert self.connack_code is not None
        if expect is not None:
            assert self.connack_code == expect, (
                f"CONNACK 0x{self.connack_code:02X}, expected 0x{expect:02X}")
        return self.connack_code

    def subscribe(self, *filters: tuple[str, int], timeout: float = TIMEOUT) -> list[int]:
        """SUBSCRIBE to ``(filter, qos)`` pairs; return the SUBACK return codes."""
        rc, mid = self.client.subscribe(list(filters))
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        assert mid is not None
        codes: list[int] = self._wait_ack(mid, timeout, "SUBACK")
        return codes

    def unsubscribe(self, *filters: str, timeout: float = TIMEOUT) -> None:
        """UNSUBSCRIBE and wait for UNSUBACK."""
        rc, mid = self.client.unsubscribe(list(filters))
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe failed locally: {rc}"
        assert mid is not None
        self._wait_ack(mid, timeout, "UNSUBACK")

    def publish(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                wait: bool = True, timeout: float = TIMEOUT) -> mqtt.MQTTMessageInfo:
        """PUBLISH; with ``wait``, block until its flow completes (sent / PUBACK / PUBCOMP)."""
        info = self.client.publish(topic, payload, qos, retain)
        if wait:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"PUBLISH {topic!r} QoS {qos} not completed in {timeout}s"
        return info

    def disconnect(self, timeout: float = TIMEOUT) -> None:
        """Send DISCONNECT and wait until paho has closed the connection."""
        self.client.disconnect()
        if not self.disconnected.wait(timeout):
            raise AssertionError(f"paho did not disconnect within {timeout}s")
        self.client.loop_stop()
        self._started = False

    def drop(self, timeout: float = TIMEOUT) -> None:
        """Close the TCP connection without DISCONNECT (as if the network failed)."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket), "not connected"
        # shutdown (not close) is safe while paho's thread selects on the socket: the broker
        # sees the connection end, paho sees EOF and reports the disconnection
        sock.shutdown(socket.SHUT_RDWR)
        if not self.disconnected.wait(timeout):
            raise AssertionError(f"paho did not notice the dropped socket within {timeout}s")
        self.client.loop_stop()
        self._started = False

    def close(self) -> None:
        """Best-effort cleanup at the end of a test."""
        if self._started:
            with contextlib.suppress(Exception):
                if not self.disconnected.is_set():
                    self.client.disconnect()
                    self.disconnected.wait(1.0)
            with contextlib.suppress(Exception):
                self.client.loop_stop()
            self._started = False


# -- raw sockets ------------------------------------------------------------------------------------

class ConnectionClosed(Exception):
    """The broker closed the socket."""


class ByteTap:
    """Wraps a RawClient's FrameReader: keeps every byte the broker sent, in order (so that
    "nothing at all", or exact bytes, can be asserted)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.data = bytearray()

    def feed(self, data: bytes) -> Any:
        self.data += data
        return self.reader.feed(data)


def tapped(r: RawClient) -> ByteTap:
    """Start keeping every byte ``r`` receives from now on."""
    tap = ByteTap(r.reader)
    r.reader = tap  # type: ignore[assignment]
    return tap


class RawClient:
    """A blocking MQTT client made of a socket and ``mqttbroker.protocol``'s codec."""

    def __init__(self, port: int, level: int = 4, timeout: float = TIMEOUT) -> None:
        self.level = level
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = FrameReader()
        self.pending: deque[Packet] = deque()
        self.eof = False
        self._next_pid = 0
        #: a list to keep every packet received as its bytes on the wire (first byte, length,
        #: body), or None; with a list, a packet the codec refuses fails the test with its bytes
        self.frames: list[bytes] | None = None

    def next_packet_id(self) -> int:
        self._next_pid = self._next_pid % 65535 + 1
        return self._next_pid

    # sending
    def send(self, *packets: Packet) -> None:
        self.sock.sendall(b"".join(encode(p, self.level) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    # receiving
    def _fill(self, timeout: float) -> None:
        """Read once (at most ``timeout`` s) and decode whatever complete packets arrived."""
        if self.eof:
            raise ConnectionClosed("the broker closed the connection")
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError):
            data = b""
        if not data:
            self.eof = True
            raise ConnectionClosed("the broker closed the connection")
        frames = self.frames
        for first, body in self.reader.feed(data):
            if frames is None:
                self.pending.append(decode(first, body, self.level))
                continue
            raw = bytes((first,)) + encode_varint(len(body)) + body
            frames.append(raw)
            try:
                self.pending.append(decode(first, body, self.level))
            except ProtocolError as exc:
                raise AssertionError(
                    f"the broker sent a packet that is not valid at level {self.level}: "
                    f"{raw[:64].hex(' ')} ({exc})") from None

    def recv(self, timeout: float = TIMEOUT) -> Packet:
        """The next packet from the broker; TimeoutError or ConnectionClosed otherwise."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no packet from the broker within {timeout}s")
            try:
                self._fill(left)
            except TimeoutError:
                raise TimeoutError(f"no packet from the broker within {timeout}s") from None
        return self.pending.popleft()

    def expect(self, cls: type[T], timeout: float = TIMEOUT) -> T:
        """The next packet, which must be a ``cls``."""
        p = self.recv(timeout)
        assert isinstance(p, cls), f"expected {cls.__name__}, got {p!r}"
        return p

    def no_packet(self, within: float) -> bool:
        """True if nothing arrives (and the socket stays open) for ``within`` seconds."""
        try:
            p = self.recv(within)
        except TimeoutError:
            return True
        self.pending.appendleft(p)
        return False

    def wait_closed(self, timeout: float = TIMEOUT) -> list[Packet]:
        """Wait until the broker closes the socket; return the packets received before that.
        Fails if the socket is still open after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        got: list[Packet] = []
        while True:
            got.extend(self.pending)
            self.pending.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the broker kept the connection open for {timeout}s")
            try:
                self._fill(left)
            except ConnectionClosed:
                got.extend(self.pending)
                self.pending.clear()
                return got
            except TimeoutError:
                continue

    # MQTT exchanges
    def connect(self, client_id: str, clean: bool = True, keep_alive: int = 60,
                will: Will | None = None, username: str | None = None,
                password: bytes | None = None, timeout: float = TIMEOUT) -> Connack:
        """Send CONNECT and return the CONNACK."""
        name = "MQIsdp" if self.level == 3 else "MQTT"
        self.send(Connect(name, self.level, client_id, clean, keep_alive, username, password,
                          will))
        return self.expect(Connack, timeout)

    def subscribe(self, *filters: tuple[str, int], timeout: float = TIMEOUT) -> list[int]:
        """SUBSCRIBE and return the SUBACK return codes."""
        pid = self.next_packet_id()
        self.send(Subscribe(pid, [Subscription(f, q) for f, q in filters]))
        ack = self.expect(Suback, timeout)
        assert ack.packet_id == pid
        return list(ack.return_codes)

    def unsubscribe(self, *filters: str, timeout: float = TIMEOUT) -> None:
        pid = self.next_packet_id()
        self.send(Unsubscribe(pid, list(filters)))
        ack = self.expect(Unsuback, timeout)
        assert ack.packet_id == pid

    def publish(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                timeout: float = TIMEOUT) -> None:
        """PUBLISH and complete the QoS flow."""
        pid = self.next_packet_id() if qos else None
        self.send(Publish(topic, payload, qos, retain, False, pid))
        if qos == 1:
            assert self.expect(Puback, timeout).packet_id == pid
        elif qos == 2:
            assert self.expect(Pubrec, timeout).packet_id == pid
            self.send(Pubrel(pid))
            assert self.expect(Pubcomp, timeout).packet_id == pid

    def ack(self, p: Publish) -> None:
        """Acknowledge a received PUBLISH (QoS 2: PUBREC, then PUBREL -> PUBCOMP)."""
        if p.qos == 1:
            self.send(Puback(p.packet_id))  # type: ignore[arg-type]
        elif p.qos == 2:
            self.send(Pubrec(p.packet_id))  # type: ignore[arg-type]
            rel = self.expect(Pubrel)
            assert rel.packet_id == p.packet_id
            self.send(Pubcomp(p.packet_id))

    def ping(self, timeout: float = TIMEOUT) -> None:
        from mqttbroker.protocol.packets import Pingresp
        self.send(Pingreq())
        self.expect(Pingresp, timeout)

    def disconnect(self) -> None:
        self.send(Disconnect())
        self.close()

    def abort(self) -> None:
        """Reset the connection (RST, no DISCONNECT)."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                                 b"\x00\x00\x00\x00")
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# -- one test's clients -----------------------------------------------------------------------------

class Clients:
    """Makes paho and raw clients for one broker and closes them all at the end."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._paho: list[Paho] = []
        self._raw: list[RawClient] = []

    def paho(self, client_id: str = "", protocol: int = V311, clean_session: bool = True, *,
             connect: bool = True, keepalive: int = 60, expect: int | None = 0,
             **kw: Any) -> Paho:
        """A paho client, connected (CONNACK ``expect``ed) unless ``connect=False``."""
        c = Paho(client_id, protocol, clean_session, **kw)
        self._paho.append(c)
        if connect:
            c.connect(self.port, keepalive, expect=expect)
        return c

    def raw(self, level: int = 4) -> RawClient:
        """A raw TCP connection (no CONNECT sent yet)."""
        r = RawClient(self.port, level)
        self._raw.append(r)
        return r

    def raw_connect(self, client_id: str, level: int = 4, clean: bool = True,
                    keep_alive: int = 60, will: Will | None = None,
                    expect: int | None = 0) -> tuple[RawClient, Connack]:
        """A raw client that sent CONNECT; returns it with the CONNACK."""
        r = self.raw(level)
        ack = r.connect(client_id, clean, keep_alive, will)
        if expect is not None:
            assert ack.return_code == expect, f"CONNACK {ack!r}, expected 0x{expect:02X}"
        return r, ack

    def close(self) -> None:
        for c in self._paho:
            c.close()
        for r in self._raw:
            r.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def payloads(msgs: Iterable[Msg]) -> list[bytes]:
    return [m.payload for m in msgs]


def connected_ids(bt: Any) -> set[str]:
    """Client ids the threaded broker holds a live connection for."""
    return set(bt.call(lambda: list(bt.broker.connections)))


# -- amqtt ------------------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def amqtt_client(port: int, client_id: str | None = None, clean: bool = True,
                       timeout: float = TIMEOUT) -> AsyncIterator[Any]:
    """A connected amqtt ``MQTTClient`` (3.1.1), disconnected on exit."""
    from amqtt.client import MQTTClient  # type: ignore[import-untyped]

    c = MQTTClient(client_id=client_id or unique_id("amqtt"),
                   config={"auto_reconnect": False, "keep_alive": 60})
    await asyncio.wait_for(c.connect(f"mqtt://{HOST}:{port}/", cleansession=clean), timeout)
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.disconnect(), timeout)


async def amqtt_receive(c: Any, n: int, timeout: float = TIMEOUT) -> list[Msg]:
    """The next ``n`` messages an amqtt client receives, within ``timeout`` in all."""
    deadline = time.monotonic() + timeout
    out: list[Msg] = []
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"amqtt got {len(out)} of {n} messages in {timeout}s: {out!r}")
        try:
            m = await c.deliver_message(timeout_duration=left)
        except TimeoutError:
            continue
        assert m is not None
        pkt = m.publish_packet
        out.append(Msg(m.topic, bytes(m.data), int(m.qos or 0),
                       bool(pkt.retain_flag) if pkt is not None else bool(m.retain),
                       bool(pkt.dup_flag) if pkt is not None else False))
    return out
