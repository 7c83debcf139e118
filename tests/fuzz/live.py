"""What the live-connection fuzz target checks: ``LiveHarness().check(data)``.

A broker runs in this process on its own event loop thread (``tests.conftest.BrokerThread``),
so atheris sees the coverage of ``client.py``, ``broker.py``, ``router.py``, ``session.py``, ...
while it handles the fuzz input. Each input gets fresh TCP connections on 127.0.0.1, one client
or two (see :func:`parse_live_input` for the format):

* per client, the input chooses the protocol level (3, 4 or 5) and whether the harness sends a
  valid CONNECT first (and waits for CONNACK 0) or the input brings its own;
* with one client, the rest of the input is its byte stream; with two, the rest is a list of
  segments, each for client A or B, sent in order. After each segment (and at the end) the
  harness waits until the broker has handled it: it sends PINGREQ and reads until the
  matching PINGRESP (one per complete PINGREQ sent so far, plus its own), or until the broker
  closes the connection. So two clients' packets reach the broker in the input's order, and
  their interplay (one publishes to the other, takes over its client id, ...) is reproducible;
* a stream that stops inside a frame (or in framing the reader refuses) is not synced (a
  PINGREQ would become part of the frame); at the end it is half-closed, and the broker must
  close its side. The input may also ask for a half-close at the end.

Checked after every input: the broker never logged an ERROR (``client.py`` logs "internal
error handling client ..." with the traceback for any exception other than ProtocolError;
asyncio logs exceptions escaping callbacks); everything it sent decodes at the client's level;
it answered (or closed) within ``ANSWER_TIMEOUT`` seconds; its thread is alive; and a healthy
client connected since the start still gets PINGRESP to PINGREQ. Anything else raises
AssertionError: a crash for atheris, a failure for pytest.

The broker keeps its state between inputs (retained messages, persistent sessions an input's
own CONNECT may create, within small limits), as a real broker would; a finding that needs an
earlier input to reproduce shows the broker's traceback in its message all the same.
"""

from __future__ import annotations

import dataclasses
import logging
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Self

from mqttbroker.config import MqttConfig
from mqttbroker.enhanced_auth import make_scram_credential
from mqttbroker.errors import ProtocolError
from mqttbroker.protocol.codec import decode, encode, peek_protocol_level
from mqttbroker.protocol.packets import Connect
from mqttbroker.protocol.properties import PropertyId
from mqttbroker.protocol.reader import FrameReader
from tests.conftest import BrokerThread, base_config

MAX_PACKET = 65536
ANSWER_TIMEOUT = 10.0
PINGREQ = b"\xc0\x00"
PINGRESP = (0xD0, b"")
LEVELS = (3, 4, 5, 5)  # MQTT 5 has the most to explore: twice the weight
CLIENT_IDS = ("fa", "fb")  # short and fixed: an input's own CONNECT can take one over

# Small limits, so that state a long run accumulates stays bounded (and the limits' paths are
# reached): sessions, retained messages, queues.
LIVE_CONFIG: dict[str, Any] = {
    "max_packet_size": MAX_PACKET, "connect_timeout": 2.0, "max_sessions": 500,
    "max_retained_messages": 500, "max_retained_bytes": 1 << 20, "max_queued_messages": 50,
    "max_session_expiry_interval": 60, "max_inflight_messages": 5, "receive_maximum": 5,
    "topic_alias_maximum": 4}
SCRAM_USER = "fuzz"
# few iterations: a fuzz input may start many exchanges
SCRAM_CREDENTIAL = make_scram_credential("fuzz", iterations=16, salt=b"fuzz-salt")

# Every fuzz connection comes from 127.0.0.1, thousands a second: where the broker has
# per-address defences (a connection rate, delays after failed logins), they are off here.
_OFF_IF_KNOWN: dict[str, Any] = {"max_connection_rate_per_address": 0, "auth_failure_delay": 0}


