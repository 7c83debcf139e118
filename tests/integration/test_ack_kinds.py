"""An acknowledgement of the wrong kind for a PUBLISH in flight closes the connection.

The broker delivers a QoS 1 or QoS 2 PUBLISH (packet id P) to a raw subscriber, which answers
with an acknowledgement the flow cannot take [MQTT 4.3.2, 4.3.3]: PUBCOMP or PUBREC for QoS 1,
PUBACK or PUBCOMP (before PUBREC) for QoS 2, PUBACK after the PUBREL. That is a protocol
violation: 3.1.1 closes the network connection [MQTT-4.8.0-1]; MQTT 5 sends DISCONNECT 0x82
(Protocol Error) first, then closes [MQTT-4.13.1-1]. It must not be taken for another kind (a
PUBREL in answer to a PUBREC for a QoS 1 message) nor leave the flow stuck in its slot.

What is harmless stays harmless: an acknowledgement for a packet id that is not in flight at
all (late, or repeated) is ignored, or answered as MQTT 5 says (PUBREC -> PUBREL 0x92, PUBREL
-> PUBCOMP 0x92, Packet Identifier not found); a PUBREC repeated after the PUBREL is answered
with the PUBREL again. Other clients never notice any of it.

The wrong acknowledgements are written as raw bytes.
"""

from __future__ import annotations

from typing import Any

import pytest

from mqttbroker.protocol.packets import Pingresp, Pubcomp, Publish, Pubrel

from .helpers import RawClient, tapped, unique_id
from .v5helpers import Env, RawV5

pytestmark = pytest.mark.timeout(30)

CLOSE_WITHIN = 2.0
PROTOCOL_ERROR = 0x82
PACKET_ID_NOT_FOUND = 0x92

#: parametrize over MQTT 3.1.1 (level 4) and 5.0 (level 5)
levels = pytest.mark.parametrize("level", [4, 5], ids=["3.1.1", "5.0"])



def ack_bytes(first: int, pid: int) -> bytes:
    """A 4-byte acknowledgement: first byte, length 2, packet id."""
    return bytes((first, 2)) + pid.to_bytes(2, "big")


PUBACK, PUBREC, PUBREL, PUBCOMP = 0x40, 0x50, 0x62, 0x70


def connect(env: Env, level: int, prefix: str) -> RawClient:
    """A raw client at ``level`` (4 or 5), connected with clean session / clean start."""
    cid = unique_id(prefix)
    r: RawClient
    if level == 5:
        r, ack = env.raw_connect(cid)
    else:
        r = env.raw3()
        ack = r.connect(cid)
    assert ack.return_code == 0
    return r


def subscribe(r: RawClient, topic: str, qos: int) -> None:
    if isinstance(r, RawV5):
        assert r.subscribe5((topic, qos)).return_codes == [qos]
    else:
        assert r.subscribe((topic, qos)) == [qos]


def delivered(env: Env, level: int, qos: int) -> tuple[RawClient, Publish, str]:
    """A raw subscriber at ``level`` (QoS ``qos``), and the PUBLISH it received from another
    client's message at that QoS (not acknowledged yet)."""
    topic = f"ak/{unique_id('t')}"
    s = connect(env, level, "aks")
    subscribe(s, topic, qos)
    pub, _ = env.raw_connect(unique_id("akp"))
    pub.publish5(topic, b"m1", qos)
    p = s.expect(Publish)
    assert p.qos == qos and p.packet_id is not None
    return s, p, topic


def pid_of(p: Publish) -> int:
    assert p.packet_id is not None
    return p.packet_id


def assert_closed_for_protocol_error(r: RawClient, level: int) -> None:
    """3.1.1: the connection closes with nothing sent [MQTT-4.8.0-1]; 5.0: DISCONNECT 0x82
    then the close [MQTT-4.13.1-1]."""
    if level == 5:
        assert isinstance(r, RawV5)
        d = r.expect_disconnect(CLOSE_WITHIN)
        assert d.reason_code == PROTOCOL_ERROR, d
    else:
        got = r.wait_closed(CLOSE_WITHIN)
        assert got == [], f"the broker answered {got!r} instead of closing"


def assert_open(r: RawClient) -> list[Any]:
    """PINGREQ is answered; returns the packets that came before the PINGRESP."""
    r.send_bytes(b"\xc0\x00")
    before: list[Any] = []
    while True:
        p = r.recv()
        if isinstance(p, Pingresp):
            return before
        before.append(p)


# -- wrong kinds -------------------------------------------------------------------------------

@levels
def test_qos1_answered_with_pubcomp_closes_mqtt_4_8_0_1(env: Env, level: int) -> None:
    """QoS 1 delivery answered with PUBCOMP (70 02 P): a protocol violation."""
    s, p, _ = delivered(env, level, 1)
    s.send_bytes(ack_bytes(PUBCOMP, pid_of(p)))
    assert_closed_for_protocol_error(s, level)


