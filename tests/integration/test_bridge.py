"""Bridges (mqttbroker/bridge/) between two of our brokers over real sockets, with paho clients:
an edge that bridges to a cloud. Out, in and both directions with prefixes, QoS 1 end to end,
the state topic, a two-way bridge on ``#`` that passes each message once (no loop), and a
backlog kept while the cloud is down and sent when it is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import BrokerThread, base_config

from .brokerproc import free_port
from .helpers import unique_id

pytestmark = pytest.mark.timeout(60)

MakeBroker = Callable[[dict[str, Any]], BrokerThread]


def bridged(cloud_port: int, topics: list[dict[str, Any]], *, protocol: str = "mqttv5",
            port: int = 0, **options: Any) -> dict[str, Any]:
    cfg = base_config()
    if port:
        cfg["listeners"]["default"]["bind"] = f"127.0.0.1:{port}"
    cfg["bridges"] = {"cloud": {"addresses": [f"127.0.0.1:{cloud_port}"], "protocol": protocol,
                                "client_id": unique_id("edge-"), "topics": topics,
                                "restart_timeout": [0.2, 0.5], **options}}
    return cfg


class Inbox:
    """A paho subscriber that keeps what it gets."""

    def __init__(self, port: int, topic_filter: str, qos: int = 1) -> None:
        self.got: list[mqtt.MQTTMessage] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, unique_id("in-"))
        self.client.on_message = lambda _c, _u, m: self.got.append(m)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos)
        assert subscribed.wait(10), f"no SUBACK for {topic_filter!r}"

    def wait(self, count: int, timeout: float = 10.0) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.got) >= count, [(m.topic, m.payload) for m in self.got]
        return self.got

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish(port: int, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
    publish_all(port, [(topic, payload)], qos, retain)


def publish_all(port: int, messages: list[tuple[str, bytes]], qos: int = 1,
                retain: bool = False) -> None:
    """Publish ``messages`` in order from one client, each acknowledged."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, unique_id("pub-"))
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for topic, payload in messages:
            c.publish(topic, payload, qos, retain).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


