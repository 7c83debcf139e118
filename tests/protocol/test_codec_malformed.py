"""Malformed and forbidden input: every row names the reason code the decoder must raise.

MQTT 3.1.1 says "close the Network Connection" [MQTT-4.8.0-1]; the reason code (MQTT 5
vocabulary, chapter 2.4) says how: 0x81 malformed packet, 0x82 protocol error, 0x84 unsupported
protocol version, 0x95 packet too large. Bodies are hand-written hex.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mqttbroker.errors import ProtocolError
from mqttbroker.protocol.codec import decode, encode
from mqttbroker.protocol.constants import PacketType, ReasonCode
from mqttbroker.protocol.packets import (
    Connect,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)
from mqttbroker.protocol.primitives import encode_varint
from mqttbroker.protocol.reader import FrameReader

MALFORMED = ReasonCode.MALFORMED_PACKET
PROTOCOL = ReasonCode.PROTOCOL_ERROR
UNSUPPORTED = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace("|", " "))


@dataclass(frozen=True)
class Bad:
    id: str
    level: int
    first: int
    body: str
    code: ReasonCode


MQTT = "00 04 4D 51 54 54"  # "MQTT"
MQISDP = "00 06 4D 51 49 73 64 70"  # "MQIsdp"


def connect_body(flags: str, rest: str = "00 01 63", level: str = "04", name: str = MQTT) -> str:
    """CONNECT variable header with the given flags byte, keep alive 60, then ``rest``."""
    return f"{name} | {level} | {flags} | 00 3C | {rest}"


BAD: list[Bad] = [
    # ---- fixed header ----------------------------------------------------------------------
    Bad("reserved-type-0", 4, 0x00, "", MALFORMED),
    Bad("reserved-type-0-with-flags", 4, 0x0F, "00 01", MALFORMED),
    Bad("reserved-type-0-level-3", 3, 0x02, "", MALFORMED),
    # type 15 is reserved in 3.1.1 (AUTH exists only in MQTT 5)
    Bad("reserved-type-15-at-3.1.1", 4, 0xF0, "00", MALFORMED),
    Bad("reserved-type-15-at-3.1", 3, 0xF0, "", MALFORMED),
    # ---- PUBLISH [MQTT 3.3] ---------------------------------------------------------------
    # [MQTT-3.3.1-4] both QoS bits set
    Bad("publish-qos3-mqtt-3.3.1-4", 4, 0x36, "00 01 61 00 01", MALFORMED),
    Bad("publish-qos3-retain-mqtt-3.3.1-4", 4, 0x37, "00 01 61 00 01", MALFORMED),
    Bad("publish-qos3-dup-mqtt-3.3.1-4", 4, 0x3E, "00 01 61 00 01", MALFORMED),
    Bad("publish-qos3-level-3", 3, 0x36, "00 01 61 00 01", MALFORMED),
    Bad("publish-qos3-level-5", 5, 0x36, "00 01 61 00 01 00", MALFORMED),
    # [MQTT-3.3.1-2] DUP must be 0 at QoS 0
    Bad("publish-dup-qos0-mqtt-3.3.1-2", 4, 0x38, "00 01 61", MALFORMED),
    Bad("publish-dup-qos0-retain-mqtt-3.3.1-2", 4, 0x39, "00 01 61 78", MALFORMED),
    Bad("publish-empty-body", 4, 0x30, "", MALFORMED),
    Bad("publish-one-byte-body", 4, 0x30, "00", MALFORMED),
    Bad("publish-topic-length-exceeds-body", 4, 0x30, "00 05 61 62", MALFORMED),
    Bad("publish-qos1-no-packet-id", 4, 0x32, "00 01 61", MALFORMED),
    Bad("publish-qos1-truncated-packet-id", 4, 0x32, "00 01 61 00", MALFORMED),
    Bad("publish-qos2-truncated-packet-id", 4, 0x34, "00 01 61 01", MALFORMED),
    # [MQTT-2.3.1-1] a QoS > 0 PUBLISH carries a non-zero packet identifier
    Bad("publish-qos1-packet-id-0-mqtt-2.3.1-1", 4, 0x32, "00 01 61 00 00 78", MALFORMED),
    Bad("publish-qos2-packet-id-0-mqtt-2.3.1-1", 4, 0x34, "00 01 61 00 00", MALFORMED),
    # [MQTT-1.5.3-1] ill-formed UTF-8, encoded surrogates included
    Bad("publish-topic-surrogate-ED-A0-80-mqtt-1.5.3-1", 4, 0x30, "00 03 ED A0 80", MALFORMED),
    Bad("publish-topic-low-surrogate-ED-BF-BF-mqtt-1.5.3-1", 4, 0x30, "00 03 ED BF BF",
        MALFORMED),
    Bad("publish-topic-overlong-nul-C0-80-mqtt-1.5.3-1", 4, 0x30, "00 02 C0 80", MALFORMED),
    Bad("publish-topic-overlong-slash-C0-AF", 4, 0x30, "00 02 C0 AF", MALFORMED),
    Bad("publish-topic-overlong-3-byte-E0-80-AF", 4, 0x30, "00 03 E0 80 AF", MALFORMED),
    Bad("publish-topic-lone-continuation-byte", 4, 0x30, "00 01 80", MALFORMED),
    Bad("publish-topic-truncated-sequence", 4, 0x30, "00 02 E2 82", MALFORMED),
    Bad("publish-topic-above-U+10FFFF", 4, 0x30, "00 04 F4 90 80 80", MALFORMED),
    Bad("publish-topic-byte-FF", 4, 0x30, "00 01 FF", MALFORMED),
    # [MQTT-1.5.3-2] U+0000 in a string
    Bad("publish-topic-nul-mqtt-1.5.3-2", 4, 0x30, "00 03 61 00 62", MALFORMED),
    Bad("publish-topic-only-nul-mqtt-1.5.3-2", 4, 0x30, "00 01 00", MALFORMED),
    # ---- PUBACK / PUBREC / PUBREL / PUBCOMP [MQTT 3.4 - 3.7] --------------------------------
    *[Bad(f"{name}-empty-body", 4, first, "", MALFORMED)
      for name, first in (("puback", 0x40), ("pubrec", 0x50), ("pubrel", 0x62),
                          ("pubcomp", 0x70))],
    *[Bad(f"{name}-truncated-packet-id", 4, first, "00", MALFORMED)
      for name, first in (("puback", 0x40), ("pubrec", 0x50), ("pubrel", 0x62),
                          ("pubcomp", 0x70))],
    *[Bad(f"{name}-trailing-byte-at-3.1.1", 4, first, "00 01 00", MALFORMED)
      for name, first in (("puback", 0x40), ("pubrec", 0x50), ("pubrel", 0x62),
                          ("pubcomp", 0x70))],
    *[Bad(f"{name}-packet-id-0", 4, first, "00 00", MALFORMED)
      for name, first in (("puback", 0x40), ("pubrec", 0x50), ("pubrel", 0x62),
                          ("pubcomp", 0x70))],
    # ---- SUBSCRIBE [MQTT 3.8] --------------------------------------------------------------
    # [MQTT-3.8.3-3] at least one topic filter / QoS pair: a protocol violation
    Bad("subscribe-no-filters-mqtt-3.8.3-3", 4, 0x82, "00 01", PROTOCOL),
    Bad("subscribe-no-filters-level-3", 3, 0x82, "00 01", PROTOCOL),
    Bad("subscribe-empty-body", 4, 0x82, "", MALFORMED),
    Bad("subscribe-truncated-packet-id", 4, 0x82, "00", MALFORMED),
    Bad("subscribe-packet-id-0-mqtt-2.3.1-1", 4, 0x82, "00 00 | 00 01 61 00", MALFORMED),
    # [MQTT-3.8.3-4] requested QoS 3, reserved option bits
    Bad("subscribe-requested-qos3-mqtt-3.8.3-4", 4, 0x82, "00 01 | 00 01 61 03", MALFORMED),
    Bad("subscribe-second-filter-qos3-mqtt-3.8.3-4", 4, 0x82,
        "00 01 | 00 01 61 01 | 00 01 62 03", MALFORMED),
    *[Bad(f"subscribe-reserved-option-bit-0x{bit:02X}-mqtt-3.8.3-4", 4, 0x82,
          f"00 01 | 00 01 61 {bit:02X}", MALFORMED)
      for bit in (0x04, 0x08, 0x10, 0x20, 0x40, 0x80)],
    Bad("subscribe-reserved-option-bits-level-3", 3, 0x82, "00 01 | 00 01 61 FC", MALFORMED),
    Bad("subscribe-missing-options-byte", 4, 0x82, "00 01 | 00 01 61", MALFORMED),
    Bad("subscribe-truncated-filter", 4, 0x82, "00 01 | 00 05 61 62", MALFORMED),
    Bad("subscribe-truncated-filter-length", 4, 0x82, "00 01 | 00", MALFORMED),
    Bad("subscribe-filter-invalid-utf8", 4, 0x82, "00 01 | 00 03 ED A0 80 00", MALFORMED),
    Bad("subscribe-filter-nul", 4, 0x82, "00 01 | 00 01 00 00", MALFORMED),
    # ---- SUBACK [MQTT 3.9] -----------------------------------------------------------------
    Bad("suback-truncated-packet-id", 4, 0x90, "00", MALFORMED),
    # ---- UNSUBSCRIBE [MQTT 3.10] ------------------------------------------------------------
    # [MQTT-3.10.3-2] at least one topic filter: a protocol violation
    Bad("unsubscribe-no-filters-mqtt-3.10.3-2", 4, 0xA2, "00 01", PROTOCOL),
    Bad("unsubscribe-empty-body", 4, 0xA2, "", MALFORMED),
    Bad("unsubscribe-packet-id-0-mqtt-2.3.1-1", 4, 0xA2, "00 00 | 00 01 61", MALFORMED),
    Bad("unsubscribe-truncated-filter", 4, 0xA2, "00 01 | 00 02 61", MALFORMED),
    Bad("unsubscribe-dangling-length-byte", 4, 0xA2, "00 01 | 00 01 61 | 00", MALFORMED),
    Bad("unsubscribe-filter-invalid-utf8", 4, 0xA2, "00 01 | 00 02 C0 80", MALFORMED),
    # ---- UNSUBACK / CONNACK (sent by a server, still must parse strictly) -------------------
    Bad("unsuback-trailing-byte-at-3.1.1", 4, 0xB0, "00 01 00", MALFORMED),
    Bad("unsuback-packet-id-0", 4, 0xB0, "00 00", MALFORMED),
    Bad("connack-truncated", 4, 0x20, "00", MALFORMED),
    Bad("connack-trailing-byte-at-3.1.1", 4, 0x20, "00 00 00", MALFORMED),
    # ---- PINGREQ / PINGRESP / DISCONNECT ---------------------------------------------------
    Bad("pingreq-with-body", 4, 0xC0, "00", MALFORMED),
    Bad("pingresp-with-body", 4, 0xD0, "00", MALFORMED),
    Bad("disconnect-with-body-at-3.1.1", 4, 0xE0, "00", MALFORMED),
    Bad("disconnect-with-body-at-3.1", 3, 0xE0, "00", MALFORMED),
    # ---- CONNECT [MQTT 3.1] ----------------------------------------------------------------
    # [MQTT-3.1.2-3] reserved flag bit 0
    Bad("connect-reserved-flag-mqtt-3.1.2-3", 4, 0x10, connect_body("03"), MALFORMED),
    Bad("connect-reserved-flag-alone-mqtt-3.1.2-3", 4, 0x10, connect_body("01"), MALFORMED),
    Bad("connect-reserved-flag-level-3", 3, 0x10,
        connect_body("03", level="03", name=MQISDP), MALFORMED),
    # [MQTT-3.1.2-11] [MQTT-3.1.2-13] will QoS without the will flag
    Bad("connect-will-qos1-without-will-flag-mqtt-3.1.2-13", 4, 0x10, connect_body("0A"),
        MALFORMED),
    Bad("connect-will-qos2-without-will-flag-mqtt-3.1.2-13", 4, 0x10, connect_body("12"),
        MALFORMED),
    # [MQTT-3.1.2-15] will retain without the will flag
    Bad("connect-will-retain-without-will-flag-mqtt-3.1.2-15", 4, 0x10, connect_body("22"),
        MALFORMED),
    # [MQTT-3.1.2-14] will QoS 3
    Bad("connect-will-qos3-mqtt-3.1.2-14", 4, 0x10,
        connect_body("1E", "00 01 63 | 00 01 77 | 00 00"), MALFORMED),
    Bad("connect-will-qos3-without-will-flag", 4, 0x10, connect_body("1A"), MALFORMED),
    # [MQTT-3.1.2-22] password flag without user name flag (3.1.1)
    Bad("connect-password-without-username-mqtt-3.1.2-22", 4, 0x10,
        connect_body("42", "00 01 63 | 00 01 70"), MALFORMED),
    # [MQTT-3.1.2-9] will flag set: will topic and will message must be present
    Bad("connect-will-flag-but-no-will-fields-mqtt-3.1.2-9", 4, 0x10, connect_body("06"),
        MALFORMED),
    Bad("connect-will-topic-but-no-will-message-mqtt-3.1.2-9", 4, 0x10,
        connect_body("06", "00 01 63 | 00 01 77"), MALFORMED),
    # [MQTT-3.1.2-19] [MQTT-3.1.2-21] flagged user name / password must be present
    Bad("connect-username-flag-but-no-username-mqtt-3.1.2-19", 4, 0x10, connect_body("82"),
        MALFORMED),
    Bad("connect-password-flag-but-no-password-mqtt-3.1.2-21", 4, 0x10,
        connect_body("C2", "00 01 63 | 00 01 75"), MALFORMED),
    # [MQTT-3.1.2-18] no user name flag: no user name (trailing bytes)
    Bad("connect-username-without-flag-mqtt-3.1.2-18", 4, 0x10,
        connect_body("02", "00 01 63 | 00 01 75"), MALFORMED),
    Bad("connect-trailing-byte", 4, 0x10, connect_body("02", "00 01 63 | 00"), MALFORMED),
    Bad("connect-truncated-after-protocol-name", 4, 0x10, MQTT, MALFORMED),
    Bad("connect-truncated-keep-alive", 4, 0x10, f"{MQTT} 04 02 00", MALFORMED),
    Bad("connect-missing-client-id", 4, 0x10, connect_body("02", ""), MALFORMED),
    Bad("connect-truncated-client-id", 4, 0x10, connect_body("02", "00 03 61"), MALFORMED),
    Bad("connect-empty-body", 4, 0x10, "", MALFORMED),
    Bad("connect-truncated-protocol-name", 4, 0x10, "00 04 4D 51", MALFORMED),
    Bad("connect-client-id-invalid-utf8-mqtt-1.5.3-1", 4, 0x10,
        connect_body("02", "00 03 ED A0 80"), MALFORMED),
    Bad("connect-client-id-nul-mqtt-1.5.3-2", 4, 0x10, connect_body("02", "00 01 00"),
        MALFORMED),
    Bad("connect-username-invalid-utf8", 4, 0x10, connect_body("82", "00 01 63 | 00 02 C0 80"),
        MALFORMED),
    Bad("connect-will-topic-invalid-utf8", 4, 0x10,
        connect_body("06", "00 01 63 | 00 01 FF | 00 00"), MALFORMED),
    # [MQTT-3.1.2-2] unsupported protocol level: CONNACK 0x01 (0x84 in MQTT 5)
    *[Bad(f"connect-mqtt-level-{lv}-mqtt-3.1.2-2", 4, 0x10,
          connect_body("02", level=f"{lv:02X}"), UNSUPPORTED)
      for lv in (0, 1, 2, 6, 7, 0xFF)],
    Bad("connect-mqtt-name-with-level-3-mqtt-3.1.2-2", 4, 0x10, connect_body("02", level="03"),
        UNSUPPORTED),
    Bad("connect-mqisdp-name-with-level-4-mqtt-3.1.2-2", 4, 0x10,
        connect_body("02", level="04", name=MQISDP), UNSUPPORTED),
    Bad("connect-mqisdp-name-with-level-5", 4, 0x10,
        connect_body("02", level="05", name=MQISDP), UNSUPPORTED),
    # [MQTT-3.1.2-1] an unknown protocol name: close (no CONNACK)
    Bad("connect-protocol-name-lowercase-mqtt-3.1.2-1", 4, 0x10,
        connect_body("02", name="00 04 6D 71 74 74"), PROTOCOL),
    Bad("connect-protocol-name-MQTX-mqtt-3.1.2-1", 4, 0x10,
        connect_body("02", name="00 04 4D 51 54 58"), PROTOCOL),
    Bad("connect-protocol-name-empty-mqtt-3.1.2-1", 4, 0x10, connect_body("02", name="00 00"),
        PROTOCOL),
    Bad("connect-protocol-name-MQIsdp-truncated-mqtt-3.1.2-1", 4, 0x10,
        connect_body("02", name="00 05 4D 51 49 73 64"), PROTOCOL),
    # ---- MQTT 5 --------------------------------------------------------------------------
    Bad("v5-auth-at-3.1.1-is-reserved", 4, 0xF0, "", MALFORMED),
    Bad("v5-unknown-property-0x7F", 5, 0x30, "00 01 61 | 02 7F 00", MALFORMED),
    Bad("v5-property-not-allowed-in-packet", 5, 0x30,
        "00 01 61 | 05 11 00 00 00 01", MALFORMED),  # Session Expiry in PUBLISH
    Bad("v5-will-delay-not-allowed-in-connect", 5, 0x10,
        connect_body("02", "05 18 00 00 00 01 | 00 00", level="05"), MALFORMED),
    Bad("v5-property-length-beyond-packet", 5, 0x30, "00 01 61 | 09 02 00 00 00 01",
        MALFORMED),
    Bad("v5-property-value-overruns-block", 5, 0x30, "00 01 61 | 02 02 00 00 00 01 78",
        MALFORMED),
    # [MQTT-2.2.2-2 (v5)] a property other than User Property / Subscription Id at most once
    Bad("v5-duplicate-message-expiry", 5, 0x30,
        "00 01 61 | 0A 02 00 00 00 01 02 00 00 00 02", PROTOCOL),
    Bad("v5-duplicate-reason-string-in-puback", 5, 0x40,
        "00 01 00 | 08 1F 00 01 61 1F 00 01 62", PROTOCOL),
    Bad("v5-subscribe-reserved-option-bits", 5, 0x82, "00 01 | 00 | 00 01 61 C0", MALFORMED),
    Bad("v5-unsubscribe-no-filters", 5, 0xA2, "00 01 | 00", PROTOCOL),
    Bad("v5-subscribe-no-filters", 5, 0x82, "00 01 | 00", PROTOCOL),
    Bad("v5-puback-property-block-truncated", 5, 0x40, "00 01 00 05 1F 00", MALFORMED),
    Bad("v5-disconnect-trailing-after-properties", 5, 0xE0, "00 00 00", MALFORMED),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: b.id)
def test_malformed_table(bad: Bad) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(bad.first, h(bad.body), bad.level)
    assert exc.value.code == bad.code, str(exc.value)


# MQTT 5 value rules the decoder must enforce as Protocol Errors (the spec sentences have no
# [MQTT-x] tag; the section is cited).
BAD_V5_VALUES: list[Bad] = [
    # 3.8.2.1.2 "It is a Protocol Error if the Subscription Identifier has a value of 0."
    Bad("v5-subscribe-subscription-identifier-0", 5, 0x82, "00 01 | 02 0B 00 | 00 01 61 00",
        PROTOCOL),
    # 3.8.2.1.2 "It is a Protocol Error to include the Subscription Identifier more than once."
    Bad("v5-subscribe-subscription-identifier-twice", 5, 0x82,
        "00 01 | 04 0B 01 0B 02 | 00 01 61 00", PROTOCOL),
    # 3.1.2.11.3 "It is a Protocol Error to include the Receive Maximum value more than once or
    # for it to have the value 0."
    Bad("v5-connect-receive-maximum-0", 5, 0x10,
        connect_body("02", "03 21 00 00 | 00 00", level="05"), PROTOCOL),
    # 3.8.3.1 "It is a Protocol Error to send a Retain Handling value of 3."
    Bad("v5-subscribe-retain-handling-3", 5, 0x82, "00 01 | 00 | 00 01 61 30", PROTOCOL),
    # 3.8.3.1 "It is a Protocol Error if the Maximum QoS field has the value 3."
    Bad("v5-subscribe-maximum-qos-3", 5, 0x82, "00 01 | 00 | 00 01 61 03", PROTOCOL),
]


@pytest.mark.parametrize("bad", BAD_V5_VALUES, ids=lambda b: b.id)
def test_mqtt5_value_rules_are_protocol_errors(bad: Bad) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(bad.first, h(bad.body), bad.level)
    assert exc.value.code == bad.code, str(exc.value)


# ---- wrong fixed-header flags [MQTT-2.2.2-1] [MQTT-2.2.2-2] ------------------------------------

# A valid body for each non-PUBLISH packet type at level 4, and its required flags.
_VALID_BODIES = {
    PacketType.CONNECT: (0x0, connect_body("02")),
    PacketType.CONNACK: (0x0, "00 00"),
    PacketType.PUBACK: (0x0, "00 01"),
    PacketType.PUBREC: (0x0, "00 01"),
    PacketType.PUBREL: (0x2, "00 01"),  # [MQTT-3.6.1-1]
    PacketType.PUBCOMP: (0x0, "00 01"),
    PacketType.SUBSCRIBE: (0x2, "00 01 00 01 61 00"),  # [MQTT-3.8.1-1]
    PacketType.SUBACK: (0x0, "00 01 00"),
    PacketType.UNSUBSCRIBE: (0x2, "00 01 00 01 61"),  # [MQTT-3.10.1-1]
    PacketType.UNSUBACK: (0x0, "00 01"),
    PacketType.PINGREQ: (0x0, ""),
    PacketType.PINGRESP: (0x0, ""),
    PacketType.DISCONNECT: (0x0, ""),  # [MQTT-3.14.1-1]
}

# MQTT 3.1 (level 3) sends PUBREL, SUBSCRIBE and UNSUBSCRIBE at QoS 1 and sets DUP (0x08) when
# it sends one again [MQTT 3.1, 2.1]: 0x6A, 0x8A, 0xAA are valid there (and only there)
_V31_DUP = {(PacketType.PUBREL, 0xA), (PacketType.SUBSCRIBE, 0xA), (PacketType.UNSUBSCRIBE, 0xA)}

_FLAG_CASES = [(level, t, flags) for level in (3, 4) for t, (required, _) in _VALID_BODIES.items()
               for flags in range(16)
               if flags != required and not (level == 3 and (t, flags) in _V31_DUP)]


@pytest.mark.parametrize(("level", "ptype", "flags"), _FLAG_CASES,
                         ids=[f"{lv}-{t.name}-0x{f:X}" for lv, t, f in _FLAG_CASES])
def test_wrong_fixed_header_flags_are_malformed_mqtt_2_2_2_2(ptype: PacketType, flags: int,
                                                              level: int) -> None:
    """[MQTT-2.2.2-2] invalid flags: the receiver MUST close the connection."""
    _, body = _VALID_BODIES[ptype]
    if ptype == PacketType.CONNECT and level == 3:
        body = connect_body("02", level="03", name=MQISDP)
    with pytest.raises(ProtocolError) as exc:
        decode((ptype << 4) | flags, h(body), level)
    assert exc.value.code == MALFORMED


@pytest.mark.parametrize(("ptype", "flags"), sorted(_V31_DUP),
                         ids=[f"{t.name}-0x{f:X}" for t, f in sorted(_V31_DUP)])
def test_mqtt31_dup_on_pubrel_subscribe_unsubscribe_is_accepted(ptype: PacketType,
                                                                flags: int) -> None:
    """MQTT 3.1: a re-sent PUBREL / SUBSCRIBE / UNSUBSCRIBE carries DUP (0x6A, 0x8A, 0xAA) and
    decodes as the same packet (DUP is not kept: these packets have no dup field)."""
    required, body = _VALID_BODIES[ptype]
    assert decode((ptype << 4) | flags, h(body), 3) == decode((ptype << 4) | required, h(body), 3)


_V5_BODIES = {PacketType.PUBREL: "00 01", PacketType.SUBSCRIBE: "00 01 00 00 01 61 00",
              PacketType.UNSUBSCRIBE: "00 01 00 00 01 61"}


@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("ptype", list(_V5_BODIES), ids=lambda t: t.name)
def test_dup_on_pubrel_subscribe_unsubscribe_malformed_after_3_1(ptype: PacketType,
                                                                 level: int) -> None:
    """3.1.1 [MQTT-2.2.2-2] and 5.0 [MQTT-2.1.3-1] fixed those flags at 0x2: DUP there is a
    malformed packet."""
    body = _V5_BODIES[ptype] if level == 5 else _VALID_BODIES[ptype][1]
    decode((ptype << 4) | 0x2, h(body), level)  # (the body is valid)
    with pytest.raises(ProtocolError) as exc:
        decode((ptype << 4) | 0xA, h(body), level)
    assert exc.value.code == MALFORMED


@pytest.mark.parametrize("ptype", list(_VALID_BODIES), ids=lambda t: t.name)
def test_required_fixed_header_flags_are_accepted(ptype: PacketType) -> None:
    """The valid bodies above decode with the flags Table 2.2 requires (sanity for the table)."""
    required, body = _VALID_BODIES[ptype]
    assert decode((ptype << 4) | required, h(body), 4).type == ptype


@pytest.mark.parametrize("flags", [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0xA, 0xB, 0xC, 0xD])
def test_publish_flags_other_than_qos3_and_dup_at_qos0_are_valid(flags: int) -> None:
    """PUBLISH flags are DUP, QoS, RETAIN [MQTT 3.3.1]; only QoS 3 and DUP+QoS 0 are wrong."""
    qos = (flags >> 1) & 3
    body = "00 01 61" + (" 00 07" if qos else "") + " 78"
    p = decode(0x30 | flags, h(body), 4)
    assert isinstance(p, Publish)
    assert (p.qos, p.retain, p.dup) == (qos, bool(flags & 1), bool(flags & 8))


# ---- things that look odd but are valid ---------------------------------------------------------

def test_password_without_username_is_valid_in_mqtt5() -> None:
    """MQTT 5 dropped [MQTT-3.1.2-22]: a password may be sent without a user name."""
    p = decode(0x10, h(connect_body("42", "00 | 00 01 63 | 00 01 70", level="05")), 5)
    assert isinstance(p, Connect) and p.username is None and p.password == b"p"


def test_utf8_noncharacter_is_not_malformed() -> None:
    """U+FFFF is well-formed UTF-8; 3.1.1 only says SHOULD NOT, so the decoder accepts it."""
    p = decode(0x30, h("00 03 EF BF BF"), 4)
    assert isinstance(p, Publish) and p.topic == "\uffff"


def test_four_byte_utf8_topic_is_valid() -> None:
    p = decode(0x30, h("00 04 F0 9F 98 80"), 4)
    assert isinstance(p, Publish) and p.topic == "\U0001F600"


def test_will_payload_and_password_are_binary_not_utf8() -> None:
    """Will message and password are binary data [MQTT 3.1.3.3, 3.1.3.5]: no UTF-8 check."""
    body = connect_body("C6", "00 01 63 | 00 01 77 | 00 02 C0 80 | 00 01 75 | 00 02 ED A0")
    p = decode(0x10, h(body), 4)
    assert isinstance(p, Connect)
    assert p.will == Will("w", b"\xc0\x80") and p.password == b"\xed\xa0"


def test_publish_payload_is_not_utf8_checked() -> None:
    p = decode(0x30, h("00 01 61 C0 80 00 ED A0 80"), 4)
    assert isinstance(p, Publish) and p.payload == h("C0 80 00 ED A0 80")


def test_subscribe_filter_wildcards_are_not_a_codec_error() -> None:
    """Filter validity is the broker's (SUBACK 0x80), not a reason to drop the connection."""
    p = decode(0x82, h("00 01 | 00 02 61 23 00"), 4)
    assert p == Subscribe(1, [Subscription("a#", 0)])


