"""Request/response and application properties [MQTT 3.3.2.3, 4.10]: Response Topic,
Correlation Data, User Properties (order kept, duplicates allowed), Payload Format Indicator and
Content Type reach MQTT 5 subscribers unaltered; 3.1.1 subscribers get the same message without
properties; Response Information answers Request Response Information.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mqttbroker.protocol.packets import Publish

from .helpers import unique_id, wait_until
from .v5helpers import Env, P, Paho5

USER_PROPS = [("b", "2"), ("a", "1"), ("a", "1"), ("a", "3"), ("ünï", "çødé"), ("", "")]

PROPS_PAHO: dict[str, Any] = {
    "ResponseTopic": "rr/reply/x",
    "CorrelationData": b"\x00\x01corr\xff",
    "UserProperty": USER_PROPS,
    "PayloadFormatIndicator": 1,
    "ContentType": "application/json; charset=utf-8",
}

PROPS_RAW: dict[int, Any] = {
    P.RESPONSE_TOPIC: "rr/reply/x",
    P.CORRELATION_DATA: b"\x00\x01corr\xff",
    P.USER_PROPERTY: USER_PROPS,
    P.PAYLOAD_FORMAT_INDICATOR: 1,
    P.CONTENT_TYPE: "application/json; charset=utf-8",
}


def assert_app_props(props: dict[int, Any]) -> None:
    """[MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18]
    [MQTT-3.3.2-20]: every application property exactly as published, user properties in
    their order, duplicates kept."""
    for pid, value in PROPS_RAW.items():
        assert props.get(pid) == value, f"{P(pid).name}: {props.get(pid)!r} != {value!r}"


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_application_properties_forwarded_unaltered(env: Env, qos: int) -> None:
    """A v5 publisher's Response Topic, Correlation Data, User Properties, Payload Format
    Indicator and Content Type reach a raw v5 subscriber byte for byte, at every QoS."""
    sub, _ = env.raw_connect(unique_id("rrs"))
    sub.subscribe5(("rr/req/#", 2))
    pub, _ = env.raw_connect(unique_id("rrp"))
    pub.publish5("rr/req/1", b'{"q": 1}', qos, properties=PROPS_RAW)
    p = sub.next_publish()
    assert p.payload == b'{"q": 1}' and p.qos == qos
    assert_app_props(p.properties)


def test_paho_to_paho_properties(env: Env) -> None:
    """The same between two paho-mqtt v5 clients."""
    s = env.paho(unique_id("rrps"))
    s.subscribe(("rr/paho", 1))
    pub = env.paho(unique_id("rrpp"))
    pub.publish("rr/paho", b"{}", 1, properties=PROPS_PAHO)
    m = s.messages.wait_for(1)[0]
    for name, value in PROPS_PAHO.items():
        assert m.props.get(name) == value, (name, m.props)  # type: ignore[attr-defined]


def test_v311_subscriber_gets_message_without_properties(env: Env) -> None:
    """A 3.1.1 subscriber receives the v5 message's topic, payload and QoS (its protocol has no
    properties), next to a v5 subscriber that gets them all."""
    s3 = env.paho3(unique_id("rr3"))
    s3.subscribe(("rr/mixed", 1))
    s5, _ = env.raw_connect(unique_id("rr5"))
    s5.subscribe5(("rr/mixed", 1))
    raw3 = env.raw3()
    raw3.connect(unique_id("rr3raw"))
    raw3.subscribe(("rr/mixed", 1))
    pub, _ = env.raw_connect(unique_id("rrp"))
    pub.publish5("rr/mixed", b"payload", 1, properties=PROPS_RAW)
    m = s3.messages.wait_for(1)[0]
    assert (m.topic, m.payload, m.qos) == ("rr/mixed", b"payload", 1)
    assert_app_props(s5.next_publish().properties)
    p3 = raw3.expect(Publish)  # decoded as a 3.1.1 PUBLISH: no property block on the wire
    assert p3.payload == b"payload" and p3.properties == {}


def test_v311_publisher_to_v5_subscriber(env: Env) -> None:
    """A 3.1.1 publisher's message reaches a v5 subscriber with no application properties."""
    s5 = env.paho(unique_id("rr35"))
    s5.subscribe(("rr/from3", 1))
    pub = env.paho3(unique_id("rr3p"))
    pub.publish("rr/from3", b"old", 1)
    m = s5.messages.wait_for(1)[0]
    assert (m.topic, m.payload, m.qos) == ("rr/from3", b"old", 1)
    props = m.props  # type: ignore[attr-defined]
    for name in PROPS_PAHO:
        assert name not in props, props


