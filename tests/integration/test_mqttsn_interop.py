"""The MQTT-SN gateway (docs/mqttsn.md) over real UDP, driven by an independent MQTT-SN
client (the PyPI package ``mqtt-sn-12``, module ``mqttsn12``) and by raw datagrams, with
paho-mqtt clients on the MQTT side. Issue 17, points 2-4.

This module: the shared helpers (:class:`SnRaw`, :class:`LibClient`, :func:`sn_config`), the
``mqtt-sn-12`` client publishing, subscribing, sleeping and leaving wills, and raw-datagram
checks of every QoS both ways, retained messages both ways, pre-defined and short topic ids
both ways, and SUBSCRIBE/UNSUBSCRIBE by name, id and short name with wildcards.
tests/integration/test_mqttsn_sessions.py has wills, sleep, retransmission, exactly-once,
persistent sessions and takeover; tests/integration/test_mqttsn_operations.py malformed
datagrams, ACLs and observability.

About ``mqtt-sn-12`` (1.0.9), read in its source: usable on Python 3.11 for CONNECT (with
the will exchange), REGISTER, PUBLISH at QoS -1/0/1/2 (normal, short and pre-defined ids),
SUBSCRIBE/UNSUBSCRIBE, WILLTOPICUPD/WILLMSGUPD, DISCONNECT with or without a sleep duration,
and receiving QoS 0 deliveries (``polling``, which answers the gateway's REGISTER). Its
defects, worked around here:

* ``receive_packet(True)`` calls ``settimeout(timeout)`` then ``setblocking(True)``, which
  clears the timeout: every blocking wait is unbounded. :class:`LibClient` overrides that
  one method to keep the timeout (the rest of the client is unchanged).
* ``polling`` compares the delivery's QoS (0-3) with ``FLAG_QOS_1`` (0x20), so it never
  sends PUBACK for a QoS 1 delivery, and it has no PUBREC for QoS 2: QoS 1/2 deliveries to
  an MQTT-SN client are tested with raw datagrams.
* ``PingReqPacket.set_client_id`` stores bytes that ``encode`` then calls ``.encode`` on: it
  cannot send the PINGREQ with a client id that wakes a sleeping client; the test sends that
  one raw datagram from the library client's own socket.

Every wait is bounded; every socket is on 127.0.0.1 with a port chosen by the system (the
broker's ``addresses``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from mqttsn12.client.MqttSnClient import MqttSnClient, MqttSnListener, MqttSnMessage
from mqttsn12.MqttSnConstants import MqttSnConstants

from mqttbroker.protocol.mqttsn import codec
from mqttbroker.protocol.mqttsn import messages as sn
from mqttbroker.protocol.mqttsn.constants import ReturnCode, TopicIdType
from mqttbroker.protocol.mqttsn.topics import short_topic_value
from tests.conftest import BrokerThread, base_config

from .helpers import HOST, TIMEOUT, Clients, Msg, Paho, connected_ids, unique_id, wait_until

pytestmark = pytest.mark.timeout(60)

SN = "sn"  # the mqttsn listener's name
PREDEFINED = {1: "pre/one", 2: "pre/two"}
RC = ReturnCode
NORMAL, PREDEF, SHORT = TopicIdType.NORMAL, TopicIdType.PREDEFINED, TopicIdType.SHORT
M = TypeVar("M")
MakeBroker = Callable[[dict[str, Any]], BrokerThread]


def sn_config(**listener: Any) -> dict[str, Any]:
    """A broker with its TCP listener and an ``mqttsn`` listener ``sn`` on 127.0.0.1:0. The
    default Tretry (5 s) is longer than any test needs an answer in, so nothing is resent
    unless a test asks for it with a small ``retry_interval``."""
    cfg = base_config()
    cfg["listeners"][SN] = {"type": "mqttsn", "bind": f"{HOST}:0", "qos_minus_one": True,
                            "predefined_topics": dict(PREDEFINED), "retry_interval": 5,
                            "max_retries": 3, "advertise_interval": 0, **listener}
    return cfg


def sn_port(bt: BrokerThread) -> int:
    assert bt.broker is not None
    return next(p for name, _h, p in bt.broker.addresses if name == SN)


def queued_for(bt: BrokerThread, client_id: str) -> int:
    """How many deliveries the gateway holds for ``client_id``."""
    def count() -> int:
        assert bt.broker is not None
        for gw in bt.broker.gateways:
            for c in gw.clients.values():
                if c.session.client_id == client_id:
                    return len(c.session.outbox)
        return -1
    return bt.call(count)


# -- a raw MQTT-SN client ---------------------------------------------------------------------


@dataclass(frozen=True)
class Got:
    """A delivery as the client saw it: the topic name it resolved and the PUBLISH."""

    topic: str
    publish: sn.Publish

    @property
    def data(self) -> bytes:
        return self.publish.data


class SnRaw:
    """An MQTT-SN client of raw datagrams (built and read with the broker's codec, which is
    tested byte for byte against the specification elsewhere). One UDP socket, connected to
    the gateway; every receive is bounded."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.connect((HOST, port))
        self.port: int = self.sock.getsockname()[1]
        self.names: dict[int, str] = {}  # normal topic ids this client holds
        self._mid = 0

    def mid(self) -> int:
        self._mid = self._mid % 0xFFFF + 1
        return self._mid

    def send(self, *msgs: sn.Message) -> None:
        for m in msgs:
            self.sock.send(codec.encode(m))

    def send_bytes(self, data: bytes) -> None:
        self.sock.send(data)

    def recv(self, timeout: float = TIMEOUT) -> sn.Message:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65535)
        except TimeoutError:
            raise AssertionError(f"no datagram from the gateway within {timeout}s") from None
        return codec.decode(data)

    def expect(self, cls: type[M], timeout: float = TIMEOUT) -> M:
        m = self.recv(timeout)
        assert isinstance(m, cls), f"expected {cls.__name__}, got {m!r}"
        return m

    def pending(self) -> sn.Message | None:
        """A datagram already waiting, or None (no wait)."""
        self.sock.settimeout(0)
        try:
            return codec.decode(self.sock.recv(65535))
        except BlockingIOError:
            return None

    def connect(self, client_id: str, keep_alive: int = 60, clean: bool = True,
                will: tuple[str, bytes, int, bool] | None = None) -> None:
        """CONNECT (with the will exchange [MQTT-SN 6.2] when ``will`` is given) and CONNACK
        accepted."""
        self.send(sn.Connect(client_id, keep_alive, clean, will is not None))
        if will is not None:
            topic, payload, qos, retain = will
            self.expect(sn.WillTopicReq)
            self.send(sn.WillTopic(topic, qos, retain))
            self.expect(sn.WillMsgReq)
            self.send(sn.WillMsg(payload))
        assert self.recv() == sn.Connack(RC.ACCEPTED)
        if clean:
            self.names.clear()

    def register(self, name: str) -> int:
        mid = self.mid()
        self.send(sn.Register(0, mid, name))
        ack = self.expect(sn.Regack)
        assert (ack.msg_id, ack.return_code) == (mid, RC.ACCEPTED), ack
        self.names[ack.topic_id] = name
        return ack.topic_id

    def publish(self, topic: int | str, data: bytes, qos: int, retain: bool = False,
                kind: TopicIdType = NORMAL) -> int:
        """PUBLISH and complete its flow (PUBACK 0x00; PUBREC, PUBREL, PUBCOMP)."""
        mid = self.mid() if qos > 0 else 0
        self.send(sn.Publish(topic, data, qos, retain, False, mid, kind))
        if qos == 1:
            tid = short_topic_value(topic) if isinstance(topic, str) else topic
            assert self.recv() == sn.Puback(tid, mid, RC.ACCEPTED)
        elif qos == 2:
            assert self.recv() == sn.Pubrec(mid)
            self.send(sn.Pubrel(mid))
            assert self.recv() == sn.Pubcomp(mid)
        return mid

    def subscribe(self, topic: int | str, qos: int, kind: TopicIdType = NORMAL) -> sn.Suback:
        mid = self.mid()
        self.send(sn.Subscribe(topic, mid, qos, False, kind))
        ack = self.expect(sn.Suback)
        assert ack.msg_id == mid, ack
        if ack.return_code == RC.ACCEPTED and ack.topic_id and kind == NORMAL:
            assert isinstance(topic, str)
            self.names[ack.topic_id] = topic
        return ack

    def unsubscribe(self, topic: int | str, kind: TopicIdType = NORMAL) -> None:
        mid = self.mid()
        self.send(sn.Unsubscribe(topic, mid, kind))
        assert self.recv() == sn.Unsuback(mid)

    def name_of(self, p: sn.Publish) -> str:
        if p.topic_id_type == SHORT:
            assert isinstance(p.topic, str)
            return p.topic
        assert isinstance(p.topic, int)
        if p.topic_id_type == PREDEF:
            return PREDEFINED[p.topic]
        assert p.topic in self.names, f"PUBLISH on topic id {p.topic}, never registered: {p!r}"
        return self.names[p.topic]

    def delivery(self, ack: bool = True, timeout: float = TIMEOUT,
                 registers: list[sn.Register] | None = None) -> Got:
        """The next PUBLISH from the gateway, REGACKing (and recording in ``registers``) any
        REGISTER before it; with ``ack``, its QoS flow is completed."""
        while True:
            m = self.recv(timeout)
            if isinstance(m, sn.Register):
                if registers is not None:
                    registers.append(m)
                self.names[m.topic_id] = m.topic_name
                self.send(sn.Regack(m.topic_id, m.msg_id, RC.ACCEPTED))
                continue
            assert isinstance(m, sn.Publish), f"expected PUBLISH, got {m!r}"
            if ack:
                self.ack(m)
            return Got(self.name_of(m), m)

    def ack(self, p: sn.Publish) -> None:
        if p.qos == 1:
            tid = short_topic_value(p.topic) if isinstance(p.topic, str) else p.topic
            self.send(sn.Puback(tid, p.msg_id, RC.ACCEPTED))
        elif p.qos == 2:
            self.send(sn.Pubrec(p.msg_id))
            assert self.recv() == sn.Pubrel(p.msg_id)
            self.send(sn.Pubcomp(p.msg_id))

    def close(self) -> None:
        self.sock.close()


