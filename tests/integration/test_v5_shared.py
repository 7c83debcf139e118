"""Shared subscriptions [MQTT 4.8.2]: ``$share/<group>/<filter>`` spreads messages over the
group's members (MQTT 5 and 3.1.1 alike), one member per message, while non-shared subscribers
and other groups get their own copy.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from mqttbroker.protocol.packets import Subscribe, Subscription

from .helpers import Paho, unique_id, wait_until
from .v5helpers import Env, P, Paho5, SubscribeOptions, no_message, sub


def publish_n(env: Env, topic: str, n: int, qos: int = 1, start: int = 0) -> list[bytes]:
    pub, _ = env.raw_connect(unique_id("shp"))
    payloads = [b"%d" % i for i in range(start, start + n)]
    for p in payloads:
        pub.publish5(topic, p, qos)
    return payloads


def test_round_robin_over_mixed_members_mqtt_4_8_2(env: Env) -> None:
    """Three members of ``$share/g/sh/rr/#`` (two paho v5, one paho 3.1.1) and 30 QoS 1
    messages: each member gets 10, every message is delivered exactly once over the group; a
    non-shared subscriber of ``sh/rr/#`` gets all 30."""
    members: list[Paho5 | Paho] = [env.paho(unique_id("shm")), env.paho(unique_id("shm")),
                                   env.paho3(unique_id("shm3"))]
    for m in members:
        assert m.subscribe(("$share/g/sh/rr/#", 1)) == [1]
    plain = env.paho(unique_id("shplain"))
    plain.subscribe(("sh/rr/#", 1))
    sent = publish_n(env, "sh/rr/x", 30)
    plain.messages.wait_for(30)
    wait_until(lambda: sum(len(m.messages) for m in members) >= 30,
               what="30 messages over the group")
    time.sleep(0.2)  # let any duplicate arrive before counting
    got = [[msg.payload for msg in m.messages.messages] for m in members]
    everything = Counter(p for g in got for p in g)
    assert sorted(everything) == sorted(sent) and set(everything.values()) == {1}, everything
    assert [len(g) for g in got] == [10, 10, 10], [len(g) for g in got]
    assert sorted(msg.payload for msg in plain.messages.messages) == sorted(sent)


def test_each_group_gets_its_own_copy(env: Env) -> None:
    """Two groups on the same filter: each group receives every message once; a member is
    sent the message at the QoS it was granted [MQTT-4.8.2-3]."""
    g1 = env.paho(unique_id("shg1"))
    g1.subscribe(("$share/one/sh/grp", 1))
    g2 = env.paho(unique_id("shg2"))
    g2.subscribe(("$share/two/sh/grp", 0))
    sent = publish_n(env, "sh/grp", 4)
    assert [m.payload for m in g1.messages.wait_for(4)] == sent
    msgs = g2.messages.wait_for(4)
    assert [m.payload for m in msgs] == sent
    assert {m.qos for m in msgs} == {0}


def test_no_retained_message_on_shared_subscribe(env: Env) -> None:
    """Retained messages are sent for a new non-shared subscription [MQTT 3.3.1.3]; a shared
    subscription gets none (the next live message arrives first)."""
    pub, _ = env.raw_connect(unique_id("shrp"))
    pub.publish5("sh/ret/x", b"retained", 1, retain=True)
    m, _ = env.raw_connect(unique_id("shr"))
    assert m.subscribe5(("$share/g/sh/ret/#", 1)).return_codes == [1]
    pub.publish5("sh/ret/x", b"live", 1)
    p = m.next_publish()
    assert p.payload == b"live" and not p.retain
    pub.publish5("sh/ret/x", b"", 1, retain=True)


def test_no_local_on_shared_subscription_is_protocol_error_mqtt_3_8_3_4(env: Env) -> None:
    """[MQTT-3.8.3-4] No Local 1 on a shared subscription is a Protocol Error: DISCONNECT 0x82
    (not a SUBACK failure code)."""
    c, _ = env.raw_connect(unique_id("shnl"))
    c.send(Subscribe(c.next_packet_id(), [sub("$share/g/sh/nl", 1, no_local=True)]))
    d = c.expect_disconnect()
    assert d.reason_code == 0x82


def test_unacked_qos1_goes_to_another_member_when_session_ends(env: Env) -> None:
    """A member (QoS 1, Session Expiry 0) that leaves with unacknowledged messages: its session
    ends, so the broker SHOULD send those messages to another member of the group [MQTT 4.8.2,
    QoS 1 case]; every message is delivered to the remaining member."""
    gone_id = unique_id("shgone")
    leaver, _ = env.raw_connect(gone_id)
    leaver.subscribe5(("$share/g/sh/un", 1))
    stayer = env.paho(unique_id("shstay"))
    stayer.subscribe(("$share/g/sh/un", 1))
    sent = publish_n(env, "sh/un", 6)
    held: list[Any] = list(leaver.publishes(1, ack=False))
    held += leaver.drain(0.3)
    assert held, "the leaving member received nothing to withhold"
    leaver.abort()
    msgs = stayer.messages.wait_until(
        lambda ms: {m.payload for m in ms} >= set(sent), what="every message at the stayer")
    assert {m.payload for m in msgs} == set(sent)


