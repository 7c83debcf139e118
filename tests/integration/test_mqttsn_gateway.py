"""The MQTT-SN gateway (mqttbroker/mqttsn/) over real UDP, with paho on the MQTT side: a
sensor connects, registers and publishes at QoS 0/1/2 and -1, subscribes and gets a command
(REGISTER first, then PUBLISH), and a malformed datagram is dropped without disturbing it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from mqttbroker.protocol.mqttsn import codec
from mqttbroker.protocol.mqttsn import messages as sn
from mqttbroker.protocol.mqttsn.constants import ReturnCode, TopicIdType
from tests.conftest import BrokerThread, base_config

from .helpers import unique_id

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def broker_config() -> dict[str, Any]:
    cfg = base_config()
    cfg["listeners"]["sn"] = {"type": "mqttsn", "bind": "127.0.0.1:0", "qos_minus_one": True,
                              "predefined_topics": {1: "alerts/all"}, "retry_interval": 0.5}
    return cfg


class Sensor:
    """A raw MQTT-SN client: datagrams built with the codec, every wait bounded."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.address = ("127.0.0.1", port)

    def send(self, msg: sn.Message) -> None:
        self.sock.sendto(codec.encode(msg), self.address)

    def recv(self) -> sn.Message:
        return codec.decode(self.sock.recv(2048))

    def close(self) -> None:
        self.sock.close()


class Inbox:
    def __init__(self, port: int, topic_filter: str) -> None:
        self.got: list[mqtt.MQTTMessage] = []
        done = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, unique_id("in-"))
        self.client.on_message = lambda _c, _u, m: self.got.append(m)
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topic_filter, 2)
        assert done.wait(5)

    def wait(self, n: int) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + 5
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sn_port(broker_thread: BrokerThread) -> int:
    return next(p for name, _h, p in broker_thread.broker.addresses if name == "sn")


@pytest.fixture
def inbox(broker_thread: BrokerThread) -> Iterator[Inbox]:
    i = Inbox(broker_thread.port, "#")
    yield i
    i.close()


def test_sensor_publishes_at_every_qos(sn_port: int, inbox: Inbox) -> None:
    s = Sensor(sn_port)
    s.send(sn.Connect("sensor-1", keep_alive=30))
    assert s.recv() == sn.Connack(ReturnCode.ACCEPTED)
    s.send(sn.Register(0, 1, "sensors/t1"))
    regack = s.recv()
    assert isinstance(regack, sn.Regack) and regack.return_code == 0
    s.send(sn.Publish(regack.topic_id, b"q0", qos=0))
    s.send(sn.Publish(regack.topic_id, b"q1", qos=1, msg_id=2))
    assert s.recv() == sn.Puback(regack.topic_id, 2, ReturnCode.ACCEPTED)
    s.send(sn.Publish(regack.topic_id, b"q2", qos=2, msg_id=3))
    assert s.recv() == sn.Pubrec(3)
    s.send(sn.Pubrel(3))
    assert s.recv() == sn.Pubcomp(3)
    s.send(sn.Publish("ab", b"short", qos=0, topic_id_type=TopicIdType.SHORT))
    got = inbox.wait(4)
    # (as a set: paho hands a QoS 2 message over only at PUBREL, so a later QoS 0 one on
    # another topic may overtake it; order holds per topic and QoS [MQTT-4.6.0-6])
    assert sorted((m.topic, m.payload, m.qos) for m in got) == [
        ("ab", b"short", 0), ("sensors/t1", b"q0", 0), ("sensors/t1", b"q1", 1),
        ("sensors/t1", b"q2", 2)]
    s.close()


def test_qos_minus_one_needs_no_connection(sn_port: int, inbox: Inbox) -> None:
    s = Sensor(sn_port)
    s.send(sn.Publish(1, b"beacon", qos=-1, topic_id_type=TopicIdType.PREDEFINED))
    assert [(m.topic, m.payload) for m in inbox.wait(1)] == [("alerts/all", b"beacon")]
    s.close()