# -- the mqtt-sn-12 client --------------------------------------------------------------------


class LibClient(MqttSnClient):  # type: ignore[misc]
    """``mqtt-sn-12``'s client with one fix: a blocking receive keeps its timeout (the
    package's ``setblocking(True)`` after ``settimeout`` makes it wait forever)."""

    def __init__(self, port: int, client_id: str | None = None, keep_alive: int = 60) -> None:
        super().__init__()
        self.set_timeout(int(TIMEOUT))
        self.set_keep_alive(keep_alive)
        if client_id is not None:
            self.set_client_id(client_id)
        self.open(HOST, port)

    def receive_packet(self, blocking: bool) -> bytes | None:
        self.datagram_socket.settimeout(self.timeout if blocking else 0.0)
        try:
            data, _addr = self.datagram_socket.recvfrom(
                MqttSnConstants.MAX_PACKET_LENGTH_EXTENDED)
        except BlockingIOError:
            return None
        except OSError as exc:  # (a timeout too)
            raise AssertionError(f"mqtt-sn-12: nothing from the gateway: {exc!r}") from None
        self.last_receive = int(time.time())
        return bytes(data)


class LibInbox(MqttSnListener):  # type: ignore[misc]
    """What ``mqtt-sn-12`` handed its listener: (topic name or None, topic id, QoS, retain,
    payload)."""

    def __init__(self) -> None:
        self.got: list[tuple[str | None, int, int, bool, bytes]] = []

    def message_arrived(self, msg: MqttSnMessage) -> None:
        self.got.append((msg.get_topic_name(), msg.get_topic_id(), msg.get_qos(),
                         bool(msg.get_retain()), bytes(msg.get_payload())))

    def poll(self, client: LibClient, n: int, timeout: float = TIMEOUT) -> list[Any]:
        """Let ``client`` read until ``n`` messages arrived (bounded)."""
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            assert time.monotonic() < deadline, f"mqtt-sn-12 got {self.got}, wanted {n}"
            client.polling()
            time.sleep(0.005)
        return self.got


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def bt(make_broker_thread: MakeBroker) -> BrokerThread:
    return make_broker_thread(sn_config())


