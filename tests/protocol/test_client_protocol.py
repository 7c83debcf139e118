"""ClientProtocol (the client side a bridge speaks) byte for byte: no socket, no event loop.

Server packets are written by hand; what the client sends is compared with hand-written
golden bytes from the MQTT 3.1.1 / 5.0 packet layouts.
"""

from __future__ import annotations

import pytest

from mqttbroker.errors import EncodeError
from mqttbroker.protocol.client_protocol import (
    ClientProtocol,
    ClientState,
    Closed,
    Connected,
    Delivered,
    Message,
    Refused,
    Released,
    Subscribed,
    Unsubscribed,
    WindowFull,
)
from mqttbroker.protocol.packets import Will
from mqttbroker.protocol.properties import PropertyId as P


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace("|", " "))


CONNACK_OK = h("20 02 00 00")
CONNACK_PRESENT = h("20 02 01 00")


def connected(level: int = 4, connack: bytes = CONNACK_OK, **kw: object) -> ClientProtocol:
    c = ClientProtocol("e7", level=level, **kw)  # type: ignore[arg-type]
    c.connect(0.0)
    [ev] = c.receive_data(connack, 0.0)
    assert isinstance(ev, Connected)
    return c


# -- CONNECT ------------------------------------------------------------------------------------

def test_connect_311_bytes_mqtt_3_1() -> None:
    c = ClientProtocol("e7", keep_alive=60, clean_start=False)
    # CONNECT | RL 14 | "MQTT" | level 4 | flags: clean 0 | keep-alive 60 | "e7"
    assert c.connect(0.0) == h("10 0E | 00 04 4D 51 54 54 | 04 | 00 | 00 3C | 00 02 65 37")
    assert c.state is ClientState.CONNECTING


def test_connect_try_private_sets_the_level_top_bit_for_3x_only() -> None:
    """Mosquitto's try_private: a bridge's CONNECT says protocol level 0x84 (0x83 for 3.1)."""
    assert ClientProtocol("e7", private=True).connect(0.0)[8] == 0x84
    assert ClientProtocol("e7", level=3, private=True).connect(0.0)[2:10] == \
        h("00 06 4D 51 49 73 64 70")  # "MQIsdp"
    assert ClientProtocol("e7", level=3, private=True).connect(0.0)[10] == 0x83
    assert ClientProtocol("e7", level=5, private=True).connect(0.0)[8] == 0x05


def test_connect_v5_with_credentials_will_and_session_expiry() -> None:
    c = ClientProtocol("e7", level=5, keep_alive=30, username="u", password=b"pw",
                       will=Will("w", b"x", 1), session_expiry=3600, receive_maximum=10)
    data = c.connect(0.0)
    # flags: user 0x80 | password 0x40 | will QoS 1 0x08 | will 0x04 | clean 0x02 = 0xCE
    assert data[9] == 0xCE
    # properties: Session Expiry 3600, Receive Maximum 10
    assert h("08 | 11 00 00 0E 10 | 21 00 0A") in data


# -- CONNACK ------------------------------------------------------------------------------------

def test_connack_accepts_and_takes_the_remote_window_mqtt_3_3_4_7() -> None:
    c = ClientProtocol("e7", level=5)
    c.connect(0.0)
    [ev] = c.receive_data(h("20 06 | 00 00 | 03 | 21 00 02"), 1.0)
    assert ev == Connected(False, {P.RECEIVE_MAXIMUM: 2})
    assert c.state is ClientState.CONNECTED and c.window == 2


def test_connack_refused_closes() -> None:
    c = ClientProtocol("e7")
    c.connect(0.0)
    assert c.receive_data(h("20 02 00 05"), 1.0) == [Refused(5, {})]
    assert c.closed


def test_packet_before_connack_is_a_protocol_error_mqtt_3_2_0_1() -> None:
    c = ClientProtocol("e7")
    c.connect(0.0)
    [ev] = c.receive_data(h("D0 00"), 1.0)
    assert isinstance(ev, Closed) and ev.code == 0x82 and c.closed


def test_second_connack_is_a_protocol_error() -> None:
    c = connected()
    [ev] = c.receive_data(CONNACK_OK, 1.0)
    assert isinstance(ev, Closed) and "second CONNACK" in ev.why


