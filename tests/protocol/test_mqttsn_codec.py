"""The MQTT-SN 1.2 codec, byte for byte, with no event loop and no socket.

Every hex string below was assembled by hand from the field tables of the MQTT For Sensor
Networks Protocol Specification Version 1.2 (section 5: 5.2 header, 5.3 fields, 5.4 messages,
5.5 Forwarder Encapsulation), never produced by the encoder under test. Each golden row is
checked both ways: ``decode(wire) == message`` and ``encode(message) == wire``. The malformed
table names, for each datagram, the words the error must say; hypothesis checks
``decode(encode(m)) == m`` over all messages and that arbitrary bytes only ever raise
:class:`MqttsnError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqttbroker.errors import EncodeError, MQTTBrokerError, MqttsnError
from mqttbroker.protocol.mqttsn import (
    Advertise,
    Connack,
    Connect,
    Disconnect,
    Encapsulated,
    GwInfo,
    Message,
    MsgType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Regack,
    Register,
    ReturnCode,
    SearchGw,
    Suback,
    Subscribe,
    TopicIdType,
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
    decode,
    describe,
    encode,
)

NORMAL, PREDEFINED, SHORT = TopicIdType.NORMAL, TopicIdType.PREDEFINED, TopicIdType.SHORT
RC = ReturnCode


def h(s: str) -> bytes:
    """Hex with spaces (and ``|`` as a visual field separator) to bytes."""
    return bytes.fromhex(s.replace("|", " "))


@dataclass(frozen=True)
class Golden:
    id: str
    wire: str
    message: Message
    decode: bool = True
    encode: bool = True


# ASCII used below: "sensor1" 73 65 6E 73 6F 72 31 · "w/s1/dead" 77 2F 73 31 2F 64 65 61 64
# "s/1/temp" 73 2F 31 2F 74 65 6D 70 · "s/+/t" 73 2F 2B 2F 74 · "21.5" 32 31 2E 35 · "t1" 74 31
# Flags [MQTT-SN 5.3.4]: DUP 0x80 | QoS 0x20 (1), 0x40 (2), 0x60 (-1) | Retain 0x10 | Will 0x08
# | CleanSession 0x04 | TopicIdType 0x00 normal, 0x01 pre-defined, 0x02 short
GOLDEN: list[Golden] = [
    # ---- gateway discovery [MQTT-SN 5.4.1-5.4.3] ---------------------------------------
    Golden("advertise", "05 00 | 2A | 03 84", Advertise(0x2A, 900)),
    Golden("searchgw-radius-1", "03 01 | 01", SearchGw(1)),
    Golden("gwinfo-from-a-gateway", "03 02 | 07", GwInfo(7)),
    Golden("gwinfo-from-a-client-with-gwadd", "07 02 | 07 | C0 A8 01 29",
           GwInfo(7, b"\xc0\xa8\x01\x29")),
    # ---- connection [MQTT-SN 5.4.4-5.4.9] ----------------------------------------------
    Golden("connect-clean-with-will",
           # Length 13 | CONNECT | Will+CleanSession | ProtocolId 1 | Duration 60 | "sensor1"
           "0D 04 | 0C | 01 | 00 3C | 73 65 6E 73 6F 72 31",
           Connect("sensor1", 60, clean_session=True, will=True)),
    Golden("connect-persistent-no-will", "0D 04 | 00 | 01 | 0E 10 | 73 65 6E 73 6F 72 31",
           Connect("sensor1", 3600, clean_session=False, will=False)),
    Golden("connect-empty-client-id", "06 04 | 04 | 01 | 00 0A", Connect("", 10)),
    Golden("connack-accepted", "03 05 | 00", Connack(RC.ACCEPTED)),
    Golden("connack-congestion", "03 05 | 01", Connack(RC.REJECTED_CONGESTION)),
    Golden("connack-not-supported", "03 05 | 03", Connack(RC.REJECTED_NOT_SUPPORTED)),
    Golden("willtopicreq", "02 06", WillTopicReq()),
    Golden("willtopic-qos1-retain", "0C 07 | 30 | 77 2F 73 31 2F 64 65 61 64",
           WillTopic("w/s1/dead", 1, True)),
    Golden("willtopic-qos0", "0C 07 | 00 | 77 2F 73 31 2F 64 65 61 64", WillTopic("w/s1/dead")),
    # [MQTT-SN 5.4.7] the empty WILLTOPIC, exactly 2 octets: delete the will
    Golden("willtopic-empty-deletes-the-will", "02 07", WillTopic()),
    Golden("willmsgreq", "02 08", WillMsgReq()),
    Golden("willmsg", "07 09 | 67 6F 6E 65 21", WillMsg(b"gone!")),
    Golden("willmsg-empty", "02 09", WillMsg(b"")),
    # ---- topic registration [MQTT-SN 5.4.10-5.4.11] ------------------------------------
    # from a client the TopicId is 0x0000
    Golden("register-from-client", "0E 0A | 00 00 | 00 01 | 73 2F 31 2F 74 65 6D 70",
           Register(0, 1, "s/1/temp")),
    Golden("register-from-gateway", "0E 0A | 00 05 | 12 34 | 73 2F 31 2F 74 65 6D 70",
           Register(5, 0x1234, "s/1/temp")),
    Golden("regack-accepted", "07 0B | 00 05 | 00 01 | 00", Regack(5, 1, RC.ACCEPTED)),
    Golden("regack-congestion", "07 0B | 00 00 | 00 01 | 01",
           Regack(0, 1, RC.REJECTED_CONGESTION)),
    # ---- publish [MQTT-SN 5.4.12-5.4.14] -----------------------------------------------
    Golden("publish-qos1-normal-topic-id", "0B 0C | 20 | 00 05 | 00 02 | 32 31 2E 35",
           Publish(5, b"21.5", qos=1, msg_id=2)),
    # a short topic name is the two characters in the TopicId field
    Golden("publish-qos0-short-topic-retain", "09 0C | 12 | 74 31 | 00 00 | 6F 6E",
           Publish("t1", b"on", qos=0, retain=True, topic_id_type=SHORT)),
    # QoS -1 (0b11) to a pre-defined topic id [MQTT-SN 6.8]
    Golden("publish-qos-minus-1-predefined", "08 0C | 61 | 00 2A | 00 00 | FF",
           Publish(42, b"\xff", qos=-1, topic_id_type=PREDEFINED)),
    Golden("publish-qos2-dup-empty-data", "07 0C | C0 | 00 05 | 12 34",
           Publish(5, b"", qos=2, dup=True, msg_id=0x1234)),
    Golden("publish-short-topic-one-2-octet-character", "07 0C | 02 | C3 A9 | 00 00",
           Publish("\u00e9", topic_id_type=SHORT)),
    Golden("puback-accepted", "07 0D | 00 05 | 00 02 | 00", Puback(5, 2)),
    Golden("puback-invalid-topic-id", "07 0D | 00 09 | 00 03 | 02",
           Puback(9, 3, RC.REJECTED_INVALID_TOPIC_ID)),
    Golden("pubcomp", "04 0E | 00 02", Pubcomp(2)),
    Golden("pubrec", "04 0F | 12 34", Pubrec(0x1234)),
    Golden("pubrel", "04 10 | FF FF", Pubrel(0xFFFF)),
    # ---- subscriptions [MQTT-SN 5.4.15-5.4.18] -----------------------------------------
    Golden("subscribe-topic-name-wildcard-qos1", "0A 12 | 20 | 00 03 | 73 2F 2B 2F 74",
           Subscribe("s/+/t", 3, qos=1)),
    Golden("subscribe-predefined-dup", "07 12 | 81 | 00 04 | 00 2A",
           Subscribe(42, 4, qos=0, dup=True, topic_id_type=PREDEFINED)),
    Golden("subscribe-short-qos2", "07 12 | 42 | 00 05 | 74 31",
           Subscribe("t1", 5, qos=2, topic_id_type=SHORT)),
    Golden("suback-granted-qos1", "08 13 | 20 | 00 07 | 00 03 | 00", Suback(7, 3, RC.ACCEPTED, 1)),
    Golden("suback-rejected", "08 13 | 00 | 00 00 | 00 03 | 03",
           Suback(0, 3, RC.REJECTED_NOT_SUPPORTED)),
    Golden("unsubscribe-topic-name", "0A 14 | 00 | 00 06 | 73 2F 2B 2F 74",
           Unsubscribe("s/+/t", 6)),
    Golden("unsubscribe-predefined", "07 14 | 01 | 00 06 | 00 2A",
           Unsubscribe(42, 6, PREDEFINED)),
    Golden("unsubscribe-short", "07 14 | 02 | 00 06 | 74 31", Unsubscribe("t1", 6, SHORT)),
    Golden("unsuback", "04 15 | 00 06", Unsuback(6)),
    # ---- keep alive, sleep, disconnect [MQTT-SN 5.4.19-5.4.21] -------------------------
    Golden("pingreq", "02 16", Pingreq()),
    # [MQTT-SN 5.4.19, 6.14] a sleeping client wakes up: PINGREQ with its ClientId
    Golden("pingreq-wake-up-with-client-id", "09 16 | 73 65 6E 73 6F 72 31", Pingreq("sensor1")),
    Golden("pingresp", "02 17", Pingresp()),
    Golden("disconnect", "02 18", Disconnect()),
    # [MQTT-SN 5.4.21, 6.14] going to sleep for an hour
    Golden("disconnect-sleep-3600", "04 18 | 0E 10", Disconnect(3600)),
    Golden("disconnect-sleep-0", "04 18 | 00 00", Disconnect(0)),
    # ---- will updates [MQTT-SN 5.4.22-5.4.25] ------------------------------------------
    Golden("willtopicupd-qos2", "0C 1A | 40 | 77 2F 73 31 2F 64 65 61 64",
           WillTopicUpd("w/s1/dead", 2)),
    Golden("willtopicupd-empty-deletes-the-will", "02 1A", WillTopicUpd()),
    Golden("willtopicresp", "03 1B | 00", WillTopicResp(RC.ACCEPTED)),
    Golden("willmsgupd", "06 1C | 62 79 65 21", WillMsgUpd(b"bye!")),
    Golden("willmsgresp", "03 1D | 01", WillMsgResp(RC.REJECTED_CONGESTION)),
    # ---- Forwarder Encapsulation [MQTT-SN 5.5]: Length covers Length..Wireless Node Id ----
    Golden("encapsulated-pingreq-2-octet-node-id", "05 FE | 00 | 00 2A | 02 16",
           Encapsulated(b"\x00\x2a", Pingreq())),
    Golden("encapsulated-publish-eui64-radius-1",
           "0B FE | 01 | 00 12 4B 00 01 02 03 04 | 0B 0C 20 00 05 00 02 32 31 2E 35",
           Encapsulated(b"\x00\x12\x4b\x00\x01\x02\x03\x04", Publish(5, b"21.5", 1, msg_id=2),
                        radius=1)),
    Golden("encapsulated-empty-node-id", "03 FE | 00 | 03 05 00",
           Encapsulated(b"", Connack())),
    # ---- the 3-octet Length form [MQTT-SN 5.2.1]: "may" be used below 256 octets ----------
    Golden("pingresp-in-3-octet-length-form", "01 00 04 | 17", Pingresp(), encode=False),
    Golden("connack-in-3-octet-length-form", "01 00 05 | 05 | 02",
           Connack(RC.REJECTED_INVALID_TOPIC_ID), encode=False),
    Golden("encapsulated-inner-3-octet-length-form", "05 FE | 00 | 00 2A | 01 00 04 17",
           Encapsulated(b"\x00\x2a", Pingresp()), encode=False),
]


@pytest.mark.parametrize("g", [g for g in GOLDEN if g.decode], ids=lambda g: g.id)
def test_golden_decode(g: Golden) -> None:
    assert decode(h(g.wire)) == g.message


@pytest.mark.parametrize("g", [g for g in GOLDEN if g.encode], ids=lambda g: g.id)
def test_golden_encode(g: Golden) -> None:
    assert encode(g.message) == h(g.wire)


def test_every_message_type_has_a_golden_row() -> None:
    assert {g.message.msg_type for g in GOLDEN} == set(MsgType)


def test_decode_takes_any_bytes_like() -> None:
    wire = h("0B 0C | 20 | 00 05 | 00 02 | 32 31 2E 35")
    assert decode(bytearray(wire)) == decode(memoryview(wire)) == Publish(5, b"21.5", 1,
                                                                           msg_id=2)


def test_a_client_id_over_23_characters_is_the_gateways_call_not_the_codecs() -> None:
    # [MQTT-SN 5.3.1] "1-23 characters": well formed all the same; the gateway answers it
    client_id = "c" * 40
    wire = bytes((6 + 40, 0x04, 0x04, 0x01, 0x00, 0x3C)) + b"c" * 40
    assert decode(wire) == Connect(client_id, 60)
    assert encode(Connect(client_id, 60)) == wire


def test_the_empty_will_messages_delete_the_will() -> None:
    assert decode(h("02 07")).deletes_will  # type: ignore[union-attr]
    assert decode(h("02 1A")).deletes_will  # type: ignore[union-attr]
    assert not WillTopic("w").deletes_will


# ---- the Length field at its boundary [MQTT-SN 5.2.1] ----------------------------------------

def _publish_wire(length_field: str, data: bytes) -> bytes:
    # PUBLISH QoS 0, normal topic id 1, MsgId 0: Flags 00 | TopicId 00 01 | MsgId 00 00
    return h(length_field + " 0C | 00 | 00 01 | 00 00") + data


def test_255_octets_use_the_1_octet_length() -> None:
    # 1 (Length) + 1 (MsgType) + 5 (Flags, TopicId, MsgId) + 248 = 255 = 0xFF
    data = bytes(range(248))
    wire = _publish_wire("FF", data)
    assert len(wire) == 255
    assert encode(Publish(1, data)) == wire
    assert decode(wire) == Publish(1, data)


def test_256_octets_and_more_use_the_3_octet_length() -> None:
    # 249 octets of data would make 256 in the short form: the 3-octet form makes 258 = 0x0102
    data = bytes(range(249))
    wire = _publish_wire("01 01 02", data)
    assert len(wire) == 258
    assert encode(Publish(1, data)) == wire
    assert decode(wire) == Publish(1, data)


def test_willmsg_at_the_boundary() -> None:
    assert encode(WillMsg(b"x" * 253)) == h("FF 09") + b"x" * 253
    assert encode(WillMsg(b"x" * 254)) == h("01 01 02 09") + b"x" * 254
    assert decode(h("FF 09") + b"x" * 253) == WillMsg(b"x" * 253)
    assert decode(h("01 01 02 09") + b"x" * 254) == WillMsg(b"x" * 254)


def test_the_largest_message_is_65535_octets() -> None:
    data = b"\x5a" * (65535 - 4 - 5)
    wire = _publish_wire("01 FF FF", data)
    assert len(wire) == 65535
    assert encode(Publish(1, data)) == wire
    assert decode(wire) == Publish(1, data)
    with pytest.raises(EncodeError, match="65535"):
        encode(Publish(1, data + b"!"))


# ---- malformed datagrams: each raises MqttsnError with a message naming what is wrong ----------

@dataclass(frozen=True)
class Bad:
    id: str
    wire: str
    says: str  # a regular expression the error message must contain
    msg_type: int | None = None


BAD: list[Bad] = [
    # ---- header [MQTT-SN 5.2] ----------------------------------------------------------
    Bad("empty-datagram", "", r"0 octet\(s\) is shorter than Length and MsgType"),
    Bad("one-octet", "02", r"1 octet\(s\) is shorter than Length and MsgType"),
    Bad("3-octet-length-cut-1", "01 00", r"truncated in the 3-octet Length form"),
    Bad("3-octet-length-cut-2", "01 00 04", r"truncated in the 3-octet Length form"),
    Bad("length-0", "00 16", r"PINGREQ: the Length field says 0 octets, less than the 2", 0x16),
    Bad("3-octet-length-below-header", "01 00 03 17",
        r"PINGRESP: the Length field says 3 octets, less than the 4", 0x17),
    Bad("length-over-datagram", "03 16", r"PINGREQ truncated: the Length field says 3 octets, "
        r"the datagram has 2", 0x16),
    Bad("length-under-datagram", "02 17 00", r"PINGRESP: the Length field says 2 octets, "
        r"the datagram has 3 \(1 more\)", 0x17),
    Bad("3-octet-length-over-datagram", "01 00 06 17 00",
        r"PINGRESP truncated: the Length field says 6 octets, the datagram has 5", 0x17),
    Bad("3-octet-length-under-datagram", "01 00 04 17 00",
        r"PINGRESP: the Length field says 4 octets, the datagram has 5", 0x17),
    Bad("two-messages-in-one-datagram", "02 16 02 16", r"says 2 octets, the datagram has 4"),
    Bad("msgtype-0x03-reserved", "02 03", r"unknown MsgType 0x03 \(reserved\)", 0x03),
    Bad("msgtype-0x11-reserved", "02 11", r"unknown MsgType 0x11", 0x11),
    Bad("msgtype-0x19-reserved", "02 19", r"unknown MsgType 0x19", 0x19),
    Bad("msgtype-0x1e-reserved", "02 1E", r"unknown MsgType 0x1E", 0x1E),
    Bad("msgtype-0xfd-reserved", "02 FD", r"unknown MsgType 0xFD", 0xFD),
    Bad("msgtype-0xff-reserved", "02 FF", r"unknown MsgType 0xFF", 0xFF),
    # ---- fixed fields --------------------------------------------------------------------
    Bad("advertise-no-duration", "04 00 2A 03", r"ADVERTISE truncated: Duration missing", 0x00),
    Bad("advertise-too-long", "06 00 2A 03 84 00",
        r"ADVERTISE too long: 1 unexpected octets after Duration", 0x00),
    Bad("searchgw-no-radius", "02 01", r"SEARCHGW truncated: Radius missing"),
    Bad("gwinfo-no-gwid", "02 02", r"GWINFO truncated: GwId missing"),
    Bad("connect-no-duration", "05 04 04 01 00",
        r"CONNECT truncated: Duration missing \(3 octets after MsgType, at least 4 needed\)",
        0x04),
    Bad("connack-no-return-code", "02 05", r"CONNACK truncated: ReturnCode missing"),
    Bad("connack-too-long", "04 05 00 00", r"CONNACK too long: 1 unexpected octets after "
        r"ReturnCode"),
    Bad("willtopicreq-with-a-body", "03 06 00", r"WILLTOPICREQ too long: 1 unexpected octets "
        r"after MsgType"),
    Bad("willmsgreq-with-a-body", "03 08 00", r"WILLMSGREQ too long"),
    Bad("register-no-msgid", "05 0A 00 00 00", r"REGISTER truncated: MsgId missing"),
    Bad("regack-no-return-code", "06 0B 00 05 00 01", r"REGACK truncated: ReturnCode missing"),
    Bad("publish-no-msgid", "06 0C 00 00 01 00", r"PUBLISH truncated: MsgId missing"),
    Bad("publish-flags-only", "03 0C 00", r"PUBLISH truncated: TopicId missing"),
    Bad("puback-no-return-code", "06 0D 00 01 00 01", r"PUBACK truncated: ReturnCode missing"),
    Bad("pubrec-too-long", "05 0F 00 01 00", r"PUBREC too long: 1 unexpected octets after MsgId"),
    Bad("pubrel-no-msgid", "03 10 00", r"PUBREL truncated: MsgId missing"),
    Bad("pubcomp-no-msgid", "02 0E", r"PUBCOMP truncated: MsgId missing"),
    Bad("subscribe-no-msgid", "04 12 20 00", r"SUBSCRIBE truncated: MsgId missing"),
    Bad("suback-no-return-code", "07 13 20 00 07 00 03", r"SUBACK truncated: ReturnCode"),
    Bad("unsubscribe-no-flags", "02 14", r"UNSUBSCRIBE truncated: Flags missing"),
    Bad("unsuback-too-long", "05 15 00 06 00", r"UNSUBACK too long"),
    Bad("pingresp-with-a-body", "03 17 00", r"PINGRESP too long"),
    Bad("disconnect-half-a-duration", "03 18 0E", r"DISCONNECT truncated: Duration missing"),
    Bad("disconnect-too-long", "05 18 0E 10 00",
        r"DISCONNECT too long: 1 unexpected octets after Duration"),
    Bad("willtopicresp-no-return-code", "02 1B", r"WILLTOPICRESP truncated: ReturnCode"),
    Bad("willmsgresp-too-long", "04 1D 00 00", r"WILLMSGRESP too long"),
    # ---- Flags bits a message does not use [MQTT-SN 5.3.4 and each message's table] -------
    Bad("connect-dup", "08 04 84 01 00 3C 61 62", r"CONNECT Flags 0x84: DUP not used in CONNECT"),
    Bad("connect-qos", "08 04 24 01 00 3C 61 62", r"CONNECT Flags 0x24: QoS not used"),
    Bad("connect-retain-and-topic-id-type", "08 04 17 01 00 3C 61 62",
        r"CONNECT Flags 0x17: Retain, TopicIdType not used in CONNECT"),
    Bad("willtopic-dup", "04 07 80 77", r"WILLTOPIC Flags 0x80: DUP not used"),
    Bad("willtopic-will", "04 07 08 77", r"WILLTOPIC Flags 0x08: Will not used"),
    Bad("willtopic-clean-session", "04 07 04 77", r"WILLTOPIC Flags 0x04: CleanSession not used"),
    Bad("willtopic-topic-id-type", "04 07 01 77", r"WILLTOPIC Flags 0x01: TopicIdType not used"),
    Bad("publish-will", "07 0C 08 00 01 00 00", r"PUBLISH Flags 0x08: Will not used in PUBLISH"),
    Bad("publish-clean-session", "07 0C 04 00 01 00 00", r"PUBLISH Flags 0x04: CleanSession"),
    Bad("subscribe-retain", "07 12 10 00 01 74 31", r"SUBSCRIBE Flags 0x10: Retain not used"),
    Bad("subscribe-will", "07 12 08 00 01 74 31", r"SUBSCRIBE Flags 0x08: Will not used"),
    Bad("suback-dup", "08 13 80 00 07 00 03 00", r"SUBACK Flags 0x80: DUP not used in SUBACK"),
    Bad("suback-topic-id-type", "08 13 21 00 07 00 03 00", r"SUBACK Flags 0x21: TopicIdType"),
    Bad("unsubscribe-qos", "07 14 21 00 01 00 2A", r"UNSUBSCRIBE Flags 0x21: QoS not used"),
    Bad("unsubscribe-dup", "07 14 81 00 01 00 2A", r"UNSUBSCRIBE Flags 0x81: DUP not used"),
    Bad("willtopicupd-clean-session", "04 1A 04 77", r"WILLTOPICUPD Flags 0x04: CleanSession"),
    # ---- reserved values -----------------------------------------------------------------
    Bad("publish-topic-id-type-0b11", "07 0C 03 00 01 00 00",
        r"PUBLISH Flags 0x03: TopicIdType 0b11 is reserved", 0x0C),
    Bad("subscribe-topic-id-type-0b11", "07 12 03 00 01 00 2A",
        r"SUBSCRIBE Flags 0x03: TopicIdType 0b11 is reserved"),
    Bad("unsubscribe-topic-id-type-0b11", "07 14 03 00 01 00 2A",
        r"UNSUBSCRIBE Flags 0x03: TopicIdType 0b11 is reserved"),
    Bad("subscribe-qos-minus-1", "07 12 60 00 01 74 31",
        r"SUBSCRIBE Flags 0x60: QoS 0b11 \(-1\) is only allowed in PUBLISH"),
    Bad("suback-qos-minus-1", "08 13 60 00 07 00 03 00", r"SUBACK Flags 0x60: QoS 0b11"),
    Bad("willtopic-qos-minus-1", "04 07 60 77", r"WILLTOPIC Flags 0x60: QoS 0b11"),
    Bad("willtopicupd-qos-minus-1", "04 1A 70 77", r"WILLTOPICUPD Flags 0x70: QoS 0b11"),
    Bad("connect-protocol-id-2", "08 04 04 02 00 3C 61 62",
        r"CONNECT ProtocolId 0x02 \(only 0x01, MQTT-SN 1.2, is defined\)", 0x04),
    Bad("connack-return-code-4", "03 05 04", r"CONNACK ReturnCode 0x04 is reserved", 0x05),
    Bad("regack-return-code-ff", "07 0B 00 05 00 01 FF", r"REGACK ReturnCode 0xFF is reserved"),
    Bad("puback-return-code-80", "07 0D 00 05 00 01 80", r"PUBACK ReturnCode 0x80 is reserved"),
    Bad("suback-return-code-05", "08 13 00 00 07 00 03 05", r"SUBACK ReturnCode 0x05"),
    Bad("willtopicresp-return-code-04", "03 1B 04", r"WILLTOPICRESP ReturnCode 0x04"),
    Bad("willmsgresp-return-code-10", "03 1D 10", r"WILLMSGRESP ReturnCode 0x10"),
    # ---- topic fields ----------------------------------------------------------------------
    Bad("register-empty-topic-name", "06 0A 00 00 00 01", r"REGISTER TopicName is empty", 0x0A),
    Bad("register-invalid-utf8", "08 0A 00 00 00 01 C0 AF",
        r"REGISTER TopicName is not valid UTF-8 \(invalid start byte at octet 0\)"),
    Bad("register-utf8-surrogate", "09 0A 00 00 00 01 ED A0 80",
        r"REGISTER TopicName is not valid UTF-8"),
    Bad("register-u0000", "08 0A 00 00 00 01 61 00", r"REGISTER TopicName contains U\+0000"),
    Bad("publish-short-topic-invalid-utf8", "07 0C 02 FF FE 00 00",
        r"PUBLISH short TopicName is not valid UTF-8"),
    Bad("publish-short-topic-u0000", "07 0C 02 61 00 00 00",
        r"PUBLISH short TopicName contains U\+0000"),
    Bad("subscribe-empty-topic-name", "05 12 00 00 01", r"SUBSCRIBE TopicName is empty"),
    Bad("subscribe-invalid-utf8", "07 12 00 00 01 61 80", r"SUBSCRIBE TopicName is not valid "
        r"UTF-8 \(invalid start byte at octet 1\)"),
    Bad("subscribe-predefined-3-octets", "08 12 01 00 01 00 01 02",
        r"SUBSCRIBE pre-defined TopicId must be 2 octets, got 3"),
    Bad("subscribe-predefined-missing", "05 12 01 00 01",
        r"SUBSCRIBE pre-defined TopicId must be 2 octets, got 0"),
    Bad("subscribe-short-1-octet", "06 12 02 00 01 61",
        r"SUBSCRIBE short TopicName must be 2 octets, got 1"),
    Bad("subscribe-short-3-octets", "08 12 02 00 01 61 62 63",
        r"SUBSCRIBE short TopicName must be 2 octets, got 3"),
    Bad("unsubscribe-empty-topic-name", "05 14 00 00 01", r"UNSUBSCRIBE TopicName is empty"),
    Bad("unsubscribe-short-1-octet", "06 14 02 00 01 61",
        r"UNSUBSCRIBE short TopicName must be 2 octets, got 1"),
    Bad("willtopic-flags-but-no-topic", "03 07 20",
        r"WILLTOPIC has Flags but no WillTopic \(the empty WILLTOPIC that deletes the will is "
        r"exactly 2 octets\)"),
    Bad("willtopicupd-flags-but-no-topic", "03 1A 00", r"WILLTOPICUPD has Flags but no WillTopic"),
    Bad("willtopic-invalid-utf8", "04 07 00 C3", r"WILLTOPIC WillTopic is not valid UTF-8"),
    Bad("connect-client-id-invalid-utf8", "07 04 04 01 00 3C FF",
        r"CONNECT ClientId is not valid UTF-8", 0x04),
    Bad("connect-client-id-u0000", "08 04 04 01 00 3C 61 00", r"CONNECT ClientId contains U\+0000"),
    Bad("pingreq-client-id-invalid-utf8", "03 16 FF", r"PINGREQ ClientId is not valid UTF-8"),
    # ---- Forwarder Encapsulation [MQTT-SN 5.5] ---------------------------------------------
    Bad("encapsulated-in-encapsulated", "03 FE 00 | 03 FE 00 | 02 16",
        r"Encapsulated message inside an Encapsulated message", 0xFE),
    Bad("encapsulated-3-octet-length", "01 00 06 FE 00 02 16",
        r"Encapsulated message with the 3-octet Length form"),
    Bad("encapsulated-length-2", "02 FE", r"Encapsulated message Length 2 is shorter than "
        r"Length, MsgType and Ctrl"),
    Bad("encapsulated-header-truncated", "06 FE 00 00 2A",
        r"Encapsulated message truncated: Length says Ctrl and Wireless Node Id end at octet 6, "
        r"the datagram has 5"),
    Bad("encapsulated-ctrl-reserved-bits", "05 FE 04 00 2A 02 16",
        r"Encapsulated message Ctrl 0x04: reserved bits 7-2 set"),
    Bad("encapsulated-ctrl-all-bits", "05 FE FF 00 2A 02 16", r"Ctrl 0xFF: reserved bits"),
    Bad("encapsulated-nothing-inside", "05 FE 00 00 2A",
        r"Encapsulated message carries no MQTT-SN message"),
    Bad("encapsulated-inner-length-wrong", "05 FE 00 00 2A 03 16",
        r"in Encapsulated message: PINGREQ truncated: the Length field says 3 octets", 0x16),
    Bad("encapsulated-inner-unknown-type", "05 FE 00 00 2A 02 03",
        r"in Encapsulated message: unknown MsgType 0x03", 0x03),
    Bad("encapsulated-inner-one-octet", "05 FE 00 00 2A 02",
        r"in Encapsulated message: datagram of 1 octet\(s\) is shorter"),
    Bad("encapsulated-inner-bad-flags", "05 FE 00 00 2A | 07 0C 03 00 01 00 00",
        r"in Encapsulated message: PUBLISH Flags 0x03: TopicIdType 0b11 is reserved", 0x0C),
]


@pytest.mark.parametrize("b", BAD, ids=lambda b: b.id)
def test_malformed_datagram_raises_mqttsn_error_naming_the_fault(b: Bad) -> None:
    with pytest.raises(MqttsnError) as err:
        decode(h(b.wire))
    assert re.search(b.says, str(err.value)), str(err.value)
    assert err.value.message == str(err.value)
    if b.msg_type is not None:
        assert err.value.msg_type == b.msg_type


def test_the_error_is_in_the_family_and_names_the_msg_type() -> None:
    with pytest.raises(MqttsnError) as err:
        decode(h("08 04 04 02 00 3C 61 62"))
    assert isinstance(err.value, MQTTBrokerError)
    # the gateway may answer a CONNECT it could not decode with CONNACK "not supported"
    assert err.value.msg_type == MsgType.CONNECT
    with pytest.raises(MqttsnError) as err:
        decode(b"\x01")
    assert err.value.msg_type is None


def test_every_reserved_msg_type_is_refused() -> None:
    for mt in range(256):
        if mt in MsgType._value2member_map_:
            continue
        with pytest.raises(MqttsnError, match=f"unknown MsgType 0x{mt:02X}"):
            decode(bytes((2, mt)))


# ---- what MQTT-SN cannot carry is an EncodeError (the caller's bug) ----------------------------

ENCODE_ERRORS: list[tuple[str, Any, str]] = [
    ("short-topic-3-chars", Publish("abc", topic_id_type=SHORT), r"'abc' is 3 octets, not 2"),
    ("short-topic-1-char", Subscribe("a", 1, topic_id_type=SHORT), r"'a' is 1 octets, not 2"),
    ("short-topic-given-an-int", Publish(5, topic_id_type=SHORT), r"a short topic name is a str"),
    ("topic-id-given-a-str", Publish("ab"), r"a topic id is an int"),
    ("predefined-given-a-str", Subscribe("ab", 1, topic_id_type=PREDEFINED),
     r"a topic id is an int"),
    ("topic-name-given-an-int", Unsubscribe(5, 1), r"a topic name is a str"),
    ("topic-id-over-16-bits", Publish(0x10000), r"PUBLISH TopicId 65536 is not a 16-bit value"),
    ("negative-msg-id", Puback(1, -1), r"PUBACK MsgId -1 is not a 16-bit value"),
    ("msg-id-over-16-bits", Pubrel(70000), r"PUBREL MsgId 70000"),
    ("publish-qos-3", Publish(1, qos=3), r"PUBLISH QoS 3 is not -1, 0, 1 or 2"),
    ("subscribe-qos-minus-1", Subscribe("a", 1, qos=-1), r"SUBSCRIBE QoS -1 is not 0, 1 or 2"),
    ("willtopic-qos-minus-1", WillTopic("w", qos=-1), r"WILLTOPIC QoS -1"),
    ("topic-id-type-3", Publish(1, topic_id_type=3), r"TopicIdType 3"),  # type: ignore[arg-type]
    ("return-code-reserved", Connack(7), r"CONNACK ReturnCode 7 is reserved"),  # type: ignore[arg-type]
    ("gw-id-over-an-octet", Advertise(256, 1), r"ADVERTISE GwId 256 is not an octet"),
    ("radius-negative", SearchGw(-1), r"SEARCHGW Radius -1"),
    ("empty-topic-name-register", Register(0, 1, ""), r"REGISTER TopicName is empty"),
    ("empty-topic-name-subscribe", Subscribe("", 1), r"SUBSCRIBE topic is empty"),
    ("topic-with-u0000", Register(0, 1, "a\x00"), r"contains U\+0000"),
    ("topic-with-lone-surrogate", Subscribe("a\ud800", 1), r"cannot be encoded in UTF-8"),
    ("pingreq-empty-client-id", Pingreq(""), r"use None for a PINGREQ without one"),
    ("empty-willtopic-with-qos", WillTopic("", qos=1), r"the empty WILLTOPIC .* no QoS or retain"),
    ("empty-willtopicupd-retain", WillTopicUpd("", retain=True), r"the empty WILLTOPICUPD"),
    ("disconnect-duration-over-16-bits", Disconnect(65536), r"DISCONNECT Duration 65536"),
    ("nested-encapsulation", Encapsulated(b"", Encapsulated(b"", Pingreq())),
     r"cannot carry an Encapsulated message"),
    ("encapsulated-radius-4", Encapsulated(b"", Pingreq(), radius=4), r"radius 4 is not 0-3"),
    ("encapsulated-node-id-253", Encapsulated(b"\x00" * 253, Pingreq()),
     r"Wireless Node Id of 253 octets"),
    ("not-a-message", object(), r"cannot encode"),
]


@pytest.mark.parametrize(("case", "msg", "says"), ENCODE_ERRORS, ids=[c[0] for c in ENCODE_ERRORS])
def test_encode_refuses_what_mqttsn_cannot_carry(case: str, msg: Any, says: str) -> None:
    with pytest.raises(EncodeError) as err:
        encode(msg)
    assert re.search(says, str(err.value)), str(err.value)
    assert isinstance(err.value, MQTTBrokerError)


def test_encapsulated_node_id_of_252_octets_is_the_most_the_length_can_say() -> None:
    msg = Encapsulated(b"\x07" * 252, Pingreq())
    wire = encode(msg)
    assert wire[:3] == h("FF FE 00") and wire[-2:] == h("02 16")
    assert decode(wire) == msg


# ---- describe: one line for the log --------------------------------------------------------------

@pytest.mark.parametrize(("msg", "line"), [
    (Publish(5, b"21.5", qos=1, retain=True, msg_id=2),
     "PUBLISH topic=5 qos=1 retain msg_id=2 topic_id_type=normal data=4B"),
    (Publish("t1", qos=-1, topic_id_type=SHORT),
     "PUBLISH topic='t1' qos=-1 msg_id=0 topic_id_type=short data=0B"),
    (Connect("sensor1", 60, will=True),
     "CONNECT client_id='sensor1' keep_alive=60 clean_session will"),
    (Suback(7, 3, RC.REJECTED_CONGESTION),
     "SUBACK topic_id=7 msg_id=3 return_code=rejected_congestion qos=0"),
    (Disconnect(), "DISCONNECT"),
    (Disconnect(60), "DISCONNECT duration=60"),
    (Pingreq("s" * 50), "PINGREQ client_id='" + "s" * 37 + "...'"),
    (Encapsulated(b"\x00\x2a", Pingreq(), radius=2),
     "ENCAPSULATED node_id=002a [PINGREQ] radius=2"),
    (Encapsulated(b"", WillMsg(b"bye")), "ENCAPSULATED node_id=- [WILLMSG payload=3B] radius=0"),
])
def test_describe(msg: Message, line: str) -> None:
    assert describe(msg) == line


# ---- property tests -------------------------------------------------------------------------------

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# what decode accepts in topic names and client ids: UTF-8 without U+0000 or surrogates
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
nonempty_text = text.filter(bool)
short_name = st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                     min_size=1, max_size=2).filter(lambda s: len(s.encode()) == 2)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
qos = st.integers(0, 2)
payload = st.binary(max_size=300)  # crosses the 255-octet boundary of the Length field
return_codes = st.sampled_from(ReturnCode)


def _publish() -> st.SearchStrategy[Publish]:
    ids = st.tuples(st.sampled_from([NORMAL, PREDEFINED]), u16)
    shorts = st.tuples(st.just(SHORT), short_name)
    return st.builds(lambda t, data, q, r, d, mid: Publish(t[1], data, q, r, d, mid, t[0]),
                     st.one_of(ids, shorts), payload, st.integers(-1, 2), st.booleans(),
                     st.booleans(), u16)


def _topic_choice() -> st.SearchStrategy[tuple[TopicIdType, int | str]]:
    return st.one_of(st.tuples(st.just(NORMAL), nonempty_text),
                     st.tuples(st.just(PREDEFINED), u16),
                     st.tuples(st.just(SHORT), short_name))


PLAIN: st.SearchStrategy[Message] = st.one_of(
    st.builds(Advertise, u8, u16),
    st.builds(SearchGw, u8),
    st.builds(GwInfo, u8, st.binary(max_size=16)),
    st.builds(Connect, text, u16, st.booleans(), st.booleans()),
    st.builds(Connack, return_codes),
    st.just(WillTopicReq()),
    st.one_of(st.just(WillTopic()), st.builds(WillTopic, nonempty_text, qos, st.booleans())),
    st.just(WillMsgReq()),
    st.builds(WillMsg, payload),
    st.builds(Register, u16, u16, nonempty_text),
    st.builds(Regack, u16, u16, return_codes),
    _publish(),
    st.builds(Puback, u16, u16, return_codes),
    st.builds(Pubrec, u16),
    st.builds(Pubrel, u16),
    st.builds(Pubcomp, u16),
    st.builds(lambda t, mid, q, d: Subscribe(t[1], mid, q, d, t[0]),
              _topic_choice(), u16, qos, st.booleans()),
    st.builds(Suback, u16, u16, return_codes, qos),
    st.builds(lambda t, mid: Unsubscribe(t[1], mid, t[0]), _topic_choice(), u16),
    st.builds(Unsuback, u16),
    st.builds(Pingreq, st.one_of(st.none(), nonempty_text)),
    st.just(Pingresp()),
    st.builds(Disconnect, st.one_of(st.none(), u16)),
    st.one_of(st.just(WillTopicUpd()), st.builds(WillTopicUpd, nonempty_text, qos, st.booleans())),
    st.builds(WillMsgUpd, payload),
    st.builds(WillTopicResp, return_codes),
    st.builds(WillMsgResp, return_codes),
)
MESSAGES: st.SearchStrategy[Message] = st.one_of(
    PLAIN, st.builds(Encapsulated, st.binary(max_size=12), PLAIN, st.integers(0, 3)))


@SETTINGS
@given(MESSAGES)
def test_decode_encode_round_trip(msg: Message) -> None:
    wire = encode(msg)
    assert decode(wire) == msg
    # the Length field says the size (for an Encapsulated, the size of its header)
    if not isinstance(msg, Encapsulated):
        total = wire[0] if wire[0] != 1 else int.from_bytes(wire[1:3], "big")
        assert total == len(wire)
        assert (wire[0] == 1) == (len(wire) > 255)


@SETTINGS
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_mqttsn_error(data: bytes) -> None:
    try:
        msg = decode(data)
    except MqttsnError:
        return
    assert decode(encode(msg)) == msg


@SETTINGS
@given(MESSAGES, st.data())
def test_damaged_datagrams_only_raise_mqttsn_error(msg: Message, data: st.DataObject) -> None:
    wire = bytearray(encode(msg))
    how = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if how == "flip":
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "cut":
        del wire[data.draw(st.integers(0, len(wire) - 1)):]
    else:
        wire += data.draw(st.binary(min_size=1, max_size=4))
    try:
        got = decode(bytes(wire))
    except MqttsnError:
        return
    assert decode(encode(got)) == got


@SETTINGS
@given(MESSAGES)
def test_cut_datagrams_are_refused(msg: Message) -> None:
    # one octet less never decodes: the Length field no longer matches (for an Encapsulated,
    # its inner message's does not)
    wire = encode(msg)
    with pytest.raises(MqttsnError):
        decode(wire[:-1])