@pytest.fixture
def libs() -> Iterator[Callable[..., LibClient]]:
    made: list[LibClient] = []

    def make(b: BrokerThread, client_id: str | None = None, keep_alive: int = 60) -> LibClient:
        c = LibClient(sn_port(b), client_id, keep_alive)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def mqtt(bt: BrokerThread) -> Iterator[Clients]:
    with Clients(bt.port) as c:
        yield c


def watch(clients: Clients, *filters: str) -> Paho:
    """A paho client subscribed at QoS 2 to ``filters``."""
    w = clients.paho(unique_id("watch-"))
    assert w.subscribe(*[(f, 2) for f in filters]) == [2] * len(filters)
    return w


def seen(msgs: list[Msg]) -> list[tuple[str, bytes, int]]:
    return [(m.topic, m.payload, m.qos) for m in msgs]


def seen_sorted(msgs: list[Msg]) -> list[tuple[str, bytes, int]]:
    """As :func:`seen`, in a fixed order: paho hands a QoS 2 message to ``on_message`` only
    at PUBREL, so messages of different QoS may arrive in another order than sent."""
    return sorted(seen(msgs))


# -- mqtt-sn-12 -------------------------------------------------------------------------------


def test_library_publishes_at_every_qos_and_topic_kind(bt: BrokerThread, mqtt: Clients,
                                                       libs: Callable[..., LibClient]) -> None:
    """mqtt-sn-12 publishes: QoS -1 without connecting (pre-defined and short ids), then,
    connected, QoS 0/1/2 on a registered name, a short name and a pre-defined id, and a
    retained message a later paho subscriber gets."""
    w = watch(mqtt, "#")
    beacon = libs(bt)  # never CONNECTs
    beacon.send_publish_predefined(1, b"m1-pre", MqttSnConstants.QOS_N1)
    beacon.send_publish_short(short_topic_value("bc"), b"m1-short", MqttSnConstants.QOS_N1)
    assert seen(w.messages.wait_for(2)) == [("pre/one", b"m1-pre", 0), ("bc", b"m1-short", 0)]

    c = libs(bt, unique_id("lib-"))
    c.send_connect()
    for qos in (0, 1, 2):
        c.send_publish("lib/t", f"q{qos}".encode(), qos)
    c.send_publish("ab", b"short-q1", 1)
    c.send_publish_predefined(2, b"pre-q2", 2)
    c.send_publish("lib/kept", b"retained", 1, retain=True)
    msgs = w.messages.wait_for(8)
    assert seen_sorted(msgs[2:]) == sorted([
        ("lib/t", b"q0", 0), ("lib/t", b"q1", 1), ("lib/t", b"q2", 2), ("ab", b"short-q1", 1),
        ("pre/two", b"pre-q2", 2), ("lib/kept", b"retained", 1)])
    assert not any(m.retain for m in msgs)  # a live subscription: retain 0 [MQTT-3.3.1-9]
    late = mqtt.paho(unique_id("late-"))
    late.subscribe(("lib/kept", 1))
    kept = late.messages.wait_for(1)[0]
    assert (kept.topic, kept.payload, kept.retain) == ("lib/kept", b"retained", True)
    c.send_disconnect()


