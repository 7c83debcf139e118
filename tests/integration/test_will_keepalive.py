"""Will messages [MQTT 3.1.2.5-3.1.2.7] and keep-alive [MQTT 3.1.2.10], over real sockets.

A raw socket plays the client whose connection fails (it can stay silent or reset the
connection at will); paho clients watch for the will.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mqttbroker.protocol.packets import Connect, Pingreq, Pingresp, Publish, Will
from tests.conftest import BrokerThread

from .helpers import (
    V31,
    V311,
    Clients,
    connected_ids,
    levels,
    payloads,
    protocols,
    unique_id,
    wait_until,
)


@pytest.fixture
def clients(broker_thread: BrokerThread) -> Iterator[Clients]:
    with Clients(broker_thread.port) as c:
        yield c


def paho_protocol(level: int) -> int:
    return V31 if level == 3 else V311


# -- will published ------------------------------------------------------------------------------

@levels
@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_published_on_connection_drop_mqtt_3_1_2_8(
        clients: Clients, level: int, will_qos: int) -> None:
    """The connection ends without DISCONNECT: the will is published [MQTT-3.1.2-8] at its
    Will QoS [MQTT 3.1.2.6]; subscribers already there get RETAIN=0."""
    watcher = clients.paho(unique_id("w"), paho_protocol(level))
    watcher.subscribe(("will/#", 2))
    raw, _ = clients.raw_connect(unique_id("dying"), level,
                                 will=Will("will/drop", b"gone", will_qos, False))
    raw.abort()
    msgs = watcher.messages.wait_for(1)
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [
        ("will/drop", b"gone", will_qos, False)]


@levels
def test_will_retain_1_is_retained_mqtt_3_1_2_17(clients: Clients, level: int) -> None:
    """Will Retain 1: the will is published as a retained message [MQTT-3.1.2-17]; a later
    subscriber gets it with RETAIN=1, a current one with RETAIN=0 [MQTT-3.3.1-9]."""
    watcher = clients.paho(unique_id("w"), paho_protocol(level))
    watcher.subscribe(("will/#", 2))
    raw, _ = clients.raw_connect(unique_id("dying"), level,
                                 will=Will("will/kept", b"last words", 1, True))
    raw.close()  # an orderly TCP close, still without DISCONNECT
    msgs = watcher.messages.wait_for(1)
    assert [(m.payload, m.qos, m.retain) for m in msgs] == [(b"last words", 1, False)]
    late = clients.paho(unique_id("late"), paho_protocol(level))
    late.subscribe(("will/kept", 2))
    msgs = late.messages.wait_for(1)
    assert [(m.payload, m.qos, m.retain) for m in msgs] == [(b"last words", 1, True)]


@levels
def test_will_retain_0_is_not_retained_mqtt_3_1_2_16(clients: Clients, level: int) -> None:
    """Will Retain 0: the will is published as a non-retained message [MQTT-3.1.2-16]."""
    watcher = clients.paho(unique_id("w"), paho_protocol(level))
    watcher.subscribe(("will/#", 2))
    raw, _ = clients.raw_connect(unique_id("dying"), level,
                                 will=Will("will/transient", b"bye", 1, False))
    raw.abort()
    watcher.messages.wait_for(1)
    late = clients.paho(unique_id("late"), paho_protocol(level))
    late.subscribe(("will/transient", 2), ("will/sentinel", 2))
    watcher.messages.clear()
    pub = clients.paho(unique_id("pub"), paho_protocol(level))
    pub.publish("will/sentinel", b"s", 1)
    msgs = late.messages.wait_for(1)
    assert payloads(msgs) == [b"s"]


@levels
def test_will_published_on_protocol_error_close_mqtt_3_1_2_8(
        clients: Clients, broker_thread: BrokerThread, level: int) -> None:
    """A second CONNECT is a protocol violation [MQTT-3.1.0-2]: the Server closes the
    connection, and since the client did not DISCONNECT, the will is published."""
    watcher = clients.paho(unique_id("w"), paho_protocol(level))
    watcher.subscribe(("ewill/#", 1))
    cid = unique_id("rude")
    raw, _ = clients.raw_connect(cid, level, will=Will("ewill/t", b"broke the rules", 1, False))
    raw.send(Connect("MQIsdp" if level == 3 else "MQTT", level, cid))
    raw.wait_closed()
    msgs = watcher.messages.wait_for(1)
    assert [(m.topic, m.payload) for m in msgs] == [("ewill/t", b"broke the rules")]


def test_no_will_for_refused_connect_mqtt_3_2_2_5(clients: Clients) -> None:
    """A CONNECT refused with a non-zero CONNACK never became a session: its will is not
    published when the Server closes the connection."""
    watcher = clients.paho(unique_id("w"))
    watcher.subscribe(("rwill/#", 1))
    raw, _ack = clients.raw_connect("", 4, clean=False, expect=0x02,
                                   will=Will("rwill/t", b"never connected", 1, True))
    raw.wait_closed()
    pub = clients.paho(unique_id("pub"))
    pub.publish("rwill/sentinel", b"s", 1)
    assert payloads(watcher.messages.wait_for(1)) == [b"s"]


@protocols
def test_paho_will_published_when_socket_dropped_mqtt_3_1_2_8(
        clients: Clients, protocol: int) -> None:
    """paho's will_set, then its socket is shut down without DISCONNECT: the will arrives."""
    watcher = clients.paho(unique_id("w"), protocol)
    watcher.subscribe(("pwill/#", 2))
    dying = clients.paho(unique_id("dying"), protocol, will=("pwill/t", b"paho gone", 2, False))
    dying.drop()
    msgs = watcher.messages.wait_for(1)
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("pwill/t", b"paho gone", 2)]


