"""Sessions [MQTT 3.1.2.4, 4.1]: persistence across connections, queueing while away and its
bound, clean sessions, takeover, in-flight redelivery [MQTT-4.4.0-1] and QoS 2 exactly-once
[MQTT-4.3.3]. Raw sockets play clients that withhold acknowledgements or resend packets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mqttbroker.protocol.packets import Puback, Pubcomp, Publish, Pubrec, Pubrel
from tests.conftest import BrokerThread, base_config

from .helpers import (
    V31,
    V311,
    Clients,
    connected_ids,
    levels,
    payloads,
    protocols,
    unique_id,
    wait_until,
)


@pytest.fixture
def clients(broker_thread: BrokerThread) -> Iterator[Clients]:
    with Clients(broker_thread.port) as c:
        yield c


def paho_protocol(level: int) -> int:
    return V31 if level == 3 else V311


def gone(bt: BrokerThread, cid: str) -> None:
    """Wait until the broker has noticed that ``cid``'s connection ended."""
    wait_until(lambda: cid not in connected_ids(bt), what=f"the broker to release {cid}")


# -- persistent sessions ------------------------------------------------------------------------

@protocols
def test_subscriptions_survive_reconnect_mqtt_3_1_2_4(
        clients: Clients, broker_thread: BrokerThread, protocol: int) -> None:
    """CleanSession=0: the session (its subscriptions) is resumed on reconnect
    [MQTT-3.1.2-4]; a new session reports Session Present 0 [MQTT-3.2.2-3], a resumed one 1
    [MQTT-3.2.2-2] (3.1.1; 3.1 has no Session Present flag)."""
    cid = unique_id("pers")
    first = clients.paho(cid, protocol, clean_session=False)
    assert first.session_present is False
    first.subscribe(("ps/t", 1))
    first.disconnect()
    gone(broker_thread, cid)
    again = clients.paho(cid, protocol, clean_session=False)
    if protocol == V311:
        assert again.session_present is True
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("ps/t", b"no resubscribe needed", 1)
    assert payloads(again.messages.wait_for(1)) == [b"no resubscribe needed"]


@protocols
def test_qos1_qos2_queued_while_away_qos0_not_mqtt_3_1_2_5(
        clients: Clients, broker_thread: BrokerThread, protocol: int) -> None:
    """Messages at QoS 1 and 2 published while a CleanSession=0 client is away are stored and
    delivered on reconnect, in order [MQTT-3.1.2-5]; QoS 0 ones are not (by default)."""
    cid = unique_id("away")
    sub = clients.paho(cid, protocol, clean_session=False)
    sub.subscribe(("aw/0", 0), ("aw/1", 1), ("aw/2", 2))
    sub.disconnect()
    gone(broker_thread, cid)
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("aw/1", b"one-a", 1)
    pub.publish("aw/0", b"zero", 0)
    pub.publish("aw/2", b"two", 2)
    pub.publish("aw/1", b"one-b", 2)  # delivered at the granted QoS 1
    back = clients.paho(cid, protocol, clean_session=False)
    if protocol == V311:
        assert back.session_present is True
    msgs = back.messages.wait_for(3)
    pub.publish("aw/0", b"sentinel", 0)  # live QoS 0 comes behind whatever was queued
    msgs = back.messages.wait_until(
        lambda ms: len(ms) >= 4 and any(m.payload == b"sentinel" for m in ms))
    # (paho hands a QoS 2 message over only at PUBREL, so order is compared per topic/QoS)
    assert sorted((m.topic, m.payload, m.qos) for m in msgs) == [
        ("aw/0", b"sentinel", 0), ("aw/1", b"one-a", 1), ("aw/1", b"one-b", 1),
        ("aw/2", b"two", 2)]
    assert payloads(back.messages.topic("aw/1")) == [b"one-a", b"one-b"]


