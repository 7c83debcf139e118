"""Helpers for the MQTT 5.0 integration tests: paho-mqtt as an MQTTv5 client, a raw level-5
client that shows the wire, and a hand-written SCRAM-SHA-256 client (RFC 5802 / RFC 7677).

* :class:`RawV5`: :class:`~tests.integration.helpers.RawClient` at protocol level 5, with
  properties on every request, the bytes of each received packet kept in ``frames``, and
  :meth:`RawV5.expect_disconnect` for "the broker says why, then closes".
* :class:`Paho5`: a paho-mqtt ``MQTTv5`` client with bounded blocking helpers that return the
  broker's reason codes and record the properties of every message received (``Msg5``).
* :class:`Env`: starts brokers (any ``mqtt`` config) and makes clients for them; everything is
  closed at the end of the test.
* :class:`ScramClient` / :func:`scram_credential`: the client side of SCRAM-SHA-256 and the
  PostgreSQL-style stored credential the broker's ``auth.scram-users`` takes.

Every wait is bounded (``TIMEOUT`` unless told).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode as PahoReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqttbroker.protocol.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
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
from mqttbroker.protocol.reader import FrameReader
from tests.conftest import BrokerThread, base_config

from .helpers import HOST, TIMEOUT, V311, Collector, Msg, Paho, RawClient

__all__ = [
    "HOST",
    "MAX_PROTOCOL_PACKET",
    "TIMEOUT",
    "Env",
    "Msg5",
    "P",
    "Paho5",
    "RawV5",
    "ScramClient",
    "SubscribeOptions",
    "make_credential",
    "no_message",
    "paho_props",
    "scram_credential",
    "sub",
]

T = TypeVar("T")

#: MQTT 5 property ids (short name for the tests)
P = PropertyId

MAX_PROTOCOL_PACKET = 268_435_460


def sub(topic_filter: str, qos: int = 0, *, no_local: bool = False, rap: bool = False,
        rh: int = 0) -> Subscription:
    """A level-5 subscription with its options (rap = Retain As Published, rh = Retain
    Handling)."""
    return Subscription(topic_filter, qos, no_local, rap, rh)


# -- raw level-5 client -------------------------------------------------------------------------

class RawV5(RawClient):
    """A blocking MQTT 5 client made of a socket and ``mqttbroker.protocol``'s codec.

    ``rcvbuf`` shrinks the socket's receive buffer before connecting (for clients that are
    meant to stop reading and let the broker's buffers fill).
    """

    def __init__(self, port: int, timeout: float = TIMEOUT, rcvbuf: int | None = None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.level = 5
        self.sock = sock
        self.reader = FrameReader()
        self.pending: deque[Packet] = deque()
        self.eof = False
        self._next_pid = 0
        self.frames: list[bytes] | None = []  # every packet received, as its bytes

    # requests ------------------------------------------------------------------------------

    def connect5(self, client_id: str = "", clean_start: bool = True, keep_alive: int = 60,
                 properties: Mapping[int, Any] | None = None, will: Will | None = None,
                 username: str | None = None, password: bytes | None = None,
                 timeout: float = TIMEOUT) -> Connack:
        """Send a level-5 CONNECT and return the CONNACK."""
        self.send(Connect("MQTT", 5, client_id, clean_start, keep_alive, username, password,
                          will, dict(properties or {})))
        return self.expect(Connack, timeout)

    def subscribe5(self, *subs: Subscription | tuple[str, int],
                   properties: Mapping[int, Any] | None = None,
                   timeout: float = TIMEOUT) -> Suback:
        """SUBSCRIBE and return the SUBACK (reason codes in ``return_codes``)."""
        pid = self.next_packet_id()
        items = [s if isinstance(s, Subscription) else Subscription(s[0], s[1]) for s in subs]
        self.send(Subscribe(pid, items, dict(properties or {})))
        return self.await_ack(Suback, pid, timeout)

    def unsubscribe5(self, *filters: str, properties: Mapping[int, Any] | None = None,
                     timeout: float = TIMEOUT) -> Unsuback:
        pid = self.next_packet_id()
        self.send(Unsubscribe(pid, list(filters), dict(properties or {})))
        return self.await_ack(Unsuback, pid, timeout)

    def publish5(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                 properties: Mapping[int, Any] | None = None,
                 timeout: float = TIMEOUT) -> Puback | Pubrec | None:
        """PUBLISH and complete the QoS flow; return the PUBACK (QoS 1) or PUBREC (QoS 2)."""
        pid = self.next_packet_id() if qos else None
        self.send(Publish(topic, payload, qos, retain, False, pid, dict(properties or {})))
        if qos == 1:
            return self.await_ack(Puback, pid, timeout)  # type: ignore[arg-type]
        if qos == 2:
            rec = self.await_ack(Pubrec, pid, timeout)  # type: ignore[arg-type]
            if rec.reason_code < 0x80:
                self.send(Pubrel(pid))  # type: ignore[arg-type]
                self.await_ack(Pubcomp, pid, timeout)  # type: ignore[arg-type]
            return rec
        return None

    def await_ack(self, cls: type[T], packet_id: int, timeout: float = TIMEOUT) -> T:
        """The ``cls`` acknowledgement for ``packet_id``; PUBLISH packets that arrive first are
        kept, in order, for the next ``recv``."""
        deadline = time.monotonic() + timeout
        skipped: list[Packet] = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {cls.__name__} for {packet_id} within {timeout}s")
                p = self.recv(left)
                if isinstance(p, cls) and getattr(p, "packet_id", None) == packet_id:
                    return p
                assert isinstance(p, Publish), (
                    f"expected {cls.__name__} for {packet_id}, got {p!r}")
                skipped.append(p)
        finally:
            self.pending.extendleft(reversed(skipped))

    def next_publish(self, timeout: float = TIMEOUT, ack: bool = True) -> Publish:
        """The next packet, which must be a PUBLISH; acknowledged (QoS 1/2) unless told."""
        p = self.expect(Publish, timeout)
        if ack and p.qos:
            self.ack(p)
        return p

    def publishes(self, n: int, timeout: float = TIMEOUT, ack: bool = True) -> list[Publish]:
        """The next ``n`` packets, which must be PUBLISH, within ``timeout`` in all."""
        deadline = time.monotonic() + timeout
        out: list[Publish] = []
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(out)} of {n} PUBLISH in {timeout}s: {out!r}")
            try:
                out.append(self.next_publish(left, ack))
            except TimeoutError:
                raise AssertionError(
                    f"got {len(out)} of {n} PUBLISH in {timeout}s: {out!r}") from None
        return out

    def drain(self, within: float) -> list[Packet]:
        """Every packet that arrives in the next ``within`` seconds (the socket stays open)."""
        deadline = time.monotonic() + within
        got: list[Packet] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                got.append(self.recv(left))
            except TimeoutError:
                return got

    def expect_disconnect(self, timeout: float = TIMEOUT) -> Disconnect:
        """Wait until the broker closes the socket; it must have sent DISCONNECT first (last).
        Returns that DISCONNECT."""
        got = self.wait_closed(timeout)
        discs = [p for p in got if isinstance(p, Disconnect)]
        assert discs, f"the broker closed the connection without a DISCONNECT; got {got!r}"
        assert got[-1] is discs[-1], f"packets after the DISCONNECT: {got!r}"
        return discs[-1]

    def disconnect5(self, reason: int = 0, properties: Mapping[int, Any] | None = None) -> None:
        """Send DISCONNECT (with a reason code and properties) and close the socket."""
        self.send(Disconnect(reason, dict(properties or {})))
        self.close()

    def auth(self, reason: int, properties: Mapping[int, Any]) -> None:
        self.send(Auth(reason, dict(properties)))


# -- paho-mqtt as an MQTT 5 client --------------------------------------------------------------

@dataclass(frozen=True)
class Msg5(Msg):
    """A received PUBLISH with its MQTT 5 properties (paho names: ``ResponseTopic``, ...).

    ``topic`` is resolved through the client's topic aliases; ``wire_topic`` is what the
    PUBLISH carried (empty when only an alias was sent)."""

    props: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    wire_topic: str = ""


def paho_props(packet_type: int, **values: Any) -> Properties | None:
    """A paho ``Properties`` for ``packet_type`` (``PacketTypes.CONNECT``, ...) or None."""
    if not values:
        return None
    props = Properties(packet_type)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


def props_dict(props: Properties | None) -> dict[str, Any]:
    """The properties a paho ``Properties`` holds, by paho's names."""
    if props is None:
        return {}
    out: dict[str, Any] = {}
    for name in props.names:
        attr = name.replace(" ", "")
        if hasattr(props, attr):
            out[attr] = getattr(props, attr)
    return out