def test_command_arrives_after_register_and_bad_datagram_harms_nobody(
        broker_thread: BrokerThread, sn_port: int) -> None:
    s = Sensor(sn_port)
    s.send(sn.Connect("sensor-2", keep_alive=30))
    assert s.recv() == sn.Connack(ReturnCode.ACCEPTED)
    s.send(sn.Subscribe("cmd/#", 1, qos=1))
    assert s.recv() == sn.Suback(0, 1, ReturnCode.ACCEPTED, 1)
    bad = Sensor(sn_port)
    bad.sock.sendto(b"\x05\x0c\x00", bad.address)  # a PUBLISH cut short: dropped
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, unique_id("cmd-"))
    c.connect("127.0.0.1", broker_thread.port)
    c.loop_start()
    c.publish("cmd/open", b"now", 1).wait_for_publish(5)
    reg = s.recv()
    assert isinstance(reg, sn.Register) and reg.topic_name == "cmd/open"
    s.send(sn.Regack(reg.topic_id, reg.msg_id, ReturnCode.ACCEPTED))
    pub = s.recv()
    assert isinstance(pub, sn.Publish)
    assert (pub.topic, pub.data, pub.qos) == (reg.topic_id, b"now", 1)
    s.send(sn.Puback(reg.topic_id, pub.msg_id, ReturnCode.ACCEPTED))
    s.send(sn.Pingreq(None))
    assert s.recv() == sn.Pingresp()
    s.send(sn.Disconnect(None))
    assert s.recv() == sn.Disconnect(None)
    c.loop_stop()
    c.disconnect()
    s.close()
    bad.close()


@pytest.mark.parametrize(("allow", "code"), [(True, ReturnCode.ACCEPTED),
                                             (False, ReturnCode.REJECTED_NOT_SUPPORTED)])
def test_with_a_password_file_the_listener_decides_and_acls_use_the_client_id(
        make_broker_thread: Any, tmp_path: Any, allow: bool, code: ReturnCode) -> None:
    """MQTT-SN carries no credentials: with a password file, an MQTT-SN client is not refused
    for lacking a password; its listener's allow_anonymous decides, and the ACL file's
    ``user <client id>`` rules apply to it."""
    from mqttbroker.passwd import hash_password  # (the file mosquitto_passwd would write)
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{hash_password('alice-pw')}\n")
    acl = tmp_path / "acl"
    acl.write_text("user sensor-7\ntopic write sensors/7/#\n")
    cfg = base_config()
    cfg["auth"] = {"password-file": str(passwd), "acl-file": str(acl)}
    cfg["listeners"]["sn"] = {"type": "mqttsn", "bind": "127.0.0.1:0", "allow_anonymous": allow}
    bt = make_broker_thread(cfg)
    port = next(p for name, _h, p in bt.broker.addresses if name == "sn")
    s = Sensor(port)
    s.send(sn.Connect("sensor-7", keep_alive=30))
    assert s.recv() == sn.Connack(code)
    if allow:
        s.send(sn.Register(0, 1, "sensors/7/t"))
        ok = s.recv()
        s.send(sn.Register(0, 2, "sensors/8/t"))
        other = s.recv()
        assert isinstance(ok, sn.Regack) and isinstance(other, sn.Regack)
        s.send(sn.Publish(ok.topic_id, b"mine", qos=1, msg_id=3))
        assert s.recv() == sn.Puback(ok.topic_id, 3, ReturnCode.ACCEPTED)
        s.send(sn.Publish(other.topic_id, b"not mine", qos=1, msg_id=4))
        assert s.recv() == sn.Puback(other.topic_id, 4, ReturnCode.REJECTED_NOT_SUPPORTED)
    s.close()


