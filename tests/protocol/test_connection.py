"""ServerConnection byte for byte: bytes and ``now`` in, packets, errors and bytes out.

No socket, no event loop, no clock: every test feeds hand-written bytes (or, for a CONNECT with
many properties, bytes from ``codec.encode``, checked once against a hand-written golden) and
passes ``now`` itself. Every byte string the connection *produces* is compared with a golden
written by hand from the MQTT 3.1.1 and 5.0 packet layouts (chapter 3), never with the encoder's
own output. Test names cite the rule they check; the end-to-end counterparts over real sockets
live in tests/integration/ (test_v5_topic_alias.py, test_v5_disconnect.py, ...).
"""

from __future__ import annotations

from typing import Any

import pytest

from mqttbroker.errors import MQTTBrokerError, ProtocolError
from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.connection import (
    ALLOWED,
    TRANSITIONS,
    ConnState,
    Limits,
    ServerConnection,
    StateError,
)
from mqttbroker.protocol.constants import PacketType
from mqttbroker.protocol.constants import ReasonCode as RC
from mqttbroker.protocol.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
)
from mqttbroker.protocol.properties import PropertyId as P

AWAIT, CONNECTING, AUTHING, UP, CLOSED = (
    ConnState.AWAIT_CONNECT, ConnState.CONNECTING, ConnState.AUTHENTICATING, ConnState.CONNECTED,
    ConnState.CLOSED)


def h(s: str) -> bytes:
    """Hex with spaces (and ``|`` as a visual field separator) to bytes."""
    return bytes.fromhex(s.replace("|", " "))


# ---- hand-written client packets ----------------------------------------------------------------

# CONNECT 3.1.1: "MQTT" level 4, clean session, keep-alive 60, client id "c"
CONNECT_311 = h("10 0D | 00 04 4D 51 54 54 | 04 | 02 | 00 3C | 00 01 63")
# CONNECT 5.0: the same with an empty property block
CONNECT_5 = h("10 0E | 00 04 4D 51 54 54 | 05 | 02 | 00 3C | 00 | 00 01 63")
PINGREQ = h("C0 00")
SCRAM = "SCRAM-SHA-1"


def publish_frame(topic: str, payload: bytes = b"x", *, qos: int = 0, retain: bool = False,
                  pid: int = 1, props: str = "", v5: bool = True) -> bytes:
    """A client's PUBLISH, laid out by hand [MQTT 3.3]: ``props`` is the property block's
    content in hex (its length byte is added here)."""
    pb = h(props)
    body = (len(topic).to_bytes(2, "big") + topic.encode() + (pid.to_bytes(2, "big") if qos else b"")
            + (bytes((len(pb),)) + pb if v5 else b"") + payload)
    assert len(body) < 128, "one-byte Remaining Length only"
    return bytes((0x30 | qos << 1 | retain, len(body))) + body


def connected(level: int = 5, limits: Limits | None = None, now: float = 0.0,
              keep_alive: int = 60, props: dict[int, Any] | None = None) -> ServerConnection:
    """A connection that read a CONNECT and sent CONNACK 0x00."""
    c = ServerConnection(limits or Limits(), now)
    if keep_alive == 60 and not props:
        data = CONNECT_5 if level == 5 else CONNECT_311
    else:
        data = encode(Connect("MQTT", level, "c", True, keep_alive, properties=props or {}), level)
    [p] = c.next_packets(data, now)
    assert isinstance(p, Connect)
    assert c.receive_connect(p) is None
    c.accepted()
    return c


def receive(c: ServerConnection, data: bytes, now: float = 0.0) -> Publish:
    """The one PUBLISH ``data`` holds, checked by the state table and decoded."""
    [p] = c.next_packets(data, now)
    assert isinstance(p, Publish), p
    return p


def refused(fn: Any, *args: Any) -> ProtocolError:
    """The ProtocolError ``fn(*args)`` raises."""
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value


def test_connect_builder_matches_the_golden_bytes() -> None:
    """(self-check) encode() builds the hand-written CONNECTs, so it may build the others."""
    assert encode(Connect("MQTT", 5, "c", True, 60), 5) == CONNECT_5
    assert encode(Connect("MQTT", 4, "c", True, 60), 4) == CONNECT_311


# ---- the state table ----------------------------------------------------------------------------

@pytest.mark.parametrize("first", [0x30, 0x20, 0x82, 0xC0, 0xE0, 0xF0, 0x00],
                         ids=lambda b: f"0x{b:02X}")
def test_first_packet_not_connect_refused_on_first_byte_mqtt_3_1_0_1(first: int) -> None:
    """[MQTT-3.1.0-1] refused on its first byte, before a whole bogus packet is buffered."""
    c = ServerConnection(Limits(), 0.0)
    err = refused(c.receive_data, bytes((first,)), 1.0)
    assert err.code == RC.PROTOCOL_ERROR and "[MQTT-3.1.0-1]" in err.message
    assert c.reader.buffered() == 0 and c.last_received == 0.0


def test_first_packet_not_connect_gets_no_connack_mqtt_3_14_0_1() -> None:
    """The level is unknown (3.1.1 assumed), and 3.1.1 has no return code for it: just close."""
    c = ServerConnection(Limits(), 0.0)
    assert c.error_packet(refused(c.receive_data, PINGREQ, 1.0)) is None


def test_second_connect_after_connack_is_protocol_error_mqtt_3_1_0_2() -> None:
    c = connected()
    err = refused(c.next_packets, CONNECT_5, 1.0)
    assert err.code == RC.PROTOCOL_ERROR and "[MQTT-3.1.0-2]" in err.message
    # told with DISCONNECT 0x82 once connected [MQTT-4.13.1-1]
    assert c.error_packet(err) == Disconnect(0x82, {P.REASON_STRING: err.message})


def test_second_connect_before_connack_is_protocol_error_mqtt_3_1_0_2() -> None:
    """CONNECTING (a CONNECT read, not yet decided) refuses another CONNECT."""
    c = ServerConnection(Limits(), 0.0)
    err = refused(c.next_packets, CONNECT_5 + CONNECT_5, 1.0)
    assert err.code == RC.PROTOCOL_ERROR and "[MQTT-3.1.0-2]" in err.message


@pytest.mark.parametrize("frame", [h("20 02 00 00"), h("90 03 00 01 00"), h("B0 02 00 01"),
                                   h("D0 00")],
                         ids=["CONNACK", "SUBACK", "UNSUBACK", "PINGRESP"])
def test_server_only_packet_from_client_is_protocol_error_mqtt_2_1_2(frame: bytes) -> None:
    """[MQTT 2.1.2] these flow from server to client only."""
    c = connected()
    err = refused(c.next_packets, frame, 1.0)
    assert err.code == RC.PROTOCOL_ERROR