class Paho5:
    """A paho-mqtt MQTTv5 client with bounded, blocking request/answer helpers.

    paho does not resolve topic aliases the broker sends (it reports the empty topic of an
    aliased PUBLISH as it is): this wrapper keeps the alias map an application needs and
    reports the resolved topic in ``Msg5.topic``.
    """

    def __init__(self, client_id: str = "", *,
                 will: tuple[str, bytes, int, bool] | None = None,
                 will_props: dict[str, Any] | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5,
                                  reconnect_on_failure=False)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain,
                                 paho_props(PacketTypes.WILLMESSAGE, **(will_props or {})))
        self.messages = Collector()
        self.connack = threading.Event()
        self.connack_code: int | None = None
        self.connack_props: dict[str, Any] = {}
        self.session_present: bool | None = None
        self.disconnected = threading.Event()
        self.disconnect_code: int | None = None
        self.disconnect_from_server = False
        self.aliases: dict[int, str] = {}
        self._acks: dict[Any, Any] = {}
        self._cond = threading.Condition()
        self._started = False
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_publish = self._on_publish

    # callbacks (paho's network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connack_code = int(reason.value)
        self.connack_props = props_dict(properties)
        self.session_present = bool(flags.session_present)
        self.connack.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.disconnect_code = int(reason.value) if reason is not None else None
        self.disconnect_from_server = bool(flags.is_disconnect_packet_from_server)
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, m: mqtt.MQTTMessage) -> None:
        props = props_dict(getattr(m, "properties", None))
        wire = m.topic
        topic = wire
        alias = props.get("TopicAlias")
        if alias is not None:
            if wire:
                self.aliases[alias] = wire
            else:
                topic = self.aliases.get(alias, "")
        self.messages.add(Msg5(topic, bytes(m.payload), m.qos, bool(m.retain), bool(m.dup),
                               props, wire))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[Any],
                      properties: Any) -> None:
        with self._cond:
            self._acks[mid] = [int(c.value) for c in codes]
            self._cond.notify_all()

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, codes: Any,
                        properties: Any) -> None:
        with self._cond:
            if isinstance(codes, list):
                self._acks[mid] = [int(c.value) for c in codes]
            else:
                self._acks[mid] = [int(codes.value)] if codes is not None else []
            self._cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._cond:
            self._acks[("pub", mid)] = int(reason.value) if reason is not None else 0
            self._cond.notify_all()

    def _wait_ack(self, key: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout}s")
                self._cond.wait(left)
            return self._acks.pop(key)

    # requests
    def connect(self, port: int, keepalive: int = 60, clean_start: bool = True,
                properties: dict[str, Any] | None = None, timeout: float = TIMEOUT,
                expect: int | None = 0) -> int:
        """CONNECT (level 5) and wait for CONNACK; return its reason code."""
        self.client.connect(HOST, port, keepalive, clean_start=clean_start,
                            properties=paho_props(PacketTypes.CONNECT, **(properties or {})))
        self.client.loop_start()
        self._started = True
        if not self.connack.wait(timeout):
            raise AssertionError(f"no CONNACK within {timeout}s")
        assert self.connack_code is not None
        if expect is not None:
            assert self.connack_code == expect, (
                f"CONNACK 0x{self.connack_code:02X}, expected 0x{expect:02X}")
        return self.connack_code

    def subscribe(self, *subs: tuple[str, int] | tuple[str, SubscribeOptions],
                  properties: dict[str, Any] | None = None,
                  timeout: float = TIMEOUT) -> list[int]:
        """SUBSCRIBE ``(filter, qos or SubscribeOptions)`` pairs; return SUBACK reason codes."""
        rc, mid = self.client.subscribe(
            list(subs),  # type: ignore[arg-type]
            properties=paho_props(PacketTypes.SUBSCRIBE, **(properties or {})))
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        codes: list[int] = self._wait_ack(mid, timeout, "SUBACK")
        return codes

    def unsubscribe(self, *filters: str, timeout: float = TIMEOUT) -> list[int]:
        rc, mid = self.client.unsubscribe(list(filters))
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe failed locally: {rc}"
        codes: list[int] = self._wait_ack(mid, timeout, "UNSUBACK")
        return codes

    def publish(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                properties: dict[str, Any] | None = None, wait: bool = True,
                timeout: float = TIMEOUT) -> int | None:
        """PUBLISH; with ``wait`` (QoS 1/2) block until PUBACK / PUBCOMP and return the
        reason code paho reported for it."""
        info = self.client.publish(topic, payload, qos, retain,
                                   properties=paho_props(PacketTypes.PUBLISH,
                                                         **(properties or {})))
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        if not wait:
            return None
        if qos == 0:
            info.wait_for_publish(timeout)
            return None
        code: int = self._wait_ack(("pub", info.mid), timeout, f"PUBACK/PUBCOMP for {topic!r}")
        return code

    def disconnect(self, reason: int = 0, properties: dict[str, Any] | None = None,
                   timeout: float = TIMEOUT) -> None:
        """Send DISCONNECT (reason code, properties) and wait until paho has closed."""
        self.client.disconnect(PahoReasonCode(PacketTypes.DISCONNECT, identifier=reason),
                               paho_props(PacketTypes.DISCONNECT, **(properties or {})))
        if not self.disconnected.wait(timeout):
            raise AssertionError(f"paho did not disconnect within {timeout}s")
        self.client.loop_stop()
        self._started = False

    def drop(self, timeout: float = TIMEOUT) -> None:
        """Close the TCP connection without DISCONNECT (as if the network failed)."""
        sock = self.client.socket()
        assert isinstance(sock, socket.socket), "not connected"
        sock.shutdown(socket.SHUT_RDWR)
        if not self.disconnected.wait(timeout):
            raise AssertionError(f"paho did not notice the dropped socket within {timeout}s")
        self.client.loop_stop()
        self._started = False

    def wait_disconnected(self, timeout: float = TIMEOUT) -> int | None:
        """Wait until the broker ends the connection; the DISCONNECT reason code (if any)."""
        if not self.disconnected.wait(timeout):
            raise AssertionError(f"the broker kept paho connected for {timeout}s")
        return self.disconnect_code

    def close(self) -> None:
        if self._started:
            with contextlib.suppress(Exception):
                if not self.disconnected.is_set():
                    self.client.disconnect()
                    self.disconnected.wait(1.0)
            with contextlib.suppress(Exception):
                self.client.loop_stop()
            self._started = False


