"""Property tests: ``decode(encode(p)) == p`` for every packet type at levels 3, 4 and 5, and the
decoder only ever raises :class:`ProtocolError` on arbitrary bytes.

The MQTT 5 property sets are drawn from the specification's table of which property may appear
in which packet (MQTT 5.0, 2.2.2.2, Table 2-4), written out here independently of
``mqttbroker.protocol.properties``, with values inside their valid ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttbroker.errors import ProtocolError
from mqttbroker.protocol.codec import decode, encode
from mqttbroker.protocol.constants import PacketType
from mqttbroker.protocol.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
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
from mqttbroker.protocol.properties import PropertyId as P
from mqttbroker.protocol.reader import FrameReader

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# ---- primitive strategies ----------------------------------------------------------------------

# [MQTT-1.5.3-1/2] well-formed UTF-8, no surrogates, no U+0000
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
short_bytes = st.binary(max_size=24)
packet_id = st.integers(1, 65535)
u8_bool = st.integers(0, 1)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
varint_nonzero = st.integers(1, 268_435_455)
user_props = st.lists(st.tuples(text, text), min_size=1, max_size=3)

# id -> strategy for a valid value (MQTT 5.0 section 3.x.2.x for each property)
VALUE: dict[int, st.SearchStrategy[Any]] = {
    P.PAYLOAD_FORMAT_INDICATOR: u8_bool,
    P.MESSAGE_EXPIRY_INTERVAL: u32,
    P.CONTENT_TYPE: text,
    P.RESPONSE_TOPIC: text.filter(lambda s: s != "" and "+" not in s and "#" not in s),
    P.CORRELATION_DATA: short_bytes,
    P.SUBSCRIPTION_IDENTIFIER: varint_nonzero,  # list-valued, see below
    P.SESSION_EXPIRY_INTERVAL: u32,
    P.ASSIGNED_CLIENT_IDENTIFIER: text,
    P.SERVER_KEEP_ALIVE: u16,
    P.AUTHENTICATION_METHOD: text,
    P.AUTHENTICATION_DATA: short_bytes,
    P.REQUEST_PROBLEM_INFORMATION: u8_bool,
    P.WILL_DELAY_INTERVAL: u32,
    P.REQUEST_RESPONSE_INFORMATION: u8_bool,
    P.RESPONSE_INFORMATION: text,
    P.SERVER_REFERENCE: text,
    P.REASON_STRING: text,
    P.RECEIVE_MAXIMUM: st.integers(1, 0xFFFF),
    P.TOPIC_ALIAS_MAXIMUM: u16,
    P.TOPIC_ALIAS: st.integers(1, 0xFFFF),
    P.MAXIMUM_QOS: u8_bool,
    P.RETAIN_AVAILABLE: u8_bool,
    P.USER_PROPERTY: user_props,  # list-valued
    P.MAXIMUM_PACKET_SIZE: st.integers(1, 0xFFFF_FFFF),
    P.WILDCARD_SUBSCRIPTION_AVAILABLE: u8_bool,
    P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8_bool,
    P.SHARED_SUBSCRIPTION_AVAILABLE: u8_bool,
}

WILL_PROPS = "will"
_ACKS = ("puback", "pubrec", "pubrel", "pubcomp")
# Table 2-4 of MQTT 5.0, by packet
ALLOWED: dict[str, list[int]] = {
    "connect": [P.SESSION_EXPIRY_INTERVAL, P.AUTHENTICATION_METHOD, P.AUTHENTICATION_DATA,
                P.REQUEST_PROBLEM_INFORMATION, P.REQUEST_RESPONSE_INFORMATION,
                P.RECEIVE_MAXIMUM, P.TOPIC_ALIAS_MAXIMUM, P.USER_PROPERTY,
                P.MAXIMUM_PACKET_SIZE],
    WILL_PROPS: [P.PAYLOAD_FORMAT_INDICATOR, P.MESSAGE_EXPIRY_INTERVAL, P.CONTENT_TYPE,
                 P.RESPONSE_TOPIC, P.CORRELATION_DATA, P.WILL_DELAY_INTERVAL, P.USER_PROPERTY],
    "connack": [P.SESSION_EXPIRY_INTERVAL, P.ASSIGNED_CLIENT_IDENTIFIER, P.SERVER_KEEP_ALIVE,
                P.AUTHENTICATION_METHOD, P.AUTHENTICATION_DATA, P.RESPONSE_INFORMATION,
                P.SERVER_REFERENCE, P.REASON_STRING, P.RECEIVE_MAXIMUM, P.TOPIC_ALIAS_MAXIMUM,
                P.MAXIMUM_QOS, P.RETAIN_AVAILABLE, P.USER_PROPERTY, P.MAXIMUM_PACKET_SIZE,
                P.WILDCARD_SUBSCRIPTION_AVAILABLE, P.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                P.SHARED_SUBSCRIPTION_AVAILABLE],
    "publish": [P.PAYLOAD_FORMAT_INDICATOR, P.MESSAGE_EXPIRY_INTERVAL, P.CONTENT_TYPE,
                P.RESPONSE_TOPIC, P.CORRELATION_DATA, P.SUBSCRIPTION_IDENTIFIER, P.TOPIC_ALIAS,
                P.USER_PROPERTY],
    **{ack: [P.REASON_STRING, P.USER_PROPERTY] for ack in _ACKS},
    "subscribe": [P.SUBSCRIPTION_IDENTIFIER, P.USER_PROPERTY],
    "suback": [P.REASON_STRING, P.USER_PROPERTY],
    "unsubscribe": [P.USER_PROPERTY],
    "unsuback": [P.REASON_STRING, P.USER_PROPERTY],
    "disconnect": [P.SESSION_EXPIRY_INTERVAL, P.SERVER_REFERENCE, P.REASON_STRING,
                   P.USER_PROPERTY],
    "auth": [P.AUTHENTICATION_METHOD, P.AUTHENTICATION_DATA, P.REASON_STRING,
             P.USER_PROPERTY],
}


@st.composite
def props_for(draw: st.DrawFn, packet: str) -> dict[int, Any]:
    ids = draw(st.lists(st.sampled_from(ALLOWED[packet]), unique=True, max_size=4))
    out: dict[int, Any] = {}
    for pid in ids:
        if pid == P.SUBSCRIPTION_IDENTIFIER:
            # repeatable in PUBLISH (one per matching subscription), once in SUBSCRIBE
            n = 3 if packet == "publish" else 1
            out[pid] = draw(st.lists(varint_nonzero, min_size=1, max_size=n))
        else:
            out[pid] = draw(VALUE[pid])
    return out


def no_props(packet: str) -> st.SearchStrategy[dict[int, Any]]:
    return st.just({})


def props(level: int, packet: str) -> st.SearchStrategy[dict[int, Any]]:
    return props_for(packet) if level == 5 else no_props(packet)


# ---- packet strategies per level -------------------------------------------------------------

V5_REASON = st.sampled_from([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])
V5_PUBREL_REASON = st.sampled_from([0x00, 0x92])


@st.composite
def connect(draw: st.DrawFn, level: int) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(draw(text), draw(short_bytes), draw(st.integers(0, 2)), draw(st.booleans()),
                    draw(props(level, WILL_PROPS)))
    username = draw(st.none() | text)
    password = draw(st.none() | short_bytes)
    if level < 5 and username is None:
        password = None  # [MQTT-3.1.2-22]
    return Connect("MQIsdp" if level == 3 else "MQTT", level, draw(text), draw(st.booleans()),
                   draw(u16), username, password, will, draw(props(level, "connect")))


@st.composite
def connack(draw: st.DrawFn, level: int) -> Connack:
    # MQTT 3.1 has no session present flag
    present = draw(st.booleans()) if level >= 4 else False
    code = draw(st.integers(0, 5)) if level < 5 else draw(V5_REASON)
    return Connack(present, code, draw(props(level, "connack")))


@st.composite
def publish(draw: st.DrawFn, level: int) -> Publish:
    qos = draw(st.integers(0, 2))
    return Publish(draw(text), draw(st.binary(max_size=300)), qos, draw(st.booleans()),
                   draw(st.booleans()) if qos else False,  # [MQTT-3.3.1-2]
                   draw(packet_id) if qos else None,  # [MQTT-2.3.1-5]
                   draw(props(level, "publish")))


@st.composite
def ack(draw: st.DrawFn, level: int, cls: type, name: str) -> Packet:
    if level < 5:
        return cls(draw(packet_id))  # type: ignore[no-any-return]
    reason = V5_PUBREL_REASON if name in ("pubrel", "pubcomp") else V5_REASON
    return cls(draw(packet_id), draw(reason), draw(props_for(name)))  # type: ignore[no-any-return]


@st.composite
def subscription(draw: st.DrawFn, level: int) -> Subscription:
    if level < 5:
        return Subscription(draw(text), draw(st.integers(0, 2)))
    return Subscription(draw(text), draw(st.integers(0, 2)), draw(st.booleans()),
                        draw(st.booleans()), draw(st.integers(0, 2)))


@st.composite
def subscribe(draw: st.DrawFn, level: int) -> Subscribe:
    return Subscribe(draw(packet_id), draw(st.lists(subscription(level), min_size=1, max_size=4)),
                     draw(props(level, "subscribe")))


@st.composite
def suback(draw: st.DrawFn, level: int) -> Suback:
    codes = (st.sampled_from([0, 1, 2, 0x80]) if level < 5  # [MQTT-3.9.3-2]
             else st.sampled_from([0, 1, 2, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1,
                                   0xA2]))
    return Suback(draw(packet_id), draw(st.lists(codes, min_size=1, max_size=5)),
                  draw(props(level, "suback")))


@st.composite
def unsubscribe(draw: st.DrawFn, level: int) -> Unsubscribe:
    return Unsubscribe(draw(packet_id), draw(st.lists(text, min_size=1, max_size=4)),
                       draw(props(level, "unsubscribe")))


@st.composite
def unsuback(draw: st.DrawFn, level: int) -> Unsuback:
    if level < 5:
        return Unsuback(draw(packet_id))
    codes = st.sampled_from([0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91])
    return Unsuback(draw(packet_id), draw(st.lists(codes, min_size=1, max_size=5)),
                    draw(props_for("unsuback")))


@st.composite
def disconnect(draw: st.DrawFn, level: int) -> Disconnect:
    if level < 5:
        return Disconnect()
    return Disconnect(draw(st.sampled_from([0x00, 0x04, 0x80, 0x81, 0x82, 0x8B, 0x8E, 0x93])),
                      draw(props_for("disconnect")))


@st.composite
def auth(draw: st.DrawFn) -> Auth:
    return Auth(draw(st.sampled_from([0x00, 0x18, 0x19])), draw(props_for("auth")))


def any_packet(level: int) -> st.SearchStrategy[Packet]:
    options: list[st.SearchStrategy[Any]] = [
        connect(level), connack(level), publish(level),
        ack(level, Puback, "puback"), ack(level, Pubrec, "pubrec"),
        ack(level, Pubrel, "pubrel"), ack(level, Pubcomp, "pubcomp"),
        subscribe(level), suback(level), unsubscribe(level), unsuback(level),
        st.just(Pingreq()), st.just(Pingresp()), disconnect(level),
    ]
    if level == 5:
        options.append(auth())
    return st.one_of(options)


def roundtrip(p: Packet, level: int) -> Packet:
    wire = encode(p, level)
    frames = FrameReader().feed(wire)
    assert len(frames) == 1
    first, body = frames[0]
    assert first >> 4 == p.type
    return decode(first, body, level)


LEVELS = [3, 4, 5]

# ---- one test per packet type and level --------------------------------------------------------

STRATEGIES: dict[str, Callable[[int], st.SearchStrategy[Any]]] = {
    "connect": connect, "connack": connack, "publish": publish, "subscribe": subscribe,
    "suback": suback, "unsubscribe": unsubscribe, "unsuback": unsuback,
    "disconnect": disconnect,
    "puback": lambda lv: ack(lv, Puback, "puback"),
    "pubrec": lambda lv: ack(lv, Pubrec, "pubrec"),
    "pubrel": lambda lv: ack(lv, Pubrel, "pubrel"),
    "pubcomp": lambda lv: ack(lv, Pubcomp, "pubcomp"),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_roundtrip_per_packet_type(name: str, level: int) -> None:
    @SETTINGS
    @given(STRATEGIES[name](level))
    def check(p: Packet) -> None:
        assert roundtrip(p, level) == p

    check()


@pytest.mark.parametrize("level", LEVELS)
def test_roundtrip_pingreq_pingresp(level: int) -> None:
    assert roundtrip(Pingreq(), level) == Pingreq()
    assert roundtrip(Pingresp(), level) == Pingresp()


@SETTINGS
@given(auth())
def test_roundtrip_auth_mqtt5(p: Auth) -> None:
    assert roundtrip(p, 5) == p


@pytest.mark.parametrize("level", LEVELS)
def test_roundtrip_stream_of_packets(level: int) -> None:
    """Many packets encoded back to back, split by FrameReader in random chunks."""
    @SETTINGS
    @given(st.lists(any_packet(level), min_size=1, max_size=8), st.data())
    def check(packets: list[Packet], data: st.DataObject) -> None:
        stream = b"".join(encode(p, level) for p in packets)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
        r = FrameReader()
        frames: list[tuple[int, bytes]] = []
        prev = 0
        for c in cuts + [len(stream)]:
            frames += r.feed(stream[prev:c])
            prev = c
        assert [decode(f, b, level) for f, b in frames] == packets
        assert r.buffered() == 0

    check()


@pytest.mark.parametrize("level", LEVELS)
def test_encode_is_stable_across_decode(level: int) -> None:
    """encode(decode(encode(p))) == encode(p): one canonical wire form per packet."""
    @SETTINGS
    @given(any_packet(level))
    def check(p: Packet) -> None:
        wire = encode(p, level)
        assert encode(roundtrip(p, level), level) == wire

    check()


@SETTINGS
@given(st.integers(0, 268_435_455))
def test_remaining_length_varint_roundtrip(n: int) -> None:
    """Any Remaining Length 0..268,435,455 [MQTT 2.2.3] is framed and read back (header only)."""
    from mqttbroker.protocol.primitives import Buffer, encode_varint, read_varint

    enc = encode_varint(n)
    assert 1 <= len(enc) <= 4
    assert read_varint(Buffer(enc)) == n
    r = FrameReader()
    assert r.feed(b"\x30" + enc) == ([(0x30, b"")] if n == 0 else [])


# ---- the decoder only ever raises ProtocolError ----------------------------------------------

def _decode_or_protocol_error(first: int, body: bytes, level: int) -> None:
    try:
        decode(first, body, level)
    except ProtocolError:
        pass


@SETTINGS
@given(st.integers(0, 255), st.binary(max_size=64), st.sampled_from(LEVELS))
def test_decode_random_bytes_only_raises_protocol_error(first: int, body: bytes,
                                                        level: int) -> None:
    _decode_or_protocol_error(first, body, level)


@SETTINGS
@given(st.sampled_from(list(PacketType)), st.integers(0, 15), st.binary(max_size=64),
       st.sampled_from(LEVELS))
def test_decode_random_body_per_type_only_raises_protocol_error(ptype: PacketType, flags: int,
                                                                body: bytes, level: int) -> None:
    _decode_or_protocol_error((ptype << 4) | flags, body, level)


@pytest.mark.parametrize("level", LEVELS)
def test_decode_mutated_valid_packets_only_raises_protocol_error(level: int) -> None:
    """Truncate, extend and flip bytes of valid packets: deeper paths than random bytes reach."""
    @SETTINGS
    @given(any_packet(level), st.data())
    def check(p: Packet, data: st.DataObject) -> None:
        wire = encode(p, level)
        first, body = FrameReader().feed(wire)[0]
        mutated = bytearray(body)
        op = data.draw(st.sampled_from(["truncate", "extend", "flip", "insert", "delete"]))
        if op == "truncate":
            mutated = mutated[:data.draw(st.integers(0, len(mutated)))]
        elif op == "extend":
            mutated += data.draw(st.binary(min_size=1, max_size=8))
        elif mutated:
            i = data.draw(st.integers(0, len(mutated) - 1))
            if op == "flip":
                mutated[i] ^= data.draw(st.integers(1, 255))
            elif op == "insert":
                mutated.insert(i, data.draw(st.integers(0, 255)))
            else:
                del mutated[i]
        _decode_or_protocol_error(first, bytes(mutated), level)

    check()


@SETTINGS
@given(st.binary(max_size=200), st.integers(2, 300))
def test_frame_reader_random_bytes_only_raises_protocol_error(data: bytes, limit: int) -> None:
    r = FrameReader(max_packet_size=limit)
    try:
        frames = r.feed(data)
    except ProtocolError:
        return
    assert sum(1 + len(b) for _, b in frames) <= len(data)
    for _, body in frames:
        assert len(body) < limit


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(LEVELS))
def test_frame_then_decode_random_stream_only_raises_protocol_error(data: bytes,
                                                                    level: int) -> None:
    try:
        frames = FrameReader().feed(data)
    except ProtocolError:
        return
    for first, body in frames:
        _decode_or_protocol_error(first, body, level)