def live_config(**mqtt: Any) -> dict[str, Any]:
    """The broker config the live target runs (``mqtt`` overrides :data:`LIVE_CONFIG`)."""
    known = {f.name for f in dataclasses.fields(MqttConfig)}
    config = base_config(**{**LIVE_CONFIG,
                            **{k: v for k, v in _OFF_IF_KNOWN.items() if k in known}, **mqtt})
    # a SCRAM user, so the enhanced-authentication exchange runs past "bad method"
    config["auth"]["scram-users"] = {SCRAM_USER: SCRAM_CREDENTIAL}
    return config


# -- the input format ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LiveInput:
    """One live-target input, decoded from its bytes."""

    levels: tuple[int, ...]  # one per client
    own_connect: tuple[bool, ...]  # the client's stream brings its own CONNECT
    half_close: bool  # end with shutdown(SHUT_WR) instead of PINGREQ
    segments: tuple[tuple[int, bytes], ...]  # (client index, bytes), in order


def parse_live_input(data: bytes) -> LiveInput:
    """Byte 0: bits 0-1 client A's level (3, 4, 5, 5), bit 2 A brings its own CONNECT, bit 3
    half-close at the end, bit 4 two clients; with two clients, bits 5-6 B's level and bit 7 B
    brings its own CONNECT. One client: the rest is A's stream. Two: the rest is segments, each
    a header byte (bit 7: for B; bits 0-6: length, cut at the end of the input) and its bytes.
    """
    if not data:
        return LiveInput((4,), (False,), False, ())
    c = data[0]
    half = bool(c & 8)
    if not c & 16:
        return LiveInput((LEVELS[c & 3],), (bool(c & 4),), half, ((0, data[1:]),))
    segments: list[tuple[int, bytes]] = []
    i = 1
    while i < len(data):
        h = data[i]
        seg = data[i + 1:i + 1 + (h & 0x7F)]
        segments.append((h >> 7, seg))
        i += 1 + len(seg)
    return LiveInput((LEVELS[c & 3], LEVELS[(c >> 5) & 3]), (bool(c & 4), bool(c & 128)), half,
                     tuple(segments))


def make_live_input(level: int, stream: bytes, own_connect: bool = False,
                    half_close: bool = False) -> bytes:
    """A one-client input that :func:`parse_live_input` reads back as these settings."""
    c = LEVELS.index(level) | (4 if own_connect else 0) | (8 if half_close else 0)
    return bytes((c,)) + stream


def make_two_client_input(levels: tuple[int, int], segments: list[tuple[int, bytes]],
                          own_connect: tuple[bool, bool] = (False, False),
                          half_close: bool = False) -> bytes:
    """A two-client input: ``segments`` are (0 for A or 1 for B, bytes); long ones are split."""
    c = (16 | LEVELS.index(levels[0]) | (LEVELS.index(levels[1]) << 5)
         | (4 if own_connect[0] else 0) | (128 if own_connect[1] else 0)
         | (8 if half_close else 0))
    out = bytearray((c,))
    for who, data in segments:
        for i in range(0, max(len(data), 1), 0x7F):
            piece = data[i:i + 0x7F]
            out += bytes(((who << 7) | len(piece),)) + piece
    return bytes(out)


def harness_connect(level: int, client_id: str) -> bytes:
    """The CONNECT the harness sends: MQTT 5 asks for topic aliases and a small window, so
    the broker's outbound alias and flow-control paths run too."""
    props: dict[int, Any] = {}
    if level == 5:
        props = {PropertyId.TOPIC_ALIAS_MAXIMUM: 3, PropertyId.RECEIVE_MAXIMUM: 3,
                 PropertyId.USER_PROPERTY: [("fuzz", "1")]}
    return encode(Connect("MQIsdp" if level == 3 else "MQTT", level, client_id, True, 60,
                          properties=props), level)


# -- the harness ----------------------------------------------------------------------------------