# -- one test's brokers and clients ---------------------------------------------------------------

class Env:
    """Starts brokers and makes clients for them; closes every client at the end.

    Clients talk to the most recently started broker (a default one is started on first use).
    """

    def __init__(self, make_broker: Callable[[dict[str, Any]], BrokerThread]) -> None:
        self._make = make_broker
        self._bt: BrokerThread | None = None
        self._closers: list[Callable[[], None]] = []

    def start(self, config: dict[str, Any] | None = None, **mqtt_section: Any) -> BrokerThread:
        """Start a broker with ``config`` (or ``base_config(**mqtt_section)``)."""
        self._bt = self._make(config if config is not None else base_config(**mqtt_section))
        return self._bt

    @property
    def bt(self) -> BrokerThread:
        if self._bt is None:
            self.start()
        assert self._bt is not None
        return self._bt

    @property
    def port(self) -> int:
        return self.bt.port

    def raw(self, rcvbuf: int | None = None) -> RawV5:
        r = RawV5(self.port, rcvbuf=rcvbuf)
        self._closers.append(r.close)
        return r

    def raw_connect(self, client_id: str = "", expect: int | None = 0,
                    **kw: Any) -> tuple[RawV5, Connack]:
        r = self.raw()
        ack = r.connect5(client_id, **kw)
        if expect is not None:
            assert ack.return_code == expect, f"CONNACK {ack!r}, expected 0x{expect:02X}"
        return r, ack

    def raw3(self) -> RawClient:
        """A raw level-4 (3.1.1) connection."""
        r = RawClient(self.port, 4)
        self._closers.append(r.close)
        return r

    def paho(self, client_id: str = "", *, connect: bool = True, keepalive: int = 60,
             clean_start: bool = True, properties: dict[str, Any] | None = None,
             expect: int | None = 0, **kw: Any) -> Paho5:
        c = Paho5(client_id, **kw)
        self._closers.append(c.close)
        if connect:
            c.connect(self.port, keepalive, clean_start, properties, expect=expect)
        return c

    def paho3(self, client_id: str = "", *, connect: bool = True, clean_session: bool = True,
              **kw: Any) -> Paho:
        """A paho-mqtt 3.1.1 client (the existing helper)."""
        c = Paho(client_id, V311, clean_session, **kw)
        self._closers.append(c.close)
        if connect:
            c.connect(self.port)
        return c

    def connected(self, client_id: str) -> bool:
        bt = self.bt
        return client_id in bt.call(lambda: list(bt.broker.connections))  # type: ignore

    def has_session(self, client_id: str) -> bool:
        bt = self.bt
        return client_id in bt.call(lambda: list(bt.broker.sessions))  # type: ignore

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()


