"""``Plugin.on_deliver`` (mqttbroker/plugins/api.py, docs/plugins.md "Deliveries") against the
real broker over real sockets, with paho-mqtt clients (raw sockets where the bytes on the
wire are the point) and the sample plugins ``Deliverer`` / ``SecondDeliverer`` of
tests/integration/sample_plugins.py:

* each subscriber gets its own form of a message (payload, topic, properties changed per
  receiving client, QoS 0 and 1 alike), and the plugin is called once per subscriber with the
  receiving client as the broker knows it (user name, protocol);
* None keeps a message from that client only; the publisher's QoS 1 / QoS 2 flow completes
  as usual (MQTT 5 and 3.1.1), even when every subscriber was refused it;
* the delivery's QoS and retain flag stay the broker's whatever the plugin returns;
* retained messages sent on SUBSCRIBE go through it (the retained store keeps the original),
  also when an async RECEIVE answer holds them (and live messages) back;
* an offline persistent session (3.1.1 clean session 0, MQTT 5 Session Expiry) is given the
  on_deliver form when the message is queued, and its client gets that form when it comes
  back;
* a raising on_deliver, or one returning an invalid message, is counted
  (``$SYS/broker/plugins/errors``, ``/metrics``) and the message goes on unchanged (a property
  value of the wrong type too: it is caught as the plugin's error, not while encoding);
* two plugins are called in configuration order, each with what the one before returned; a
  None stops the chain;
* a broker whose plugins do not define on_deliver (or whose on_deliver returns the message
  itself) sends the very same PUBLISH bytes as a broker without plugins;
* a shared subscription's unacknowledged QoS 1 message handed to another member when its
  member leaves comes in that member's own form of the message as published.

Every wait is bounded; "never delivered" is shown by a marker message published after it
reaching the same client first (a client's deliveries keep their order).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

from mqttbroker.protocol.packets import Publish
from tests.conftest import BrokerThread, base_config

from . import sample_plugins as sp
from .helpers import Paho, unique_id, wait_until
from .test_http_api import Http
from .test_plugins import counters, plugin, plugin_config, plugin_log, sys_watcher, wait_sys
from .v5helpers import Env, Msg5, P, Paho5

pytestmark = pytest.mark.timeout(30)


def until_marker(c: Any, topic: str = "dl/end") -> list[tuple[str, bytes]]:
    """Everything ``c`` (a paho wrapper) got up to and including the first message on
    ``topic``, as (topic, payload)."""
    msgs = c.messages.wait_until(lambda ms: any(m.topic == topic for m in ms),
                                 what=f"the marker on {topic!r}")
    out: list[tuple[str, bytes]] = []
    for m in msgs:
        out.append((m.topic, m.payload))
        if m.topic == topic:
            break
    return out


# -- 1. per subscriber -----------------------------------------------------------------------------

def test_each_subscriber_gets_its_own_payload(env: Env) -> None:
    """A plugin appending the receiving client's id: two subscribers of the same topic (MQTT
    5 with a user name, 3.1.1 without) each get their own form, at QoS 1 and QoS 0; a topic
    the plugin leaves alone comes as published. The plugin was called once per subscriber per
    message, with the original message and the receiving client (id, user name, protocol)."""
    bt = env.start(plugin_config({"Deliverer": {}}))
    a_id, b_id = unique_id("dla-"), unique_id("dlb-")
    a = env.paho(a_id, username="ann")
    b = env.paho3(b_id)
    assert a.subscribe(("dl/#", 1)) == [1]
    assert b.subscribe(("dl/#", 1)) == [1]
    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/mark/t", b"hello", 1) == 0
    pub.publish("dl/mark/q0", b"zero", 0)
    assert pub.publish("dl/plain", b"as is", 1) == 0
    for c, cid in ((a, a_id), (b, b_id)):
        msgs = c.messages.wait_for(3)
        assert len(msgs) == 3, msgs
        assert {(m.topic, m.payload, m.qos, m.retain) for m in msgs} == {
            ("dl/mark/t", f"hello|A={cid}".encode(), 1, False),
            ("dl/mark/q0", f"zero|A={cid}".encode(), 0, False),
            ("dl/plain", b"as is", 1, False)}
    seen = plugin(bt, sp.Deliverer).seen_on("dl/")
    assert Counter((s[0], s[3]) for s in seen) == {
        (cid, t): 1 for cid in (a_id, b_id) for t in ("dl/mark/t", "dl/mark/q0", "dl/plain")}
    assert (a_id, "ann", 5, "dl/mark/t", b"hello", 1, False) in seen
    assert (b_id, None, 4, "dl/mark/t", b"hello", 1, False) in seen


def test_topic_and_properties_changed_per_subscriber(env: Env) -> None:
    """A plugin moving ``dl/move/x`` to ``dl/move/x/<client id>`` with Content Type
    ``for <client id>``: each MQTT 5 subscriber gets its own topic and content type, the
    publisher's other properties (user property, correlation data) kept."""
    env.start(plugin_config({"Deliverer": {"move": "dl/move/"}}))
    ids = [unique_id("dlm-"), unique_id("dlm-")]
    subs = [env.paho(cid) for cid in ids]
    for s in subs:
        assert s.subscribe(("dl/move/#", 1)) == [1]
    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/move/x", b"moved", 1, properties={
        "ContentType": "text/plain", "UserProperty": [("k", "v")],
        "CorrelationData": b"corr"}) == 0
    for s, cid in zip(subs, ids, strict=True):
        [m] = s.messages.wait_for(1)
        assert (m.topic, m.payload, m.qos) == (f"dl/move/x/{cid}", b"moved", 1)
        assert isinstance(m, Msg5)
        props = m.props
        assert props.get("ContentType") == f"for {cid}", props
        assert props.get("UserProperty") == [("k", "v")], props
        assert props.get("CorrelationData") == b"corr", props


