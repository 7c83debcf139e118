"""Subscription options and identifiers [MQTT 3.8.3.1, 3.8.2.1.2, 3.3.4]: No Local, Retain As
Published, Retain Handling 0/1/2, and Subscription Identifiers on forwarded messages (one
copy carrying every matching identifier when subscriptions overlap).
"""

from __future__ import annotations

from typing import Any

from .helpers import unique_id, wait_until
from .v5helpers import Env, P, RawV5, SubscribeOptions, no_message, sub


def si(n: int) -> dict[int, Any]:
    return {P.SUBSCRIPTION_IDENTIFIER: [n]}


# -- No Local --------------------------------------------------------------------------------------

def test_no_local_mqtt_3_8_3_3(env: Env) -> None:
    """[MQTT-3.8.3-3] No Local 1: the client's own messages are not forwarded back to it; other
    clients' messages are."""
    me = env.paho(unique_id("nl"))
    assert me.subscribe(("so/nl", SubscribeOptions(qos=1, noLocal=True))) == [1]
    other = env.paho(unique_id("nlo"))
    me.publish("so/nl", b"own", 1)
    other.publish("so/nl", b"other", 1)
    msgs = me.messages.wait_for(1)
    assert [m.payload for m in msgs] == [b"other"]
    assert no_message(me.messages, 0.3, lambda m: m.payload == b"own")


def test_no_local_off_echoes_own_messages(env: Env) -> None:
    """No Local 0 (the default): a client receives what it publishes to its own filters."""
    me = env.paho(unique_id("nle"))
    me.subscribe(("so/echo", 1))
    me.publish("so/echo", b"own", 1)
    assert me.messages.wait_for(1)[0].payload == b"own"


def test_no_local_is_per_subscription(env: Env) -> None:
    """No Local on one filter does not stop an overlapping filter without it: the message comes
    back once, through the other subscription."""
    me, _ = env.raw_connect(unique_id("nlp"))
    me.subscribe5(sub("so/nlp/x", 1, no_local=True), sub("so/nlp/#", 1))
    me.publish5("so/nlp/x", b"own", 1)
    assert me.next_publish().payload == b"own"
    assert me.no_packet(0.3)


# -- Retain As Published ---------------------------------------------------------------------------

def test_retain_as_published_mqtt_3_3_1_12_13(env: Env) -> None:
    """Forwarding a message published with RETAIN 1 to existing subscriptions: Retain As
    Published 1 keeps RETAIN 1 [MQTT-3.3.1-13], Retain As Published 0 clears it
    [MQTT-3.3.1-12]. A message published without RETAIN arrives without it either way."""
    keep, _ = env.raw_connect(unique_id("rap1"))
    keep.subscribe5(sub("so/rap", 1, rap=True))
    clear, _ = env.raw_connect(unique_id("rap0"))
    clear.subscribe5(sub("so/rap", 1, rap=False))
    pub, _ = env.raw_connect(unique_id("rapp"))
    pub.publish5("so/rap", b"r", 1, retain=True)
    pub.publish5("so/rap", b"n", 1, retain=False)
    assert [(p.payload, p.retain) for p in keep.publishes(2)] == [(b"r", True), (b"n", False)]
    assert [(p.payload, p.retain) for p in clear.publishes(2)] == [(b"r", False), (b"n", False)]
    pub.publish5("so/rap", b"", 1, retain=True)  # clear the retained message


def test_retain_as_published_with_paho(env: Env) -> None:
    """The same with paho-mqtt's SubscribeOptions(retainAsPublished=True)."""
    s = env.paho(unique_id("rapx"))
    s.subscribe(("so/rapx", SubscribeOptions(qos=1, retainAsPublished=True)))
    pub = env.paho(unique_id("rapxp"))
    pub.publish("so/rapx", b"r", 1, retain=True)
    m = s.messages.wait_for(1)[0]
    assert m.payload == b"r" and m.retain is True


# -- Retain Handling -------------------------------------------------------------------------------