def test_reserved_packet_type_0_is_malformed_mqtt_2_1_2() -> None:
    c = connected()
    assert refused(c.next_packets, h("00 00"), 1.0).code == RC.MALFORMED_PACKET


# what each state must accept from a client, and nothing else [MQTT-3.1.0-1, -2, MQTT-3.1.2-30]
_CLIENT_SENDS = {PacketType.PUBLISH, PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL,
                 PacketType.PUBCOMP, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE,
                 PacketType.PINGREQ, PacketType.DISCONNECT, PacketType.AUTH}
STATE_TABLE: dict[ConnState, set[int]] = {
    AWAIT: {PacketType.CONNECT},
    CONNECTING: _CLIENT_SENDS,  # pipelined after CONNECT [MQTT 3.1.4], held by the caller
    AUTHING: {PacketType.AUTH, PacketType.DISCONNECT},
    UP: _CLIENT_SENDS,
    CLOSED: set(),
}


@pytest.mark.parametrize("state", list(ConnState), ids=lambda s: s.name)
def test_state_table_mqtt_3_1_0_1_and_3_1_2_30(state: ConnState) -> None:
    """Every packet type 0..15 against every state: allowed ones come back as their type, the
    others are refused (0x82; reserved type 0 after the first packet: 0x81). AUTHENTICATING takes only AUTH and
    DISCONNECT [MQTT-3.1.2-30]; CLOSED takes nothing."""
    assert ALLOWED[state] == STATE_TABLE[state]
    for ptype in range(16):
        c = ServerConnection(Limits(), 0.0)
        c.state = state
        first = ptype << 4 | (0x02 if ptype in (6, 8, 10) else 0)
        if ptype in STATE_TABLE[state]:
            assert c.check_type(first, b"") == ptype
        else:
            expected = RC.MALFORMED_PACKET if ptype == 0 and state is not AWAIT \
                else RC.PROTOCOL_ERROR
            assert refused(c.check_type, first, b"").code == expected, (state, ptype)


def test_publish_while_authenticating_refused_with_connack_mqtt_3_1_2_30() -> None:
    """A PUBLISH before the AUTH exchange ends: 0x82, answered with a CONNACK (no DISCONNECT
    before CONNACK [MQTT-3.14.0-1])."""
    c = ServerConnection(Limits(), 0.0)
    [p] = c.next_packets(encode(Connect("MQTT", 5, "c", properties={
        P.AUTHENTICATION_METHOD: SCRAM, P.AUTHENTICATION_DATA: b"n"}), 5), 0.0)
    assert isinstance(p, Connect) and c.receive_connect(p) == SCRAM
    c.challenge(SCRAM, b"s")
    err = refused(c.next_packets, publish_frame("t"), 1.0)
    assert err.code == RC.PROTOCOL_ERROR
    answer = c.error_packet(err)
    assert isinstance(answer, Connack) and answer.return_code == 0x82


def test_transition_table() -> None:
    """Moves come only from this table: a CONNECT read, challenge and accept before CONNACK,
    close anywhere."""
    assert TRANSITIONS == {
        (AWAIT, "connect"): CONNECTING,
        (CONNECTING, "challenge"): AUTHING, (AUTHING, "challenge"): AUTHING,
        (CONNECTING, "accept"): UP, (AUTHING, "accept"): UP,
        (AWAIT, "close"): CLOSED, (CONNECTING, "close"): CLOSED, (AUTHING, "close"): CLOSED,
        (UP, "close"): CLOSED, (CLOSED, "close"): CLOSED,
    }


def test_accepted_after_connect_opens_the_connection() -> None:
    c = ServerConnection(Limits(), 0.0)
    assert c.next_packets(CONNECT_5, 0.0) and c.state is CONNECTING and c.before_connack
    c.accepted()
    assert c.state is UP and not c.closed and not c.before_connack


def test_accepted_after_authentication_mqtt_4_12() -> None:
    c = ServerConnection(Limits(), 0.0)
    c.next_packets(CONNECT_5, 0.0)
    c.challenge(SCRAM, b"s")
    assert c.state is AUTHING
    c.accepted()
    assert c.state is UP


@pytest.mark.parametrize(("setup", "move"), [
    ("connected", "accepted"),  # CONNACK twice [MQTT-3.2.0-2]
    ("fresh", "accepted"),  # CONNACK before any CONNECT
    ("fresh", "challenge"),  # AUTH before any CONNECT
    ("ended", "accepted"),
    ("ended", "challenge"),
], ids=["accept-twice", "accept-before-connect", "challenge-before-connect",
        "accept-after-close", "challenge-after-close"])
def test_illegal_transition_is_state_error(setup: str, move: str) -> None:
    c = connected() if setup == "connected" else ServerConnection(Limits(), 0.0)
    if setup == "ended":
        c.ended()
    before = c.state
    with pytest.raises(StateError):
        if move == "accepted":
            c.accepted()
        else:
            c.challenge(SCRAM, None)
    assert c.state is before
    # a bug of the caller, but still in the project's error family (design: errors stay in it)
    assert issubclass(StateError, MQTTBrokerError) and not issubclass(StateError, ProtocolError)


@pytest.mark.parametrize("state", list(ConnState), ids=lambda s: s.name)
def test_ended_is_idempotent(state: ConnState) -> None:
    c = ServerConnection(Limits(), 0.0)
    c.state = state
    c.ended()
    c.ended()
    assert c.state is CLOSED and c.closed


# ---- receive_data: framing, activity, sizes ---------------------------------------------------

def test_frames_split_one_byte_at_a_time_reassemble_mqtt_1_5_5() -> None:
    c = ServerConnection(Limits(), 0.0)
    frames = []
    for i, b in enumerate(CONNECT_5):
        frames += c.receive_data(bytes((b,)), float(i))
    assert frames == [(0x10, CONNECT_5[2:])]
    c.check_type(*frames[0])  # (each frame is checked before more bytes are fed)
    c.accepted()
    stream = publish_frame("a/b", b"hi", qos=1, pid=7) + PINGREQ
    got = [c.receive_data(bytes((b,)), 100.0) for b in stream]
    assert got[:-3] == [[]] * (len(stream) - 3)  # nothing until a packet's last byte
    assert got[-3:] == [[(0x32, h("00 03 61 2F 62 | 00 07 | 00 | 68 69"))], [], [(0xC0, b"")]]


def test_several_packets_in_one_call_come_back_in_order() -> None:
    c = connected()
    data = publish_frame("a", b"1") + PINGREQ + publish_frame("b", b"2", qos=1, pid=9)
    assert c.receive_data(data, 1.0) == [
        (0x30, h("00 01 61 | 00 | 31")), (0xC0, b""), (0x32, h("00 01 62 | 00 09 | 00 | 32"))]