# -- 2. withholding --------------------------------------------------------------------------------

def test_none_withholds_from_one_client_while_another_gets_it(env: Env) -> None:
    """None for one client: it never gets those messages (the marker published after them is
    the first thing it gets), the other subscriber gets each of them; the publishers' QoS 1 and
    QoS 2 flows complete (MQTT 5: PUBACK / PUBCOMP 0x00; 3.1.1: acknowledged).

    (The withheld client subscribes at QoS 1: paho hands a QoS 2 message to the application
    at PUBREL, so only QoS 0/1 deliveries reach it in the order they were sent.)"""
    bt = env.start(plugin_config({"Deliverer": {"withhold": "hold-:dl/hold/"}}))
    held_id, got_id = unique_id("hold-"), unique_id("get-")
    held, got = env.paho(held_id), env.paho(got_id)
    assert held.subscribe(("dl/#", 1)) == [1]
    assert got.subscribe(("dl/#", 2)) == [2]
    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/hold/1", b"one", 1) == 0
    assert pub.publish("dl/hold/2", b"two", 2) == 0
    p3 = env.paho3(unique_id("dlp3-"))
    p3.publish("dl/hold/3", b"three", 1)  # asserts the flow completed
    p3.publish("dl/hold/4", b"four", 2)
    assert pub.publish("dl/end", b"marker", 1) == 0
    assert until_marker(held) == [("dl/end", b"marker")]
    msgs = got.messages.wait_for(5)
    assert len(msgs) == 5, msgs
    assert {(m.topic, m.payload, m.qos) for m in msgs} == {
        ("dl/hold/1", b"one", 1), ("dl/hold/2", b"two", 2), ("dl/hold/3", b"three", 1),
        ("dl/hold/4", b"four", 2), ("dl/end", b"marker", 1)}
    asked = Counter(s[3] for s in plugin(bt, sp.Deliverer).seen_on("dl/") if s[0] == held_id)
    assert asked == {"dl/hold/1": 1, "dl/hold/2": 1, "dl/hold/3": 1, "dl/hold/4": 1,
                     "dl/end": 1}


def test_withheld_from_every_subscriber_the_publisher_is_still_acknowledged(
        env: Env) -> None:
    """The only subscriber is refused the message: an MQTT 5 publisher still gets PUBACK
    0x00 (QoS 1) and PUBREC / PUBCOMP 0x00 (QoS 2), as the subscription matched; a 3.1.1 QoS 2
    flow completes; the subscriber gets only what follows."""
    env.start(plugin_config({"Deliverer": {"withhold": "only-:dl/hold/"}}))
    only = env.paho(unique_id("only-"))
    assert only.subscribe(("dl/#", 1)) == [1]  # QoS 1: received in the order sent
    pub, _ = env.raw_connect(unique_id("dlp-"))
    assert pub.publish5("dl/hold/1", b"x", 1).reason_code == 0  # type: ignore[union-attr]
    assert pub.publish5("dl/hold/2", b"x", 2).reason_code == 0  # type: ignore[union-attr]
    p3 = env.paho3(unique_id("dlp3-"))
    p3.publish("dl/hold/3", b"x", 2)
    assert pub.publish5("dl/end", b"marker", 1).reason_code == 0  # type: ignore[union-attr]
    assert until_marker(only) == [("dl/end", b"marker")]