def retained_on_subscribe(env: Env, client: RawV5, topic: str, rh: int) -> list[bytes]:
    """SUBSCRIBE ``topic`` with Retain Handling ``rh``, then publish a live marker: the payloads
    that arrive before the marker (the marker bounds the wait)."""
    assert client.subscribe5(sub(topic, 1, rh=rh)).return_codes == [1]
    marker, _ = env.raw_connect(unique_id("rhm"))
    marker.publish5(topic, b"marker", 1)
    marker.disconnect5()
    got: list[bytes] = []
    while True:
        p = client.next_publish()
        if p.payload == b"marker":
            assert not p.retain
            return got
        assert p.retain, f"a retained message on subscribe must have RETAIN 1: {p!r}"
        got.append(p.payload)


def publish_retained(env: Env, topic: str, payload: bytes) -> None:
    pub, _ = env.raw_connect(unique_id("rhp"))
    pub.publish5(topic, payload, 1, retain=True)
    pub.disconnect5()


def test_retain_handling_0_every_subscribe_mqtt_3_3_1_9(env: Env) -> None:
    """[MQTT-3.3.1-9] Retain Handling 0: the retained message is sent on every SUBSCRIBE,
    including one that replaces an existing subscription [MQTT-3.8.4-4]."""
    publish_retained(env, "so/rh0", b"kept")
    c, _ = env.raw_connect(unique_id("rh0"))
    assert retained_on_subscribe(env, c, "so/rh0", 0) == [b"kept"]
    assert retained_on_subscribe(env, c, "so/rh0", 0) == [b"kept"]


def test_retain_handling_1_only_new_subscription_mqtt_3_3_1_10(env: Env) -> None:
    """[MQTT-3.3.1-10] Retain Handling 1: the retained message is sent when the subscription is
    new, not when it already existed."""
    publish_retained(env, "so/rh1", b"kept")
    c, _ = env.raw_connect(unique_id("rh1"))
    assert retained_on_subscribe(env, c, "so/rh1", 1) == [b"kept"]
    assert retained_on_subscribe(env, c, "so/rh1", 1) == []
    c.unsubscribe5("so/rh1")
    assert retained_on_subscribe(env, c, "so/rh1", 1) == [b"kept"]


def test_retain_handling_1_existing_subscription_in_resumed_session(env: Env) -> None:
    """A subscription kept in a resumed session already exists: Retain Handling 1 sends
    nothing."""
    cid = unique_id("rh1s")
    props = {P.SESSION_EXPIRY_INTERVAL: 30}
    publish_retained(env, "so/rh1s", b"kept")
    c, _ = env.raw_connect(cid, properties=props)
    assert retained_on_subscribe(env, c, "so/rh1s", 1) == [b"kept"]
    c.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    again, ack = env.raw_connect(cid, clean_start=False, properties=props)
    assert ack.session_present
    assert retained_on_subscribe(env, again, "so/rh1s", 1) == []


def test_retain_handling_2_never_mqtt_3_3_1_11(env: Env) -> None:
    """[MQTT-3.3.1-11] Retain Handling 2: no retained message at subscribe time."""
    publish_retained(env, "so/rh2", b"kept")
    c, _ = env.raw_connect(unique_id("rh2"))
    assert retained_on_subscribe(env, c, "so/rh2", 2) == []
    assert retained_on_subscribe(env, c, "so/rh2", 2) == []


# -- Subscription Identifiers ----------------------------------------------------------------------

def test_subscription_identifier_on_forwarded_message_mqtt_3_3_4_3(env: Env) -> None:
    """[MQTT-3.3.4-3] SUBSCRIBE with Subscription Identifier 7: forwarded PUBLISH carry 7."""
    c, _ = env.raw_connect(unique_id("si"))
    c.subscribe5(("so/si/#", 1), properties=si(7))
    pub, _ = env.raw_connect(unique_id("sip"))
    pub.publish5("so/si/x", b"x", 1)
    p = c.next_publish()
    assert p.properties.get(P.SUBSCRIPTION_IDENTIFIER) == [7], p.properties


def test_overlapping_subscriptions_one_copy_with_all_identifiers_mqtt_3_3_4_4(env: Env) -> None:
    """Two overlapping subscriptions with identifiers 1 and 2: ONE copy [MQTT-3.3.4-2] (at the
    highest granted QoS) carrying both identifiers, in any order [MQTT-3.3.4-4]."""
    c, _ = env.raw_connect(unique_id("sio"))
    c.subscribe5(("so/sio/#", 0), properties=si(1))
    c.subscribe5(("so/+/x", 1), properties=si(2))
    pub, _ = env.raw_connect(unique_id("siop"))
    pub.publish5("so/sio/x", b"x", 1)
    p = c.next_publish()
    assert sorted(p.properties.get(P.SUBSCRIPTION_IDENTIFIER, [])) == [1, 2], p.properties
    assert p.qos == 1
    assert c.no_packet(0.3), "a second copy was sent"


