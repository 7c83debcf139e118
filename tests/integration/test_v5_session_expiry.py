"""Session Expiry Interval [MQTT 3.1.2.11.2, 3.14.2.2.2, 4.1]: a session outlives its
connection for as long as the client asked (capped by max_session_expiry_interval), clean
start discards it, and DISCONNECT may change the interval.
"""

from __future__ import annotations

import time
from typing import Any

from mqttbroker.protocol.packets import Disconnect

from .helpers import unique_id, wait_until
from .v5helpers import Env, P, RawV5


def sei(seconds: int) -> dict[int, Any]:
    return {P.SESSION_EXPIRY_INTERVAL: seconds}


def subscribe_and_leave(env: Env, cid: str, topic: str, props: dict[int, Any],
                        disconnect_props: dict[int, Any] | None = None) -> None:
    """Connect (clean start 1), subscribe ``topic`` at QoS 1, DISCONNECT; wait until the broker
    has let the connection go."""
    r, _ = env.raw_connect(cid, clean_start=True, properties=props)
    assert r.subscribe5((topic, 1)).return_codes == [1]
    r.disconnect5(0, disconnect_props)
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")


def publish(env: Env, topic: str, *payloads: bytes) -> None:
    pub, _ = env.raw_connect(unique_id("sepub"))
    for p in payloads:
        pub.publish5(topic, p, qos=1)
    pub.disconnect5()


def reconnect(env: Env, cid: str, props: dict[int, Any] | None = None) -> tuple[RawV5, bool]:
    r, ack = env.raw_connect(cid, clean_start=False, properties=props or sei(30))
    return r, ack.session_present


def test_session_expiry_zero_ends_session_at_disconnect_mqtt_3_1_2_23(env: Env) -> None:
    """No Session Expiry Interval (0): the session ends with the connection, even with clean
    start 0 [MQTT 3.1.2.11.2]; reconnecting finds no session and no queued message."""
    cid = unique_id("se0")
    subscribe_and_leave(env, cid, "se0/t", {})
    publish(env, "se0/t", b"lost")
    r, present = reconnect(env, cid)
    assert present is False
    assert r.no_packet(0.3)


def test_session_kept_and_queued_messages_delivered_mqtt_3_1_2_23(env: Env) -> None:
    """[MQTT-3.1.2-23] SEI 5: the session survives the disconnection; QoS 1 messages published
    meanwhile are delivered, in order, on reconnect with Session Present 1 [MQTT-3.2.2-3]."""
    cid = unique_id("se5")
    subscribe_and_leave(env, cid, "se5/t", sei(5))
    publish(env, "se5/t", b"m1", b"m2", b"m3")
    r, present = reconnect(env, cid, sei(5))
    assert present is True
    got = r.publishes(3)
    assert [p.payload for p in got] == [b"m1", b"m2", b"m3"]
    assert all(p.topic == "se5/t" and p.qos == 1 for p in got)


def test_session_expires_after_interval_mqtt_4_1_0_2(env: Env) -> None:
    """[MQTT-4.1.0-2] SEI 1: two seconds after the disconnection the session is gone:
    Session Present 0 and nothing of what was queued is delivered."""
    cid = unique_id("se1")
    subscribe_and_leave(env, cid, "se1/t", sei(1))
    publish(env, "se1/t", b"queued")
    time.sleep(2.0)
    r, present = reconnect(env, cid)
    assert present is False
    assert r.no_packet(0.3)


def test_session_expiry_counts_from_a_dropped_connection(env: Env) -> None:
    """A connection lost without DISCONNECT starts the same expiry (SEI 1)."""
    cid = unique_id("sedr")
    r, _ = env.raw_connect(cid, properties=sei(1))
    r.subscribe5(("sedr/t", 1))
    r.abort()
    wait_until(lambda: not env.connected(cid), what="the broker to notice the dropped socket")
    time.sleep(1.6)
    _, present = reconnect(env, cid)
    assert present is False


def test_clean_start_discards_session_mqtt_3_1_2_4(env: Env) -> None:
    """[MQTT-3.1.2-4] clean start 1 discards the stored session: Session Present 0
    [MQTT-3.2.2-2], no queued message, and the old subscription is gone."""
    cid = unique_id("secs")
    subscribe_and_leave(env, cid, "secs/t", sei(30))
    publish(env, "secs/t", b"queued")
    r, ack = env.raw_connect(cid, clean_start=True, properties=sei(30))
    assert ack.session_present is False
    assert r.no_packet(0.3)
    publish(env, "secs/t", b"after")
    assert r.no_packet(0.3)


