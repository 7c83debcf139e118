"""Encode and decode MQTT-SN 1.2 messages: one datagram in, one message out, and back.

``decode(datagram)`` returns a message of :mod:`.messages` or raises :class:`MqttsnError`
whose text names the field that is wrong, so the gateway can drop the datagram with one log
line. It is strict: the Length field must match the datagram, every fixed field must be there
and nothing may follow the last one, a Flags bit the message does not use must be 0, reserved
values (TopicIdType 0b11, QoS 0b11 outside PUBLISH, ReturnCode 0x04-0xFF, MsgType 0x03 ...)
are refused, and topic names and client ids must be UTF-8 without U+0000. What is well formed
but not acceptable (a client id over 23 characters, an unknown topic id, QoS -1 with a normal
topic id) is for the gateway to judge.

``encode(message)`` returns the datagram, with the 1-octet Length form up to 255 octets and
the 3-octet form above [MQTT-SN 5.2.1]. A message MQTT-SN cannot carry raises
:class:`EncodeError` (a bug of the caller). ``describe(message)`` is a one-line summary for
logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from enum import IntEnum
from typing import Any

from ...errors import EncodeError, MqttsnError
from .constants import (
    CTRL_RADIUS_MASK,
    FLAG_CLEAN_SESSION,
    FLAG_DUP,
    FLAG_QOS_MASK,
    FLAG_QOS_SHIFT,
    FLAG_RETAIN,
    FLAG_TOPIC_ID_TYPE_MASK,
    FLAG_WILL,
    LENGTH_3_OCTETS_MARKER,
    MAX_LENGTH,
    MAX_SHORT_LENGTH,
    PROTOCOL_ID,
    QOS_BITS_MINUS_ONE,
    TOPIC_ID_TYPE_RESERVED,
    MsgType,
    ReturnCode,
    TopicIdType,
)
from .messages import (
    Advertise,
    Connack,
    Connect,
    Disconnect,
    Encapsulated,
    GwInfo,
    Message,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Regack,
    Register,
    SearchGw,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    WillMsg,
    WillMsgReq,
    WillMsgResp,
    WillMsgUpd,
    WillTopic,
    WillTopicReq,
    WillTopicResp,
    WillTopicUpd,
)

# The Flags bits each message uses [MQTT-SN 5.4.4, 5.4.7, 5.4.12, 5.4.15-17, 5.4.22]; the
# others are "not used" there and must be 0.
_USED_FLAGS: dict[MsgType, int] = {
    MsgType.CONNECT: FLAG_WILL | FLAG_CLEAN_SESSION,
    MsgType.WILLTOPIC: FLAG_QOS_MASK | FLAG_RETAIN,
    MsgType.WILLTOPICUPD: FLAG_QOS_MASK | FLAG_RETAIN,
    MsgType.PUBLISH: FLAG_DUP | FLAG_QOS_MASK | FLAG_RETAIN | FLAG_TOPIC_ID_TYPE_MASK,
    MsgType.SUBSCRIBE: FLAG_DUP | FLAG_QOS_MASK | FLAG_TOPIC_ID_TYPE_MASK,
    MsgType.SUBACK: FLAG_QOS_MASK,
    MsgType.UNSUBSCRIBE: FLAG_TOPIC_ID_TYPE_MASK,
}
_FLAG_NAMES = ((FLAG_DUP, "DUP"), (FLAG_QOS_MASK, "QoS"), (FLAG_RETAIN, "Retain"),
               (FLAG_WILL, "Will"), (FLAG_CLEAN_SESSION, "CleanSession"),
               (FLAG_TOPIC_ID_TYPE_MASK, "TopicIdType"))

Body = bytes
Decoder = Callable[[MsgType, Body], Message]


def _err(mt: int | None, text: str) -> MqttsnError:
    return MqttsnError(text, mt)


# ---------------------------------------------------------------------------------------------
# decoding: fields

def _layout(mt: MsgType, body: Body, layout: tuple[tuple[str, int], ...],
            rest: bool = False) -> None:
    """Check that ``body`` (what follows MsgType) holds the fixed fields of ``layout``
    (name, size) and, unless ``rest`` (a variable-length field ends the message), nothing
    after them."""
    pos = 0
    for field_name, size in layout:
        if pos + size > len(body):
            needed = sum(s for _, s in layout)
            raise _err(mt, f"{mt.name} truncated: {field_name} missing ({len(body)} octets "
                           f"after MsgType, {'at least ' if rest else ''}{needed} needed)")
        pos += size
    if not rest and pos < len(body):
        last = layout[-1][0] if layout else "MsgType"
        raise _err(mt, f"{mt.name} too long: {len(body) - pos} unexpected octets after {last}")


def _u16(body: Body, pos: int) -> int:
    return (body[pos] << 8) | body[pos + 1]


def _flags(mt: MsgType, flags: int) -> None:
    """Refuse Flags bits the message does not use [MQTT-SN 5.3.4] and the reserved values."""
    unused = flags & ~_USED_FLAGS[mt] & 0xFF
    if unused:
        names = ", ".join(n for bit, n in _FLAG_NAMES if unused & bit)
        raise _err(mt, f"{mt.name} Flags 0x{flags:02X}: {names} not used in {mt.name} "
                       "(must be 0)")
    if (flags & FLAG_QOS_MASK) >> FLAG_QOS_SHIFT == QOS_BITS_MINUS_ONE and mt != MsgType.PUBLISH:
        raise _err(mt, f"{mt.name} Flags 0x{flags:02X}: QoS 0b11 (-1) is only allowed in PUBLISH")
    if flags & FLAG_TOPIC_ID_TYPE_MASK == TOPIC_ID_TYPE_RESERVED:
        raise _err(mt, f"{mt.name} Flags 0x{flags:02X}: TopicIdType 0b11 is reserved")


def _qos(flags: int) -> int:
    bits = (flags & FLAG_QOS_MASK) >> FLAG_QOS_SHIFT
    return -1 if bits == QOS_BITS_MINUS_ONE else bits


def _text(mt: MsgType, raw: Body, field_name: str) -> str:
    """A topic name or client id: UTF-8 without U+0000 (they become MQTT strings, where both
    are malformed [MQTT-1.5.3-1, MQTT-1.5.3-2])."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _err(mt, f"{mt.name} {field_name} is not valid UTF-8 ({exc.reason} at octet "
                       f"{exc.start})") from None
    if "\x00" in text:
        raise _err(mt, f"{mt.name} {field_name} contains U+0000")
    return text