def test_packet_pipelined_with_connect_in_one_read_is_returned_mqtt_3_1_4() -> None:
    """Clients may send packets right after CONNECT, without waiting for CONNACK [MQTT 3.1.4]."""
    c = ServerConnection(Limits(), 0.0)
    assert c.receive_data(CONNECT_5 + PINGREQ, 1.0) == [(0x10, CONNECT_5[2:]), (0xC0, b"")]


def test_packet_pipelined_after_connect_in_a_later_read_is_returned_mqtt_3_1_4() -> None:
    c = ServerConnection(Limits(), 0.0)
    [(first, body)] = c.receive_data(CONNECT_5, 1.0)
    c.check_type(first, body)
    p = c.decode(first, body)
    assert isinstance(p, Connect)
    c.receive_connect(p)
    # the broker has not decided yet (a plugin, a cluster claim): the next read comes in
    assert c.receive_data(PINGREQ, 2.0) == [(0xC0, b"")]


def test_last_received_moves_only_on_a_complete_packet_mqtt_3_1_2_22() -> None:
    c = connected(now=10.0)
    assert c.last_received == 10.0
    assert c.receive_data(h("30 05 00 01"), 15.0) == []  # half a PUBLISH: no activity yet
    assert c.last_received == 10.0
    assert len(c.receive_data(h("61 00 78"), 17.0)) == 1
    assert c.last_received == 17.0
    assert c.receive_data(b"", 20.0) == [] and c.last_received == 17.0


# a CONNECT header announcing Remaining Length 16383 (FF 7F): 16386 bytes in all
BIG_CONNECT_HEAD_5 = h("10 FF 7F | 00 04 4D 51 54 54 | 05")
BIG_CONNECT_HEAD_311 = h("10 FF 7F | 00 04 4D 51 54 54 | 04")
TOO_BIG = "packet of 16386 bytes exceeds the maximum of 1000"


def test_connect_over_max_connect_size_v5_gets_connack_0x95() -> None:
    """Refused from its header, not buffered; an MQTT 5 header makes the refusal MQTT 5:
    CONNACK 0x95 (Packet too large) with its Reason String."""
    c = ServerConnection(Limits(max_connect_size=1000), 0.0)
    err = refused(c.receive_data, BIG_CONNECT_HEAD_5, 1.0)
    assert err.code == RC.PACKET_TOO_LARGE and err.message == TOO_BIG
    assert c.level == 5
    answer = c.error_packet(err)
    assert answer == Connack(False, 0x95, {P.REASON_STRING: TOO_BIG})
    assert isinstance(answer, Connack)
    # CONNACK | RL 55 | flags 0, reason 0x95 | properties 52: Reason String (49 bytes)
    assert encode(answer, 5) == h("20 37 | 00 95 | 34 | 1F 00 31") + TOO_BIG.encode()


def test_connect_over_max_connect_size_v311_is_closed_without_connack_mqtt_3_2_2_5() -> None:
    """3.1.1 has no return code for "too large": the level stays 4 and nothing is sent."""
    c = ServerConnection(Limits(max_connect_size=1000), 0.0)
    err = refused(c.receive_data, BIG_CONNECT_HEAD_311, 1.0)
    assert err.code == RC.PACKET_TOO_LARGE and c.level == 4
    assert c.error_packet(err) is None


def test_connect_over_max_connect_size_split_across_reads_still_speaks_v5() -> None:
    """The level is read from every byte held, not only the last read's: a CONNECT whose
    first byte came alone still gets MQTT 5's CONNACK 0x95."""
    c = ServerConnection(Limits(max_connect_size=1000), 0.0)
    assert c.receive_data(BIG_CONNECT_HEAD_5[:1], 1.0) == []
    err = refused(c.receive_data, BIG_CONNECT_HEAD_5[1:], 2.0)
    assert err.code == RC.PACKET_TOO_LARGE and c.level == 5
    assert isinstance(c.error_packet(err), Connack)


def test_connect_over_max_connect_size_before_its_level_is_read() -> None:
    """Only the fixed header arrived: the version is unknown, 3.1.1 is assumed."""
    c = ServerConnection(Limits(max_connect_size=1000), 0.0)
    assert refused(c.receive_data, h("10 FF 7F"), 1.0).code == RC.PACKET_TOO_LARGE
    assert c.level == 4


def test_max_packet_size_applies_after_connack_instead_of_max_connect_size() -> None:
    limits = Limits(max_packet_size=64, max_connect_size=32)
    c = ServerConnection(limits, 0.0)
    big_connect = encode(Connect("MQTT", 5, "c" * 18), 5)  # 33 bytes
    assert len(big_connect) == 33
    assert refused(c.receive_data, big_connect, 1.0).code == RC.PACKET_TOO_LARGE
    c = connected(limits=limits)
    fits = publish_frame("t", b"p" * 58)  # 2 + 62 = 64 bytes: exactly the maximum
    assert len(fits) == 64 and len(c.receive_data(fits, 1.0)) == 1
    err = refused(c.receive_data, publish_frame("t", b"p" * 59), 2.0)
    assert err.code == RC.PACKET_TOO_LARGE
    # once connected, an MQTT 5 client is told with DISCONNECT 0x95 [MQTT 3.2.2.3.6]
    answer = c.error_packet(err)
    assert isinstance(answer, Disconnect) and answer.reason_code == 0x95


def test_smaller_max_packet_size_bounds_the_connect_too() -> None:
    c = ServerConnection(Limits(max_packet_size=16, max_connect_size=1000), 0.0)
    connect_17 = encode(Connect("MQTT", 5, "cc"), 5)  # CONNECT_5 with one more id byte
    assert len(connect_17) == 17
    assert refused(c.receive_data, connect_17, 1.0).code == RC.PACKET_TOO_LARGE
    c = ServerConnection(Limits(max_packet_size=16, max_connect_size=1000), 0.0)
    assert len(c.receive_data(CONNECT_5, 1.0)) == 1  # 16 bytes: exactly the limit


def test_remaining_length_of_five_bytes_is_malformed_mqtt_1_5_5() -> None:
    c = connected()
    assert refused(c.receive_data, h("30 FF FF FF FF 01"), 1.0).code == RC.MALFORMED_PACKET


# ---- CONNECT: what it negotiates ----------------------------------------------------------------

def test_connect_v5_negotiates_its_properties_mqtt_3_1_2_11() -> None:
    c = ServerConnection(Limits(), 0.0)
    [p] = c.next_packets(encode(Connect("MQTT", 5, "c", True, 30, properties={
        P.SESSION_EXPIRY_INTERVAL: 120, P.MAXIMUM_PACKET_SIZE: 1000,
        P.TOPIC_ALIAS_MAXIMUM: 3, P.REQUEST_PROBLEM_INFORMATION: 1}), 5), 0.0)
    assert isinstance(p, Connect)
    assert c.receive_connect(p) is None
    assert (c.level, c.keep_alive, c.connect_expiry, c.max_out_packet, c.alias_out_max,
            c.problem_info) == (5, 30, 120, 1000, 3, True)