def test_library_subscribes_by_name_wildcard_short_and_predefined(
        bt: BrokerThread, mqtt: Clients, libs: Callable[..., LibClient]) -> None:
    """mqtt-sn-12 subscribes to an exact name, a wildcard filter, a short name and a
    pre-defined id; paho publishes; the library resolves every delivery (REGISTER for the
    wildcard match). After it unsubscribes the wildcard, a match is no longer delivered."""
    c = libs(bt, unique_id("lsub-"))
    c.send_connect()
    inbox = LibInbox()
    c.send_subscribe("cmd/exact", 0, inbox)
    c.send_subscribe("cmd/+/set", 0, inbox)
    c.send_subscribe("xy", 0, inbox)
    c.send_subscribe_predefined(2, 0, inbox)
    p = mqtt.paho(unique_id("pub-"))
    p.publish("cmd/exact", b"e", 1)
    p.publish("cmd/lamp/set", b"on", 1)
    p.publish("cmd/lamp/get", b"no match", 1)
    p.publish("xy", b"s", 1)
    p.publish("pre/two", b"p", 1)
    got = inbox.poll(c, 4)
    assert [(name, qos, payload) for name, _tid, qos, _r, payload in got[:2]] == [
        ("cmd/exact", 0, b"e"), ("cmd/lamp/set", 0, b"on")]
    # the package resolves a name by topic id alone, whatever the TopicIdType (its
    # topic_map holds normal ids only): the short and pre-defined deliveries are told by id
    assert [(tid, qos, payload) for _n, tid, qos, _r, payload in got[2:]] == [
        (short_topic_value("xy"), 0, b"s"), (2, 0, b"p")]
    c.send_unsubscribe("cmd/+/set")
    p.publish("cmd/fan/set", b"after unsubscribe", 1)
    p.publish("cmd/exact", b"sentinel", 1)
    got = inbox.poll(c, 5)
    assert got[4][0] == "cmd/exact" and got[4][4] == b"sentinel", got
    c.send_disconnect()


