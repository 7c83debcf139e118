"""The verifying subscriber: per-device sequence numbers, loss, duplicates, reordering and
end-to-end latency, per QoS."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .device import TOPIC_ROOT
from .payload import PayloadError, decode
from .report import Timeline

SESSION_EXPIRY = 300  # seconds the verifier's session outlives it


class Verifier:
    """Subscribes to every device's telemetry at QoS 2 (so each message arrives at the QoS it
    was published with) and keeps what arrived."""

    def __init__(self, host: str, port: int, timeline: Timeline) -> None:
        self.host = host
        self.port = port
        self.timeline = timeline
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, int], set[int]] = {}  # (device, qos) -> seqs delivered
        self.last: dict[tuple[str, int], int] = {}
        self.duplicates = [0, 0, 0]
        self.reordered = [0, 0, 0]
        self.delivered = [0, 0, 0]  # distinct messages
        self.bad_payloads = 0
        self.latencies: list[float] = []
        self.last_arrival = time.monotonic()
        self.subscribed = threading.Event()
        # MQTT 5 with a session that outlives a broker restart (when the broker keeps
        # sessions) and expires on its own after the run; reconnects fast after an outage
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"fleet-verifier-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; return once the subscription is acknowledged."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY
        props.ReceiveMaximum = 65535
        # a clean start the first time only: reconnects resume the session, or what the
        # broker queued for us while we were away would be thrown out
        self.client.connect(self.host, self.port, keepalive=30,
                            clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            raise RuntimeError(f"verifier could not subscribe at {self.host}:{self.port}")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any) -> None:
        if not flags.session_present:  # a broker that lost our session: subscribe again
            client.subscribe(f"{TOPIC_ROOT}/+/telemetry", qos=2)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            doc = decode(msg.payload)
        except PayloadError:
            self.bad_payloads += 1
            return
        qos = msg.qos
        key = (doc["id"], qos)
        seq = doc["seq"]
        latency_ms = (now - doc["ts"]) * 1000.0
        with self.lock:
            self.last_arrival = time.monotonic()
            seen = self.seen.setdefault(key, set())
            if seq in seen:
                self.duplicates[qos] += 1
                return
            seen.add(seq)
            self.delivered[qos] += 1
            last = self.last.get(key, -1)
            if seq < last:
                self.reordered[qos] += 1
            else:
                self.last[key] = seq
            self.latencies.append(latency_ms)
            self.timeline.add_delivered(now, latency_ms)

    def wait_quiet(self, quiet: float, limit: float) -> None:
        """Wait until nothing arrived for ``quiet`` seconds, at most ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.lock:
                idle = time.monotonic() - self.last_arrival
            if idle >= quiet:
                return
            time.sleep(0.1)

    def lost(self, acked: dict[str, dict[int, list[int]]]) -> list[int]:
        """Per QoS: messages the broker acknowledged (QoS 1/2) or the device wrote (QoS 0)
        that never arrived."""
        lost = [0, 0, 0]
        with self.lock:
            for device, per_qos in acked.items():
                for qos, seqs in per_qos.items():
                    seen = self.seen.get((device, qos), set())
                    lost[qos] += len(set(seqs) - seen)
        return lost

    def stop(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