class ErrorLog(logging.Handler):
    """Collects ERROR records from the broker's thread."""

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

    @staticmethod
    def describe(records: list[logging.LogRecord]) -> str:
        fmt = logging.Formatter()
        return "\n".join(
            f"{r.name}: {r.getMessage()}"
            + ("\n" + fmt.formatException(r.exc_info) if r.exc_info else "")
            for r in records)


class _Peer:
    """One fuzz client: its socket, what it sent (framed, to know where it stands) and what
    the broker sent it."""

    def __init__(self, name: str, sock: socket.socket, level: int | None) -> None:
        self.name = name
        self.sock = sock
        self.level = level  # None: unknown (its own CONNECT said nothing we can read)
        self.sent = FrameReader(MAX_PACKET)
        self.sent_frames = 0
        self.framing_broken = False  # what it sent cannot be framed: the broker closes it
        self.received = FrameReader(1 << 28)
        self.pings_expected = 0
        self.pings_seen = 0
        self.closed = False  # the broker closed (or reset) it
        self.shut = False  # we half-closed it

    @property
    def in_frame(self) -> bool:
        """The stream so far stops inside a frame: a PINGREQ now would join that frame."""
        return self.framing_broken or self.sent.buffered() > 0

    def send(self, data: bytes) -> None:
        if not self.framing_broken:
            try:
                for first, body in self.sent.feed(data):
                    self.sent_frames += 1
                    self.pings_expected += (first, body) == (0xC0, b"")
                    if self.level is None and self.sent_frames == 1 and first == 0x10:
                        self.level = peek_protocol_level(body)
            except ProtocolError:
                self.framing_broken = True
        if self.closed or self.shut:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True  # the broker closed (or reset) the connection already: fine

    def receive(self, data: bytes, what: str) -> None:
        if not data:
            self.closed = True
            return
        for first, body in self.received.feed(data):
            if self.level is not None:
                try:
                    decode(first, body, self.level)
                except ProtocolError as exc:
                    raise AssertionError(f"{what}: the broker sent {self.name} a malformed "
                                         f"packet 0x{first:02X} {body!r}: {exc}") from exc
            self.pings_seen += (first, body) == PINGRESP

    def half_close(self) -> None:
        if not (self.closed or self.shut):
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.closed = True
            self.shut = True