def test_disconnect_shortens_session_expiry_mqtt_3_14_2_2_2(env: Env) -> None:
    """CONNECT SEI 30, DISCONNECT SEI 1: the DISCONNECT's interval applies [MQTT 3.14.2.2.2],
    so two seconds later the session is gone."""
    cid = unique_id("sesh")
    subscribe_and_leave(env, cid, "sesh/t", sei(30), disconnect_props=sei(1))
    time.sleep(2.0)
    _, present = reconnect(env, cid)
    assert present is False


def test_disconnect_extends_session_expiry_mqtt_3_14_2_2_2(env: Env) -> None:
    """CONNECT SEI 1, DISCONNECT SEI 30: the session is still there two seconds later, with its
    queued messages."""
    cid = unique_id("seex")
    subscribe_and_leave(env, cid, "seex/t", sei(1), disconnect_props=sei(30))
    publish(env, "seex/t", b"kept")
    time.sleep(2.0)
    r, present = reconnect(env, cid)
    assert present is True
    assert r.next_publish().payload == b"kept"


def test_disconnect_nonzero_expiry_after_zero_is_protocol_error(env: Env) -> None:
    """CONNECT with Session Expiry Interval 0 then DISCONNECT setting it non-zero: "it is a
    Protocol Error to set a non-zero Session Expiry Interval in the DISCONNECT" [MQTT
    3.14.2.2.2]; the server answers DISCONNECT 0x82 without a Session Expiry Interval
    [MQTT-3.14.2-2] and closes; the session does not outlive the connection."""
    cid = unique_id("sepe")
    r, _ = env.raw_connect(cid, clean_start=True)
    r.subscribe5(("sepe/t", 1))
    r.send(Disconnect(0, sei(30)))
    d = r.expect_disconnect()
    assert d.reason_code == 0x82
    assert P.SESSION_EXPIRY_INTERVAL not in d.properties
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    _, present = reconnect(env, cid)
    assert present is False


def test_max_session_expiry_interval_caps_connect(env: Env) -> None:
    """max_session_expiry_interval 1 caps a CONNECT asking for an hour: the CONNACK says 1
    [MQTT 3.2.2.3.2] and the session is gone two seconds after the disconnection."""
    env.start(max_session_expiry_interval=1)
    cid = unique_id("secap")
    r, ack = env.raw_connect(cid, properties=sei(3600))
    assert ack.properties.get(P.SESSION_EXPIRY_INTERVAL) == 1, ack.properties
    r.subscribe5(("secap/t", 1))
    r.disconnect5()
    wait_until(lambda: not env.connected(cid), what="the broker to close the connection")
    time.sleep(2.0)
    _, present = reconnect(env, cid)
    assert present is False


def test_max_session_expiry_interval_caps_disconnect(env: Env) -> None:
    """The cap also bounds a longer interval set by DISCONNECT."""
    env.start(max_session_expiry_interval=1)
    cid = unique_id("secapd")
    subscribe_and_leave(env, cid, "secapd/t", sei(1), disconnect_props=sei(3600))
    time.sleep(2.0)
    _, present = reconnect(env, cid)
    assert present is False


def test_resumed_session_keeps_subscriptions_mqtt_3_1_2_5(env: Env) -> None:
    """[MQTT-3.1.2-5] clean start 0 resumes the session: its subscriptions still deliver."""
    cid = unique_id("sesub")
    subscribe_and_leave(env, cid, "sesub/t", sei(30))
    r, present = reconnect(env, cid)
    assert present is True
    publish(env, "sesub/t", b"live")
    assert r.next_publish().payload == b"live"


def test_assigned_identifier_session_can_be_resumed(env: Env) -> None:
    """An empty client id with Session Expiry 30: the session lives under the Assigned Client
    Identifier, and connecting with that id and clean start 0 resumes it."""
    r, ack = env.raw_connect("", properties=sei(30))
    assigned = ack.properties.get(P.ASSIGNED_CLIENT_IDENTIFIER)
    assert assigned
    r.subscribe5(("seas/t", 1))
    r.disconnect5()
    wait_until(lambda: not env.connected(assigned), what="the broker to close the connection")
    publish(env, "seas/t", b"for-assigned")
    again, present = reconnect(env, assigned)
    assert present is True
    assert again.next_publish().payload == b"for-assigned"
