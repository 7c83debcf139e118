"""Shared subscriptions [MQTT 4.8.2]: ``$share/<group>/<filter>`` spreads messages over the
group's members (MQTT 5 and 3.1.1 alike), one member per message, while non-shared subscribers
and other groups get their own copy.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.protocol.packets import Publish, Subscribe, Subscription
from tests.conftest import base_config

from .brokerproc import persistence
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


# -- fair dispatch: a member with a free slot takes what waits at a busier one (work stealing) --

FAIR = "$share/g/sh/fair"


def test_fair_dispatch_fast_member_takes_the_slow_members_backlog(env: Env) -> None:
    """Two MQTT 5 members with Receive Maximum 1 that acknowledge by hand; 10 QoS 1 messages
    are published while neither acknowledges, so both windows fill and the rest is queued
    at the two members in turn. The fast member then acknowledges each message at once, the
    slow one holds its first: the fast one takes its own queue and then the slow one's
    [MQTT 4.8.2 leaves the choice to the server] and receives 9, the slow one 1; when the
    slow one finally acknowledges, nothing is left for it. Every message is delivered
    exactly once."""
    slow, _ = env.raw_connect(unique_id("shslow"), properties={P.RECEIVE_MAXIMUM: 1})
    slow.subscribe5((FAIR, 1))
    fast, _ = env.raw_connect(unique_id("shfast"), properties={P.RECEIVE_MAXIMUM: 1})
    fast.subscribe5((FAIR, 1))
    sent = publish_n(env, "sh/fair", 10)
    got = fast.publishes(9)  # acknowledged one by one
    held = slow.next_publish(ack=False)
    assert fast.drain(0.3) == [] and slow.drain(0.1) == []
    slow.ack(held)
    assert slow.drain(0.3) == [], "a message was still queued for the slow member"
    everything = Counter([p.payload for p in got] + [held.payload])
    assert sorted(everything) == sorted(sent) and set(everything.values()) == {1}, everything


def test_fair_dispatch_for_mqtt_3_1_1_members(env: Env) -> None:
    """The same with 3.1.1 members, which have no Receive Maximum: the broker's
    ``max_inflight_messages`` (1 here) is their window, and a 3.1.1 member takes the
    backlog of another just the same: 9 to the fast one, 1 to the slow one, each once."""
    env.start(max_inflight_messages=1)
    slow = env.raw3()
    slow.connect(unique_id("shslow3"))
    assert slow.subscribe((FAIR, 1)) == [1]
    fast = env.raw3()
    fast.connect(unique_id("shfast3"))
    assert fast.subscribe((FAIR, 1)) == [1]
    sent = publish_n(env, "sh/fair", 10)
    got: list[Publish] = []
    for _ in range(9):
        p = fast.expect(Publish)
        fast.ack(p)
        got.append(p)
    held = slow.expect(Publish)
    assert fast.no_packet(0.3) and slow.no_packet(0.1)
    slow.ack(held)
    assert slow.no_packet(0.3), "a message was still queued for the slow member"
    everything = Counter([p.payload for p in got] + [held.payload])
    assert sorted(everything) == sorted(sent) and set(everything.values()) == {1}, everything


def test_fair_dispatch_with_persistence_each_message_in_one_session(
        env: Env, tmp_path: Path) -> None:
    """With SQLite persistence: the fast member takes 2 messages from the slow member's queue
    (acknowledging the first, holding the second), then the broker restarts. Each message
    not yet acknowledged is stored in exactly one session (the stolen ones moved, rows and
    all), none acknowledged comes back; on reconnect each of them is delivered once."""
    config = base_config()
    config["persistence"] = persistence(tmp_path / "db.sqlite")
    env.start(config)
    props = {P.RECEIVE_MAXIMUM: 1, P.SESSION_EXPIRY_INTERVAL: 300}
    ids = unique_id("shpslow"), unique_id("shpfast")
    slow, _ = env.raw_connect(ids[0], properties=props)
    slow.subscribe5((FAIR, 1))
    fast, _ = env.raw_connect(ids[1], properties=props)
    fast.subscribe5((FAIR, 1))
    sent = publish_n(env, "sh/fair", 10)
    acked = [p.payload for p in fast.publishes(6)]  # its own 5, then 1 of the slow one's
    fast_held = fast.next_publish(ack=False).payload  # a 2nd of the slow one's, unacked
    slow_held = slow.next_publish(ack=False).payload
    owed = set(sent) - set(acked)
    assert len(owed) == 4 and {fast_held, slow_held} <= owed
    env.bt.stop()

    bt = env.start(config)
    stored = bt.call(lambda: {cid: [i.message.payload for i in bt.broker.sessions[cid].items()]
                              for cid in ids})
    assert Counter(stored[ids[0]] + stored[ids[1]]) == Counter(owed), stored
    assert stored[ids[1]] == [fast_held], stored
    # the fast member comes back first: its unacknowledged one again, then the slow one's queue
    props_again = {P.RECEIVE_MAXIMUM: 1}
    fast, ack = env.raw_connect(ids[1], clean_start=False, properties=props_again)
    assert ack.session_present
    again = fast.publishes(3)
    assert again[0].payload == fast_held and again[0].dup
    slow, _ = env.raw_connect(ids[0], clean_start=False, properties=props_again)
    last = slow.next_publish()
    assert last.payload == slow_held and last.dup
    assert fast.drain(0.3) == [] and slow.drain(0.1) == []
    assert sorted([p.payload for p in again] + [last.payload]) == sorted(owed)


ACL_FILE = """\
topic readwrite sh/acl/#

user carol
topic read sh/acl/open/#
"""


def test_fair_dispatch_never_gives_a_member_what_it_may_not_read(
        env: Env, tmp_path: Path) -> None:
    """An ACL file lets carol read ``sh/acl/open/#`` only, yet her ``$share/g/sh/acl/#`` is
    granted (it covers what she may read; deliveries are checked one by one). A busy member
    (Receive Maximum 1, not acknowledging) has 5 messages queued, open and secret in turn,
    when carol joins the group: she takes the open ones and never a secret one, which stay
    with the member that may read them."""
    acl = tmp_path / "acl"
    acl.write_text(ACL_FILE)
    config = base_config()
    config["auth"]["acl-file"] = str(acl)
    env.start(config)
    busy, _ = env.raw_connect(unique_id("shbusy"), properties={P.RECEIVE_MAXIMUM: 1})
    busy.subscribe5(("$share/g/sh/acl/#", 1))
    pub, _ = env.raw_connect(unique_id("shaclp"))
    topics = [f"sh/acl/{'open' if i % 2 else 'secret'}/{i}" for i in range(6)]
    for t in topics:
        pub.publish5(t, t.encode(), 1)
    first = busy.next_publish(ack=False)
    assert first.topic == topics[0]
    carol, _ = env.raw_connect(unique_id("shcarol"), username="carol")
    assert carol.subscribe5(("$share/g/sh/acl/#", 1)).return_codes == [1]
    taken = carol.publishes(3)
    assert [p.topic for p in taken] == [t for t in topics if "/open/" in t]
    busy.ack(first)
    rest = busy.publishes(2)
    assert [p.topic for p in rest] == [topics[2], topics[4]]
    assert carol.drain(0.3) == [] and busy.drain(0.1) == []
