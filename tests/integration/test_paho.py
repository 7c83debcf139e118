"""paho-mqtt against the broker over real sockets, at MQTT 3.1 and 3.1.1.

CONNECT/CONNACK codes, QoS 0/1/2 publish and subscribe, granted and delivered QoS, overlapping
subscriptions, SUBSCRIBE replacement, UNSUBSCRIBE, invalid filters and ACLs, ordering and
retained messages. Every wait is bounded (see ``helpers.TIMEOUT``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mqttbroker.protocol.packets import Publish, Subscribe, Subscription
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

FAILURE = 0x80


@pytest.fixture
def clients(broker_thread: BrokerThread) -> Iterator[Clients]:
    with Clients(broker_thread.port) as c:
        yield c


@pytest.fixture
def clients_for(make_broker_thread: Callable[[dict[str, Any]], BrokerThread]
                ) -> Iterator[Callable[[dict[str, Any]], Clients]]:
    """Start a broker with a custom config and make clients for it."""
    made: list[Clients] = []

    def make(config: dict[str, Any]) -> Clients:
        c = Clients(make_broker_thread(config).port)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# -- CONNECT / CONNACK ---------------------------------------------------------------------------

@protocols
def test_connect_accepted_session_present_0_mqtt_3_2_2_1(
        clients: Clients, broker_thread: BrokerThread, protocol: int) -> None:
    """A valid CONNECT gets CONNACK 0x00; with CleanSession=1 Session Present is 0."""
    cid = unique_id("ok")
    c = clients.paho(cid, protocol)
    assert c.connack_code == 0
    assert c.session_present is False
    assert cid in connected_ids(broker_thread)


def test_empty_client_id_gets_unique_assigned_id_mqtt_3_1_3_6(
        clients: Clients, broker_thread: BrokerThread) -> None:
    """3.1.1: a zero-byte ClientId with CleanSession=1 is accepted and the Server assigns a
    unique ClientId [MQTT-3.1.3-6]: two such clients do not take each other over."""
    a = clients.paho("", V311)
    b = clients.paho("", V311)
    assert a.connack_code == 0 and b.connack_code == 0
    ids: set[str] = set()

    def two_connected() -> bool:
        ids.clear()
        ids.update(connected_ids(broker_thread))
        return len(ids) == 2

    wait_until(two_connected, what="two connected clients")
    assert all(ids), ids
    assert not a.disconnected.is_set() and not b.disconnected.is_set()
    # both work: each receives what the other publishes
    a.subscribe(("to/a", 1))
    b.subscribe(("to/b", 1))
    b.publish("to/a", b"for a", 1)
    a.publish("to/b", b"for b", 1)
    assert payloads(a.messages.wait_for(1)) == [b"for a"]
    assert payloads(b.messages.wait_for(1)) == [b"for b"]


@levels
def test_empty_client_id_without_clean_session_refused_0x02_mqtt_3_1_3_8(
        clients: Clients, level: int) -> None:
    """A zero-byte ClientId with CleanSession=0 gets CONNACK 0x02 (identifier rejected), with
    Session Present 0 [MQTT-3.2.2-4], and the connection is closed [MQTT-3.2.2-5].
    (paho will not send this CONNECT, so a raw socket does.)"""
    raw, ack = clients.raw_connect("", level, clean=False, expect=None)
    assert ack.return_code == 0x02
    assert ack.session_present is False
    raw.wait_closed()


def test_mqtt31_empty_client_id_refused_0x02(clients: Clients) -> None:
    """MQTT 3.1 requires a ClientId of 1 to 23 characters: an empty one gets CONNACK 0x02
    (identifier rejected), seen through paho's on_connect."""
    c = clients.paho("", V31, expect=2)
    assert c.disconnected.wait(5), "the broker kept a refused connection open"


