"""The client side of an MQTT connection, without I/O: what a bridge speaks to a remote broker.

The counterpart of :class:`~mqttbroker.protocol.connection.ServerConnection`: bytes and ``now``
in, events and bytes out, no socket, no clock, no timer. :meth:`ClientProtocol.connect` gives
the CONNECT; :meth:`ClientProtocol.receive_data` turns what the remote sent into events
(:class:`Connected`, :class:`Message`, :class:`Delivered`, :class:`Subscribed`,
:class:`Refused`, :class:`Closed`) and queues the answers the protocol owes (PUBREL, PUBCOMP,
PINGREQ) in :meth:`ClientProtocol.data_to_send`. Outbound QoS 1/2 state is data (packet id ->
the message and where its flow stands), so a bridge can store it and resend it after a
reconnect [MQTT-4.4.0-1]; the in-flight window is the remote's Receive Maximum
[MQTT-3.3.4-7]. Inbound QoS 1/2 messages are acknowledged only when the caller says they are
safe (:meth:`ClientProtocol.acknowledge`): a bridge acknowledges what it has taken, never before.

Keep-alive [MQTT-3.1.2-22/24]: :meth:`ClientProtocol.next_deadline` is when a PINGREQ is due
(no packet sent for ``keep_alive`` seconds) or when the remote has been silent too long;
:meth:`ClientProtocol.handle_timer` acts on it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ..errors import EncodeError, MQTTBrokerError, ProtocolError
from .codec import decode, encode
from .constants import PacketType, ProtocolLevel, ReasonCode
from .packets import (
    Connack,
    Connect,
    Disconnect,
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
from .properties import PropertyId as Prop
from .reader import FrameReader

__all__ = [
    "ClientProtocol",
    "ClientState",
    "Closed",
    "Connected",
    "Delivered",
    "Message",
    "OutFlow",
    "Refused",
    "Subscribed",
    "WindowFull",
]

V5 = ProtocolLevel.MQTT_5
_P = PacketType
PRIVATE = 0x80  # try_private: the protocol level's top bit marks a bridge (Mosquitto's)


class ClientState(IntEnum):
    """Where the client side stands."""

    CONNECTING = 0  # CONNECT sent, no CONNACK yet
    CONNECTED = 1
    CLOSED = 2


class WindowFull(MQTTBrokerError):
    """No packet identifier may be used now: the remote's Receive Maximum is reached."""


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """CONNACK 0x00: ``session_present`` [MQTT-3.2.2-2], the remote's CONNACK properties."""

    session_present: bool
    properties: dict[int, Any]