@levels
def test_qos1_answered_with_pubrec_closes_mqtt_4_8_0_1(env: Env, level: int) -> None:
    """QoS 1 delivery answered with PUBREC (50 02 P): closed, and no PUBREL is sent for a
    QoS 1 message [MQTT 4.3.2]."""
    s, p, _ = delivered(env, level, 1)
    tap = tapped(s)
    s.send_bytes(ack_bytes(PUBREC, pid_of(p)))
    assert_closed_for_protocol_error(s, level)
    assert ack_bytes(PUBREL, pid_of(p)) not in bytes(tap.data), (
        f"the broker answered PUBREC for a QoS 1 message with PUBREL: {bytes(tap.data).hex()}")


@levels
def test_qos2_answered_with_puback_closes_mqtt_4_8_0_1(env: Env, level: int) -> None:
    """QoS 2 delivery answered with PUBACK (40 02 P): a protocol violation."""
    s, p, _ = delivered(env, level, 2)
    s.send_bytes(ack_bytes(PUBACK, pid_of(p)))
    assert_closed_for_protocol_error(s, level)


@levels
def test_qos2_answered_with_pubcomp_before_pubrec_closes_mqtt_4_8_0_1(env: Env,
                                                                      level: int) -> None:
    """QoS 2 delivery answered with PUBCOMP instead of PUBREC: a protocol violation."""
    s, p, _ = delivered(env, level, 2)
    s.send_bytes(ack_bytes(PUBCOMP, pid_of(p)))
    assert_closed_for_protocol_error(s, level)


@levels
def test_qos2_pubrel_answered_with_puback_closes_mqtt_4_8_0_1(env: Env, level: int) -> None:
    """QoS 2: PUBREC, the broker sends PUBREL, then PUBACK instead of PUBCOMP: a protocol
    violation."""
    s, p, _ = delivered(env, level, 2)
    pid = p.packet_id
    assert pid is not None
    s.send_bytes(ack_bytes(PUBREC, pid))
    assert s.expect(Pubrel).packet_id == pid
    s.send_bytes(ack_bytes(PUBACK, pid))
    assert_closed_for_protocol_error(s, level)


@levels
def test_other_clients_unaffected_by_wrong_ack_close(env: Env, level: int) -> None:
    """A second subscriber to the same topic gets the message, and the next one published
    after the wrong-ack client was closed."""
    topic = f"ak/{unique_id('t')}"
    bad = connect(env, level, "akb")
    subscribe(bad, topic, 1)
    good = connect(env, level, "akg")
    subscribe(good, topic, 1)
    pub, _ = env.raw_connect(unique_id("akp"))
    pub.publish5(topic, b"m1", 1)
    p = bad.expect(Publish)
    bad.send_bytes(ack_bytes(PUBCOMP, pid_of(p)))
    assert_closed_for_protocol_error(bad, level)
    g1 = good.expect(Publish)
    good.ack(g1)
    pub.publish5(topic, b"m2", 1)
    g2 = good.expect(Publish)
    good.ack(g2)
    assert [g1.payload, g2.payload] == [b"m1", b"m2"]
    assert assert_open(good) == []


@pytest.mark.parametrize("qos,wrong", [(1, PUBCOMP), (1, PUBREC), (2, PUBACK)],
                         ids=["qos1-pubcomp", "qos1-pubrec", "qos2-puback"])
def test_311_flow_not_stuck_after_wrong_ack_close(env: Env, qos: int, wrong: int) -> None:
    """3.1.1, clean session 0: after the wrong acknowledgement closed the connection, the
    message is still in flight in the session; the client reconnects (session present), gets
    it again with DUP=1 [MQTT-4.4.0-1], acknowledges it properly, and the next message
    follows."""
    cid = unique_id("aks")
    topic = f"ak/{unique_id('t')}"
    s = env.raw3()
    assert s.connect(cid, clean=False).return_code == 0
    subscribe(s, topic, qos)
    pub, _ = env.raw_connect(unique_id("akp"))
    pub.publish5(topic, b"m1", qos)
    p = s.expect(Publish)
    assert p.packet_id is not None
    s.send_bytes(ack_bytes(wrong, p.packet_id))
    assert_closed_for_protocol_error(s, 4)
    s2 = env.raw3()
    ack = s2.connect(cid, clean=False)
    assert (ack.return_code, ack.session_present) == (0, True)
    again = s2.expect(Publish)
    assert (again.payload, again.packet_id, again.dup) == (b"m1", p.packet_id, True)
    s2.ack(again)
    pub.publish5(topic, b"m2", qos)
    nxt = s2.expect(Publish)
    assert nxt.payload == b"m2"
    s2.ack(nxt)
    assert assert_open(s2) == []


# -- harmless ----------------------------------------------------------------------------------