class LiveHarness:
    """A broker on a thread, a healthy client, and ``check(data)`` per fuzz input."""

    LOGGERS = ("mqttbroker", "asyncio")

    def __init__(self, **mqtt: Any) -> None:
        self.errors = ErrorLog()
        self._saved_levels: dict[str, int] = {}
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self.errors)
            # the broker's WARNING per refused client is most of what it logs here: skip it
            self._saved_levels[name] = logger.level
            logger.setLevel(logging.ERROR)
        self.bt = BrokerThread(live_config(**mqtt)).start()
        self.port = self.bt.port
        self.inputs = 0
        self.healthy = self._open_healthy()

    def close(self) -> None:
        """Stop the broker and put the loggers back as they were."""
        try:
            self.healthy.close()
            self.bt.stop()
        finally:
            for name in self.LOGGERS:
                logger = logging.getLogger(name)
                logger.removeHandler(self.errors)
                logger.setLevel(self._saved_levels[name])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the healthy client ---------------------------------------------------------------------

    def _connect(self, level: int, client_id: str) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(harness_connect(level, client_id))
        reader = FrameReader(1 << 28)
        frames: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while not frames:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = s.recv(65536)
            except (TimeoutError, ConnectionError):
                data = b""
            if not data:
                break
            frames += reader.feed(data)
        ok = frames[:1] and frames[0][0] == 0x20 and frames[0][1][1:2] == b"\x00"
        if not ok:
            s.close()
            raise AssertionError(f"no CONNACK 0 to {client_id!r}'s valid CONNECT (level "
                                 f"{level}): {frames!r}")
        return s

    def _open_healthy(self) -> socket.socket:
        return self._connect(4, f"healthy-{uuid.uuid4().hex}")  # an id no input can take over

    def _check_healthy(self, what: str) -> None:
        peer = _Peer("the healthy client", self.healthy, 4)
        peer.send(PINGREQ)  # counted as expecting its PINGRESP, like any PINGREQ sent
        self._pump([peer], what)
        assert not peer.closed, f"after {what}: the broker closed the healthy client"

    # -- one input ------------------------------------------------------------------------------

    def check(self, data: bytes) -> None:
        """Send one fuzz input on fresh connections and check the broker afterwards."""
        inp = parse_live_input(data)
        self.inputs += 1
        what = f"input {data!r} ({describe(inp)})"
        try:
            self._exchange(inp, what)
        finally:
            records = self.errors.take()
        assert not records, f"{what}: the broker logged an error:\n{ErrorLog.describe(records)}"
        assert self.bt._thread.is_alive(), f"{what}: the broker thread died"
        self._check_healthy(what)
        records = self.errors.take()
        assert not records, f"{what}: the broker logged an error:\n{ErrorLog.describe(records)}"

    def _exchange(self, inp: LiveInput, what: str) -> None:
        peers: list[_Peer] = []
        try:
            for i, (level, own) in enumerate(zip(inp.levels, inp.own_connect, strict=True)):
                name = CLIENT_IDS[i]
                if own:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    peers.append(_Peer(name, sock, None))
                else:
                    peers.append(_Peer(name, self._connect(level, name), level))
            two = len(peers) > 1
            for who, data in inp.segments:
                peer = peers[who]
                peer.send(data)
                if two:
                    self._sync(peer, peers, what)
            for peer in peers:
                if inp.half_close or peer.in_frame:
                    peer.half_close()
                else:
                    self._sync(peer, peers, what)
            for peer in peers:
                if peer.shut:
                    self._pump(peers, what, until_closed=peer)
        finally:
            for peer in peers:
                peer.sock.close()

    def _sync(self, peer: _Peer, peers: list[_Peer], what: str) -> None:
        """Wait until the broker has handled what ``peer`` sent (PINGREQ -> PINGRESP)."""
        if peer.closed or peer.shut or peer.in_frame:
            return
        peer.send(PINGREQ)
        self._pump(peers, what)

    def _pump(self, peers: list[_Peer], what: str, until_closed: _Peer | None = None) -> None:
        """Read every peer's socket until each open one has all its PINGRESPs (or
        ``until_closed`` is closed)."""
        deadline = time.monotonic() + ANSWER_TIMEOUT

        def waiting() -> list[_Peer]:
            if until_closed is not None:
                return [] if until_closed.closed else [until_closed]
            return [p for p in peers if not p.closed and p.pings_seen < p.pings_expected]

        while waiting():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: the broker neither answered nor closed "
                                     f"within {ANSWER_TIMEOUT}s: " + ", ".join(
                                         f"{p.name} {p.pings_seen} of {p.pings_expected} "
                                         f"PINGRESP{', half-closed' if p.shut else ''}"
                                         for p in waiting()))
            ready, _, _ = select.select([p.sock for p in peers if not p.closed], [], [], left)
            for p in peers:
                if p.sock in ready:
                    try:
                        data = p.sock.recv(65536)
                    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                        data = b""
                    p.receive(data, what)


def describe(inp: LiveInput) -> str:
    """``A level 5 after a valid CONNECT, B level 4 own CONNECT, 3 segments, PINGREQ``."""
    clients = ", ".join(
        f"{CLIENT_IDS[i]} level {lv} {'own CONNECT' if own else 'after a valid CONNECT'}"
        for i, (lv, own) in enumerate(zip(inp.levels, inp.own_connect, strict=True)))
    return (f"{clients}, {len(inp.segments)} segment(s), "
            f"{'half-close' if inp.half_close else 'PINGREQ'} at the end")