def test_connect_v5_defaults_without_properties() -> None:
    c = connected()
    assert (c.keep_alive, c.connect_expiry, c.max_out_packet, c.alias_out_max,
            c.problem_info) == (60, 0, 0, 0, True)


def test_connect_v311_negotiates_only_keep_alive() -> None:
    c = connected(level=4, keep_alive=25)
    assert (c.level, c.keep_alive, c.connect_expiry, c.max_out_packet, c.alias_out_max) == (
        4, 25, 0, 0, 0)


def test_request_problem_information_0_means_no_reason_string_mqtt_3_1_2_29() -> None:
    c = connected(props={P.REQUEST_PROBLEM_INFORMATION: 0})
    assert c.problem_info is False
    assert c.reason("why [MQTT-3.3.1-4]") == {}
    assert c.error_packet(ProtocolError(RC.PROTOCOL_ERROR, "why")) == Disconnect(0x82, {})


def test_connect_returns_its_authentication_method_mqtt_4_12() -> None:
    c = ServerConnection(Limits(), 0.0)
    [p] = c.next_packets(encode(Connect("MQTT", 5, "c", properties={
        P.AUTHENTICATION_METHOD: SCRAM, P.AUTHENTICATION_DATA: b"n,,n=u"}), 5), 0.0)
    assert isinstance(p, Connect)
    assert c.receive_connect(p) == SCRAM


def test_authentication_data_without_method_is_protocol_error_mqtt_3_1_2_11_10() -> None:
    """[MQTT 3.1.2.11.10] Authentication Data without an Authentication Method."""
    c = ServerConnection(Limits(), 0.0)
    # CONNECT 5.0, property block: Authentication Data (0x16) "xy"
    [p] = c.next_packets(h("10 13 | 00 04 4D 51 54 54 | 05 | 02 | 00 3C | 05 16 00 02 78 79 "
                           "| 00 01 63"), 0.0)
    assert isinstance(p, Connect)
    err = refused(c.receive_connect, p)
    assert err.code == RC.PROTOCOL_ERROR
    assert isinstance(c.error_packet(err), Connack)


def test_unsupported_protocol_level_gets_connack_0x01_mqtt_3_1_2_2() -> None:
    """[MQTT-3.1.2-2] "MQTT" level 6: CONNACK return code 0x01, then close."""
    c = ServerConnection(Limits(), 0.0)
    err = refused(c.next_packets, h("10 0D | 00 04 4D 51 54 54 | 06 | 02 | 00 3C | 00 01 63"), 0.0)
    assert err.code == RC.UNSUPPORTED_PROTOCOL_VERSION
    assert c.error_packet(err) == h("20 02 00 01")


def test_malformed_v5_connect_is_answered_in_v5_mqtt_3_1_2_3() -> None:
    """The reserved CONNECT flag set [MQTT-3.1.2-3]: the level byte was read first, so the
    refusal is an MQTT 5 CONNACK 0x81."""
    c = ServerConnection(Limits(), 0.0)
    err = refused(c.next_packets, h("10 0E | 00 04 4D 51 54 54 | 05 | 03 | 00 3C | 00 | 00 01 63"),
                  0.0)
    assert err.code == RC.MALFORMED_PACKET and c.level == 5
    answer = c.error_packet(err)
    assert isinstance(answer, Connack) and answer.return_code == 0x81


# ---- topic aliases, inbound [MQTT 3.3.2.3.4] ----------------------------------------------------

ALIASES_2 = Limits(topic_alias_maximum=2)


def test_inbound_alias_set_then_used_mqtt_3_3_2_12() -> None:
    """Topic "a/b" with alias 1 (and a Content Type), then an empty topic with alias 1: both
    resolve to "a/b"; the alias is per hop and never forwarded, the Content Type is."""
    c = connected(limits=ALIASES_2)
    p = receive(c, h("30 0E | 00 03 61 2F 62 | 07 | 23 00 01 | 03 00 01 74 | 78"))
    props, expires = c.receive_publish(p, 1.0)
    assert (p.topic, props, expires) == ("a/b", {P.CONTENT_TYPE: "t"}, None)
    p = receive(c, h("30 07 | 00 00 | 03 | 23 00 01 | 79"))
    props, _ = c.receive_publish(p, 2.0)
    assert (p.topic, p.payload, props) == ("a/b", b"y", {})


def test_inbound_alias_remapped_by_a_new_topic_mqtt_3_3_2_12() -> None:
    c = connected(limits=ALIASES_2)
    for topic in ("a", "b"):
        c.receive_publish(receive(c, publish_frame(topic, props="23 00 01")), 1.0)
    p = receive(c, publish_frame("", props="23 00 01"))
    c.receive_publish(p, 2.0)
    assert p.topic == "b"


@pytest.mark.parametrize(("limit", "alias"), [(2, 0), (2, 3), (0, 1)],
                         ids=["alias-0-mqtt-3.3.2-8", "over-max-mqtt-3.3.2-9",
                              "max-0-mqtt-3.2.2-18"])
def test_inbound_alias_out_of_range_is_0x94(limit: int, alias: int) -> None:
    c = connected(limits=Limits(topic_alias_maximum=limit))
    p = receive(c, publish_frame("a", props=f"23 00 {alias:02X}"))
    assert refused(c.receive_publish, p, 1.0).code == RC.TOPIC_ALIAS_INVALID


def test_empty_topic_with_unknown_alias_is_protocol_error_mqtt_3_3_4() -> None:
    c = connected(limits=ALIASES_2)
    c.receive_publish(receive(c, publish_frame("a", props="23 00 01")), 1.0)
    p = receive(c, publish_frame("", props="23 00 02"))
    assert refused(c.receive_publish, p, 2.0).code == RC.PROTOCOL_ERROR


def test_inbound_aliases_are_per_connection_mqtt_3_3_2_7() -> None:
    first = connected(limits=ALIASES_2)
    first.receive_publish(receive(first, publish_frame("a", props="23 00 01")), 1.0)
    second = connected(limits=ALIASES_2)
    p = receive(second, publish_frame("", props="23 00 01"))
    assert refused(second.receive_publish, p, 2.0).code == RC.PROTOCOL_ERROR


# ---- topic aliases, outbound ------------------------------------------------------------------

def frame(c: ServerConnection, topic: str, *, qos: int = 0, pid: int = 1, now: float = 0.0,
          expires_at: float | None = None) -> bytes | None:
    """A message on ``topic`` (payload "hi", no properties) framed for ``c``."""
    parts = c.publish_parts(topic, b"hi", qos, False, None, expires_at, (), now)
    if parts is None:
        return None
    return c.frame_publish(*parts, qos, False, pid)


