"""Will messages in MQTT 5 [MQTT 3.1.2.5, 3.1.3.2]: the Will Delay Interval, the session's end,
DISCONNECT with reason 0x04 (send the will) or 0x00 (discard it), and will properties.
"""

from __future__ import annotations

import time

from mqttbroker.protocol.packets import Will

from .helpers import unique_id, wait_until
from .v5helpers import Env, P, Paho5, RawV5, no_message


def watcher(env: Env, topic: str) -> Paho5:
    w = env.paho(unique_id("wdw"))
    w.subscribe((topic, 1))
    return w


def will_client(env: Env, cid: str, topic: str, delay: int, sei: int,
                clean_start: bool = True) -> RawV5:
    """A raw v5 client with a will on ``topic`` (Will Delay ``delay``, Session Expiry ``sei``)."""
    r, _ = env.raw_connect(cid, clean_start=clean_start,
                             properties={P.SESSION_EXPIRY_INTERVAL: sei} if sei else {},
                             will=Will(topic, b"gone:" + cid.encode(), 1, False,
                                       {P.WILL_DELAY_INTERVAL: delay} if delay else {}))
    return r


def test_reconnect_within_will_delay_cancels_will_mqtt_3_1_3_9(env: Env) -> None:
    """[MQTT-3.1.3-9] Will Delay 2 s, Session Expiry 10 s: the client drops (no DISCONNECT) and
    is back on its session within a second: the will is never sent (watched for 3 s)."""
    topic = "wd/back"
    w = watcher(env, topic)
    cid = unique_id("wdb")
    r = will_client(env, cid, topic, delay=2, sei=10)
    r.abort()
    wait_until(lambda: not env.connected(cid), what="the broker to notice the drop")
    time.sleep(0.3)
    _, ack = env.raw_connect(cid, clean_start=False, properties={P.SESSION_EXPIRY_INTERVAL: 10})
    assert ack.session_present is True
    assert no_message(w.messages, 3.0), f"will sent though the client came back: {w.messages}"


def test_will_sent_after_delay_mqtt_3_1_2_8(env: Env) -> None:
    """Will Delay 2 s, Session Expiry 10 s, the client drops and does not come back: the will
    is published about 2 s later (not before 1.5 s)."""
    topic = "wd/late"
    w = watcher(env, topic)
    cid = unique_id("wdl")
    r = will_client(env, cid, topic, delay=2, sei=10)
    r.abort()
    t0 = time.monotonic()
    m = w.messages.wait_for(1, timeout=5)[0]
    elapsed = time.monotonic() - t0
    assert m.payload == b"gone:" + cid.encode()
    assert 1.5 <= elapsed <= 3.2, f"will after {elapsed:.2f}s, expected about 2s"


def test_will_sent_at_session_end_before_delay(env: Env) -> None:
    """Will Delay 10 s but Session Expiry 1 s: the will goes out when the session ends, after
    about 1 s ("whichever happens first", MQTT 5.0 3.1.3.2.2)."""
    topic = "wd/sess"
    w = watcher(env, topic)
    cid = unique_id("wds")
    r = will_client(env, cid, topic, delay=10, sei=1)
    r.abort()
    t0 = time.monotonic()
    w.messages.wait_for(1, timeout=4)
    elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed <= 2.5, f"will after {elapsed:.2f}s, expected about 1s"


def test_will_sent_at_once_with_zero_session_expiry(env: Env) -> None:
    """Will Delay 5 s with Session Expiry 0: the session ends with the connection, so does the
    wait: the will is published at once."""
    topic = "wd/zero"
    w = watcher(env, topic)
    r = will_client(env, unique_id("wdz"), topic, delay=5, sei=0)
    r.abort()
    t0 = time.monotonic()
    w.messages.wait_for(1, timeout=3)
    assert time.monotonic() - t0 < 1.0


def test_clean_start_reconnect_ends_session_and_sends_will(env: Env) -> None:
    """Will Delay 10 s, Session Expiry 10 s: the client comes back with clean start 1, which
    ends the old session [MQTT-3.1.2-4]; the will is sent then (the session ended first)."""
    topic = "wd/clean"
    w = watcher(env, topic)
    cid = unique_id("wdc")
    r = will_client(env, cid, topic, delay=10, sei=10)
    r.abort()
    wait_until(lambda: not env.connected(cid), what="the broker to notice the drop")
    env.raw_connect(cid, clean_start=True)
    w.messages.wait_for(1, timeout=2)


def test_disconnect_with_will_0x04_sends_will_mqtt_3_14_4_3(env: Env) -> None:
    """DISCONNECT with reason 0x04 (Disconnect with Will Message): the will is published, at
    once when it has no delay."""
    topic = "wd/d04"
    w = watcher(env, topic)
    cid = unique_id("wd4")
    r = will_client(env, cid, topic, delay=0, sei=0)
    r.disconnect5(0x04)
    t0 = time.monotonic()
    m = w.messages.wait_for(1, timeout=3)[0]
    assert m.payload == b"gone:" + cid.encode()
    assert time.monotonic() - t0 < 1.0