def _topic_name(mt: MsgType, raw: Body) -> str:
    if not raw:
        raise _err(mt, f"{mt.name} TopicName is empty")
    return _text(mt, raw, "TopicName")


def _return_code(mt: MsgType, value: int) -> ReturnCode:
    if value not in ReturnCode._value2member_map_:
        raise _err(mt, f"{mt.name} ReturnCode 0x{value:02X} is reserved")
    return ReturnCode(value)


def _topic_field(mt: MsgType, tid: TopicIdType, raw: Body) -> int | str:
    """The topic at the end of SUBSCRIBE / UNSUBSCRIBE, as TopicIdType says [MQTT-SN 5.4.15]."""
    if tid == TopicIdType.NORMAL:
        return _topic_name(mt, raw)
    what = "pre-defined TopicId" if tid == TopicIdType.PREDEFINED else "short TopicName"
    if len(raw) != 2:
        raise _err(mt, f"{mt.name} {what} must be 2 octets, got {len(raw)}")
    if tid == TopicIdType.PREDEFINED:
        return _u16(raw, 0)
    return _text(mt, raw, "short TopicName")


# ---------------------------------------------------------------------------------------------
# decoding: messages (``body`` is everything after the MsgType octet)

def _advertise(mt: MsgType, body: Body) -> Message:
    _layout(mt, body, (("GwId", 1), ("Duration", 2)))
    return Advertise(body[0], _u16(body, 1))


def _searchgw(mt: MsgType, body: Body) -> Message:
    _layout(mt, body, (("Radius", 1),))
    return SearchGw(body[0])


def _gwinfo(mt: MsgType, body: Body) -> Message:
    _layout(mt, body, (("GwId", 1),), rest=True)
    return GwInfo(body[0], bytes(body[1:]))


