"""Reason codes in MQTT 5 acknowledgements [MQTT 3.4.2.1, 3.5.2.1, 3.7.2.1, 3.9.3, 3.11.3]:
PUBACK/PUBREC 0x10 when nobody subscribes, SUBACK granted QoS / 0x8F / 0x97, UNSUBACK 0x00 /
0x11, PUBCOMP 0x92 for an unknown packet identifier.
"""

from __future__ import annotations

from typing import Any

from mqttbroker.protocol.packets import Pingreq, Pingresp, Pubcomp, Publish, Pubrec, Pubrel

from .helpers import unique_id
from .v5helpers import Env, P


def test_puback_no_matching_subscribers_0x10(env: Env) -> None:
    """A QoS 1 PUBLISH nobody subscribes to: PUBACK 0x10 (No matching subscribers); once there
    is a subscriber: 0x00 [MQTT-3.4.2-1]."""
    pub, _ = env.raw_connect(unique_id("acp"))
    ack = pub.publish5("ack/nobody", b"x", 1)
    assert ack is not None and ack.reason_code == 0x10
    s, _ = env.raw_connect(unique_id("acs"))
    s.subscribe5(("ack/nobody", 0))
    ack = pub.publish5("ack/nobody", b"x", 1)
    assert ack is not None and ack.reason_code == 0x00


def test_pubrec_no_matching_subscribers_0x10(env: Env) -> None:
    """The same for QoS 2: PUBREC 0x10 (a success code: PUBREL/PUBCOMP follow)
    [MQTT-3.5.2-1]."""
    pub, _ = env.raw_connect(unique_id("acq2"))
    rec = pub.publish5("ack/nobody2", b"x", 2)
    assert rec is not None and rec.reason_code == 0x10


def test_paho_sees_puback_0x10(env: Env) -> None:
    """paho-mqtt v5's on_publish receives the 0x10 reason code."""
    c = env.paho(unique_id("acpa"))
    assert c.publish("ack/paho/nobody", b"x", 1) == 0x10


def test_retained_with_no_subscriber_is_still_stored(env: Env) -> None:
    """0x10 does not mean dropped: a retained message nobody subscribes to yet is stored."""
    pub, _ = env.raw_connect(unique_id("acr"))
    ack = pub.publish5("ack/ret", b"kept", 1, retain=True)
    assert ack is not None and ack.reason_code in (0x00, 0x10)
    s, _ = env.raw_connect(unique_id("acrs"))
    s.subscribe5(("ack/ret", 1))
    assert s.next_publish().payload == b"kept"
    pub.publish5("ack/ret", b"", 1, retain=True)


def test_suback_codes_mqtt_3_9_3_1(env: Env) -> None:
    """SUBACK has one code per filter, in order [MQTT-3.9.3-1] [MQTT-3.8.4-6]: the granted QoS
    [MQTT-3.8.4-7], or 0x8F (Topic Filter invalid) for a filter that is well formed but refused
    (a bad share name [MQTT-4.8.2-2]; a malformed filter closes the connection instead:
    test_topic_filter_malformed.py)."""
    c, _ = env.raw_connect(unique_id("acsu"))
    codes = c.subscribe5(("ack/a", 2), ("$share/g+/b", 1), ("ack/+", 1), ("$share//c", 0),
                         ("ack/d", 0)).return_codes
    assert codes == [2, 0x8F, 1, 0x8F, 0]


def test_suback_grants_at_most_max_qos(env: Env) -> None:
    """max_qos 1: a request for QoS 2 is granted QoS 1 [MQTT-3.2.2-10]."""
    env.start(max_qos=1)
    c, _ = env.raw_connect(unique_id("acmq"))
    assert c.subscribe5(("ack/mq", 2)).return_codes == [1]


