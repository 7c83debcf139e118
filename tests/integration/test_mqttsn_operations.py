"""The MQTT-SN gateway as an operator sees it, over real UDP: malformed datagrams (dropped,
logged with the sender's address, harmless to other clients and to the sender's own
session), ACLs applied to MQTT-SN clients by their client id (their MQTT user name), and
MQTT-SN clients in the admin API, ``$SYS`` and ``/metrics`` like any client.
Helpers: test_mqttsn_interop.py."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mqttbroker.protocol.mqttsn import messages as sn
from tests.conftest import BrokerThread

from .helpers import HOST, TIMEOUT, Clients, connected_ids, unique_id, wait_until
from .test_mqttsn_interop import (
    PREDEF,
    RC,
    SN,
    MakeBroker,
    SnRaw,
    seen,
    sn_config,
    watch,
)

pytestmark = pytest.mark.timeout(60)

TOKEN = "sn-admin-token"

#: datagrams the codec refuses, each with what is wrong
MALFORMED: list[tuple[str, bytes]] = [
    ("empty datagram", b""),
    ("one octet", b"\x05"),
    ("PUBLISH cut short", b"\x05\x0c\x00"),
    ("reserved MsgType 0x03", b"\x02\x03"),
    ("DISCONNECT with a 1-octet Duration", b"\x03\x18\x00"),
    ("Length 0", b"\x00\x04"),
    ("Length beyond the datagram", b"\x20\x16"),
    ("Length short of the datagram", b"\x02\x16\x00\x00"),
    ("3-octet Length, PUBLISH without TopicId", b"\x01\x00\x05\x0c\x00"),
    ("CONNECT with ProtocolId 0x02", b"\x08\x04\x04\x02\x00\x3cxy"),
    ("PUBLISH with TopicIdType 0b11", b"\x08\x0c\x03\x00\x01\x00\x00x"),
    ("REGISTER with a non-UTF-8 name", b"\x08\x0a\x00\x00\x00\x01\xff\xfe"),
    ("WILLTOPIC with U+0000", b"\x05\x07\x00a\x00"),
    ("noise", b"\xff" * 40),
]


def gateway_stat(bt: BrokerThread, name: str) -> Any:
    def read() -> Any:
        assert bt.broker is not None
        return getattr(bt.broker.gateways[0], name)
    return bt.call(read)


# -- malformed datagrams ----------------------------------------------------------------------


def test_malformed_datagrams_are_dropped_logged_and_harm_nobody(
        make_broker_thread: MakeBroker, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw], caplog: pytest.LogCaptureFixture) -> None:
    """Fourteen kinds of malformed datagram from one address, each followed by a QoS 1
    PUBLISH of a connected client from another: every PUBLISH is answered and delivered,
    every bad datagram is dropped without an answer and logged with its sender's address.
    The same datagrams from the connected client's own address leave its session as it was.
    Well-formed messages from an address with no connection are ignored (a PUBLISH answered
    DISCONNECT) and logged with the address too."""
    caplog.set_level(logging.INFO, logger="mqttbroker.mqttsn")
    bt = make_broker_thread(sn_config())
    w = watch(paho_for(bt), "mal/#", "pre/#")
    good, bad = sns(bt), sns(bt)
    good.connect(unique_id("good-"))
    tid = good.register("mal/t")
    for i, (_what, data) in enumerate(MALFORMED):
        bad.send_bytes(data)
        good.publish(tid, f"{i}".encode(), 1)
    assert bad.pending() is None, "the gateway answered a malformed datagram"
    for _what, data in MALFORMED:
        good.send_bytes(data)
    good.publish(tid, b"after my own garbage", 1)
    good.send(sn.Pingreq(None))
    assert good.recv() == sn.Pingresp()
    n = len(MALFORMED)
    assert [m.payload for m in w.messages.wait_for(n + 1)] == [
        f"{i}".encode() for i in range(n)] + [b"after my own garbage"]

    bad.send(sn.Connack(RC.ACCEPTED))  # well-formed, but not for a gateway
    bad.send(sn.Publish(1, b"not connected", 1, msg_id=3, topic_id_type=PREDEF))
    assert bad.recv() == sn.Disconnect(None)
    good.publish(1, b"sentinel", 1, kind=PREDEF)
    assert w.messages.wait_for(n + 2)[-1].payload == b"sentinel"

    lines = [r.getMessage() for r in caplog.records if r.name == "mqttbroker.mqttsn"]
    where = f"{HOST}:{bad.port}"
    dropped = [ln for ln in lines if where in ln and "dropped" in ln]
    assert len(dropped) == n, "\n".join(lines)
    own = [ln for ln in lines if f"{HOST}:{good.port}" in ln and "dropped" in ln]
    assert len(own) == n, "\n".join(lines)
    assert sum(where in ln and "not connected" in ln for ln in lines) == 2, "\n".join(lines)
    assert gateway_stat(bt, "dropped_datagrams") == 2 * n


def test_client_id_too_long_or_empty_is_refused(
        make_broker_thread: MakeBroker, sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A CONNECT whose client id has 24 characters (1-23 allowed [MQTT-SN 5.3.1]) or none is
    answered CONNACK 0x03 and nothing connects; 23 characters connect."""
    bt = make_broker_thread(sn_config())
    s = sns(bt)
    for cid in ("x" * 24, ""):
        s.send(sn.Connect(cid, 60, True, False))
        assert s.recv() == sn.Connack(RC.REJECTED_NOT_SUPPORTED), cid
    assert connected_ids(bt) == set()
    s.connect("y" * 23)
    assert connected_ids(bt) == {"y" * 23}


# -- ACLs -------------------------------------------------------------------------------------