def test_overlap_with_and_without_identifier(env: Env) -> None:
    """Overlapping subscriptions where only one has an identifier: the one copy carries just
    that identifier."""
    c, _ = env.raw_connect(unique_id("sin"))
    c.subscribe5(("so/sin/#", 1))
    c.subscribe5(("so/sin/x", 1), properties=si(5))
    pub, _ = env.raw_connect(unique_id("sinp"))
    pub.publish5("so/sin/x", b"x", 1)
    pub.publish5("so/sin/y", b"y", 1)
    px, py = c.publishes(2)
    assert px.properties.get(P.SUBSCRIPTION_IDENTIFIER) == [5], px.properties
    assert P.SUBSCRIPTION_IDENTIFIER not in py.properties, py.properties


def test_subscription_identifier_on_retained_message(env: Env) -> None:
    """A retained message sent because of a SUBSCRIBE carries that subscription's identifier."""
    publish_retained(env, "so/sir", b"kept")
    c, _ = env.raw_connect(unique_id("sir"))
    c.subscribe5(("so/sir", 1), properties=si(9))
    p = c.next_publish()
    assert p.retain and p.payload == b"kept"
    assert p.properties.get(P.SUBSCRIPTION_IDENTIFIER) == [9], p.properties


def test_resubscribe_without_identifier_replaces_it_mqtt_3_8_4_3(env: Env) -> None:
    """[MQTT-3.8.4-3] a SUBSCRIBE to the same filter replaces the subscription completely: without
    an identifier this time, forwarded messages carry none."""
    c, _ = env.raw_connect(unique_id("sirs"))
    c.subscribe5(("so/sirs", 1), properties=si(3))
    c.subscribe5(("so/sirs", 1))
    pub, _ = env.raw_connect(unique_id("sirsp"))
    pub.publish5("so/sirs", b"x", 1)
    p = c.next_publish()
    assert P.SUBSCRIPTION_IDENTIFIER not in p.properties, p.properties


def test_paho_reads_subscription_identifier(env: Env) -> None:
    """paho-mqtt v5 sends a Subscription Identifier and reads it back on the message."""
    c = env.paho(unique_id("sipa"))
    c.subscribe(("so/sipa/#", 1), properties={"SubscriptionIdentifier": 42})
    pub = env.paho(unique_id("sipap"))
    pub.publish("so/sipa/x", b"x", 1)
    m = c.messages.wait_for(1)[0]
    assert m.props.get("SubscriptionIdentifier") == [42], m.props  # type: ignore[attr-defined]


def test_subscription_identifier_kept_in_session(env: Env) -> None:
    """The identifier belongs to the subscription: messages queued for a persistent session
    and delivered after reconnect carry it."""
    cid = unique_id("siss")
    props = {P.SESSION_EXPIRY_INTERVAL: 30}
    c, _ = env.raw_connect(cid, properties=props)
    c.subscribe5(("so/siss", 1), properties=si(11))
    c.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    pub, _ = env.raw_connect(unique_id("sissp"))
    pub.publish5("so/siss", b"queued", 1)
    again, _ = env.raw_connect(cid, clean_start=False, properties=props)
    p = again.next_publish()
    assert p.payload == b"queued"
    assert p.properties.get(P.SUBSCRIPTION_IDENTIFIER) == [11], p.properties


def test_subscription_identifier_maximum_value(env: Env) -> None:
    """The largest Subscription Identifier, 268435455 (a four-byte variable byte integer),
    comes back unchanged."""
    c, _ = env.raw_connect(unique_id("simax"))
    c.subscribe5(("so/simax", 1), properties=si(268_435_455))
    pub, _ = env.raw_connect(unique_id("simaxp"))
    pub.publish5("so/simax", b"x", 1)
    assert c.next_publish().properties.get(P.SUBSCRIPTION_IDENTIFIER) == [268_435_455]