@pytest.mark.parametrize("first", [PUBACK, PUBCOMP, PUBREC], ids=["puback", "pubcomp", "pubrec"])
def test_311_ack_for_unknown_packet_id_is_harmless(env: Env, first: int) -> None:
    """3.1.1: an acknowledgement for a packet id that is not in flight is ignored (a PUBREC
    is answered with the PUBREL 62 02 12 34 that frees the client's state); the connection
    stays."""
    s = connect(env, 4, "aku")
    tap = tapped(s)
    s.send_bytes(ack_bytes(first, 0x1234))
    before = assert_open(s)
    expected = ack_bytes(PUBREL, 0x1234) if first == PUBREC else b""
    assert bytes(tap.data) == expected + b"\xd0\x00", bytes(tap.data).hex(" ")
    assert before == ([Pubrel(0x1234)] if first == PUBREC else []), before


@pytest.mark.parametrize("first", [PUBACK, PUBCOMP], ids=["puback", "pubcomp"])
def test_v5_puback_pubcomp_for_unknown_packet_id_ignored(env: Env, first: int) -> None:
    """MQTT 5: PUBACK or PUBCOMP for a packet id not in flight: nothing sent, connection
    stays."""
    s = connect(env, 5, "aku5")
    s.send_bytes(ack_bytes(first, 0x1234))
    assert assert_open(s) == []


def test_v5_pubrec_for_unknown_packet_id_gets_pubrel_0x92(env: Env) -> None:
    """MQTT 5: PUBREC for a packet id not in flight: PUBREL 0x92 (Packet Identifier not
    found) [MQTT 3.6.2.1]; the connection stays."""
    s = connect(env, 5, "akr5")
    s.send_bytes(ack_bytes(PUBREC, 0x1234))
    rel = s.expect(Pubrel)
    assert (rel.packet_id, rel.reason_code) == (0x1234, PACKET_ID_NOT_FOUND)
    assert isinstance(s, RawV5) and s.frames[-1] == bytes.fromhex("62 03 12 34 92")
    assert assert_open(s) == []


def test_v5_pubrel_for_unknown_packet_id_gets_pubcomp_0x92(env: Env) -> None:
    """MQTT 5: PUBREL for a packet id with no QoS 2 state: PUBCOMP 0x92 [MQTT 3.7.2.1]."""
    s = connect(env, 5, "akc5")
    s.send_bytes(ack_bytes(PUBREL, 0x1234))
    comp = s.expect(Pubcomp)
    assert (comp.packet_id, comp.reason_code) == (0x1234, PACKET_ID_NOT_FOUND)
    assert isinstance(s, RawV5) and s.frames[-1] == bytes.fromhex("70 03 12 34 92")
    assert assert_open(s) == []


@levels
def test_wrong_kind_for_other_id_than_in_flight_is_harmless(env: Env, level: int) -> None:
    """Only the id in flight is checked: a PUBCOMP for another id while a QoS 1 message is in
    flight is not a wrong kind for it; the message then completes with its PUBACK."""
    s, p, _ = delivered(env, level, 1)
    pid = p.packet_id
    assert pid is not None
    other = pid % 65535 + 1
    s.send_bytes(ack_bytes(PUBCOMP, other))
    s.send_bytes(ack_bytes(PUBACK, pid))
    assert assert_open(s) == []


@levels
def test_repeated_pubrec_after_pubrel_gets_pubrel_again(env: Env, level: int) -> None:
    """A PUBREC repeated after the PUBREL is answered with the PUBREL again; PUBCOMP then
    completes the flow and the connection stays [MQTT 4.3.3]."""
    s, p, topic = delivered(env, level, 2)
    pid = p.packet_id
    assert pid is not None
    s.send_bytes(ack_bytes(PUBREC, pid))
    assert s.expect(Pubrel).packet_id == pid
    s.send_bytes(ack_bytes(PUBREC, pid))
    rel = s.expect(Pubrel)
    assert rel.packet_id == pid and rel.reason_code == 0
    s.send_bytes(ack_bytes(PUBCOMP, pid))
    assert assert_open(s) == []
    # the slot is free: the next message arrives
    pub, _ = env.raw_connect(unique_id("akp2"))
    pub.publish5(topic, b"m2", 2)
    p2 = s.expect(Publish)
    assert p2.payload == b"m2"
    s.ack(p2)
    assert assert_open(s) == []


def test_v5_pubrec_failure_code_ends_flow_without_close(env: Env) -> None:
    """MQTT 5: a PUBREC with a failure reason code (0x80) is the right kind: the flow ends
    there (no PUBREL) [MQTT-4.3.3], and the connection stays."""
    s, p, _ = delivered(env, 5, 2)
    pid = p.packet_id
    assert pid is not None
    s.send_bytes(bytes((PUBREC, 3)) + pid.to_bytes(2, "big") + b"\x80")
    assert assert_open(s) == []