def _connect(mt: MsgType, body: Body) -> Message:
    _layout(mt, body, (("Flags", 1), ("ProtocolId", 1), ("Duration", 2)), rest=True)
    flags = body[0]
    _flags(mt, flags)
    if body[1] != PROTOCOL_ID:
        # [MQTT-SN 5.3.8] "only the value 0x01 is defined"; MQTT-SN 2.0 puts its version here
        raise _err(mt, f"CONNECT ProtocolId 0x{body[1]:02X} (only 0x01, MQTT-SN 1.2, is defined)")
    client_id = _text(mt, body[4:], "ClientId")
    return Connect(client_id, _u16(body, 2), bool(flags & FLAG_CLEAN_SESSION),
                   bool(flags & FLAG_WILL))


def _return_code_only(cls: type[Connack | WillTopicResp | WillMsgResp]) -> Decoder:
    def decode(mt: MsgType, body: Body) -> Message:
        _layout(mt, body, (("ReturnCode", 1),))
        return cls(_return_code(mt, body[0]))
    return decode


def _empty(cls: type[WillTopicReq | WillMsgReq | Pingresp]) -> Decoder:
    def decode(mt: MsgType, body: Body) -> Message:
        _layout(mt, body, ())
        return cls()
    return decode


def _will_topic(cls: type[WillTopic | WillTopicUpd]) -> Decoder:
    def decode(mt: MsgType, body: Body) -> Message:
        if not body:
            # [MQTT-SN 5.4.7, 5.4.22] the empty message, exactly 2 octets: delete the will
            return cls()
        flags = body[0]
        _flags(mt, flags)
        if len(body) == 1:
            raise _err(mt, f"{mt.name} has Flags but no WillTopic (the empty {mt.name} that "
                           "deletes the will is exactly 2 octets)")
        return cls(_text(mt, body[1:], "WillTopic"), _qos(flags), bool(flags & FLAG_RETAIN))
    return decode


def _will_msg(cls: type[WillMsg | WillMsgUpd]) -> Decoder:
    def decode(mt: MsgType, body: Body) -> Message:
        return cls(bytes(body))
    return decode


def _register(mt: MsgType, body: Body) -> Message:
    _layout(mt, body, (("TopicId", 2), ("MsgId", 2)), rest=True)
    return Register(_u16(body, 0), _u16(body, 2), _topic_name(mt, body[4:]))


def _topic_ack(cls: type[Regack | Puback]) -> Decoder:
    def decode(mt: MsgType, body: Body) -> Message:
        _layout(mt, body, (("TopicId", 2), ("MsgId", 2), ("ReturnCode", 1)))
        return cls(_u16(body, 0), _u16(body, 2), _return_code(mt, body[4]))
    return decode


def _publish(mt: MsgType, body: Body) -> Message:
    _layout(mt, body, (("Flags", 1), ("TopicId", 2), ("MsgId", 2)), rest=True)
    flags = body[0]
    _flags(mt, flags)
    tid = TopicIdType(flags & FLAG_TOPIC_ID_TYPE_MASK)
    # [MQTT-SN 5.4.12] TopicId holds a topic id, or the two characters of a short topic name
    topic: int | str = (_text(mt, body[1:3], "short TopicName") if tid == TopicIdType.SHORT
                        else _u16(body, 1))
    return Publish(topic, bytes(body[5:]), _qos(flags), bool(flags & FLAG_RETAIN),
                   bool(flags & FLAG_DUP), _u16(body, 3), tid)


def _msg_id_only(cls: type[Pubrec | Pubrel | Pubcomp | Unsuback]) -> Decoder:
    def decode(mt: MsgType, body: Body) -> Message:
        _layout(mt, body, (("MsgId", 2),))
        return cls(_u16(body, 0))
    return decode


def _subscribe(mt: MsgType, body: Body) -> Message:
    _layout(mt, body, (("Flags", 1), ("MsgId", 2)), rest=True)
    flags = body[0]
    _flags(mt, flags)
    tid = TopicIdType(flags & FLAG_TOPIC_ID_TYPE_MASK)
    return Subscribe(_topic_field(mt, tid, body[3:]), _u16(body, 1), _qos(flags),
                     bool(flags & FLAG_DUP), tid)


def _suback(mt: MsgType, body: Body) -> Message:
    _layout(mt, body, (("Flags", 1), ("TopicId", 2), ("MsgId", 2), ("ReturnCode", 1)))
    _flags(mt, body[0])
    return Suback(_u16(body, 1), _u16(body, 3), _return_code(mt, body[5]), _qos(body[0]))


