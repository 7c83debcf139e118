"""One connection: bytes from the transport, packets through the protocol, calls to the broker.

One task-free ``asyncio.Protocol`` per socket. Everything that can go wrong with a peer's bytes
ends in :meth:`ClientConnection.fail`, the one place a :class:`ProtocolError` becomes a CONNACK
return code or a closed socket and a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, cast

from .errors import ProtocolError
from .message import Message
from .protocol.codec import decode, encode
from .protocol.constants import (
    V3_CONNACK_FOR_REASON,
    ConnackCode,
    PacketType,
    ProtocolLevel,
    ReasonCode,
)
from .protocol.flows import OutState
from .protocol.packets import (
    Connack,
    Connect,
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
from .protocol.reader import FrameReader
from .protocol.topics import validate_topic_name
from .session import Outbound, Queued, Session

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("mqttbroker.client")

_PUBREL_HEAD = b"\x62\x02"
_PINGRESP = b"\xd0\x00"


class ConnState(IntEnum):
    """Where a connection stands."""

    AWAIT_CONNECT = 0
    CONNECTED = 1
    CLOSED = 2


_P = PacketType
# What a client may send in each state: everything else is a protocol error. The first packet
# must be CONNECT [MQTT-3.1.0-1]; a second CONNECT is a protocol error [MQTT-3.1.0-2]; packets
# only a server sends (CONNACK, SUBACK, ...) are never accepted from a client.
ALLOWED: dict[ConnState, frozenset[int]] = {
    ConnState.AWAIT_CONNECT: frozenset({_P.CONNECT}),
    ConnState.CONNECTED: frozenset({_P.PUBLISH, _P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP,
                                    _P.SUBSCRIBE, _P.UNSUBSCRIBE, _P.PINGREQ, _P.DISCONNECT,
                                    _P.AUTH}),
    ConnState.CLOSED: frozenset(),
}


def keepalive_expired(now: float, last_received: float, keep_alive: int) -> bool:
    """[MQTT-3.1.2-24] a client silent for one and a half keep-alive periods is gone."""
    return keep_alive > 0 and now - last_received >= 1.5 * keep_alive


class ClientConnection(asyncio.Protocol):
    """Drives one client connection."""

    def __init__(self, broker: Broker, listener: str) -> None:
        self.broker = broker
        self.listener = listener
        self.metrics = broker.metrics
        cfg = broker.config.mqtt
        self.reader = FrameReader(cfg.max_packet_size)
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
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._wbuf: list[bytes] | None = None
        self._handlers: dict[int, Callable[[Packet], None]] = {
            _P.CONNECT: self._on_connect,  # type: ignore[dict-item]
            _P.PUBLISH: self._on_publish,  # type: ignore[dict-item]
            _P.PUBACK: self._on_ack,
            _P.PUBREC: self._on_ack,
            _P.PUBCOMP: self._on_ack,
            _P.PUBREL: self._on_pubrel,  # type: ignore[dict-item]
            _P.SUBSCRIBE: self._on_subscribe,  # type: ignore[dict-item]
            _P.UNSUBSCRIBE: self._on_unsubscribe,  # type: ignore[dict-item]
            _P.PINGREQ: self._on_pingreq,
            _P.DISCONNECT: self._on_disconnect,
            _P.AUTH: self._on_auth,
        }

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
        if not self.broker.admit(self):
            self.state = ConnState.CLOSED
            self.transport.abort()
            return
        # A socket that never sends CONNECT is closed after connect_timeout.
        self._timer = self._loop.call_later(self.broker.config.mqtt.connect_timeout,
                                            self._connect_timeout)

    def data_received(self, data: bytes) -> None:
        if self.state is ConnState.CLOSED:
            return
        self.last_received = self._loop.time()
        self.metrics.bytes_received += len(data)
        try:
            for first, body in self.reader.feed(data):
                if self.state is ConnState.CLOSED:  # type: ignore[comparison-overlap]
                    return  # a previous packet in this read closed the connection
                self.metrics.messages_received += 1
                ptype = first >> 4
                if ptype not in ALLOWED[self.state]:
                    if ptype == _P.CONNECT:
                        raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                            "second CONNECT [MQTT-3.1.0-2]")
                    if self.state is ConnState.AWAIT_CONNECT:
                        raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                            "first packet is not CONNECT [MQTT-3.1.0-1]")
                    raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                        f"packet type {ptype} may not be sent by a client")
                self._handlers[ptype](decode(first, body, self.level))
        except ProtocolError as exc:
            self.fail(exc)
        except Exception:  # a bug must cost one connection, never the broker
            log.exception("internal error handling client %s; closing it", self.name)
            self.close(publish_will=True)

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
        """Queue bytes; everything queued in one event-loop turn goes out in one write."""
        buf = self._wbuf
        if buf is None:
            self._wbuf = [data]
            self._loop.call_soon(self._flush)
        else:
            buf.append(data)

    def _flush(self) -> None:
        buf = self._wbuf
        self._wbuf = None
        if buf and self.transport is not None and not self.transport.is_closing():
            data = b"".join(buf) if len(buf) > 1 else buf[0]
            self.metrics.bytes_sent += len(data)
            self.metrics.messages_sent += len(buf)
            self.transport.write(data)

    def send_packet(self, packet: Packet) -> None:
        """Encode and send one packet."""
        self.send(encode(packet, self.level))

    # -- closing ----------------------------------------------------------------------------

    def fail(self, exc: ProtocolError) -> None:
        """The peer broke the protocol: say so where the spec lets us, log it, close."""
        self.metrics.protocol_errors += 1
        log.warning("closing client %s: %s", self.name, exc)
        if self.state is ConnState.AWAIT_CONNECT:
            code = V3_CONNACK_FOR_REASON.get(exc.code)
            if code is not None and exc.code != ReasonCode.SUCCESS:
                # e.g. [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01, then close
                self.send(bytes((0x20, 2, 0, code)))
        self.close(publish_will=True)

    def close(self, publish_will: bool) -> None:
        """Close the connection (pending writes are flushed first)."""
        if self.state is ConnState.CLOSED:
            return
        self._flush()
        if self.transport is not None:
            self.transport.close()
        self._closed(publish_will)

    def _closed(self, publish_will: bool) -> None:
        self.state = ConnState.CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.broker.on_connection_closed(self, publish_will)

    def _connect_timeout(self) -> None:
        self._timer = None
        if self.state is ConnState.AWAIT_CONNECT:
            log.warning("closing client %s: no CONNECT within %ss", self.name,
                        self.broker.config.mqtt.connect_timeout)
            self.close(publish_will=False)

    def _keepalive_check(self) -> None:
        self._timer = None
        if self.state is not ConnState.CONNECTED:
            return
        now = self._loop.time()
        if keepalive_expired(now, self.last_received, self.keep_alive):
            log.warning("closing client %s: keep-alive timeout (%ss x 1.5) [MQTT-3.1.2-24]",
                        self.name, self.keep_alive)
            self.close(publish_will=True)
        else:
            self._arm_keepalive(self.last_received + 1.5 * self.keep_alive - now)

    def _arm_keepalive(self, delay: float) -> None:
        self._timer = self._loop.call_later(max(delay, 0.01), self._keepalive_check)

    # -- CONNECT ----------------------------------------------------------------------------

    def _on_connect(self, p: Connect) -> None:
        self.level = p.protocol_level
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.broker.connect(self, p)

    def refuse(self, code: ReasonCode, why: str) -> None:
        """Answer CONNECT with a refusal and close [MQTT-3.2.2-5]."""
        v3 = V3_CONNACK_FOR_REASON.get(code, ConnackCode.SERVER_UNAVAILABLE)
        log.warning("refusing client %s: %s (CONNACK 0x%02X)", self.name, why, v3)
        self.metrics.connections_refused += 1
        self.send_packet(Connack(False, int(v3)))
        self.close(publish_will=False)

    def accept(self, client_id: str, session: Session, present: bool, p: Connect) -> None:
        """CONNACK 0, then resend what was in flight and what queued while away."""
        self.client_id = client_id
        self.session = session
        self.username = p.username
        self.will = p.will
        self.keep_alive = p.keep_alive
        self.state = ConnState.CONNECTED
        self.send_packet(Connack(present, 0))
        if self.keep_alive:
            self._arm_keepalive(1.5 * self.keep_alive)
        # [MQTT-4.4.0-1] unacknowledged PUBLISH (DUP=1) and PUBREL are resent, in order
        for out in session.resend():
            self._send_outbound(out, dup=True)
        self._pump()

    # -- PUBLISH in ---------------------------------------------------------------------------

    def _on_publish(self, p: Publish) -> None:
        self.metrics.publish_received += 1
        validate_topic_name(p.topic)
        session = self.session
        assert session is not None
        qos = p.qos
        if qos == 2 and not session.receive_qos2(p.packet_id):  # type: ignore[arg-type]
            # a resend before PUBREL: acknowledge again, deliver nothing [MQTT-4.3.3-2]
            self.send(bytes((0x50, 2, p.packet_id >> 8, p.packet_id & 0xFF)))  # type: ignore
            return
        self.broker.publish_from(self, Message(p.topic, p.payload, qos, p.retain,
                                               p.properties or None, self.client_id))
        if qos == 1:
            pid = p.packet_id
            assert pid is not None
            self.send(bytes((0x40, 2, pid >> 8, pid & 0xFF)))  # [MQTT-4.3.2-2] PUBACK
        elif qos == 2:
            pid = p.packet_id
            assert pid is not None
            self.send(bytes((0x50, 2, pid >> 8, pid & 0xFF)))  # [MQTT-4.3.3-2] PUBREC

    def _on_pubrel(self, p: Pubrel) -> None:
        assert self.session is not None
        # [MQTT-4.3.3-2] PUBCOMP whether or not the id was known (a resent PUBREL)
        self.session.release_qos2(p.packet_id)
        self.send_packet(Pubcomp(p.packet_id))

    # -- PUBLISH out --------------------------------------------------------------------------

    def deliver(self, message: Message, qos: int, retain: bool) -> None:
        """Send ``message`` to this client at ``qos`` (QoS 1/2 through the session's window;
        anything behind queued messages waits its turn [MQTT-4.6.0-5])."""
        session = self.session
        assert session is not None
        if qos == 0 and not session.queue:
            self._send_qos0(message, retain)
            return
        out = session.offer(message, qos, retain, online=True)
        if out is not None:
            self._send_outbound(out, dup=False)

    def _send_qos0(self, message: Message, retain: bool) -> None:
        t = self.transport
        if t is None or t.get_write_buffer_size() > self.write_limit:
            # a reader that does not keep up loses QoS 0, never the broker's memory
            self.metrics.publish_dropped += 1
            return
        head, tail = message.wire(self.level, 0, retain)
        self.metrics.publish_sent += 1
        self.send(head + tail)

    def _send_outbound(self, out: Outbound, dup: bool) -> None:
        pid = out.packet_id
        if out.state is OutState.AWAIT_PUBCOMP:
            self.send(_PUBREL_HEAD + pid.to_bytes(2, "big"))
            return
        head, tail = out.message.wire(self.level, out.qos, out.retain)
        if dup:
            head = bytes((head[0] | 0x08,)) + head[1:]  # [MQTT-3.3.1-1] DUP on redelivery
        self.metrics.publish_sent += 1
        self.send(head + pid.to_bytes(2, "big") + tail)

    def _pump(self) -> None:
        assert self.session is not None
        for item in self.session.pump():
            if isinstance(item, Queued):
                self._send_qos0(item.message, item.retain)
            else:
                self._send_outbound(item, dup=False)

    def _on_ack(self, p: Packet) -> None:
        assert isinstance(p, (Puback, Pubrec, Pubcomp)) and self.session is not None
        result = self.session.ack(p.packet_id, p.type)
        if not result.known:
            log.debug("client %s: %s for unknown packet id %d", self.name, p.type.name,
                      p.packet_id)
            if p.type == _P.PUBREC:
                # we hold no state for it: release the client's state all the same
                self.send_packet(Pubrel(p.packet_id))
            return
        if result.send_pubrel:
            self.send(_PUBREL_HEAD + p.packet_id.to_bytes(2, "big"))
        elif result.freed and self.session.queue:  # a slot opened: the next one may go
            self._pump()

    # -- SUBSCRIBE / UNSUBSCRIBE / PING / DISCONNECT --------------------------------------------

    def _on_subscribe(self, p: Subscribe) -> None:
        self.broker.subscribe(self, p)

    def _on_unsubscribe(self, p: Unsubscribe) -> None:
        self.broker.unsubscribe(self, p)

    def _on_pingreq(self, p: Packet) -> None:
        self.send(_PINGRESP)

    def _on_disconnect(self, p: Packet) -> None:
        # [MQTT-3.14.4-3] a DISCONNECT discards the will
        self.will = None
        log.info("client %s disconnected", self.name)
        self.close(publish_will=False)

    def _on_auth(self, p: Packet) -> None:
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "AUTH without an authentication method")