def wait_state(bt: BrokerThread, up: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        links = bt.call(lambda: [link.stats.connected for link in bt.broker.bridges.links])
        if all(links) == up:
            return
        time.sleep(0.05)
    raise AssertionError(f"bridge not {'up' if up else 'down'} within {timeout}s")


@pytest.mark.parametrize("protocol", ["mqttv5", "mqttv311"])
def test_out_with_prefixes_qos1(make_broker_thread: MakeBroker, protocol: str) -> None:
    cloud = make_broker_thread(base_config())
    edge = make_broker_thread(bridged(cloud.port, [
        {"pattern": "sensors/#", "direction": "out", "qos": 1, "local_prefix": "",
         "remote_prefix": "site-7/"}], protocol=protocol, try_private=protocol == "mqttv5"))
    wait_state(edge, True)
    inbox = Inbox(cloud.port, "site-7/#")
    try:
        publish_all(edge.port, [(f"sensors/t/{i}", f"r{i}".encode()) for i in range(20)])
        publish(edge.port, "other/x", b"not bridged")
        got = inbox.wait(20)
        assert [(m.topic, m.payload) for m in got[:20]] == \
            [(f"site-7/sensors/t/{i}", f"r{i}".encode()) for i in range(20)]
        time.sleep(0.3)
        assert len(inbox.got) == 20  # other/x stayed at the edge
    finally:
        inbox.close()


def test_in_with_prefix(make_broker_thread: MakeBroker) -> None:
    cloud = make_broker_thread(base_config())
    edge = make_broker_thread(bridged(cloud.port, [
        {"pattern": "commands/#", "direction": "in", "qos": 1, "remote_prefix": "site-7/"}]))
    wait_state(edge, True)
    time.sleep(0.3)  # the bridge's SUBSCRIBE at the cloud
    inbox = Inbox(edge.port, "commands/#")
    try:
        publish(cloud.port, "site-7/commands/open", b"go")
        publish(cloud.port, "site-8/commands/open", b"not ours")
        [m] = inbox.wait(1)
        assert (m.topic, m.payload) == ("commands/open", b"go")
        time.sleep(0.3)
        assert len(inbox.got) == 1
    finally:
        inbox.close()


def test_state_topic_notifications(make_broker_thread: MakeBroker) -> None:
    """The bridge's state, retained at the edge: 1 while connected, 0 once the cloud is gone.
    (It is sent to the remote too; our broker, like any that keeps $SYS to itself, refuses
    it there: docs/bridges.md.)"""
    cloud = make_broker_thread(base_config())
    edge = make_broker_thread(bridged(cloud.port, [{"pattern": "a/#"}]))
    wait_state(edge, True)
    local = Inbox(edge.port, "$SYS/broker/connection/cloud/state")
    try:
        assert local.wait(1)[-1].payload == b"1"
        cloud.stop()
        wait_state(edge, False)
        assert local.wait(2)[-1].payload == b"0"
    finally:
        local.close()


@pytest.mark.parametrize("protocol", ["mqttv5", "mqttv311"])
def test_two_way_bridge_on_everything_passes_each_message_once(
        make_broker_thread: MakeBroker, protocol: str) -> None:
    """Two brokers bridged both ways on ``#``: a message crosses once and never comes back.
    MQTT 5: No Local at the remote. MQTT 3.1.1 has no No Local: the bridge says it is one
    (try_private, CONNECT level 0x84) and the remote (ours) then sends it nothing it
    published itself. The bridge's own local subscriptions are No Local in both."""
    cloud = make_broker_thread(base_config())
    edge = make_broker_thread(bridged(cloud.port, [{"pattern": "#", "direction": "both",
                                                     "qos": 1}], protocol=protocol,
                                      try_private=True, notifications=False))
    wait_state(edge, True)
    time.sleep(0.3)
    at_cloud = Inbox(cloud.port, "loop/#")
    at_edge = Inbox(edge.port, "loop/#")
    try:
        publish(edge.port, "loop/a", b"from edge")
        publish(cloud.port, "loop/b", b"from cloud")
        at_cloud.wait(2)
        at_edge.wait(2)
        time.sleep(1.0)  # a loop would multiply them by now
        assert sorted(m.payload for m in at_cloud.got) == [b"from cloud", b"from edge"]
        assert sorted(m.payload for m in at_edge.got) == [b"from cloud", b"from edge"]
    finally:
        at_cloud.close()
        at_edge.close()


def test_backlog_waits_for_the_cloud(make_broker_thread: MakeBroker, tmp_path: Any) -> None:
    """Messages published at the edge while the cloud is down wait in the bridge's backlog
    and reach the cloud, in order, once it is up. (The cloud keeps a persistent subscriber
    in SQLite across its restart, so it is subscribed before the bridge can drain.)"""
    cloud_port = free_port()
    cloud_cfg = base_config()
    cloud_cfg["listeners"]["default"]["bind"] = f"127.0.0.1:{cloud_port}"
    cloud_cfg["persistence"] = {"backend": "sqlite", "path": str(tmp_path / "cloud.db")}
    cloud = make_broker_thread(cloud_cfg)
    sub_id = unique_id("keeper-")
    keeper = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, sub_id, clean_session=False)
    keeper.connect("127.0.0.1", cloud_port)
    keeper.loop_start()
    keeper.subscribe("q/#", 1)
    time.sleep(0.3)
    keeper.loop_stop()
    keeper.disconnect()
    cloud.stop()
    edge = make_broker_thread(bridged(cloud_port, [{"pattern": "q/#", "qos": 1}],
                                      notifications=False))
    publish_all(edge.port, [(f"q/{i}", str(i).encode()) for i in range(50)])
    assert edge.call(lambda: len(edge.broker.bridges.links[0].backlog)) == 50
    make_broker_thread(cloud_cfg)  # the cloud is back, its subscriber's session with it
    wait_state(edge, True, timeout=15)
    got: list[mqtt.MQTTMessage] = []
    back = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, sub_id, clean_session=False)
    back.on_message = lambda _c, _u, m: got.append(m)
    back.connect("127.0.0.1", cloud_port)
    back.loop_start()
    try:
        deadline = time.monotonic() + 15
        while len(got) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m.payload for m in got] == [str(i).encode() for i in range(50)]
    finally:
        back.loop_stop()
        back.disconnect()