def _unsubscribe(mt: MsgType, body: Body) -> Message:
    _layout(mt, body, (("Flags", 1), ("MsgId", 2)), rest=True)
    flags = body[0]
    _flags(mt, flags)
    tid = TopicIdType(flags & FLAG_TOPIC_ID_TYPE_MASK)
    return Unsubscribe(_topic_field(mt, tid, body[3:]), _u16(body, 1), tid)


def _pingreq(mt: MsgType, body: Body) -> Message:
    # [MQTT-SN 5.4.19] the ClientId is optional: a sleeping client waking up
    return Pingreq(_text(mt, body, "ClientId") if body else None)


def _disconnect(mt: MsgType, body: Body) -> Message:
    if not body:
        return Disconnect()
    # [MQTT-SN 5.4.21] the optional Duration: a client going to sleep
    _layout(mt, body, (("Duration", 2),))
    return Disconnect(_u16(body, 0))


_DECODERS: dict[int, Decoder] = {
    MsgType.ADVERTISE: _advertise,
    MsgType.SEARCHGW: _searchgw,
    MsgType.GWINFO: _gwinfo,
    MsgType.CONNECT: _connect,
    MsgType.CONNACK: _return_code_only(Connack),
    MsgType.WILLTOPICREQ: _empty(WillTopicReq),
    MsgType.WILLTOPIC: _will_topic(WillTopic),
    MsgType.WILLMSGREQ: _empty(WillMsgReq),
    MsgType.WILLMSG: _will_msg(WillMsg),
    MsgType.REGISTER: _register,
    MsgType.REGACK: _topic_ack(Regack),
    MsgType.PUBLISH: _publish,
    MsgType.PUBACK: _topic_ack(Puback),
    MsgType.PUBCOMP: _msg_id_only(Pubcomp),
    MsgType.PUBREC: _msg_id_only(Pubrec),
    MsgType.PUBREL: _msg_id_only(Pubrel),
    MsgType.SUBSCRIBE: _subscribe,
    MsgType.SUBACK: _suback,
    MsgType.UNSUBSCRIBE: _unsubscribe,
    MsgType.UNSUBACK: _msg_id_only(Unsuback),
    MsgType.PINGREQ: _pingreq,
    MsgType.PINGRESP: _empty(Pingresp),
    MsgType.DISCONNECT: _disconnect,
    MsgType.WILLTOPICUPD: _will_topic(WillTopicUpd),
    MsgType.WILLTOPICRESP: _return_code_only(WillTopicResp),
    MsgType.WILLMSGUPD: _will_msg(WillMsgUpd),
    MsgType.WILLMSGRESP: _return_code_only(WillMsgResp),
}


# ---------------------------------------------------------------------------------------------
# decoding: the datagram

def decode(datagram: bytes | bytearray | memoryview) -> Message:
    """The one MQTT-SN message of ``datagram`` (one UDP payload), or :class:`MqttsnError`
    saying what is wrong with it."""
    return _decode(bytes(datagram), inside_encapsulation=False)


def _decode(d: bytes, inside_encapsulation: bool) -> Message:
    n = len(d)
    if n < 2:
        raise _err(None, f"datagram of {n} octet(s) is shorter than Length and MsgType")
    # [MQTT-SN 5.2.1] 0x01 announces the 3-octet Length form; "messages with lengths smaller
    # than 256 octets may use the shorter 1-octet format", so the long form is accepted for
    # them too
    if d[0] == LENGTH_3_OCTETS_MARKER:
        if n < 4:
            raise _err(None, f"datagram of {n} octets truncated in the 3-octet Length form "
                             "(0x01, two length octets, MsgType)")
        length, header = _u16(d, 1), 3
    else:
        length, header = d[0], 1
    mt = d[header]
    if mt == MsgType.ENCAPSULATED:
        return _decode_encapsulated(d, header, inside_encapsulation)
    if mt not in _DECODERS:
        raise _err(mt, f"unknown MsgType 0x{mt:02X} (reserved)")
    msg_type = MsgType(mt)
    if length < header + 1:
        raise _err(mt, f"{msg_type.name}: the Length field says {length} octets, less than "
                       f"the {header + 1} of Length and MsgType")
    if length > n:
        raise _err(mt, f"{msg_type.name} truncated: the Length field says {length} octets, "
                       f"the datagram has {n}")
    if length < n:
        raise _err(mt, f"{msg_type.name}: the Length field says {length} octets, the datagram "
                       f"has {n} ({n - length} more)")
    return _DECODERS[mt](msg_type, d[header + 1:])


