"""A bridge's backlog under persistence (issue 16, store and forward), with real processes:
an edge broker (``python -m mqttbroker serve``, SQLite ``sync: commit``) bridging to a cloud
that is down; devices' QoS 1/2 messages, each acknowledged by the edge, must reach the cloud
in order after the edge is killed with SIGKILL and restarted. A raw-socket remote checks that
a QoS 2 message in flight at the crash is resent with its packet identifier and DUP set, so a
remote that kept the session does not deliver it twice [MQTT-4.3.3-2], [MQTT-4.4.0-1]. The
queue's bound and policies are checked on a live broker."""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from .brokerproc import BrokerProc, broker_procs, free_port
from .helpers import unique_id

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Any]:
    with broker_procs(tmp_path) as make:
        yield make


def bridge_section(cloud_port: int, *, qos: int = 1, protocol: str = "mqttv311",
                   queue: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "addresses": [f"127.0.0.1:{cloud_port}"], "protocol": protocol,
        "client_id": unique_id("edge-"), "clean_session": False, "notifications": False,
        "restart_timeout": [0.2, 0.5],
        "topics": [{"pattern": "sensors/#", "direction": "out", "qos": qos,
                    "remote_prefix": "site-7/"}], **options}
    if queue is not None:
        section["queue"] = queue
    return {"bridges": {"cloud": section}}


def publish_all(port: int, count: int, qos: int, prefix: str = "m") -> None:
    """``count`` messages on sensors/<i>, each acknowledged by the broker before the next."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, unique_id("dev-"))
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for i in range(count):
            info = c.publish(f"sensors/{i % 4}", f"{prefix}{i}".encode(), qos)
            info.wait_for_publish(10)
            assert info.is_published(), f"message {i} not acknowledged by the edge"
    finally:
        c.disconnect()
        c.loop_stop()


class CloudInbox:
    """A paho subscriber at the cloud on ``site-7/sensors/#``."""

    def __init__(self, port: int, qos: int) -> None:
        self.got: list[bytes] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, unique_id("cloud-in-"))
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, m: self.got.append(m.payload)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.client.subscribe("site-7/sensors/#", qos)
        assert subscribed.wait(5), "no SUBACK from the cloud"

    def wait(self, count: int, timeout: float = 30.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("qos", [1, 2])
def test_acknowledged_backlog_survives_sigkill_of_the_edge(procs: Any, qos: int) -> None:
    cloud_port = free_port()  # nobody listens yet: the link is down
    edge: BrokerProc = procs("edge", extra=bridge_section(cloud_port, qos=qos)).start()
    publish_all(edge.port, 300, qos)  # every one acknowledged by the edge (sync: commit)
    edge.kill()
    cloud: BrokerProc = procs("cloud", port=cloud_port).start()
    inbox = CloudInbox(cloud.port, qos)
    try:
        edge.start()
        got = inbox.wait(300)
        time.sleep(0.5)  # (nothing more may come: a duplicate would show here)
        assert got == [f"m{i}".encode() for i in range(300)], edge.log_tail()
        assert "300 message(s) restored for the remote" in edge.log_text()
    finally:
        inbox.close()


def test_backlog_drained_is_deleted_from_the_store(procs: Any) -> None:
    """Acknowledged by the remote, a message is gone from the store: a restart of the edge
    sends nothing again."""
    cloud: BrokerProc = procs("cloud").start()
    edge: BrokerProc = procs("edge", extra=bridge_section(cloud.port)).start()
    inbox = CloudInbox(cloud.port, 1)
    try:
        publish_all(edge.port, 50, 1)
        assert len(inbox.wait(50)) == 50
        time.sleep(0.3)  # (the PUBACKs' deletions committed)
        edge.kill()
        edge.start()
        time.sleep(1.5)  # reconnected (restart_timeout 0.2 s) and nothing to send
        assert len(inbox.got) == 50, "a message went out twice after the restart"
        assert "restored for the remote" not in edge.log_text()
    finally:
        inbox.close()


# -- a raw remote: QoS 2 in flight at the crash keeps its packet identifier -------------------

def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    first = sock.recv(1)
    if not first:
        raise ConnectionError("closed")
    length, shift = 0, 0
    while True:
        b = sock.recv(1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return first[0], body


def _remote_session(server: socket.socket, session_present: bool
                    ) -> tuple[socket.socket, list[tuple[int, bytes]]]:
    """Accept the bridge, answer CONNECT, read what it sends for a moment."""
    server.settimeout(15)
    conn, _ = server.accept()
    conn.settimeout(5)
    first, _body = _read_packet(conn)
    assert first >> 4 == 1, "CONNECT expected"
    conn.sendall(bytes([0x20, 2, 1 if session_present else 0, 0]))
    return conn, []


def _publish_id(first: int, body: bytes) -> tuple[str, int, bool]:
    (tlen,) = struct.unpack_from("!H", body)
    topic = body[2:2 + tlen].decode()
    (pid,) = struct.unpack_from("!H", body, 2 + tlen)
    return topic, pid, bool(first & 0x08)


def test_qos2_in_flight_at_a_crash_is_resent_with_its_packet_id(procs: Any) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    edge: BrokerProc = procs("edge", extra=bridge_section(port, qos=2)).start()
    try:
        conn, _ = _remote_session(server, session_present=False)
        publish_all(edge.port, 1, 2)
        first, body = _read_packet(conn)
        assert first >> 4 == 3 and (first >> 1) & 3 == 2, f"PUBLISH QoS 2 expected: {first:#x}"
        topic, pid, dup = _publish_id(first, body)
        assert (topic, dup) == ("site-7/sensors/0", False)
        conn.sendall(bytes([0x50, 2]) + struct.pack("!H", pid))  # PUBREC: the remote has it
        time.sleep(0.3)  # (the edge's PUBREL may come; no PUBCOMP is sent)
        edge.kill()
        conn.close()
        edge.start()
        conn, _ = _remote_session(server, session_present=True)
        assert "1 message(s) restored for the remote (1 in flight)" in edge.log_text()
        first, body = _read_packet(conn)
        # resent with its identifier and DUP (a PUBREL is fine too: the remote had it)
        if first >> 4 == 6:
            assert body[:2] == struct.pack("!H", pid)
        else:
            assert first >> 4 == 3, f"PUBLISH or PUBREL expected: {first:#x}"
            assert _publish_id(first, body) == (topic, pid, True)
            conn.sendall(bytes([0x50, 2]) + struct.pack("!H", pid))  # PUBREC again
            first, body = _read_packet(conn)
            assert first >> 4 == 6 and body[:2] == struct.pack("!H", pid), "PUBREL expected"
        conn.sendall(bytes([0x70, 2]) + struct.pack("!H", pid))  # PUBCOMP: done
        time.sleep(0.3)
        conn.close()
        edge.kill()  # nothing is left to resend after that
        edge.start()
        conn, _ = _remote_session(server, session_present=True)
        conn.settimeout(1.0)
        with pytest.raises(TimeoutError):
            _read_packet(conn)
        conn.close()
    finally:
        server.close()


# -- the queue's bound --------------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "expected"), [("drop_oldest", range(5, 15)),
                                                  ("drop_new", range(10))])