def test_unacked_qos2_not_redelivered_to_another_member_mqtt_4_8_2_5(env: Env) -> None:
    """[MQTT-4.8.2-5] a QoS 2 message the broker was sending to a member whose session then
    ends MUST NOT be sent to any other member (the spec's QoS 2 rule, unlike QoS 1)."""
    leaver, _ = env.raw_connect(unique_id("sh2gone"))
    leaver.subscribe5(("$share/g/sh/q2", 2))
    stayer = env.paho(unique_id("sh2stay"))
    stayer.subscribe(("$share/g/sh/q2", 2))
    publish_n(env, "sh/q2", 2, qos=2)
    held = leaver.next_publish(ack=False)
    assert held.qos == 2
    others = stayer.messages.wait_for(1)
    leaver.abort()
    assert no_message(stayer.messages, 1.0, lambda m: m.payload == held.payload), (
        f"{held.payload!r}, unacknowledged by a member that left, was sent to another member")
    assert [m.payload for m in others] != [held.payload]


def test_member_at_receive_maximum_is_skipped(env: Env) -> None:
    """A member with Receive Maximum 1 that never acknowledges holds one message; the others
    go to the member that has room (none waits behind the full one)."""
    full, _ = env.raw_connect(unique_id("shfull"), properties={P.RECEIVE_MAXIMUM: 1})
    full.subscribe5(("$share/g/sh/rm", 1))
    free = env.paho(unique_id("shfree"))
    free.subscribe(("$share/g/sh/rm", 1))
    sent = publish_n(env, "sh/rm", 10)
    held = full.publishes(1, ack=False)
    msgs = free.messages.wait_for(9)
    assert full.drain(0.3) == []
    assert sorted([p.payload for p in held] + [m.payload for m in msgs]) == sorted(sent)


@pytest.mark.parametrize("bad", ["$share/g+/x", "$share//x", "$share/g", "$share/g/",
                                 "$share/g#/x", "$share/#/x"])
def test_invalid_share_name_suback_0x8f_mqtt_4_8_2_1(env: Env, bad: str) -> None:
    """[MQTT-4.8.2-1] [MQTT-4.8.2-2] a share name must be non-empty, without ``/ + #``, and
    followed by ``/`` and a topic filter: otherwise SUBACK 0x8F (Topic Filter invalid); the
    valid filter next to it in the same SUBSCRIBE is granted [MQTT-3.9.3-1]."""
    c, _ = env.raw_connect(unique_id("shbad"))
    assert c.subscribe5((bad, 1), ("$share/ok/sh/bad", 1)).return_codes == [0x8F, 1]


def test_invalid_share_name_v311_suback_0x80(env: Env) -> None:
    """The same refusal to a 3.1.1 client is its failure code 0x80."""
    c = env.raw3()
    c.connect(unique_id("shbad3"))
    codes = c.subscribe(("$share/g+/x", 1), ("$share//x", 1), ("$share/g", 1),
                        ("$share/ok/sh/bad3", 1))
    assert codes == [0x80, 0x80, 0x80, 1]


def test_unsubscribe_shared_stops_delivery(env: Env) -> None:
    """UNSUBSCRIBE ``$share/g/sh/us/#`` (UNSUBACK 0x00): that member gets nothing more, the other
    member gets everything."""
    a = env.paho(unique_id("shua"))
    b = env.paho(unique_id("shub"))
    for m in (a, b):
        m.subscribe(("$share/g/sh/us/#", 1))
    assert a.unsubscribe("$share/g/sh/us/#") == [0x00]
    sent = publish_n(env, "sh/us/x", 6)
    assert [m.payload for m in b.messages.wait_for(6)] == sent
    assert no_message(a.messages, 0.3)


def test_unsubscribe_unknown_shared_filter_0x11(env: Env) -> None:
    """UNSUBSCRIBE a shared filter this client never subscribed to: 0x11 (No subscription
    existed), even when another client is a member of that group."""
    env.paho(unique_id("shux")).subscribe(("$share/g/sh/ux", 1))
    c, _ = env.raw_connect(unique_id("shuy"))
    assert c.unsubscribe5("$share/g/sh/ux").reason_codes == [0x11]


def test_shared_and_plain_subscription_of_one_client(env: Env) -> None:
    """A client with both a shared and a non-shared subscription matching a message gets a copy
    for the non-shared one and, as the group's only member, a second for the shared one
    [MQTT 4.8.2]."""
    c = env.paho(unique_id("shboth"))
    c.subscribe(("$share/g/sh/both", 1), ("sh/both", 1))
    publish_n(env, "sh/both", 1)
    msgs = c.messages.wait_for(2)
    assert [m.payload for m in msgs] == [b"0", b"0"]


def test_shared_subscription_with_paho_options(env: Env) -> None:
    """paho-mqtt v5 subscribing a shared filter with SubscribeOptions gets granted QoS 1."""
    c = env.paho(unique_id("shopt"))
    assert c.subscribe(("$share/g/sh/opt", SubscribeOptions(qos=1))) == [1]


def test_shared_filter_is_matched_on_its_topic_filter_part(env: Env) -> None:
    """The filter after the share name matches like any filter (wildcards included), and the
    message arrives on its real topic."""
    c, _ = env.raw_connect(unique_id("shwild"))
    c.subscribe5(Subscription("$share/g/sh/+/w/#", 1))
    publish_n(env, "sh/a/w/b/c", 1)
    p = c.next_publish()
    assert p.topic == "sh/a/w/b/c"


def test_subscription_identifier_on_shared_subscription(env: Env) -> None:
    """A member's Subscription Identifier is on the messages its shared subscription brings
    it [MQTT-3.3.4-3]."""
    c, _ = env.raw_connect(unique_id("shsi"))
    c.subscribe5(("$share/g/sh/si", 1), properties={P.SUBSCRIPTION_IDENTIFIER: [77]})
    publish_n(env, "sh/si", 1)
    p = c.next_publish()
    assert p.properties.get(P.SUBSCRIPTION_IDENTIFIER) == [77], p.properties
