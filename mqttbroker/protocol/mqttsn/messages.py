"""One frozen, slotted dataclass per MQTT-SN 1.2 message [MQTT-SN 5.4, 5.5].

Field names follow the specification's field tables (``msg_id`` is MsgId, ``topic_id`` is
TopicId, ...); CONNECT's Duration is called ``keep_alive`` for what it means. QoS is an int:
0, 1, 2, or -1 (the Flags value 0b11, PUBLISH only). Which Flags bits each message uses is
decided by the codec; here a message only holds values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .constants import MsgType, ReturnCode, TopicIdType


@dataclass(frozen=True, slots=True)
class Advertise:
    """ADVERTISE [MQTT-SN 5.4.1]: a gateway's periodic broadcast; ``duration`` is the number
    of seconds until its next ADVERTISE."""

    msg_type: ClassVar[MsgType] = MsgType.ADVERTISE
    gw_id: int
    duration: int


@dataclass(frozen=True, slots=True)
class SearchGw:
    """SEARCHGW [MQTT-SN 5.4.2]: a client looking for a gateway within ``radius`` hops."""

    msg_type: ClassVar[MsgType] = MsgType.SEARCHGW
    radius: int


@dataclass(frozen=True, slots=True)
class GwInfo:
    """GWINFO [MQTT-SN 5.4.3]: the answer to SEARCHGW. ``gw_address`` (GwAdd) is only present
    when a client answers for a gateway it knows; ``b""`` means absent (the two cannot be told
    apart on the wire). Its format depends on the network, so it stays bytes."""

    msg_type: ClassVar[MsgType] = MsgType.GWINFO
    gw_id: int
    gw_address: bytes = b""


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT [MQTT-SN 5.4.4]. ``keep_alive`` is the Duration field (seconds); ``will`` asks
    the gateway to prompt for the will topic and message (WILLTOPICREQ, WILLMSGREQ). The
    ProtocolId octet is always 0x01 [MQTT-SN 5.3.8]. The 1-23 character limit on the client
    id [MQTT-SN 5.3.1] is the gateway's to enforce."""

    msg_type: ClassVar[MsgType] = MsgType.CONNECT
    client_id: str
    keep_alive: int = 60
    clean_session: bool = True
    will: bool = False


@dataclass(frozen=True, slots=True)
class Connack:
    """CONNACK [MQTT-SN 5.4.5]."""

    msg_type: ClassVar[MsgType] = MsgType.CONNACK
    return_code: ReturnCode = ReturnCode.ACCEPTED


@dataclass(frozen=True, slots=True)
class WillTopicReq:
    """WILLTOPICREQ [MQTT-SN 5.4.6]: the gateway asks for the will topic."""

    msg_type: ClassVar[MsgType] = MsgType.WILLTOPICREQ


@dataclass(frozen=True, slots=True)
class WillTopic:
    """WILLTOPIC [MQTT-SN 5.4.7]. ``topic == ""`` is the empty WILLTOPIC (exactly 2 octets,
    no Flags): the client deletes its will topic and will message; it carries no QoS or
    retain."""

    msg_type: ClassVar[MsgType] = MsgType.WILLTOPIC
    topic: str = ""
    qos: int = 0
    retain: bool = False

    @property
    def deletes_will(self) -> bool:
        """True for the empty WILLTOPIC."""
        return self.topic == ""


@dataclass(frozen=True, slots=True)
class WillMsgReq:
    """WILLMSGREQ [MQTT-SN 5.4.8]: the gateway asks for the will message."""

    msg_type: ClassVar[MsgType] = MsgType.WILLMSGREQ


@dataclass(frozen=True, slots=True)
class WillMsg:
    """WILLMSG [MQTT-SN 5.4.9]: the will message (may be empty)."""

    msg_type: ClassVar[MsgType] = MsgType.WILLMSG
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Register:
    """REGISTER [MQTT-SN 5.4.10]. From a client ``topic_id`` is 0x0000 (not relevant); from
    a gateway it is the id assigned to ``topic_name``."""

    msg_type: ClassVar[MsgType] = MsgType.REGISTER
    topic_id: int
    msg_id: int
    topic_name: str


@dataclass(frozen=True, slots=True)
class Regack:
    """REGACK [MQTT-SN 5.4.11]."""

    msg_type: ClassVar[MsgType] = MsgType.REGACK
    topic_id: int
    msg_id: int
    return_code: ReturnCode = ReturnCode.ACCEPTED


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH [MQTT-SN 5.4.12].

    ``topic`` is what the TopicId field holds, as ``topic_id_type`` says: an int for a NORMAL
    (registered) or PREDEFINED topic id, a two-character str for a SHORT topic name.
    ``msg_id`` is only relevant at QoS 1 and 2 ("otherwise coded 0x0000"); the codec keeps
    whatever the sender put there. ``qos`` may be -1 [MQTT-SN 6.8].
    """

    msg_type: ClassVar[MsgType] = MsgType.PUBLISH
    topic: int | str
    data: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    msg_id: int = 0
    topic_id_type: TopicIdType = TopicIdType.NORMAL


@dataclass(frozen=True, slots=True)
class Puback:
    """PUBACK [MQTT-SN 5.4.13]: acknowledges a QoS 1 PUBLISH, or rejects any PUBLISH with a
    ReturnCode. ``topic_id`` echoes the PUBLISH's TopicId field as a 16-bit value."""

    msg_type: ClassVar[MsgType] = MsgType.PUBACK
    topic_id: int
    msg_id: int
    return_code: ReturnCode = ReturnCode.ACCEPTED


