"""Router (who receives a message), RetainedStore (retained messages) and Message.wire (encode
once per wire form) [MQTT 3.3.1.3, 3.3.5, 3.8.4, 4.7]."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttbroker.message import Message
from mqttbroker.protocol.codec import decode, encode_publish
from mqttbroker.protocol.packets import Publish, Subscription
from mqttbroker.protocol.properties import PropertyId
from mqttbroker.protocol.reader import FrameReader
from mqttbroker.protocol.topics import topic_matches
from mqttbroker.retained import RetainedStore
from mqttbroker.router import Router


def route(r: Router, topic: str) -> dict[str, int]:
    """``{client: QoS}`` of the plain deliveries for ``topic`` (everyone available)."""
    direct, _shared = r.route(topic, None, lambda cid: True)
    return {cid: d.qos for cid, d in direct.items()}

SETTINGS = settings(max_examples=200, deadline=None)
NOW = 100.0  # the clock expiry is read on (these messages have no expiry)


# ---- Router --------------------------------------------------------------------------------------

def test_route_no_subscribers() -> None:
    assert route(Router(), "a/b") == {}


def test_route_single_subscription() -> None:
    r = Router()
    assert r.subscribe("c1", Subscription("a/+", 1)) is True
    assert route(r, "a/b") == {"c1": 1}
    assert route(r, "a/b/c") == {}


def test_route_overlapping_subscriptions_one_entry_at_max_qos_mqtt_3_3_5_1() -> None:
    """[MQTT-3.3.5-1] a client whose subscriptions overlap receives the message once, at the
    maximum QoS of all its matching subscriptions."""
    r = Router()
    r.subscribe("c1", Subscription("a/+", 0))
    r.subscribe("c1", Subscription("a/#", 2))
    r.subscribe("c1", Subscription("a/b", 1))
    r.subscribe("c1", Subscription("#", 0))
    r.subscribe("c2", Subscription("+/b", 1))
    r.subscribe("c2", Subscription("a/b", 0))
    r.subscribe("c3", Subscription("x/#", 2))
    assert route(r, "a/b") == {"c1": 2, "c2": 1}
    assert route(r, "a/c") == {"c1": 2}
    assert route(r, "x") == {"c1": 0, "c3": 2}


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]])
def test_route_max_qos_independent_of_subscription_order(order: list[int]) -> None:
    r = Router()
    filters = ["s/#", "s/+", "s/t"]
    for qos in order:
        r.subscribe("c", Subscription(filters[qos], qos))
    assert route(r, "s/t") == {"c": 2}


def test_subscribe_again_replaces_the_subscription_mqtt_3_8_4_3() -> None:
    """[MQTT-3.8.4-3] a SUBSCRIBE with an existing filter replaces it (new QoS applies)."""
    r = Router()
    assert r.subscribe("c", Subscription("a/b", 2)) is True
    assert r.subscribe("c", Subscription("a/b", 0)) is False
    assert r.count == 1
    assert route(r, "a/b") == {"c": 0}


def test_unsubscribe() -> None:
    r = Router()
    r.subscribe("c1", Subscription("a/+", 1))
    r.subscribe("c1", Subscription("a/#", 2))
    r.subscribe("c2", Subscription("a/+", 0))
    assert r.count == 3
    assert r.unsubscribe("c1", "a/#") is True
    assert route(r, "a/b") == {"c1": 1, "c2": 0}
    assert r.unsubscribe("c1", "a/#") is False
    assert r.unsubscribe("c3", "a/+") is False
    assert r.unsubscribe("c1", "a/+") is True
    assert route(r, "a/b") == {"c2": 0}
    assert r.unsubscribe("c2", "a/+") is True
    assert r.count == 0 and route(r, "a/b") == {}


def test_unsubscribe_compares_filters_character_by_character() -> None:
    """[MQTT-3.10.4-1] the filter is compared character by character: no wildcard expansion."""
    r = Router()
    r.subscribe("c", Subscription("a/+", 1))
    assert r.unsubscribe("c", "a/b") is False
    assert r.unsubscribe("c", "a/#") is False
    assert route(r, "a/b") == {"c": 1}


def test_route_dollar_topics_mqtt_4_7_2_1() -> None:
    r = Router()
    r.subscribe("all", Subscription("#", 1))
    r.subscribe("plus", Subscription("+/broker/uptime", 1))
    r.subscribe("sys", Subscription("$SYS/#", 0))
    assert route(r, "$SYS/broker/uptime") == {"sys": 0}
    assert route(r, "x/broker/uptime") == {"all": 1, "plus": 1}


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3"]),
                          st.sampled_from(["a", "a/b", "a/+", "+/b", "#", "a/#", "+", "+/+",
                                           "$s/#", "b/#"]),
                          st.integers(0, 2)), max_size=20),
       st.sampled_from(["a", "a/b", "b", "b/b", "a/b/c", "$s/b", "$s"]))
def test_route_agrees_with_reference(subs: list[tuple[str, str, int]], topic: str) -> None:
    r = Router()
    latest: dict[tuple[str, str], int] = {}
    for cid, f, qos in subs:
        r.subscribe(cid, Subscription(f, qos))
        latest[(cid, f)] = qos
    expected: dict[str, int] = {}
    for (cid, f), qos in latest.items():
        if topic_matches(f, topic):
            expected[cid] = max(expected.get(cid, 0), qos)
    assert route(r, topic) == expected
    assert r.count == len(latest)


# ---- RetainedStore -------------------------------------------------------------------------------

def rmsg(topic: str, payload: bytes = b"x", qos: int = 0) -> Message:
    return Message(topic, payload, qos, retain=True)


def test_retained_store_and_get_mqtt_3_3_1_5() -> None:
    """[MQTT-3.3.1-5] a RETAIN=1 PUBLISH is stored, to be delivered to future subscribers."""
    s = RetainedStore()
    m = rmsg("a/b", b"1")
    s.store(m)
    assert len(s) == 1 and s.get("a/b") is m and s.get("a") is None


def test_retained_replace_mqtt_3_3_1_5() -> None:
    """[MQTT-3.3.1-5] a new retained message replaces any existing one for the topic."""
    s = RetainedStore()
    s.store(rmsg("a/b", b"1"))
    new = rmsg("a/b", b"2", qos=1)
    s.store(new)
    assert len(s) == 1 and s.get("a/b") is new and s.match("a/b", NOW) == [new]


def test_retained_empty_payload_deletes_mqtt_3_3_1_10() -> None:
    """[MQTT-3.3.1-10] a zero-byte retained PUBLISH removes the existing retained message."""
    s = RetainedStore()
    s.store(rmsg("a/b", b"1"))
    s.store(rmsg("a/c", b"2"))
    s.store(rmsg("a/b", b""))
    assert s.get("a/b") is None and len(s) == 1
    assert [m.topic for m in s.match("a/#", NOW)] == ["a/c"]


def test_retained_empty_payload_is_not_stored_mqtt_3_3_1_11() -> None:
    """[MQTT-3.3.1-11] a zero-byte retained message is never stored itself."""
    s = RetainedStore()
    s.store(rmsg("a/b", b""))
    assert len(s) == 0 and s.get("a/b") is None and s.match("#", NOW) == [] and s.all() == []


def test_retained_delete_keeps_parent_and_children() -> None:
    s = RetainedStore()
    for t in ("a", "a/b", "a/b/c"):
        s.store(rmsg(t))
    s.store(rmsg("a/b", b""))
    assert sorted(m.topic for m in s.all()) == ["a", "a/b/c"]
    assert sorted(m.topic for m in s.match("a/#", NOW)) == ["a", "a/b/c"]


def test_retained_match_by_filter() -> None:
    s = RetainedStore()
    for t in ("sport/tennis", "sport/tennis/player1", "sport/golf", "/finance", "finance",
              "$SYS/uptime"):
        s.store(rmsg(t))

    def topics(f: str) -> list[str]:
        return sorted(m.topic for m in s.match(f, NOW))

    assert topics("sport/#") == ["sport/golf", "sport/tennis", "sport/tennis/player1"]
    assert topics("sport/tennis/#") == ["sport/tennis", "sport/tennis/player1"]
    assert topics("sport/+") == ["sport/golf", "sport/tennis"]
    assert topics("+") == ["finance"]
    assert topics("+/+") == ["/finance", "sport/golf", "sport/tennis"]
    assert topics("/+") == ["/finance"]
    assert topics("#") == ["/finance", "finance", "sport/golf", "sport/tennis",
                           "sport/tennis/player1"]  # [MQTT-4.7.2-1] no $SYS
    assert topics("$SYS/#") == ["$SYS/uptime"]
    assert topics("+/uptime") == []
    assert topics("nothing/#") == []


def test_retained_match_oldest_topic_first_as_documented() -> None:
    """RetainedStore.match documents "oldest topic first": a new subscriber receives the
    retained messages of sibling topics in the order those topics were first retained."""
    s = RetainedStore()
    for t in ("a/1", "a/2", "a/3"):
        s.store(rmsg(t))
    assert [m.topic for m in s.match("a/+", NOW)] == ["a/1", "a/2", "a/3"]
    assert [m.topic for m in s.match("#", NOW)] == ["a/1", "a/2", "a/3"]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["a", "a/b", "b", "a/b/c", "/a", "$s/a"]),
                          st.sampled_from([b"", b"1", b"22"])), max_size=30),
       st.sampled_from(["#", "a/#", "+", "+/+", "a/+", "$s/#", "/+", "a/b"]))
def test_retained_store_model(ops: list[tuple[str, bytes]], flt: str) -> None:
    """Against a dict model: last non-empty payload wins, empty deletes."""
    s = RetainedStore()
    model: dict[str, bytes] = {}
    for topic, payload in ops:
        s.store(rmsg(topic, payload))
        if payload:
            model[topic] = payload
        else:
            model.pop(topic, None)
    assert len(s) == len(model)
    assert {m.topic: m.payload for m in s.all()} == model
    got = sorted((m.topic, m.payload) for m in s.match(flt, NOW))
    assert got == sorted((t, p) for t, p in model.items() if topic_matches(flt, t))


# ---- Message.wire --------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [3, 4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("retain", [False, True])
def test_message_wire_matches_encode_publish(level: int, qos: int, retain: bool) -> None:
    props: dict[int, Any] | None = (
        {PropertyId.CONTENT_TYPE: "text/plain"} if level == 5 else None)
    m = Message("a/b", b"payload", 2, False, props)
    head, tail = m.wire(level, qos, retain)
    pid = 0x1234 if qos else None
    expected = encode_publish(Publish("a/b", b"payload", qos, retain, False, pid, props or {}),
                              level)
    wire = head + (pid.to_bytes(2, "big") if pid else b"") + tail
    assert wire == expected
    first, body = FrameReader().feed(wire)[0]
    assert decode(first, body, level) == Publish("a/b", b"payload", qos, retain, False, pid,
                                                 props or {})


def test_message_wire_never_sets_dup() -> None:
    m = Message("t", b"x")
    for qos in (0, 1, 2):
        head, _ = m.wire(4, qos, False)
        assert head[0] & 0x08 == 0


def _same(x: tuple[bytes, bytes], y: tuple[bytes, bytes]) -> bool:
    return x[0] is y[0] and x[1] is y[1]


def test_message_wire_is_cached_per_wire_form() -> None:
    m = Message("t", b"x" * 200)
    a = m.wire(4, 1, False)
    # the same bytes objects: encoded once (the pair's tuple itself is made anew on each
    # return in the mypyc build, `make compiled`, which unboxes fixed-size tuples)
    assert _same(m.wire(4, 1, False), a)
    b = m.wire(4, 1, True)
    c = m.wire(4, 2, False)
    d = m.wire(5, 1, False)
    assert len({id(x[0]) for x in (a, b, c, d)}) == 4
    assert _same(m.wire(4, 1, True), b) and _same(m.wire(5, 1, False), d)
    # MQTT 3.1 and 3.1.1 encode a PUBLISH alike: one form, encoded once for both
    assert _same(m.wire(3, 1, False), a) and _same(m.wire(3, 2, False), c)
    assert a[0][0] == 0x32 and b[0][0] == 0x33 and c[0][0] == 0x34


def test_message_wire_uses_requested_qos_and_retain_not_the_messages() -> None:
    """The delivered QoS is the granted one, and retain is as the subscriber gets it
    [MQTT-3.3.1-9]: wire() takes them as parameters."""
    m = Message("t", b"x", qos=2, retain=True)
    head, tail = m.wire(4, 0, False)
    assert head + tail == bytes.fromhex("30 04 00 01 74 78")


@SETTINGS
@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
               min_size=1, max_size=20),
       st.binary(max_size=400), st.sampled_from([3, 4, 5]), st.integers(0, 2), st.booleans(),
       st.integers(1, 65535))
def test_message_wire_property(topic: str, payload: bytes, level: int, qos: int, retain: bool,
                               pid: int) -> None:
    m = Message(topic, payload)
    head, tail = m.wire(level, qos, retain)
    pkt = Publish(topic, payload, qos, retain, False, pid if qos else None)
    wire = head + (pid.to_bytes(2, "big") if qos else b"") + tail
    assert wire == encode_publish(pkt, level)


def test_preset_wire_is_the_forwarded_form_for_3_1_and_3_1_1() -> None:
    """A 3.1/3.1.1 PUBLISH body reused as the delivery: byte for byte what encoding the
    message gives, for either level, at its own QoS; other forms are encoded as usual."""
    for qos in (0, 1, 2):
        m = Message("a/b", b"payload", qos)
        fresh = Message("a/b", b"payload", qos)
        pid = b"\x12\x34" if qos else b""
        m.preset_wire(b"\x00\x03a/b" + pid + b"payload", qos)
        for level in (3, 4):
            assert _packet(m, level, qos, pid) == _packet(fresh, level, qos, pid)
        assert _packet(m, 4, qos, pid, True) == _packet(fresh, 4, qos, pid, True)
        # (v5: with a properties length)
        assert _packet(m, 5, qos, pid) == _packet(fresh, 5, qos, pid) != _packet(m, 4, qos, pid)


def _packet(m: Message, level: int, qos: int, pid: bytes, retain: bool = False) -> bytes:
    head, tail = m.wire(level, qos, retain)
    return head + pid + tail