def test_client_users_maps_ids_and_patterns_to_acl_users(make_broker_thread: Any,
                                                          tmp_path: Any) -> None:
    """``client_users``: an exact id wins, then the first pattern that matches; an id no key
    matches is its own user name. Each client gets the ACL rules of the user it maps to."""
    acl = tmp_path / "acl"
    acl.write_text("user sensors\ntopic write fleet/#\n"
                   "user boss\ntopic write control/#\n"
                   "user free-1\ntopic write own/#\n")
    cfg = base_config()
    cfg["auth"] = {"acl-file": str(acl)}
    cfg["listeners"]["sn"] = {"type": "mqttsn", "bind": "127.0.0.1:0", "allow_anonymous": True,
                              "client_users": {"sensor-9": "boss", "sensor-*": "sensors",
                                               "sens*": "never-reached"}}
    bt = make_broker_thread(cfg)
    port = next(p for name, _h, p in bt.broker.addresses if name == "sn")
    expect = {"sensor-1": ("fleet/a", "control/a"),  # pattern -> sensors
              "sensor-9": ("control/a", "fleet/a"),  # exact id -> boss
              "free-1": ("own/a", "fleet/a")}  # not in the map: its own id
    for cid, (allowed, refused) in expect.items():
        s = Sensor(port)
        s.send(sn.Connect(cid, keep_alive=30))
        assert s.recv() == sn.Connack(ReturnCode.ACCEPTED)
        ids = []
        for mid, name in ((1, allowed), (2, refused)):
            s.send(sn.Register(0, mid, name))
            ack = s.recv()
            assert isinstance(ack, sn.Regack)
            ids.append(ack.topic_id)
        s.send(sn.Publish(ids[0], b"ok", qos=1, msg_id=3))
        assert s.recv() == sn.Puback(ids[0], 3, ReturnCode.ACCEPTED), cid
        s.send(sn.Publish(ids[1], b"no", qos=1, msg_id=4))
        assert s.recv() == sn.Puback(ids[1], 4, ReturnCode.REJECTED_NOT_SUPPORTED), cid
        s.close()
    users = bt.call(lambda: {cid: c.username for cid, c in bt.broker.connections.items()})
    assert users == {"sensor-1": "sensors", "sensor-9": "boss", "free-1": "free-1"}


def test_clients_behind_a_forwarder_are_told_apart_by_node_and_answered_encapsulated(
        broker_thread: BrokerThread, sn_port: int) -> None:
    """Forwarder encapsulation [MQTT-SN 5.5]: one UDP socket (the forwarder) carries two
    wireless nodes. Each is its own client (keyed by address and node id); every answer goes
    back encapsulated with that node's id; SEARCHGW through the forwarder is answered so
    too; the forwarder's own direct traffic is a third client; an MQTT subscriber sees
    both nodes' messages."""
    bt = broker_thread
    fwd = Sensor(sn_port)
    inbox = Inbox(bt.port, "fwd/#")
    a, b = b"\x00\x01", b"\xfe\xed\x02"

    def ask(node: bytes, msg: sn.Message) -> sn.Message:
        fwd.send(sn.Encapsulated(node, msg))
        got = fwd.recv()
        assert isinstance(got, sn.Encapsulated), f"expected an Encapsulated answer, got {got!r}"
        assert got.node_id == node
        return got.message

    try:
        # an Encapsulated frame that carries no message: dropped (logged, counted), and the
        # forwarder's next frame is answered as usual
        fwd.sock.sendto(b"\x05\xfe\x00\x00\x01", fwd.address)
        assert ask(a, sn.SearchGw(1)) == sn.GwInfo(1)
        assert bt.call(lambda: bt.broker.gateway_stats()[0].malformed) == 1
        assert ask(a, sn.Connect("node-a", keep_alive=30)) == sn.Connack(ReturnCode.ACCEPTED)
        assert ask(b, sn.Connect("node-b", keep_alive=30)) == sn.Connack(ReturnCode.ACCEPTED)
        fwd.send(sn.Connect("direct", keep_alive=30))
        assert fwd.recv() == sn.Connack(ReturnCode.ACCEPTED)  # (not encapsulated)
        assert ask(a, sn.Subscribe("fwd/b", 1, 1)) == sn.Suback(1, 1, ReturnCode.ACCEPTED, 1)
        regack = ask(b, sn.Register(0, 1, "fwd/b"))
        assert isinstance(regack, sn.Regack) and regack.return_code == ReturnCode.ACCEPTED
        fwd.send(sn.Encapsulated(b, sn.Publish(regack.topic_id, b"from b", qos=1, msg_id=2)))
        answers = {}
        for _ in range(2):  # b's PUBACK and the delivery to a, in either order
            got = fwd.recv()
            assert isinstance(got, sn.Encapsulated)
            answers[got.node_id] = got.message
        assert answers[b] == sn.Puback(regack.topic_id, 2, ReturnCode.ACCEPTED)
        delivery = answers[a]
        assert isinstance(delivery, sn.Publish) and delivery.data == b"from b"
        fwd.send(sn.Encapsulated(a, sn.Puback(delivery.topic, delivery.msg_id,
                                              ReturnCode.ACCEPTED)))
        assert [m.payload for m in inbox.wait(1)] == [b"from b"]
        names = bt.call(lambda: sorted(c.session.client_id for gw in bt.broker.gateways
                                       for c in gw.clients.values()))
        assert names == ["direct", "node-a", "node-b"]
    finally:
        inbox.close()
        fwd.close()