def test_library_will_with_updates_published_on_keepalive_expiry(
        bt: BrokerThread, mqtt: Clients, libs: Callable[..., LibClient]) -> None:
    """mqtt-sn-12 connects with a will (WILLTOPICREQ/WILLTOPIC/WILLMSGREQ/WILLMSG), updates
    its topic and message (WILLTOPICUPD, WILLMSGUPD, both answered 0x00), then falls silent:
    the updated will is published at 1.5 x its 1 s keep-alive."""
    w = watch(mqtt, "lwill/#")
    cid = unique_id("lwill-")
    c = libs(bt, cid, keep_alive=1)
    c.set_will("lwill/first", "first words", 1, False)
    c.send_connect()
    c.send_will_topic_update("lwill/second")
    c.send_will_message_update("last words")
    quiet_since = time.monotonic()
    will = w.messages.wait_for(1, timeout=TIMEOUT)[0]
    waited = time.monotonic() - quiet_since
    assert (will.topic, will.payload, will.qos) == ("lwill/second", b"last words", 1)
    assert waited >= 1.4, f"will after {waited:.2f}s, before 1.5 x keep-alive 1 s"
    wait_until(lambda: cid not in connected_ids(bt), what=f"{cid} gone from the broker")


def test_library_client_sleeps_and_is_woken(bt: BrokerThread, mqtt: Clients,
                                            libs: Callable[..., LibClient]) -> None:
    """mqtt-sn-12 subscribes and goes to sleep (DISCONNECT with a Duration); paho publishes;
    the PINGREQ carrying its client id (a raw datagram from the library's socket: the
    package cannot encode it) wakes it, and the library's own ``polling`` takes the buffered
    messages (answering REGISTER), then PINGRESP comes."""
    cid = unique_id("lsleep-")
    c = libs(bt, cid)
    c.send_connect()
    inbox = LibInbox()
    c.send_subscribe("lsl/#", 0, inbox)
    c.send_disconnect(30)
    p = mqtt.paho(unique_id("pub-"))
    p.publish("lsl/a", b"one", 0)
    p.publish("lsl/b", b"two", 1)
    wait_until(lambda: queued_for(bt, cid) == 2, what="2 messages buffered for the sleeper")
    c.send_packet(codec.encode(sn.Pingreq(cid)))
    got = inbox.poll(c, 2)
    assert [(name, payload) for name, _t, _q, _r, payload in got] == [("lsl/a", b"one"),
                                                                      ("lsl/b", b"two")]
    assert c.wait_for(True, MqttSnConstants.TYPE_PINGRESP) is not None


# -- every QoS, both ways ---------------------------------------------------------------------


