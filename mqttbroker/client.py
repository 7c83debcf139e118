"""One connection: bytes from the transport, packets through the protocol, calls to the broker.

One task-free ``asyncio.Protocol`` per socket. Everything that can go wrong with a peer's bytes
ends in :meth:`ClientConnection.fail`, the one place a :class:`ProtocolError` becomes a CONNACK
(before the session exists), a DISCONNECT with its reason code (MQTT 5), or a closed socket, with
one log line naming the client and the rule.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any, cast

from .core.hooks import ConnectionHost, HoldPacket
from .enhanced_auth import AuthExchange, AuthStatus
from .errors import ProtocolError
from .message import Message
from .metrics import packet_size
from .protocol.codec import decode, encode, encode_publish_parts, peek_protocol_level
from .protocol.constants import (
    V3_CONNACK_FOR_REASON,
    ConnackCode,
    PacketType,
    ProtocolLevel,
    ReasonCode,
)
from .protocol.flows import OutState
from .protocol.packets import (
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
    Subscribe,
    Unsubscribe,
    Will,
)
from .protocol.properties import PropertyId as Prop
from .protocol.reader import FrameReader
from .protocol.topics import validate_topic_name
from .ratelimit import PublishLimiter
from .session import Outbound, Queued, Session

log = logging.getLogger("mqttbroker.client")

# 3.1.1 rule numbers cited in messages common to both versions -> the same rule in 5.0 (only
# numbers 5.0 does not use for another rule; code that knows the level cites it itself)
_V5_RULES: dict[str, str] = {
    "[MQTT-1.5.3-1]": "[MQTT-1.5.4-1]",  # well-formed UTF-8
    "[MQTT-1.5.3-2]": "[MQTT-1.5.4-2]",  # no U+0000
    "[MQTT-1.5.3-1/2]": "[MQTT-1.5.4-1/2]",
    "[MQTT-2.3.1-1]": "[MQTT-2.2.1-3]",  # a non-zero packet identifier
    "[MQTT-3.1.2-14]": "[MQTT-3.1.2-12]",  # will QoS 3
    "[MQTT-3.1.2-11/13/15]": "[MQTT-3.1.2-11/13]",  # will QoS/retain without the will flag
}
_V5_RULE = re.compile("|".join(re.escape(k) for k in _V5_RULES))

V5 = ProtocolLevel.MQTT_5
LINGER = 2.0  # seconds a closed connection's socket keeps draining the peer's bytes
SLOW_CONSUMER_GRACE = 5.0  # seconds a congested client may hold publishers back
PUMP_BATCH = 256  # queued messages sent between checks of the socket's buffer
WRITE_BATCH = 256  # packets gathered into one transport write at most
_PUBREL_HEAD = b"\x62\x02"
_PINGRESP = b"\xd0\x00"


def _connect_level(data: bytes) -> int | None:
    """The protocol level of the CONNECT that ``data`` starts with, if it is there yet."""
    if not data or data[0] != 0x10:
        return None
    i = 1
    while i < min(len(data), 5) and data[i] & 0x80:  # the Remaining Length's bytes
        i += 1
    return peek_protocol_level(data[i + 1:i + 16])


class ConnState(IntEnum):
    """Where a connection stands."""

    AWAIT_CONNECT = 0
    AUTHENTICATING = 1  # MQTT 5 enhanced authentication before CONNACK [MQTT 4.12]
    CONNECTED = 2
    CLOSED = 3


_P = PacketType
# What a client may send in each state: everything else is a protocol error. The first packet
# must be CONNECT [MQTT-3.1.0-1]; a second CONNECT is a protocol error [MQTT-3.1.0-2]; packets
# only a server sends (CONNACK, SUBACK, ...) are never accepted from a client.
ALLOWED: dict[ConnState, frozenset[int]] = {
    ConnState.AWAIT_CONNECT: frozenset({_P.CONNECT}),
    ConnState.AUTHENTICATING: frozenset({_P.AUTH, _P.DISCONNECT}),
    ConnState.CONNECTED: frozenset({_P.PUBLISH, _P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP,
                                    _P.SUBSCRIBE, _P.UNSUBSCRIBE, _P.PINGREQ, _P.DISCONNECT,
                                    _P.AUTH}),
    ConnState.CLOSED: frozenset(),
}

# Properties of an incoming PUBLISH that are per hop, not forwarded [MQTT-3.3.2-*]
_HOP_PROPS = (Prop.TOPIC_ALIAS, Prop.MESSAGE_EXPIRY_INTERVAL)


class ClientConnection(asyncio.Protocol):
    """Drives one client connection.

    Slotted, with a class-level dispatch table and no per-connection timer once connected
    (keep-alive is the broker's wheel): an idle connection costs little memory.
    """

    __slots__ = (
        "_after_uncommitted",
        "_auth",
        "_held_by",
        "_limiter",
        "_loop",
        "_max_levels",
        "_pending_connect",
        "_plugins",
        "_stash",
        "_timer",
        "_wbuf",
        "admitted",
        "alias_in",
        "alias_in_max",
        "alias_out",
        "alias_out_max",
        "auth_method",
        "blocked_by",
        "broker",
        "client_id",
        "congested_since",
        "connect_expiry",
        "connected_at",
        "gate",
        "keep_alive",
        "last_received",
        "level",
        "listener",
        "max_out_packet",
        "metrics",
        "peer",
        "problem_info",
        "rate_paused",
        "reader",
        "receive_maximum",
        "session",
        "state",
        "transport",
        "uncommitted_bytes",
        "username",
        "waiters",
        "will",
        "write_limit",
    )

    def __init__(self, broker: ConnectionHost[ClientConnection], listener: str) -> None:
        self.broker = broker
        self.listener = listener
        self.metrics = broker.metrics
        cfg = broker.config.mqtt
        # until CONNACK, only a packet of max_connect_size is read (a peer that never logs in
        # cannot make us buffer the configured maximum); the limit opens up at CONNACK
        self.reader = FrameReader(min(cfg.max_packet_size, cfg.max_connect_size))
        self._max_levels = cfg.max_topic_levels or 65536  # (a topic has at most 65535 "/")
        self.write_limit = cfg.write_buffer_limit
        self.state = ConnState.AWAIT_CONNECT
        self.level: int = ProtocolLevel.MQTT_3_1_1
        self.client_id: str | None = None
        self.username: str | None = None
        self.session: Session | None = None
        self.will: Will | None = None
        self.keep_alive = 0
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.last_received = 0.0
        # MQTT 5, per connection
        self.connect_expiry = 0  # Session Expiry Interval given at CONNECT
        self.max_out_packet = 0  # the client's Maximum Packet Size, 0 = none
        self.problem_info = True  # Request Problem Information
        self.alias_in: dict[int, str] | None = None  # made on first use
        self.alias_in_max = cfg.topic_alias_maximum
        self.alias_out: dict[str, int] | None = None
        self.alias_out_max = 0
        self.receive_maximum = cfg.receive_maximum
        # backpressure: while our socket buffer is over write_buffer_limit we are congested,
        # and publishers feeding us wait (paused reads) until it drains
        self.congested_since = 0.0
        self.waiters: set[ClientConnection] | None = None
        self.blocked_by = 0  # congested subscribers this (publishing) connection waits for
        self.auth_method: str | None = None
        self._auth: AuthExchange | None = None
        self._pending_connect: Connect | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._wbuf: list[bytes] | None = None
        # persistence with sync: commit holds what we send until the changes before it are
        # committed (see SqliteStorage.keep_until_committed); None when nothing is kept
        storage = broker.storage
        self.gate = storage if storage is not None and storage.gates_output else None
        self.uncommitted_bytes = 0
        self._after_uncommitted = False  # sending what must not overtake an uncommitted SUBACK
        self.admitted: bool | None = None  # False: over a connection limit, refused at CONNECT
        self._limiter = PublishLimiter(cfg.max_publish_rate, cfg.max_publish_bytes_rate,
                                       self._loop.time()) if cfg.max_publish_rate or \
            cfg.max_publish_bytes_rate else None
        self.rate_paused = False
        self._held_by: asyncio.Future[Any] | None = None  # a plugin decision it waits for
        self._plugins = bool(broker.config.plugins)
        self._stash: list[tuple[int, bytes]] | None = None  # packets read, held by the rate
        self.connected_at: float | None = None  # wall clock at CONNACK (the admin API's)

    def __repr__(self) -> str:
        return f"<client {self.client_id or '-'} {self.peer}>"

    @property
    def name(self) -> str:
        """How log lines name this client."""
        return f"{self.client_id!r} ({self.peer})" if self.client_id else f"({self.peer})"

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        self.last_received = self._loop.time()
        self.transport.set_write_buffer_limits(high=self.write_limit, low=self.write_limit // 4)
        admitted = self.broker.admit(self)
        if admitted is None:
            self.state = ConnState.CLOSED
            self.transport.abort()
            return
        self.admitted = admitted
        # A socket that never completes CONNECT is closed after connect_timeout (one over a
        # connection limit, kept only to be told so, gets less).
        timeout = self.broker.config.mqtt.connect_timeout
        self._timer = self._loop.call_later(timeout if admitted else min(timeout, 2.0),
                                            self._connect_timeout)

    def read_limit(self) -> int:
        """The largest packet read now (small until CONNACK): a WebSocket frame over it is
        refused before it is buffered (transports/websocket.py)."""
        return self.reader.max_packet_size

    def fail_transport(self, why: str) -> None:
        """The transport under us saw a protocol violation (a WebSocket text frame)."""
        self.fail(ProtocolError(ReasonCode.PROTOCOL_ERROR, why))

    def data_received(self, data: bytes) -> None:
        if self.state is ConnState.CLOSED:
            return
        self.metrics.bytes_received += len(data)
        try:
            if self.state is ConnState.AWAIT_CONNECT and data and data[0] != 0x10 \
                    and not self.reader.buffered():
                # refused on its first byte, not after buffering a whole bogus packet
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                    "first packet is not CONNECT [MQTT-3.1.0-1]")
            frames = self.reader.feed(data)
            if frames:
                # only complete control packets count as activity [MQTT-3.1.2-24]
                self.last_received = self._loop.time()
                if self._stash is not None:  # still paused by the publish rate: queue up
                    self._stash.extend(frames)
                else:
                    self._process(frames)
        except ProtocolError as exc:
            if exc.code == ReasonCode.PACKET_TOO_LARGE and self.state is ConnState.AWAIT_CONNECT:
                # over max_connect_size, refused from its header: answer in its protocol
                # version (MQTT 5: CONNACK 0x95) when the bytes read so far say which
                self.level = _connect_level(data) or self.level
            self.fail(exc)
        except Exception:  # a bug must cost one connection, never the broker
            log.exception("internal error handling client %s; closing it", self.name)
            self.fail(ProtocolError(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error"))

    def _process(self, frames: list[tuple[int, bytes]]) -> None:
        """Handle complete packets in order; over the publish rate, keep the rest for later."""
        it = iter(frames)
        for first, body in it:
            state = self.state
            if state is ConnState.CLOSED:
                return  # a previous packet in this read closed the connection
            self.metrics.messages_received += 1
            ptype = first >> 4
            if ptype not in ALLOWED[state]:
                self._unexpected(ptype)
            if ptype == _P.CONNECT:
                # known before decoding, so a malformed v5 CONNECT gets a v5 CONNACK
                self.level = peek_protocol_level(body) or self.level
                if self.broker.login_failures is not None and \
                        self._delay_connect(first, body, it):
                    break
            try:
                if ptype == _P.PUBLISH:  # the hot path, with the frame for reuse
                    self._on_publish(cast(Publish, decode(first, body, self.level)), body)
                    if self._limiter is not None and self._rate_limit(len(body)):
                        self._stash = list(it)
                        break
                elif first == 0x40 and len(body) == 2:  # a plain PUBACK: no packet object
                    self._ack(int.from_bytes(body, "big"), _P.PUBACK, 0)
                else:
                    _HANDLERS[ptype](self, decode(first, body, self.level))
                    if self._stash is not None and ptype == _P.CONNECT:
                        self._stash.extend(it)  # the broker suspended the CONNECT: keep the rest
                        break
            except HoldPacket as hold:  # a plugin's decision is on its way (nothing done yet)
                self._hold(hold.until, [(first, body), *it])
                break
        if self._wbuf:
            # our own answers (acks, the next messages a PUBACK let through) go now, not
            # after every other connection's work in this loop turn
            self._flush()

    def _delay_connect(self, first: int, body: bytes,
                      rest: Iterator[tuple[int, bytes]]) -> bool:
        """The CONNECT's address keeps failing to log in (abuse.py): delay the CONNECT, and
        what came after it, on a timer (the event loop goes on), not reading meanwhile; or
        refuse it at once, unread, when the address has CONNECTs delayed long enough already.
        True when delayed or refused; False: handle it now (``rest``, the packets read with it,
        is then left untouched for the caller to go on with)."""
        wait = self.broker.connect_delay(self)
        if wait is None:
            self.refuse(ReasonCode.SERVER_BUSY,
                        "too many failed logins from this address, try again later", quiet=True)
            return True
        if wait <= 0.0:
            return False
        log.debug("client %s: CONNECT delayed %.2fs (failed logins from its address)", self.name,
                  wait)
        self._stash = [(first, body), *rest]
        if self.transport is not None:
            self.transport.pause_reading()
        if self._timer is not None:  # the delay replaces connect_timeout
            self._timer.cancel()
        self._timer = self._loop.call_later(wait, self._connect_resume)
        return True

    def _hold(self, until: asyncio.Future[Any], stash: list[tuple[int, bytes]]) -> None:
        """Keep ``stash`` (the held packet first), read no more, until ``until`` is done."""
        self.metrics.messages_received -= 1  # counted again when it is handled
        self._stash = stash
        self._held_by = until
        if self.transport is not None:
            self.transport.pause_reading()
        until.add_done_callback(self._unhold)

    def _unhold(self, until: asyncio.Future[Any]) -> None:
        if self._held_by is not until:
            return
        self._held_by = None
        if self.closed:
            return
        stash, self._stash = self._stash, None
        if stash and not self._guarded(lambda: self._process(stash)):
            return
        if self._wbuf:
            self._flush()
        self._read_again()

    def suspend_connect(self) -> None:
        """The broker needs time to finish this CONNECT (a cluster claims the client id, a
        plugin decides): keep the packets read after it, read no more, until
        :meth:`resume_connect`. connect_timeout stops counting: the CONNECT has come, and
        what the broker waits for is bounded on its side (claim and plugin timeouts)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stash = []
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_connect(self, finish: Callable[[], None]) -> None:
        """Finish the suspended CONNECT with ``finish``, then handle what came after it."""
        stash, self._stash = self._stash, None
        if self.closed:
            return

        def go_on() -> None:
            finish()
            if self._stash is not None:  # suspended again (a cluster claim): keep the rest
                self._stash.extend(stash or ())
            elif stash and not self.closed:
                self._process(stash)

        if self._guarded(go_on):
            if self._wbuf:
                self._flush()
            self._read_again()

    def _guarded(self, work: Callable[[], None]) -> bool:
        """Run ``work`` (packet handling outside data_received); a protocol error closes the
        connection as the spec says, a bug costs this connection, never the broker. False
        when it failed."""
        try:
            work()
        except ProtocolError as exc:
            self.fail(exc)
            return False
        except Exception:
            log.exception("internal error handling client %s; closing it", self.name)
            self.fail(ProtocolError(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error"))
            return False
        return True

    def _read_again(self) -> None:
        """Read the socket again unless something still holds it: packets kept back (a
        suspended CONNECT, the publish rate) or congested subscribers this client feeds."""
        if self.transport is not None and not self.closed and self._stash is None \
                and self._held_by is None and not self.rate_paused and self.blocked_by == 0:
            self.transport.resume_reading()

    @property
    def closed(self) -> bool:
        """The connection is closed (or closing)."""
        return self.state is ConnState.CLOSED

    def _connect_resume(self) -> None:
        """A delayed CONNECT's time has come: handle it and the packets read after it."""
        self._timer = None  # (closing cancels it: we are still awaiting CONNECT)
        stash = self._stash
        if not stash:
            self._stash = None
            return
        # the client has connect_timeout again to finish (MQTT 5 enhanced authentication)
        self._timer = self._loop.call_later(self.broker.config.mqtt.connect_timeout,
                                            self._connect_timeout)
        first, body = stash[0]
        self._stash = stash[1:]  # what came after it, handled once it is done
        self.resume_connect(lambda: self._on_connect(cast(Connect, decode(first, body,
                                                                           self.level))))

    def _unexpected(self, ptype: int) -> None:
        if ptype == _P.CONNECT:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "second CONNECT [MQTT-3.1.0-2]")
        if self.state is ConnState.AWAIT_CONNECT:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                "first packet is not CONNECT [MQTT-3.1.0-1]")
        if ptype == 0:
            raise ProtocolError(ReasonCode.MALFORMED_PACKET, "reserved packet type 0")
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                            f"{PacketType(ptype).name} may not be sent by a client now")

    def _rate_limit(self, size: int) -> bool:
        """Charge a PUBLISH to the client's rate. Over it, stop reading its socket (and the
        packets already read behind this one) until the rate is back under the limit: TCP
        then slows the client down, and nothing is dropped. True when paused."""
        assert self._limiter is not None
        wait = self._limiter.take(size, self._loop.time())
        if wait <= 0 or self.transport is None:
            return False
        self.rate_paused = True
        if self.blocked_by == 0:
            self.transport.pause_reading()
        self._loop.call_later(wait, self._rate_resume)
        return True

    def _rate_resume(self) -> None:
        self.rate_paused = False
        self.last_received = self._loop.time()  # paused by us: not silent
        if self.state is not ConnState.CONNECTED or self._held_by is not None:
            return  # (a held packet goes on when its decision comes)
        stash, self._stash = self._stash, None
        if stash and not self._guarded(lambda: self._process(stash)):
            return
        self._read_again()  # (not when the stash paused it again)

    def pause_writing(self) -> None:
        """The transport's buffer passed write_buffer_limit: this client reads too slowly."""
        self.congested_since = self._loop.time()
        self.broker.congested.add(self)

    def resume_writing(self) -> None:
        """The buffer drained below a quarter of the limit: release the publishers."""
        self.congested_since = 0.0
        self.broker.congested.discard(self)
        self._release_waiters()
        if self.session is not None and self.session.queue and self.state is ConnState.CONNECTED:
            self._pump()

    def check_stalled(self, now: float) -> None:
        """Called by the broker's tick: congested too long, let the publishers go."""
        if self.waiters and now - self.congested_since > SLOW_CONSUMER_GRACE:
            log.warning("client %s is not reading (congested %.0fs): no longer holding "
                        "publishers back; QoS 0 to it is dropped", self.name,
                        now - self.congested_since)
            self._release_waiters()

    def block(self) -> bool:
        """Something this (publishing) client feeds cannot take more now: stop reading its
        socket until every such holder has called :meth:`unblock`. False when it is not
        connected (nothing to stop)."""
        if self.transport is None or self.state is not ConnState.CONNECTED:
            return False
        self.blocked_by += 1
        if self.blocked_by == 1:
            self.transport.pause_reading()
        return True

    def unblock(self) -> None:
        """One holder is drained; read again when none is left."""
        self.blocked_by -= 1
        if self.blocked_by == 0:
            self._read_again()

    def _release_waiters(self) -> None:
        waiters = self.waiters
        self.waiters = None
        if waiters:
            for w in waiters:
                w.unblock()

    def _block_publisher(self, source: ClientConnection | None) -> bool:
        """Congested: make ``source`` (the publisher) wait until we drain. False when we have
        been congested longer than SLOW_CONSUMER_GRACE: then we count as not reading, and
        nobody waits for us any more (QoS 0 to us is dropped, QoS 1/2 queue up to the
        session's bound, and max_write_buffer ends it)."""
        if self._loop.time() - self.congested_since > SLOW_CONSUMER_GRACE:
            self._release_waiters()
            return False
        if source is not None and source is not self:
            waiters = self.waiters
            if waiters is None:
                waiters = self.waiters = set()
            if source not in waiters and source.block():
                waiters.add(source)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not ConnState.CLOSED:
            if exc is not None:
                log.info("client %s connection lost: %s", self.name, exc)
            else:
                log.info("client %s closed the connection", self.name)
            self._closed(publish_will=True)
        self.transport = None

    # -- writing ----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send bytes: the first packet of an event-loop turn goes out at once (latency);
        what follows in the same turn is gathered into one write at the end of it."""
        buf = self._wbuf
        if buf is None:
            self._wbuf = []
            self._loop.call_soon(self._flush)
            self._write([data])
        else:
            buf.append(data)
            if len(buf) >= WRITE_BATCH:
                # one read of a publisher can route 100k messages to us: written in batches,
                # the transport can tell us it is congested before it holds them all
                self._wbuf = []
                self._write(buf)

    def send_durable(self, data: bytes) -> None:
        """Send a packet that reports stored state (PUBACK, PUBREC, PUBREL, PUBCOMP, a QoS 2
        PUBLISH with its packet identifier): with ``sync: commit`` it waits until every change
        made so far is committed, so a crash can never contradict it. Such packets keep their
        order among themselves; others (QoS 0/1 deliveries, SUBACK, PINGRESP) need not wait
        and may pass them: MQTT orders PUBLISH per topic *and QoS* [MQTT-4.6.0-6]."""
        gate = self.gate
        if gate is not None and gate.keep_until_committed(self, data):
            self.uncommitted_bytes += len(data)
            return
        self.send(data)

    def release_committed(self, data: list[bytes]) -> None:
        """What was kept until a commit may go now (see :attr:`gate`)."""
        self.uncommitted_bytes -= sum(map(len, data))
        if self.state is ConnState.CLOSED:
            return
        self._write(data)
        session = self.session
        if session is not None and session.queue and self.state is ConnState.CONNECTED:
            self._pump()

    def _flush(self) -> None:
        buf = self._wbuf
        self._wbuf = None
        if buf:
            self._write(buf)

    def _write(self, buf: list[bytes]) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            data = b"".join(buf) if len(buf) > 1 else buf[0]
            self.metrics.bytes_sent += len(data)
            self.metrics.messages_sent += len(buf)
            t.write(data)
            if t.get_write_buffer_size() > self.broker.config.mqtt.max_write_buffer \
                    and self.state is ConnState.CONNECTED:
                # a client that does not read takes more than its share of memory
                self.fail(ProtocolError(ReasonCode.QUOTA_EXCEEDED,
                                        "client is not reading: write buffer over "
                                        "max_write_buffer"))

    def encode_fitting(self, packet: Packet) -> bytes | None:
        """``packet`` encoded within the client's Maximum Packet Size [MQTT-3.1.2-24]: past it,
        the Reason String and User Properties go first [MQTT-3.2.2-19, MQTT-3.14.2-3, ...];
        None when it still does not fit (it must not be sent at all)."""
        data = encode(packet, self.level)
        limit = self.max_out_packet
        if limit and len(data) > limit:
            props = getattr(packet, "properties", None)
            if props and (Prop.REASON_STRING in props or Prop.USER_PROPERTY in props):
                props.pop(Prop.REASON_STRING, None)
                props.pop(Prop.USER_PROPERTY, None)
                data = encode(packet, self.level)
            if len(data) > limit:
                return None
        return data

    def send_packet(self, packet: Packet, durable: bool = False) -> None:
        """Encode and send one packet (not a PUBLISH: deliveries are sized in _publish_bytes).
        One that cannot fit the client's Maximum Packet Size even without its optional
        properties is not sent [MQTT-3.1.2-24]: the connection closes instead (a client that
        cannot take our CONNACK, SUBACK or DISCONNECT cannot go on)."""
        data = self.encode_fitting(packet)
        if data is None:
            if self.state is not ConnState.CLOSED:
                log.warning("closing client %s: a %d-byte %s does not fit its Maximum Packet "
                            "Size %d [MQTT-3.1.2-24]", self.name, len(encode(packet, self.level)),
                            type(packet).__name__.upper(), self.max_out_packet)
                self.close(publish_will=self.state is ConnState.CONNECTED)
            return
        if durable:
            self.send_durable(data)
        else:
            self.send(data)

    def _reason(self, text: str) -> dict[int, Any]:
        """A Reason String property, when the client did not opt out [MQTT-3.1.2-29]. Rules
        the two versions share are cited by their 3.1.1 numbers where the code is common
        (the decoder, the topic checks); an MQTT 5 client reads 5.0's."""
        if not (self.problem_info and text):
            return {}
        if "[MQTT-" in text:
            text = _V5_RULE.sub(lambda m: _V5_RULES[m.group(0)], text)
        return {Prop.REASON_STRING: text}

    # -- closing ----------------------------------------------------------------------------

    def fail(self, exc: ProtocolError) -> None:
        """The peer broke the protocol (or a limit): say why where the spec lets us, log it,
        close. Before CONNACK the answer is a refusing CONNACK; after it, MQTT 5 clients get
        DISCONNECT with the reason code [MQTT-4.13.1-1]; 3.1.1 clients just see the close."""
        if self.state is ConnState.CLOSED:
            return
        self.metrics.protocol_errors += 1
        log.warning("closing client %s: %s", self.name, exc)
        if self.state in (ConnState.AWAIT_CONNECT, ConnState.AUTHENTICATING):
            if self.level == V5:
                self.send_packet(Connack(False, int(exc.code), self._reason(exc.message)))
            else:
                code = V3_CONNACK_FOR_REASON.get(exc.code)
                if code is not None and exc.code != ReasonCode.SUCCESS:
                    # e.g. [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01, then close
                    self.send(bytes((0x20, 2, 0, code)))
        elif self.level == V5:
            self.send_packet(Disconnect(int(exc.code), self._reason(exc.message)))
        self.close(publish_will=True)

    def disconnect(self, code: ReasonCode, why: str, publish_will: bool) -> None:
        """Close on the broker's initiative (takeover, shutdown), telling a v5 client why."""
        if self.state is ConnState.CLOSED:
            return
        log.info("closing client %s: %s", self.name, why)
        if self.level == V5 and self.state is ConnState.CONNECTED:
            self.send_packet(Disconnect(int(code), self._reason(why)))
        self.close(publish_will)

    def close(self, publish_will: bool) -> None:
        """Close the connection (pending writes are flushed first).

        A lingering close: we send FIN after our last packet (a DISCONNECT or CONNACK saying
        why) and drop whatever the peer still sends until it closes too or LINGER seconds
        pass. Closing at once would answer the peer's in-flight packets with a TCP RST, and
        the reset can destroy our last packet before the peer reads it.
        """
        if self.state is ConnState.CLOSED:
            return
        self.state = ConnState.CLOSED
        self._flush()
        t = self.transport
        if t is not None:
            lingering = self.broker.running and t.can_write_eof()
            if lingering:
                try:
                    t.write_eof()
                except OSError:  # the peer is gone already (reset)
                    lingering = False
            if lingering:
                self._loop.call_later(LINGER, t.close)
            else:
                t.close()
        self._closed(publish_will)

    def _closed(self, publish_will: bool) -> None:
        self.state = ConnState.CLOSED
        self.broker.congested.discard(self)
        self._release_waiters()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.broker.on_connection_closed(self, publish_will)

    def _connect_timeout(self) -> None:
        self._timer = None
        if self.state in (ConnState.AWAIT_CONNECT, ConnState.AUTHENTICATING):
            log.warning("closing client %s: no CONNECT completed within %ss", self.name,
                        self.broker.config.mqtt.connect_timeout)
            self.close(publish_will=False)

    def keepalive_timeout(self) -> None:
        """The broker's keep-alive wheel found this client silent too long ([MQTT-3.1.2-24] in
        3.1.1, [MQTT-3.1.2-22] in 5.0)."""
        if self.rate_paused:  # we stopped reading it: its packets wait in the socket
            self.last_received = self._loop.time()
            self.broker.keepalive.add(self)
            return
        if self.state is ConnState.CONNECTED:
            rule = "MQTT-3.1.2-22" if self.level == V5 else "MQTT-3.1.2-24"
            self.fail(ProtocolError(ReasonCode.KEEP_ALIVE_TIMEOUT,
                                    f"keep-alive timeout ({self.keep_alive}s x 1.5) [{rule}]"))

    # -- CONNECT and enhanced authentication ----------------------------------------------------

    def _on_connect(self, p: Connect) -> None:
        self.level = p.protocol_level
        if p.protocol_level == V5:
            props = p.properties
            self.connect_expiry = props.get(Prop.SESSION_EXPIRY_INTERVAL, 0)
            self.max_out_packet = props.get(Prop.MAXIMUM_PACKET_SIZE, 0)
            self.problem_info = props.get(Prop.REQUEST_PROBLEM_INFORMATION, 1) == 1
            self.alias_out_max = props.get(Prop.TOPIC_ALIAS_MAXIMUM, 0)
            method = props.get(Prop.AUTHENTICATION_METHOD)
            if method is None and Prop.AUTHENTICATION_DATA in props:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                    "Authentication Data without a method [MQTT 3.1.2.11.10]")
            if method is not None:
                exchange = self.broker.enhanced_auth.begin(method, p.client_id, p.username)
                if exchange is None:
                    self.refuse(ReasonCode.BAD_AUTHENTICATION_METHOD,
                                f"unknown authentication method {method!r}")
                    return
                self.auth_method = method
                self._auth = exchange
                self._pending_connect = p
                self._auth_step(props.get(Prop.AUTHENTICATION_DATA))
                return
        self.broker.connect(self, p)

    def _auth_step(self, data: bytes | None) -> None:
        assert self._auth is not None and self.auth_method is not None
        result = self._auth.step(data)
        if result.status is AuthStatus.CONTINUE:
            self.state = ConnState.AUTHENTICATING if self.state is ConnState.AWAIT_CONNECT \
                else self.state
            props: dict[int, Any] = {Prop.AUTHENTICATION_METHOD: self.auth_method}
            if result.data is not None:
                props[Prop.AUTHENTICATION_DATA] = result.data
            self.send_packet(Auth(int(ReasonCode.CONTINUE_AUTHENTICATION), props))
            return
        self._auth = None
        if result.status is AuthStatus.FAILURE:
            if self.state is ConnState.CONNECTED:  # re-authentication failed
                self.fail(ProtocolError(ReasonCode.NOT_AUTHORIZED,
                                        f"re-authentication failed: {result.reason}"))
            else:
                self.broker.login_failed(self)  # slows its address down (abuse.py)
                self.refuse(ReasonCode.BAD_USER_NAME_OR_PASSWORD,
                            f"{self.auth_method} authentication failed: {result.reason}")
            return
        props = {Prop.AUTHENTICATION_METHOD: self.auth_method}
        if result.data is not None:
            props[Prop.AUTHENTICATION_DATA] = result.data
        if self.state is ConnState.CONNECTED:  # re-authentication succeeded [MQTT 4.12.1]
            self.send_packet(Auth(int(ReasonCode.SUCCESS), props))
            return
        p = self._pending_connect
        assert p is not None
        self._pending_connect = None
        if result.username is not None:
            p.username = result.username
        self.broker.connect(self, p, auth_props=props)

    def _on_auth(self, p: Auth) -> None:
        method = p.properties.get(Prop.AUTHENTICATION_METHOD)
        if self.auth_method is None or method != self.auth_method:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                "AUTH with a different or no authentication method "
                                "[MQTT-4.12.0-5]")
        data = p.properties.get(Prop.AUTHENTICATION_DATA)
        if p.reason_code == ReasonCode.REAUTHENTICATE and self.state is ConnState.CONNECTED \
                and self._auth is None:
            exchange = self.broker.enhanced_auth.begin(method, self.client_id or "",
                                                       self.username)
            if exchange is None:
                raise ProtocolError(ReasonCode.BAD_AUTHENTICATION_METHOD, "method gone")
            self._auth = exchange
            self._auth_step(data)
            return
        if p.reason_code != ReasonCode.CONTINUE_AUTHENTICATION or self._auth is None:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"unexpected AUTH reason 0x{p.reason_code:02X}")
        self._auth_step(data)

    def refuse(self, code: ReasonCode, why: str, quiet: bool = False) -> None:
        """Answer CONNECT with a refusal and close [MQTT-3.2.2-5]. ``quiet``: log at DEBUG
        only (a refusal the broker reports once per address, not per connection)."""
        level = logging.DEBUG if quiet else logging.WARNING
        if self.level == V5:
            log.log(level, "refusing client %s: %s (CONNACK 0x%02X)", self.name, why, code)
            self.send_packet(Connack(False, int(code), self._reason(why)))
        else:
            v3 = V3_CONNACK_FOR_REASON.get(code, ConnackCode.SERVER_UNAVAILABLE)
            log.log(level, "refusing client %s: %s (CONNACK 0x%02X)", self.name, why, v3)
            self.send_packet(Connack(False, int(v3)))
        self.metrics.connections_refused += 1
        self.close(publish_will=False)

    def accept(self, client_id: str, session: Session, present: bool, p: Connect,
               props: dict[int, Any]) -> None:
        """CONNACK 0 (with ``props`` for MQTT 5), then resend what was in flight and what
        queued while away."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.client_id = client_id
        self.session = session
        self.username = p.username
        self.will = p.will
        self.state = ConnState.CONNECTED
        self.connected_at = time.time()
        self.reader.max_packet_size = self.broker.config.mqtt.max_packet_size
        self.send_packet(Connack(present, 0, props))  # (the broker checked that it fits)
        if self.closed:
            return
        if self.keep_alive:
            self.broker.keepalive.add(self)
        # [MQTT-4.4.0-1] unacknowledged PUBLISH (DUP=1) and PUBREL are resent, in order
        for out in session.resend():
            self._send_outbound(out, dup=True)
        self._pump()

    # -- PUBLISH in ---------------------------------------------------------------------------

    def _on_publish(self, p: Publish, body: bytes | None = None) -> None:
        session = self.session
        assert session is not None
        qos = p.qos
        props = p.properties
        expires_at = None
        if self.level == V5:
            cfg = self.broker.config.mqtt
            if qos > cfg.max_qos:
                raise ProtocolError(ReasonCode.QOS_NOT_SUPPORTED,
                                    f"PUBLISH QoS {qos} over Maximum QoS {cfg.max_qos} "
                                    "[MQTT-3.2.2-11]")
            if p.retain and not cfg.retain_available:
                raise ProtocolError(ReasonCode.RETAIN_NOT_SUPPORTED,
                                    "PUBLISH with RETAIN, Retain Available is 0 [MQTT-3.2.2-14]")
            if props:
                if Prop.SUBSCRIPTION_IDENTIFIER in props:
                    raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                        "PUBLISH from a client with a Subscription Identifier "
                                        "[MQTT-3.3.4-6]")
                alias = props.get(Prop.TOPIC_ALIAS)
                if alias is not None:
                    p.topic = self._inbound_alias(alias, p.topic)
                mei = props.get(Prop.MESSAGE_EXPIRY_INTERVAL)
                if mei is not None:
                    expires_at = self._loop.time() + mei
                if alias is not None or mei is not None:
                    props = {k: v for k, v in props.items() if k not in _HOP_PROPS}
        validate_topic_name(p.topic)
        levels = self._max_levels  # (n levels take n - 1 "/": a shorter topic cannot have them)
        if len(p.topic) >= levels and p.topic.count("/") >= levels:
            raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID,
                                f"topic name deeper than max_topic_levels {levels}")
        allowed = True
        if self._plugins:  # asked once; an async plugin still deciding: hold the PUBLISH
            answer = self.broker.publish_answer(self, p.topic)
            if not isinstance(answer, bool):
                raise HoldPacket(answer)
            allowed = answer
        m = self.metrics
        m.publish_in[qos] += 1
        if body is not None:
            m.publish_in_bytes[qos] += packet_size(len(body))
        pid = p.packet_id
        if qos == 2:
            assert pid is not None
            if not session.receive_qos2(pid):
                # a resend before PUBREL: acknowledge again, deliver nothing [MQTT-4.3.3-2]
                self.send_durable(bytes((0x50, 2, pid >> 8, pid & 0xFF)))
                return
            if len(session.inbound_qos2) > self.receive_maximum and self.level == V5:
                raise ProtocolError(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                                    f"more than Receive Maximum {self.receive_maximum} QoS 2 "
                                    "PUBLISH unacknowledged [MQTT-3.3.4-9]")
        message = Message(p.topic, p.payload, qos, p.retain, props or None, self.client_id,
                          expires_at)
        if body is not None and self.level != V5:
            # a 3.1/3.1.1 PUBLISH body is already the forwarded wire form: no re-encoding
            message.preset_wire(body, qos)
        code = self.broker.publish_from(self, message, allowed)
        if qos == 1:
            assert pid is not None
            if code and self.level == V5:  # [MQTT-3.4.2] PUBACK with a reason code
                self.send_packet(Puback(pid, code), durable=True)
            elif self.gate is None:
                self.send(bytes((0x40, 2, pid >> 8, pid & 0xFF)))  # [MQTT-4.3.2-2] PUBACK
            else:
                self.send_durable(bytes((0x40, 2, pid >> 8, pid & 0xFF)))
        elif qos == 2:
            assert pid is not None
            if code and self.level == V5:
                if code >= 0x80:  # a refused QoS 2 ends its flow here [MQTT-4.3.3]
                    session.release_qos2(pid)
                self.send_packet(Pubrec(pid, code), durable=True)
            else:
                self.send_durable(bytes((0x50, 2, pid >> 8, pid & 0xFF)))  # [MQTT-4.3.3-2]

    def _inbound_alias(self, alias: int, topic: str) -> str:
        """Resolve or set an inbound Topic Alias [MQTT 3.3.2.3.4]."""
        if alias == 0 or alias > self.alias_in_max:
            raise ProtocolError(ReasonCode.TOPIC_ALIAS_INVALID,
                                f"Topic Alias {alias} outside 1..{self.alias_in_max} "
                                "[MQTT-3.3.2-8/9]")
        if topic:
            if self.alias_in is None:
                self.alias_in = {}
            self.alias_in[alias] = topic
            return topic
        known = self.alias_in.get(alias) if self.alias_in is not None else None
        if known is None:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"empty topic with unknown Topic Alias {alias}")
        return known

    def _on_pubrel(self, p: Pubrel) -> None:
        assert self.session is not None
        # PUBCOMP whether or not the id was known (a resent PUBREL) [MQTT-4.3.3-2]
        found = self.session.release_qos2(p.packet_id)
        if found or self.level != V5:
            self.send_durable(bytes((0x70, 2, p.packet_id >> 8, p.packet_id & 0xFF)))
        else:
            self.send_packet(Pubcomp(p.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
                             durable=True)

    # -- PUBLISH out --------------------------------------------------------------------------

    def deliver(self, message: Message, qos: int, retain: bool,
                identifiers: tuple[int, ...] = (), share: str | None = None,
                source: ClientConnection | None = None) -> None:
        """Send ``message`` to this client at ``qos`` (QoS 1/2 through the session's window;
        anything behind queued messages waits its turn [MQTT-4.6.0-5]). ``source`` is the
        publishing connection, held back while this one is congested."""
        session = self.session
        assert session is not None
        if self.congested_since and not self._block_publisher(source) and qos == 0:
            self.metrics.publish_dropped += 1  # a client that does not read loses QoS 0
            return
        if qos == 0 and self.uncommitted_bytes > self.write_limit:
            # nor may QoS 0 pile up behind a storage commit that does not come (failing disk)
            self.metrics.publish_dropped += 1
            return
        if qos == 0 and not session.queue:
            self._send_qos0(message, retain, identifiers)
            return
        out = session.offer(message, qos, retain, True, identifiers, share)
        if out is not None:
            self._send_outbound(out, dup=False)

    def deliver_retained(self, retained: list[tuple[Message, int, bool, tuple[int, ...]]]) -> None:
        """Retained messages for a new subscription [MQTT-3.3.1-6]: every one is owed, so they
        queue past the session's bounds (QoS 0 too) and go out as fast as the client takes
        them: its window (QoS 1/2) and its socket buffer (all QoS) pace them."""
        session = self.session
        assert session is not None
        # the SUBACK may be waiting for a commit: these do not overtake it (clients are
        # allowed to see them first, but not all of them cope)
        self._after_uncommitted = self.uncommitted_bytes > 0
        try:
            for m, qos, retain, ident in retained:
                out = session.offer(m, qos, retain, True, ident, None, force=True)
                if out is not None:
                    self._send_outbound(out, dup=False)
            self._pump()
        finally:
            self._after_uncommitted = False

    def _publish_bytes(self, message: Message, qos: int, retain: bool, dup: bool, pid: int,
                       identifiers: tuple[int, ...]) -> bytes | None:
        """The PUBLISH as this client must see it; None when expired [MQTT-3.3.2-5] or too
        big for the client's Maximum Packet Size [MQTT-3.1.2-25]."""
        level = self.level
        if level == V5 and (message.expires_at is not None or identifiers or self.alias_out_max):
            props = dict(message.properties) if message.properties else {}
            if message.expires_at is not None:
                left = message.expires_at - self._loop.time()
                if left <= 0:
                    return None
                # the time it has left, rounded up [MQTT-3.3.2-6]
                props[Prop.MESSAGE_EXPIRY_INTERVAL] = int(left) + (left % 1 > 0)
            if identifiers:
                props[Prop.SUBSCRIPTION_IDENTIFIER] = list(identifiers)
            topic = message.topic
            if self.alias_out_max:
                aliases = self.alias_out
                if aliases is None:
                    aliases = self.alias_out = {}
                alias = aliases.get(topic)
                if alias is not None:
                    topic = ""
                elif len(aliases) < self.alias_out_max:
                    alias = aliases[topic] = len(aliases) + 1
                if alias is not None:
                    props[Prop.TOPIC_ALIAS] = alias
            head, tail = encode_publish_parts(topic, message.payload, qos, retain, False, level,
                                              props)
        else:
            head, tail = message.wire(level, qos, retain)
        if dup:
            head = bytes((head[0] | 0x08,)) + head[1:]  # [MQTT-3.3.1-1] DUP on redelivery
        data = head + pid.to_bytes(2, "big") + tail if qos else head + tail
        if self.max_out_packet and len(data) > self.max_out_packet:
            self.metrics.publish_dropped += 1
            log.debug("client %s: %d-byte PUBLISH over its Maximum Packet Size %d, discarded",
                      self.name, len(data), self.max_out_packet)
            return None
        return data

    def _send_qos0(self, message: Message, retain: bool,
                   identifiers: tuple[int, ...] = ()) -> None:
        if self.transport is None:
            self.metrics.publish_dropped += 1
            return
        if self.level != V5:
            head, tail = message.wire(self.level, 0, retain)
            data: bytes | None = head + tail if tail else head
        else:
            data = self._publish_bytes(message, 0, retain, False, 0, identifiers)
        if data is not None:
            m = self.metrics
            m.publish_out[0] += 1
            m.publish_out_bytes[0] += len(data)
            if self._after_uncommitted:
                self.send_durable(data)
            else:
                self.send(data)

    def _send_outbound(self, out: Outbound, dup: bool) -> None:
        pid = out.packet_id
        if out.state is OutState.AWAIT_PUBCOMP:
            self.send_durable(_PUBREL_HEAD + pid.to_bytes(2, "big"))
            return
        message = out.message
        if dup and message.expires_at is not None:
            # in flight already: resent even past its expiry (onward delivery has started)
            message = _unexpiring(message)
        data = self._publish_bytes(message, out.qos, out.retain, dup, pid, out.identifiers)
        if data is None:
            # behave as if it had been delivered [MQTT-3.1.2-25]
            assert self.session is not None
            self.session.complete(pid)
            return
        m = self.metrics
        m.publish_out[out.qos] += 1
        m.publish_out_bytes[out.qos] += len(data)
        if out.qos == 2 or self._after_uncommitted:
            # its packet identifier must be stored first: resent after a crash under another
            # identifier, the client would take it for a new message [MQTT-4.3.3]
            self.send_durable(data)
        else:
            self.send(data)

    def _pump(self) -> None:
        """Send queued messages while the window has room and the socket keeps up (stops
        while congested or while a write buffer's worth waits for a commit; resumed by
        resume_writing, an acknowledgement, or release_committed)."""
        session = self.session
        assert session is not None
        while not self.congested_since and self.uncommitted_bytes < self.write_limit:
            items = session.pump(self._loop.time(), PUMP_BATCH)
            if not items:
                return
            for item in items:
                if isinstance(item, Queued):
                    self._send_qos0(item.message, item.retain, item.identifiers)
                else:
                    self._send_outbound(item, dup=False)
            if len(session.inflight) >= session.max_inflight and \
                    (not session.queue or session.queue[0].qos):
                return
            self._flush()  # lets the transport say it is congested

    def _on_ack(self, p: Puback | Pubrec | Pubcomp) -> None:
        self._ack(p.packet_id, p.type, p.reason_code)

    def _ack(self, pid: int, ptype: PacketType, reason_code: int) -> None:
        session = self.session
        assert session is not None
        # a PUBREC with a failure code: the client refused it, the flow ends here [MQTT-4.3.3]
        result = session.ack(pid, ptype, ptype == _P.PUBREC and reason_code >= 0x80)
        if not result.known:
            log.debug("client %s: %s for unknown packet id %d", self.name, ptype.name, pid)
            if ptype == _P.PUBREC and reason_code < 0x80:
                # we hold no state for it: release the client's state all the same
                self.send_packet(Pubrel(pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
                                        if self.level == V5 else 0))
            return
        if result.send_pubrel:
            self.send_durable(_PUBREL_HEAD + pid.to_bytes(2, "big"))
        elif result.freed and session.queue:  # a slot opened: the next one may go
            out = None
            if not self.congested_since and self.uncommitted_bytes < self.write_limit:
                out = session.start_head()
            if out is not None:
                self._send_outbound(out, dup=False)
            else:
                self._pump()

    # -- SUBSCRIBE / UNSUBSCRIBE / PING / DISCONNECT --------------------------------------------

    def _on_subscribe(self, p: Subscribe) -> None:
        self.broker.subscribe(self, p)

    def _on_unsubscribe(self, p: Unsubscribe) -> None:
        self.broker.unsubscribe(self, p)

    def _on_pingreq(self, p: Packet) -> None:
        self.send(_PINGRESP)

    def _on_disconnect(self, p: Disconnect) -> None:
        if self.state is ConnState.AUTHENTICATING:
            self.close(publish_will=False)
            return
        publish_will = False
        if self.level == V5:
            sei = p.properties.get(Prop.SESSION_EXPIRY_INTERVAL)
            if sei is not None:
                if self.connect_expiry == 0 and sei != 0:
                    raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                        "DISCONNECT sets a Session Expiry Interval after "
                                        "CONNECT gave 0 [MQTT-3.14.2-2]")
                assert self.session is not None
                self.session.expiry_interval = self.broker.cap_session_expiry(sei)
            # only 0x00 discards the will [MQTT-3.1.2-10]; 0x04 asks for it explicitly
            publish_will = p.reason_code != ReasonCode.SUCCESS
        if not publish_will:
            self.will = None  # [MQTT-3.14.4-3] a DISCONNECT discards the will
        log.info("client %s disconnected (reason 0x%02X)", self.name, p.reason_code)
        self.close(publish_will=publish_will)


def _unexpiring(message: Message) -> Message:
    """A copy without expiry, for resending a message whose delivery already started."""
    return Message(message.topic, message.payload, message.qos, message.retain,
                   message.properties, message.sender)


# Packet type -> handler: one table for every connection (bound methods per connection would
# cost ~3 KB each).
_HANDLERS: dict[int, Callable[[ClientConnection, Any], None]] = {
    _P.CONNECT: ClientConnection._on_connect,
    _P.PUBLISH: ClientConnection._on_publish,
    _P.PUBACK: ClientConnection._on_ack,
    _P.PUBREC: ClientConnection._on_ack,
    _P.PUBCOMP: ClientConnection._on_ack,
    _P.PUBREL: ClientConnection._on_pubrel,
    _P.SUBSCRIBE: ClientConnection._on_subscribe,
    _P.UNSUBSCRIBE: ClientConnection._on_unsubscribe,
    _P.PINGREQ: ClientConnection._on_pingreq,
    _P.DISCONNECT: ClientConnection._on_disconnect,
    _P.AUTH: ClientConnection._on_auth,
}
