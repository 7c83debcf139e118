"""Flow control [MQTT 4.9] and the client's Maximum Packet Size [MQTT 3.1.2.11.4]: the broker
never has more unacknowledged QoS 1/2 PUBLISH out than the client's Receive Maximum, and never
sends a packet bigger than the client accepts (it drops it and carries on).
"""

from __future__ import annotations

from typing import Any

from mqttbroker.protocol.packets import Pingreq, Pingresp, Puback, Pubcomp, Publish, Pubrec, Pubrel

from .helpers import unique_id, wait_until
from .v5helpers import Env, P


def test_receive_maximum_limits_inflight_mqtt_3_3_4_9(env: Env) -> None:
    """[MQTT-3.3.4-9] [MQTT-4.9.0-2] a subscriber with Receive Maximum 2 that does not PUBACK
    has at most 2 QoS 1 PUBLISH in flight; each PUBACK lets exactly one more through, in order.
    [MQTT-3.3.4-10] [MQTT-4.9.0-3] other packets (PINGRESP) are not held back meanwhile."""
    sub, _ = env.raw_connect(unique_id("fcrm"), properties={P.RECEIVE_MAXIMUM: 2})
    sub.subscribe5(("fc/rm", 1))
    pub, _ = env.raw_connect(unique_id("fcpub"))
    for i in range(5):
        pub.publish5("fc/rm", b"%d" % i, 1)
    first = sub.publishes(2, ack=False)
    assert [p.payload for p in first] == [b"0", b"1"]
    assert sub.drain(0.4) == [], "a third PUBLISH went out with two unacknowledged"
    sub.send(Pingreq())
    assert isinstance(sub.recv(), Pingresp)
    sub.send(Puback(first[0].packet_id))  # type: ignore[arg-type]
    third = sub.next_publish(ack=False)
    assert third.payload == b"2"
    assert sub.drain(0.3) == []
    sub.send(Puback(first[1].packet_id), Puback(third.packet_id))  # type: ignore[arg-type]
    rest = sub.publishes(2)
    assert [p.payload for p in rest] == [b"3", b"4"]


def test_receive_maximum_counts_qos2_until_pubcomp_mqtt_4_9_0_2(env: Env) -> None:
    """Receive Maximum 1 at QoS 2: the send quota comes back with PUBCOMP, not with PUBREC
    [MQTT 4.9]: after PUBREC the broker sends PUBREL but no new PUBLISH until PUBCOMP."""
    sub, _ = env.raw_connect(unique_id("fcq2"), properties={P.RECEIVE_MAXIMUM: 1})
    sub.subscribe5(("fc/q2", 2))
    pub, _ = env.raw_connect(unique_id("fcpub"))
    pub.publish5("fc/q2", b"a", 2)
    pub.publish5("fc/q2", b"b", 2)
    p1 = sub.expect(Publish)
    assert p1.payload == b"a" and p1.qos == 2
    assert sub.drain(0.3) == []
    sub.send(Pubrec(p1.packet_id))  # type: ignore[arg-type]
    assert sub.expect(Pubrel).packet_id == p1.packet_id
    assert sub.drain(0.3) == [], "a PUBLISH went out before the PUBCOMP freed the quota"
    sub.send(Pubcomp(p1.packet_id))
    p2 = sub.expect(Publish)
    assert p2.payload == b"b"


def test_receive_maximum_window_refills_on_reconnect(env: Env) -> None:
    """Unacknowledged messages are resent on reconnect [MQTT-4.4.0-1] and the rest follow as
    the new connection's Receive Maximum allows."""
    cid = unique_id("fcrc")
    props = {P.RECEIVE_MAXIMUM: 1, P.SESSION_EXPIRY_INTERVAL: 30}
    sub, _ = env.raw_connect(cid, properties=props)
    sub.subscribe5(("fc/rc", 1))
    pub, _ = env.raw_connect(unique_id("fcpub"))
    for i in range(3):
        pub.publish5("fc/rc", b"%d" % i, 1)
    assert sub.next_publish(ack=False).payload == b"0"
    sub.abort()
    again, ack = env.raw_connect(cid, clean_start=False, properties=props)
    assert ack.session_present is True
    redelivered = again.next_publish(ack=False)
    assert redelivered.payload == b"0" and redelivered.dup is True
    assert again.drain(0.3) == []
    again.ack(redelivered)
    assert [p.payload for p in again.publishes(2)] == [b"1", b"2"]