def test_outbound_alias_set_then_used_mqtt_3_3_2_11() -> None:
    """First delivery: topic + Topic Alias 1; then an empty topic + alias 1."""
    c = connected(props={P.TOPIC_ALIAS_MAXIMUM: 2})
    assert c.needs_own_publish(False, ())
    assert frame(c, "a/b", qos=1, pid=7) == h(
        "32 0D | 00 03 61 2F 62 | 00 07 | 03 23 00 01 | 68 69")
    assert frame(c, "a/b", qos=1, pid=8) == h("32 0A | 00 00 | 00 08 | 03 23 00 01 | 68 69")


def test_outbound_aliases_full_then_topics_go_in_full_mqtt_3_1_2_26() -> None:
    """Topic Alias Maximum 1: "a" takes alias 1; "b" has none left and goes in full, every
    time; "a" keeps its alias."""
    c = connected(props={P.TOPIC_ALIAS_MAXIMUM: 1})
    assert frame(c, "a") == h("30 09 | 00 01 61 | 03 23 00 01 | 68 69")
    assert frame(c, "b") == h("30 06 | 00 01 62 | 00 | 68 69")
    assert frame(c, "b") == h("30 06 | 00 01 62 | 00 | 68 69")
    assert frame(c, "a") == h("30 08 | 00 00 | 03 23 00 01 | 68 69")


@pytest.mark.parametrize("props", [None, {P.TOPIC_ALIAS_MAXIMUM: 0}], ids=["absent", "zero"])
def test_no_outbound_alias_without_client_maximum_mqtt_3_1_2_27(
        props: dict[int, Any] | None) -> None:
    c = connected(props=props)
    assert not c.needs_own_publish(False, ())
    for _ in range(2):
        assert frame(c, "a/b") == h("30 08 | 00 03 61 2F 62 | 00 | 68 69")


def test_outbound_aliases_are_per_connection_mqtt_3_3_2_7() -> None:
    first = connected(props={P.TOPIC_ALIAS_MAXIMUM: 2})
    frame(first, "a")
    again = connected(props={P.TOPIC_ALIAS_MAXIMUM: 2})
    assert frame(again, "a") == h("30 09 | 00 01 61 | 03 23 00 01 | 68 69")


def test_publish_parts_carries_subscription_identifiers_mqtt_3_3_4_3() -> None:
    c = connected()
    assert c.needs_own_publish(False, (5,))
    head, tail = c.publish_parts("a", b"hi", 0, False, None, None, (5, 300), 0.0)
    # Subscription Identifier 5, then 300 (varint AC 02)
    assert head + tail == h("30 0B | 00 01 61 | 05 0B 05 0B AC 02 | 68 69")


def test_v311_connection_gets_v311_publish() -> None:
    c = connected(level=4)
    assert not c.needs_own_publish(True, (1,))
    assert frame(c, "a/b", qos=1, pid=7) == h("32 09 | 00 03 61 2F 62 | 00 07 | 68 69")


# ---- Message Expiry Interval [MQTT 3.3.2.3.3] ----------------------------------------------------

def test_receive_publish_message_expiry_from_now_and_not_forwarded() -> None:
    """Message Expiry Interval 30 received at 100: expires at 130; the interval itself is per
    hop (rewritten on delivery) and leaves the forwarded properties; Payload Format stays."""
    c = connected()
    p = receive(c, publish_frame("t", props="02 00 00 00 1E | 01 01"))
    props, expires_at = c.receive_publish(p, 100.0)
    assert expires_at == 130.0 and props == {P.PAYLOAD_FORMAT_INDICATOR: 1}


@pytest.mark.parametrize(("now", "left"), [(100.0, "1E"), (100.25, "1E"), (101.5, "1D"),
                                           (129.5, "01")])
def test_delivery_carries_remaining_expiry_rounded_up_mqtt_3_3_2_6(now: float, left: str) -> None:
    c = connected()
    assert frame(c, "t", now=now, expires_at=130.0) == h(
        f"30 0B | 00 01 74 | 05 02 00 00 00 {left} | 68 69")


@pytest.mark.parametrize("now", [130.0, 131.0])
def test_expired_message_is_not_delivered_mqtt_3_3_2_5(now: float) -> None:
    c = connected()
    assert c.needs_own_publish(True, ())
    assert c.publish_parts("t", b"hi", 1, False, None, 130.0, (), now) is None


def test_message_without_expiry_carries_none() -> None:
    c = connected()
    p = receive(c, publish_frame("t"))
    assert c.receive_publish(p, 100.0) == ({}, None)
    assert frame(c, "t", now=1e9) == h("30 06 | 00 01 74 | 00 | 68 69")


# ---- PUBLISH checks -----------------------------------------------------------------------------

@pytest.mark.parametrize(("max_qos", "qos"), [(0, 1), (1, 2), (0, 2)])
def test_publish_over_maximum_qos_is_0x9b_mqtt_3_2_2_11(max_qos: int, qos: int) -> None:
    c = connected(limits=Limits(max_qos=max_qos))
    p = receive(c, publish_frame("t", qos=qos))
    assert refused(c.receive_publish, p, 1.0).code == RC.QOS_NOT_SUPPORTED


def test_publish_at_maximum_qos_is_accepted() -> None:
    c = connected(limits=Limits(max_qos=1))
    assert c.receive_publish(receive(c, publish_frame("t", qos=1)), 1.0) == ({}, None)


def test_publish_retain_when_not_available_is_0x9a_mqtt_3_2_2_14() -> None:
    c = connected(limits=Limits(retain_available=False))
    p = receive(c, publish_frame("t", retain=True))
    assert refused(c.receive_publish, p, 1.0).code == RC.RETAIN_NOT_SUPPORTED


def test_subscription_identifier_from_client_is_protocol_error_mqtt_3_3_4_6() -> None:
    c = connected()
    p = receive(c, publish_frame("t", props="0B 01"))
    assert refused(c.receive_publish, p, 1.0).code == RC.PROTOCOL_ERROR


@pytest.mark.parametrize("level", [5, 4])
@pytest.mark.parametrize(("topic", "code"), [
    ("a/+", RC.TOPIC_NAME_INVALID), ("a/#", RC.TOPIC_NAME_INVALID), ("#", RC.TOPIC_NAME_INVALID),
    ("", RC.PROTOCOL_ERROR),  # [MQTT-4.7.3-1] at least one character (and no alias)
], ids=["plus", "hash-last", "hash", "empty"])
def test_invalid_topic_name_refused_mqtt_3_3_2_2(level: int, topic: str, code: RC) -> None:
    c = connected(level=level)
    p = receive(c, publish_frame(topic, v5=level == 5))
    assert refused(c.receive_publish, p, 1.0).code == code


