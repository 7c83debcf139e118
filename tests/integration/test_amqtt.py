"""amqtt (3.1.1) against the broker, alone and together with paho-mqtt (3.1 and 3.1.1).

The amqtt-only tests use the hbmqtt-style ``broker`` fixture (the broker runs in the test's
event loop). The mixed tests use ``broker_thread`` (the broker on its own loop), since paho is a
blocking client; paho waits that could stall amqtt's loop are kept to already-queued work, and
waits for paho messages from async code poll with ``Collector.await_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2  # type: ignore[import-untyped]

from mqttbroker.broker import Broker
from tests.conftest import BrokerThread, base_config

from .helpers import (
    TIMEOUT,
    Clients,
    amqtt_client,
    amqtt_receive,
    payloads,
    protocols,
    unique_id,
)


@pytest.fixture
def clients(broker_thread: BrokerThread) -> Iterator[Clients]:
    with Clients(broker_thread.port) as c:
        yield c


# -- amqtt <-> paho ------------------------------------------------------------------------------

@protocols
@pytest.mark.parametrize("qos", [QOS_0, QOS_1, QOS_2])
async def test_amqtt_publishes_paho_receives(broker_thread: BrokerThread, clients: Clients,
                                             protocol: int, qos: int) -> None:
    """amqtt publishes at QoS n; a paho QoS 2 subscriber receives it once at QoS n."""
    sub = clients.paho(unique_id("psub"), protocol)
    sub.subscribe(("x/amqtt", 2))
    async with amqtt_client(broker_thread.port) as pub:
        await asyncio.wait_for(pub.publish("x/amqtt", b"from amqtt %d" % qos, qos=qos), TIMEOUT)
        msgs = await sub.messages.await_for(1)
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [
        ("x/amqtt", b"from amqtt %d" % qos, qos, False)]


@protocols
@pytest.mark.parametrize("qos", [QOS_0, QOS_1, QOS_2])
async def test_paho_publishes_amqtt_receives(broker_thread: BrokerThread, clients: Clients,
                                             protocol: int, qos: int) -> None:
    """paho publishes at QoS n; an amqtt QoS 2 subscriber receives it once at QoS n."""
    async with amqtt_client(broker_thread.port) as sub:
        assert await asyncio.wait_for(sub.subscribe([("x/paho", QOS_2)]), TIMEOUT) == [2]
        pub = clients.paho(unique_id("ppub"), protocol)
        pub.publish("x/paho", b"from paho %d" % qos, qos)
        msgs = await amqtt_receive(sub, 1)
        assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [
            ("x/paho", b"from paho %d" % qos, qos, False)]
        # and exactly once: a sentinel behind it is the next message
        pub.publish("x/paho", b"sentinel", 0)
        assert payloads(await amqtt_receive(sub, 1)) == [b"sentinel"]


async def test_paho_publishes_200_qos1_amqtt_receives_in_order_mqtt_4_6_0_5(
        broker_thread: BrokerThread, clients: Clients) -> None:
    """Per-publisher order holds towards an amqtt subscriber too [MQTT-4.6.0-5]."""
    n = 200
    async with amqtt_client(broker_thread.port) as sub:
        await asyncio.wait_for(sub.subscribe([("ord/amqtt", QOS_1)]), TIMEOUT)
        pub = clients.paho(unique_id("ppub"))
        for i in range(n):
            pub.publish("ord/amqtt", b"%d" % i, 1, wait=False)
        msgs = await amqtt_receive(sub, n, timeout=20)
    assert [int(m.payload) for m in msgs] == list(range(n))


async def test_amqtt_persistent_session_gets_queued_messages_from_paho_mqtt_3_1_2_5(
        broker_thread: BrokerThread, clients: Clients) -> None:
    """An amqtt client with CleanSession=0 disconnects; QoS 1/2 messages paho publishes while
    it is away are delivered when it comes back [MQTT-3.1.2-5]."""
    cid = unique_id("amqttp")
    async with amqtt_client(broker_thread.port, cid, clean=False) as sub:
        await asyncio.wait_for(sub.subscribe([("away/t", QOS_2)]), TIMEOUT)
    pub = clients.paho(unique_id("ppub"))
    pub.publish("away/t", b"q1", 1)
    pub.publish("away/t", b"q2", 2)
    async with amqtt_client(broker_thread.port, cid, clean=False) as sub:
        msgs = await amqtt_receive(sub, 2)
    assert [(m.payload, m.qos) for m in msgs] == [(b"q1", 1), (b"q2", 2)]


async def test_amqtt_retained_seen_by_paho_with_retain_1_mqtt_3_3_1_8(
        broker_thread: BrokerThread, clients: Clients) -> None:
    """A message amqtt retains reaches a later paho subscription with RETAIN=1."""
    async with amqtt_client(broker_thread.port) as pub:
        await asyncio.wait_for(pub.publish("ar/t", b"kept", qos=QOS_1, retain=True), TIMEOUT)
    sub = clients.paho(unique_id("psub"))
    sub.subscribe(("ar/#", 2))
    msgs = sub.messages.wait_for(1)
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [("ar/t", b"kept", 1, True)]


# -- amqtt alone (broker in the test's loop) ----------------------------------------------------

@pytest.mark.parametrize("pub_qos", [QOS_0, QOS_1, QOS_2])
@pytest.mark.parametrize("sub_qos", [QOS_0, QOS_1, QOS_2])
async def test_amqtt_to_amqtt_delivered_at_min_qos_mqtt_3_8_4_6(
        broker: Broker, pub_qos: int, sub_qos: int) -> None:
    """amqtt to amqtt: SUBACK grants what was asked, delivery is at min(publish, granted)."""
    async with amqtt_client(broker.port) as sub, amqtt_client(broker.port) as pub:
        assert await asyncio.wait_for(sub.subscribe([("aa/t", sub_qos)]), TIMEOUT) == [sub_qos]
        await asyncio.wait_for(pub.publish("aa/t", b"m", qos=pub_qos), TIMEOUT)
        msgs = await amqtt_receive(sub, 1)
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("aa/t", b"m", min(pub_qos, sub_qos))]


@pytest.mark.parametrize("broker_config", [base_config(max_qos=1)])
async def test_amqtt_granted_qos_capped_by_max_qos(broker: Broker) -> None:
    """max_qos 1: SUBACK grants min(requested, 1), a QoS 2 publication arrives at QoS 1."""
    async with amqtt_client(broker.port) as sub, amqtt_client(broker.port) as pub:
        granted = await asyncio.wait_for(
            sub.subscribe([("cap/a", QOS_2), ("cap/b", QOS_0)]), TIMEOUT)
        assert granted == [1, 0]
        await asyncio.wait_for(pub.publish("cap/a", b"m", qos=QOS_2), TIMEOUT)
        msgs = await amqtt_receive(sub, 1)
    assert [(m.payload, m.qos) for m in msgs] == [(b"m", 1)]


async def test_amqtt_overlapping_subscriptions_one_copy_mqtt_3_3_5_1(broker: Broker) -> None:
    """Overlapping `o/#`, `o/+`, `o/b`: one copy at the highest granted QoS."""
    async with amqtt_client(broker.port) as sub, amqtt_client(broker.port) as pub:
        await asyncio.wait_for(sub.subscribe([("o/#", QOS_0), ("o/+", QOS_2), ("o/b", QOS_1)]),
                               TIMEOUT)
        await asyncio.wait_for(pub.publish("o/b", b"once", qos=QOS_2), TIMEOUT)
        await asyncio.wait_for(pub.publish("o/x/y", b"sentinel", qos=QOS_0), TIMEOUT)
        msgs = await amqtt_receive(sub, 2)
    # (amqtt hands a QoS 2 message over at PUBREL: it may come after the QoS 0 sentinel)
    assert sorted((m.topic, m.payload, m.qos) for m in msgs) == [("o/b", b"once", 2),
                                                                 ("o/x/y", b"sentinel", 0)]


async def test_amqtt_unsubscribe_stops_delivery_mqtt_3_10_4_2(broker: Broker) -> None:
    """After UNSUBACK nothing more arrives on the removed filter."""
    async with amqtt_client(broker.port) as sub, amqtt_client(broker.port) as pub:
        await asyncio.wait_for(sub.subscribe([("u/a", QOS_1), ("u/s", QOS_1)]), TIMEOUT)
        await asyncio.wait_for(pub.publish("u/a", b"before", qos=QOS_1), TIMEOUT)
        assert payloads(await amqtt_receive(sub, 1)) == [b"before"]
        await asyncio.wait_for(sub.unsubscribe(["u/a"]), TIMEOUT)
        await asyncio.wait_for(pub.publish("u/a", b"after", qos=QOS_1), TIMEOUT)
        await asyncio.wait_for(pub.publish("u/s", b"sentinel", qos=QOS_1), TIMEOUT)
        assert payloads(await amqtt_receive(sub, 1)) == [b"sentinel"]


async def test_amqtt_retained_on_subscribe_and_forwarded_mqtt_3_3_1_8_and_9(
        broker: Broker) -> None:
    """Retained: RETAIN=1 when sent because of a new subscription, RETAIN=0 when forwarded to
    an existing one."""
    async with amqtt_client(broker.port) as pub:
        await asyncio.wait_for(pub.publish("rr/t", b"old", qos=QOS_1, retain=True), TIMEOUT)
        async with amqtt_client(broker.port) as sub:
            await asyncio.wait_for(sub.subscribe([("rr/t", QOS_1)]), TIMEOUT)
            first = await amqtt_receive(sub, 1)
            assert [(m.payload, m.retain) for m in first] == [(b"old", True)]
            await asyncio.wait_for(pub.publish("rr/t", b"new", qos=QOS_1, retain=True), TIMEOUT)
            second = await amqtt_receive(sub, 1)
            assert [(m.payload, m.retain) for m in second] == [(b"new", False)]


async def test_amqtt_will_published_when_its_connection_drops_mqtt_3_1_2_8(
        broker: Broker) -> None:
    """amqtt connects with a will (its ``will`` config: QoS 1, retained); its socket is then
    aborted, so no DISCONNECT is sent: the broker publishes the will [MQTT-3.1.2-8] and keeps
    it as retained [MQTT-3.1.2-17]. A clean DISCONNECT from another amqtt client with a will
    discards that will [MQTT-3.1.2-10]."""
    from amqtt.client import MQTTClient  # type: ignore[import-untyped]

    def with_will(cid: str) -> MQTTClient:
        return MQTTClient(client_id=cid, config={
            "auto_reconnect": False, "keep_alive": 60,
            "will": {"topic": f"will/{cid}", "message": "gone", "qos": QOS_1, "retain": True}})

    dropped, clean = unique_id("amqttw"), unique_id("amqttc")
    async with amqtt_client(broker.port) as watcher:
        await asyncio.wait_for(watcher.subscribe([("will/#", QOS_1)]), TIMEOUT)
        polite = with_will(clean)
        await asyncio.wait_for(polite.connect(f"mqtt://127.0.0.1:{broker.port}/"), TIMEOUT)
        await asyncio.wait_for(polite.disconnect(), TIMEOUT)
        client = with_will(dropped)
        await asyncio.wait_for(client.connect(f"mqtt://127.0.0.1:{broker.port}/"), TIMEOUT)
        client._handler.writer._writer.transport.abort()  # the socket drops: no DISCONNECT
        got = await amqtt_receive(watcher, 1)
        assert [(m.topic, m.payload, m.qos) for m in got] == [(f"will/{dropped}", b"gone", 1)]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), TIMEOUT)
    async with amqtt_client(broker.port) as later:
        await asyncio.wait_for(later.subscribe([("will/#", QOS_1)]), TIMEOUT)
        kept = await amqtt_receive(later, 1)
        assert [(m.topic, m.payload, m.retain) for m in kept] == [
            (f"will/{dropped}", b"gone", True)]
