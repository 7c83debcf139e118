"""Topic aliases [MQTT 3.3.2.3.4, 3.3.4]: inbound (client -> broker, up to the Topic Alias
Maximum the CONNACK gave) and outbound (broker -> client, only up to the Topic Alias Maximum the
client's CONNECT gave, never when it gave none). A raw v5 client shows the wire.
"""

from __future__ import annotations

from typing import Any

from mqttbroker.protocol.packets import Publish

from .helpers import unique_id, wait_until
from .v5helpers import Env, P


def ta(alias: int) -> dict[int, Any]:
    return {P.TOPIC_ALIAS: alias}


class AliasMap:
    """The receiving side of outbound aliases, as [MQTT 3.3.4] tells a client to keep it."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.map: dict[int, str] = {}

    def resolve(self, p: Publish) -> str:
        alias = p.properties.get(P.TOPIC_ALIAS)
        if alias is None:
            assert p.topic, f"empty topic without a Topic Alias: {p!r}"
            return p.topic
        # [MQTT-3.3.2-8] never 0; [MQTT-3.3.2-11] never above the client's maximum
        assert 1 <= alias <= self.maximum, f"Topic Alias {alias} outside 1..{self.maximum}"
        if p.topic:
            self.map[alias] = p.topic
            return p.topic
        assert alias in self.map, f"Topic Alias {alias} used before it was set: {p!r}"
        return self.map[alias]


# -- inbound ---------------------------------------------------------------------------------------

def test_inbound_alias_set_then_used_mqtt_3_3_2_12(env: Env) -> None:
    """[MQTT-3.3.2-12] the broker accepts aliases 1..Topic Alias Maximum: topic + alias 1
    sets the mapping, an empty topic + alias 1 uses it, and a new topic with alias 1 remaps
    it. Subscribers receive the full topic names (a subscriber without Topic Alias Maximum
    never sees an alias [MQTT-3.1.2-27])."""
    sub, _ = env.raw_connect(unique_id("tasub"))
    sub.subscribe5(("ta/#", 1))
    pub, ack = env.raw_connect(unique_id("tapub"))
    assert ack.properties.get(P.TOPIC_ALIAS_MAXIMUM) == 10
    for topic, payload, alias in [("ta/x", b"1", 1), ("", b"2", 1), ("ta/y", b"3", 1),
                                  ("", b"4", 1), ("ta/z", b"5", 10), ("", b"6", 10)]:
        puback = pub.publish5(topic, payload, 1, properties=ta(alias))
        assert puback is not None and puback.reason_code == 0x00
    got = sub.publishes(6)
    assert [(p.topic, p.payload) for p in got] == [
        ("ta/x", b"1"), ("ta/x", b"2"), ("ta/y", b"3"), ("ta/y", b"4"), ("ta/z", b"5"),
        ("ta/z", b"6")]
    assert not any(P.TOPIC_ALIAS in p.properties for p in got), got


def test_inbound_alias_reaches_paho_and_v311_subscribers(env: Env) -> None:
    """An aliased PUBLISH is delivered on its full topic to paho v5 and 3.1.1 subscribers."""
    s5 = env.paho(unique_id("tap5"))
    s5.subscribe(("tab/#", 1))
    s3 = env.paho3(unique_id("tap3"))
    s3.subscribe(("tab/#", 1))
    pub, _ = env.raw_connect(unique_id("tapub"))
    pub.publish5("tab/full", b"a", 1, properties=ta(2))
    pub.publish5("", b"b", 1, properties=ta(2))
    for c in (s5, s3):
        msgs = c.messages.wait_for(2)
        assert [(m.topic, m.payload) for m in msgs] == [("tab/full", b"a"), ("tab/full", b"b")]


def test_inbound_alias_not_carried_to_new_connection_mqtt_3_3_2_7(env: Env) -> None:
    """[MQTT-3.3.2-7] alias mappings die with the connection: after reconnecting, an empty
    topic with the old alias is an unmapped alias (DISCONNECT 0x82, MQTT 5.0 3.3.4 step 3a)."""
    cid = unique_id("tanc")
    pub, _ = env.raw_connect(cid, properties={P.SESSION_EXPIRY_INTERVAL: 30})
    pub.publish5("tanc/x", b"1", 1, properties=ta(1))
    pub.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    again, ack = env.raw_connect(cid, clean_start=False,
                                 properties={P.SESSION_EXPIRY_INTERVAL: 30})
    assert ack.session_present is True
    again.send(Publish("", b"2", 0, properties=ta(1)))
    assert again.expect_disconnect().reason_code == 0x82


def test_inbound_alias_refused_when_maximum_is_zero_mqtt_3_2_2_18(env: Env) -> None:
    """topic_alias_maximum 0: the client may send no alias [MQTT-3.2.2-18]; one that does
    gets DISCONNECT 0x94 (Topic Alias invalid: above the maximum of 0)."""
    env.start(topic_alias_maximum=0)
    pub, ack = env.raw_connect(unique_id("ta0"))
    assert ack.properties.get(P.TOPIC_ALIAS_MAXIMUM, 0) == 0
    pub.send(Publish("ta0/x", b"x", 0, properties=ta(1)))
    assert pub.expect_disconnect().reason_code == 0x94


# -- outbound --------------------------------------------------------------------------------------

def test_outbound_alias_on_the_wire_mqtt_3_1_2_26(env: Env) -> None:
    """A v5 subscriber with Topic Alias Maximum 5 receives three messages on one topic: the
    first sets an alias (topic + alias A, 1 <= A <= 5 [MQTT-3.1.2-26] [MQTT-3.3.2-11]), the second and third
    carry only alias A and an empty topic, so they are smaller on the wire."""
    sub, _ = env.raw_connect(unique_id("taosub"), properties={P.TOPIC_ALIAS_MAXIMUM: 5})
    sub.subscribe5(("tao/#", 1))
    pub, _ = env.raw_connect(unique_id("taopub"))
    topic = "tao/some/fairly/long/topic/name"
    for i in range(3):
        pub.publish5(topic, b"%d" % i, 1)
    first, second, third = sub.publishes(3)
    alias = first.properties.get(P.TOPIC_ALIAS)
    assert first.topic == topic and alias is not None and 1 <= alias <= 5, first
    for p in (second, third):
        assert p.topic == "" and p.properties.get(P.TOPIC_ALIAS) == alias, p
    assert [p.payload for p in (first, second, third)] == [b"0", b"1", b"2"]
    publishes = [f for f in sub.frames if f[0] >> 4 == 3]
    assert len(publishes[1]) < len(publishes[0]) - len(topic) + 1, [f.hex() for f in publishes]


def test_outbound_aliases_stay_resolvable_with_more_topics_than_aliases(env: Env) -> None:
    """Topic Alias Maximum 2 and five topics, each published twice in turns: every alias is
    in 1..2, every empty topic uses an alias set earlier on this connection, and resolving the
    stream gives back exactly the published topics (remapping an alias must resend the
    topic)."""
    sub, _ = env.raw_connect(unique_id("taors"), properties={P.TOPIC_ALIAS_MAXIMUM: 2})
    sub.subscribe5(("taor/#", 1))
    pub, _ = env.raw_connect(unique_id("taorp"))
    sent = [f"taor/t{i % 5}" for i in range(10)] + [f"taor/t{i % 5}" for i in range(10)]
    for i, topic in enumerate(sent):
        pub.publish5(topic, b"%d" % i, 1)
    amap = AliasMap(2)
    got = sub.publishes(len(sent))
    assert [amap.resolve(p) for p in got] == sent
    assert [p.payload for p in got] == [b"%d" % i for i in range(len(sent))]


def test_no_outbound_alias_without_client_maximum_mqtt_3_1_2_27(env: Env) -> None:
    """[MQTT-3.1.2-27] a v5 client whose CONNECT has no Topic Alias Maximum never receives an
    alias."""
    sub, _ = env.raw_connect(unique_id("tanos"))
    sub.subscribe5(("tano/#", 1))
    pub, _ = env.raw_connect(unique_id("tanop"))
    for i in range(3):
        pub.publish5("tano/x", b"%d" % i, 1)
    got = sub.publishes(3)
    assert all(p.topic == "tano/x" and P.TOPIC_ALIAS not in p.properties for p in got), got


def test_no_outbound_alias_with_explicit_zero_maximum(env: Env) -> None:
    """Topic Alias Maximum 0 in CONNECT: no aliases either."""
    sub, _ = env.raw_connect(unique_id("tanz"), properties={P.TOPIC_ALIAS_MAXIMUM: 0})
    sub.subscribe5(("tanz/#", 0))
    pub, _ = env.raw_connect(unique_id("tanzp"))
    for i in range(3):
        pub.publish5("tanz/x", b"%d" % i, 1)
    got = sub.publishes(3)
    assert all(p.topic == "tanz/x" and P.TOPIC_ALIAS not in p.properties for p in got), got


def test_outbound_alias_reset_on_new_connection_mqtt_3_3_2_7(env: Env) -> None:
    """[MQTT-3.3.2-7] the broker must not carry its alias mappings into a new connection: after
    reconnecting to the same session, the first message on a topic carries the topic again."""
    cid = unique_id("taor")
    props = {P.TOPIC_ALIAS_MAXIMUM: 5, P.SESSION_EXPIRY_INTERVAL: 30}
    sub, _ = env.raw_connect(cid, properties=props)
    sub.subscribe5(("tare/#", 1))
    pub, _ = env.raw_connect(unique_id("tarp"))
    pub.publish5("tare/x", b"1", 1)
    pub.publish5("tare/x", b"2", 1)
    assert [p.topic for p in sub.publishes(2)] == ["tare/x", ""]
    sub.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    pub.publish5("tare/x", b"queued", 1)
    again, ack = env.raw_connect(cid, clean_start=False, properties=props)
    assert ack.session_present is True
    pub.publish5("tare/x", b"live", 1)
    amap = AliasMap(5)
    got = again.publishes(2)
    assert got[0].topic == "tare/x", f"first PUBLISH on the new connection: {got[0]!r}"
    assert [amap.resolve(p) for p in got] == ["tare/x", "tare/x"]
    assert [p.payload for p in got] == [b"queued", b"live"]


def test_paho_subscriber_with_alias_maximum(env: Env) -> None:
    """paho-mqtt v5 with Topic Alias Maximum 5 receives three messages on one topic: the broker
    aliases the 2nd and 3rd (paho reports their wire topic as empty: paho 2.2 does not resolve
    server aliases itself), and the alias map kept by the test's paho wrapper resolves them to
    the full topic."""
    sub = env.paho(unique_id("tapa"), properties={"TopicAliasMaximum": 5})
    sub.subscribe(("tapa/#", 1))
    pub = env.paho(unique_id("tapp"))
    for i in range(3):
        pub.publish("tapa/x", b"%d" % i, 1)
    msgs = sub.messages.wait_for(3)
    assert [m.topic for m in msgs] == ["tapa/x"] * 3
    assert [m.payload for m in msgs] == [b"0", b"1", b"2"]
    wire = [m.wire_topic for m in msgs]  # type: ignore[attr-defined]
    assert wire == ["tapa/x", "", ""], wire


def test_aliases_are_per_subscriber(env: Env) -> None:
    """One message fanned out to a subscriber with aliases and one without: each gets its own
    wire form (the alias never leaks to the one that did not ask)."""
    with_alias, _ = env.raw_connect(unique_id("tapw"), properties={P.TOPIC_ALIAS_MAXIMUM: 3})
    without, _ = env.raw_connect(unique_id("tapn"))
    for s in (with_alias, without):
        s.subscribe5(("tap2/#", 1))
    pub, _ = env.raw_connect(unique_id("tapp"))
    for i in range(2):
        pub.publish5("tap2/x", b"%d" % i, 1)
    a = with_alias.publishes(2)
    b = without.publishes(2)
    assert [p.topic for p in a] == ["tap2/x", ""]
    assert [p.topic for p in b] == ["tap2/x", "tap2/x"]
    assert not any(P.TOPIC_ALIAS in p.properties for p in b)


def test_retained_message_does_not_keep_publishers_alias_mqtt_3_3_2_7(env: Env) -> None:
    """A retained message published with a Topic Alias (set, then used with an empty topic) is
    stored under its full topic name, and a later subscriber gets it without the publisher's
    alias: an alias means something only on the connection that set it [MQTT-3.3.2-7]
    [MQTT-3.1.2-27]."""
    pub, _ = env.raw_connect(unique_id("tarr"))
    pub.publish5("tarr/a", b"first", 1, retain=True, properties=ta(4))
    pub.publish5("", b"second", 1, retain=True, properties=ta(4))
    pub.publish5("tarr/b", b"other", 1, retain=True, properties=ta(5))
    sub, _ = env.raw_connect(unique_id("tarrs"))
    sub.subscribe5(("tarr/#", 1))
    msgs = sub.publishes(2)
    assert sorted((p.topic, p.payload) for p in msgs) == [("tarr/a", b"second"),
                                                          ("tarr/b", b"other")]
    assert not any(P.TOPIC_ALIAS in p.properties for p in msgs), msgs
    aliased, _ = env.raw_connect(unique_id("tarra"), properties={P.TOPIC_ALIAS_MAXIMUM: 2})
    aliased.subscribe5(("tarr/#", 1))
    amap = AliasMap(2)
    assert sorted(amap.resolve(p) for p in aliased.publishes(2)) == ["tarr/a", "tarr/b"]


def test_resent_inflight_message_does_not_use_old_alias_mqtt_3_3_2_7(env: Env) -> None:
    """Unacknowledged QoS 1 messages resent on reconnect [MQTT-4.4.0-1] were aliased on the old
    connection; on the new one no alias is known yet [MQTT-3.3.2-7], so the first resent
    PUBLISH must carry the topic name again, and the whole stream must resolve."""
    cid = unique_id("tair")
    props = {P.TOPIC_ALIAS_MAXIMUM: 5, P.SESSION_EXPIRY_INTERVAL: 30}
    sub, _ = env.raw_connect(cid, properties=props)
    sub.subscribe5(("tair/#", 1))
    pub, _ = env.raw_connect(unique_id("tairp"))
    for i in range(3):
        pub.publish5("tair/x", b"%d" % i, 1)
    held = sub.publishes(3, ack=False)
    assert [p.topic for p in held] == ["tair/x", "", ""]
    sub.abort()
    wait_until(lambda: not env.connected(cid), what="the broker to notice the drop")
    again, ack = env.raw_connect(cid, clean_start=False, properties=props)
    assert ack.session_present is True
    resent = again.publishes(3)
    amap = AliasMap(5)
    assert resent[0].topic == "tair/x", f"first resent PUBLISH: {resent[0]!r}"
    assert [amap.resolve(p) for p in resent] == ["tair/x"] * 3
    assert [p.payload for p in resent] == [b"0", b"1", b"2"]
    assert all(p.dup for p in resent)