def test_normal_disconnect_discards_will_mqtt_3_14_4_3(env: Env) -> None:
    """[MQTT-3.14.4-3] DISCONNECT 0x00: the will is discarded, never published."""
    topic = "wd/d00"
    w = watcher(env, topic)
    r = will_client(env, unique_id("wd0"), topic, delay=0, sei=0)
    r.disconnect5(0x00)
    assert no_message(w.messages, 1.0)


def test_normal_disconnect_discards_delayed_will(env: Env) -> None:
    """DISCONNECT 0x00 with a delayed will and a session that outlives the connection: the will
    is discarded, not just postponed (nothing after the delay either)."""
    topic = "wd/d00d"
    w = watcher(env, topic)
    r = will_client(env, unique_id("wd0d"), topic, delay=1, sei=1)
    r.disconnect5(0x00)
    assert no_message(w.messages, 2.0)


def test_will_properties_carried_mqtt_3_1_3_10(env: Env) -> None:
    """Will properties (Content Type, Response Topic, Correlation Data, Payload Format
    Indicator, User Properties in order [MQTT-3.1.3-10]) are on the published will; the Will
    Delay Interval is not (it is not a PUBLISH property)."""
    topic = "wd/props"
    w = watcher(env, topic)
    user = [("z", "1"), ("a", "2"), ("z", "3")]
    c = env.paho(unique_id("wdp"), will=(topic, b"{\"state\": \"offline\"}", 1, False),
                 will_props={"ContentType": "application/json", "ResponseTopic": "wd/reply",
                             "CorrelationData": b"\x01\x02", "PayloadFormatIndicator": 1,
                             "UserProperty": user})
    c.drop()
    m = w.messages.wait_for(1, timeout=3)[0]
    props = m.props  # type: ignore[attr-defined]
    assert m.payload == b"{\"state\": \"offline\"}"
    assert props.get("ContentType") == "application/json", props
    assert props.get("ResponseTopic") == "wd/reply", props
    assert props.get("CorrelationData") == b"\x01\x02", props
    assert props.get("PayloadFormatIndicator") == 1, props
    assert props.get("UserProperty") == user, props
    assert "WillDelayInterval" not in props


def test_will_message_expiry_carried(env: Env) -> None:
    """A will with Message Expiry Interval 60 is published with (about) that interval."""
    topic = "wd/mei"
    w = env.paho(unique_id("wdmw"))
    w.subscribe((topic, 1))
    cid = unique_id("wdm")
    r, _ = env.raw_connect(cid, will=Will(topic, b"bye", 1, False,
                                          {P.MESSAGE_EXPIRY_INTERVAL: 60}))
    r.abort()
    m = w.messages.wait_for(1, timeout=3)[0]
    assert 58 <= m.props.get("MessageExpiryInterval", -1) <= 60, m.props  # type: ignore


def test_takeover_publishes_will_without_delay(env: Env) -> None:
    """A connection taken over by a new one with the same client id (clean start 1): the old
    connection's will (no delay) is published [MQTT-3.1.4-3]."""
    topic = "wd/take"
    w = watcher(env, topic)
    cid = unique_id("wdt")
    will_client(env, cid, topic, delay=0, sei=0)
    env.raw_connect(cid)
    w.messages.wait_for(1, timeout=3)


def test_takeover_resuming_session_within_will_delay_sends_no_will(env: Env) -> None:
    """Will Delay 1 s, Session Expiry 10 s, and a new connection takes the client id over with
    clean start 0 while the old one is still open: the old connection gets DISCONNECT 0x8E,
    but a new connection to the session arrived within the delay, so no will [MQTT-3.1.3-9]."""
    topic = "wd/tk"
    w = watcher(env, topic)
    cid = unique_id("wdtk")
    old = will_client(env, cid, topic, delay=1, sei=10)
    _, ack = env.raw_connect(cid, clean_start=False, properties={P.SESSION_EXPIRY_INTERVAL: 10})
    assert ack.session_present is True
    assert old.expect_disconnect().reason_code == 0x8E
    assert no_message(w.messages, 1.6)


def test_delayed_wills_of_many_clients_go_in_deadline_order_on_one_timer(env: Env) -> None:
    """Three clients drop one after another with Will Delays 3, 1 and 2 s: each will goes out
    at its own time, so in the order 1, 2, 3 s, though the earlier deadlines were set after
    the later one (the broker keeps deadlines, not a timer per session: one timer, armed for
    the earliest, moved when an earlier one arrives)."""
    topic = "wd/order"
    w = watcher(env, topic)
    clients: dict[int, str] = {}
    dropped: dict[int, float] = {}
    for delay in (3, 1, 2):
        cid = unique_id(f"wdo{delay}")
        clients[delay] = cid
        will_client(env, cid, topic, delay=delay, sei=30).abort()
        dropped[delay] = time.monotonic()
        wait_until(lambda cid=cid: not env.connected(cid), what="the broker to notice the drop")
    broker = env.bt.broker
    assert broker is not None
    # a will and a session expiry per client, all on the broker's one deadline timer
    wait_until(lambda: len(broker._deadlines) == 6, what="six deadlines")
    for n, delay in enumerate((1, 2, 3), start=1):
        got = w.messages.wait_for(n, timeout=8)
        elapsed = time.monotonic() - dropped[delay]
        assert got[-1].payload == b"gone:" + clients[delay].encode(), [m.payload for m in got]
        assert elapsed >= delay - 0.5, f"will {delay} after {elapsed:.2f}s"