def test_client_maximum_packet_size_mqtt_3_1_2_24(env: Env) -> None:
    """[MQTT-3.1.2-24] a subscriber with Maximum Packet Size 200 gets a 100-byte message but
    not a 1000-byte one, which the broker drops [MQTT-3.1.2-25] (publish_dropped counts it)
    while another subscriber without a limit gets both."""
    bt = env.bt
    small, _ = env.raw_connect(unique_id("fcmps"), properties={P.MAXIMUM_PACKET_SIZE: 200})
    small.subscribe5(("fc/mps", 1))
    big, _ = env.raw_connect(unique_id("fcmpb"))
    big.subscribe5(("fc/mps", 1))
    before = bt.call(lambda: bt.broker.metrics.publish_dropped)  # type: ignore[union-attr]
    pub, _ = env.raw_connect(unique_id("fcpub"))
    pub.publish5("fc/mps", b"s" * 100, 1)
    pub.publish5("fc/mps", b"L" * 1000, 1)
    pub.publish5("fc/mps", b"end", 1)
    assert [len(p.payload) for p in big.publishes(3)] == [100, 1000, 3]
    got = small.publishes(2)
    assert [p.payload for p in got] == [b"s" * 100, b"end"]
    assert all(len(f) <= 200 for f in small.frames), [len(f) for f in small.frames]
    after = bt.call(lambda: bt.broker.metrics.publish_dropped)  # type: ignore[union-attr]
    assert after >= before + 1, (before, after)


def test_too_large_message_does_not_hold_a_receive_slot_mqtt_3_1_2_25(env: Env) -> None:
    """[MQTT-3.1.2-25] the dropped packet is treated as sent and completed: with Receive
    Maximum 1, a too-large QoS 1 message does not keep the only slot busy for ever."""
    sub, _ = env.raw_connect(unique_id("fcslot"),
                             properties={P.MAXIMUM_PACKET_SIZE: 200, P.RECEIVE_MAXIMUM: 1})
    sub.subscribe5(("fc/slot", 1))
    pub, _ = env.raw_connect(unique_id("fcpub"))
    pub.publish5("fc/slot", b"L" * 1000, 1)
    pub.publish5("fc/slot", b"small", 1)
    assert sub.next_publish().payload == b"small"


def test_maximum_packet_size_counts_the_whole_packet(env: Env) -> None:
    """A message that fits within the client's Maximum Packet Size is delivered with its
    properties (the limit counts the whole packet: header, topic, properties, payload)."""
    sub, _ = env.raw_connect(unique_id("fcfit"), properties={P.MAXIMUM_PACKET_SIZE: 200})
    sub.subscribe5(("fc/fit", 1))
    pub, _ = env.raw_connect(unique_id("fcpub"))
    props: dict[int, Any] = {P.USER_PROPERTY: [("k", "v" * 40)]}
    pub.publish5("fc/fit", b"p" * 100, 1, properties=props)  # about 160 bytes in all
    pub.publish5("fc/fit", b"p" * 150, 1, properties=props)  # about 210 bytes: dropped
    pub.publish5("fc/fit", b"end", 1)
    got = sub.publishes(2)
    assert [len(p.payload) for p in got] == [100, 3]
    assert got[0].properties.get(P.USER_PROPERTY) == [("k", "v" * 40)]


def test_retained_message_too_large_for_client_is_skipped(env: Env) -> None:
    """[MQTT-3.1.2-24] retained messages sent on SUBSCRIBE obey the client's Maximum Packet
    Size too: the big one is skipped, the small one is sent."""
    pub, _ = env.raw_connect(unique_id("fcrp"))
    pub.publish5("fc/ret/big", b"B" * 1000, 1, retain=True)
    pub.publish5("fc/ret/small", b"small", 1, retain=True)
    sub, _ = env.raw_connect(unique_id("fcrs"), properties={P.MAXIMUM_PACKET_SIZE: 200})
    sub.subscribe5(("fc/ret/#", 1))
    got = sub.next_publish()
    assert got.topic == "fc/ret/small"
    assert sub.no_packet(0.3)
    pub.publish5("fc/ret/big", b"", 1, retain=True)
    pub.publish5("fc/ret/small", b"", 1, retain=True)


def test_queued_message_too_large_for_new_connection_is_dropped(env: Env) -> None:
    """A message queued while the client was away is checked against the Maximum Packet Size
    of the connection it is finally sent on: too large, it is dropped and the next one
    follows."""
    cid = unique_id("fcqd")
    sub, _ = env.raw_connect(cid, properties={P.SESSION_EXPIRY_INTERVAL: 30})
    sub.subscribe5(("fc/qd", 1))
    sub.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    pub, _ = env.raw_connect(unique_id("fcqp"))
    pub.publish5("fc/qd", b"B" * 1000, 1)
    pub.publish5("fc/qd", b"small", 1)
    again, _ = env.raw_connect(cid, clean_start=False,
                               properties={P.SESSION_EXPIRY_INTERVAL: 30,
                                           P.MAXIMUM_PACKET_SIZE: 200})
    assert again.next_publish().payload == b"small"
    assert again.no_packet(0.3)