@levels
def test_mqtt31_and_311_empty_client_id_raw(clients: Clients, level: int) -> None:
    """Raw-socket check of the empty-id rule with CleanSession=1: 3.1 refuses with 0x02,
    3.1.1 accepts [MQTT-3.1.3-6]."""
    raw, ack = clients.raw_connect("", level, clean=True, expect=None)
    if level == 3:
        assert ack.return_code == 0x02
        raw.wait_closed()
    else:
        assert ack.return_code == 0x00
        raw.ping()


@protocols
def test_anonymous_refused_0x05_when_not_allowed(
        clients_for: Callable[[dict[str, Any]], Clients], protocol: int) -> None:
    """auth.allow-anonymous false: a CONNECT without a user name gets CONNACK 0x05 (not
    authorized), then the connection is closed [MQTT-3.2.2-5]."""
    cfg = base_config()
    cfg["auth"] = {"allow-anonymous": False}
    cl = clients_for(cfg)
    c = cl.paho(unique_id("anon"), protocol, expect=5)
    assert c.session_present is False  # [MQTT-3.2.2-4]
    assert c.disconnected.wait(5), "the broker kept a refused connection open"


# -- publish / subscribe -------------------------------------------------------------------------

@protocols
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_subscribe_roundtrip(clients: Clients, protocol: int, qos: int) -> None:
    """A message published at QoS n to a QoS 2 subscription arrives once, at QoS n."""
    sub = clients.paho(unique_id("sub"), protocol)
    pub = clients.paho(unique_id("pub"), protocol)
    assert sub.subscribe(("rt/x", 2)) == [2]
    pub.publish("rt/x", b"payload-%d" % qos, qos)
    msgs = sub.messages.wait_for(1)
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [
        ("rt/x", b"payload-%d" % qos, qos, False)]


@protocols
def test_delivered_qos_is_min_of_publish_and_granted_mqtt_3_8_4_6(
        clients: Clients, protocol: int) -> None:
    """Every (publish QoS, subscription QoS) pair: delivered at min(publish, granted)."""
    sub = clients.paho(unique_id("sub"), protocol)
    pub = clients.paho(unique_id("pub"), protocol)
    assert sub.subscribe(("mq/0", 0), ("mq/1", 1), ("mq/2", 2)) == [0, 1, 2]
    for s in range(3):
        for p in range(3):
            pub.publish(f"mq/{s}", f"{s}{p}".encode(), p)
    msgs = sub.messages.wait_for(9)
    got = {m.payload.decode(): m.qos for m in msgs}
    assert got == {f"{s}{p}": min(s, p) for s in range(3) for p in range(3)}
    assert len(msgs) == 9


@protocols
def test_granted_qos_capped_by_max_qos_mqtt_3_8_4_6(
        clients_for: Callable[[dict[str, Any]], Clients], protocol: int) -> None:
    """With max_qos 1 the Server grants min(requested, 1) in SUBACK and delivers at most at
    the granted QoS."""
    cl = clients_for(base_config(max_qos=1))
    sub = cl.paho(unique_id("sub"), protocol)
    pub = cl.paho(unique_id("pub"), protocol)
    assert sub.subscribe(("cap/2", 2), ("cap/1", 1), ("cap/0", 0)) == [1, 1, 0]
    pub.publish("cap/2", b"two", 2)
    pub.publish("cap/1", b"one", 2)
    pub.publish("cap/0", b"zero", 2)
    msgs = sub.messages.wait_for(3)
    assert {m.payload: m.qos for m in msgs} == {b"two": 1, b"one": 1, b"zero": 0}