def no_message(coll: Collector, within: float,
               predicate: Callable[[Msg], bool] = lambda m: True) -> bool:
    """True if no message matching ``predicate`` arrives in ``coll`` within ``within`` s."""
    try:
        coll.wait_until(lambda ms: any(predicate(m) for m in ms), within, "a message")
    except AssertionError:
        return True
    return False


# -- SCRAM-SHA-256 (RFC 5802, RFC 7677) ----------------------------------------------------------

def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def scram_credential(password: str, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The stored credential ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``
    (PostgreSQL's form; base64 fields). The broker's own ``make_scram_credential`` is used
    when it exists (see :func:`make_credential`)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    server = _hmac(salted, b"Server Key")
    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def make_credential(password: str) -> str:
    """The broker's ``mqttbroker.enhanced_auth.make_scram_credential`` if it is there, else
    :func:`scram_credential` (same format)."""
    try:
        from mqttbroker.enhanced_auth import make_scram_credential
    except ImportError:
        return scram_credential(password)
    return str(make_scram_credential(password))


class ScramClient:
    """The client side of one SCRAM-SHA-256 exchange, no channel binding (gs2 header "n,,")."""

    def __init__(self, user: str, password: str, nonce: str | None = None) -> None:
        self.user = user
        self.password = password
        self.cnonce = nonce or base64.b64encode(os.urandom(18)).decode()
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = f"n={name},r={self.cnonce}"
        self.server_signature: bytes | None = None

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        """The client-final message for ``server_first`` (``r=...,s=...,i=...``)."""
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        assert nonce.startswith(self.cnonce) and len(nonce) > len(self.cnonce), (
            f"server nonce {nonce!r} does not extend the client nonce {self.cnonce!r}")
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> bool:
        """True when ``v=...`` proves the server knew the credential."""
        assert self.server_signature is not None, "client_final() first"
        text = server_final.decode()
        if not text.startswith("v="):
            return False
        return hmac.compare_digest(base64.b64decode(text[2:]), self.server_signature)