def test_sn_to_mqtt_every_qos_and_topic_kind(bt: BrokerThread, mqtt: Clients,
                                             sns: Callable[[BrokerThread], SnRaw]) -> None:
    """Raw PUBLISH at QoS -1 (no connection), 0, 1, 2 on registered, pre-defined and short
    ids; PUBACK echoes the TopicId; unknown ids are refused with 0x02 and not published."""
    w = watch(mqtt, "#")
    s = sns(bt)
    s.send(sn.Publish("ms", b"minus-one", -1, topic_id_type=SHORT))
    s.connect(unique_id("pub-"))
    tid = s.register("up/t")
    for qos in (0, 1, 2):
        s.publish(tid, f"n{qos}".encode(), qos)
        s.publish(1, f"p{qos}".encode(), qos, kind=PREDEF)
        s.publish("st", f"s{qos}".encode(), qos, kind=SHORT)
    for bad, kind in ((99, PREDEF), (tid + 100, NORMAL)):
        mid = s.mid()
        s.send(sn.Publish(bad, b"nowhere", 1, msg_id=mid, topic_id_type=kind))
        assert s.recv() == sn.Puback(bad, mid, RC.REJECTED_INVALID_TOPIC_ID)
    s.publish(tid, b"sentinel", 1)
    msgs = w.messages.wait_for(11)
    assert seen_sorted(msgs) == sorted([("ms", b"minus-one", 0), ("up/t", b"sentinel", 1)] + [
        m for q in (0, 1, 2) for m in (("up/t", f"n{q}".encode(), q),
                                       ("pre/one", f"p{q}".encode(), q),
                                       ("st", f"s{q}".encode(), q))])


def test_mqtt_to_sn_every_qos(bt: BrokerThread, mqtt: Clients,
                              sns: Callable[[BrokerThread], SnRaw]) -> None:
    """paho publishes at QoS 0, 1, 2; the MQTT-SN subscriber gets REGISTER once per name,
    then each PUBLISH at min(published, granted) QoS, and completes each flow."""
    s = sns(bt)
    s.connect(unique_id("sub-"))
    assert s.subscribe("dn/#", 2) == sn.Suback(0, s._mid, RC.ACCEPTED, 2)
    assert s.subscribe("low/#", 1).qos == 1
    p = mqtt.paho(unique_id("pub-"))
    registers: list[sn.Register] = []
    got = []
    for qos in (0, 1, 2):
        p.publish(f"dn/q{qos}", f"d{qos}".encode(), qos)
        got.append(s.delivery(registers=registers))
    p.publish("dn/q1", b"again", 1)  # the id is known now: no REGISTER
    got.append(s.delivery(registers=registers))
    for qos in (0, 1, 2):
        p.publish("low/x", f"l{qos}".encode(), qos)
        got.append(s.delivery(registers=registers))
    assert [(g.topic, g.data, g.publish.qos) for g in got] == [
        ("dn/q0", b"d0", 0), ("dn/q1", b"d1", 1), ("dn/q2", b"d2", 2), ("dn/q1", b"again", 1),
        ("low/x", b"l0", 0), ("low/x", b"l1", 1), ("low/x", b"l2", 1)]
    assert [r.topic_name for r in registers] == ["dn/q0", "dn/q1", "dn/q2", "low/x"]
    assert all(not g.publish.dup and g.publish.topic_id_type == NORMAL for g in got)
    assert all(g.publish.msg_id for g in got if g.publish.qos)
    s.send(sn.Pingreq(None))
    assert s.recv() == sn.Pingresp()  # nothing else was sent


# -- retained messages ------------------------------------------------------------------------


def test_retained_message_reaches_sn_subscriber_on_subscribe(
        bt: BrokerThread, mqtt: Clients, sns: Callable[[BrokerThread], SnRaw]) -> None:
    """Retained messages published by paho: a wildcard SUBSCRIBE gets SUBACK (topic id 0),
    then REGISTER, then the PUBLISH with Retain set; an exact-name SUBSCRIBE gets the id in
    SUBACK and the PUBLISH on it without REGISTER; a pre-defined one, the pre-defined id."""
    p = mqtt.paho(unique_id("pub-"))
    p.publish("ret/a", b"ra", 1, retain=True)
    p.publish("pre/one", b"rp", 1, retain=True)
    s = sns(bt)
    s.connect(unique_id("ret-"))
    assert s.subscribe("ret/#", 1) == sn.Suback(0, s._mid, RC.ACCEPTED, 1)
    reg = s.expect(sn.Register)
    assert reg.topic_name == "ret/a"
    s.send(sn.Regack(reg.topic_id, reg.msg_id, RC.ACCEPTED))
    pub = s.expect(sn.Publish)
    assert (pub.topic, pub.data, pub.qos, pub.retain) == (reg.topic_id, b"ra", 1, True)
    s.ack(pub)

    t = sns(bt)
    t.connect(unique_id("ret-"))
    ack = t.subscribe("ret/a", 1)
    assert ack.return_code == RC.ACCEPTED and ack.topic_id not in (0, 0xFFFF)
    pub = t.expect(sn.Publish)  # no REGISTER: SUBACK gave the id
    assert (pub.topic, pub.topic_id_type, pub.data, pub.retain) == (ack.topic_id, NORMAL,
                                                                    b"ra", True)
    t.ack(pub)
    assert t.subscribe(1, 0, PREDEF) == sn.Suback(1, t._mid, RC.ACCEPTED, 0)
    pub = t.expect(sn.Publish)
    assert (pub.topic, pub.topic_id_type, pub.data, pub.qos, pub.retain) == (
        1, PREDEF, b"rp", 0, True)


