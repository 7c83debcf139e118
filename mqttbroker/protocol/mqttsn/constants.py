"""MQTT-SN 1.2 message types, return codes, topic id types and flag bits, with the
specification's names (MQTT For Sensor Networks Protocol Specification Version 1.2,
Stanford-Clark & Truong, section 5)."""

from __future__ import annotations

from enum import IntEnum


class MsgType(IntEnum):
    """The MsgType octet [MQTT-SN 5.2.2]. 0x03, 0x11, 0x19, 0x1E-0xFD and 0xFF are
    reserved."""

    ADVERTISE = 0x00
    SEARCHGW = 0x01
    GWINFO = 0x02
    CONNECT = 0x04
    CONNACK = 0x05
    WILLTOPICREQ = 0x06
    WILLTOPIC = 0x07
    WILLMSGREQ = 0x08
    WILLMSG = 0x09
    REGISTER = 0x0A
    REGACK = 0x0B
    PUBLISH = 0x0C
    PUBACK = 0x0D
    PUBCOMP = 0x0E
    PUBREC = 0x0F
    PUBREL = 0x10
    SUBSCRIBE = 0x12
    SUBACK = 0x13
    UNSUBSCRIBE = 0x14
    UNSUBACK = 0x15
    PINGREQ = 0x16
    PINGRESP = 0x17
    DISCONNECT = 0x18
    WILLTOPICUPD = 0x1A
    WILLTOPICRESP = 0x1B
    WILLMSGUPD = 0x1C
    WILLMSGRESP = 0x1D
    ENCAPSULATED = 0xFE  # Forwarder Encapsulation [MQTT-SN 5.5]


class ReturnCode(IntEnum):
    """The ReturnCode octet [MQTT-SN 5.3.10]; 0x04-0xFF are reserved."""

    ACCEPTED = 0x00
    REJECTED_CONGESTION = 0x01
    REJECTED_INVALID_TOPIC_ID = 0x02
    REJECTED_NOT_SUPPORTED = 0x03


class TopicIdType(IntEnum):
    """The TopicIdType bits (1-0) of Flags [MQTT-SN 5.3.4]; 0b11 is reserved.

    In PUBLISH the TopicId field holds a registered topic id (NORMAL), a pre-defined topic id
    (PREDEFINED) or the two characters of a short topic name (SHORT). In SUBSCRIBE and
    UNSUBSCRIBE, NORMAL means the message ends with a topic name (wildcards allowed).
    """

    NORMAL = 0b00
    PREDEFINED = 0b01
    SHORT = 0b10


# Flags octet [MQTT-SN 5.3.4]
FLAG_DUP = 0x80  # bit 7
FLAG_QOS_MASK = 0x60  # bits 6-5: 0b00 QoS 0, 0b01 QoS 1, 0b10 QoS 2, 0b11 QoS -1
FLAG_QOS_SHIFT = 5
FLAG_RETAIN = 0x10  # bit 4
FLAG_WILL = 0x08  # bit 3
FLAG_CLEAN_SESSION = 0x04  # bit 2
FLAG_TOPIC_ID_TYPE_MASK = 0x03  # bits 1-0
TOPIC_ID_TYPE_RESERVED = 0b11

QOS_MINUS_ONE = -1  # "QoS level -1": PUBLISH without a connection [MQTT-SN 6.8]
QOS_BITS_MINUS_ONE = 0b11

# ProtocolId of CONNECT: "only the value 0x01 is defined" [MQTT-SN 5.3.8]
PROTOCOL_ID = 0x01

# Length field [MQTT-SN 5.2.1]: a first octet 0x01 announces the 3-octet form (0x01 and two
# octets of total length); otherwise the octet is the total length itself.
LENGTH_3_OCTETS_MARKER = 0x01
MAX_SHORT_LENGTH = 255  # the largest total length the 1-octet form can say
MAX_LENGTH = 0xFFFF  # the largest total length the 3-octet form can say

# ClientId "is a 1-23 character long string" [MQTT-SN 5.3.1]; the gateway enforces it, the
# codec does not (the CONNECT is still well-formed).
MAX_CLIENT_ID_LENGTH = 23

# Forwarder Encapsulation Ctrl octet [MQTT-SN 5.5]: bits 1-0 are the broadcast radius (only
# relevant from gateway to forwarder), bits 7-2 are reserved.
CTRL_RADIUS_MASK = 0x03