@protocols
def test_overlapping_subscriptions_one_copy_at_highest_qos_mqtt_3_3_5_1(
        clients: Clients, protocol: int) -> None:
    """`a/#` (QoS 0), `a/+` (QoS 2) and `a/b` (QoS 1) all match `a/b`: the message is
    delivered respecting the highest granted QoS [MQTT-3.3.5-1]. (3.1.1 would also allow extra
    copies; this broker promises exactly one.)"""
    sub = clients.paho(unique_id("sub"), protocol)
    pub = clients.paho(unique_id("pub"), protocol)
    assert sub.subscribe(("a/#", 0), ("a/+", 2), ("a/b", 1)) == [0, 2, 1]
    pub.publish("a/b", b"once", 2)
    pub.publish("a/c/d", b"sentinel", 2)  # matches a/# only: QoS 0
    # paho hands a QoS 2 message over at PUBREL, possibly after the QoS 0 sentinel; any extra
    # copy (at QoS 0 or 1) would be on the wire, and handed over, before the sentinel
    msgs = sub.messages.wait_until(lambda ms: {m.payload for m in ms} >= {b"once", b"sentinel"})
    assert sorted((m.topic, m.payload, m.qos) for m in msgs) == [
        ("a/b", b"once", 2), ("a/c/d", b"sentinel", 0)]


@protocols
def test_repeated_subscribe_replaces_qos_and_resends_retained_mqtt_3_8_4_3(
        clients: Clients, protocol: int) -> None:
    """A SUBSCRIBE with a filter identical to an existing one replaces it (new QoS, still one
    subscription) and the matching retained message is re-sent [MQTT-3.8.4-3]."""
    sub = clients.paho(unique_id("sub"), protocol)
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("rs/t", b"kept", 2, retain=True)
    assert sub.subscribe(("rs/t", 2)) == [2]
    first = sub.messages.wait_for(1)
    assert [(m.payload, m.qos, m.retain) for m in first] == [(b"kept", 2, True)]
    assert sub.subscribe(("rs/t", 1)) == [1]
    again = sub.messages.wait_for(2)
    assert [(m.payload, m.qos, m.retain) for m in again[1:]] == [(b"kept", 1, True)]
    pub.publish("rs/t", b"live", 2)
    msgs = sub.messages.wait_for(3)
    assert [(m.payload, m.qos, m.retain) for m in msgs[2:]] == [(b"live", 1, False)]
    pub.publish("rs/t", b"sentinel", 0)
    msgs = sub.messages.wait_until(lambda ms: ms[-1].payload == b"sentinel")
    assert len(msgs) == 4, "a replaced subscription must not deliver twice"


@protocols
def test_unsubscribe_stops_delivery_mqtt_3_10_4_2(clients: Clients, protocol: int) -> None:
    """After UNSUBACK the Server stops adding new messages for the filter [MQTT-3.10.4-2]; the
    client's other subscriptions are untouched."""
    sub = clients.paho(unique_id("sub"), protocol)
    pub = clients.paho(unique_id("pub"), protocol)
    sub.subscribe(("un/a", 1), ("un/sentinel", 1))
    pub.publish("un/a", b"before", 1)
    sub.messages.wait_for(1)
    sub.unsubscribe("un/a")
    pub.publish("un/a", b"after", 1)
    pub.publish("un/sentinel", b"sentinel", 1)
    msgs = sub.messages.wait_for(2)
    assert payloads(msgs) == [b"before", b"sentinel"]


@levels
def test_unsubscribe_unknown_filter_still_gets_unsuback_mqtt_3_10_4_5(
        clients: Clients, level: int) -> None:
    """UNSUBACK is sent even when no filter matched [MQTT-3.10.4-5]; an UNSUBSCRIBE compares
    filters character by character [MQTT-3.10.4-1]: `u/+` does not remove `u/a`."""
    raw, _ = clients.raw_connect(unique_id("raw"), level)
    raw.subscribe(("u/a", 0))
    raw.unsubscribe("never/subscribed")
    raw.unsubscribe("u/+")
    pub = clients.paho(unique_id("pub"), V31 if level == 3 else V311)
    pub.publish("u/a", b"still subscribed", 1)
    p = raw.expect(Publish)
    assert (p.topic, p.payload) == ("u/a", b"still subscribed")