def test_retained_message_from_sn_is_kept_for_mqtt_subscribers(
        bt: BrokerThread, mqtt: Clients, sns: Callable[[BrokerThread], SnRaw]) -> None:
    """MQTT-SN retained publishes (registered, short, pre-defined ids; QoS 0 and 1) are
    retained: a later paho subscriber gets them with the retain flag; an empty retained
    PUBLISH clears one."""
    s = sns(bt)
    s.connect(unique_id("sret-"))
    tid = s.register("sret/a")
    s.publish(tid, b"A", 1, retain=True)
    s.publish("sb", b"B", 0, retain=True, kind=SHORT)
    s.publish(2, b"P", 1, retain=True, kind=PREDEF)
    s.publish(tid, b"A2", 1, retain=True)  # replaces A
    gone = s.register("sret/gone")
    s.publish(gone, b"soon cleared", 1, retain=True)
    s.publish(gone, b"", 1, retain=True)
    late = mqtt.paho(unique_id("late-"))
    late.subscribe(("sret/#", 1), ("sb", 1), ("pre/two", 1))
    late.subscribe(("barrier/none", 0))  # its SUBACK comes after the retained messages
    got = {(m.topic, m.payload, m.qos, m.retain) for m in late.messages.wait_for(3)}
    assert got == {("sret/a", b"A2", 1, True), ("sb", b"B", 0, True),
                   ("pre/two", b"P", 1, True)}, got
    assert len(late.messages) == 3


# -- pre-defined and short topic ids ----------------------------------------------------------


def test_predefined_and_short_topics_toward_sn(bt: BrokerThread, mqtt: Clients,
                                               sns: Callable[[BrokerThread], SnRaw]) -> None:
    """SUBSCRIBE by pre-defined id (SUBACK carries it) and by short name (SUBACK topic id
    0): paho's messages arrive as PUBLISH on the pre-defined id / the short name, never
    REGISTERed; a wildcard that matches a pre-defined name delivers it on its id too."""
    s = sns(bt)
    s.connect(unique_id("ids-"))
    assert s.subscribe(2, 1, PREDEF) == sn.Suback(2, s._mid, RC.ACCEPTED, 1)
    assert s.subscribe("xy", 1, SHORT) == sn.Suback(0, s._mid, RC.ACCEPTED, 1)
    assert s.subscribe("pre/+", 0).topic_id == 0
    p = mqtt.paho(unique_id("pub-"))
    p.publish("pre/two", b"by id", 1)
    a = s.expect(sn.Publish)
    assert (a.topic, a.topic_id_type, a.data, a.qos) == (2, PREDEF, b"by id", 1)
    s.ack(a)
    p.publish("xy", b"short", 1)
    b = s.expect(sn.Publish)
    assert (b.topic, b.topic_id_type, b.data, b.qos) == ("xy", SHORT, b"short", 1)
    s.ack(b)
    p.publish("pre/one", b"via wildcard", 1)
    c = s.expect(sn.Publish)
    assert (c.topic, c.topic_id_type, c.data, c.qos) == (1, PREDEF, b"via wildcard", 0)


