"""The fleet's command sender: commands for sleeping MQTT-SN sensors, published on the MQTT
side while they sleep, so the gateway has to keep them until the sensor wakes.

It watches the devices' status topics; when one of the sensors it serves says ``asleep``
(live, not a retained left-over of an earlier run), it publishes ``commands`` commands
(``{"c": N}``, N counting from 0 per device) to ``fleet/<id>/cmd`` at QoS 1, ``delay``
seconds later (by then the sensor's DISCONNECT has reached the gateway). A command counts as
sent when the broker acknowledged it (PUBACK); the sensors record what they got, and the
fleet compares the two (:func:`command_report`)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from .device import TOPIC_ROOT

COMMAND_DELAY = 0.3  # seconds between a sensor's "asleep" and its commands (at most)


class CommandSender:
    """Publishes commands to the sleeping sensors in ``device_ids`` until :meth:`stop` or
    ``until`` (seconds since the epoch), whichever comes first."""

    def __init__(self, host: str, port: int, device_ids: Iterable[str], per_sleep: int,
                 until: float, delay: float = COMMAND_DELAY) -> None:
        self.ids = set(device_ids)
        self.per_sleep = per_sleep
        self.until = until
        self.delay = delay
        self.host, self.port = host, port
        self.lock = threading.Lock()
        self.next_number: dict[str, int] = {}
        # (device, number, paho's handle: is_published() once the broker's PUBACK came)
        self.published: list[tuple[str, int, mqtt.MQTTMessageInfo]] = []
        self.due: deque[tuple[float, str]] = deque()
        self.asleep_seen = 0
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"fleet-commands-{uuid.uuid4().hex[:8]}",
                                  protocol=MQTTProtocolVersion.MQTTv311)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = lambda c, *a: c.subscribe(f"{TOPIC_ROOT}/+/status", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self._thread = threading.Thread(target=self._send_loop, name="fleet-commands",
                                        daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"command sender could not subscribe at {self.host}:{self.port}")
        self._thread.start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:  # a status left over from before: not a sensor going to sleep now
            return
        parts = msg.topic.split("/")
        if len(parts) != 3 or parts[1] not in self.ids or msg.payload != b"asleep":
            return
        with self.lock:
            self.asleep_seen += 1
            self.due.append((time.monotonic() + self.delay, parts[1]))

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            batch: list[str] = []
            with self.lock:
                while self.due and self.due[0][0] <= now:
                    batch.append(self.due.popleft()[1])
            if time.time() >= self.until:
                batch = []
            for device in batch:
                for _ in range(self.per_sleep):
                    # not under self.lock: paho's network thread takes its own locks and
                    # then calls on_message, which takes self.lock
                    number = self.next_number.get(device, 0)
                    self.next_number[device] = number + 1
                    info = self.client.publish(f"{TOPIC_ROOT}/{device}/cmd",
                                               json.dumps({"c": number}).encode(), qos=1)
                    self.published.append((device, number, info))
            self._stop.wait(0.02)

    def wait_acked(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout`` s) for the broker's PUBACK of every command."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(
                info.is_published() for _, _, info in list(self.published)):
            time.sleep(0.05)

    @property
    def sent(self) -> dict[str, list[int]]:
        """Per device, the commands the broker acknowledged."""
        out: dict[str, list[int]] = {}
        for device, number, info in list(self.published):
            if info.is_published():
                out.setdefault(device, []).append(number)
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.client.disconnect()
        self.client.loop_stop()


def command_report(sent: Mapping[str, list[int]],
                   got: Mapping[str, list[tuple[int, bool, bool]]]) -> dict[str, int]:
    """Commands sent (acknowledged by the broker) against what the sensors recorded:
    delivered (distinct), lost, duplicates, collected at a wake-up, devices that got any."""
    out = {"sent": 0, "delivered": 0, "lost": 0, "duplicates": 0, "collected_on_wakeup": 0,
           "unexpected": 0, "devices_commanded": 0, "devices_served": 0}
    for device in set(sent) | set(got):
        want = set(sent.get(device, []))
        numbers = [n for n, _, _ in got.get(device, [])]
        have = set(numbers)
        out["sent"] += len(want)
        out["delivered"] += len(have & want)
        out["lost"] += len(want - have)
        out["duplicates"] += len(numbers) - len(have)
        out["unexpected"] += len(have - want)
        out["collected_on_wakeup"] += len({n for n, woke, _ in got.get(device, []) if woke})
        out["devices_commanded"] += bool(want)
        out["devices_served"] += bool(want) and want <= have
    return out