def test_queue_longer_than_inflight_window_drains_in_order_mqtt_4_6_0_5(
        clients: Clients, broker_thread: BrokerThread) -> None:
    """50 QoS 1 messages queued while away (more than the in-flight window) all arrive on
    reconnect, in order, followed by live ones [MQTT-4.6.0-5]."""
    cid = unique_id("long")
    sub = clients.paho(cid, clean_session=False)
    sub.subscribe(("lq/t", 1))
    sub.disconnect()
    gone(broker_thread, cid)
    pub = clients.paho(unique_id("pub"))
    for i in range(50):
        pub.publish("lq/t", b"%d" % i, 1, wait=i == 49)
    back = clients.paho(cid, clean_session=False)
    pub.publish("lq/t", b"50", 1)
    msgs = back.messages.wait_for(51)
    assert [int(m.payload) for m in msgs] == list(range(51))


def test_qos0_queued_while_away_when_configured_mqtt_3_1_2_5(
        make_broker_thread: Callable[[dict[str, Any]], BrokerThread]) -> None:
    """The Server MAY store QoS 0 messages for an absent client [MQTT-3.1.2-5]: with
    queue_qos0_messages it does, and delivers them at QoS 0 on reconnect."""
    bt = make_broker_thread(base_config(queue_qos0_messages=True))
    with Clients(bt.port) as cl:
        cid = unique_id("q0")
        sub = cl.paho(cid, clean_session=False)
        sub.subscribe(("q0/t", 2))
        sub.disconnect()
        gone(bt, cid)
        pub = cl.paho(unique_id("pub"))
        pub.publish("q0/t", b"zero", 0)
        pub.publish("q0/t", b"one", 1)
        back = cl.paho(cid, clean_session=False)
        msgs = back.messages.wait_for(2)
        assert [(m.payload, m.qos) for m in msgs] == [(b"zero", 0), (b"one", 1)]


@pytest.mark.parametrize("policy", ["drop_new", "drop_oldest"])
def test_queue_bound_while_away(make_broker_thread: Callable[[dict[str, Any]], BrokerThread],
                                policy: str) -> None:
    """max_queued_messages 5: of 12 QoS 1 messages published while away, exactly 5 arrive on
    reconnect: the first 5 with drop_new, the newest 5 with drop_oldest; the 7 others are
    counted in metrics.publish_dropped."""
    bt = make_broker_thread(base_config(max_queued_messages=5, queue_full_policy=policy))
    with Clients(bt.port) as cl:
        cid = unique_id("bound")
        sub = cl.paho(cid, clean_session=False)
        sub.subscribe(("qb/t", 1))
        sub.disconnect()
        gone(bt, cid)
        pub = cl.paho(unique_id("pub"))
        before = bt.call(lambda: bt.broker.metrics.publish_dropped)  # type: ignore[union-attr]
        for i in range(12):
            pub.publish("qb/t", b"m%d" % i, 1)
        after = bt.call(lambda: bt.broker.metrics.publish_dropped)  # type: ignore[union-attr]
        assert after - before == 7
        back = cl.paho(cid, clean_session=False)
        back.messages.wait_for(5)
        pub.publish("qb/t", b"sentinel", 1)
        msgs = back.messages.wait_until(lambda ms: ms[-1].payload == b"sentinel")
        kept = range(5) if policy == "drop_new" else range(7, 12)
        assert payloads(msgs) == [b"m%d" % i for i in kept] + [b"sentinel"]