@dataclass(frozen=True, slots=True)
class Pubrec:
    """PUBREC [MQTT-SN 5.4.14]."""

    msg_type: ClassVar[MsgType] = MsgType.PUBREC
    msg_id: int


@dataclass(frozen=True, slots=True)
class Pubrel:
    """PUBREL [MQTT-SN 5.4.14]."""

    msg_type: ClassVar[MsgType] = MsgType.PUBREL
    msg_id: int


@dataclass(frozen=True, slots=True)
class Pubcomp:
    """PUBCOMP [MQTT-SN 5.4.14]."""

    msg_type: ClassVar[MsgType] = MsgType.PUBCOMP
    msg_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE [MQTT-SN 5.4.15].

    ``topic`` as ``topic_id_type`` says: NORMAL, a topic name (a str, wildcards allowed);
    PREDEFINED, a pre-defined topic id (an int); SHORT, a two-character short topic name (a
    str). ``qos`` is the requested QoS (0-2).
    """

    msg_type: ClassVar[MsgType] = MsgType.SUBSCRIBE
    topic: int | str
    msg_id: int
    qos: int = 0
    dup: bool = False
    topic_id_type: TopicIdType = TopicIdType.NORMAL


@dataclass(frozen=True, slots=True)
class Suback:
    """SUBACK [MQTT-SN 5.4.16]: ``qos`` is the granted QoS; ``topic_id`` the id the gateway
    will use in PUBLISH (0x0000 for wildcard and short topic subscriptions)."""

    msg_type: ClassVar[MsgType] = MsgType.SUBACK
    topic_id: int
    msg_id: int
    return_code: ReturnCode = ReturnCode.ACCEPTED
    qos: int = 0


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE [MQTT-SN 5.4.17]; ``topic`` as in :class:`Subscribe`."""

    msg_type: ClassVar[MsgType] = MsgType.UNSUBSCRIBE
    topic: int | str
    msg_id: int
    topic_id_type: TopicIdType = TopicIdType.NORMAL


@dataclass(frozen=True, slots=True)
class Unsuback:
    """UNSUBACK [MQTT-SN 5.4.18]."""

    msg_type: ClassVar[MsgType] = MsgType.UNSUBACK
    msg_id: int


@dataclass(frozen=True, slots=True)
class Pingreq:
    """PINGREQ [MQTT-SN 5.4.19]. ``client_id`` is set (non-empty) only by a sleeping client
    going to the awake state to fetch its buffered messages [MQTT-SN 6.14]."""

    msg_type: ClassVar[MsgType] = MsgType.PINGREQ
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class Pingresp:
    """PINGRESP [MQTT-SN 5.4.20]; to a sleeping client, also "no more buffered messages"."""

    msg_type: ClassVar[MsgType] = MsgType.PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT [MQTT-SN 5.4.21]. ``duration`` (the sleep timer, seconds) is set only by a
    client going to the asleep state [MQTT-SN 6.14]; None is a plain DISCONNECT."""

    msg_type: ClassVar[MsgType] = MsgType.DISCONNECT
    duration: int | None = None


@dataclass(frozen=True, slots=True)
class WillTopicUpd:
    """WILLTOPICUPD [MQTT-SN 5.4.22]. ``topic == ""`` is the empty WILLTOPICUPD (exactly 2
    octets, no Flags): the client deletes its will topic and will message."""

    msg_type: ClassVar[MsgType] = MsgType.WILLTOPICUPD
    topic: str = ""
    qos: int = 0
    retain: bool = False

    @property
    def deletes_will(self) -> bool:
        """True for the empty WILLTOPICUPD."""
        return self.topic == ""


@dataclass(frozen=True, slots=True)
class WillMsgUpd:
    """WILLMSGUPD [MQTT-SN 5.4.23]."""

    msg_type: ClassVar[MsgType] = MsgType.WILLMSGUPD
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class WillTopicResp:
    """WILLTOPICRESP [MQTT-SN 5.4.24]."""

    msg_type: ClassVar[MsgType] = MsgType.WILLTOPICRESP
    return_code: ReturnCode = ReturnCode.ACCEPTED


@dataclass(frozen=True, slots=True)
class WillMsgResp:
    """WILLMSGRESP [MQTT-SN 5.4.25]."""

    msg_type: ClassVar[MsgType] = MsgType.WILLMSGRESP
    return_code: ReturnCode = ReturnCode.ACCEPTED


@dataclass(frozen=True, slots=True)
class Encapsulated:
    """A Forwarder Encapsulation frame [MQTT-SN 5.5]: ``message`` travelled between a
    forwarder and the gateway on behalf of the wireless node ``node_id`` (opaque octets, the
    forwarder maps them to an address). ``radius`` is the broadcast radius of the Ctrl octet
    (bits 1-0, only relevant from gateway to forwarder). ``message`` is never itself an
    Encapsulated."""

    msg_type: ClassVar[MsgType] = MsgType.ENCAPSULATED
    node_id: bytes
    message: Message
    radius: int = 0


Message = (Advertise | SearchGw | GwInfo | Connect | Connack | WillTopicReq | WillTopic
           | WillMsgReq | WillMsg | Register | Regack | Publish | Puback | Pubrec | Pubrel
           | Pubcomp | Subscribe | Suback | Unsubscribe | Unsuback | Pingreq | Pingresp
           | Disconnect | WillTopicUpd | WillMsgUpd | WillTopicResp | WillMsgResp
           | Encapsulated)
"""Any MQTT-SN 1.2 message."""