def _decode_encapsulated(d: bytes, header: int, inside_encapsulation: bool) -> Message:
    """[MQTT-SN 5.5] Length (1 octet: the octets up to the end of Wireless Node Id), MsgType
    0xFE, Ctrl, Wireless Node Id, then the encapsulated message with its own Length."""
    mt = MsgType.ENCAPSULATED
    if inside_encapsulation:
        raise _err(mt, "Encapsulated message inside an Encapsulated message")
    if header != 1:
        raise _err(mt, "Encapsulated message with the 3-octet Length form (its Length is 1 "
                       "octet)")
    length = d[0]
    if length < 3:
        raise _err(mt, f"Encapsulated message Length {length} is shorter than Length, MsgType "
                       "and Ctrl")
    if length > len(d):
        raise _err(mt, f"Encapsulated message truncated: Length says Ctrl and Wireless Node Id "
                       f"end at octet {length}, the datagram has {len(d)}")
    ctrl = d[2]
    if ctrl & ~CTRL_RADIUS_MASK:
        raise _err(mt, f"Encapsulated message Ctrl 0x{ctrl:02X}: reserved bits 7-2 set")
    if length == len(d):
        raise _err(mt, "Encapsulated message carries no MQTT-SN message")
    try:
        inner = _decode(d[length:], inside_encapsulation=True)
    except MqttsnError as exc:
        raise MqttsnError(f"in Encapsulated message: {exc.message}", exc.msg_type) from None
    return Encapsulated(bytes(d[3:length]), inner, ctrl & CTRL_RADIUS_MASK)


# ---------------------------------------------------------------------------------------------
# encoding

