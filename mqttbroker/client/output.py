"""The sending half of a client connection: write batching, the commit gate, backpressure, and
deliveries (QoS 1/2 through the session's window, each PUBLISH in the form this client takes).

:class:`Output` sits between the sans-I/O protocol state (:class:`ServerConnection`) and the
asyncio connection (``connection.py``): it writes to the transport, never reads it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from ..core.hooks import Blockable, ConnectionHost
from ..errors import ProtocolError
from ..message import Message
from ..metrics import Metrics
from ..persistence.base import Storage
from ..protocol.codec import encode
from ..protocol.connection import ConnState, ServerConnection
from ..protocol.constants import PacketType, ProtocolLevel, ReasonCode
from ..protocol.flows import OutState
from ..protocol.packets import Packet, Pubrel
from ..session import Outbound, Queued, Session

log: Final = logging.getLogger("mqttbroker.client")

V5: Final[int] = ProtocolLevel.MQTT_5
SLOW_CONSUMER_GRACE: Final = 5.0  # seconds a congested client may hold publishers back
PUMP_BATCH: Final = 256  # queued messages sent between checks of the socket's buffer
WRITE_BATCH: Final = 256  # packets gathered into one transport write at most
_PUBREL_HEAD: Final = b"\x62\x02"
_PUBREC: Final[int] = PacketType.PUBREC  # (an int: compared with every ack's type)


class Output(ServerConnection):
    """Writes: packets batched per event-loop turn, held for a storage commit when they report
    stored state, paced by the transport's buffer; deliveries through the session."""

    __slots__ = (
        "_after_uncommitted",
        "_loop",
        "_slot_freed",
        "_wbuf",
        "broker",
        "congested_since",
        "gate",
        "metrics",
        "session",
        "transport",
        "uncommitted_bytes",
        "waiters",
        "write_limit",
    )

    broker: ConnectionHost[Any]
    metrics: Metrics
    transport: asyncio.Transport | None
    session: Session | None
    _loop: asyncio.AbstractEventLoop
    _wbuf: list[bytes] | None
    write_limit: int
    # persistence with sync: commit holds what we send until the changes before it are
    # committed (see SqliteStorage.keep_until_committed); None when nothing is kept
    gate: Storage | None
    uncommitted_bytes: int
    _after_uncommitted: bool  # sending what must not overtake an uncommitted SUBACK
    # an acknowledgement freed a slot of a session with shared subscriptions and nothing
    # queued: once the packets of this read are handled, it may take work (slot_free)
    _slot_freed: bool
    # backpressure: while our socket buffer is over write_buffer_limit we are congested,
    # and publishers feeding us wait (paused reads) until it drains
    congested_since: float
    waiters: set[Blockable] | None

    # what the connection above defines
    @property
    def name(self) -> str:
        """How log lines name this client."""
        raise NotImplementedError

    def fail(self, exc: ProtocolError) -> None:
        """The peer broke the protocol (or a limit): say why, close."""
        raise NotImplementedError

    def close(self, publish_will: bool) -> None:
        """Close the connection (pending writes are flushed first)."""
        raise NotImplementedError

    def block(self) -> bool:
        """Stop reading this (publishing) client until :meth:`unblock`."""
        raise NotImplementedError

    def unblock(self) -> None:
        """One holder is drained."""
        raise NotImplementedError

    # -- writing ----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send bytes: the first packet of an event-loop turn goes out at once (latency);
        what follows in the same turn is gathered into one write at the end of it."""
        buf = self._wbuf
        if buf is None:
            self._wbuf = []
            self.broker.end_of_turn.add(self)  # (flush() then)
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

    def flush(self) -> None:
        """Write what this turn gathered (the broker's end_of_turn calls it)."""
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

    # -- backpressure ---------------------------------------------------------------------------

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

    def _release_waiters(self) -> None:
        waiters = self.waiters
        self.waiters = None
        if waiters:
            for w in waiters:
                w.unblock()

    def _block_publisher(self, source: Blockable | None) -> bool:
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

    # -- PUBLISH out --------------------------------------------------------------------------

    def deliver(self, message: Message, qos: int, retain: bool,
                identifiers: tuple[int, ...] = (), share: str | None = None,
                source: Blockable | None = None) -> None:
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
        # (needs_own_publish, inline: once per delivery)
        if self.level == V5 and (message.expires_at is not None or identifiers
                                 or self.alias_out_max):
            parts = self.publish_parts(message.topic, message.payload, qos, retain,
                                       message.properties, message.expires_at, identifiers,
                                       self._loop.time())
            if parts is None:
                return None
            head, tail = parts
        else:
            head, tail = message.wire(self.level, qos, retain)
        data = self.frame_publish(head, tail, qos, dup, pid)
        if data is None:  # over the client's Maximum Packet Size [MQTT-3.1.2-25]
            self.metrics.publish_dropped += 1
            log.debug("client %s: PUBLISH over its Maximum Packet Size %d, discarded",
                      self.name, self.max_out_packet)
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
            self.flush()  # lets the transport say it is congested

    def _ack(self, pid: int, ptype: PacketType, reason_code: int) -> None:
        session = self.session
        assert session is not None
        # a PUBREC with a failure code: the client refused it, the flow ends here [MQTT-4.3.3]
        result = session.ack(pid, ptype, ptype == _PUBREC and reason_code >= 0x80)
        if not result.known:
            log.debug("client %s: %s for unknown packet id %d", self.name, ptype.name, pid)
            if ptype == _PUBREC and reason_code < 0x80:
                # we hold no state for it: release the client's state all the same
                self.send_packet(Pubrel(pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
                                        if self.level == V5 else 0))
            return
        if result.send_pubrel:
            self.send_durable(_PUBREL_HEAD + pid.to_bytes(2, "big"))
        elif result.freed:
            if session.queue:  # a slot opened: the next one may go
                out = None
                if not self.congested_since and self.uncommitted_bytes < self.write_limit:
                    out = session.start_head()
                if out is not None:
                    self._send_outbound(out, dup=False)
                else:
                    self._pump()
            elif session.subscriptions.shared:  # (one test for a session without any)
                self._slot_freed = True  # after this read's packets: one look for many acks

    def slot_free(self) -> None:
        """A slot is free and nothing of this session's own waits: with shared subscriptions
        it may take what waits at other members of its groups (fair dispatch, the broker's
        Dispatcher.steal). Not while the socket or a storage commit holds back what we send
        (nobody should wait behind a client that cannot take more); what it takes does not
        overtake an uncommitted SUBACK (as deliver_retained). Nothing to do for a session
        without shared subscriptions or with messages of its own queued."""
        session = self.session
        if session is None or not session.subscriptions.shared or session.queue \
                or self.congested_since or self.uncommitted_bytes >= self.write_limit \
                or self.state is not ConnState.CONNECTED:
            return
        self._after_uncommitted = self.uncommitted_bytes > 0
        try:
            self.broker.slot_free(self)
        finally:
            self._after_uncommitted = False


def _unexpiring(message: Message) -> Message:
    """A copy without expiry, for resending a message whose delivery already started."""
    return Message(message.topic, message.payload, message.qos, message.retain,
                   message.properties, message.sender)
