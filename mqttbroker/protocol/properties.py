"""MQTT 5 properties [MQTT 2.2.2]: one table says each property's type and where it may appear."""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

from ..errors import ProtocolError
from .constants import PacketType, ReasonCode
from .primitives import (
    Buffer,
    encode_binary,
    encode_string,
    encode_varint,
    read_binary,
    read_string,
    read_varint,
)


class PropertyId(IntEnum):
    """MQTT 5 property identifiers [MQTT 2.2.2.2]."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


# The will properties of CONNECT are checked as if they were a packet of their own.
WILL: Final = 0

_P = PacketType
_ALL: Final = frozenset(list(_P) + [WILL])
_ACKS: Final = frozenset({_P.CONNACK, _P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP, _P.SUBACK,
                   _P.UNSUBACK, _P.DISCONNECT, _P.AUTH})

# id -> (wire type, packets that may carry it)
_TABLE: Final[dict[int, tuple[str, frozenset[int]]]] = {
    0x01: ("byte", frozenset({_P.PUBLISH, WILL})),
    0x02: ("int4", frozenset({_P.PUBLISH, WILL})),
    0x03: ("str", frozenset({_P.PUBLISH, WILL})),
    0x08: ("str", frozenset({_P.PUBLISH, WILL})),
    0x09: ("bin", frozenset({_P.PUBLISH, WILL})),
    0x0B: ("varint", frozenset({_P.PUBLISH, _P.SUBSCRIBE})),
    0x11: ("int4", frozenset({_P.CONNECT, _P.CONNACK, _P.DISCONNECT})),
    0x12: ("str", frozenset({_P.CONNACK})),
    0x13: ("int2", frozenset({_P.CONNACK})),
    0x15: ("str", frozenset({_P.CONNECT, _P.CONNACK, _P.AUTH})),
    0x16: ("bin", frozenset({_P.CONNECT, _P.CONNACK, _P.AUTH})),
    0x17: ("byte", frozenset({_P.CONNECT})),
    0x18: ("int4", frozenset({WILL})),
    0x19: ("byte", frozenset({_P.CONNECT})),
    0x1A: ("str", frozenset({_P.CONNACK})),
    0x1C: ("str", frozenset({_P.CONNACK, _P.DISCONNECT})),
    0x1F: ("str", _ACKS),
    0x21: ("int2", frozenset({_P.CONNECT, _P.CONNACK})),
    0x22: ("int2", frozenset({_P.CONNECT, _P.CONNACK})),
    0x23: ("int2", frozenset({_P.PUBLISH})),
    0x24: ("byte", frozenset({_P.CONNACK})),
    0x25: ("byte", frozenset({_P.CONNACK})),
    0x26: ("pair", _ALL),
    0x27: ("int4", frozenset({_P.CONNECT, _P.CONNACK})),
    0x28: ("byte", frozenset({_P.CONNACK})),
    0x29: ("byte", frozenset({_P.CONNACK})),
    0x2A: ("byte", frozenset({_P.CONNACK})),
}

# Properties that decode to a list. User Property may repeat anywhere [MQTT-2.2.2-2];
# Subscription Identifier only in PUBLISH (one per matching subscription) [MQTT-3.3.4-4] and at
# most once in SUBSCRIBE [MQTT 3.8.2.1.2].
_REPEATABLE: Final = frozenset({PropertyId.USER_PROPERTY, PropertyId.SUBSCRIPTION_IDENTIFIER})

# Values the specification forbids: each is a protocol error [MQTT 3.1.2.11, 3.2.2.3, 3.8.2.1].
_VALUE_RULES: Final[dict[int, tuple[int, int]]] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: (0, 1),
    PropertyId.SUBSCRIPTION_IDENTIFIER: (1, 268_435_455),
    PropertyId.REQUEST_PROBLEM_INFORMATION: (0, 1),
    PropertyId.REQUEST_RESPONSE_INFORMATION: (0, 1),
    PropertyId.RECEIVE_MAXIMUM: (1, 65535),
    PropertyId.MAXIMUM_PACKET_SIZE: (1, 0xFFFFFFFF),
    PropertyId.MAXIMUM_QOS: (0, 1),
    PropertyId.RETAIN_AVAILABLE: (0, 1),
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: (0, 1),
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: (0, 1),
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: (0, 1),
}


def read_properties(buf: Buffer, packet: int) -> dict[int, Any]:
    """Read a property block (length + properties) for ``packet`` (a PacketType or WILL)."""
    length = read_varint(buf)
    end = buf.pos + length
    if end > len(buf.data):
        raise ProtocolError(ReasonCode.MALFORMED_PACKET, "property length exceeds packet")
    props: dict[int, Any] = {}
    while buf.pos < end:
        pid = read_varint(buf)
        entry = _TABLE.get(pid)
        if entry is None:
            raise ProtocolError(ReasonCode.MALFORMED_PACKET, f"unknown property 0x{pid:02X}")
        kind, allowed = entry
        if packet not in allowed:
            raise ProtocolError(ReasonCode.MALFORMED_PACKET,
                                f"property 0x{pid:02X} not allowed here")
        value: Any
        if kind == "byte":
            value = buf.read_byte()
        elif kind == "int2":
            value = buf.read_u16()
        elif kind == "int4":
            value = buf.read_u32()
        elif kind == "varint":
            value = read_varint(buf)
        elif kind == "str":
            value = read_string(buf)
        elif kind == "bin":
            value = read_binary(buf)
        else:
            value = (read_string(buf), read_string(buf))
        rule = _VALUE_RULES.get(pid)
        if rule is not None and not rule[0] <= value <= rule[1]:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"property 0x{pid:02X} has forbidden value {value}")
        if pid in _REPEATABLE and (pid == PropertyId.USER_PROPERTY or packet == PacketType.PUBLISH
                                   or pid not in props):
            props.setdefault(pid, []).append(value)
        elif pid in props:
            # [MQTT-2.2.2-2] a property other than these two appears at most once
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR, f"duplicate property 0x{pid:02X}")
        else:
            props[pid] = value
    if buf.pos != end:
        raise ProtocolError(ReasonCode.MALFORMED_PACKET, "property block overruns its length")
    return props


def encode_properties(props: dict[int, Any] | None) -> bytes:
    """Encode a property block, length prefix included (b"\\x00" for none)."""
    if not props:
        return b"\x00"
    out = bytearray()
    for pid, value in props.items():
        kind = _TABLE[pid][0]
        values = value if pid in _REPEATABLE else (value,)
        for v in values:
            out += encode_varint(pid)
            if kind == "byte":
                out.append(v)
            elif kind == "int2":
                out += v.to_bytes(2, "big")
            elif kind == "int4":
                out += v.to_bytes(4, "big")
            elif kind == "varint":
                out += encode_varint(v)
            elif kind == "str":
                out += encode_string(v)
            elif kind == "bin":
                out += encode_binary(v)
            else:
                out += encode_string(v[0]) + encode_string(v[1])
    return encode_varint(len(out)) + bytes(out)
