"""One slotted dataclass per MQTT control packet.

``properties`` holds MQTT 5 properties (``PropertyId -> value``) and stays empty for 3.1 / 3.1.1.

Each class writes its ``__init__`` out (``init=False``; the fields, their defaults, ``repr``
and ``==`` stay the dataclass's): the ``__init__`` that ``dataclass`` generates is interpreted
even when mypyc compiles this module (``make compiled``), 0.4 us per packet, where a written
one is compiled (0.1 us). A ``properties`` of None is a new empty dict, as the field's
default_factory would make it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .constants import PacketType

Properties = dict[int, Any]


@dataclass(slots=True, init=False)
class Will:
    """The will message carried by CONNECT [MQTT 3.1.3.2]."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=dict)

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 properties: Properties | None = None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = {} if properties is None else properties


@dataclass(slots=True, init=False)
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

    def __init__(self, protocol_name: str = "MQTT", protocol_level: int = 4, client_id: str = "",
                 clean_session: bool = True, keep_alive: int = 60, username: str | None = None,
                 password: bytes | None = None, will: Will | None = None,
                 properties: Properties | None = None, bridge: bool = False) -> None:
        self.protocol_name = protocol_name
        self.protocol_level = protocol_level
        self.client_id = client_id
        self.clean_session = clean_session
        self.keep_alive = keep_alive
        self.username = username
        self.password = password
        self.will = will
        self.properties = {} if properties is None else properties
        self.bridge = bridge
        self.type = PacketType.CONNECT


@dataclass(slots=True, init=False)
class Connack:
    """CONNACK [MQTT 3.2]; ``return_code`` is the 3.1.1 code or the MQTT 5 reason code."""

    session_present: bool = False
    return_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.CONNACK, init=False, repr=False)

    def __init__(self, session_present: bool = False, return_code: int = 0,
                 properties: Properties | None = None) -> None:
        self.session_present = session_present
        self.return_code = return_code
        self.properties = {} if properties is None else properties
        self.type = PacketType.CONNACK


@dataclass(slots=True, init=False)
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

    def __init__(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                 dup: bool = False, packet_id: int | None = None,
                 properties: Properties | None = None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = {} if properties is None else properties
        self.type = PacketType.PUBLISH


@dataclass(slots=True, init=False)
class Puback:
    """PUBACK [MQTT 3.4]."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.PUBACK, init=False, repr=False)

    def __init__(self, packet_id: int, reason_code: int = 0,
                 properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties
        self.type = PacketType.PUBACK


@dataclass(slots=True, init=False)
class Pubrec:
    """PUBREC [MQTT 3.5]."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.PUBREC, init=False, repr=False)

    def __init__(self, packet_id: int, reason_code: int = 0,
                 properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties
        self.type = PacketType.PUBREC


@dataclass(slots=True, init=False)
class Pubrel:
    """PUBREL [MQTT 3.6]."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.PUBREL, init=False, repr=False)

    def __init__(self, packet_id: int, reason_code: int = 0,
                 properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties
        self.type = PacketType.PUBREL


@dataclass(slots=True, init=False)
class Pubcomp:
    """PUBCOMP [MQTT 3.7]."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.PUBCOMP, init=False, repr=False)

    def __init__(self, packet_id: int, reason_code: int = 0,
                 properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties
        self.type = PacketType.PUBCOMP


@dataclass(slots=True, init=False)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (3.1.1 uses only ``qos``)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int = 0  # the SUBSCRIBE's Subscription Identifier (MQTT 5), 0 for none

    def __init__(self, topic_filter: str, qos: int = 0, no_local: bool = False,
                 retain_as_published: bool = False, retain_handling: int = 0,
                 identifier: int = 0) -> None:
        self.topic_filter = topic_filter
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.identifier = identifier


@dataclass(slots=True, init=False)
class Subscribe:
    """SUBSCRIBE [MQTT 3.8]."""

    packet_id: int
    subscriptions: list[Subscription]
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.SUBSCRIBE, init=False, repr=False)

    def __init__(self, packet_id: int, subscriptions: list[Subscription],
                 properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.subscriptions = subscriptions
        self.properties = {} if properties is None else properties
        self.type = PacketType.SUBSCRIBE


@dataclass(slots=True, init=False)
class Suback:
    """SUBACK [MQTT 3.9]: one granted QoS or failure code per filter, in order."""

    packet_id: int
    return_codes: list[int]
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.SUBACK, init=False, repr=False)

    def __init__(self, packet_id: int, return_codes: list[int],
                 properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.return_codes = return_codes
        self.properties = {} if properties is None else properties
        self.type = PacketType.SUBACK


@dataclass(slots=True, init=False)
class Unsubscribe:
    """UNSUBSCRIBE [MQTT 3.10]."""

    packet_id: int
    topic_filters: list[str]
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.UNSUBSCRIBE, init=False, repr=False)

    def __init__(self, packet_id: int, topic_filters: list[str],
                 properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.topic_filters = topic_filters
        self.properties = {} if properties is None else properties
        self.type = PacketType.UNSUBSCRIBE


@dataclass(slots=True, init=False)
class Unsuback:
    """UNSUBACK [MQTT 3.11]; ``reason_codes`` only exist in MQTT 5."""

    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.UNSUBACK, init=False, repr=False)

    def __init__(self, packet_id: int, reason_codes: list[int] | None = None,
                 properties: Properties | None = None) -> None:
        self.packet_id = packet_id
        self.reason_codes = [] if reason_codes is None else reason_codes
        self.properties = {} if properties is None else properties
        self.type = PacketType.UNSUBACK


@dataclass(slots=True, init=False)
class Pingreq:
    """PINGREQ [MQTT 3.12]."""

    type: PacketType = field(default=PacketType.PINGREQ, init=False, repr=False)

    def __init__(self) -> None:
        self.type = PacketType.PINGREQ


@dataclass(slots=True, init=False)
class Pingresp:
    """PINGRESP [MQTT 3.13]."""

    type: PacketType = field(default=PacketType.PINGRESP, init=False, repr=False)

    def __init__(self) -> None:
        self.type = PacketType.PINGRESP


@dataclass(slots=True, init=False)
class Disconnect:
    """DISCONNECT [MQTT 3.14]; ``reason_code`` and properties only exist in MQTT 5."""

    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.DISCONNECT, init=False, repr=False)

    def __init__(self, reason_code: int = 0, properties: Properties | None = None) -> None:
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties
        self.type = PacketType.DISCONNECT


@dataclass(slots=True, init=False)
class Auth:
    """AUTH [MQTT 3.15], MQTT 5 only."""

    reason_code: int = 0
    properties: Properties = field(default_factory=dict)
    type: PacketType = field(default=PacketType.AUTH, init=False, repr=False)

    def __init__(self, reason_code: int = 0, properties: Properties | None = None) -> None:
        self.reason_code = reason_code
        self.properties = {} if properties is None else properties
        self.type = PacketType.AUTH


Packet = (Connect | Connack | Publish | Puback | Pubrec | Pubrel | Pubcomp | Subscribe | Suback
          | Unsubscribe | Unsuback | Pingreq | Pingresp | Disconnect | Auth)
