"""MQTT 5.0 CONNACK [MQTT 3.2]: reason code, Session Present and the properties that tell a
client what this server allows (receive maximum, topic aliases, retain, wildcards, subscription
identifiers, shared subscriptions, packet size, QoS, keep-alive, session expiry, assigned id).
"""

from __future__ import annotations

import pytest

from mqttbroker.protocol.packets import Pingreq, Pingresp

from .helpers import unique_id, wait_until
from .v5helpers import MAX_PROTOCOL_PACKET, Env, P

#: properties a CONNACK carries only when a setting or the CONNECT calls for them
CONDITIONAL = (P.MAXIMUM_PACKET_SIZE, P.MAXIMUM_QOS, P.ASSIGNED_CLIENT_IDENTIFIER,
               P.SERVER_KEEP_ALIVE, P.SESSION_EXPIRY_INTERVAL, P.RESPONSE_INFORMATION,
               P.AUTHENTICATION_METHOD, P.AUTHENTICATION_DATA)


def test_connack_success_with_default_capabilities_mqtt_3_2_2_3(env: Env) -> None:
    """[MQTT-3.1.4-5] CONNACK 0x00; [MQTT-3.2.2-2] clean start 1 -> Session Present 0; the
    default config advertises Receive Maximum 100 and Topic Alias Maximum 10; retain, wildcard,
    subscription-identifier and shared subscriptions are available, which a CONNACK says by
    leaving those properties out (absent means 1 [MQTT 3.2.2.3.5/11-13]), so that it fits a
    small Maximum Packet Size [MQTT-3.1.2-24]."""
    _, ack = env.raw_connect(unique_id("cadef"))
    assert ack.return_code == 0x00
    assert ack.session_present is False
    p = ack.properties
    assert p.get(P.RECEIVE_MAXIMUM) == 100, p
    assert p.get(P.TOPIC_ALIAS_MAXIMUM) == 10, p
    defaults = [P(k).name for k in (P.RETAIN_AVAILABLE, P.WILDCARD_SUBSCRIPTION_AVAILABLE,
                                    P.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                                    P.SHARED_SUBSCRIPTION_AVAILABLE) if k in p]
    assert defaults == [], f"CONNACK repeats the defaults {defaults}: {p}"
    present = [P(k).name for k in CONDITIONAL if k in p]
    assert present == [], f"CONNACK carries {present} although nothing asked for them: {p}"


def test_connack_advertises_configured_limits_mqtt_3_2_2_3(env: Env) -> None:
    """receive_maximum / topic_alias_maximum / max_packet_size / retain_available are what
    the CONNACK says; Maximum Packet Size appears only below the protocol maximum."""
    env.start(receive_maximum=7, topic_alias_maximum=3, max_packet_size=4096,
              retain_available=False)
    _, ack = env.raw_connect(unique_id("calim"))
    p = ack.properties
    assert p.get(P.RECEIVE_MAXIMUM) == 7, p
    assert p.get(P.TOPIC_ALIAS_MAXIMUM) == 3, p
    assert p.get(P.MAXIMUM_PACKET_SIZE) == 4096, p
    assert p.get(P.RETAIN_AVAILABLE) == 0, p


def test_connack_no_maximum_packet_size_at_protocol_max(env: Env) -> None:
    """max_packet_size at the protocol maximum (268435460) is no limit: nothing to advertise
    [MQTT 3.2.2.3.6: absent means no limit beyond the protocol's]."""
    env.start(max_packet_size=MAX_PROTOCOL_PACKET)
    _, ack = env.raw_connect(unique_id("camps"))
    assert P.MAXIMUM_PACKET_SIZE not in ack.properties, ack.properties


def test_connack_topic_alias_maximum_zero_is_not_advertised_as_nonzero(env: Env) -> None:
    """topic_alias_maximum 0: the CONNACK either leaves Topic Alias Maximum out or says 0
    [MQTT-3.2.2-18] (absent = the client may send no aliases)."""
    env.start(topic_alias_maximum=0)
    _, ack = env.raw_connect(unique_id("catam0"))
    assert ack.properties.get(P.TOPIC_ALIAS_MAXIMUM, 0) == 0, ack.properties


@pytest.mark.parametrize("max_qos", [0, 1])
def test_connack_maximum_qos_when_below_2_mqtt_3_2_2_9(env: Env, max_qos: int) -> None:
    """[MQTT-3.2.2-9] a server that does not support QoS 1 or 2 sends Maximum QoS."""
    env.start(max_qos=max_qos)
    _, ack = env.raw_connect(unique_id("camq"))
    assert ack.properties.get(P.MAXIMUM_QOS) == max_qos, ack.properties


def test_connack_no_maximum_qos_at_2(env: Env) -> None:
    """Maximum QoS 2 is never sent (a value of 2 is a protocol error; absent means 2)."""
    env.start(max_qos=2)
    _, ack = env.raw_connect(unique_id("camq2"))
    assert P.MAXIMUM_QOS not in ack.properties


def test_subscribe_qos2_accepted_when_max_qos_1_mqtt_3_2_2_10(env: Env) -> None:
    """[MQTT-3.2.2-10] a server without QoS 2 still accepts SUBSCRIBE asking for QoS 2; it
    grants what it supports."""
    env.start(max_qos=1)
    r, _ = env.raw_connect(unique_id("camq1s"))
    assert r.subscribe5(("camq/x", 2), ("camq/y", 0)).return_codes == [1, 0]