@protocols
def test_clean_session_discards_previous_session_mqtt_3_1_2_6(
        clients: Clients, broker_thread: BrokerThread, protocol: int) -> None:
    """CleanSession=1 discards the previous session: Session Present 0 [MQTT-3.2.2-1], no old
    subscriptions, no queued messages; and its own state is not reused afterwards
    [MQTT-3.1.2-6]."""
    cid = unique_id("clean")
    old = clients.paho(cid, protocol, clean_session=False)
    old.subscribe(("cs/t", 1))
    old.disconnect()
    gone(broker_thread, cid)
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("cs/t", b"queued for the old session", 1)
    fresh = clients.paho(cid, protocol, clean_session=True)
    assert fresh.session_present is False
    fresh.subscribe(("cs/sentinel", 1))
    pub.publish("cs/t", b"old subscription", 1)
    pub.publish("cs/sentinel", b"sentinel", 1)
    msgs = fresh.messages.wait_until(lambda ms: any(m.payload == b"sentinel" for m in ms))
    assert payloads(msgs) == [b"sentinel"]
    fresh.disconnect()
    gone(broker_thread, cid)
    later = clients.paho(cid, protocol, clean_session=False)
    assert later.session_present is False
    pub.publish("cs/sentinel", b"nobody", 1)
    pub.publish("cs/t", b"nobody", 1)
    later.subscribe(("cs/sentinel2", 1))
    pub.publish("cs/sentinel2", b"sentinel2", 1)
    msgs = later.messages.wait_until(lambda ms: any(m.payload == b"sentinel2" for m in ms))
    assert payloads(msgs) == [b"sentinel2"]


# -- takeover ------------------------------------------------------------------------------------

@protocols
def test_takeover_closes_first_connection_mqtt_3_1_4_2(
        clients: Clients, broker_thread: BrokerThread, protocol: int) -> None:
    """A second CONNECT with the same ClientId: the Server disconnects the existing client
    [MQTT-3.1.4-2] (paho's on_disconnect fires) and the new one works."""
    cid = unique_id("twin")
    first = clients.paho(cid, protocol)
    second = clients.paho(cid, protocol)
    assert first.disconnected.wait(5), "the first connection was not closed"
    assert not second.disconnected.is_set()
    second.subscribe(("tk/t", 1))
    second.publish("tk/t", b"still mine", 1)
    assert payloads(second.messages.wait_for(1)) == [b"still mine"]
    assert connected_ids(broker_thread) == {cid}


@protocols
def test_takeover_keeps_persistent_session_mqtt_3_2_2_2(
        clients: Clients, protocol: int) -> None:
    """Taken over with CleanSession=0 on both sides: the session moves to the new connection
    (Session Present 1 in 3.1.1) with its subscriptions."""
    cid = unique_id("twinp")
    first = clients.paho(cid, protocol, clean_session=False)
    first.subscribe(("tkp/t", 1))
    second = clients.paho(cid, protocol, clean_session=False)
    assert first.disconnected.wait(5)
    if protocol == V311:
        assert second.session_present is True
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("tkp/t", b"follows the session", 1)
    assert payloads(second.messages.wait_for(1)) == [b"follows the session"]
    assert len(first.messages) == 0


# -- in-flight redelivery ------------------------------------------------------------------------

@levels
def test_unacknowledged_qos1_redelivered_with_dup_mqtt_4_4_0_1(
        clients: Clients, broker_thread: BrokerThread, level: int) -> None:
    """QoS 1 PUBLISHes never acknowledged are re-sent on reconnect (CleanSession=0) with their
    original Packet Identifiers [MQTT-4.4.0-1], DUP=1 [MQTT-3.3.1-1], same payload, in the
    original order [MQTT-4.6.0-1]; once acknowledged they are not sent again."""
    cid = unique_id("unacked")
    sub, _ = clients.raw_connect(cid, level, clean=False)
    assert sub.subscribe(("inf/t", 1)) == [1]
    pub = clients.paho(unique_id("pub"), paho_protocol(level))
    for i in range(3):
        pub.publish("inf/t", b"unacked %d" % i, 1)
    first = [sub.expect(Publish) for _ in range(3)]
    assert [(p.payload, p.qos, p.dup) for p in first] == [
        (b"unacked %d" % i, 1, False) for i in range(3)]
    sub.abort()  # no PUBACK, no DISCONNECT
    gone(broker_thread, cid)

    again, ack = clients.raw_connect(cid, level, clean=False)
    if level == 4:
        assert ack.session_present is True
    resent = [again.expect(Publish) for _ in range(3)]
    assert [(p.topic, p.payload, p.qos, p.dup, p.packet_id) for p in resent] == [
        (p.topic, p.payload, 1, True, p.packet_id) for p in first]
    for p in resent:
        again.send(Puback(p.packet_id))  # type: ignore[arg-type]
    again.disconnect()
    gone(broker_thread, cid)

    third, _ = clients.raw_connect(cid, level, clean=False)
    pub.publish("inf/t", b"sentinel", 1)
    p = third.expect(Publish)
    assert (p.payload, p.dup) == (b"sentinel", False), "an acknowledged message came back"