@levels
@pytest.mark.parametrize("bad", ["a/#/b", "a#", "a/b+", "#/x", ""])
def test_malformed_filter_closes_the_connection_mqtt_4_7_1_2(
        clients: Clients, level: int, bad: str) -> None:
    """A malformed filter (`#` not last or not a whole level, `+` not a whole level
    [MQTT-4.7.1-2/3], empty [MQTT-4.7.3-1]) is a protocol violation: the connection closes
    without a SUBACK, even beside a valid filter [MQTT-4.8.0-1], as Mosquitto does; other
    clients do not notice.
    (paho refuses to send such a filter: a raw socket does.)"""
    watcher = clients.paho(unique_id("watch"), V31 if level == 3 else V311)
    assert watcher.subscribe(("ok/t", 1)) == [1]
    raw, _ = clients.raw_connect(unique_id("raw"), level)
    assert raw.subscribe(("ok/t", 1)) == [1]
    raw.send(Subscribe(raw.next_packet_id(), [Subscription(bad, 1), Subscription("ok/u", 1)]))
    assert raw.wait_closed() == []
    pub = clients.paho(unique_id("pub"), V31 if level == 3 else V311)
    pub.publish("ok/t", b"fine", 1)
    assert payloads(watcher.messages.wait_for(1)) == [b"fine"]


@protocols
def test_acl_refused_filter_gets_0x80(
        clients_for: Callable[[dict[str, Any]], Clients], protocol: int) -> None:
    """topic-check acl: a filter outside the user's list gets 0x80, one inside is granted."""
    cfg = base_config()
    cfg["topic-check"] = {"enabled": True, "acl": {"alice": ["allowed/#"]}}
    cl = clients_for(cfg)
    alice = cl.paho(unique_id("alice"), protocol, username="alice", password="pw")
    assert alice.subscribe(("allowed/x", 1), ("secret/x", 1), ("#", 0)) == [
        1, FAILURE, FAILURE]
    alice.publish("allowed/x", b"mine", 1)
    assert payloads(alice.messages.wait_for(1)) == [b"mine"]


# -- ordering ------------------------------------------------------------------------------------

@protocols
@pytest.mark.parametrize("qos", [1, 2])
def test_messages_from_one_publisher_arrive_in_order_mqtt_4_6_0_5(
        clients: Clients, protocol: int, qos: int) -> None:
    """200 messages from one client on one topic at one QoS arrive in the order sent
    [MQTT-4.6.0-5]; topics are ordered by default [MQTT-4.6.0-6]."""
    n = 200
    sub = clients.paho(unique_id("sub"), protocol)
    pub = clients.paho(unique_id("pub"), protocol)
    sub.subscribe(("order/t", qos))
    infos = [pub.publish("order/t", b"%d" % i, qos, wait=False) for i in range(n)]
    msgs = sub.messages.wait_for(n, timeout=20)
    assert [int(m.payload) for m in msgs] == list(range(n))
    assert {m.qos for m in msgs} == {qos}
    wait_until(lambda: all(i.is_published() for i in infos), what="all publishes acknowledged")


# -- retained messages ---------------------------------------------------------------------------

@protocols
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_retained_delivered_on_subscribe_with_retain_1_mqtt_3_3_1_8(
        clients: Clients, protocol: int, qos: int) -> None:
    """A retained message is stored [MQTT-3.3.1-5] and sent to a new subscription
    [MQTT-3.3.1-6] with RETAIN=1 [MQTT-3.3.1-8], at min(its QoS, granted QoS)."""
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("ret/t", b"stored", qos, retain=True)
    sub = clients.paho(unique_id("sub"), protocol)
    sub.subscribe(("ret/t", 2))
    msgs = sub.messages.wait_for(1)
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [
        ("ret/t", b"stored", qos, True)]


@protocols
def test_retain_flag_0_when_forwarded_to_existing_subscription_mqtt_3_3_1_9(
        clients: Clients, protocol: int) -> None:
    """A retained PUBLISH forwarded to an established subscription carries RETAIN=0."""
    sub = clients.paho(unique_id("sub"), protocol)
    pub = clients.paho(unique_id("pub"), protocol)
    sub.subscribe(("fw/t", 1))
    pub.publish("fw/t", b"live", 1, retain=True)
    msgs = sub.messages.wait_for(1)
    assert [(m.payload, m.retain) for m in msgs] == [(b"live", False)]