@pytest.mark.parametrize(("topic", "ok"), [("a/b/c", True), ("/a/", True), ("a/b/c/d", False),
                                           ("///", False)])
def test_topic_deeper_than_max_topic_levels_is_0x90(topic: str, ok: bool) -> None:
    c = connected(limits=Limits(max_topic_levels=3))
    p = receive(c, publish_frame(topic))
    if ok:
        assert c.receive_publish(p, 1.0) == ({}, None)
    else:
        assert refused(c.receive_publish, p, 1.0).code == RC.TOPIC_NAME_INVALID


def test_v311_publish_is_not_subject_to_v5_only_checks() -> None:
    """Maximum QoS, Retain Available, Topic Alias Maximum are MQTT 5 notions: a 3.1.1 QoS 2
    retained PUBLISH passes a server configured with none of them."""
    c = connected(level=4, limits=Limits(max_qos=0, retain_available=False))
    p = receive(c, publish_frame("t", qos=2, retain=True, v5=False))
    assert c.receive_publish(p, 1.0) == ({}, None)


# ---- Receive Maximum (inbound flow control) -----------------------------------------------------

def test_receive_maximum_exceeded_is_0x93_mqtt_3_3_4_7() -> None:
    """The client may not have more than Receive Maximum unacknowledged [MQTT-3.3.4-7]; the
    server says so with DISCONNECT 0x93."""
    c = connected(limits=Limits(receive_maximum=2))
    c.check_receive_maximum(2)
    err = refused(c.check_receive_maximum, 3)
    assert err.code == RC.RECEIVE_MAXIMUM_EXCEEDED
    answer = c.error_packet(err)
    assert isinstance(answer, Disconnect) and answer.reason_code == 0x93


def test_receive_maximum_does_not_apply_to_v311() -> None:
    c = connected(level=4, limits=Limits(receive_maximum=2))
    c.check_receive_maximum(1000)


# ---- the client's Maximum Packet Size, DUP ------------------------------------------------------

def test_frame_publish_over_client_maximum_packet_size_is_none_mqtt_3_1_2_25() -> None:
    """The whole packet counts: 10 bytes at QoS 0 fit Maximum Packet Size 10; the same
    message at QoS 1 (12 bytes with its packet identifier) is dropped."""
    c = connected(props={P.MAXIMUM_PACKET_SIZE: 10})
    parts = c.publish_parts("t", b"1234", 0, False, None, None, (), 0.0)
    assert parts is not None
    assert c.frame_publish(*parts, 0, False, 1) == h("30 08 | 00 01 74 | 00 | 31 32 33 34")
    parts = c.publish_parts("t", b"1234", 1, False, None, None, (), 0.0)
    assert parts is not None
    assert c.frame_publish(*parts, 1, False, 1) is None
    assert c.frame_publish(*parts, 1, True, 1) is None


def test_encode_fitting_drops_reason_string_and_user_properties_mqtt_3_14_2_3() -> None:
    """[MQTT-3.14.2-3, -4] past the client's Maximum Packet Size the Reason String and User
    Properties are left out: DISCONNECT 0x81 alone is E0 01 81."""
    c = connected(props={P.MAXIMUM_PACKET_SIZE: 10})
    d = Disconnect(0x81, {P.REASON_STRING: "malformed", P.USER_PROPERTY: [("k", "v")]})
    assert c.encode_fitting(d) == h("E0 01 81")
    roomy = connected()
    assert roomy.encode_fitting(Disconnect(0x81, {P.REASON_STRING: "bad"})) == h(
        "E0 08 | 81 | 06 1F 00 03 62 61 64")


def test_encode_fitting_keeps_what_fits() -> None:
    c = connected(props={P.MAXIMUM_PACKET_SIZE: 10})
    assert c.encode_fitting(Disconnect(0x81, {P.REASON_STRING: "ab"})) == h(
        "E0 07 | 81 | 05 1F 00 02 61 62")


@pytest.mark.parametrize(("mps", "packet"), [
    (5, Connack(False, 0, {P.RECEIVE_MAXIMUM: 100})),  # nothing optional to drop
    (4, Puback(1, 0x80, {P.REASON_STRING: "no"})),  # 5 bytes even without it
], ids=["connack", "puback"])
def test_encode_fitting_none_when_still_too_big_mqtt_3_1_2_24(mps: int, packet: Any) -> None:
    c = connected(props={P.MAXIMUM_PACKET_SIZE: mps})
    assert c.encode_fitting(packet) is None


@pytest.mark.parametrize(("retain", "golden"), [
    (False, "3A 0A | 00 03 61 2F 62 | 00 07 | 00 | 68 69"),
    (True, "3B 0A | 00 03 61 2F 62 | 00 07 | 00 | 68 69"),
], ids=["plain", "retain"])
def test_frame_publish_dup_sets_bit_3_mqtt_3_3_1_1(retain: bool, golden: str) -> None:
    c = connected()
    head, tail = c.publish_parts("a/b", b"hi", 1, retain, None, None, (), 0.0)
    assert c.frame_publish(head, tail, 1, True, 7) == h(golden)
    assert c.frame_publish(head, tail, 1, False, 7)[0] == (0x33 if retain else 0x32)


# ---- error_packet, refusal, reason --------------------------------------------------------------

def test_error_before_connack_v5_is_connack_with_reason_mqtt_3_2_2_7() -> None:
    c = ServerConnection(Limits(), 0.0)
    c.check_type(0x10, CONNECT_5[2:])  # reads the level: 5
    answer = c.error_packet(ProtocolError(RC.PACKET_TOO_LARGE, "too big"))
    assert answer == Connack(False, 0x95, {P.REASON_STRING: "too big"})
    assert isinstance(answer, Connack)
    assert encode(answer, 5) == h("20 0D | 00 95 | 0A 1F 00 07 | 74 6F 6F 20 62 69 67")


@pytest.mark.parametrize(("code", "answer"), [
    (RC.UNSUPPORTED_PROTOCOL_VERSION, "20 02 00 01"),  # [MQTT-3.1.2-2]
    (RC.CLIENT_IDENTIFIER_NOT_VALID, "20 02 00 02"),
    (RC.SERVER_BUSY, "20 02 00 03"),
    (RC.BAD_USER_NAME_OR_PASSWORD, "20 02 00 04"),
    (RC.NOT_AUTHORIZED, "20 02 00 05"),
    (RC.PROTOCOL_ERROR, None),
    (RC.MALFORMED_PACKET, None),
    (RC.PACKET_TOO_LARGE, None),
], ids=lambda v: v.name if isinstance(v, RC) else None)
def test_error_before_connack_v311_mqtt_3_2_2_5(code: RC, answer: str | None) -> None:
    """3.1.1: a CONNACK with the return code the reason maps to, else just the close."""
    c = ServerConnection(Limits(), 0.0)
    c.check_type(0x10, CONNECT_311[2:])
    assert c.error_packet(ProtocolError(code, "no")) == (h(answer) if answer else None)