def test_mosquitto_bridged_into_ours_both_ways(make_broker_thread: MakeBroker,
                                               tmp_path: Any) -> None:
    """Mosquitto as the edge, bridging both ways on ``#`` into our broker (its defaults:
    MQTT 3.1.1, try_private): each message crosses once, in either direction."""
    import subprocess

    from .conftest import MOSQUITTO

    ours = make_broker_thread(base_config())
    port = free_port()
    conf = tmp_path / "edge.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    f"connection ours\naddress 127.0.0.1:{ours.port}\n"
                    f"remote_clientid {unique_id('mosq-edge-')}\n"
                    "topic mx/# both 1\nnotifications false\nrestart_timeout 1\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not ours.call(lambda: any(c.startswith("mosq-edge-")
                                        for c in ours.broker.connections)):
            assert time.monotonic() < deadline, "Mosquitto's bridge did not connect"
            time.sleep(0.05)
        bridge_id = ours.call(lambda: next(c for c in ours.broker.connections
                                           if c.startswith("mosq-edge-")))
        assert ours.call(lambda: ours.broker.connections[bridge_id].bridge)  # try_private
        time.sleep(0.5)  # its SUBSCRIBE at ours
        at_ours = Inbox(ours.port, "mx/#")
        at_mosq = Inbox(port, "mx/#")
        try:
            publish(port, "mx/a", b"from mosquitto")
            publish(ours.port, "mx/b", b"from ours")
            at_ours.wait(2)
            at_mosq.wait(2)
            time.sleep(1.0)
            assert sorted(m.payload for m in at_ours.got) == [b"from mosquitto", b"from ours"]
            assert sorted(m.payload for m in at_mosq.got) == [b"from mosquitto", b"from ours"]
        finally:
            at_ours.close()
            at_mosq.close()
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.parametrize("protocol", ["mqttv311", "mqttv5"])
def test_ours_bridged_to_mosquitto(make_broker_thread: MakeBroker, mosquitto: int,
                                   protocol: str) -> None:
    """Our broker as the edge, Mosquitto as the cloud (3.1.1 with try_private, and 5.0):
    out with a remote prefix at QoS 1 in order, in from Mosquitto, and nothing loops."""
    edge = make_broker_thread(bridged(mosquitto, [
        {"pattern": "up/#", "direction": "out", "qos": 1, "remote_prefix": "edge-1/"},
        {"pattern": "down/#", "direction": "in", "qos": 1, "remote_prefix": "edge-1/"}],
        protocol=protocol, notifications=False))
    wait_state(edge, True)
    time.sleep(0.3)
    at_mosq = Inbox(mosquitto, "edge-1/#")
    at_edge = Inbox(edge.port, "down/#")
    try:
        publish_all(edge.port, [(f"up/{i}", str(i).encode()) for i in range(10)])
        publish(mosquitto, "edge-1/down/cmd", b"do")
        got = at_mosq.wait(11)  # the 10 from the edge and the command itself
        [cmd] = at_edge.wait(1)
        assert [(m.topic, m.payload) for m in got if m.topic.startswith("edge-1/up/")] == \
            [(f"edge-1/up/{i}", str(i).encode()) for i in range(10)]
        assert (cmd.topic, cmd.payload) == ("down/cmd", b"do")
        time.sleep(0.5)
        assert len(at_edge.got) == 1
    finally:
        at_mosq.close()
        at_edge.close()