def test_subscribe_by_name_id_short_with_wildcards_and_unsubscribe(
        bt: BrokerThread, mqtt: Clients, sns: Callable[[BrokerThread], SnRaw]) -> None:
    """SUBSCRIBE with '+' and '#' filters, an exact name, a pre-defined id and a short
    name; only matching messages arrive. Then UNSUBSCRIBE each kind (UNSUBACK) and nothing
    for them arrives before a sentinel. Unusable topics: SUBACK 0x02."""
    s = sns(bt)
    s.connect(unique_id("wild-"))
    s.subscribe("w/+/t", 1)
    s.subscribe("h/#", 1)
    exact = s.subscribe("w/exact", 1).topic_id
    s.subscribe(1, 1, PREDEF)
    s.subscribe("zz", 1, SHORT)
    p = mqtt.paho(unique_id("pub-"))
    for topic in ("w/1/t", "w/1/x", "w/1/t/deeper", "h", "h/a/b", "w/exact", "pre/one", "zz",
                  "other"):
        p.publish(topic, topic.encode(), 1)
    got = [s.delivery() for _ in range(6)]
    assert [g.topic for g in got] == ["w/1/t", "h", "h/a/b", "w/exact", "pre/one", "zz"]
    assert got[3].publish.topic == exact
    s.unsubscribe("w/+/t")
    s.unsubscribe("h/#")
    s.unsubscribe(1, PREDEF)
    s.unsubscribe("zz", SHORT)
    for topic in ("w/2/t", "h/x", "pre/one", "zz", "w/exact"):
        p.publish(topic, b"after", 1)
    last = s.delivery()
    assert (last.topic, last.data) == ("w/exact", b"after")

    for topic, kind in ((999, PREDEF), ("a/#/b", NORMAL), ("x+", NORMAL), ("#/a", NORMAL)):
        mid = s.mid()
        s.send(sn.Subscribe(topic, mid, 1, False, kind))
        ack = s.expect(sn.Suback)
        assert (ack.msg_id, ack.return_code) == (mid, RC.REJECTED_INVALID_TOPIC_ID), (topic, ack)
    mid = s.mid()
    s.send(sn.Unsubscribe(999, mid, PREDEF))  # UNSUBACK has no return code
    assert s.recv() == sn.Unsuback(mid)


# -- more of the protocol ---------------------------------------------------------------------


def test_register_searchgw_and_long_payloads(bt: BrokerThread, mqtt: Clients,
                                            sns: Callable[[BrokerThread], SnRaw]) -> None:
    """SEARCHGW is answered GWINFO with the gateway id; REGISTER gives the same id for the
    same name and refuses a wildcard (0x02); payloads past 255 octets (the 3-octet Length
    form) cross both ways."""
    s = sns(bt)
    s.send(sn.SearchGw(1))
    assert s.recv() == sn.GwInfo(1)
    s.connect(unique_id("reg-"))
    tid = s.register("lp/t")
    assert s.register("lp/t") == tid
    mid = s.mid()
    s.send(sn.Register(0, mid, "lp/+"))
    assert s.recv() == sn.Regack(0, mid, RC.REJECTED_INVALID_TOPIC_ID)
    w = watch(mqtt, "lp/#")
    big = bytes(range(256)) * 4
    s.publish(tid, big, 1)
    assert w.messages.wait_for(1)[0].payload == big
    s.subscribe("lp/down", 1)
    mqtt.paho(unique_id("p-")).publish("lp/down", big[::-1] * 8, 1)
    g = s.delivery()
    assert (g.topic, g.data) == ("lp/down", big[::-1] * 8)


def test_suback_topic_id_is_the_one_publish_uses(bt: BrokerThread, mqtt: Clients,
                                                 sns: Callable[[BrokerThread], SnRaw]) -> None:
    """SUBSCRIBE by the name of a topic that also has a pre-defined id: SUBACK's TopicId is
    "the value that will be used as topic id by the gateway when sending PUBLISH messages to
    the client" [MQTT-SN 5.4.16] (SUBACK has no TopicIdType: a normal id), so the PUBLISH
    comes on that normal id."""
    s = sns(bt)
    s.connect(unique_id("byname-"))
    ack = s.subscribe("pre/two", 1)
    assert ack.return_code == RC.ACCEPTED and ack.topic_id not in (0, 0xFFFF), ack
    mqtt.paho(unique_id("p-")).publish("pre/two", b"named", 1)
    pub = s.expect(sn.Publish)
    assert (pub.topic_id_type, pub.topic) == (NORMAL, ack.topic_id), (
        f"SUBACK said normal id {ack.topic_id}, PUBLISH came as {pub!r}")
