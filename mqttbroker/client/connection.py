"""One connection: bytes from the transport, packets through the protocol, calls to the broker.

The reading half (this module) over the writing half (``output.py``) over the sans-I/O
protocol state (``protocol/connection.py``). One task-free ``asyncio.Protocol`` per socket. Everything that can go wrong with a peer's bytes
ends in :meth:`ClientConnection.fail`, the one place a :class:`ProtocolError` becomes a CONNACK
(before the session exists), a DISCONNECT with its reason code (MQTT 5), or a closed socket, with
one log line naming the client and the rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, cast

from ..core.hooks import ConnectionHost, HoldPacket
from ..enhanced_auth import AuthExchange, AuthStatus
from ..errors import ProtocolError
from ..message import Message
from ..metrics import packet_size
from ..protocol.codec import decode
from ..protocol.connection import ALLOWED, ConnState, ServerConnection
from ..protocol.constants import PacketType, ProtocolLevel, ReasonCode
from ..protocol.packets import (
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
from ..protocol.properties import PropertyId as Prop
from ..protocol.topics import validate_topic_name
from ..ratelimit import PublishLimiter
from ..session import Session
from .output import Output

log: Final = logging.getLogger("mqttbroker.client")

V5: Final[int] = ProtocolLevel.MQTT_5
LINGER: Final = 2.0  # seconds a closed connection's socket keeps draining the peer's bytes
_PINGRESP: Final = b"\xd0\x00"
# a 3.x CONNACK accepting the connection: four fixed bytes, Session Present set for 3.1.1
# only (3.1's first byte is reserved, 0) [MQTT-3.2.2]; 5.0's carries properties: encoded
_CONNACK_3: Final = b"\x20\x02\x00\x00"
_CONNACK_3_PRESENT: Final = b"\x20\x02\x01\x00"
_P = PacketType
# the packet types _process compares every frame with, as ints (compiled: machine-int compares)
_CONNECT: Final[int] = PacketType.CONNECT
_PUBLISH: Final[int] = PacketType.PUBLISH


class ClientConnection(Output, asyncio.Protocol):
    """Drives one client connection over asyncio: the protocol state is its
    :class:`ServerConnection` half (sans-I/O); this half moves bytes, batches writes,
    applies backpressure and hands decisions to the broker.

    Slotted, with a class-level dispatch table and no per-connection timer once connected
    (keep-alive is the broker's wheel): an idle connection costs little memory.
    """

    __slots__ = (
        "_auth",
        "_held_by",
        "_limiter",
        "_pending_connect",
        "_plugins",
        "_stash",
        "_timer",
        "admitted",
        "auth_method",
        "blocked_by",
        "client_id",
        "connected_at",
        "listener",
        "peer",
        "rate_paused",
        "username",
        "will",
    )

    def __init__(self, broker: ConnectionHost[ClientConnection], listener: str,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``loop``: the running loop, when the caller has it at hand (asking asyncio for it
        costs a getpid() call per connection)."""
        self.broker = broker
        self.listener = listener
        self.metrics = broker.metrics
        config = broker.config
        cfg = config.mqtt
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        ServerConnection.__init__(self, broker.limits, self._loop.time())
        self.write_limit = cfg.write_buffer_limit
        self.client_id: str | None = None
        self.username: str | None = None
        self.session = None
        self.will: Will | None = None
        self.transport = None
        self.peer = "?"
        # backpressure: while our socket buffer is over write_buffer_limit we are congested,
        # and publishers feeding us wait (paused reads) until it drains
        self.congested_since = 0.0
        self.waiters = None
        self.blocked_by = 0  # congested subscribers this (publishing) connection waits for
        self.auth_method: str | None = None
        self._auth: AuthExchange | None = None
        self._pending_connect: Connect | None = None
        self._timer: asyncio.TimerHandle | None = None  # a delayed CONNECT's resumption
        self._wbuf = None
        # persistence with sync: commit holds what we send until the changes before it are
        # committed (see SqliteStorage.keep_until_committed); None when nothing is kept
        storage = broker.storage
        self.gate = storage if storage is not None and storage.gates_output else None
        self.uncommitted_bytes = 0
        self._after_uncommitted = False  # sending what must not overtake an uncommitted SUBACK
        self._slot_freed = False  # (see Output._ack)
        self.admitted: bool | None = None  # False: over a connection limit, refused at CONNECT
        self._limiter = PublishLimiter(cfg.max_publish_rate, cfg.max_publish_bytes_rate,
                                       self._loop.time()) if cfg.max_publish_rate or \
            cfg.max_publish_bytes_rate else None
        self.rate_paused = False
        self._held_by: asyncio.Future[Any] | None = None  # a plugin decision it waits for
        self._plugins = bool(config.plugins)
        self._stash: list[tuple[int, bytes]] | None = None  # packets read, held by the rate
        self.connected_at: float | None = None  # wall clock at CONNACK (the admin API's)

    def __repr__(self) -> str:
        return f"<client {self.client_id or '-'} {self.peer}>"

    def __str__(self) -> str:
        # (log lines pass the connection itself: its name is made only if the line is written)
        return self.name

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
        # (last_received: the loop's time when this connection was made, from __init__)
        self.transport.set_write_buffer_limits(self.write_limit, self.write_limit // 4)
        admitted = self.broker.admit(self)
        if admitted is None:
            self.ended()
            self.transport.abort()
            return
        self.admitted = admitted
        # A socket that never completes CONNECT is closed after connect_timeout (one over a
        # connection limit, kept only to be told so, gets less).
        timeout = self.broker.config.mqtt.connect_timeout
        self._await_connect(timeout if admitted else min(timeout, 2.0))

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
            frames = self.receive_data(data, self._loop.time())
            if frames:
                if self._stash is not None:  # still paused by the publish rate: queue up
                    self._stash.extend(frames)
                else:
                    self._process(frames)
        except ProtocolError as exc:
            self.fail(exc)
        except Exception:  # a bug must cost one connection, never the broker
            log.exception("internal error handling client %s; closing it", self.name)
            self.fail(ProtocolError(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error"))

    def _process(self, frames: list[tuple[int, bytes]]) -> None:
        """Handle complete packets in order; over the publish rate, keep the rest for later."""
        it = iter(frames)
        for first, body in it:
            if self.state is ConnState.CLOSED:
                return  # a previous packet in this read closed the connection
            self.metrics.messages_received += 1
            ptype = first >> 4
            if ptype == _CONNECT or ptype not in ALLOWED[self.state]:
                self.check_type(first, body)  # refuses, or reads a CONNECT's level
            if ptype == _CONNECT and self.broker.login_failures is not None \
                    and self._delay_connect(first, body, it):
                break
            try:
                if ptype == _PUBLISH:  # the hot path, with the frame for reuse
                    self._on_publish(cast(Publish, decode(first, body, self.level)), body)
                    if self._limiter is not None and self._rate_limit(len(body)):
                        self._stash = list(it)
                        break
                elif first == 0x40 and len(body) == 2:  # a plain PUBACK: no packet object
                    self._ack(int.from_bytes(body, "big"), PacketType.PUBACK, 0)
                else:
                    _HANDLERS[ptype](self, decode(first, body, self.level))
                    if self._stash is not None and ptype == _CONNECT:
                        self._stash.extend(it)  # the broker suspended the CONNECT: keep the rest
                        break
            except HoldPacket as hold:  # a plugin's decision is on its way (nothing done yet)
                self._hold(hold.until, [(first, body), *it])
                break
        if self._slot_freed:  # acknowledgements freed slots: work waiting in shared groups
            self._slot_freed = False
            self.slot_free()
        if self._wbuf:
            # our own answers (acks, the next messages a PUBACK let through) go now, not
            # after every other connection's work in this loop turn
            self.flush()

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
        self.broker.connect_deadlines.cancel(self)  # the delay replaces connect_timeout
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
            self.flush()
        self._read_again()

    def suspend_connect(self) -> None:
        """The broker needs time to finish this CONNECT (a cluster claims the client id, a
        plugin decides): keep the packets read after it, read no more, until
        :meth:`resume_connect`. connect_timeout stops counting: the CONNECT has come, and
        what the broker waits for is bounded on its side (claim and plugin timeouts)."""
        self.broker.connect_deadlines.cancel(self)
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
                self.flush()
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

    def _connect_resume(self) -> None:
        """A delayed CONNECT's time has come: handle it and the packets read after it."""
        self._timer = None  # (closing cancels it: we are still awaiting CONNECT)
        stash = self._stash
        if not stash:
            self._stash = None
            return
        # the client has connect_timeout again to finish (MQTT 5 enhanced authentication)
        self._await_connect(self.broker.config.mqtt.connect_timeout)
        first, body = stash[0]
        self._stash = stash[1:]  # what came after it, handled once it is done
        self.resume_connect(lambda: self._on_connect(cast(Connect, decode(first, body,
                                                                           self.level))))

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

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state is not ConnState.CLOSED:
            if exc is not None:
                log.info("client %s connection lost: %s", self, exc)
            else:
                log.info("client %s closed the connection", self)
            self._closed(publish_will=True)
        self.transport = None

    # -- closing ----------------------------------------------------------------------------

    def fail(self, exc: ProtocolError) -> None:
        """The peer broke the protocol (or a limit): say why where the spec lets us, log it,
        close. Before CONNACK the answer is a refusing CONNACK; after it, MQTT 5 clients get
        DISCONNECT with the reason code [MQTT-4.13.1-1]; 3.1.1 clients just see the close."""
        if self.state is ConnState.CLOSED:
            return
        self.metrics.protocol_errors += 1
        log.warning("closing client %s: %s", self.name, exc)
        answer = self.error_packet(exc)
        if isinstance(answer, bytes):
            self.send(answer)
        elif answer is not None:
            self.send_packet(answer)
        self.close(publish_will=True)

    def disconnect(self, code: ReasonCode, why: str, publish_will: bool) -> None:
        """Close on the broker's initiative (takeover, shutdown), telling a v5 client why."""
        if self.state is ConnState.CLOSED:
            return
        log.info("closing client %s: %s", self, why)
        answer = self.server_disconnect(code, why)
        if answer is not None:
            self.send_packet(answer)
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
        self.ended()
        self.flush()
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
        self.ended()
        self.broker.congested.discard(self)
        self._release_waiters()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.broker.connect_deadlines.cancel(self)
        self.broker.on_connection_closed(self, publish_will)

    def _await_connect(self, seconds: float) -> None:
        """Close this connection unless its CONNECT completes within ``seconds``: a deadline
        the broker checks with its keep-alive wheel, four times a second (no timer handle of
        its own to make and cancel for every connection)."""
        self.broker.connect_deadlines.set(self, self._loop.time() + seconds)

    def connect_timeout(self) -> None:
        """The broker found this connection's connect deadline passed (:meth:`_await_connect`)."""
        if self.before_connack and not self.closed:
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
            self.fail(self.keepalive_error())

    # -- CONNECT and enhanced authentication ----------------------------------------------------

    def _on_connect(self, p: Connect) -> None:
        method = self.receive_connect(p)
        if method is not None:
            exchange = self.broker.enhanced_auth.begin(method, p.client_id, p.username)
            if exchange is None:
                self.refuse(ReasonCode.BAD_AUTHENTICATION_METHOD,
                            f"unknown authentication method {method!r}")
                return
            self.auth_method = method
            self._auth = exchange
            self._pending_connect = p
            self._auth_step(p.properties.get(Prop.AUTHENTICATION_DATA))
            return
        self.broker.connect(self, p)

    def _auth_step(self, data: bytes | None) -> None:
        assert self._auth is not None and self.auth_method is not None
        result = self._auth.step(data)
        if result.status is AuthStatus.CONTINUE:
            self.send_packet(self.challenge(self.auth_method, result.data))
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
        props = self.auth_success(self.auth_method, result.data)
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
        method = self.auth_method
        if self.receive_auth(p, method, self._auth is not None):  # re-authentication
            assert method is not None
            exchange = self.broker.enhanced_auth.begin(method, self.client_id or "",
                                                       self.username)
            if exchange is None:
                raise ProtocolError(ReasonCode.BAD_AUTHENTICATION_METHOD, "method gone")
            self._auth = exchange
        self._auth_step(p.properties.get(Prop.AUTHENTICATION_DATA))

    def refuse(self, code: ReasonCode, why: str, quiet: bool = False) -> None:
        """Answer CONNECT with a refusal and close [MQTT-3.2.2-5]. ``quiet``: log at DEBUG
        only (a refusal the broker reports once per address, not per connection)."""
        connack = self.refusal(code, why)
        log.log(logging.DEBUG if quiet else logging.WARNING, "refusing client %s: %s "
                "(CONNACK 0x%02X)", self.name, why, connack.return_code)
        self.send_packet(connack)
        self.metrics.connections_refused += 1
        self.close(publish_will=False)

    def accept(self, client_id: str, session: Session, present: bool, p: Connect,
               props: dict[int, Any]) -> None:
        """CONNACK 0 (with ``props`` for MQTT 5), then resend what was in flight and what
        queued while away."""
        self.broker.connect_deadlines.cancel(self)
        self.client_id = client_id
        self.session = session
        self.username = p.username
        self.will = p.will
        self.accepted()
        self.connected_at = time.time()
        if self.level == V5:
            self.send_packet(Connack(present, 0, props))  # (the broker checked that it fits)
            if self.closed:
                return
        else:
            self.send(_CONNACK_3_PRESENT if present and self.level == ProtocolLevel.MQTT_3_1_1
                      else _CONNACK_3)
        if self.keep_alive:
            self.broker.keepalive.add(self)
        # [MQTT-4.4.0-1] unacknowledged PUBLISH (DUP=1) and PUBREL are resent, in order
        if session.inflight:  # (a new session has nothing in flight)
            for out in session.resend():
                self._send_outbound(out, dup=True)
        self._pump()
        self.slot_free()  # room left: work queued at other members of its groups

    # -- what a protocol carrying this connection needs (core/hooks.CarriedConnection) ------------

    def replace_will(self, will: Will | None) -> None:
        """A new will for the rest of the connection (MQTT-SN's WILLTOPICUPD/WILLMSGUPD)."""
        if self.state is ConnState.CONNECTED:
            self.broker.replace_will(self, will)

    def queued_messages(self) -> int:
        """Messages its session holds back beyond the in-flight window."""
        return len(self.session.queue) if self.session is not None else 0

    # -- PUBLISH in ---------------------------------------------------------------------------

    def _on_publish(self, p: Publish, body: bytes | None = None) -> None:
        session = self.session
        assert session is not None
        qos = p.qos
        if self.level == V5:
            # (its Message Expiry counts from when its bytes arrived: receive_data's now)
            props, expires_at = self.receive_publish(p, self.last_received)
        else:  # 3.1/3.1.1 have no properties: receive_publish's topic check, one call less
            validate_topic_name(p.topic, self.max_levels)
            props, expires_at = p.properties, None
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
            self.check_receive_maximum(len(session.inbound_qos2))
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

    def _on_pubrel(self, p: Pubrel) -> None:
        assert self.session is not None
        # PUBCOMP whether or not the id was known (a resent PUBREL) [MQTT-4.3.3-2]
        found = self.session.release_qos2(p.packet_id)
        if found or self.level != V5:
            self.send_durable(bytes((0x70, 2, p.packet_id >> 8, p.packet_id & 0xFF)))
        else:
            self.send_packet(Pubcomp(p.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
                             durable=True)

    def _on_ack(self, p: Puback | Pubrec | Pubcomp) -> None:
        self._ack(p.packet_id, p.type, p.reason_code)

    # -- SUBSCRIBE / UNSUBSCRIBE / PING / DISCONNECT --------------------------------------------

    def _on_subscribe(self, p: Subscribe) -> None:
        self.broker.subscribe(self, p)
        self.slot_free()  # a new member takes work already waiting in its groups

    def _on_unsubscribe(self, p: Unsubscribe) -> None:
        self.broker.unsubscribe(self, p)

    def _on_pingreq(self, p: Packet) -> None:
        self.send(_PINGRESP)

    def _on_disconnect(self, p: Disconnect) -> None:
        if self.state is ConnState.AUTHENTICATING:
            self.close(publish_will=False)
            return
        publish_will, sei = self.receive_disconnect(p)
        if sei is not None:
            assert self.session is not None
            self.session.expiry_interval = self.broker.cap_session_expiry(sei)
        if not publish_will:
            self.will = None  # [MQTT-3.14.4-3] a DISCONNECT discards the will
        log.info("client %s disconnected (reason 0x%02X)", self, p.reason_code)
        self.close(publish_will=publish_will)


# Packet type -> handler: one table for every connection (bound methods per connection would
# cost ~3 KB each).
_HANDLERS: Final[dict[int, Callable[[ClientConnection, Any], None]]] = {
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