def test_server_keep_alive_replaces_ours_mqtt_3_1_2_21() -> None:
    c = ClientProtocol("e7", level=5, keep_alive=60)
    c.connect(0.0)
    c.receive_data(h("20 06 | 00 00 | 03 | 13 00 0A"), 0.0)
    assert c.options.keep_alive == 10 and c.next_deadline() == 10.0


# -- PUBLISH out --------------------------------------------------------------------------------

def test_publish_qos0_bytes() -> None:
    c = connected()
    assert c.publish("a/b", b"hi", 0, False, 1.0) is None
    assert c.data_to_send() == h("30 07 | 00 03 61 2F 62 | 68 69")


def test_publish_qos1_until_puback_mqtt_4_3_2() -> None:
    c = connected()
    pid = c.publish("t", b"x", 1, True, 1.0)
    assert pid == 1
    assert c.data_to_send() == h("33 06 | 00 01 74 | 00 01 | 78")  # QoS 1 + RETAIN
    assert 1 in c.outflows
    assert c.receive_data(h("40 02 00 01"), 2.0) == [Delivered(1, 0)]
    assert not c.outflows


def test_publish_qos2_pubrec_pubrel_pubcomp_mqtt_4_3_3() -> None:
    c = connected()
    pid = c.publish("t", b"x", 2, False, 1.0)
    c.data_to_send()
    # PUBREC: the caller hears of it (to record it before the PUBREL leaves)
    assert c.receive_data(h("50 02 00 01"), 2.0) == [Released(1)]
    assert c.data_to_send() == h("62 02 00 01")  # PUBREL
    assert c.outflows[1].released
    assert c.receive_data(h("50 02 00 01"), 2.5) == []  # a repeated PUBREC: PUBREL again
    assert c.data_to_send() == h("62 02 00 01")
    assert c.receive_data(h("70 02 00 01"), 3.0) == [Delivered(pid or 0, 0)]


def test_v5_pubcomp_identifier_not_found_still_delivers_mqtt_4_3_3() -> None:
    """A resent PUBREL whose PUBCOMP was lost: the remote answers 0x92; the message was its
    own since PUBREC, so it is delivered, not refused."""
    c = connected(5, h("20 03 00 00 00"))
    c.publish("t", b"x", 2, False, 1.0)
    c.receive_data(h("50 03 00 01 00"), 2.0)
    assert c.receive_data(h("70 03 00 01 92"), 3.0) == [Delivered(1, 0)]


def test_restored_flows_resend_publish_dup_or_pubrel_with_their_ids_mqtt_4_4_0_1() -> None:
    """In flight before a restart (kept by the caller): PUBLISH again with DUP and the same
    id, or PUBREL if the remote had answered PUBREC; new messages take other ids."""
    c = ClientProtocol("e7")
    c.restore(7, "a", b"1", 2, False)
    c.restore(9, "b", b"2", 2, False, released=True)
    with pytest.raises(EncodeError):
        c.restore(7, "a", b"1", 2, False)  # (already there)
    c.connect(1.0)
    c.receive_data(CONNACK_PRESENT, 1.0)
    assert c.data_to_send() == h("3C 06 | 00 01 61 | 00 07 | 31") + h("62 02 00 09")
    assert c.receive_data(h("70 02 00 09"), 2.0) == [Delivered(9, 0)]
    assert c.receive_data(h("50 02 00 07"), 2.0) == [Released(7)]
    assert c.publish("c", b"3", 1, False, 2.0) == 1


def test_v5_pubrec_refusal_ends_the_flow_mqtt_4_3_3() -> None:
    c = connected(5, h("20 03 00 00 00"))
    c.publish("t", b"x", 2, False, 1.0)
    c.data_to_send()
    assert c.receive_data(h("50 03 00 01 87"), 2.0) == [Delivered(1, 0x87)]
    assert c.data_to_send() == b""  # no PUBREL for a refused one


def test_wrong_acknowledgement_kind_is_a_protocol_error() -> None:
    c = connected()
    c.publish("t", b"x", 1, False, 1.0)
    [ev] = c.receive_data(h("70 02 00 01"), 2.0)  # PUBCOMP for a QoS 1 message
    assert isinstance(ev, Closed) and "awaits PUBACK" in ev.why


