"""One slotted dataclass per MQTT control packet.

``properties`` holds MQTT 5 properties (``PropertyId -> value``) and stays empty for 3.1 / 3.1.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .constants import PacketType

Properties = dict[int, Any]


@dataclass(slots=True)
class Will:
    """The will message carried by CONNECT [MQTT 3.1.3.2]."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Connect:
    """CONNECT [MQTT 3.1]."""

    protocol_name: str = "MQTT"
    protocol_level: int = 4
    client_id: str = ""
    clean_session: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = field(default_factory=dict)
    # a bridge (protocol level | 0x80, Mosquitto's try_private): its own messages are not
    # sent back to it, and retained flags go to it as published
    bridge: bool = False
    type: PacketType = field(default=PacketType.CONNECT, init=False, repr=False)


@dataclass(slots=True)
class Connack:
    """CONNACK [MQTT 3.2]; ``return_code`` is the 3.1.1 code or the MQTT 5 reason code."""

    session_present: bool = False
    return_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.CONNACK, init=False, repr=False)


@dataclass(slots=True)
class Publish:
    """PUBLISH [MQTT 3.3]; ``packet_id`` is None at QoS 0."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.PUBLISH, init=False, repr=False)


@dataclass(slots=True)
class Puback:
    """PUBACK [MQTT 3.4]."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.PUBACK, init=False, repr=False)


@dataclass(slots=True)
class Pubrec:
    """PUBREC [MQTT 3.5]."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.PUBREC, init=False, repr=False)


@dataclass(slots=True)
class Pubrel:
    """PUBREL [MQTT 3.6]."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.PUBREL, init=False, repr=False)


@dataclass(slots=True)
class Pubcomp:
    """PUBCOMP [MQTT 3.7]."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.PUBCOMP, init=False, repr=False)


@dataclass(slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (3.1.1 uses only ``qos``)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int = 0  # the SUBSCRIBE's Subscription Identifier (MQTT 5), 0 for none


@dataclass(slots=True)
class Subscribe:
    """SUBSCRIBE [MQTT 3.8]."""

    packet_id: int
    subscriptions: list[Subscription]
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.SUBSCRIBE, init=False, repr=False)


@dataclass(slots=True)
class Suback:
    """SUBACK [MQTT 3.9]: one granted QoS or failure code per filter, in order."""

    packet_id: int
    return_codes: list[int]
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.SUBACK, init=False, repr=False)


@dataclass(slots=True)
class Unsubscribe:
    """UNSUBSCRIBE [MQTT 3.10]."""

    packet_id: int
    topic_filters: list[str]
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.UNSUBSCRIBE, init=False, repr=False)


@dataclass(slots=True)
class Unsuback:
    """UNSUBACK [MQTT 3.11]; ``reason_codes`` only exist in MQTT 5."""

    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.UNSUBACK, init=False, repr=False)


@dataclass(slots=True)
class Pingreq:
    """PINGREQ [MQTT 3.12]."""

    type: PacketType = field(default=PacketType.PINGREQ, init=False, repr=False)


@dataclass(slots=True)
class Pingresp:
    """PINGRESP [MQTT 3.13]."""

    type: PacketType = field(default=PacketType.PINGRESP, init=False, repr=False)


@dataclass(slots=True)
class Disconnect:
    """DISCONNECT [MQTT 3.14]; ``reason_code`` and properties only exist in MQTT 5."""

    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.DISCONNECT, init=False, repr=False)


@dataclass(slots=True)
class Auth:
    """AUTH [MQTT 3.15], MQTT 5 only."""

    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.AUTH, init=False, repr=False)


Packet = (Connect | Connack | Publish | Puback | Pubrec | Pubrel | Pubcomp | Subscribe | Suback
          | Unsubscribe | Unsuback | Pingreq | Pingresp | Disconnect | Auth)