def _u8(value: int, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise EncodeError(f"{what} {value!r} is not an octet (0-255)")
    return bytes((value,))


def _b16(value: int, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise EncodeError(f"{what} {value!r} is not a 16-bit value (0-65535)")
    return value.to_bytes(2, "big")


def _utf8(text: str, what: str, allow_empty: bool = True) -> bytes:
    if not isinstance(text, str):
        raise EncodeError(f"{what} {text!r} is not a str")
    if not text and not allow_empty:
        raise EncodeError(f"{what} is empty")
    if "\x00" in text:
        raise EncodeError(f"{what} {text!r} contains U+0000")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError(f"{what} {text!r} cannot be encoded in UTF-8") from None


def _short_topic(topic: int | str, what: str) -> bytes:
    if not isinstance(topic, str):
        raise EncodeError(f"{what}: a short topic name is a str, not {topic!r}")
    raw = _utf8(topic, what)
    if len(raw) != 2:
        raise EncodeError(f"{what}: short topic name {topic!r} is {len(raw)} octets, not 2")
    return raw


def _topic_id(topic: int | str, what: str) -> bytes:
    if isinstance(topic, str):
        raise EncodeError(f"{what}: a topic id is an int, not {topic!r}")
    return _b16(topic, what)


def _tid(value: int, what: str) -> int:
    if value not in (TopicIdType.NORMAL, TopicIdType.PREDEFINED, TopicIdType.SHORT):
        raise EncodeError(f"{what} TopicIdType {value!r} is not 0b00, 0b01 or 0b10")
    return int(value)


def _qos_bits(qos: int, what: str, minus_one: bool = False) -> int:
    if qos == -1 and minus_one:
        return QOS_BITS_MINUS_ONE << FLAG_QOS_SHIFT
    if qos not in (0, 1, 2):
        allowed = "-1, 0, 1 or 2" if minus_one else "0, 1 or 2"
        raise EncodeError(f"{what} QoS {qos!r} is not {allowed}")
    return int(qos) << FLAG_QOS_SHIFT


def _rc(code: int, what: str) -> bytes:
    if code not in ReturnCode._value2member_map_:
        raise EncodeError(f"{what} ReturnCode {code!r} is reserved")
    return bytes((code,))


def _enc_will_topic(m: WillTopic | WillTopicUpd) -> bytes:
    name = m.msg_type.name
    if m.topic == "":
        if m.qos or m.retain:
            raise EncodeError(f"the empty {name} (no topic) carries no QoS or retain")
        return b""
    flags = _qos_bits(m.qos, name) | (FLAG_RETAIN if m.retain else 0)
    return bytes((flags,)) + _utf8(m.topic, f"{name} WillTopic")


def _enc_publish(m: Publish) -> bytes:
    tid = _tid(m.topic_id_type, "PUBLISH")
    flags = (_qos_bits(m.qos, "PUBLISH", minus_one=True) | tid
             | (FLAG_DUP if m.dup else 0) | (FLAG_RETAIN if m.retain else 0))
    topic = (_short_topic(m.topic, "PUBLISH TopicId") if tid == TopicIdType.SHORT
             else _topic_id(m.topic, "PUBLISH TopicId"))
    return bytes((flags,)) + topic + _b16(m.msg_id, "PUBLISH MsgId") + bytes(m.data)


def _enc_topic_field(m: Subscribe | Unsubscribe, tid: int) -> bytes:
    what = f"{m.msg_type.name} topic"
    if tid == TopicIdType.NORMAL:
        if not isinstance(m.topic, str):
            raise EncodeError(f"{what}: a topic name is a str, not {m.topic!r}")
        return _utf8(m.topic, what, allow_empty=False)
    if tid == TopicIdType.SHORT:
        return _short_topic(m.topic, what)
    return _topic_id(m.topic, what)


def _enc_subscribe(m: Subscribe) -> bytes:
    tid = _tid(m.topic_id_type, "SUBSCRIBE")
    flags = _qos_bits(m.qos, "SUBSCRIBE") | tid | (FLAG_DUP if m.dup else 0)
    return bytes((flags,)) + _b16(m.msg_id, "SUBSCRIBE MsgId") + _enc_topic_field(m, tid)


def _enc_unsubscribe(m: Unsubscribe) -> bytes:
    tid = _tid(m.topic_id_type, "UNSUBSCRIBE")
    return bytes((tid,)) + _b16(m.msg_id, "UNSUBSCRIBE MsgId") + _enc_topic_field(m, tid)


def _enc_pingreq(m: Pingreq) -> bytes:
    if m.client_id is None:
        return b""
    if m.client_id == "":
        # it would be the plain PINGREQ on the wire; say None for that
        raise EncodeError("PINGREQ ClientId is empty (use None for a PINGREQ without one)")
    return _utf8(m.client_id, "PINGREQ ClientId")


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Advertise: lambda m: _u8(m.gw_id, "ADVERTISE GwId") + _b16(m.duration, "ADVERTISE Duration"),
    SearchGw: lambda m: _u8(m.radius, "SEARCHGW Radius"),
    GwInfo: lambda m: _u8(m.gw_id, "GWINFO GwId") + bytes(m.gw_address),
    Connect: lambda m: (bytes(((FLAG_WILL if m.will else 0)
                               | (FLAG_CLEAN_SESSION if m.clean_session else 0), PROTOCOL_ID))
                        + _b16(m.keep_alive, "CONNECT Duration")
                        + _utf8(m.client_id, "CONNECT ClientId")),
    Connack: lambda m: _rc(m.return_code, "CONNACK"),
    WillTopicReq: lambda m: b"",
    WillTopic: _enc_will_topic,
    WillMsgReq: lambda m: b"",
    WillMsg: lambda m: bytes(m.payload),
    Register: lambda m: (_b16(m.topic_id, "REGISTER TopicId") + _b16(m.msg_id, "REGISTER MsgId")
                         + _utf8(m.topic_name, "REGISTER TopicName", allow_empty=False)),
    Regack: lambda m: (_b16(m.topic_id, "REGACK TopicId") + _b16(m.msg_id, "REGACK MsgId")
                       + _rc(m.return_code, "REGACK")),
    Publish: _enc_publish,
    Puback: lambda m: (_b16(m.topic_id, "PUBACK TopicId") + _b16(m.msg_id, "PUBACK MsgId")
                       + _rc(m.return_code, "PUBACK")),
    Pubrec: lambda m: _b16(m.msg_id, "PUBREC MsgId"),
    Pubrel: lambda m: _b16(m.msg_id, "PUBREL MsgId"),
    Pubcomp: lambda m: _b16(m.msg_id, "PUBCOMP MsgId"),
    Subscribe: _enc_subscribe,
    Suback: lambda m: (bytes((_qos_bits(m.qos, "SUBACK"),)) + _b16(m.topic_id, "SUBACK TopicId")
                       + _b16(m.msg_id, "SUBACK MsgId") + _rc(m.return_code, "SUBACK")),
    Unsubscribe: _enc_unsubscribe,
    Unsuback: lambda m: _b16(m.msg_id, "UNSUBACK MsgId"),
    Pingreq: _enc_pingreq,
    Pingresp: lambda m: b"",
    Disconnect: lambda m: (b"" if m.duration is None
                           else _b16(m.duration, "DISCONNECT Duration")),
    WillTopicUpd: _enc_will_topic,
    WillMsgUpd: lambda m: bytes(m.payload),
    WillTopicResp: lambda m: _rc(m.return_code, "WILLTOPICRESP"),
    WillMsgResp: lambda m: _rc(m.return_code, "WILLMSGRESP"),
}


def _frame(mt: MsgType, body: bytes) -> bytes:
    """Length + MsgType + body, in the 1-octet Length form when the whole message fits in 255
    octets, else the 3-octet form [MQTT-SN 5.2.1]."""
    total = len(body) + 2
    if total <= MAX_SHORT_LENGTH:
        return bytes((total, mt)) + body
    total += 2
    if total > MAX_LENGTH:
        raise EncodeError(f"{mt.name} of {total} octets is over the 65535 the Length field "
                          "can say")
    return bytes((LENGTH_3_OCTETS_MARKER, total >> 8, total & 0xFF, mt)) + body


def encode(msg: Message) -> bytes:
    """The datagram for ``msg``; :class:`EncodeError` if MQTT-SN cannot carry it."""
    if isinstance(msg, Encapsulated):
        return _encode_encapsulated(msg)
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise EncodeError(f"cannot encode {msg!r}")
    return _frame(msg.msg_type, encoder(msg))


def _encode_encapsulated(msg: Encapsulated) -> bytes:
    if isinstance(msg.message, Encapsulated):
        raise EncodeError("an Encapsulated message cannot carry an Encapsulated message")
    if not isinstance(msg.radius, int) or not 0 <= msg.radius <= CTRL_RADIUS_MASK:
        raise EncodeError(f"Encapsulated radius {msg.radius!r} is not 0-3 (Ctrl bits 1-0)")
    length = 3 + len(msg.node_id)
    if length > MAX_SHORT_LENGTH:
        raise EncodeError(f"Wireless Node Id of {len(msg.node_id)} octets is over the 252 the "
                          "1-octet Length can say")
    return (bytes((length, MsgType.ENCAPSULATED, msg.radius)) + bytes(msg.node_id)
            + encode(msg.message))


# ---------------------------------------------------------------------------------------------
# logging

def describe(msg: Message) -> str:
    """A one-line summary for logs: the message type and its fields, payloads as their size,
    strings shortened, flags named only when set, e.g.
    ``PUBLISH topic=5 qos=1 msg_id=7 retain topic_id_type=normal data=12B``."""
    parts = [msg.msg_type.name]
    sizes: list[str] = []  # payloads last: the eye looks for the topic and ids first
    for f in fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, bool):
            if value:
                parts.append(f.name)
        elif value is None:
            continue
        elif isinstance(value, (bytes, bytearray)):
            if f.name == "node_id":
                parts.append(f"node_id={value.hex() or '-'}")
            else:
                sizes.append(f"{f.name}={len(value)}B")
        elif isinstance(value, IntEnum):
            parts.append(f"{f.name}={value.name.lower()}")
        elif isinstance(value, str):
            shown = value if len(value) <= 40 else value[:37] + "..."
            parts.append(f"{f.name}={shown!r}")
        elif isinstance(value, int):
            parts.append(f"{f.name}={value}")
        else:  # the message inside an Encapsulated
            parts.append(f"[{describe(value)}]")
    return " ".join(parts + sizes)
