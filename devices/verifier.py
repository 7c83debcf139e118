"""The verifying subscriber: per-device sequence numbers, loss, duplicates, reordering and
end-to-end latency, per QoS.

It may subscribe at another broker than the one the devices publish to (an edge gateway: the
devices publish to an edge broker that bridges to the cloud, the verifier subscribes at the
cloud). A message then crosses a bridge whose own QoS may be lower than the device's, so
every count is kept under the QoS the device published with (:meth:`Verifier.expect_qos`),
and an arrival at a lower QoS is counted in :attr:`Verifier.downgraded`."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
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
        self.downgraded = [0, 0, 0]  # arrived at a lower QoS than the device published with
        self.during_cuts = [0, 0, 0]  # distinct messages made while the link was cut
        self.expected_qos: dict[str, int] = {}  # sensor kind -> QoS its devices publish at
        self.device_qos: dict[str, int] = {}  # device -> QoS, where it differs from its kind's
        self.beacon_topic: str | None = None
        self.beacons: set[tuple[str, int]] = set()  # (device, beacon number) arrived
        self.cut_windows: list[tuple[float, float]] = []  # (from, to), seconds since the epoch
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

    def expect_qos(self, by_kind: Mapping[str, int]) -> None:
        """The QoS each sensor kind publishes at (before :meth:`start`): arrivals are counted
        under it, and one that arrives at a lower QoS (a bridge in between with a lower QoS)
        is also counted in :attr:`downgraded`. Without it, the QoS of arrival counts."""
        self.expected_qos = dict(by_kind)

    def expect_device_qos(self, by_device: Mapping[str, int]) -> None:
        """The QoS of devices that do not publish at their kind's (MQTT-SN sensors publish a
        QoS 2 kind at QoS 1), before :meth:`start`."""
        self.device_qos = dict(by_device)

    def watch_beacons(self, topic: str) -> None:
        """Also count the MQTT-SN sensors' QoS -1 beacons on ``topic`` (before :meth:`start`):
        ``{"id": DEVICE, "b": N}``, distinct pairs in :attr:`beacons`."""
        self.beacon_topic = topic

    def watch_cuts(self, windows: Sequence[tuple[float, float]]) -> None:
        """Count in :attr:`during_cuts` the messages made while the link was cut, ``windows``
        as ``(from, to)`` in seconds since the epoch (before :meth:`start`)."""
        self.cut_windows = sorted(windows)

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
            if self.beacon_topic is not None:
                client.subscribe(self.beacon_topic, qos=0)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if self.beacon_topic is not None and msg.topic == self.beacon_topic:
            self._beacon(bytes(msg.payload))
            return
        try:
            doc = decode(msg.payload)
        except PayloadError:
            self.bad_payloads += 1
            return
        qos = self.device_qos.get(doc["id"], self.expected_qos.get(doc["k"], msg.qos))
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
            if msg.qos < qos:
                self.downgraded[qos] += 1
            made = doc["ts"]
            if any(begin <= made < end for begin, end in self.cut_windows):
                self.during_cuts[qos] += 1
            last = self.last.get(key, -1)
            if seq < last:
                self.reordered[qos] += 1
            else:
                self.last[key] = seq
            self.latencies.append(latency_ms)
            self.timeline.add_delivered(now, latency_ms)

    def _beacon(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            key = (str(doc["id"]), int(doc["b"]))
        except (ValueError, KeyError, TypeError):
            self.bad_payloads += 1
            return
        with self.lock:
            self.beacons.add(key)

    def delivered_by(self, devices: set[str]) -> list[int]:
        """Distinct messages delivered per QoS from ``devices`` only."""
        out = [0, 0, 0]
        with self.lock:
            for (device, qos), seqs in self.seen.items():
                if device in devices:
                    out[qos] += len(seqs)
        return out

    def wait_complete(self, acked: dict[str, dict[int, list[int]]], quiet: float,
                      limit: float) -> None:
        """Wait until every QoS 1/2 message in ``acked`` has arrived and then nothing arrived
        for ``quiet`` seconds (late duplicates, QoS 0 stragglers), at most ``limit`` seconds.
        Across a bridge, what it queued while its link was down comes long after the
        devices stopped; a run that did lose messages waits the whole ``limit``."""
        deadline = time.monotonic() + limit
        with self.lock:  # what is still missing, once; then only that is looked at again
            missing = [(device, qos, seq) for device, per_qos in acked.items()
                       for qos, seqs in per_qos.items() if qos
                       for seq in set(seqs) - self.seen.get((device, qos), set())]
        while time.monotonic() < deadline:
            with self.lock:
                if missing:
                    missing = [m for m in missing
                               if m[2] not in self.seen.get((m[0], m[1]), ())]
                idle = time.monotonic() - self.last_arrival
            if not missing and idle >= quiet:
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