def test_qos_and_retain_of_the_delivery_stay_the_brokers(env: Env) -> None:
    """A plugin returning the message with QoS and retain flipped (and its payload changed):
    the payload change is delivered, the QoS and retain flag are the broker's: a live QoS 1
    message to a QoS 1 subscriber comes at QoS 1 without RETAIN, at QoS 0 to a QoS 0
    subscriber, and a retained message sent on SUBSCRIBE comes with RETAIN at QoS 1."""
    env.start(plugin_config({"Deliverer": {"flags": "dl/flags/"}}))
    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/flags/r", b"kept", 1, retain=True) == 0x10  # retained; no subscriber yet
    s1, s0 = env.paho(unique_id("dlq1-")), env.paho(unique_id("dlq0-"))
    assert s1.subscribe(("dl/flags/#", 1)) == [1]
    assert s0.subscribe(("dl/flags/#", 0)) == [0]
    for s, qos in ((s1, 1), (s0, 0)):
        [m] = s.messages.wait_for(1)
        assert (m.topic, m.payload, m.qos, m.retain) == ("dl/flags/r", b"kept|flags", qos, True)
    assert pub.publish("dl/flags/live", b"live", 1) == 0
    for s, qos in ((s1, 1), (s0, 0)):
        m = s.messages.wait_topic("dl/flags/live")
        assert (m.payload, m.qos, m.retain) == (b"live|flags", qos, False)


# -- 3. retained messages on SUBSCRIBE -------------------------------------------------------------

def test_retained_messages_on_subscribe_go_through_on_deliver(env: Env) -> None:
    """Retained messages sent for a new subscription are deliveries like any other: each
    subscriber gets its own form (the second does not see the first's mark: the retained
    store keeps the message as published), and a retained message withheld from a client is
    not sent to it (its live marker comes first)."""
    bt = env.start(plugin_config({"Deliverer": {"withhold": "rt2-:dl/mark/secret"}}))
    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/mark/r", b"kept", 1, retain=True) == 0x10  # retained; no subscriber yet
    assert pub.publish("dl/mark/secret", b"hidden", 1, retain=True) == 0x10  # retained; no subscriber yet
    id1, id2 = unique_id("rt1-"), unique_id("rt2-")
    s1 = env.paho(id1)
    assert s1.subscribe(("dl/mark/#", 1)) == [1]
    msgs = s1.messages.wait_for(2)
    assert {(m.topic, m.payload, m.retain) for m in msgs} == {
        ("dl/mark/r", f"kept|A={id1}".encode(), True),
        ("dl/mark/secret", f"hidden|A={id1}".encode(), True)}
    s2 = env.paho3(id2)
    assert s2.subscribe(("dl/mark/#", 1)) == [1]
    m = s2.messages.wait_for(1)[0]
    assert (m.topic, m.payload, m.retain) == ("dl/mark/r", f"kept|A={id2}".encode(), True)
    assert pub.publish("dl/mark/end", b"marker", 1) == 0
    assert until_marker(s2, "dl/mark/end") == [("dl/mark/r", f"kept|A={id2}".encode()),
                                               ("dl/mark/end", f"marker|A={id2}".encode())]
    retained = plugin(bt, sp.Deliverer).seen_on("dl/mark/r")
    assert [(s[0], s[4], s[6]) for s in retained] == [(id1, b"kept", True), (id2, b"kept", True)]


def test_on_deliver_after_an_async_receive_answer(env: Env) -> None:
    """RECEIVE answered by a coroutine after 0.2 s: the retained message sent on SUBSCRIBE
    (held for the answer) and the live messages behind it arrive in their on_deliver form,
    in order; a withheld one never arrives."""
    env.start(plugin_config({
        "TopicAuthorizer": {"slow": "receive", "delay": 0.2},
        "Deliverer": {"withhold": "ar-:dl/mark/no"}}))
    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/mark/x", b"old", 1, retain=True) == 0x10  # retained; no subscriber yet
    sid = unique_id("ar-")
    s = env.paho(sid)
    assert s.subscribe(("dl/mark/#", 1)) == [1]
    assert pub.publish("dl/mark/x", b"live", 1) == 0
    assert pub.publish("dl/mark/no", b"never", 1) == 0
    assert pub.publish("dl/mark/x", b"end", 1) == 0
    msgs = s.messages.wait_until(lambda ms: any(m.payload.startswith(b"end") for m in ms),
                                 what="the last message")
    assert [(m.topic, m.payload, m.retain) for m in msgs] == [
        ("dl/mark/x", f"old|A={sid}".encode(), True),
        ("dl/mark/x", f"live|A={sid}".encode(), False),
        ("dl/mark/x", f"end|A={sid}".encode(), False)]


