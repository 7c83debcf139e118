"""MQTT 3.1 (protocol name "MQIsdp", level 3) sets DUP on a re-sent PUBREL, SUBSCRIBE and
UNSUBSCRIBE.

In 3.1 those three packets carry QoS 1 in their fixed header, and a client sending one again
sets DUP (0x08) [MQTT 3.1, sections 2.1 "DUP", 3.6 PUBREL, 3.8 SUBSCRIBE, 3.10 UNSUBSCRIBE]:
0x6A, 0x8A, 0xAA. The broker must take them from a level-3 client. 3.1.1 fixed those flags
[MQTT-2.2.2-1] and made anything else a malformed packet that closes the connection
[MQTT-2.2.2-2]: the same bytes from a level-4 client still close it.

Every packet below is written byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mqttbroker.protocol.packets import Pubcomp, Publish, Pubrec, Suback, Unsuback
from tests.conftest import BrokerThread

from .helpers import Clients, tapped, unique_id
from .v5helpers import Env, P

pytestmark = pytest.mark.timeout(30)

CLOSE_WITHIN = 2.0


@pytest.fixture
def clients(broker_thread: BrokerThread) -> Iterator[Clients]:
    with Clients(broker_thread.port) as c:
        yield c



PUBREL_DUP_1 = bytes.fromhex("6a 02 00 01")
PUBCOMP_1 = bytes.fromhex("70 02 00 01")
# SUBSCRIBE (QoS 1 + DUP), packet id 2, "dup/a" at QoS 1
SUBSCRIBE_DUP = bytes.fromhex("8a 0a 00 02 00 05 64 75 70 2f 61 01")
SUBACK_2_QOS1 = bytes.fromhex("90 03 00 02 01")
# UNSUBSCRIBE (QoS 1 + DUP), packet id 3, "dup/a"
UNSUBSCRIBE_DUP = bytes.fromhex("aa 09 00 03 00 05 64 75 70 2f 61")
UNSUBACK_3 = bytes.fromhex("b0 02 00 03")


def test_31_resent_pubrel_with_dup_after_reconnect_gets_pubcomp(clients: Clients) -> None:
    """A 3.1 client publishes QoS 2 (id 1), gets PUBREC, loses the connection; it comes back
    with clean session 0 and re-sends the PUBREL with DUP (6a 02 00 01): PUBCOMP 70 02 00 01,
    and the connection stays."""
    cid = unique_id("d31")
    r, _ = clients.raw_connect(cid, level=3, clean=False)
    r.send(Publish("dup31/q2", b"x", 2, False, False, 1))
    assert r.expect(Pubrec).packet_id == 1
    r.abort()
    r2 = clients.raw(3)
    tap = tapped(r2)
    assert r2.connect(cid, clean=False).return_code == 0
    seen = len(tap.data)
    r2.send_bytes(PUBREL_DUP_1)
    assert r2.expect(Pubcomp).packet_id == 1
    assert bytes(tap.data[seen:]) == PUBCOMP_1
    r2.ping()


def test_31_pubrel_with_dup_same_connection(clients: Clients) -> None:
    """A 3.1 PUBREL with DUP on the connection that sent the PUBLISH is a PUBREL all the same:
    PUBCOMP, and the message went to the subscriber once."""
    sub, _ = clients.raw_connect(unique_id("d31s"), level=3)
    assert sub.subscribe(("dup31/same", 2)) == [2]
    r, _ = clients.raw_connect(unique_id("d31p"), level=3)
    tap = tapped(r)
    r.send(Publish("dup31/same", b"once", 2, False, False, 1))
    assert r.expect(Pubrec).packet_id == 1
    seen = len(tap.data)
    r.send_bytes(PUBREL_DUP_1)
    assert r.expect(Pubcomp).packet_id == 1
    assert bytes(tap.data[seen:]) == PUBCOMP_1
    p = sub.expect(Publish)
    assert p.payload == b"once"
    sub.ack(p)
    # the next message is the next thing the subscriber gets: no second copy of the first
    r.publish("dup31/same", b"after", 2)
    nxt = sub.expect(Publish)
    assert nxt.payload == b"after"
    sub.ack(nxt)
    r.ping()


def test_31_subscribe_with_dup_gets_suback(clients: Clients) -> None:
    """3.1 SUBSCRIBE with DUP (8a ...) gets its SUBACK (90 03 00 02 01) and subscribes."""
    r, _ = clients.raw_connect(unique_id("d31u"), level=3)
    tap = tapped(r)
    r.send_bytes(SUBSCRIBE_DUP)
    ack = r.expect(Suback)
    assert (ack.packet_id, ack.return_codes) == (2, [1])
    assert bytes(tap.data) == SUBACK_2_QOS1
    pub, _ = clients.raw_connect(unique_id("d31q"), level=3)
    pub.publish("dup/a", b"hi", 1)
    p = r.expect(Publish)
    assert (p.topic, p.payload) == ("dup/a", b"hi")
    r.ack(p)
    r.ping()


def test_31_unsubscribe_with_dup_gets_unsuback(clients: Clients) -> None:
    """3.1 UNSUBSCRIBE with DUP (aa ...) gets its UNSUBACK (b0 02 00 03) and unsubscribes."""
    r, _ = clients.raw_connect(unique_id("d31n"), level=3)
    assert r.subscribe(("dup/a", 1), ("dup/b", 1)) == [1, 1]
    tap = tapped(r)
    r.send_bytes(UNSUBSCRIBE_DUP)
    assert r.expect(Unsuback).packet_id == 3
    assert bytes(tap.data) == UNSUBACK_3
    pub, _ = clients.raw_connect(unique_id("d31o"), level=3)
    pub.publish("dup/a", b"gone", 1)
    pub.publish("dup/b", b"marker", 1)
    p = r.expect(Publish)  # the marker, published after, comes first: dup/a is gone
    assert (p.topic, p.payload) == ("dup/b", b"marker")
    r.ack(p)
    r.ping()


@pytest.mark.parametrize("data", [PUBREL_DUP_1, SUBSCRIBE_DUP, UNSUBSCRIBE_DUP],
                         ids=["pubrel_6a", "subscribe_8a", "unsubscribe_aa"])
def test_311_dup_on_pubrel_subscribe_unsubscribe_closes_mqtt_2_2_2_2(clients: Clients,
                                                                     data: bytes) -> None:
    """[MQTT-2.2.2-1] [MQTT-2.2.2-2] the same bytes from a 3.1.1 client (level 4) are
    malformed: the connection closes, nothing is sent back."""
    r, _ = clients.raw_connect(unique_id("d311"), level=4, clean=False)
    if data == PUBREL_DUP_1:
        r.send(Publish("dup311/q2", b"x", 2, False, False, 1))
        assert r.expect(Pubrec).packet_id == 1
    tap = tapped(r)
    r.send_bytes(data)
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data) == b"", f"sent {bytes(tap.data).hex()} before closing"


def test_31_subscribe_then_resent_with_dup_gets_suback_twice(clients: Clients) -> None:
    """A 3.1 client sends SUBSCRIBE (82, id 2) and, not having seen the SUBACK yet, the same
    packet again with DUP (8a): each gets SUBACK 90 03 00 02 01; the subscription is one (a
    message arrives once)."""
    r, _ = clients.raw_connect(unique_id("d31r"), level=3)
    tap = tapped(r)
    r.send_bytes(bytes((0x82,)) + SUBSCRIBE_DUP[1:] + SUBSCRIBE_DUP)
    for _ in range(2):
        ack = r.expect(Suback)
        assert (ack.packet_id, ack.return_codes) == (2, [1])
    assert bytes(tap.data) == SUBACK_2_QOS1 * 2
    pub, _ = clients.raw_connect(unique_id("d31t"), level=3)
    pub.publish("dup/a", b"one", 1)
    p = r.expect(Publish)
    assert p.payload == b"one"
    r.ack(p)
    pub.publish("dup/a", b"two", 1)
    nxt = r.expect(Publish)  # not a second copy of "one"
    assert nxt.payload == b"two"
    r.ack(nxt)
    r.ping()


# 3.1 still fixes the other bits: QoS 1 (+ DUP) is the only form of these three packets
BAD_31_FLAGS = {
    "pubrel_6b_retain": "6b 02 00 01",
    "pubrel_6c_qos2_dup": "6c 02 00 01",
    "pubrel_68_dup_qos0": "68 02 00 01",
    "subscribe_8e_qos3_dup": "8e 0a 00 02 00 05 64 75 70 2f 61 01",
    "unsubscribe_ab_retain": "ab 09 00 03 00 05 64 75 70 2f 61",
}


@pytest.mark.parametrize("data", list(BAD_31_FLAGS.values()), ids=list(BAD_31_FLAGS))
def test_31_other_flags_still_close(clients: Clients, data: str) -> None:
    """DUP is the only extra bit 3.1 allows on PUBREL/SUBSCRIBE/UNSUBSCRIBE: RETAIN, QoS 0 or
    QoS 2/3 in their first byte still make the packet malformed; the connection closes with
    nothing sent back."""
    r, _ = clients.raw_connect(unique_id("d31x"), level=3)
    tap = tapped(r)
    r.send_bytes(bytes.fromhex(data))
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data) == b"", f"sent {bytes(tap.data).hex()} before closing"


@pytest.mark.parametrize("data", [PUBREL_DUP_1, SUBSCRIBE_DUP, UNSUBSCRIBE_DUP],
                         ids=["pubrel_6a", "subscribe_8a", "unsubscribe_aa"])
def test_v5_dup_on_pubrel_subscribe_unsubscribe_disconnect_0x81_mqtt_2_1_3_1(
        make_broker_thread: Callable[[dict[str, Any]], BrokerThread], data: bytes) -> None:
    """MQTT 5 fixes the flags as 3.1.1 does [MQTT-2.1.3-1]: the same bytes from a level-5
    client get DISCONNECT 0x81 (Malformed Packet), then the close."""
    env = Env(make_broker_thread)
    try:
        r, _ = env.raw_connect(unique_id("d5"), properties={P.REQUEST_PROBLEM_INFORMATION: 0})
        r.send_bytes(data)
        d = r.expect_disconnect(CLOSE_WITHIN)
        assert d.reason_code == 0x81
        assert r.frames[-1] == bytes.fromhex("e0 01 81"), r.frames[-1].hex(" ")
    finally:
        env.close()