@protocols
def test_no_will_after_disconnect_mqtt_3_1_2_10(
        clients: Clients, broker_thread: BrokerThread, protocol: int) -> None:
    """DISCONNECT discards the will [MQTT-3.1.2-10] [MQTT-3.14.4-3]: it is neither published
    nor retained."""
    watcher = clients.paho(unique_id("w"), protocol)
    watcher.subscribe(("nwill/#", 2))
    cid = unique_id("polite")
    polite = clients.paho(cid, protocol, will=("nwill/t", b"should not", 1, True))
    polite.disconnect()
    wait_until(lambda: cid not in connected_ids(broker_thread), what="the broker to drop it")
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("nwill/sentinel", b"s", 1)
    msgs = watcher.messages.wait_for(1)
    assert payloads(msgs) == [b"s"]
    late = clients.paho(unique_id("late"), protocol)
    late.subscribe(("nwill/t", 1), ("nwill/sentinel", 1))
    pub.publish("nwill/sentinel", b"s2", 1)
    assert payloads(late.messages.wait_for(1)) == [b"s2"]


@levels
def test_will_published_on_keepalive_timeout_mqtt_3_1_2_24(
        clients: Clients, broker_thread: BrokerThread, level: int) -> None:
    """Keep-alive 1 s and silence: the Server disconnects after one and a half keep-alive
    periods [MQTT-3.1.2-24] (not before the period is over) and publishes the will."""
    watcher = clients.paho(unique_id("w"), paho_protocol(level))
    watcher.subscribe(("kwill/#", 1))
    cid = unique_id("silent")
    raw, _ = clients.raw_connect(cid, level, keep_alive=1,
                                 will=Will("kwill/t", b"timed out", 1, False))
    t0 = time.monotonic()
    raw.wait_closed(timeout=4.0)
    elapsed = time.monotonic() - t0
    assert 1.3 <= elapsed <= 2.5, f"disconnected after {elapsed:.2f}s, expected ~1.5s"
    msgs = watcher.messages.wait_for(1, timeout=2.0)
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("kwill/t", b"timed out", 1)]
    assert cid not in connected_ids(broker_thread)


@levels
def test_will_published_on_takeover_mqtt_3_1_4_2(
        clients: Clients, broker_thread: BrokerThread, level: int) -> None:
    """A second connection with the same ClientId closes the first [MQTT-3.1.4-2]; the first
    did not DISCONNECT, so its will is published. The new connection works."""
    watcher = clients.paho(unique_id("w"), paho_protocol(level))
    watcher.subscribe(("twill/#", 1))
    cid = unique_id("twin")
    first, _ = clients.raw_connect(cid, level, will=Will("twill/t", b"taken over", 1, False))
    second, _ = clients.raw_connect(cid, level)
    first.wait_closed()
    msgs = watcher.messages.wait_for(1)
    assert [(m.topic, m.payload) for m in msgs] == [("twill/t", b"taken over")]
    second.ping()
    assert cid in connected_ids(broker_thread)


# -- keep-alive ------------------------------------------------------------------------------------

@levels
def test_pingreq_gets_pingresp_mqtt_3_12_4_1(clients: Clients, level: int) -> None:
    """The Server answers every PINGREQ with a PINGRESP [MQTT-3.12.4-1]."""
    raw, _ = clients.raw_connect(unique_id("ping"), level)
    for _ in range(3):
        raw.send(Pingreq())
        raw.expect(Pingresp)


@levels
def test_active_client_stays_connected_for_three_keepalive_periods_mqtt_3_1_2_23(
        clients: Clients, broker_thread: BrokerThread, level: int) -> None:
    """Keep-alive 1 s; the client sends a control packet (PINGREQ or PUBLISH) every 0.5 s
    [MQTT-3.1.2-23]: it is still connected after 3 s, and every PINGREQ was answered."""
    cid = unique_id("alive")
    raw, _ = clients.raw_connect(cid, level, keep_alive=1)
    deadline = time.monotonic() + 3.0
    i = 0
    while time.monotonic() < deadline:
        if i % 2 == 0:
            raw.ping(timeout=1.0)
        else:
            raw.send(Publish("ka/t", b"still here"))  # any control packet counts
        i += 1
        time.sleep(0.5)
    raw.ping(timeout=1.0)
    assert cid in connected_ids(broker_thread)