def test_full_backlog_follows_its_policy_and_counts_drops(procs: Any, policy: str,
                                                          expected: range) -> None:
    cloud_port = free_port()
    http_port = free_port()
    extra = bridge_section(cloud_port, queue={"max_messages": 10, "full_policy": policy})
    extra["http"] = {"enabled": True, "bind": f"127.0.0.1:{http_port}"}
    edge: BrokerProc = procs("edge", extra=extra).start()
    publish_all(edge.port, 15, 1)
    # (no proxy: the environment's http_proxy must not see loopback requests)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read().decode()
    assert 'mqttbroker_bridge_dropped_total{bridge="cloud"} 5.0' in text, text[-2000:]
    assert 'mqttbroker_bridge_queued_messages{bridge="cloud"} 10.0' in text, text[-2000:]
    # what is on disk is the queue the policy left: the edge goes down, the cloud and its
    # subscriber come up (before the bridge can reach them), then the edge again
    edge.kill()
    cloud: BrokerProc = procs("cloud", port=cloud_port).start()
    inbox = CloudInbox(cloud.port, 1)
    try:
        edge.start()
        got = inbox.wait(10)
        time.sleep(0.5)
        assert got == [f"m{i}".encode() for i in expected]
    finally:
        inbox.close()


def test_inbound_is_acknowledged_to_the_remote_only_once_it_is_ours_on_disk(
        procs: Any) -> None:
    """A raw remote publishes 20 QoS 1 messages over the bridge's ``in`` rule, each PUBACKed;
    the edge is killed with SIGKILL the moment the last PUBACK arrives. With ``sync: commit``
    all 20 are in the offline persistent session of a local subscriber after the restart."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    extra = bridge_section(port)
    extra["bridges"]["cloud"]["topics"] = [{"pattern": "cmd/#", "direction": "in", "qos": 1}]
    edge: BrokerProc = procs("edge", extra=extra)
    edge.start()
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "dev-offline", clean_session=False)
    subscribed = threading.Event()
    dev.on_subscribe = lambda *_a: subscribed.set()
    dev.connect("127.0.0.1", edge.port)
    dev.loop_start()
    dev.subscribe("cmd/#", 1)
    assert subscribed.wait(5)
    dev.disconnect()
    dev.loop_stop()
    try:
        conn, _ = _remote_session(server, session_present=False)
        first, body = _read_packet(conn)
        assert first == 0x82, f"SUBSCRIBE expected: {first:#x}"
        conn.sendall(bytes([0x90, 3]) + body[:2] + b"\x01")  # SUBACK, QoS 1
        for pid in range(1, 21):
            topic = b"cmd/open"
            conn.sendall(bytes([0x32, 2 + len(topic) + 2 + 2]) + struct.pack("!H", len(topic))
                         + topic + struct.pack("!H", pid) + b"%02d" % pid)
            first, body = _read_packet(conn)
            assert (first, body) == (0x40, struct.pack("!H", pid)), "PUBACK expected"
        edge.kill()  # at once: anything acknowledged must be on disk already
        conn.close()
    finally:
        server.close()
    edge.start()
    got: list[bytes] = []
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, "dev-offline", clean_session=False)
    dev.on_message = lambda _c, _u, m: got.append(m.payload)
    dev.connect("127.0.0.1", edge.port)
    dev.loop_start()
    try:
        deadline = time.monotonic() + 10
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b"%02d" % i for i in range(1, 21)], edge.log_tail()
    finally:
        dev.disconnect()
        dev.loop_stop()