@levels
def test_unacknowledged_qos2_publish_redelivered_with_dup_mqtt_4_4_0_1(
        clients: Clients, broker_thread: BrokerThread, level: int) -> None:
    """A QoS 2 PUBLISH with no PUBREC is re-sent on reconnect with DUP=1 and its id."""
    cid = unique_id("noprec")
    sub, _ = clients.raw_connect(cid, level, clean=False)
    sub.subscribe(("inf2/t", 2))
    pub = clients.paho(unique_id("pub"), paho_protocol(level))
    pub.publish("inf2/t", b"exactly once", 2)
    p = sub.expect(Publish)
    assert (p.qos, p.dup) == (2, False)
    sub.abort()
    gone(broker_thread, cid)
    again, _ = clients.raw_connect(cid, level, clean=False)
    r = again.expect(Publish)
    assert (r.payload, r.qos, r.dup, r.packet_id) == (b"exactly once", 2, True, p.packet_id)
    again.ack(r)


@levels
def test_pubrel_resent_after_pubrec_mqtt_4_4_0_1(
        clients: Clients, broker_thread: BrokerThread, level: int) -> None:
    """Outbound QoS 2 past PUBREC: on reconnect the Server re-sends the PUBREL (same id),
    not the PUBLISH [MQTT-4.4.0-1]; PUBCOMP completes it."""
    cid = unique_id("noprel")
    sub, _ = clients.raw_connect(cid, level, clean=False)
    sub.subscribe(("inf3/t", 2))
    pub = clients.paho(unique_id("pub"), paho_protocol(level))
    pub.publish("inf3/t", b"half done", 2)
    p = sub.expect(Publish)
    sub.send(Pubrec(p.packet_id))  # type: ignore[arg-type]
    assert sub.expect(Pubrel).packet_id == p.packet_id
    sub.abort()  # no PUBCOMP
    gone(broker_thread, cid)
    again, _ = clients.raw_connect(cid, level, clean=False)
    assert again.expect(Pubrel).packet_id == p.packet_id
    again.send(Pubcomp(p.packet_id))
    pub.publish("inf3/t", b"sentinel", 2)
    nxt = again.expect(Publish)
    assert (nxt.payload, nxt.dup) == (b"sentinel", False)


@levels
def test_takeover_resends_inflight_of_old_connection_mqtt_4_4_0_1(
        clients: Clients, broker_thread: BrokerThread, level: int) -> None:
    """A persistent session taken over while a QoS 1 message is unacknowledged on the old
    connection: the new connection gets it again, DUP=1, same Packet Identifier."""
    cid = unique_id("tkinf")
    old, _ = clients.raw_connect(cid, level, clean=False)
    old.subscribe(("tki/t", 1))
    pub = clients.paho(unique_id("pub"), paho_protocol(level))
    pub.publish("tki/t", b"in flight", 1)
    p = old.expect(Publish)
    new, ack = clients.raw_connect(cid, level, clean=False)
    old.wait_closed()
    if level == 4:
        assert ack.session_present is True
    r = new.expect(Publish)
    assert (r.payload, r.qos, r.dup, r.packet_id) == (b"in flight", 1, True, p.packet_id)