def test_unsubscribe_decodes_many_filters() -> None:
    p = decode(0xA2, h("00 09 | 00 01 61 | 00 00 | 00 01 23"), 4)
    assert p == Unsubscribe(9, ["a", "", "#"])


def test_protocol_error_carries_code_and_message() -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(0x36, h("00 01 61 00 01"), 4)
    err = exc.value
    assert err.code is ReasonCode.MALFORMED_PACKET
    assert "0x81" in str(err) and "MALFORMED_PACKET" in str(err)


# ---- FrameReader [MQTT 2.2.3] -----------------------------------------------------------------

@pytest.mark.parametrize("length", ["FF FF FF FF 01", "80 80 80 80 00", "FF FF FF FF"])
def test_remaining_length_longer_than_four_bytes_is_malformed(length: str) -> None:
    """Remaining Length is at most four bytes [MQTT 2.2.3]: a fifth is malformed (0x81)."""
    with pytest.raises(ProtocolError) as exc:
        FrameReader().feed(h("30 " + length))
    assert exc.value.code == MALFORMED


def test_remaining_length_fifth_byte_refused_when_split() -> None:
    r = FrameReader()
    assert r.feed(h("30 80 80")) == []
    with pytest.raises(ProtocolError) as exc:
        r.feed(h("80 80"))
    assert exc.value.code == MALFORMED