@protocols
def test_retained_replaced_by_newer_mqtt_3_3_1_5(clients: Clients, protocol: int) -> None:
    """Only the last retained message of a topic is kept."""
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("rp/t", b"old", 1, retain=True)
    pub.publish("rp/t", b"new", 1, retain=True)
    sub = clients.paho(unique_id("sub"), protocol)
    sub.subscribe(("rp/t", 1), ("rp/sentinel", 1))
    pub.publish("rp/sentinel", b"sentinel", 1)
    msgs = sub.messages.wait_until(lambda ms: any(m.payload == b"sentinel" for m in ms))
    assert [(m.payload, m.retain) for m in msgs] == [(b"new", True), (b"sentinel", False)]


@protocols
def test_retained_deleted_by_empty_payload_mqtt_3_3_1_10(clients: Clients, protocol: int) -> None:
    """A retained PUBLISH with an empty payload is delivered as normal to current subscribers,
    removes the retained message [MQTT-3.3.1-10] and is not stored itself [MQTT-3.3.1-11]."""
    pub = clients.paho(unique_id("pub"), protocol)
    watcher = clients.paho(unique_id("w"), protocol)
    watcher.subscribe(("rd/t", 1))
    pub.publish("rd/t", b"doomed", 1, retain=True)
    pub.publish("rd/t", b"", 1, retain=True)
    assert payloads(watcher.messages.wait_for(2)) == [b"doomed", b""]
    sub = clients.paho(unique_id("sub"), protocol)
    sub.subscribe(("rd/t", 1), ("rd/sentinel", 1))
    pub.publish("rd/sentinel", b"sentinel", 1)
    msgs = sub.messages.wait_until(lambda ms: any(m.payload == b"sentinel" for m in ms))
    assert payloads(msgs) == [b"sentinel"], "the deleted retained message was delivered"


@protocols
def test_non_retained_publish_keeps_retained_mqtt_3_3_1_12(clients: Clients, protocol: int) -> None:
    """A PUBLISH with RETAIN=0 neither stores nor replaces the retained message."""
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("nr/t", b"retained", 1, retain=True)
    pub.publish("nr/t", b"transient", 1, retain=False)
    sub = clients.paho(unique_id("sub"), protocol)
    sub.subscribe(("nr/t", 1))
    msgs = sub.messages.wait_for(1)
    assert [(m.payload, m.retain) for m in msgs] == [(b"retained", True)]


@protocols
def test_wildcard_subscription_gets_every_matching_retained_mqtt_3_3_1_6(
        clients: Clients, protocol: int) -> None:
    """A wildcard subscription receives the retained message of every matching topic, and
    none of the others."""
    pub = clients.paho(unique_id("pub"), protocol)
    for topic in ("w/a", "w/b/c", "x/a", "w"):
        pub.publish(topic, topic.encode(), 1, retain=True)
    hash_sub = clients.paho(unique_id("h"), protocol)
    hash_sub.subscribe(("w/#", 1))
    plus_sub = clients.paho(unique_id("p"), protocol)
    plus_sub.subscribe(("+/a", 1))
    # `w/#` also matches the parent level `w` [MQTT-4.7.1-2]
    got = hash_sub.messages.wait_for(3)
    assert sorted(m.topic for m in got) == ["w", "w/a", "w/b/c"]
    assert all(m.retain for m in got)
    got = plus_sub.messages.wait_for(2)
    assert sorted(m.topic for m in got) == ["w/a", "x/a"]
    # and nothing more arrives behind them
    pub.publish("w/sentinel", b"s", 1)
    pub.publish("s/a", b"s", 1)
    assert len(hash_sub.messages.wait_for(4)) == 4
    assert len(plus_sub.messages.wait_for(3)) == 3