def test_window_is_the_remote_receive_maximum_mqtt_3_3_4_7() -> None:
    c = connected(5, h("20 06 | 00 00 | 03 | 21 00 02"))
    c.publish("t", b"1", 1, False, 1.0)
    c.publish("t", b"2", 1, False, 1.0)
    assert not c.can_publish()
    with pytest.raises(WindowFull):
        c.publish("t", b"3", 1, False, 1.0)
    c.publish("t", b"qos0 needs no slot", 0, False, 1.0)
    c.receive_data(h("40 02 00 01"), 2.0)
    assert c.can_publish()


def test_reconnect_with_session_resends_with_dup_in_order_mqtt_4_4_0_1() -> None:
    c = connected(connack=CONNACK_OK)
    c.publish("a", b"1", 1, False, 1.0)
    c.publish("b", b"2", 2, False, 1.0)
    assert c.receive_data(h("50 02 00 02"), 1.0) == [Released(2)]  # the QoS 2 one
    c.data_to_send()
    c.lost()
    c.connect(5.0)
    c.receive_data(CONNACK_PRESENT, 5.0)
    # PUBLISH a (DUP, QoS 1, id 1) then PUBREL 2
    assert c.data_to_send() == h("3A 06 | 00 01 61 | 00 01 | 31") + h("62 02 00 02")


def test_reconnect_without_session_sends_again_as_new_mqtt_3_2_2_5() -> None:
    """The remote lost our session: a message it had PUBREC'd counts as delivered, the others
    go again as new messages (DUP 0): nothing handed to the bridge is dropped."""
    c = connected()
    c.publish("a", b"1", 1, False, 1.0)
    c.publish("b", b"2", 2, False, 1.0)
    c.receive_data(h("50 02 00 02"), 1.0)
    c.data_to_send()
    c.lost()
    c.connect(5.0)
    events = c.receive_data(CONNACK_OK, 5.0)
    assert events == [Connected(False, {}), Delivered(2, 0)]
    assert c.data_to_send() == h("32 06 | 00 01 61 | 00 01 | 31")
    assert list(c.outflows) == [1]


def test_publish_while_disconnected_waits_for_the_connection() -> None:
    c = ClientProtocol("e7")
    pid = c.publish("t", b"x", 1, False, 0.0)
    assert c.data_to_send() == b"" and pid in c.outflows
    c.connect(1.0)
    c.receive_data(CONNACK_OK, 1.0)
    assert c.data_to_send() == h("32 06 | 00 01 74 | 00 01 | 78")


# -- PUBLISH in ---------------------------------------------------------------------------------

def test_inbound_qos1_is_acknowledged_only_when_the_caller_says_so() -> None:
    c = connected()
    [m] = c.receive_data(h("32 06 | 00 01 74 | 00 09 | 78"), 1.0)
    assert m == Message("t", b"x", 1, False, {}, 9)
    assert c.data_to_send() == b""  # nothing yet: the bridge has not taken it
    c.acknowledge(9, 1, 2.0)
    assert c.data_to_send() == h("40 02 00 09")


def test_inbound_qos2_exactly_once_mqtt_4_3_3_2() -> None:
    c = connected()
    frame = h("34 06 | 00 01 74 | 00 09 | 78")
    [m] = c.receive_data(frame, 1.0)
    assert isinstance(m, Message) and m.packet_id == 9 and m.qos == 2
    c.acknowledge(9, 2, 1.0)
    assert c.data_to_send() == h("50 02 00 09")
    # a resend before PUBREL: PUBREC again, no second message
    assert c.receive_data(bytes((frame[0] | 0x08,)) + frame[1:], 2.0) == []
    assert c.data_to_send() == h("50 02 00 09")
    assert c.receive_data(h("62 02 00 09"), 3.0) == []
    assert c.data_to_send() == h("70 02 00 09")  # PUBCOMP
    # after PUBREL the id is free: a new message with it is new
    assert len(c.receive_data(frame, 4.0)) == 1