@pytest.mark.parametrize(("length", "value"), [
    ("00", 0), ("7F", 127), ("80 01", 128), ("FF 7F", 16_383), ("80 80 01", 16_384),
    ("FF FF 7F", 2_097_151), ("80 80 80 01", 2_097_152), ("FF FF FF 7F", 268_435_455),
])
def test_remaining_length_table_mqtt_2_2_3(length: str, value: int) -> None:
    """The boundaries of Table 2.4 - Size of Remaining Length field: the reader waits for
    exactly ``value`` body bytes."""
    r = FrameReader()
    header = h("30 " + length)
    assert r.feed(header) == ([(0x30, b"")] if value == 0 else [])
    if value and value <= 16_384:
        assert r.feed(b"\x00" * (value - 1)) == []
        assert r.feed(b"\x01") == [(0x30, b"\x00" * (value - 1) + b"\x01")]
        assert r.buffered() == 0


def test_packet_too_large_refused_when_header_arrives() -> None:
    """A frame announcing more than max_packet_size is refused before its body arrives."""
    r = FrameReader(max_packet_size=100)
    with pytest.raises(ProtocolError) as exc:
        r.feed(h("30 FF FF FF 7F"))  # 268 MB announced, nothing sent
    assert exc.value.code == ReasonCode.PACKET_TOO_LARGE


