"""One MQTT connection's protocol state, without I/O: bytes and ``now`` in, packets and bytes out.

Like h11's ``Connection`` or python-websockets' ``ServerProtocol``: nothing here reads a socket,
reads a clock or starts a timer. :meth:`ServerConnection.receive_data` takes the bytes a peer
sent (and the time they came), returns the complete control packets they hold, in order, and
raises :class:`~mqttbroker.errors.ProtocolError` (with its MQTT 5 reason code) for anything the
specification forbids; the ``*_bytes`` methods give what to send back. What a connection may
do in each state is one table (:data:`ALLOWED`), and its states change only through
:data:`TRANSITIONS`.

The per-connection MQTT 5 rules live here: what CONNECT negotiates (Maximum Packet Size both
ways, Topic Alias Maximum, Request Problem Information, Session Expiry), topic aliases in both
directions [MQTT 3.3.2.3.4], the PUBLISH checks (Maximum QoS, Retain Available, Subscription
Identifier from a client, topic names, Message Expiry), inbound flow control (Receive Maximum
[MQTT-3.3.4-7]), the keep-alive deadline [MQTT-3.1.2-24], the AUTH exchange's packet rules
[MQTT 4.12], DISCONNECT's Session Expiry rule [MQTT-3.14.2-2], and the one place an error
becomes a CONNACK or DISCONNECT.

``client/`` drives it over asyncio (it subclasses :class:`ServerConnection`, so an idle
connection is one object); ``tests/protocol/test_connection.py`` drives it byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from ..errors import MQTTBrokerError, ProtocolError
from .codec import decode, encode, encode_publish_parts, peek_protocol_level
from .constants import V3_CONNACK_FOR_REASON, ConnackCode, PacketType, ProtocolLevel, ReasonCode
from .packets import Auth, Connack, Connect, Disconnect, Packet, Publish
from .properties import PropertyId as Prop
from .reader import FrameReader
from .topics import validate_topic_name

__all__ = [
    "ALLOWED",
    "TRANSITIONS",
    "ConnState",
    "Limits",
    "ServerConnection",
    "StateError",
]

V5: Final[int] = ProtocolLevel.MQTT_5
_P = PacketType
_CONNECT: Final[int] = PacketType.CONNECT  # (an int: compared with every frame's type)


class ConnState(IntEnum):
    """Where a connection stands."""

    AWAIT_CONNECT = 0  # nothing read yet
    CONNECTING = 1  # CONNECT read: the broker decides (packets after it wait [MQTT 3.1.4])
    AUTHENTICATING = 2  # MQTT 5 enhanced authentication before CONNACK [MQTT 4.12]
    CONNECTED = 3
    CLOSED = 4


# What a client may send in each state: everything else is a protocol error. The first packet
# must be CONNECT [MQTT-3.1.0-1]; a second CONNECT is a protocol error [MQTT-3.1.0-2]; packets
# only a server sends (CONNACK, SUBACK, ...) are never accepted from a client. A client may
# send packets after CONNECT without waiting for CONNACK [MQTT 3.1.4]: while CONNECTING they
# are read (the caller holds them until the CONNECT is decided).
_SESSION_PACKETS: Final = frozenset({_P.PUBLISH, _P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP,
                              _P.SUBSCRIBE, _P.UNSUBSCRIBE, _P.PINGREQ, _P.DISCONNECT, _P.AUTH})
ALLOWED: Final[dict[ConnState, frozenset[int]]] = {
    ConnState.AWAIT_CONNECT: frozenset({_P.CONNECT}),
    ConnState.CONNECTING: _SESSION_PACKETS,
    ConnState.AUTHENTICATING: frozenset({_P.AUTH, _P.DISCONNECT}),
    ConnState.CONNECTED: _SESSION_PACKETS,
    ConnState.CLOSED: frozenset(),
}

# How a connection's state may change: (from, event) -> to. "connect": a CONNECT was read;
# "challenge": the server sent AUTH 0x18 before CONNACK [MQTT 4.12]; "accept": CONNACK 0x00
# went out; "close": either side ended it (from every state, CLOSED included: closing twice is
# harmless). Nothing else moves it.
TRANSITIONS: Final[dict[tuple[ConnState, str], ConnState]] = {
    (ConnState.AWAIT_CONNECT, "connect"): ConnState.CONNECTING,
    (ConnState.CONNECTING, "challenge"): ConnState.AUTHENTICATING,
    (ConnState.AUTHENTICATING, "challenge"): ConnState.AUTHENTICATING,
    (ConnState.CONNECTING, "accept"): ConnState.CONNECTED,
    (ConnState.AUTHENTICATING, "accept"): ConnState.CONNECTED,
    **{(s, "close"): ConnState.CLOSED for s in ConnState},
}


class StateError(MQTTBrokerError):
    """The broker asked a connection for a transition its table does not have (a bug of the
    caller, never the peer's)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What the broker's configuration allows one connection (shared by all of them)."""

    max_packet_size: int = 268_435_460  # the largest packet read once connected
    max_connect_size: int = 268_435_460  # the largest packet read before CONNACK
    topic_alias_maximum: int = 0  # the aliases a client may set [MQTT-3.2.2-17]
    receive_maximum: int = 65_535  # QoS 2 PUBLISH a client may have unreleased [MQTT-3.3.4-9]
    max_topic_levels: int = 0  # levels a topic name may have (0: no limit)
    max_qos: int = 2  # Maximum QoS [MQTT-3.2.2-11]
    retain_available: bool = True  # Retain Available [MQTT-3.2.2-14]


# 3.1.1 rule numbers cited in messages common to both versions -> the same rule in 5.0 (only
# numbers 5.0 does not use for another rule; code that knows the level cites it itself)
_V5_RULES: Final[dict[str, str]] = {
    "[MQTT-1.5.3-1]": "[MQTT-1.5.4-1]",  # well-formed UTF-8
    "[MQTT-1.5.3-2]": "[MQTT-1.5.4-2]",  # no U+0000
    "[MQTT-1.5.3-1/2]": "[MQTT-1.5.4-1/2]",
    "[MQTT-2.3.1-1]": "[MQTT-2.2.1-3]",  # a non-zero packet identifier
    "[MQTT-3.1.2-14]": "[MQTT-3.1.2-12]",  # will QoS 3
    "[MQTT-3.1.2-11/13/15]": "[MQTT-3.1.2-11/13]",  # will QoS/retain without the will flag
}
_V5_RULE: Final = re.compile("|".join(re.escape(k) for k in _V5_RULES))

# Properties of an incoming PUBLISH that are per hop, not forwarded [MQTT-3.3.2-*]
_HOP_PROPS: Final = (Prop.TOPIC_ALIAS, Prop.MESSAGE_EXPIRY_INTERVAL)


def _connect_level(data: bytes) -> int | None:
    """The protocol level of the CONNECT that ``data`` starts with, if it is there yet."""
    if not data or data[0] != 0x10:
        return None
    i = 1
    while i < min(len(data), 5) and data[i] & 0x80:  # the Remaining Length's bytes
        i += 1
    return peek_protocol_level(data[i + 1:i + 16])


class ServerConnection:
    """The server side of one MQTT connection, as data.

    Slotted, no clock and no timers: an idle connection costs its attributes only. The
    asyncio layer (``client/``) subclasses it and adds the socket.
    """

    __slots__ = (
        "alias_in",
        "alias_in_max",
        "alias_out",
        "alias_out_max",
        "bridge",
        "connect_expiry",
        "keep_alive",
        "last_received",
        "level",
        "limits",
        "max_levels",
        "max_out_packet",
        "problem_info",
        "reader",
        "receive_maximum",
        "state",
    )

    def __init__(self, limits: Limits, now: float) -> None:
        self.limits = limits
        # until CONNACK, only a packet of max_connect_size is read (a peer that never logs in
        # cannot make us buffer the configured maximum); the limit opens up at CONNACK
        self.reader = FrameReader(min(limits.max_packet_size, limits.max_connect_size))
        self.max_levels = limits.max_topic_levels  # 0: no limit
        self.state = ConnState.AWAIT_CONNECT
        self.level: int = ProtocolLevel.MQTT_3_1_1
        self.keep_alive = 0
        self.last_received = now
        # MQTT 5, per connection
        self.bridge = False  # a bridge's CONNECT (level | 0x80, Mosquitto's try_private)
        self.connect_expiry = 0  # Session Expiry Interval given at CONNECT
        self.max_out_packet = 0  # the client's Maximum Packet Size, 0 = none
        self.problem_info = True  # Request Problem Information
        self.alias_in: dict[int, str] | None = None  # made on first use
        self.alias_in_max = limits.topic_alias_maximum
        self.alias_out: dict[str, int] | None = None
        self.alias_out_max = 0
        self.receive_maximum = limits.receive_maximum

    # -- states ---------------------------------------------------------------------------------

    def transition(self, event: str) -> None:
        """Move to the state ``event`` leads to from this one (:data:`TRANSITIONS`)."""
        to = TRANSITIONS.get((self.state, event))
        if to is None:
            raise StateError(f"no transition {event!r} from {self.state.name}")
        self.state = to

    @property
    def closed(self) -> bool:
        """The connection is closed (or closing)."""
        return self.state is ConnState.CLOSED

    @property
    def before_connack(self) -> bool:
        """No CONNACK has accepted the connection yet (an error is answered with CONNACK)."""
        return self.state < ConnState.CONNECTED

    # -- bytes in -------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[tuple[int, bytes]]:
        """The complete packets ``data`` finishes, as ``(first byte, body)``, in order.

        Raises :class:`ProtocolError` for a stream that cannot go on: a first packet that is
        not CONNECT (refused on its first byte, not after buffering a whole bogus packet), a
        packet over the size read in this state, a malformed Remaining Length. A CONNECT too
        big to read sets :attr:`level` from its header, so the refusal speaks its version.
        """
        if self.state is ConnState.AWAIT_CONNECT and data and data[0] != 0x10 \
                and not self.reader.buffered():
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                "first packet is not CONNECT [MQTT-3.1.0-1]")
        try:
            frames = self.reader.feed(data)
        except ProtocolError as exc:
            if exc.code == ReasonCode.PACKET_TOO_LARGE and self.state is ConnState.AWAIT_CONNECT:
                # over max_connect_size, refused from its header: answer in its protocol
                # version (MQTT 5: CONNACK 0x95) when the bytes read so far say which
                self.level = _connect_level(self.reader.head(24)) or self.level
            raise
        if frames:
            # only complete control packets count as activity [MQTT-3.1.2-24]
            self.last_received = now
        return frames

    def check_type(self, first: int, body: bytes) -> int:
        """The packet type of a frame, if this state allows it (:data:`ALLOWED`); a CONNECT
        sets :attr:`level` before it is decoded, so a malformed MQTT 5 CONNECT gets an MQTT 5
        CONNACK."""
        ptype = first >> 4
        if ptype not in ALLOWED[self.state]:
            if ptype == _CONNECT:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "second CONNECT [MQTT-3.1.0-2]")
            if self.state is ConnState.AWAIT_CONNECT:
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                    "first packet is not CONNECT [MQTT-3.1.0-1]")
            if ptype == 0:
                raise ProtocolError(ReasonCode.MALFORMED_PACKET, "reserved packet type 0")
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"{PacketType(ptype).name} may not be sent by a client now")
        if ptype == _CONNECT:
            self.level = peek_protocol_level(body) or self.level
            self.transition("connect")
        return ptype

    def decode(self, first: int, body: bytes) -> Packet:
        """A frame as a packet of this connection's protocol version."""
        return decode(first, body, self.level)

    def next_packets(self, data: bytes, now: float) -> list[Packet]:
        """Every packet ``data`` completes, checked against the state and decoded (the simple
        way in, for tests and tools; the broker's hot path decodes lazily)."""
        packets = []
        for first, body in self.receive_data(data, now):
            self.check_type(first, body)
            packets.append(self.decode(first, body))
        return packets

    # -- CONNECT and AUTH -----------------------------------------------------------------------

    def receive_connect(self, p: Connect) -> str | None:
        """Take what a CONNECT negotiates for this connection; the MQTT 5 Authentication
        Method it asks for, if any (enhanced authentication [MQTT 4.12])."""
        self.level = p.protocol_level
        self.keep_alive = p.keep_alive
        self.bridge = p.bridge
        if p.protocol_level != V5:
            return None
        props = p.properties
        self.connect_expiry = props.get(Prop.SESSION_EXPIRY_INTERVAL, 0)
        self.max_out_packet = props.get(Prop.MAXIMUM_PACKET_SIZE, 0)
        self.problem_info = props.get(Prop.REQUEST_PROBLEM_INFORMATION, 1) == 1
        self.alias_out_max = props.get(Prop.TOPIC_ALIAS_MAXIMUM, 0)
        method: str | None = props.get(Prop.AUTHENTICATION_METHOD)
        if method is None and Prop.AUTHENTICATION_DATA in props:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                "Authentication Data without a method [MQTT 3.1.2.11.10]")
        return method

    def receive_auth(self, p: Auth, method: str | None, exchanging: bool) -> bool:
        """Check an AUTH against the exchange under way (``method``: the connection's
        Authentication Method; ``exchanging``: an exchange awaits the client's answer). True:
        it starts a re-authentication [MQTT 4.12.1]; False: it continues the exchange."""
        if method is None:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                "AUTH from a client whose CONNECT had no Authentication "
                                "Method [MQTT-4.12.0-7]")
        if p.properties.get(Prop.AUTHENTICATION_METHOD) != method:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                "AUTH with a different authentication method [MQTT-4.12.0-5]")
        if p.reason_code == ReasonCode.REAUTHENTICATE and self.state is ConnState.CONNECTED \
                and not exchanging:
            return True
        if p.reason_code != ReasonCode.CONTINUE_AUTHENTICATION or not exchanging:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"unexpected AUTH reason 0x{p.reason_code:02X}")
        return False

    def challenge(self, method: str, data: bytes | None) -> Auth:
        """The AUTH 0x18 (continue) carrying the server's ``data``; before CONNACK it moves the
        connection to AUTHENTICATING [MQTT 4.12]."""
        if self.state is not ConnState.CONNECTED:
            self.transition("challenge")
        return Auth(int(ReasonCode.CONTINUE_AUTHENTICATION), _auth_props(method, data))

    def auth_success(self, method: str, data: bytes | None) -> dict[int, Any]:
        """The properties of the packet that ends an exchange successfully: CONNACK 0x00, or
        AUTH 0x00 for a re-authentication [MQTT 4.12.1]."""
        return _auth_props(method, data)

    def accepted(self) -> None:
        """CONNACK 0x00 is going out: the connection is up, packets up to the configured
        maximum are read from now on."""
        self.transition("accept")
        self.reader.max_packet_size = self.limits.max_packet_size

    def ended(self) -> None:
        """The connection is over (idempotent: TRANSITIONS lets "close" go from every state
        to CLOSED, so it is one assignment, on every connection's way out)."""
        self.state = ConnState.CLOSED

    def receive_disconnect(self, p: Disconnect) -> tuple[bool, int | None]:
        """A client's DISCONNECT: whether its will is published (only reason 0x00 discards
        it [MQTT-3.14.4-3, MQTT-3.1.2-10]) and the Session Expiry Interval it sets, if any."""
        if self.level != V5:
            return False, None
        sei: int | None = p.properties.get(Prop.SESSION_EXPIRY_INTERVAL)
        if sei is not None and self.connect_expiry == 0 and sei != 0:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                "DISCONNECT sets a Session Expiry Interval after CONNECT "
                                "gave 0 [MQTT 3.14.2.2.2]")
        return p.reason_code != ReasonCode.SUCCESS, sei

    # -- keep-alive -----------------------------------------------------------------------------

    def keepalive_deadline(self) -> float | None:
        """When the connection is gone unless a packet comes: 1.5 x keep-alive after the last
        one [MQTT-3.1.2-24]; None without keep-alive."""
        return self.last_received + 1.5 * self.keep_alive if self.keep_alive else None

    def keepalive_error(self) -> ProtocolError:
        """What ends a connection silent past :meth:`keepalive_deadline`."""
        rule = "MQTT-3.1.2-22" if self.level == V5 else "MQTT-3.1.2-24"
        return ProtocolError(ReasonCode.KEEP_ALIVE_TIMEOUT,
                             f"keep-alive timeout ({self.keep_alive}s x 1.5) [{rule}]")

    # -- PUBLISH in -----------------------------------------------------------------------------

    def receive_publish(self, p: Publish, now: float) -> tuple[dict[int, Any], float | None]:
        """Check a client's PUBLISH and resolve its Topic Alias (``p.topic`` is the real topic
        afterwards): the properties to forward (per-hop ones removed) and when the message
        expires (its Message Expiry Interval from ``now``), if it does."""
        props = p.properties
        expires_at = None
        if self.level == V5:
            limits = self.limits
            if p.qos > limits.max_qos:
                raise ProtocolError(ReasonCode.QOS_NOT_SUPPORTED,
                                    f"PUBLISH QoS {p.qos} over Maximum QoS {limits.max_qos} "
                                    "[MQTT-3.2.2-11]")
            if p.retain and not limits.retain_available:
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
                    expires_at = now + mei
                if alias is not None or mei is not None:
                    props = {k: v for k, v in props.items() if k not in _HOP_PROPS}
        validate_topic_name(p.topic, self.max_levels)
        return props, expires_at

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

    def check_receive_maximum(self, unreleased: int) -> None:
        """Inbound flow control: ``unreleased`` QoS 2 PUBLISH wait for PUBREL, the new one
        included; over Receive Maximum is an error in MQTT 5 [MQTT-3.3.4-7] (3.x has no such
        limit)."""
        if unreleased > self.receive_maximum and self.level == V5:
            raise ProtocolError(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                                f"more than Receive Maximum {self.receive_maximum} QoS 2 "
                                "PUBLISH unacknowledged [MQTT-3.3.4-7]")

    # -- PUBLISH out ----------------------------------------------------------------------------

    def needs_own_publish(self, expiring: bool, identifiers: tuple[int, ...]) -> bool:
        """Whether a delivery must be encoded for this connection alone (MQTT 5 with an
        expiry, Subscription Identifiers or outbound topic aliases) rather than in the
        wire form shared by every subscriber of its version."""
        return self.level == V5 and bool(expiring or identifiers or self.alias_out_max)

    def publish_parts(self, topic: str, payload: bytes, qos: int, retain: bool,
                      properties: Mapping[int, Any] | None, expires_at: float | None,
                      identifiers: tuple[int, ...], now: float) -> tuple[bytes, bytes] | None:
        """An MQTT 5 PUBLISH for this connection, split around its packet identifier: the
        Message Expiry Interval it has left at ``now`` (rounded up [MQTT-3.3.2-6]), its
        Subscription Identifiers, and an outbound Topic Alias (set on a topic's first
        delivery, an empty topic after) within the client's Topic Alias Maximum
        [MQTT-3.3.2-10]. None: the message has expired [MQTT-3.3.2-5]."""
        props = dict(properties) if properties else {}
        if expires_at is not None:
            left = expires_at - now
            if left <= 0:
                return None
            props[Prop.MESSAGE_EXPIRY_INTERVAL] = int(left) + (left % 1 > 0)
        if identifiers:
            props[Prop.SUBSCRIPTION_IDENTIFIER] = list(identifiers)
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
        return encode_publish_parts(topic, payload, qos, retain, False, self.level, props)

    def frame_publish(self, head: bytes, tail: bytes, qos: int, dup: bool,
                      pid: int) -> bytes | None:
        """A PUBLISH's bytes from its parts, with its packet identifier and DUP flag
        [MQTT-3.3.1-1]; None when it is over the client's Maximum Packet Size
        [MQTT-3.1.2-25] (it must then be dropped as if delivered)."""
        if dup:
            head = bytes((head[0] | 0x08,)) + head[1:]
        data = head + pid.to_bytes(2, "big") + tail if qos else head + tail
        if self.max_out_packet and len(data) > self.max_out_packet:
            return None
        return data

    # -- bytes out ------------------------------------------------------------------------------

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

    def reason(self, text: str) -> dict[int, Any]:
        """A Reason String property, when the client did not opt out [MQTT-3.1.2-29]. Rules
        the two versions share are cited by their 3.1.1 numbers where the code is common
        (the decoder, the topic checks); an MQTT 5 client reads 5.0's."""
        if not (self.problem_info and text):
            return {}
        if "[MQTT-" in text:
            text = _V5_RULE.sub(lambda m: _V5_RULES[m.group(0)], text)
        return {Prop.REASON_STRING: text}

    def error_packet(self, exc: ProtocolError) -> Packet | bytes | None:
        """What tells the client why its connection ends over ``exc`` (the one place an error
        becomes a packet): before CONNACK a refusing CONNACK (3.x: the return code the reason
        maps to, if any [MQTT-3.2.2-4/5]); after it, MQTT 5's DISCONNECT with the reason code
        [MQTT-4.13.1-1]; 3.1.1 clients only see the close (None)."""
        if self.before_connack:
            if self.level == V5:
                return Connack(False, int(exc.code), self.reason(exc.message))
            code = V3_CONNACK_FOR_REASON.get(exc.code)
            if code is not None and exc.code != ReasonCode.SUCCESS:
                # e.g. [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01, then close
                return bytes((0x20, 2, 0, code))
            return None
        if self.level == V5 and self.state is ConnState.CONNECTED:
            return Disconnect(int(exc.code), self.reason(exc.message))
        return None

    def refusal(self, code: ReasonCode, why: str) -> Connack:
        """The CONNACK that refuses this CONNECT with ``code`` [MQTT-3.2.2-5]: MQTT 5's reason
        code and Reason String, or the 3.x return code it maps to."""
        if self.level == V5:
            return Connack(False, int(code), self.reason(why))
        return Connack(False, int(V3_CONNACK_FOR_REASON.get(code, ConnackCode.SERVER_UNAVAILABLE)))

    def server_disconnect(self, code: ReasonCode, why: str) -> Disconnect | None:
        """A DISCONNECT telling the client why the server ends the connection (MQTT 5, once
        connected [MQTT-3.14.2]); None where the protocol has no such packet."""
        if self.level == V5 and self.state is ConnState.CONNECTED:
            return Disconnect(int(code), self.reason(why))
        return None


def _auth_props(method: str, data: bytes | None) -> dict[int, Any]:
    props: dict[int, Any] = {Prop.AUTHENTICATION_METHOD: method}
    if data is not None:
        props[Prop.AUTHENTICATION_DATA] = data
    return props
