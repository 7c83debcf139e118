"""The CONNECT decision, as steps that return what they decided.

Each step reads the CONNECT and the configuration and returns either what it settled (the
client id, the keep-alive, the session's expiry, CONNACK properties) or a :class:`Refusal`
saying which CONNACK code refuses the CONNECT and why. Nothing here touches a connection or
a socket: the broker runs the steps in order and acts on the first refusal
(:meth:`Broker.connect`), so every rule can be tested with a packet and a config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import MqttConfig
from ..errors import ProtocolError
from ..protocol.constants import MAX_PACKET_SIZE, ProtocolLevel, ReasonCode
from ..protocol.packets import Connect
from ..protocol.properties import PropertyId as Prop
from ..protocol.topics import validate_topic_name
from ..session import Session

V5 = ProtocolLevel.MQTT_5
# what a PUBLISH adds to its payload at most, bar properties: fixed header (5), the longest
# topic (2 + 65535), packet id (2), property length (4)
PUBLISH_OVERHEAD = 5 + 2 + 65535 + 2 + 4


@dataclass(frozen=True, slots=True)
class Refusal:
    """A CONNECT is refused: CONNACK ``code`` (MQTT 5's; 3.x gets the code it maps to)."""

    code: ReasonCode
    why: str


@dataclass(slots=True)
class Terms:
    """What the first steps settled for a CONNECT: the client id (perhaps assigned), the
    keep-alive granted, and the CONNACK properties that say so."""

    client_id: str
    keep_alive: int
    props: dict[int, Any] = field(default_factory=dict)


def negotiate(p: Connect, cfg: MqttConfig, new_id: Callable[[], str]) -> Terms | Refusal:
    """The client id, the keep-alive and the will, in that order; ``new_id`` makes a client
    id for a client that sent none [MQTT-3.1.3-6]. A will topic that is not a valid topic
    name raises :class:`ProtocolError` (the connection closes [MQTT-3.1.3-11])."""
    terms = client_identifier(p, cfg, new_id)
    if isinstance(terms, Refusal):
        return terms
    refusal = keep_alive(p, cfg, terms) or check_will(p, cfg)
    return refusal or terms


def client_identifier(p: Connect, cfg: MqttConfig,
                      new_id: Callable[[], str]) -> Terms | Refusal:
    """The client id: the CONNECT's, or one assigned to an MQTT 5 client (or a 3.1.1 one
    with clean session) that sent none [MQTT-3.1.3-6/8, MQTT 3.2.2.3.7]."""
    client_id = p.client_id
    v5 = p.protocol_level == V5
    if not client_id:
        # [MQTT-3.1.3-8] empty id without clean session: 0x02; 3.1 needs an id
        if (not p.clean_session and not v5) or p.protocol_level == ProtocolLevel.MQTT_3_1 \
                or not cfg.allow_zero_length_clientid:
            return Refusal(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client identifier")
        client_id = new_id()
        return Terms(client_id, p.keep_alive, {Prop.ASSIGNED_CLIENT_IDENTIFIER: client_id})
    if len(client_id) > cfg.max_client_id_length:
        return Refusal(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                       f"client identifier longer than {cfg.max_client_id_length}")
    return Terms(client_id, p.keep_alive)


def keep_alive(p: Connect, cfg: MqttConfig, terms: Terms) -> Refusal | None:
    """``max_keepalive``: an MQTT 5 client is told a shorter (or a non-zero) keep-alive in
    Server Keep Alive [MQTT-3.2.2-21]; 3.1/3.1.1 cannot be told, so a longer one is refused,
    as Mosquitto does."""
    limit = cfg.max_keepalive
    if not limit:
        return None
    requested = p.keep_alive
    if p.protocol_level == V5 and (requested > limit or requested == 0):
        terms.keep_alive = limit
        terms.props[Prop.SERVER_KEEP_ALIVE] = limit
    elif requested > limit:
        return Refusal(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                       f"keep-alive {requested}s over max_keepalive {limit}s")
    return None


def check_will(p: Connect, cfg: MqttConfig) -> Refusal | None:
    """The will must be a message the broker would accept as a PUBLISH."""
    will = p.will
    if will is None:
        return None
    v5 = p.protocol_level == V5
    validate_topic_name(will.topic)  # [MQTT-3.1.3-11] raises: the connection closes
    if cfg.max_topic_levels and will.topic.count("/") >= cfg.max_topic_levels:
        raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID,
                            f"will topic deeper than max_topic_levels {cfg.max_topic_levels}")
    if cfg.message_size_limit and len(will.payload) > cfg.message_size_limit:
        # as Mosquitto: v5 CONNACK 0x95; 3.1/3.1.1 have no such code, 0x05
        return Refusal(ReasonCode.PACKET_TOO_LARGE if v5 else ReasonCode.NOT_AUTHORIZED,
                       f"will payload {len(will.payload)} bytes over message_size_limit "
                       f"{cfg.message_size_limit}")
    if v5 and will.qos > cfg.max_qos:
        return Refusal(ReasonCode.QOS_NOT_SUPPORTED, "will QoS over Maximum QoS")
    if v5 and will.retain and not cfg.retain_available:
        return Refusal(ReasonCode.RETAIN_NOT_SUPPORTED, "will RETAIN not available")
    return None


def session_expiry(p: Connect, cap: Callable[[int], int], props: dict[int, Any]) -> int:
    """The Session Expiry Interval granted: MQTT 5's as asked (capped; a capped value is told
    in CONNACK [MQTT 3.2.2.3.2]); 3.1.1 clean session 0 never expires (unless capped)."""
    if p.protocol_level == V5:
        requested = p.properties.get(Prop.SESSION_EXPIRY_INTERVAL, 0)
    else:
        requested = 0 if p.clean_session else Session.NEVER
    expiry = cap(requested)
    if p.protocol_level == V5 and expiry != requested:
        props[Prop.SESSION_EXPIRY_INTERVAL] = expiry
    return expiry


def connack_properties(cfg: MqttConfig, client_id: str, p: Connect) -> dict[int, Any]:
    """What the broker enforces, advertised to an MQTT 5 client [MQTT 3.2.2.3]."""
    # a property whose value is the default is left out [MQTT 3.2.2.3]: Wildcard,
    # Subscription Identifier and Shared Subscription Available are 1 when absent, and
    # so is Retain Available; a client with a small Maximum Packet Size must still get its
    # CONNACK [MQTT-3.1.2-24]
    props: dict[int, Any] = {}
    if cfg.receive_maximum != 65535:
        props[Prop.RECEIVE_MAXIMUM] = cfg.receive_maximum
    if not cfg.retain_available:
        props[Prop.RETAIN_AVAILABLE] = 0
    if cfg.max_qos < 2:
        props[Prop.MAXIMUM_QOS] = cfg.max_qos
    largest = cfg.max_packet_size
    if cfg.message_size_limit:
        # the largest PUBLISH whose payload is within the limit [MQTT 3.2.2.3.6]
        largest = min(largest, cfg.message_size_limit + PUBLISH_OVERHEAD)
    if largest < MAX_PACKET_SIZE:
        props[Prop.MAXIMUM_PACKET_SIZE] = largest
    if cfg.topic_alias_maximum:
        props[Prop.TOPIC_ALIAS_MAXIMUM] = cfg.topic_alias_maximum
    if p.properties.get(Prop.REQUEST_RESPONSE_INFORMATION) == 1 and cfg.response_information:
        props[Prop.RESPONSE_INFORMATION] = cfg.response_information + client_id
    return props


def send_window(p: Connect, cfg: MqttConfig) -> int:
    """How many QoS 1/2 messages may be in flight to the client: the configured window,
    within an MQTT 5 client's Receive Maximum [MQTT-3.3.4-7]."""
    if p.protocol_level == V5:
        return min(cfg.max_inflight_messages, int(p.properties.get(Prop.RECEIVE_MAXIMUM, 65535)))
    return cfg.max_inflight_messages
