"""Faults on a bridge (issue 16, point 4), with real processes: a device publishes a numbered
stream at QoS 2 to an edge broker (ours, SQLite ``sync: commit``) that bridges it at QoS 2 to a
cloud broker (ours, durable too); the cloud is killed with SIGKILL three times mid-stream and the
edge once. Every message the edge acknowledged to the device reaches the cloud's subscriber
exactly once. The cloud's retained state topic shows the edge's will (0) after the edge's crash
and 1 once it is back; the edge's ``/metrics`` show the bridge up, an empty backlog and nothing
dropped."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from devices.paho_client import Client

from .brokerproc import BrokerProc, broker_procs, free_port
from .helpers import unique_id

pytestmark = pytest.mark.timeout(120)

MAX_COUNT = 20_000  # the device's stream is bounded in count ...
MAX_SECONDS = 60.0  # ... and in time


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Any]:
    with broker_procs(tmp_path) as make:
        yield make


class Verifier:
    """A persistent QoS 2 subscriber at the cloud (it reconnects by itself after a crash)."""

    def __init__(self, port: int) -> None:
        self.got: list[bytes] = []
        self.states: list[bytes] = []
        self.subscribed = threading.Event()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, unique_id("verify-"),
                                      clean_session=False)
        c.reconnect_delay_set(0.1, 0.5)
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert self.subscribed.wait(10), "the verifier got no SUBACK"

    def _on_connect(self, c: mqtt.Client, *_a: Any) -> None:
        c.subscribe([("site/stream", 2), ("$SYS/broker/connection/+/state", 1)])

    def _on_message(self, _c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
        (self.states if m.topic.startswith("$SYS") else self.got).append(m.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Device(threading.Thread):
    """Publishes a numbered stream at QoS 2 to the edge, one message at a time, until told to
    stop; a message counts as acknowledged once PUBCOMP came. Its session is persistent and
    paho reconnects by itself, resending what was in flight (DUP), so exactly once holds from
    the device on too [MQTT-4.3.3] (a clean session would make a resend a new message). The
    client is devices.paho_client's: paho-mqtt 2.2.0's own resends a PUBLISH after its PUBREL
    once two reconnect attempts have failed (while the edge is down), and the edge, which
    released the packet identifier on the PUBREL, rightly takes it as a new message."""

    def __init__(self, port: int) -> None:
        super().__init__(name="device", daemon=True)
        self.acked: list[int] = []
        self.unacked: list[int] = []
        self.stop = threading.Event()
        self._done: set[int] = set()  # packet ids completed (PUBCOMP), from paho's thread
        c = self.client = Client(mqtt.CallbackAPIVersion.VERSION2, unique_id("dev-"),
                                 clean_session=False)
        c.reconnect_delay_set(0.1, 0.5)
        # on_publish, not MQTTMessageInfo: a message published while paho was reconnecting
        # is sent after it, but its info keeps saying "not connected"
        c.on_publish = lambda _c, _u, mid, *_a: self._done.add(mid)
        c.connect("127.0.0.1", port)
        c.loop_start()

    def run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        for i in range(MAX_COUNT):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            mid = self.client.publish("stream", str(i).encode(), 2).mid
            wait = time.monotonic() + 20  # (an edge restart and paho's reconnect)
            while mid not in self._done and time.monotonic() < wait:
                time.sleep(0.002)
            (self.acked if mid in self._done else self.unacked).append(i)
            self._done.discard(mid)
            time.sleep(0.002)

    def close(self) -> None:
        self.stop.set()
        if self.ident is not None:  # (started)
            self.join(30)
        self.client.disconnect()
        self.client.loop_stop()


def metrics(port: int) -> str:
    # (no proxy: the environment's http_proxy must not see loopback requests)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


@pytest.mark.parametrize("protocol", ["mqttv311", "mqttv5"])
def test_cloud_killed_three_times_and_edge_once_loses_nothing_acknowledged(
        procs: Any, protocol: str) -> None:
    cloud: BrokerProc = procs("cloud").start()
    http_port = free_port()
    edge: BrokerProc = procs("edge", extra={
        "http": {"enabled": True, "bind": f"127.0.0.1:{http_port}"},
        "bridges": {"cloud": {
            "addresses": [f"127.0.0.1:{cloud.port}"], "protocol": protocol,
            "client_id": "edge-1", "clean_session": False, "restart_timeout": [0.1, 0.3],
            "keepalive": 5,
            "topics": [{"pattern": "stream", "direction": "out", "qos": 2,
                        "remote_prefix": "site/"}]}}}).start()
    verifier = Verifier(cloud.port)
    device = Device(edge.port)

    def progress(more: int) -> None:
        """Wait until ``more`` further messages reached the verifier: the stream flows."""
        want = len(verifier.got) + more
        deadline = time.monotonic() + 20
        while len(verifier.got) < want:
            assert time.monotonic() < deadline, f"the stream stalled at {len(verifier.got)}"
            assert device.is_alive(), "the device stopped early"
            time.sleep(0.01)

    def bridge_up() -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                if 'mqttbroker_bridge_connected{bridge="cloud"} 1.0' in metrics(http_port):
                    return
            except OSError:
                pass  # (the edge's HTTP listener is not up yet)
            assert time.monotonic() < deadline, "the bridge did not reconnect"
            time.sleep(0.05)

    faults: list[tuple[str, int]] = []  # (what, messages the verifier had then)
    device.start()
    try:
        for _ in range(3):  # the remote, mid-stream, three times
            progress(30)
            faults.append(("cloud killed", len(verifier.got)))
            cloud.kill()
            time.sleep(0.3)
            cloud.start()
            bridge_up()
        progress(30)
        faults.append(("edge killed", len(verifier.got)))
        edge.kill()  # ours, once
        time.sleep(0.3)
        edge.start()
        bridge_up()
        progress(30)
        device.close()
        acked = set(device.acked)
        assert not device.unacked, device.unacked  # (the edge came back: all acknowledged)
        deadline = time.monotonic() + 30
        while not acked <= {int(p) for p in verifier.got} and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # (a duplicate would show now)
        got = [int(p) for p in verifier.got]
        missing = sorted(acked - set(got))
        assert not missing, f"acknowledged but lost: {missing[:20]}\n{edge.log_tail()}"
        dups = sorted({n for n in got if got.count(n) > 1})
        at = [(n, [k for k, m in enumerate(got) if m == n]) for n in dups[:5]]
        assert not dups, f"QoS 2 delivered twice: {at} (at positions); faults: {faults}"
        assert set(got) <= acked
        # the edge's crash: its will at the cloud said 0, its return 1 [notifications]
        states = verifier.states
        assert b"0" in states and states[-1] == b"1", (states, faults)
        text = metrics(http_port)
        assert 'mqttbroker_bridge_connected{bridge="cloud"} 1.0' in text
        assert 'mqttbroker_bridge_queued_messages{bridge="cloud"} 0.0' in text
        assert 'mqttbroker_bridge_dropped_total{bridge="cloud"} 0.0' in text
    finally:
        device.close()
        verifier.close()