def test_suback_quota_exceeded_0x97(env: Env) -> None:
    """max_subscriptions_per_client 2: a third filter gets 0x97 (Quota exceeded); replacing an
    existing subscription is not a new one and is granted; after an UNSUBSCRIBE there is room
    again."""
    env.start(max_subscriptions_per_client=2)
    c, _ = env.raw_connect(unique_id("acqe"))
    assert c.subscribe5(("q/1", 0), ("q/2", 1), ("q/3", 1)).return_codes == [0, 1, 0x97]
    assert c.subscribe5(("q/4", 0)).return_codes == [0x97]
    assert c.subscribe5(("q/1", 1)).return_codes == [1]
    assert c.unsubscribe5("q/2").reason_codes == [0x00]
    assert c.subscribe5(("q/4", 0)).return_codes == [0]


def test_unsuback_codes_mqtt_3_11_3_1(env: Env) -> None:
    """UNSUBACK: 0x00 for a filter that was subscribed, 0x11 (No subscription existed) for one
    that was not, in the order of the filters [MQTT-3.11.3-1]; a second UNSUBSCRIBE of the same
    filter finds nothing."""
    c, _ = env.raw_connect(unique_id("acun"))
    c.subscribe5(("un/a", 0), ("un/+", 1))
    assert c.unsubscribe5("un/a", "un/never", "un/+").reason_codes == [0x00, 0x11, 0x00]
    assert c.unsubscribe5("un/a").reason_codes == [0x11]


def test_paho_unsuback_codes(env: Env) -> None:
    """paho-mqtt v5 reads the UNSUBACK reason codes."""
    c = env.paho(unique_id("acunp"))
    c.subscribe(("un/p", 1))
    assert c.unsubscribe("un/p", "un/q") == [0x00, 0x11]


def test_pubrel_unknown_packet_id_pubcomp_0x92(env: Env) -> None:
    """PUBREL for a packet id the broker holds no QoS 2 state for: PUBCOMP 0x92 (Packet
    Identifier not found) [MQTT 3.7.2.1]; the connection stays up."""
    c, _ = env.raw_connect(unique_id("acpr"))
    c.send(Pubrel(4242))
    comp = c.expect(Pubcomp)
    assert comp.packet_id == 4242 and comp.reason_code == 0x92
    c.send(Pingreq())
    c.expect(Pingresp)


def test_pubrel_known_packet_id_pubcomp_0x00(env: Env) -> None:
    """PUBREL after PUBREC: PUBCOMP 0x00; a second PUBREL for it is then unknown (0x92)."""
    c, _ = env.raw_connect(unique_id("acpk"))
    c.send(Publish("ack/q2", b"x", 2, False, False, 7))
    assert c.expect(Pubrec).packet_id == 7
    c.send(Pubrel(7))
    comp = c.expect(Pubcomp)
    assert comp.packet_id == 7 and comp.reason_code == 0x00
    c.send(Pubrel(7))
    assert c.expect(Pubcomp).reason_code == 0x92


def test_request_problem_information_0_mqtt_3_1_2_29(env: Env) -> None:
    """[MQTT-3.1.2-29] Request Problem Information 0: no Reason String or User Property on any
    packet but PUBLISH, CONNACK and DISCONNECT, even on failure acknowledgements (SUBACK 0x8F,
    PUBACK 0x10, UNSUBACK 0x11, PUBCOMP 0x92)."""
    env.start(max_subscriptions_per_client=1)
    c, _ = env.raw_connect(unique_id("acrpi"), properties={P.REQUEST_PROBLEM_INFORMATION: 0})
    acks: list[Any] = [c.subscribe5(("ok/1", 0), ("$share/g#/x", 0), ("ok/2", 0))]
    acks.append(c.publish5("nobody/here", b"x", 1))
    acks.append(c.unsubscribe5("never"))
    c.send(Pubrel(999))
    acks.append(c.expect(Pubcomp))
    assert acks[0].return_codes == [0, 0x8F, 0x97]
    for a in acks:
        bad = {P(k).name for k in a.properties} & {"REASON_STRING", "USER_PROPERTY"}
        assert not bad, f"{type(a).__name__} carries {bad} with Request Problem Information 0"