def test_packet_too_large_counts_the_whole_packet() -> None:
    """max_packet_size bounds the whole packet: type byte + length bytes + body."""
    r = FrameReader(max_packet_size=10)
    assert r.feed(h("30 08") + b"x" * 8) == [(0x30, b"x" * 8)]  # 10 bytes: fits
    with pytest.raises(ProtocolError) as exc:
        r.feed(h("30 09"))  # 11 bytes announced
    assert exc.value.code == ReasonCode.PACKET_TOO_LARGE


def test_packet_too_large_header_split() -> None:
    r = FrameReader(max_packet_size=1000)
    assert r.feed(h("30")) == []
    assert r.feed(h("FF")) == []
    with pytest.raises(ProtocolError) as exc:
        r.feed(h("7F"))  # 16383 announced
    assert exc.value.code == ReasonCode.PACKET_TOO_LARGE


def test_packet_too_large_after_good_frames_in_same_feed() -> None:
    r = FrameReader(max_packet_size=50)
    with pytest.raises(ProtocolError) as exc:
        r.feed(h("C0 00 D0 00 30 40"))
    assert exc.value.code == ReasonCode.PACKET_TOO_LARGE


def _stream() -> tuple[bytes, list[tuple[int, bytes]]]:
    packets = [
        encode(Connect("MQTT", 4, "client", False, 30, "u", b"p", Will("w/t", b"gone", 1)), 4),
        encode(Publish("a/b", b"x" * 300, 1, packet_id=7), 4),  # two-byte remaining length
        encode(Subscribe(2, [Subscription("a/#", 2)]), 4),
        b"\xc0\x00",
        encode(Publish("t", b"", 0), 4),
        encode(Unsubscribe(3, ["a/#"]), 4),
        b"\xe0\x00",
    ]
    expected = [(p[0], p[2:] if p[1] < 0x80 else p[3:]) for p in packets]
    return b"".join(packets), expected