def test_error_after_connack_v5_is_disconnect_keep_alive_0x8d_mqtt_4_13_1_1() -> None:
    c = connected(keep_alive=10)
    answer = c.error_packet(c.keepalive_error())
    text = "keep-alive timeout (10s x 1.5) [MQTT-3.1.2-22]"
    assert answer == Disconnect(0x8D, {P.REASON_STRING: text})
    assert isinstance(answer, Disconnect)
    # DISCONNECT | RL 51 | 0x8D | properties 49: Reason String (46 bytes)
    assert encode(answer, 5) == h("E0 33 | 8D | 31 | 1F 00 2E") + text.encode()


def test_error_after_connack_v5_without_problem_information() -> None:
    c = connected(props={P.REQUEST_PROBLEM_INFORMATION: 0})
    answer = c.error_packet(c.keepalive_error())
    assert isinstance(answer, Disconnect)
    assert encode(answer, 5) == h("E0 01 8D")


def test_error_after_connack_v311_is_only_the_close() -> None:
    c = connected(level=4)
    assert c.error_packet(c.keepalive_error()) is None
    assert c.error_packet(ProtocolError(RC.MALFORMED_PACKET, "bad")) is None


def test_error_while_authenticating_is_connack_not_disconnect_mqtt_3_14_0_1() -> None:
    c = ServerConnection(Limits(), 0.0)
    c.check_type(0x10, CONNECT_5[2:])
    c.challenge(SCRAM, None)
    assert c.error_packet(ProtocolError(RC.NOT_AUTHORIZED, "no")) == Connack(
        False, 0x87, {P.REASON_STRING: "no"})


def test_error_after_close_sends_nothing_mqtt_3_14_4_1() -> None:
    c = connected()
    c.ended()
    assert c.error_packet(ProtocolError(RC.PROTOCOL_ERROR, "late")) is None
    assert c.server_disconnect(RC.SERVER_SHUTTING_DOWN, "bye") is None


def test_error_reason_cites_v5_rule_numbers() -> None:
    c = connected()
    answer = c.error_packet(ProtocolError(RC.MALFORMED_PACKET, "bad UTF-8 [MQTT-1.5.3-1]"))
    assert answer == Disconnect(0x81, {P.REASON_STRING: "bad UTF-8 [MQTT-1.5.4-1]"})


@pytest.mark.parametrize(("code", "golden"), [
    (RC.NOT_AUTHORIZED, "20 02 00 05"),
    (RC.BANNED, "20 02 00 05"),
    (RC.BAD_USER_NAME_OR_PASSWORD, "20 02 00 04"),
    (RC.CLIENT_IDENTIFIER_NOT_VALID, "20 02 00 02"),
    (RC.SERVER_UNAVAILABLE, "20 02 00 03"),
    (RC.QUOTA_EXCEEDED, "20 02 00 03"),  # no 3.1.1 code: Server unavailable
], ids=lambda v: v.name if isinstance(v, RC) else None)
def test_refusal_v311_return_code_mqtt_3_2_2_5(code: RC, golden: str) -> None:
    c = ServerConnection(Limits(), 0.0)
    c.check_type(0x10, CONNECT_311[2:])
    assert encode(c.refusal(code, "why"), 4) == h(golden)


def test_refusal_v5_reason_code_and_string_mqtt_3_2_2_7() -> None:
    c = ServerConnection(Limits(), 0.0)
    c.check_type(0x10, CONNECT_5[2:])
    assert encode(c.refusal(RC.NOT_AUTHORIZED, "no"), 5) == h(
        "20 08 | 00 87 | 05 1F 00 02 6E 6F")


@pytest.mark.parametrize(("v311", "v5"), [
    ("[MQTT-1.5.3-1]", "[MQTT-1.5.4-1]"),
    ("[MQTT-1.5.3-2]", "[MQTT-1.5.4-2]"),
    ("[MQTT-1.5.3-1/2]", "[MQTT-1.5.4-1/2]"),
    ("[MQTT-2.3.1-1]", "[MQTT-2.2.1-3]"),
    ("[MQTT-3.1.2-14]", "[MQTT-3.1.2-12]"),
    ("[MQTT-3.1.2-11/13/15]", "[MQTT-3.1.2-11/13]"),
    ("[MQTT-3.3.1-4]", "[MQTT-3.3.1-4]"),  # the same number in both: unchanged
])
def test_reason_maps_v311_rule_numbers_to_v5(v311: str, v5: str) -> None:
    c = connected()
    assert c.reason(f"broken {v311} here") == {P.REASON_STRING: f"broken {v5} here"}


def test_reason_empty_text_is_no_property() -> None:
    assert connected().reason("") == {}


@pytest.mark.parametrize(("level", "state", "expected"), [
    (5, UP, Disconnect(0x8B, {P.REASON_STRING: "bye"})),
    (4, UP, None),  # 3.1.1 has no server DISCONNECT
    (5, AWAIT, None),  # [MQTT-3.14.0-1] none before CONNACK
])
def test_server_disconnect_mqtt_3_14_0_1(level: int, state: ConnState,
                                        expected: Disconnect | None) -> None:
    c = connected(level=level)
    c.state = state
    assert c.server_disconnect(RC.SERVER_SHUTTING_DOWN, "bye") == expected


# ---- keep-alive ---------------------------------------------------------------------------------

def test_keepalive_deadline_is_one_and_a_half_keep_alive_mqtt_3_1_2_22() -> None:
    c = connected(keep_alive=10, now=100.0)
    assert c.keepalive_deadline() == 115.0
    c.receive_data(PINGREQ, 110.0)
    assert c.keepalive_deadline() == 125.0
    c.receive_data(h("30"), 120.0)  # a packet begun is not a packet received
    assert c.keepalive_deadline() == 125.0


def test_keepalive_0_has_no_deadline() -> None:
    c = connected(keep_alive=0)
    assert c.keepalive_deadline() is None


@pytest.mark.parametrize(("level", "rule"), [(5, "[MQTT-3.1.2-22]"), (4, "[MQTT-3.1.2-24]")])
def test_keepalive_error_cites_its_version_rule(level: int, rule: str) -> None:
    err = connected(level=level, keep_alive=10).keepalive_error()
    assert isinstance(err, ProtocolError)
    assert err.code == RC.KEEP_ALIVE_TIMEOUT == 0x8D and rule in err.message


# ---- DISCONNECT from the client -----------------------------------------------------------------

def test_disconnect_v311_discards_the_will_mqtt_3_1_2_10() -> None:
    c = connected(level=4)
    [d] = c.next_packets(h("E0 00"), 1.0)
    assert isinstance(d, Disconnect)
    assert c.receive_disconnect(d) == (False, None)


