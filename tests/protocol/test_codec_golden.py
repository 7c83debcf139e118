"""Golden byte tables for every MQTT 3.1 / 3.1.1 control packet (and a few MQTT 5 ones).

Every hex string below was written by hand from the packet layouts of the OASIS MQTT 3.1.1
specification (chapter 3) and MQTT 5.0 (chapter 3), never produced by the encoder under test.
Each row is checked both ways: the bytes are split by :class:`FrameReader` and
``decode(first_byte, body, level)`` must give the packet; ``encode(packet, level)`` must give
the bytes. Rows marked one-way only check the direction named.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mqttbroker.protocol.codec import decode, encode
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
from mqttbroker.protocol.properties import PropertyId
from mqttbroker.protocol.reader import FrameReader


def h(s: str) -> bytes:
    """Hex with spaces (and ``|`` as a visual field separator) to bytes."""
    return bytes.fromhex(s.replace("|", " "))


@dataclass(frozen=True)
class Golden:
    id: str
    level: int
    wire: str
    packet: Packet
    decode: bool = True
    encode: bool = True


# 200-byte payload: Remaining Length 203 = 0xCB 0x01 (two-byte variable byte integer)
_BIG = bytes(range(200))

GOLDEN: list[Golden] = [
    # ---- CONNECT [MQTT 3.1] ---------------------------------------------------------------
    Golden(
        "connect-311-minimal", 4,
        # 10 | RL 15 | "MQTT" | level 4 | flags clean | keep alive 60 | client id "abc"
        "10 0F | 00 04 4D 51 54 54 | 04 | 02 | 00 3C | 00 03 61 62 63",
        Connect("MQTT", 4, "abc", True, 60),
    ),
    Golden(
        "connect-31-mqisdp-minimal", 3,
        # MQTT 3.1: protocol name "MQIsdp", level 3
        "10 11 | 00 06 4D 51 49 73 64 70 | 03 | 02 | 00 3C | 00 03 61 62 63",
        Connect("MQIsdp", 3, "abc", True, 60),
    ),
    Golden(
        "connect-311-will-qos1-retain-user-pass-persistent", 4,
        # flags: user 0x80 | password 0x40 | will retain 0x20 | will QoS 1 (0x08) | will 0x04
        "10 1B | 00 04 4D 51 54 54 | 04 | EC | 00 0A | 00 01 63 | 00 01 77 | 00 03 62 79 65"
        " | 00 01 75 | 00 01 70",
        Connect("MQTT", 4, "c", False, 10, "u", b"p", Will("w", b"bye", 1, True)),
    ),
    Golden(
        "connect-31-will-qos2-user-only", 3,
        # flags: user 0x80 | will QoS 2 (0x10) | will 0x04 | clean 0x02 = 0x96; empty will payload
        "10 1D | 00 06 4D 51 49 73 64 70 | 03 | 96 | 00 1E | 00 02 69 64 | 00 03 74 2F 77 | 00 00"
        " | 00 04 75 73 65 72",
        Connect("MQIsdp", 3, "id", True, 30, "user", None, Will("t/w", b"", 2, False)),
    ),
    Golden(
        "connect-311-empty-client-id-user-pass-keepalive-0", 4,
        # [MQTT-3.1.3-6] a zero-byte client id is allowed (with clean session)
        "10 17 | 00 04 4D 51 54 54 | 04 | C2 | 00 00 | 00 00 | 00 04 75 73 65 72 | 00 03 70 77 64",
        Connect("MQTT", 4, "", True, 0, "user", b"pwd"),
    ),
    Golden(
        "connect-311-binary-password-and-will-payload", 4,
        # password and will message are binary data, not strings: invalid UTF-8 is fine there
        "10 1D | 00 04 4D 51 54 54 | 04 | C6 | FF FF | 00 01 78 | 00 01 74 | 00 03 FF 00 C0"
        " | 00 01 75 | 00 03 FF 00 C0",
        Connect("MQTT", 4, "x", True, 65535, "u", b"\xff\x00\xc0", Will("t", b"\xff\x00\xc0")),
    ),
    Golden(
        "connect-5-receive-maximum", 5,
        # MQTT 5: properties after keep alive: length 3, Receive Maximum (0x21) = 20
        "10 10 | 00 04 4D 51 54 54 | 05 | 02 | 00 3C | 03 21 00 14 | 00 00",
        Connect("MQTT", 5, "", True, 60, properties={PropertyId.RECEIVE_MAXIMUM: 20}),
    ),
    Golden(
        "connect-5-will-delay", 5,
        # will properties: length 5, Will Delay Interval (0x18) = 10
        "10 1A | 00 04 4D 51 54 54 | 05 | 06 | 00 3C | 00 | 00 01 63 | 05 18 00 00 00 0A"
        " | 00 01 77 | 00 01 78",
        Connect("MQTT", 5, "c", True, 60,
                will=Will("w", b"x", 0, False, {PropertyId.WILL_DELAY_INTERVAL: 10})),
    ),
    # ---- CONNACK [MQTT 3.2] ---------------------------------------------------------------
    Golden("connack-311-accepted", 4, "20 02 00 00", Connack(False, 0)),
    Golden("connack-311-session-present", 4, "20 02 01 00", Connack(True, 0)),
    Golden("connack-311-refused-not-authorized", 4, "20 02 00 05", Connack(False, 5)),
    Golden("connack-311-refused-bad-version", 4, "20 02 00 01", Connack(False, 1)),
    Golden("connack-31-accepted", 3, "20 02 00 00", Connack(False, 0)),
    Golden("connack-31-identifier-rejected", 3, "20 02 00 02", Connack(False, 2)),
    # MQTT 3.1 has no session present flag: the first byte is reserved and stays 0
    Golden("connack-31-session-present-not-sent", 3, "20 02 00 00", Connack(True, 0),
           decode=False),
    Golden("connack-5-no-properties", 5, "20 03 01 00 00", Connack(True, 0)),
    Golden("connack-5-topic-alias-maximum", 5, "20 06 00 00 03 22 00 0A",
           Connack(False, 0, {PropertyId.TOPIC_ALIAS_MAXIMUM: 10})),
    # ---- PUBLISH [MQTT 3.3] ---------------------------------------------------------------
    Golden("publish-qos0", 4, "30 07 | 00 03 61 2F 62 | 68 69", Publish("a/b", b"hi")),
    Golden("publish-qos0-retain", 4, "31 07 | 00 03 61 2F 62 | 68 69",
           Publish("a/b", b"hi", retain=True)),
    Golden("publish-qos0-retain-empty-payload", 4, "31 05 | 00 03 61 2F 62",
           Publish("a/b", b"", retain=True)),
    Golden("publish-qos1", 4, "32 09 | 00 03 61 2F 62 | 00 0A | 68 69",
           Publish("a/b", b"hi", 1, packet_id=10)),
    Golden("publish-qos1-dup", 4, "3A 09 | 00 03 61 2F 62 | 00 0A | 68 69",
           Publish("a/b", b"hi", 1, dup=True, packet_id=10)),
    Golden("publish-qos1-retain", 4, "33 09 | 00 03 61 2F 62 | 00 0A | 68 69",
           Publish("a/b", b"hi", 1, retain=True, packet_id=10)),
    Golden("publish-qos2", 4, "34 09 | 00 03 61 2F 62 | 12 34 | 68 69",
           Publish("a/b", b"hi", 2, packet_id=0x1234)),
    Golden("publish-qos2-dup-retain", 4, "3D 09 | 00 03 61 2F 62 | 12 34 | 68 69",
           Publish("a/b", b"hi", 2, True, True, 0x1234)),
    Golden("publish-qos2-max-packet-id", 4, "34 07 | 00 01 74 | FF FF | 00 00",
           Publish("t", b"\x00\x00", 2, packet_id=65535)),
    Golden("publish-31-qos1", 3, "32 09 | 00 03 61 2F 62 | 00 0A | 68 69",
           Publish("a/b", b"hi", 1, packet_id=10)),
    Golden("publish-utf8-topic", 4,
           # "ü/€": C3 BC | 2F | E2 82 AC
           "30 0A | 00 06 C3 BC 2F E2 82 AC | 68 69", Publish("\u00fc/\u20ac", b"hi")),
    Golden("publish-bom-not-stripped-mqtt-1-5-3-3", 4,
           # [MQTT-1.5.3-3] EF BB BF is U+FEFF and must not be skipped or stripped
           "30 06 | 00 04 EF BB BF 61", Publish("\ufeffa", b"")),
    Golden("publish-two-byte-remaining-length", 4,
           "30 CB 01 | 00 01 74 | " + _BIG.hex(), Publish("t", _BIG)),
    Golden("publish-5-qos1-message-expiry", 5,
           # topic "a", packet id 1, properties: length 5, Message Expiry (0x02) = 60, payload "x"
           "32 0C | 00 01 61 | 00 01 | 05 02 00 00 00 3C | 78",
           Publish("a", b"x", 1, packet_id=1,
                   properties={PropertyId.MESSAGE_EXPIRY_INTERVAL: 60})),
    Golden("publish-5-qos0-no-properties", 5, "30 05 | 00 01 61 | 00 | 78", Publish("a", b"x")),
    # ---- PUBACK / PUBREC / PUBREL / PUBCOMP [MQTT 3.4 - 3.7] --------------------------------
    Golden("puback", 4, "40 02 00 01", Puback(1)),
    Golden("pubrec", 4, "50 02 00 02", Pubrec(2)),
    # [MQTT-3.6.1-1] PUBREL fixed header flags are 0010
    Golden("pubrel", 4, "62 02 00 03", Pubrel(3)),
    Golden("pubcomp", 4, "70 02 FF FF", Pubcomp(65535)),
    Golden("puback-31", 3, "40 02 01 00", Puback(256)),
    Golden("pubrec-31", 3, "50 02 01 00", Pubrec(256)),
    Golden("pubrel-31", 3, "62 02 01 00", Pubrel(256)),
    Golden("pubcomp-31", 3, "70 02 00 01", Pubcomp(1)),
    # MQTT 5: reason code may be omitted when 0 with no properties [MQTT 3.4.2.1]
    Golden("puback-5-success-short", 5, "40 02 00 01", Puback(1)),
    Golden("puback-5-no-matching-subscribers", 5, "40 03 00 01 10", Puback(1, 0x10)),
    Golden("pubrec-5-user-property", 5, "50 0B 00 01 00 07 26 00 01 6B 00 01 76",
           Pubrec(1, 0, {PropertyId.USER_PROPERTY: [("k", "v")]})),
    Golden("pubrel-5-not-found", 5, "62 03 00 07 92", Pubrel(7, 0x92)),
    Golden("pubcomp-5-reason-string", 5, "70 08 00 07 92 04 1F 00 01 78",
           Pubcomp(7, 0x92, {PropertyId.REASON_STRING: "x"})),
    # ---- SUBSCRIBE / SUBACK [MQTT 3.8, 3.9] ------------------------------------------------
    Golden("subscribe-three-filters", 4,
           # [MQTT-3.8.1-1] flags 0010; pid 1; "a/b" QoS 1, "c/#" QoS 2, "+" QoS 0
           "82 12 | 00 01 | 00 03 61 2F 62 01 | 00 03 63 2F 23 02 | 00 01 2B 00",
           Subscribe(1, [Subscription("a/b", 1), Subscription("c/#", 2), Subscription("+", 0)])),
    Golden("subscribe-31-one-filter", 3, "82 08 | 00 0A | 00 03 61 2F 62 02",
           Subscribe(10, [Subscription("a/b", 2)])),
    Golden("suback-with-failure-0x80", 4, "90 05 | 00 01 | 01 80 00",
           Suback(1, [1, 0x80, 0])),
    Golden("suback-31", 3, "90 03 | 00 0A | 02", Suback(10, [2])),
    Golden("subscribe-5-options", 5,
           # options: QoS 1 | No Local 0x04 | Retain As Published 0x08 | Retain Handling 1 (0x10)
           "82 07 | 00 01 | 00 | 00 01 61 1D",
           Subscribe(1, [Subscription("a", 1, True, True, 1)])),
    Golden("subscribe-5-subscription-identifier", 5,
           # properties: length 2, Subscription Identifier (0x0B) = 5
           "82 09 | 00 01 | 02 0B 05 | 00 01 61 00",
           Subscribe(1, [Subscription("a", 0)], {PropertyId.SUBSCRIPTION_IDENTIFIER: [5]})),
    Golden("suback-5", 5, "90 04 | 00 01 | 00 | 01", Suback(1, [1])),
    # ---- UNSUBSCRIBE / UNSUBACK [MQTT 3.10, 3.11] ------------------------------------------
    Golden("unsubscribe-two-filters", 4, "A2 0C | 00 02 | 00 03 61 2F 62 | 00 03 63 2F 23",
           Unsubscribe(2, ["a/b", "c/#"])),
    Golden("unsubscribe-31", 3, "A2 05 | 00 02 | 00 01 23", Unsubscribe(2, ["#"])),
    Golden("unsuback", 4, "B0 02 00 02", Unsuback(2)),
    Golden("unsuback-31", 3, "B0 02 00 02", Unsuback(2)),
    Golden("unsubscribe-5", 5, "A2 06 | 00 02 | 00 | 00 01 61", Unsubscribe(2, ["a"])),
    Golden("unsuback-5", 5, "B0 05 | 00 01 | 00 | 00 11", Unsuback(1, [0x00, 0x11])),
    # ---- PINGREQ / PINGRESP / DISCONNECT [MQTT 3.12 - 3.14] ---------------------------------
    Golden("pingreq", 4, "C0 00", Pingreq()),
    Golden("pingresp", 4, "D0 00", Pingresp()),
    Golden("disconnect", 4, "E0 00", Disconnect()),
    Golden("pingreq-31", 3, "C0 00", Pingreq()),
    Golden("pingresp-31", 3, "D0 00", Pingresp()),
    Golden("disconnect-31", 3, "E0 00", Disconnect()),
    Golden("disconnect-5-normal-short", 5, "E0 00", Disconnect()),
    Golden("disconnect-5-with-will", 5, "E0 01 04", Disconnect(0x04)),
    Golden("disconnect-5-session-expiry", 5, "E0 07 00 05 11 00 00 00 00",
           Disconnect(0, {PropertyId.SESSION_EXPIRY_INTERVAL: 0})),
    # ---- AUTH [MQTT 5 3.15] ----------------------------------------------------------------
    Golden("auth-5-continue", 5, "F0 06 18 04 15 00 01 6D",
           Auth(0x18, {PropertyId.AUTHENTICATION_METHOD: "m"})),
]


def _one_frame(data: bytes) -> tuple[int, bytes]:
    frames = FrameReader().feed(data)
    assert len(frames) == 1, frames
    return frames[0]


@pytest.mark.parametrize("g", [g for g in GOLDEN if g.decode], ids=lambda g: g.id)
def test_golden_decode(g: Golden) -> None:
    first, body = _one_frame(h(g.wire))
    assert decode(first, body, g.level) == g.packet


@pytest.mark.parametrize("g", [g for g in GOLDEN if g.encode], ids=lambda g: g.id)
def test_golden_encode(g: Golden) -> None:
    assert encode(g.packet, g.level).hex(" ") == h(g.wire).hex(" ")


def test_golden_table_covers_every_3_1_1_packet_type() -> None:
    """Every control packet type of MQTT 3.1.1 [MQTT 2.2.1] appears at levels 3 and 4."""
    for level in (3, 4):
        seen = {h(g.wire)[0] >> 4 for g in GOLDEN if g.level == level}
        assert seen == set(range(1, 15)), (level, sorted(seen))


def test_golden_table_whole_stream_at_once() -> None:
    """The level-4 golden frames concatenated into one stream split back identically."""
    rows = [g for g in GOLDEN if g.level == 4 and g.decode]
    stream = b"".join(h(g.wire) for g in rows)
    frames = FrameReader().feed(stream)
    assert [decode(f, b, 4) for f, b in frames] == [g.packet for g in rows]


# ---- fixed-header details ---------------------------------------------------------------------

@pytest.mark.parametrize("level", [3, 4, 5])
def test_pubrel_subscribe_unsubscribe_are_encoded_with_flags_0010_mqtt_2_2_2_1(level: int) -> None:
    """[MQTT-2.2.2-1] [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1] reserved flags 0010."""
    assert encode(Pubrel(1), level)[0] == 0x62
    assert encode(Subscribe(1, [Subscription("a")]), level)[0] == 0x82
    assert encode(Unsubscribe(1, ["a"]), level)[0] == 0xA2


@pytest.mark.parametrize("level", [3, 4, 5])
def test_other_packets_are_encoded_with_flags_0000_mqtt_2_2_2_1(level: int) -> None:
    packets: list[Packet] = [Connack(), Puback(1), Pubrec(1), Pubcomp(1), Suback(1, [0]),
                             Unsuback(1), Pingreq(), Pingresp(), Disconnect(),
                             Connect(protocol_name="MQIsdp" if level == 3 else "MQTT",
                                     protocol_level=level)]
    for p in packets:
        assert encode(p, level)[0] & 0x0F == 0, p


def test_publish_qos0_has_no_packet_identifier_mqtt_2_3_1_5() -> None:
    """[MQTT-2.3.1-5] a QoS 0 PUBLISH carries no packet identifier: topic then payload."""
    assert encode(Publish("t", b"\x00\x01"), 4) == h("30 05 00 01 74 00 01")
    assert decode(0x30, h("00 01 74 00 01"), 4) == Publish("t", b"\x00\x01")


def test_publish_zero_length_payload_qos1() -> None:
    """A zero-length payload is valid [MQTT 3.3.3]."""
    assert decode(0x32, h("00 01 74 00 05"), 4) == Publish("t", b"", 1, packet_id=5)


def test_connect_will_topic_with_multibyte_utf8() -> None:
    wire = h("10 14 | 00 04 4D 51 54 54 | 04 | 06 | 00 00 | 00 00 | 00 02 C3 A9 | 00 02 6F 6B")
    # RL: 10 + 2 (empty client id) + 4 (will topic) + 4 (will payload) = 20 = 0x14
    p = Connect("MQTT", 4, "", True, 0, will=Will("\u00e9", b"ok"))
    assert decode(*_one_frame(wire), 4) == p
    assert encode(p, 4) == wire