ACL = """\
# anonymous MQTT clients (the paho watcher and publisher): everything
topic readwrite #

# an MQTT-SN client is its client id
user sn-acl
topic readwrite acl/ok/#
topic read acl/open/#
"""


@pytest.fixture
def acl_broker(make_broker_thread: MakeBroker, tmp_path: Path) -> BrokerThread:
    path = tmp_path / "acl"
    path.write_text(ACL)
    cfg = sn_config()
    cfg["auth"] = {"allow_anonymous": True, "acl_file": str(path)}
    return make_broker_thread(cfg)


def test_acl_refused_publish_gets_a_rejection_and_is_not_delivered(
        acl_broker: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """The MQTT-SN client ``sn-acl`` may write acl/ok/# only. Its QoS 1 and QoS 2 PUBLISH to
    acl/no/x are answered PUBACK with a rejection code (0x03, the session's code for a
    refusal), its QoS 0 one is dropped, and paho subscribers get none of them; the allowed
    publish after them is acknowledged and delivered."""
    w = watch(paho_for(acl_broker), "acl/#")
    s = sns(acl_broker)
    s.connect("sn-acl")
    denied = s.register("acl/no/x")
    allowed = s.register("acl/ok/x")
    s.publish(denied, b"q0", 0)
    answers: dict[int, tuple[int, sn.Message]] = {}
    for qos in (1, 2):
        mid = s.mid()
        s.send(sn.Publish(denied, f"q{qos}".encode(), qos, msg_id=mid))
        answers[qos] = (mid, s.recv())
        if isinstance(answers[qos][1], sn.Pubrec):  # taken as if allowed: finish the flow
            s.send(sn.Pubrel(mid))
            assert s.recv() == sn.Pubcomp(mid)
    s.publish(allowed, b"fine", 1)
    msgs = w.messages.wait_until(lambda ms: any(m.payload == b"fine" for m in ms))
    assert seen(msgs) == [("acl/ok/x", b"fine", 1)]  # none of the refused ones
    for qos, (mid, ack) in answers.items():
        assert ack == sn.Puback(denied, mid, RC.REJECTED_NOT_SUPPORTED), (
            f"QoS {qos} PUBLISH the ACL refuses: answered {ack!r}")


def test_acl_refused_subscription_gets_a_rejection(
        acl_broker: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """SUBSCRIBE to a filter the ACL gives no read access to: SUBACK 0x03; a readable one
    is granted and delivers."""
    s = sns(acl_broker)
    s.connect("sn-acl")
    refused = s.subscribe("acl/secret/#", 1)
    assert (refused.return_code, refused.topic_id) == (RC.REJECTED_NOT_SUPPORTED, 0), refused
    assert s.subscribe("acl/open/+", 1).return_code == RC.ACCEPTED
    p = paho_for(acl_broker).paho(unique_id("p-"))
    p.publish("acl/secret/x", b"hidden", 1)
    p.publish("acl/open/x", b"visible", 1)
    g = s.delivery()
    assert (g.topic, g.data) == ("acl/open/x", b"visible")


# -- observability ----------------------------------------------------------------------------

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy


def http_get(bt: BrokerThread, path: str, token: str | None = TOKEN) -> str:
    assert bt.broker is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://{HOST}:{bt.broker.http_port}{path}", headers=headers)
    with _opener.open(req, timeout=TIMEOUT) as r:
        assert r.status == 200, (path, r.status)
        return str(r.read().decode())


def clients_connected_metric(bt: BrokerThread) -> float:
    text = http_get(bt, "/metrics", token=None)
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == "mqttbroker_clients_connected":
                return float(sample.value)
    raise AssertionError("no mqttbroker_clients_connected in /metrics")


def test_sn_client_in_admin_api_sys_and_metrics(
        make_broker_thread: MakeBroker, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A connected MQTT-SN client is listed by /api/v1/clients (its client id as user name,
    the mqttsn listener, its UDP address as peer, its subscription) and counted by
    $SYS/broker/clients/connected and /metrics; after its DISCONNECT it is gone from all
    three."""
    cfg = sn_config()
    cfg["sys_interval"] = 0.2
    cfg["http"] = {"enabled": True, "bind": f"{HOST}:0", "token": TOKEN}
    bt = make_broker_thread(cfg)
    topic = "$SYS/broker/clients/connected"
    watcher = paho_for(bt).paho(unique_id("sys-"))
    watcher.subscribe((topic, 0))
    s = sns(bt)
    cid = unique_id("obs-")
    s.connect(cid, keep_alive=45)
    s.subscribe("obs/#", 1)

    def sys_says(n: int) -> None:
        start = len(watcher.messages)
        watcher.messages.wait_until(
            lambda ms: any(m.topic == topic and m.payload.split()[0] == str(n).encode()
                           for m in ms[start:]), what=f"{topic} = {n}")

    sys_says(2)  # the watcher and the MQTT-SN client
    assert clients_connected_metric(bt) == 2
    rows = json.loads(http_get(bt, "/api/v1/clients"))["clients"]
    row = next((r for r in rows if r["client_id"] == cid), None)
    assert row is not None, rows
    assert row["connected"] is True and row["listener"] == SN, row
    assert row["username"] == cid, row
    assert HOST in row["peer"] and str(s.port) in row["peer"], (row, s.port)
    assert row["subscriptions"] == 1, row

    s.send(sn.Disconnect(None))
    assert s.recv() == sn.Disconnect(None)
    wait_until(lambda: cid not in connected_ids(bt), what=f"{cid} gone")
    sys_says(1)
    assert clients_connected_metric(bt) == 1
    rows = json.loads(http_get(bt, "/api/v1/clients"))["clients"]
    assert cid not in {r["client_id"] for r in rows}, rows