# -- QoS 2 exactly once inbound -------------------------------------------------------------------

@levels
def test_qos2_inbound_state_survives_reconnect_mqtt_4_3_3_2(
        clients: Clients, broker_thread: BrokerThread, level: int) -> None:
    """A publisher with CleanSession=0 sends QoS 2 PUBLISH id 9, gets PUBREC and loses the
    connection; on reconnect it resends the PUBLISH (DUP=1) [MQTT-4.4.0-1]: the Server answers
    PUBREC and does not deliver it a second time; PUBREL completes the flow."""
    sub = clients.paho(unique_id("sub"), paho_protocol(level))
    sub.subscribe(("eor/t", 1), ("eor/sentinel", 0))
    cid = unique_id("rawpub")
    pub, _ = clients.raw_connect(cid, level, clean=False)
    pub.send(Publish("eor/t", b"once", 2, False, False, 9))
    assert pub.expect(Pubrec).packet_id == 9
    pub.abort()
    gone(broker_thread, cid)
    pub, _ = clients.raw_connect(cid, level, clean=False)
    pub.send(Publish("eor/t", b"once", 2, False, True, 9))
    assert pub.expect(Pubrec).packet_id == 9
    pub.send(Pubrel(9))
    assert pub.expect(Pubcomp).packet_id == 9
    pub.send(Publish("eor/sentinel", b"s", 0))
    msgs = sub.messages.wait_until(lambda ms: any(m.payload == b"s" for m in ms))
    assert payloads(msgs) == [b"once", b"s"]


@levels
def test_qos2_resent_publish_delivered_exactly_once_mqtt_4_3_3_2(
        clients: Clients, level: int) -> None:
    """The receiver of a QoS 2 PUBLISH answers a resend (DUP=1, same id, before PUBREL) with
    PUBREC again and MUST NOT deliver it twice [MQTT-4.3.3-2]; a resent PUBREL gets PUBCOMP
    again; after PUBCOMP the same id starts a new publication."""
    sub = clients.paho(unique_id("sub"), paho_protocol(level))
    # QoS 1 subscription: paho hands over every PUBLISH the broker forwards as it arrives, so a
    # duplicate would show, and in order with the QoS 0 sentinels
    sub.subscribe(("eo/t", 1), ("eo/sentinel", 0))
    pub, _ = clients.raw_connect(unique_id("rawpub"), level)
    pub.send(Publish("eo/t", b"once", 2, False, False, 7))
    assert pub.expect(Pubrec).packet_id == 7
    pub.send(Publish("eo/t", b"once", 2, False, True, 7))  # resend, DUP=1
    assert pub.expect(Pubrec).packet_id == 7
    pub.send(Pubrel(7))
    assert pub.expect(Pubcomp).packet_id == 7
    pub.send(Pubrel(7))  # a resent PUBREL (as after a lost PUBCOMP)
    assert pub.expect(Pubcomp).packet_id == 7
    pub.send(Publish("eo/sentinel", b"s1", 0))
    msgs = sub.messages.wait_until(lambda ms: any(m.payload == b"s1" for m in ms))
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("eo/t", b"once", 1),
                                                           ("eo/sentinel", b"s1", 0)]
    # id 7 is free again: a new PUBLISH with it is a new message
    pub.send(Publish("eo/t", b"second", 2, False, False, 7))
    assert pub.expect(Pubrec).packet_id == 7
    pub.send(Pubrel(7))
    assert pub.expect(Pubcomp).packet_id == 7
    pub.send(Publish("eo/sentinel", b"s2", 0))
    msgs = sub.messages.wait_until(lambda ms: any(m.payload == b"s2" for m in ms))
    assert payloads(msgs) == [b"once", b"s1", b"second", b"s2"]
