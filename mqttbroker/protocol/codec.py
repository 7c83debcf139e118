"""Encode and decode MQTT control packets for protocol levels 3 (3.1), 4 (3.1.1) and 5.

``decode(first_byte, body, level)`` takes one frame from :mod:`reader` and returns a packet, or
raises :class:`ProtocolError` with the reason code the failure deserves. ``encode(packet, level)``
returns the bytes to send.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..errors import EncodeError, ProtocolError
from .constants import PROTOCOL_NAMES, PacketType, ProtocolLevel, ReasonCode
from .packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
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
from .primitives import (
    Buffer,
    decode_utf8,
    encode_binary,
    encode_string,
    encode_varint,
    read_binary,
    read_string,
)
from .properties import WILL, encode_properties, read_properties

V5: Final[int] = ProtocolLevel.MQTT_5


def _malformed(msg: str) -> ProtocolError:
    return ProtocolError(ReasonCode.MALFORMED_PACKET, msg)


def _protocol(msg: str) -> ProtocolError:
    return ProtocolError(ReasonCode.PROTOCOL_ERROR, msg)


def _done(buf: Buffer, what: str) -> None:
    if buf.remaining():
        raise _malformed(f"{buf.remaining()} unexpected bytes at the end of {what}")


def _packet_id(buf: Buffer) -> int:
    pid = buf.read_u16()
    if pid == 0:
        # [MQTT-2.3.1-1] packets that need an identifier carry a non-zero one
        raise _malformed("packet identifier 0")
    return pid


# ---------------------------------------------------------------------------------------------
# decoding

def peek_protocol_level(body: bytes) -> int | None:
    """The protocol level byte of a CONNECT body, if it can be found, before full decoding
    (so that a malformed MQTT 5 CONNECT can still be answered in MQTT 5)."""
    if len(body) < 2:
        return None
    pos = 2 + ((body[0] << 8) | body[1])
    if pos >= len(body):
        return None
    level = body[pos]
    if level & 0x80 and level & 0x7F in (3, 4):  # a bridge's (try_private)
        level &= 0x7F
    return level if level in (3, 4, 5) else None


def decode_connect(flags: int, body: bytes) -> Connect:
    """CONNECT [MQTT 3.1]; the level is read from the packet itself."""
    buf = Buffer(body)
    name = read_string(buf)
    level = buf.read_byte()
    # a bridge's CONNECT (Mosquitto's try_private): the 3.x level with its top bit set
    bridge = bool(level & 0x80) and (level & 0x7F) in (3, 4)
    if bridge:
        level &= 0x7F
    if name not in ("MQTT", "MQIsdp"):
        # [MQTT-3.1.2-1] an unknown protocol name: close without CONNACK
        raise _protocol(f"unknown protocol name {name!r}")
    if PROTOCOL_NAMES.get(level) != name:  # (an unknown level too; no enum made per CONNECT)
        # [MQTT-3.1.2-2] answered with CONNACK 0x01 (v5: 0x84) and closed
        raise ProtocolError(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
                            f"unsupported protocol {name!r} level {level}")
    cflags = buf.read_byte()
    if cflags & 0x01:
        raise _malformed("reserved CONNECT flag set [MQTT-3.1.2-3]")
    clean = bool(cflags & 0x02)
    will_flag = bool(cflags & 0x04)
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    has_password = bool(cflags & 0x40)
    has_username = bool(cflags & 0x80)
    if will_qos == 3:
        raise _malformed("will QoS 3 [MQTT-3.1.2-14]")
    if not will_flag and (will_qos or will_retain):
        raise _malformed("will QoS/retain set without the will flag [MQTT-3.1.2-11/13/15]")
    if level < V5 and has_password and not has_username:
        raise _malformed("password flag without user name flag [MQTT-3.1.2-22]")
    keep_alive = buf.read_u16()
    props = read_properties(buf, PacketType.CONNECT) if level == V5 else {}
    client_id = read_string(buf)
    will = None
    if will_flag:
        wprops = read_properties(buf, WILL) if level == V5 else {}
        wtopic = read_string(buf)
        wpayload = read_binary(buf)
        will = Will(wtopic, wpayload, will_qos, will_retain, wprops)
    username = read_string(buf) if has_username else None
    password = read_binary(buf) if has_password else None
    _done(buf, "CONNECT")
    return Connect(name, level, client_id, clean, keep_alive, username, password, will, props,
                   bridge)


def _decode_publish(flags: int, body: bytes, level: int) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise _malformed("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise _malformed("PUBLISH with DUP set at QoS 0 [MQTT-3.3.1-2]")
    n = len(body)
    if n < 2:
        raise _malformed("PUBLISH truncated")
    tlen = (body[0] << 8) | body[1]
    pos = 2 + tlen
    if pos > n:
        raise _malformed("PUBLISH topic name truncated")
    topic = decode_utf8(body[2:pos])
    pid = None
    if qos:
        if pos + 2 > n:
            raise _malformed("PUBLISH packet identifier truncated")
        pid = (body[pos] << 8) | body[pos + 1]
        if pid == 0:
            raise _malformed("packet identifier 0 [MQTT-2.3.1-1]")
        pos += 2
    props: Properties
    if level == V5:
        buf = Buffer(body, pos)
        props = read_properties(buf, PacketType.PUBLISH)
        pos = buf.pos
    else:
        props = {}
    return Publish(topic, bytes(body[pos:]), qos, bool(flags & 0x01), dup, pid, props)


def _ack_decoder(cls: type[Puback | Pubrec | Pubrel | Pubcomp],
                 ptype: PacketType) -> Callable[[int, bytes, int], Packet]:
    def decode(flags: int, body: bytes, level: int) -> Packet:
        buf = Buffer(body)
        pid = _packet_id(buf)
        code = 0
        props: Properties = {}
        if level == V5 and buf.remaining():
            code = buf.read_byte()
            if buf.remaining():
                props = read_properties(buf, ptype)
        _done(buf, ptype.name)
        return cls(pid, code, props)
    return decode


def _decode_subscribe(flags: int, body: bytes, level: int) -> Subscribe:
    buf = Buffer(body)
    pid = _packet_id(buf)
    props = read_properties(buf, PacketType.SUBSCRIBE) if level == V5 else {}
    subs: list[Subscription] = []
    while buf.remaining():
        topic_filter = read_string(buf)
        opts = buf.read_byte()
        qos = opts & 0x03
        if level == V5:
            rh = (opts >> 4) & 0x03
            if opts & 0xC0:
                raise _malformed("SUBSCRIBE options reserved bits set [MQTT-3.8.3-5]")
            if qos == 3 or rh == 3:
                raise _protocol("SUBSCRIBE with QoS 3 or retain handling 3 [MQTT 3.8.3.1]")
            subs.append(Subscription(topic_filter, qos, bool(opts & 0x04), bool(opts & 0x08), rh))
        else:
            if qos == 3:
                raise _malformed("SUBSCRIBE requested QoS 3 [MQTT-3.8.3-4]")
            if opts & 0xFC:
                raise _malformed("SUBSCRIBE reserved bits set [MQTT-3.8.3-4]")
            subs.append(Subscription(topic_filter, qos))
    if not subs:
        # [MQTT-3.8.3-3] at least one topic filter
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "SUBSCRIBE with no topic filter")
    return Subscribe(pid, subs, props)


def _decode_unsubscribe(flags: int, body: bytes, level: int) -> Unsubscribe:
    buf = Buffer(body)
    pid = _packet_id(buf)
    props = read_properties(buf, PacketType.UNSUBSCRIBE) if level == V5 else {}
    filters: list[str] = []
    while buf.remaining():
        filters.append(read_string(buf))
    if not filters:
        # [MQTT-3.10.3-2] at least one topic filter
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "UNSUBSCRIBE with no topic filter")
    return Unsubscribe(pid, filters, props)


def _decode_empty(cls: type[Pingreq | Pingresp]) -> Callable[[int, bytes, int], Packet]:
    def decode(flags: int, body: bytes, level: int) -> Packet:
        if body:
            raise _malformed(f"{cls.__name__.upper()} with a body")
        return cls()
    return decode


def _decode_disconnect(flags: int, body: bytes, level: int) -> Disconnect:
    if level != V5:
        if body:
            raise _malformed("DISCONNECT with a body")
        return Disconnect()
    buf = Buffer(body)
    code = buf.read_byte() if buf.remaining() else 0
    props = read_properties(buf, PacketType.DISCONNECT) if buf.remaining() else {}
    _done(buf, "DISCONNECT")
    return Disconnect(code, props)


def _decode_auth(flags: int, body: bytes, level: int) -> Auth:
    if level != V5:
        raise _malformed("AUTH is not an MQTT 3 packet")
    buf = Buffer(body)
    code = buf.read_byte() if buf.remaining() else 0
    props = read_properties(buf, PacketType.AUTH) if buf.remaining() else {}
    _done(buf, "AUTH")
    return Auth(code, props)


def _decode_connack(flags: int, body: bytes, level: int) -> Connack:
    buf = Buffer(body)
    ack_flags = buf.read_byte()
    code = buf.read_byte()
    props = read_properties(buf, PacketType.CONNACK) if level == V5 else {}
    _done(buf, "CONNACK")
    return Connack(bool(ack_flags & 1), code, props)


def _decode_suback(flags: int, body: bytes, level: int) -> Suback:
    buf = Buffer(body)
    pid = _packet_id(buf)
    props = read_properties(buf, PacketType.SUBACK) if level == V5 else {}
    return Suback(pid, list(buf.rest()), props)


def _decode_unsuback(flags: int, body: bytes, level: int) -> Unsuback:
    buf = Buffer(body)
    pid = _packet_id(buf)
    if level != V5:
        _done(buf, "UNSUBACK")
        return Unsuback(pid)
    props = read_properties(buf, PacketType.UNSUBACK)
    return Unsuback(pid, list(buf.rest()), props)


_DECODERS: Final[dict[int, Callable[[int, bytes, int], Packet]]] = {
    PacketType.CONNECT: lambda f, b, lv: decode_connect(f, b),
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBLISH: _decode_publish,
    PacketType.PUBACK: _ack_decoder(Puback, PacketType.PUBACK),
    PacketType.PUBREC: _ack_decoder(Pubrec, PacketType.PUBREC),
    PacketType.PUBREL: _ack_decoder(Pubrel, PacketType.PUBREL),
    PacketType.PUBCOMP: _ack_decoder(Pubcomp, PacketType.PUBCOMP),
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _decode_unsuback,
    PacketType.PINGREQ: _decode_empty(Pingreq),
    PacketType.PINGRESP: _decode_empty(Pingresp),
    PacketType.DISCONNECT: _decode_disconnect,
    PacketType.AUTH: _decode_auth,
}

# [MQTT-2.2.2-1] fixed-header flags that every packet but PUBLISH must carry
_REQUIRED_FLAGS: Final[dict[int, int]] = {t: (0x02 if t in (PacketType.PUBREL, PacketType.SUBSCRIBE,
                                     PacketType.UNSUBSCRIBE) else 0x00)
                   for t in PacketType if t != PacketType.PUBLISH}


# MQTT 3.1 (level 3) gives every packet DUP, QoS and RETAIN bits: PUBREL, SUBSCRIBE and
# UNSUBSCRIBE are QoS 1 (0x02) and a client sets DUP (0x08) when it sends one again [MQTT 3.1,
# 2.1 and 3.6/3.8/3.10]. 3.1.1 fixed the flags [MQTT-2.2.2-1]; 3.1 clients (and their resent
# PUBREL after a reconnect) must still be understood.
_V31_DUP_ALLOWED: Final = frozenset({PacketType.PUBREL, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE})


def decode(first_byte: int, body: bytes, level: int) -> Packet:
    """Decode one packet from its first byte and body for protocol ``level``."""
    ptype = first_byte >> 4
    flags = first_byte & 0x0F
    if ptype == 0:
        raise _malformed("reserved packet type 0")
    if ptype != PacketType.PUBLISH and flags != _REQUIRED_FLAGS[ptype] and not (
            level == ProtocolLevel.MQTT_3_1 and ptype in _V31_DUP_ALLOWED
            and flags & ~0x08 == 0x02):
        # 3.1.1 [MQTT-2.2.2-2]; 5.0 [MQTT-2.1.3-1]
        rule = "MQTT-2.1.3-1" if level == V5 else "MQTT-2.2.2-2"
        raise _malformed(f"{PacketType(ptype).name} with invalid fixed-header flags "
                         f"0x{flags:X} [{rule}]")
    return _DECODERS[ptype](flags, body, level)


# ---------------------------------------------------------------------------------------------
# encoding

def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_publish_parts(topic: str, payload: bytes, qos: int, retain: bool, dup: bool,
                         level: int, props: Properties | None = None) -> tuple[bytes, bytes]:
    """Split a PUBLISH around its packet identifier: ``head + pid + tail`` is the packet.

    Fan-out encodes once and sends ``head + pid.to_bytes(2) + tail`` to each subscriber; at
    QoS 0 ``head + tail`` is the whole packet.
    """
    tb = encode_string(topic)
    pb = encode_properties(props) if level == V5 else b""
    rl = len(tb) + (2 if qos else 0) + len(pb) + len(payload)
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    head = bytes((first,)) + encode_varint(rl) + tb
    return head, pb + payload


def encode_publish(p: Publish, level: int) -> bytes:
    """A whole PUBLISH packet."""
    head, tail = encode_publish_parts(p.topic, p.payload, p.qos, p.retain, p.dup, level,
                                      p.properties)
    if p.qos:
        assert p.packet_id is not None
        return head + p.packet_id.to_bytes(2, "big") + tail
    return head + tail


def _encode_ack(first: int, pid: int, code: int, props: Properties, level: int) -> bytes:
    if level == V5 and (code or props):
        body = pid.to_bytes(2, "big") + bytes((code,))
        if props:
            body += encode_properties(props)
        return _frame(first, body)
    return bytes((first, 2, pid >> 8, pid & 0xFF))


def encode(p: Packet | object, level: int) -> bytes:
    """Encode any packet for protocol ``level``; anything else is an EncodeError (``object``
    in the signature so that the mypyc build, `make compiled`, which checks argument types on
    entry, also gets this far and says so instead of raising TypeError)."""
    if isinstance(p, Publish):
        return encode_publish(p, level)
    if isinstance(p, (Puback, Pubrec, Pubcomp)):
        return _encode_ack(p.type << 4, p.packet_id, p.reason_code, p.properties, level)
    if isinstance(p, Pubrel):
        return _encode_ack(0x62, p.packet_id, p.reason_code, p.properties, level)
    if isinstance(p, Connack):
        flags = 1 if (p.session_present and level >= ProtocolLevel.MQTT_3_1_1) else 0
        body = bytes((flags, p.return_code))
        if level == V5:
            body += encode_properties(p.properties)
        return _frame(0x20, body)
    if isinstance(p, Suback):
        body = p.packet_id.to_bytes(2, "big")
        if level == V5:
            body += encode_properties(p.properties)
        return _frame(0x90, body + bytes(p.return_codes))
    if isinstance(p, Unsuback):
        body = p.packet_id.to_bytes(2, "big")
        if level == V5:
            body += encode_properties(p.properties) + bytes(p.reason_codes)
        return _frame(0xB0, body)
    if isinstance(p, Pingreq):
        return b"\xc0\x00"
    if isinstance(p, Pingresp):
        return b"\xd0\x00"
    if isinstance(p, Disconnect):
        if level == V5 and (p.reason_code or p.properties):
            body = bytes((p.reason_code,))
            if p.properties:
                body += encode_properties(p.properties)
            return _frame(0xE0, body)
        return b"\xe0\x00"
    if isinstance(p, Connect):
        return _encode_connect(p)
    if isinstance(p, Subscribe):
        sbody = bytearray(p.packet_id.to_bytes(2, "big"))
        if level == V5:
            sbody += encode_properties(p.properties)
        for s in p.subscriptions:
            opts = s.qos
            if level == V5:
                opts |= (s.no_local << 2) | (s.retain_as_published << 3) | (s.retain_handling << 4)
            sbody += encode_string(s.topic_filter) + bytes((opts,))
        return _frame(0x82, bytes(sbody))
    if isinstance(p, Unsubscribe):
        ubody = bytearray(p.packet_id.to_bytes(2, "big"))
        if level == V5:
            ubody += encode_properties(p.properties)
        for f in p.topic_filters:
            ubody += encode_string(f)
        return _frame(0xA2, bytes(ubody))
    if isinstance(p, Auth):
        body = bytes((p.reason_code,))
        if p.properties:
            body += encode_properties(p.properties)
        return _frame(0xF0, body)
    raise EncodeError(f"cannot encode {p!r}")


def _encode_connect(p: Connect) -> bytes:
    level = p.protocol_level
    flags = (0x02 if p.clean_session else 0)
    if p.will is not None:
        flags |= 0x04 | (p.will.qos << 3) | (0x20 if p.will.retain else 0)
    if p.password is not None:
        flags |= 0x40
    if p.username is not None:
        flags |= 0x80
    level_byte = level | 0x80 if p.bridge and level != V5 else level  # try_private
    body = bytearray(encode_string(p.protocol_name) + bytes((level_byte, flags)))
    body += p.keep_alive.to_bytes(2, "big")
    if level == V5:
        body += encode_properties(p.properties)
    body += encode_string(p.client_id)
    if p.will is not None:
        if level == V5:
            body += encode_properties(p.will.properties)
        body += encode_string(p.will.topic) + encode_binary(p.will.payload)
    if p.username is not None:
        body += encode_string(p.username)
    if p.password is not None:
        body += encode_binary(p.password)
    return _frame(0x10, bytes(body))