@pytest.mark.parametrize(("wire", "publish_will"), [
    ("E0 00", False),  # no reason code: 0x00
    ("E0 01 00", False),  # [MQTT-3.14.4-3] normal disconnection: will discarded
    ("E0 01 04", True),  # Disconnect with Will Message
    ("E0 01 80", True),  # Unspecified error
])
def test_disconnect_v5_will_mqtt_3_14_4_3(wire: str, publish_will: bool) -> None:
    c = connected()
    [d] = c.next_packets(h(wire), 1.0)
    assert isinstance(d, Disconnect)
    assert c.receive_disconnect(d) == (publish_will, None)


def test_disconnect_sets_session_expiry_after_connect_gave_0_mqtt_3_14_2_2_2() -> None:
    """[MQTT 3.14.2.2.2] a non-zero Session Expiry Interval in DISCONNECT after CONNECT gave 0
    is a Protocol Error (the rule has no number of its own)."""
    c = connected()
    [d] = c.next_packets(h("E0 07 | 00 | 05 11 00 00 00 3C"), 1.0)
    assert isinstance(d, Disconnect)
    err = refused(c.receive_disconnect, d)
    assert err.code == RC.PROTOCOL_ERROR


def test_disconnect_session_expiry_0_after_connect_gave_0_is_fine() -> None:
    c = connected()
    [d] = c.next_packets(h("E0 07 | 00 | 05 11 00 00 00 00"), 1.0)
    assert isinstance(d, Disconnect)
    assert c.receive_disconnect(d) == (False, 0)


def test_disconnect_changes_a_nonzero_session_expiry() -> None:
    c = connected(props={P.SESSION_EXPIRY_INTERVAL: 60})
    [d] = c.next_packets(h("E0 07 | 04 | 05 11 00 00 00 78"), 1.0)
    assert isinstance(d, Disconnect)
    assert c.receive_disconnect(d) == (True, 120)
    [d] = c.next_packets(h("E0 00"), 2.0)
    assert isinstance(d, Disconnect)
    assert c.receive_disconnect(d) == (False, None)


# ---- AUTH [MQTT 4.12] ---------------------------------------------------------------------------

def auth_frame(code: int, method: str | None = SCRAM) -> bytes:
    """A client's AUTH with ``method`` (if any) and Authentication Data "c"."""
    props = b""
    if method is not None:
        props += b"\x15" + len(method).to_bytes(2, "big") + method.encode()
    props += h("16 00 01 63")
    body = bytes((code, len(props))) + props
    return bytes((0xF0, len(body))) + body


@pytest.mark.parametrize("method", ["PLAIN", None], ids=["other", "missing"])
def test_auth_with_other_or_no_method_is_protocol_error_mqtt_4_12_0_5(method: str | None) -> None:
    c = connected()
    [a] = c.next_packets(auth_frame(0x19, method), 1.0)
    assert isinstance(a, Auth)
    assert refused(c.receive_auth, a, SCRAM, False).code == RC.PROTOCOL_ERROR


def test_auth_on_connection_without_method_is_protocol_error_mqtt_4_12_0_7() -> None:
    c = connected()
    [a] = c.next_packets(auth_frame(0x19), 1.0)
    assert isinstance(a, Auth)
    assert refused(c.receive_auth, a, None, False).code == RC.PROTOCOL_ERROR


@pytest.mark.parametrize(("state", "code", "exchanging", "expected"), [
    (UP, 0x19, False, True),  # [MQTT 4.12.1] re-authentication starts
    (UP, 0x18, True, False),  # [MQTT-4.12.0-3] the client's answer within it
    (AUTHING, 0x18, True, False),  # the answer during CONNECT
    (UP, 0x18, False, None),  # continue, but nothing to continue
    (UP, 0x19, True, None),  # re-authenticate in the middle of an exchange
    (AUTHING, 0x19, True, None),  # re-authenticate before CONNACK
    (UP, 0x00, False, None),  # Success is the server's to send
], ids=["reauth", "continue-reauth", "continue-connect", "continue-without-exchange",
        "reauth-during-exchange", "reauth-before-connack", "success-from-client"])
def test_receive_auth_table_mqtt_4_12(state: ConnState, code: int, exchanging: bool,
                                      expected: bool | None) -> None:
    c = connected()
    [a] = c.next_packets(auth_frame(code), 1.0)
    assert isinstance(a, Auth)
    c.state = state
    if expected is None:
        assert refused(c.receive_auth, a, SCRAM, exchanging).code == RC.PROTOCOL_ERROR
    else:
        assert c.receive_auth(a, SCRAM, exchanging) is expected


def test_challenge_moves_to_authenticating_and_its_bytes_mqtt_4_12_0_2() -> None:
    c = ServerConnection(Limits(), 0.0)
    c.check_type(0x10, CONNECT_5[2:])
    auth = c.challenge(SCRAM, b"\x01\x02\x03")
    assert c.state is AUTHING
    # AUTH | RL 22 | 0x18 Continue | properties 20: Method "SCRAM-SHA-1", Data 01 02 03
    assert encode(auth, 5) == h("F0 16 | 18 | 14 | 15 00 0B 53 43 52 41 4D 2D 53 48 41 2D 31 "
                                "| 16 00 03 01 02 03")
    assert encode(c.challenge(SCRAM, None), 5) == h(
        "F0 10 | 18 | 0E | 15 00 0B 53 43 52 41 4D 2D 53 48 41 2D 31")
    assert c.state is AUTHING


def test_challenge_when_connected_is_reauthentication_mqtt_4_12_1() -> None:
    c = connected()
    assert c.challenge(SCRAM, b"s") == Auth(0x18, {P.AUTHENTICATION_METHOD: SCRAM,
                                                   P.AUTHENTICATION_DATA: b"s"})
    assert c.state is UP
    assert c.auth_success(SCRAM, None) == {P.AUTHENTICATION_METHOD: SCRAM}


def test_enhanced_authentication_byte_for_byte_mqtt_4_12() -> None:
    """CONNECT with a method; AUTH 0x18 out; the client's AUTH 0x18 is read while
    AUTHENTICATING; CONNACK 0x00 opens the connection."""
    c = ServerConnection(Limits(), 0.0)
    [p] = c.next_packets(encode(Connect("MQTT", 5, "c", properties={
        P.AUTHENTICATION_METHOD: SCRAM, P.AUTHENTICATION_DATA: b"n"}), 5), 0.0)
    assert isinstance(p, Connect)
    assert c.receive_connect(p) == SCRAM
    c.challenge(SCRAM, b"s")
    [a] = c.next_packets(auth_frame(0x18), 1.0)
    assert isinstance(a, Auth) and c.receive_auth(a, SCRAM, True) is False
    c.accepted()
    assert c.state is UP
    assert c.receive_data(PINGREQ, 2.0) == [(0xC0, b"")]