def test_many_frames_in_one_feed() -> None:
    data, expected = _stream()
    r = FrameReader()
    assert r.feed(data) == expected
    assert r.buffered() == 0


def test_frames_split_at_every_byte_boundary_reassemble_identically() -> None:
    data, expected = _stream()
    for cut in range(len(data) + 1):
        r = FrameReader()
        frames = r.feed(data[:cut]) + r.feed(data[cut:])
        assert frames == expected, cut
        assert r.buffered() == 0


def test_frames_fed_one_byte_at_a_time() -> None:
    data, expected = _stream()
    r = FrameReader()
    frames: list[tuple[int, bytes]] = []
    for i in range(len(data)):
        frames += r.feed(data[i:i + 1])
    assert frames == expected
    assert r.buffered() == 0


def test_large_frame_in_many_reads_comes_out_whole_once_complete() -> None:
    """A frame bigger than a read is held until its last byte, then cut with what follows
    it in that read (a PINGREQ here); the bytes of the next frame stay held."""
    body = b"\x00\x01t" + bytes(range(256)) * 4096  # ~1 MiB
    frame = b"\x30" + encode_varint(len(body)) + body
    data = frame + b"\xc0\x00" + b"\x30"
    r = FrameReader()
    got: list[tuple[int, bytes]] = []
    for start in range(0, len(data), 4096):
        out = r.feed(data[start:start + 4096])
        if start + 4096 < len(frame):
            assert out == [] and r.buffered() == start + 4096
        got += out
    assert got == [(0x30, body), (0xC0, b"")]
    assert r.buffered() == 1 and r.head(1) == b"\x30"


def test_frames_split_at_every_pair_of_boundaries() -> None:
    data, expected = _stream()
    n = len(data)
    step = max(1, n // 40)
    for a in range(0, n + 1, step):
        for b in range(a, n + 1, step):
            r = FrameReader()
            assert r.feed(data[:a]) + r.feed(data[a:b]) + r.feed(data[b:]) == expected


def test_partial_frame_is_buffered() -> None:
    r = FrameReader()
    assert r.feed(h("32 09 00 03 61")) == []
    assert r.buffered() == 5
    assert r.feed(h("2F 62 00 0A 68 69 C0")) == [(0x32, h("00 03 61 2F 62 00 0A 68 69"))]
    assert r.buffered() == 1  # the start of the next frame


def test_empty_feed() -> None:
    r = FrameReader()
    assert r.feed(b"") == []
    assert r.feed(h("C0")) == []
    assert r.feed(b"") == []
    assert r.feed(h("00")) == [(0xC0, b"")]
