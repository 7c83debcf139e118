"""Message Expiry Interval [MQTT 3.3.2.3.3]: an expired message is not delivered
[MQTT-3.3.2-5], and a delivered one carries the time it has left [MQTT-3.3.2-6], whether it
waited in a session queue or as a retained message.
"""

from __future__ import annotations

import time
from typing import Any

from mqttbroker.protocol.packets import Publish

from .helpers import unique_id, wait_until
from .v5helpers import Env, P


def mei(seconds: int) -> dict[int, Any]:
    return {P.MESSAGE_EXPIRY_INTERVAL: seconds}


def offline_subscriber(env: Env, topic: str) -> str:
    """A persistent session (SEI 60) subscribed to ``topic`` at QoS 1, now disconnected."""
    cid = unique_id("mesub")
    r, _ = env.raw_connect(cid, properties={P.SESSION_EXPIRY_INTERVAL: 60})
    r.subscribe5((topic, 1))
    r.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    return cid


def test_queued_message_expires_mqtt_3_3_2_5(env: Env) -> None:
    """[MQTT-3.3.2-5] a QoS 1 message with Message Expiry Interval 1 queued for an offline
    session is deleted once expired: two seconds later only the message without expiry is
    delivered."""
    cid = offline_subscriber(env, "me/q")
    pub, _ = env.raw_connect(unique_id("mepub"))
    pub.publish5("me/q", b"short-lived", 1, properties=mei(1))
    pub.publish5("me/q", b"forever", 1)
    time.sleep(2.0)
    r, ack = env.raw_connect(cid, clean_start=False,
                             properties={P.SESSION_EXPIRY_INTERVAL: 60})
    assert ack.session_present is True
    p = r.next_publish()
    assert p.payload == b"forever"
    assert P.MESSAGE_EXPIRY_INTERVAL not in p.properties, p.properties
    assert r.no_packet(0.3)


def test_queued_message_carries_remaining_expiry_mqtt_3_3_2_6(env: Env) -> None:
    """[MQTT-3.3.2-6] a message with Message Expiry Interval 30 that waited about a second
    is forwarded with the received value minus the time it waited (<= 29)."""
    cid = offline_subscriber(env, "me/r")
    pub, _ = env.raw_connect(unique_id("mepub"))
    pub.publish5("me/r", b"thirty", 1, properties=mei(30))
    time.sleep(1.1)
    r, _ = env.raw_connect(cid, clean_start=False, properties={P.SESSION_EXPIRY_INTERVAL: 60})
    p = r.next_publish()
    assert p.payload == b"thirty"
    left = p.properties.get(P.MESSAGE_EXPIRY_INTERVAL)
    assert left is not None, p.properties
    assert 26 <= left <= 29, f"Message Expiry Interval {left} after waiting 1.1 s of 30"


def test_online_delivery_keeps_expiry(env: Env) -> None:
    """Delivered at once, the message carries (about) the interval it was published with;
    one published without an interval carries none."""
    sub, _ = env.raw_connect(unique_id("meon"))
    sub.subscribe5(("me/on", 1))
    pub, _ = env.raw_connect(unique_id("mepub"))
    pub.publish5("me/on", b"a", 1, properties=mei(30))
    pub.publish5("me/on", b"b", 1)
    a, b = sub.publishes(2)
    assert a.payload == b"a" and 29 <= a.properties.get(P.MESSAGE_EXPIRY_INTERVAL, -1) <= 30
    assert b.payload == b"b" and P.MESSAGE_EXPIRY_INTERVAL not in b.properties


def test_retained_message_expires_mqtt_3_3_2_5(env: Env) -> None:
    """Retained messages expire too: two seconds after publishing, a new subscriber gets the
    retained message with Message Expiry Interval 30 (with what it has left, <= 29) and the
    one without expiry, but not the one with Message Expiry Interval 1."""
    pub, _ = env.raw_connect(unique_id("mepub"))
    pub.publish5("mer/1", b"one", 1, retain=True, properties=mei(1))
    pub.publish5("mer/30", b"thirty", 1, retain=True, properties=mei(30))
    pub.publish5("mer/none", b"none", 1, retain=True)
    time.sleep(2.0)
    sub, _ = env.raw_connect(unique_id("mersub"))
    sub.subscribe5(("mer/#", 1))
    got = {p.topic: p for p in sub.publishes(2)}
    assert sorted(got) == ["mer/30", "mer/none"], sorted(got)
    assert all(p.retain for p in got.values())
    left = got["mer/30"].properties.get(P.MESSAGE_EXPIRY_INTERVAL)
    assert left is not None and 26 <= left <= 28, got["mer/30"].properties
    assert P.MESSAGE_EXPIRY_INTERVAL not in got["mer/none"].properties
    assert sub.no_packet(0.3)


def test_expired_message_in_queue_does_not_block_the_rest(env: Env) -> None:
    """Expiry removes messages from the middle of a queue: the ones around it still arrive, in
    order."""
    cid = offline_subscriber(env, "me/mid")
    pub, _ = env.raw_connect(unique_id("mepub"))
    pub.publish5("me/mid", b"1", 1)
    pub.publish5("me/mid", b"2", 1, properties=mei(1))
    pub.publish5("me/mid", b"3", 1)
    time.sleep(1.6)
    r, _ = env.raw_connect(cid, clean_start=False, properties={P.SESSION_EXPIRY_INTERVAL: 60})
    assert [p.payload for p in r.publishes(2)] == [b"1", b"3"]
    assert r.no_packet(0.3)


def test_expiry_applies_to_v311_subscribers_too(env: Env) -> None:
    """Expiry is a property of the message, not of the subscriber's protocol: a 3.1.1
    persistent session does not get a v5 message that expired while it was away."""
    cid = unique_id("me3")
    old = env.raw3()
    old.connect(cid, clean=False)
    old.subscribe(("me/v3", 1))
    old.disconnect()
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    pub, _ = env.raw_connect(unique_id("mepub"))
    pub.publish5("me/v3", b"expires", 1, properties=mei(1))
    pub.publish5("me/v3", b"stays", 1)
    time.sleep(2.0)
    again = env.raw3()
    ack = again.connect(cid, clean=False)
    assert ack.session_present
    p = again.expect(Publish)
    assert p.payload == b"stays"
    again.ack(p)
    assert again.no_packet(0.3)


def test_inflight_message_is_resent_even_after_its_expiry_mqtt_4_4_0_1(env: Env) -> None:
    """Expiry deletes copies whose onward delivery has not started [MQTT-3.3.2-5]; a QoS 1
    message already sent and not acknowledged must still be resent on reconnect
    [MQTT-4.4.0-1], with DUP."""
    cid = unique_id("mein")
    props = {P.SESSION_EXPIRY_INTERVAL: 60}
    sub, _ = env.raw_connect(cid, properties=props)
    sub.subscribe5(("me/in", 1))
    pub, _ = env.raw_connect(unique_id("mepub"))
    pub.publish5("me/in", b"sent", 1, properties=mei(1))
    assert sub.next_publish(ack=False).payload == b"sent"
    sub.abort()
    wait_until(lambda: not env.connected(cid), what="the broker to notice the drop")
    time.sleep(1.5)
    again, ack = env.raw_connect(cid, clean_start=False, properties=props)
    assert ack.session_present
    p = again.next_publish()
    assert p.payload == b"sent" and p.dup