# -- 4. offline sessions ---------------------------------------------------------------------------

def test_offline_session_gets_the_on_deliver_form_when_it_reconnects(env: Env) -> None:
    """A 3.1.1 client with clean session 0 and an MQTT 5 client with Session Expiry 60 s
    disconnect; messages published meanwhile go through on_deliver as they are queued (the
    plugin is called before the clients return, once), and each client, resuming its
    session, gets its own form; the message withheld from them never comes."""
    bt = env.start(plugin_config({"Deliverer": {"withhold": "off3-:dl/mark/no,off5-:dl/mark/no"}}))
    deliverer = plugin(bt, sp.Deliverer)
    id3, id5 = unique_id("off3-"), unique_id("off5-")
    c3 = env.paho3(id3, clean_session=False)
    assert c3.subscribe(("dl/mark/#", 1)) == [1]
    c3.disconnect()
    expiry = {"SessionExpiryInterval": 60}
    c5 = env.paho(id5, properties=expiry)
    assert c5.subscribe(("dl/mark/#", 1)) == [1]
    c5.disconnect()
    wait_until(lambda: not env.connected(id3) and not env.connected(id5),
               what="both clients gone")
    assert env.has_session(id3) and env.has_session(id5)

    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/mark/off", b"queued", 1) == 0
    assert pub.publish("dl/mark/no", b"never", 1) == 0
    wait_until(lambda: {(s[0], s[3]) for s in deliverer.seen_on("dl/mark/no")}
               >= {(id3, "dl/mark/no"), (id5, "dl/mark/no")}, what="on_deliver while offline")

    r3 = env.paho3(id3, clean_session=False)
    assert r3.session_present is True
    r5 = env.paho(id5, clean_start=False, properties=expiry)
    assert r5.session_present is True
    assert pub.publish("dl/mark/end", b"marker", 1) == 0
    for c, cid in ((r3, id3), (r5, id5)):
        assert until_marker(c, "dl/mark/end") == [
            ("dl/mark/off", f"queued|A={cid}".encode()),
            ("dl/mark/end", f"marker|A={cid}".encode())]
    asked = Counter((s[0], s[3]) for s in deliverer.seen_on("dl/mark/off"))
    assert asked == {(id3, "dl/mark/off"): 1, (id5, "dl/mark/off"): 1}


# -- 5. failures -----------------------------------------------------------------------------------