def test_gateway_counters_in_metrics_and_sys_with_the_kernels_drops(
        broker_thread: BrokerThread, sn_port: int) -> None:
    """/metrics and $SYS count each MQTT-SN listener's clients, datagrams in and out, the
    malformed ones and those the kernel dropped: with the broker's loop held for a moment,
    a burst overflows the socket's receive buffer, and every datagram sent is either
    received or counted as dropped by the kernel."""
    from mqttbroker.web.prometheus import MetricsPage

    bt = broker_thread
    s = Sensor(sn_port)
    s.send(sn.Connect("counted", keep_alive=30))
    assert s.recv() == sn.Connack(ReturnCode.ACCEPTED)
    s.sock.sendto(b"\x03\x0c\x00", s.address)  # a PUBLISH too short to be one: malformed
    burst = 20_000  # (each takes ~1 KiB of the receive buffer, made small below)

    def small_buffer() -> None:  # (whatever the machine's net.core.rmem_default)
        endpoint = bt.broker.gateways[0].endpoint
        assert endpoint is not None and endpoint.transport is not None
        endpoint.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)

    bt.call(small_buffer)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ping = codec.encode(sn.Pingreq(None))  # (from no client: ignored, not answered)
    held = threading.Event()

    def hold() -> None:
        held.set()
        time.sleep(0.5)  # the loop reads nothing meanwhile

    holder = threading.Thread(target=bt.call, args=(hold,))
    holder.start()
    assert held.wait(5)
    for _ in range(burst):
        flood.sendto(ping, s.address)
    holder.join()
    flood.close()
    total = 2 + burst

    def settled() -> Any:
        st = bt.broker.gateway_stats()[0]
        return st if st.datagrams_received + (st.kernel_drops or 0) >= total else None

    deadline = time.monotonic() + 5
    while (st := bt.call(settled)) is None:
        assert time.monotonic() < deadline, bt.call(lambda: bt.broker.gateway_stats())
        time.sleep(0.05)
    assert st.listener == "sn" and st.clients == 1 and st.sleeping == 0
    assert st.malformed == 1
    assert st.kernel_drops and st.kernel_drops > 0
    assert st.datagrams_received + st.kernel_drops == total
    assert st.datagrams_sent == 1  # (the CONNACK)
    text = bt.call(lambda: MetricsPage(bt.broker).render().decode())
    assert 'mqttbroker_mqttsn_clients{listener="sn"} 1.0' in text
    assert f'mqttbroker_mqttsn_kernel_drops_total{{listener="sn"}} {st.kernel_drops}.0' in text
    assert 'mqttbroker_mqttsn_datagrams_malformed_total{listener="sn"} 1.0' in text
    values = bt.call(lambda: bt.broker.sys_topics.values())
    assert values["$SYS/broker/mqttsn/sn/clients"] == "1"
    assert values["$SYS/broker/mqttsn/sn/datagrams/kernel_drops"] == str(st.kernel_drops)
    s.close()