def test_properties_kept_on_retained_and_queued_messages(env: Env) -> None:
    """Properties stay with the message when it is retained, or queued for an offline session."""
    cid = unique_id("rrq")
    q, _ = env.raw_connect(cid, properties={P.SESSION_EXPIRY_INTERVAL: 30})
    q.subscribe5(("rr/keep/q", 1))
    q.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    pub, _ = env.raw_connect(unique_id("rrp"))
    pub.publish5("rr/keep/r", b"retained", 1, retain=True, properties=PROPS_RAW)
    pub.publish5("rr/keep/q", b"queued", 1, properties=PROPS_RAW)
    late, _ = env.raw_connect(unique_id("rrl"))
    late.subscribe5(("rr/keep/r", 1))
    r = late.next_publish()
    assert r.retain and r.payload == b"retained"
    assert_app_props(r.properties)
    again, _ = env.raw_connect(cid, clean_start=False, properties={P.SESSION_EXPIRY_INTERVAL: 30})
    m = again.next_publish()
    assert m.payload == b"queued"
    assert_app_props(m.properties)
    pub.publish5("rr/keep/r", b"", 1, retain=True)


def test_request_response_round_trip(env: Env) -> None:
    """A requester publishes with Response Topic and Correlation Data; a responder answers on
    the Response Topic with the same Correlation Data; the requester matches the answer."""
    responder = env.paho(unique_id("rrsvc"))
    responder.subscribe(("rr/svc/echo", 1))
    requester = env.paho(unique_id("rrcli"))
    reply_to = f"rr/reply/{unique_id('r')}"
    requester.subscribe((reply_to, 1))
    stop = threading.Event()

    def serve(svc: Paho5) -> None:
        req = svc.messages.wait_for(1)[0]
        props = req.props  # type: ignore[attr-defined]
        svc.publish(props["ResponseTopic"], b"echo:" + req.payload, 1,
                    properties={"CorrelationData": props["CorrelationData"]})
        stop.set()

    t = threading.Thread(target=serve, args=(responder,), daemon=True)
    t.start()
    requester.publish("rr/svc/echo", b"ping", 1,
                      properties={"ResponseTopic": reply_to, "CorrelationData": b"id-42"})
    answer = requester.messages.wait_for(1)[0]
    t.join(5)
    assert stop.is_set()
    assert answer.topic == reply_to and answer.payload == b"echo:ping"
    assert answer.props.get("CorrelationData") == b"id-42"  # type: ignore[attr-defined]


def test_response_information_mqtt_3_1_2_28(env: Env) -> None:
    """response_information "resp/": a client sending Request Response Information 1 gets
    Response Information "resp/<client id>" in the CONNACK; one sending 0, or nothing, gets
    none [MQTT-3.1.2-28]."""
    env.start(response_information="resp/")
    cid = unique_id("rri")
    _, ack = env.raw_connect(cid, properties={P.REQUEST_RESPONSE_INFORMATION: 1})
    assert ack.properties.get(P.RESPONSE_INFORMATION) == f"resp/{cid}", ack.properties
    _, ack = env.raw_connect(unique_id("rri"), properties={P.REQUEST_RESPONSE_INFORMATION: 0})
    assert P.RESPONSE_INFORMATION not in ack.properties
    _, ack = env.raw_connect(unique_id("rri"))
    assert P.RESPONSE_INFORMATION not in ack.properties


def test_response_information_with_assigned_identifier(env: Env) -> None:
    """With an empty client id the Response Information uses the Assigned Client Identifier."""
    env.start(response_information="resp/")
    _, ack = env.raw_connect("", properties={P.REQUEST_RESPONSE_INFORMATION: 1})
    assigned = ack.properties.get(P.ASSIGNED_CLIENT_IDENTIFIER)
    assert assigned and ack.properties.get(P.RESPONSE_INFORMATION) == f"resp/{assigned}"


def test_no_response_information_when_prefix_empty(env: Env) -> None:
    """response_information "": nothing to return, even when asked."""
    env.start(response_information="")
    _, ack = env.raw_connect(unique_id("rrin"), properties={P.REQUEST_RESPONSE_INFORMATION: 1})
    assert P.RESPONSE_INFORMATION not in ack.properties


def test_paho_reads_response_information(env: Env) -> None:
    """paho-mqtt v5 asking for Response Information reads it from the CONNACK."""
    env.start(response_information="resp/")
    cid = unique_id("rrpa")
    c = env.paho(cid, properties={"RequestResponseInformation": 1})
    assert c.connack_props.get("ResponseInformation") == f"resp/{cid}", c.connack_props