# -- SUBSCRIBE ----------------------------------------------------------------------------------

def test_subscribe_311_and_suback() -> None:
    c = connected()
    pid = c.subscribe([("cmd/#", 1)], 1.0)
    assert c.data_to_send() == h("82 0A | 00 01 | 00 05 63 6D 64 2F 23 | 01")
    assert c.receive_data(h("90 03 00 01 01"), 2.0) == [Subscribed(pid, (1,))]


def test_unsubscribe_and_unsuback_mqtt_3_10() -> None:
    c = connected()
    assert c.unsubscribe(["a/b"], 1.0) == 1
    assert c.data_to_send() == h("A2 07 | 00 01 | 00 03 61 2F 62")
    assert c.receive_data(h("B0 02 00 01"), 2.0) == [Unsubscribed(1)]
    assert c.receive_data(h("B0 02 00 01"), 2.0) == []  # (a late duplicate)


def test_subscribe_v5_bridge_options_no_local_retain_as_published() -> None:
    """A v5 bridge subscribes with No Local (its own messages do not come back: no loop) and
    Retain As Published (retained flags pass unchanged) [MQTT 3.8.3.1]."""
    c = connected(5, h("20 03 00 00 00"))
    c.subscribe([("s/#", 2)], 1.0, no_local=True, retain_as_published=True)
    assert c.data_to_send() == h("82 09 | 00 01 | 00 | 00 03 73 2F 23 | 0E")


# -- keep-alive ---------------------------------------------------------------------------------

def test_pingreq_when_nothing_was_sent_for_keep_alive_mqtt_3_1_2_22() -> None:
    c = connected(keep_alive=10)
    assert c.next_deadline() == 10.0
    assert c.handle_timer(9.9) == [] and c.data_to_send() == b""
    assert c.handle_timer(10.0) == []
    assert c.data_to_send() == h("C0 00")
    c.receive_data(h("D0 00"), 10.5)
    assert c.next_deadline() == 20.0


def test_sending_postpones_the_ping() -> None:
    c = connected(keep_alive=10)
    c.publish("t", b"", 0, False, 8.0)
    assert c.next_deadline() == 18.0


def test_silent_remote_is_given_up_after_1_5_keep_alive() -> None:
    c = connected(keep_alive=10)
    c.handle_timer(10.0)
    assert c.next_deadline() == 25.0
    [ev] = c.handle_timer(25.0)
    assert isinstance(ev, Closed) and ev.code == 0x8D and c.closed


# -- DISCONNECT ---------------------------------------------------------------------------------

def test_remote_disconnect_v5_reason() -> None:
    c = connected(5, h("20 03 00 00 00"))
    assert c.receive_data(h("E0 02 8B 00"), 1.0) == [Closed(0x8B, "DISCONNECT from the remote")]
    assert c.closed


def test_our_disconnect_is_clean() -> None:
    c = connected()
    assert c.disconnect(1.0) == h("E0 00") and c.closed


# -- the server side of try_private (codec) -------------------------------------------------------

def test_server_decodes_a_bridge_connect_mqtt_3_1_2_2() -> None:
    """Mosquitto's try_private: CONNECT level 0x84 (0x83) is 3.1.1 (3.1) from a bridge; a v5
    level with the bit (0x85) is not a level at all."""
    from mqttbroker.errors import ProtocolError
    from mqttbroker.protocol.codec import decode, encode, peek_protocol_level
    from mqttbroker.protocol.packets import Connect

    data = ClientProtocol("e7", private=True).connect(0.0)
    assert peek_protocol_level(data[2:]) == 4
    p = decode(data[0], data[2:], 4)
    assert isinstance(p, Connect) and p.protocol_level == 4 and p.bridge
    assert encode(p, 4) == data  # the bit goes back out
    plain = decode(0x10, ClientProtocol("e7").connect(0.0)[2:], 4)
    assert isinstance(plain, Connect) and not plain.bridge
    v5 = bytearray(ClientProtocol("e7", level=5).connect(0.0))
    v5[8] |= 0x80
    with pytest.raises(ProtocolError) as err:
        decode(v5[0], bytes(v5[2:]), 5)
    assert err.value.code == 0x84  # unsupported protocol version