def test_connack_assigned_client_identifier_mqtt_3_2_2_16(env: Env) -> None:
    """[MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16] an empty client id gets a unique
    Assigned Client Identifier, and the connection is known by it."""
    _, a1 = env.raw_connect("")
    _, a2 = env.raw_connect("")
    id1 = a1.properties.get(P.ASSIGNED_CLIENT_IDENTIFIER)
    id2 = a2.properties.get(P.ASSIGNED_CLIENT_IDENTIFIER)
    assert isinstance(id1, str) and id1, a1.properties
    assert isinstance(id2, str) and id2, a2.properties
    assert id1 != id2
    assert env.connected(id1) and env.connected(id2)


def test_connack_no_assigned_identifier_for_given_id(env: Env) -> None:
    """A client that sent an id is not assigned one."""
    _, ack = env.raw_connect(unique_id("caid"))
    assert P.ASSIGNED_CLIENT_IDENTIFIER not in ack.properties


def test_paho_sees_assigned_client_identifier(env: Env) -> None:
    """paho-mqtt v5 connecting with an empty id reads the Assigned Client Identifier."""
    c = env.paho("")
    assigned = c.connack_props.get("AssignedClientIdentifier")
    assert assigned, c.connack_props
    assert env.connected(assigned)


@pytest.mark.parametrize("client_ka,expected", [(120, 60), (0, 60), (60, None), (30, None)],
                         ids=["longer", "zero", "equal", "shorter"])
def test_connack_server_keep_alive_mqtt_3_2_2_21(env: Env, client_ka: int,
                                                 expected: int | None) -> None:
    """max_keepalive 60: a v5 client asking for more (or for none) is accepted with Server
    Keep Alive 60 [MQTT-3.2.2-21]; one asking for 60 or less gets no Server Keep Alive
    [MQTT-3.2.2-22]."""
    env.start(max_keepalive=60)
    _, ack = env.raw_connect(unique_id("caka"), keep_alive=client_ka)
    assert ack.return_code == 0
    assert ack.properties.get(P.SERVER_KEEP_ALIVE) == expected, ack.properties


def test_server_keep_alive_is_enforced_mqtt_3_2_2_21(env: Env) -> None:
    """The broker uses the Server Keep Alive it sent (1 s), not the client's 60 s: silence
    past 1.5 s is a keep-alive timeout (DISCONNECT 0x8D) [MQTT-3.1.2-22]."""
    env.start(max_keepalive=1)
    r, ack = env.raw_connect(unique_id("cakae"), keep_alive=60)
    assert ack.properties.get(P.SERVER_KEEP_ALIVE) == 1, ack.properties
    assert r.expect_disconnect(timeout=4.0).reason_code == 0x8D


def test_connack_session_expiry_capped_mqtt_3_2_2_3_2(env: Env) -> None:
    """max_session_expiry_interval 10: a client asking for 100 s (or for never, 0xFFFFFFFF)
    is told 10 s in the CONNACK; one asking for 5 s is not told anything."""
    env.start(max_session_expiry_interval=10)
    _, ack = env.raw_connect(unique_id("casei"),
                             properties={P.SESSION_EXPIRY_INTERVAL: 100})
    assert ack.properties.get(P.SESSION_EXPIRY_INTERVAL) == 10, ack.properties
    _, ack = env.raw_connect(unique_id("casei"),
                             properties={P.SESSION_EXPIRY_INTERVAL: 0xFFFFFFFF})
    assert ack.properties.get(P.SESSION_EXPIRY_INTERVAL) == 10, ack.properties
    _, ack = env.raw_connect(unique_id("casei"), properties={P.SESSION_EXPIRY_INTERVAL: 5})
    assert ack.properties.get(P.SESSION_EXPIRY_INTERVAL, 5) == 5, ack.properties


def test_connack_no_session_expiry_without_cap(env: Env) -> None:
    """No cap (max_session_expiry_interval 0): the client's value stands, nothing is sent."""
    _, ack = env.raw_connect(unique_id("casen"),
                             properties={P.SESSION_EXPIRY_INTERVAL: 100000})
    assert ack.properties.get(P.SESSION_EXPIRY_INTERVAL, 100000) == 100000, ack.properties


def test_connack_is_well_formed_for_paho(env: Env) -> None:
    """paho-mqtt's own v5 decoder accepts the CONNACK and sees the same capabilities."""
    c = env.paho(unique_id("capaho"))
    props = c.connack_props
    assert c.connack_code == 0 and c.session_present is False
    assert props.get("ReceiveMaximum") == 100, props
    assert props.get("TopicAliasMaximum") == 10, props
    # absent: available (3.2.2.3.13); a paho client reads it so
    assert props.get("SharedSubscriptionAvailable", 1) == 1, props


def test_v5_session_present_for_resumed_session_mqtt_3_2_2_3(env: Env) -> None:
    """[MQTT-3.2.2-3] clean start 0 with a stored session: Session Present 1; without one: 0
    [MQTT-3.1.2-6]."""
    cid = unique_id("casp")
    r, ack = env.raw_connect(cid, clean_start=False,
                             properties={P.SESSION_EXPIRY_INTERVAL: 30})
    assert ack.session_present is False
    r.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to notice the DISCONNECT")
    r2, ack2 = env.raw_connect(cid, clean_start=False,
                               properties={P.SESSION_EXPIRY_INTERVAL: 30})
    assert ack2.session_present is True
    r2.send(Pingreq())
    r2.expect(Pingresp)