@dataclass(frozen=True, slots=True)
class Refused:
    """CONNACK with a failure code (3.x return code or MQTT 5 reason code)."""

    code: int
    properties: dict[int, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """An application message from the remote; QoS 1/2 wait for :meth:`acknowledge`
    (``packet_id`` then says which)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[int, Any]
    packet_id: int | None


@dataclass(frozen=True, slots=True)
class Delivered:
    """The remote took the QoS 1/2 message sent with ``packet_id`` (PUBACK, or PUBCOMP after
    PUBREC) with ``code``; a code >= 0x80 means it refused it (MQTT 5: PUBACK or PUBREC).
    After PUBREC the message is the remote's: PUBCOMP's code is reported as 0."""

    packet_id: int
    code: int


@dataclass(frozen=True, slots=True)
class Released:
    """PUBREC came for the QoS 2 message sent with ``packet_id``: the remote has it, and what
    is owed now is PUBREL, never that PUBLISH again (a caller that keeps in-flight state on
    disk records this before the PUBREL leaves) [MQTT-4.3.3-4]."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribed:
    """SUBACK: the granted QoS (or failure code) per filter, in order."""

    packet_id: int
    codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """UNSUBACK for the UNSUBSCRIBE sent with ``packet_id``."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Closed:
    """The remote ended the connection (MQTT 5 DISCONNECT with ``code``), or the protocol did
    (a violation, a keep-alive timeout): ``why`` says which."""

    code: int
    why: str


Event = (Connected | Refused | Message | Delivered | Released | Subscribed | Unsubscribed
         | Closed)


@dataclass(slots=True)
class OutFlow:
    """One outbound QoS 1/2 message in flight: the PUBLISH, and whether PUBREC came (QoS 2:
    then PUBREL is what is owed)."""

    publish: Publish
    released: bool = False


@dataclass(slots=True)
class _Pending:
    subscribe: Subscribe | Unsubscribe
    sent_at: float = 0.0


@dataclass(slots=True)
class _Options:
    level: int
    client_id: str
    clean_start: bool
    keep_alive: int
    username: str | None
    password: bytes | None
    will: Will | None
    private: bool
    properties: dict[int, Any] = field(default_factory=dict)


class ClientProtocol:
    """One client connection to a remote broker, as data."""

    def __init__(self, client_id: str, *, level: int = ProtocolLevel.MQTT_3_1_1,
                 clean_start: bool = True, keep_alive: int = 60, username: str | None = None,
                 password: bytes | None = None, will: Will | None = None,
                 private: bool = False, session_expiry: int = 0,
                 receive_maximum: int = 65535, max_inflight: int = 65535) -> None:
        """``private``: Mosquitto's ``try_private`` (3.x: the protocol level's top bit tells
        the remote it is a bridge). ``receive_maximum``: what this side accepts in flight
        (MQTT 5, sent in CONNECT). ``max_inflight``: what this side sends in flight at most;
        the remote's Receive Maximum lowers it (MQTT 5) [MQTT-3.3.4-7]."""
        props: dict[int, Any] = {}
        if level == V5:
            if session_expiry:
                props[Prop.SESSION_EXPIRY_INTERVAL] = session_expiry
            if receive_maximum != 65535:
                props[Prop.RECEIVE_MAXIMUM] = receive_maximum
        self.options = _Options(level, client_id, clean_start, keep_alive, username, password,
                                will, private, props)
        self.state = ClientState.CLOSED
        self.reader = FrameReader()
        self.max_inflight = max_inflight
        self.window = max_inflight  # and the remote's Receive Maximum, from CONNACK
        self.outflows: OrderedDict[int, OutFlow] = OrderedDict()  # in send order
        self.inbound_qos2: set[int] = set()  # PUBREC sent, PUBREL not yet in
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._out: list[bytes] = []
        self.last_sent = 0.0
        self.last_received = 0.0
        self._ping_sent: float | None = None

    @property
    def closed(self) -> bool:
        """No connection (not yet, or not any more)."""
        return self.state is ClientState.CLOSED

    @property
    def level(self) -> int:
        """The protocol level spoken (3, 4 or 5)."""
        return self.options.level

    # -- connecting -----------------------------------------------------------------------------

    def connect(self, now: float) -> bytes:
        """The CONNECT that opens a connection (a new one after every reconnect): in-flight
        state is kept for a resend once CONNACK says the session is there."""
        o = self.options
        self.state = ClientState.CONNECTING
        self.reader = FrameReader()
        self._out.clear()
        self._ping_sent = None
        self.last_sent = self.last_received = now
        level = o.level | (PRIVATE if o.private and o.level != V5 else 0)
        name = "MQIsdp" if o.level == ProtocolLevel.MQTT_3_1 else "MQTT"
        return encode(Connect(name, level, o.client_id, o.clean_start, o.keep_alive,
                              o.username, o.password, o.will, dict(o.properties)), o.level)

    def data_to_send(self) -> bytes:
        """What the protocol owes the remote (acks, PUBREL, PINGREQ, resends), then cleared."""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def _send(self, data: bytes, now: float) -> None:
        self._out.append(data)
        self.last_sent = now

    # -- bytes in -------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """The events ``data`` completes, in order. A protocol violation by the remote ends
        with a :class:`Closed` event (and this side is closed)."""
        events: list[Event] = []
        if self.state is ClientState.CLOSED:
            return events
        try:
            frames = self.reader.feed(data)
            if frames:
                self.last_received = now
                self._ping_sent = None  # any packet answers the keep-alive
            for first, body in frames:
                self._handle(first, body, now, events)
                if self.closed:  # (a DISCONNECT, a refusing CONNACK)
                    break
        except ProtocolError as exc:
            self.state = ClientState.CLOSED
            events.append(Closed(int(exc.code), exc.message))
        return events

    def _handle(self, first: int, body: bytes, now: float, events: list[Event]) -> None:
        ptype = first >> 4
        if self.state is ClientState.CONNECTING and ptype != _P.CONNACK:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"{_P(ptype).name} before CONNACK [MQTT-3.2.0-1]")
        if first == 0x40 and len(body) == 2:  # the common PUBACK (success, no properties)
            self._finish(int.from_bytes(body, "big"), 0, _P.PUBACK, events)
            return
        p = decode(first, body, self.level)
        if isinstance(p, Connack):
            self._on_connack(p, now, events)
        elif isinstance(p, Publish):
            self._on_publish(p, now, events)
        elif isinstance(p, Puback):
            self._finish(p.packet_id, p.reason_code, _P.PUBACK, events)
        elif isinstance(p, Pubrec):
            flow = self.outflows.get(p.packet_id)
            if flow is None or flow.publish.qos != 2:
                # not ours (any more): release the remote's state all the same
                self._send(encode(Pubrel(p.packet_id), self.level), now)
            elif p.reason_code >= 0x80:  # refused: the flow ends here [MQTT-4.3.3]
                self._finish(p.packet_id, p.reason_code, _P.PUBREC, events)
            else:
                if not flow.released:
                    flow.released = True
                    events.append(Released(p.packet_id))
                self._send(encode(Pubrel(p.packet_id), self.level), now)
        elif isinstance(p, Pubcomp):
            self._finish(p.packet_id, p.reason_code, _P.PUBCOMP, events)
        elif isinstance(p, Pubrel):
            # PUBCOMP whether or not the id was known (a resent PUBREL) [MQTT-4.3.3]
            self.inbound_qos2.discard(p.packet_id)
            self._send(encode(Pubcomp(p.packet_id), self.level), now)
        elif isinstance(p, Suback):
            pending = self._pending.pop(p.packet_id, None)
            if pending is not None:
                events.append(Subscribed(p.packet_id, tuple(p.return_codes)))
        elif isinstance(p, Unsuback):
            if self._pending.pop(p.packet_id, None) is not None:
                events.append(Unsubscribed(p.packet_id))
        elif isinstance(p, Disconnect):
            self.state = ClientState.CLOSED
            events.append(Closed(p.reason_code, "DISCONNECT from the remote"))
        elif ptype == _P.PINGRESP:
            pass
        else:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"{_P(ptype).name} may not be sent by a server")

    def _on_connack(self, p: Connack, now: float, events: list[Event]) -> None:
        if self.state is not ClientState.CONNECTING:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "a second CONNACK [MQTT-3.2.0-2]")
        if p.return_code != 0:
            self.state = ClientState.CLOSED
            events.append(Refused(p.return_code, dict(p.properties)))
            return
        self.state = ClientState.CONNECTED
        self.window = min(self.max_inflight, int(p.properties.get(
            Prop.RECEIVE_MAXIMUM, 65535))) if self.level == V5 else self.max_inflight
        keep_alive = p.properties.get(Prop.SERVER_KEEP_ALIVE)
        if keep_alive is not None:  # the server's keep-alive wins [MQTT-3.1.2-21]
            self.options.keep_alive = int(keep_alive)
        events.append(Connected(p.session_present, dict(p.properties)))
        if p.session_present:
            # [MQTT-4.4.0-1] unacknowledged PUBLISH (DUP) and PUBREL, in their original order
            for pid, flow in self.outflows.items():
                if flow.released:
                    self._send(encode(Pubrel(pid), self.level), now)
                else:
                    flow.publish.dup = True
                    self._send(encode(flow.publish, self.level), now)
            return
        # the remote has no session: its state for our packet ids is gone [MQTT-3.2.2-5]. A
        # QoS 2 message it had answered with PUBREC is its own already: delivered. Others are
        # sent again as new messages (DUP 0), so nothing the caller handed over is lost.
        self.inbound_qos2.clear()
        for pid, flow in list(self.outflows.items()):
            if flow.released:
                del self.outflows[pid]
                events.append(Delivered(pid, 0))
            else:
                flow.publish.dup = False
                self._send(encode(flow.publish, self.level), now)

    def _on_publish(self, p: Publish, now: float, events: list[Event]) -> None:
        if p.qos == 2 and p.packet_id in self.inbound_qos2:
            # a resend before PUBREL: acknowledge again, deliver nothing [MQTT-4.3.3-2]
            self._send(encode(Pubrec(p.packet_id or 0), self.level), now)
            return
        events.append(Message(p.topic, p.payload, p.qos, p.retain, dict(p.properties),
                              p.packet_id if p.qos else None))

    def _finish(self, pid: int, code: int, ptype: PacketType, events: list[Event]) -> None:
        flow = self.outflows.get(pid)
        if flow is None:
            return  # unknown: harmless (a late duplicate)
        expected = _P.PUBACK if flow.publish.qos == 1 else (
            _P.PUBCOMP if flow.released else _P.PUBREC)
        if ptype != expected:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"{ptype.name} for packet {pid}, which awaits {expected.name}")
        del self.outflows[pid]
        # PUBCOMP ends a flow the remote accepted at PUBREC: 0x92 (identifier not found)
        # answers a resent PUBREL whose PUBCOMP was lost, not a refusal [MQTT-4.3.3]
        events.append(Delivered(pid, 0 if ptype == _P.PUBCOMP else code))

    # -- bytes out ------------------------------------------------------------------------------

    def can_publish(self) -> bool:
        """Whether a QoS 1/2 PUBLISH may go now (connected, window not full)."""
        return self.state is ClientState.CONNECTED and len(self.outflows) < self.window

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool, now: float,
                properties: dict[int, Any] | None = None) -> int | None:
        """Send a PUBLISH; its packet identifier for QoS 1/2 (watch for :class:`Delivered`).
        Raises :class:`WindowFull` when the remote's Receive Maximum is reached."""
        pid = None
        if qos:
            if len(self.outflows) >= self.window:
                raise WindowFull(f"{len(self.outflows)} in flight, Receive Maximum "
                                 f"{self.window} [MQTT-3.3.4-7]")
            pid = self._packet_id()
        p = Publish(topic, payload, qos, retain, False, pid, dict(properties or {}))
        if pid is not None:
            self.outflows[pid] = OutFlow(p)
        if self.state is ClientState.CONNECTED:
            self._send(encode(p, self.level), now)
        return pid

    def restore(self, packet_id: int, topic: str, payload: bytes, qos: int, retain: bool,
                properties: dict[int, Any] | None = None, released: bool = False) -> None:
        """Put back a QoS 1/2 message that was in flight under ``packet_id`` before a restart
        (kept by the caller): the next CONNECT resends it with DUP set when the remote still
        holds the session, so a QoS 2 message keeps its identifier and is not delivered twice
        [MQTT-4.3.3-2], [MQTT-4.4.0-1]. It counts against the window like any in flight."""
        if qos not in (1, 2) or not 0 < packet_id <= 0xFFFF or packet_id in self.outflows:
            raise EncodeError(f"cannot restore packet {packet_id} at QoS {qos}")
        self.outflows[packet_id] = OutFlow(
            Publish(topic, payload, qos, retain, True, packet_id, dict(properties or {})),
            released and qos == 2)

    def subscribe(self, filters: list[tuple[str, int]], now: float, *,
                  no_local: bool = False, retain_as_published: bool = False) -> int:
        """SUBSCRIBE to ``filters`` (filter, QoS); MQTT 5 bridges set No Local and Retain As
        Published (loops, retained flags kept). Its :class:`Subscribed` carries the answer."""
        pid = self._packet_id()
        s = Subscribe(pid, [Subscription(f, q, no_local=no_local,
                                         retain_as_published=retain_as_published)
                            for f, q in filters])
        self._pending[pid] = _Pending(s, now)
        self._send(encode(s, self.level), now)
        return pid

    def unsubscribe(self, filters: list[str], now: float) -> int:
        """UNSUBSCRIBE from ``filters``; its :class:`Unsubscribed` says it is done."""
        pid = self._packet_id()
        u = Unsubscribe(pid, list(filters))
        self._pending[pid] = _Pending(u, now)
        self._send(encode(u, self.level), now)
        return pid

    def acknowledge(self, packet_id: int, qos: int, now: float) -> None:
        """The caller has taken inbound message ``packet_id``: PUBACK (QoS 1) or PUBREC
        (QoS 2, then PUBCOMP when PUBREL comes) [MQTT-4.3.2/4.3.3]."""
        if qos == 1:
            self._send(encode(Puback(packet_id), self.level), now)
        elif qos == 2:
            self.inbound_qos2.add(packet_id)
            self._send(encode(Pubrec(packet_id), self.level), now)

    def disconnect(self, now: float) -> bytes:
        """A clean DISCONNECT (0x00: no will [MQTT-3.14.4-3]); this side is closed after it."""
        self.state = ClientState.CLOSED
        self.last_sent = now
        return encode(Disconnect(), self.level)

    def lost(self) -> None:
        """The connection went away: closed; in-flight state stays for the next CONNECT."""
        self.state = ClientState.CLOSED

    def _packet_id(self) -> int:
        for _ in range(65535):
            pid = self._next_id
            self._next_id = pid % 65535 + 1
            if pid not in self.outflows and pid not in self._pending:
                return pid
        raise WindowFull("all 65535 packet identifiers are in use [MQTT-2.3.1-2]")

    # -- time -----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has something to do: a PINGREQ due (nothing sent for
        ``keep_alive`` seconds), or the remote silent for 1.5 x keep-alive after a PINGREQ."""
        ka = self.options.keep_alive
        if not ka or self.state is ClientState.CLOSED:
            return None
        if self._ping_sent is not None:
            return self._ping_sent + ka * 0.5 + ka  # 1.5 x keep-alive in all
        return self.last_sent + ka

    def handle_timer(self, now: float) -> list[Event]:
        """Send the PINGREQ that is due, or give up on a remote that stays silent."""
        at = self.next_deadline()
        if at is None or now < at:
            return []
        if self._ping_sent is not None:
            self.state = ClientState.CLOSED
            return [Closed(int(ReasonCode.KEEP_ALIVE_TIMEOUT),
                           "no answer to PINGREQ within 1.5 x keep-alive")]
        self._send(b"\xc0\x00", now)
        self._ping_sent = now
        return []