def test_on_deliver_that_raises_is_counted_and_the_message_goes_unchanged(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """on_deliver raising for both subscribers of a message: each gets it as published,
    plugin_errors counts two ($SYS/broker/plugins/errors 2: once per subscriber), the log
    names the plugin and the hook, and the next message is delivered as usual."""
    caplog.set_level(logging.ERROR, logger="mqttbroker.plugins")
    bt = env.start(plugin_config({"Deliverer": {"fail": "dl/fail/"}}, sys_interval=0.1))
    w = sys_watcher(env)
    subs: list[Paho5 | Paho] = [env.paho(unique_id("dlf-")), env.paho3(unique_id("dlf3-"))]
    for s in subs:
        assert s.subscribe(("dl/#", 1)) == [1]
    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/fail/1", b"same", 1) == 0
    assert pub.publish("dl/mark/after", b"next", 1) == 0
    for s in subs:
        got = until_marker(s, "dl/mark/after")
        assert got[0] == ("dl/fail/1", b"same")
        assert got[1][1].startswith(b"next|A=")
    wait_sys(w, "errors", 2)
    assert counters(bt) == (2, 0)
    assert len(plugin_log(caplog, "Deliverer", "on_deliver")) == 2


def test_on_deliver_returning_a_wildcard_topic_is_ignored_and_counted(env: Env) -> None:
    """on_deliver returning a message whose topic has a wildcard: that result is ignored, the
    message goes out unchanged, and /metrics counts a plugin error."""
    bt = env.start(plugin_config({"Deliverer": {"spoil": "dl/spoil/"}}, http=True))
    s = env.paho(unique_id("dls-"))
    assert s.subscribe(("dl/#", 1)) == [1]
    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/spoil/1", b"intact", 1) == 0
    [m] = s.messages.wait_for(1)
    assert (m.topic, m.payload) == ("dl/spoil/1", b"intact")
    assert Http(bt).metrics().get("mqttbroker_plugin_errors_total") == 1
    assert counters(bt) == (1, 0)


def test_on_deliver_returning_a_property_of_the_wrong_type_is_ignored_and_counted(
        env: Env) -> None:
    """on_deliver returning properties whose value cannot be a PUBLISH property (Content Type
    5, not a string): as for any invalid message, that result should be ignored and counted,
    the message delivered unchanged to every subscriber, the publisher left connected."""
    bt = env.start(plugin_config({"Deliverer": {"bad_props": "dl/badp/"}}))
    subs = [env.paho(unique_id("dlbp-")), env.paho(unique_id("dlbp-"))]
    for s in subs:
        assert s.subscribe(("dl/#", 1)) == [1]
    pub, _ = env.raw_connect(unique_id("dlp-"))
    assert pub.publish5("dl/badp/1", b"intact", 1).reason_code == 0  # type: ignore[union-attr]
    for s in subs:
        [m] = s.messages.wait_for(1)
        assert (m.topic, m.payload) == ("dl/badp/1", b"intact")
    assert counters(bt) == (2, 0)


# -- 6. the chain ----------------------------------------------------------------------------------

def test_two_plugins_are_called_in_configuration_order(env: Env) -> None:
    """Deliverer (tag A) then SecondDeliverer (tag B): ``x|A=<id>|B=<id>``, the second plugin
    handed the first one's result; configured the other way round, ``x|B=<id>|A=<id>``. A
    first plugin that raises leaves the message as it was for the second (``x|B=<id>``); one
    that returns None stops the chain (the second is not called)."""
    first = {"tag": "A", "fail": "dl/fail/", "withhold": "ch-:dl/stop/"}
    second = {"tag": "B", "mark": "dl/mark/,dl/fail/,dl/stop/"}
    bt = env.start(plugin_config({"Deliverer": first, "SecondDeliverer": second}))
    cid = unique_id("ch-")
    s = env.paho(cid)
    assert s.subscribe(("dl/#", 1)) == [1]
    pub = env.paho(unique_id("dlp-"))
    for topic in ("dl/mark/x", "dl/fail/x", "dl/stop/x", "dl/end"):
        assert pub.publish(topic, b"x", 1) == 0
    assert until_marker(s) == [("dl/mark/x", f"x|A={cid}|B={cid}".encode()),
                               ("dl/fail/x", f"x|B={cid}".encode()),
                               ("dl/end", b"x")]
    two = plugin(bt, sp.SecondDeliverer)
    assert [(t, p) for _, _, _, t, p, _, _ in two.seen_on("dl/")] == [
        ("dl/mark/x", f"x|A={cid}".encode()), ("dl/fail/x", b"x"), ("dl/end", b"x")]
    assert [(t, p) for _, _, _, t, p, _, _ in plugin(bt, sp.Deliverer).seen_on("dl/")] == [
        ("dl/mark/x", b"x"), ("dl/fail/x", b"x"), ("dl/stop/x", b"x"), ("dl/end", b"x")]

    env.start(plugin_config({"SecondDeliverer": {"tag": "B"}, "Deliverer": {"tag": "A"}}))
    cid2 = unique_id("ch-")
    s2 = env.paho(cid2)
    assert s2.subscribe(("dl/#", 1)) == [1]
    assert env.paho(unique_id("dlp-")).publish("dl/mark/x", b"x", 1) == 0
    [m] = s2.messages.wait_for(1)
    assert m.payload == f"x|B={cid2}|A={cid2}".encode()


# -- 7. the same bytes without it ------------------------------------------------------------------

V5_PROPS: dict[int, Any] = {P.CONTENT_TYPE: "text/plain", P.PAYLOAD_FORMAT_INDICATOR: 1,
            P.RESPONSE_TOPIC: "dl/reply", P.CORRELATION_DATA: b"\x00\x01",
            P.USER_PROPERTY: [("k", "v"), ("k", "w")]}


def publish_frames(env: Env, config: dict[str, Any]) -> tuple[BrokerThread, list[bytes]]:
    """Start a broker with ``config``; an MQTT 5 and a 3.1.1 raw subscriber of ``dl/#``; an
    MQTT 5 publisher (QoS 0, QoS 1 with properties) and a 3.1.1 one (QoS 0, QoS 1, whose
    PUBLISH body the broker may forward as it came). The PUBLISH packets both subscribers
    received, as bytes on the wire, in order (MQTT 5's first, then 3.1.1's)."""
    bt = env.start(config)
    s5, _ = env.raw_connect(unique_id("by5-"))
    assert s5.subscribe5(("dl/#", 1)).return_codes == [1]
    s3 = env.raw3()
    assert s3.connect(unique_id("by3-")).return_code == 0
    assert s3.subscribe(("dl/#", 1)) == [1]
    s3.frames = []
    assert s5.frames is not None
    s5.frames.clear()
    # each QoS 0 PUBLISH first: the QoS 1 one's PUBACK then says both were handled, in order
    p5, _ = env.raw_connect(unique_id("byp5-"))
    p5.publish5("dl/same/v5q0", b"zero", 0, properties={P.CONTENT_TYPE: "a/b"})
    assert p5.publish5("dl/same/v5", b"\x00payload\xff", 1,
                       properties=V5_PROPS).reason_code == 0  # type: ignore[union-attr]
    p3 = env.raw3()
    assert p3.connect(unique_id("byp3-")).return_code == 0
    p3.publish("dl/same/v3q0", b"three zero", 0)
    p3.publish("dl/same/v3", b"three", 1)
    got: list[bytes] = []
    for s in (s5, s3):
        publishes = [s.expect(Publish) for _ in range(4)]
        for p in publishes:
            if p.qos:
                s.ack(p)
        assert [p.topic for p in publishes] == ["dl/same/v5q0", "dl/same/v5", "dl/same/v3q0",
                                                "dl/same/v3"]
        frames = s.frames
        assert frames is not None
        got += [f for f in frames if f[0] >> 4 == 3]
    return bt, got


def test_without_an_on_deliver_plugin_the_same_bytes_are_sent(env: Env) -> None:
    """The PUBLISH packets subscribers get (MQTT 5 with properties, 3.1.1, QoS 1 and 0) are
    the same bytes from a broker without plugins, from one whose plugin does not define
    on_deliver (EventLog: the broker calls no delivery hook) and from one whose on_deliver
    returns the message itself (Deliverer, for topics it does not change; it was called)."""
    _, reference = publish_frames(env, base_config())
    assert len(reference) == 8
    assert all(b"\x00payload\xff" in f or b"zero" in f or b"three" in f for f in reference)

    bt, frames = publish_frames(env, plugin_config({"EventLog": None}))
    assert bt.broker is not None and bt.broker.plugins.deliver_hooks == []
    assert frames == reference

    bt, frames = publish_frames(env, plugin_config({"Deliverer": {}}))
    assert frames == reference
    assert len(plugin(bt, sp.Deliverer).seen_on("dl/same/")) == 8


# -- 8. shared subscriptions -----------------------------------------------------------------------

def test_shared_message_handed_to_another_member_comes_in_that_members_form(env: Env) -> None:
    """A QoS 1 message sent to a shared subscription's member that leaves without
    acknowledging it goes to another member [MQTT 4.8.2]: that member gets its own on_deliver
    form of the message as published (``m|A=<its id>``), not the leaver's form marked again."""
    bt = env.start(plugin_config({"Deliverer": {}}))
    leaver_id, stayer_id = unique_id("shl-"), unique_id("shs-")
    leaver, _ = env.raw_connect(leaver_id)
    assert leaver.subscribe5(("$share/g/dl/mark/sh", 1)).return_codes == [1]
    pub = env.paho(unique_id("dlp-"))
    assert pub.publish("dl/mark/sh", b"m", 1) == 0
    held = leaver.next_publish(ack=False)
    assert held.payload == f"m|A={leaver_id}".encode()
    stayer = env.paho(stayer_id)
    assert stayer.subscribe(("$share/g/dl/mark/sh", 1)) == [1]
    leaver.abort()
    [m] = stayer.messages.wait_for(1)
    seen = [(s[0], s[4]) for s in plugin(bt, sp.Deliverer).seen_on("dl/mark/sh")]
    assert m.payload == f"m|A={stayer_id}".encode(), seen
