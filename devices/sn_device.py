"""One simulated MQTT-SN sensor that sleeps between readings, on the worker's asyncio loop.

Like :class:`devices.device.Device` (same sensor models, seeding, payloads and bookkeeping,
so the verifier proves the same thing), but over UDP with :mod:`devices.mqttsn`, and asleep
most of the time, as a battery sensor is:

1. CONNECT (the first time with CleanSession, after that without; a will ``offline`` on its
   status topic), REGISTER its telemetry and status topics, SUBSCRIBE to its command topic at
   QoS 1, PUBLISH the retained status ``online``, a QoS -1 beacon if the profile has one, and
   every reading taken since the last time, at the sensor's QoS (0 or 1: a QoS 2 kind is sent
   at QoS 1). A QoS 1 reading counts as sent once the gateway's PUBACK came.
2. PUBLISH the retained status ``asleep`` (what the dashboard shows), then DISCONNECT with
   the profile's ``sleep.duration``.
3. Every ``sleep.awake_every`` seconds, ``sleep.wakes`` times: a beacon, then PINGREQ with its
   client id; the gateway delivers what waited (REGISTER -> REGACK, PUBLISH -> PUBACK) and
   PINGRESP ends the wake-up. Then back to 1.

The sensor keeps reading on its own schedule while the radio sleeps (readings wait in a
buffer). Commands (``{"c": N}`` on ``fleet/<id>/cmd``, published by the fleet while the
sensor sleeps) are recorded with whether they came during a wake-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any

from .device import TOPIC_ROOT, Stats, device_sensor, take_reading, telemetry_topic
from .mqttsn import (
    ACCEPTED,
    TOPIC_PREDEFINED,
    TOPIC_SHORT,
    SnClient,
    SnError,
    SnTimeout,
    short_topic_id,
)
from .profile import Profile
from .seeding import device_rng, link_rng

log = logging.getLogger("devices")

RETRY_INTERVAL = 1.0  # seconds before the client resends a request (loopback gateway)
MAX_RETRIES = 4


def command_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/cmd"


class SnDevice:
    """A sleeping MQTT-SN sensor; ``gateway`` is the ``mqttsn`` listener's (host, port)."""

    protocol = "mqttsn"

    def __init__(self, index: int, kind: str, gateway: tuple[str, int], profile: Profile,
                 stats: Stats, loop: asyncio.AbstractEventLoop, seed: int = 0,
                 id_prefix: str = "sn", midnight: float | None = None) -> None:
        self.index = index
        self.id = f"{id_prefix}-{index:06d}"
        self.status_topic = f"{TOPIC_ROOT}/{self.id}/status"
        self.kind = kind
        self.profile = profile
        self.stats = stats
        self.loop = loop
        self.sensor = device_sensor(kind, profile, seed, index, midnight)
        self.qos = min(self.sensor.qos, 1)  # this client publishes at QoS -1, 0 and 1
        self.traits_rng = device_rng(seed, index)
        self.link_rng = link_rng(seed, index)
        self.seq = 0
        self.beacon_seq = 0
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=profile.buffer_max)
        self.running = True
        self.connected = False  # active (CONNECTed, not asleep)
        self.asleep = False
        self.in_wakeup = False  # between our PINGREQ and the gateway's PINGRESP
        self.backoff = profile.backoff_initial
        self.acked = stats.acked.setdefault(self.id, {0: [], 1: [], 2: []})
        self.commands = stats.commands.setdefault(self.id, [])
        self.pending: dict[int, int] = {}  # (unused: requests are stop-and-wait)
        self.client = SnClient(self.id, gateway, retry_interval=RETRY_INTERVAL,
                               max_retries=MAX_RETRIES, on_message=self._on_message)
        self.task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._ids: dict[str, int] = {}

    # -- schedule -----------------------------------------------------------------------------

    def start(self, delay: float) -> None:
        self.task = self.loop.create_task(self._run(delay))
        self._later(delay + self.traits_rng.uniform(0, self.sensor.interval), self._tick)

    def _later(self, delay: float, fn: Any) -> None:
        self._timers.append(self.loop.call_later(max(delay, 0.0), fn))
        if len(self._timers) > 16:
            self._timers = [t for t in self._timers if not t.cancelled()
                            and t.when() > self.loop.time()]

    def _tick(self) -> None:
        if not self.running:
            return
        self._later(self.sensor.interval, self._tick)
        self.report()

    def report(self) -> None:
        """Take a reading; it waits in the buffer until the sensor is next awake."""
        taken = take_reading(self, time.time())
        if taken is not None:
            self.buffer.append(taken)

    def misc(self) -> None:
        """(Paho devices' keep-alive hook; the MQTT-SN client keeps its own time.)"""

    def storm(self) -> None:
        """(Reconnect storms are for TCP devices.)"""

    # -- the cycle ----------------------------------------------------------------------------

    async def _run(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.client.open()
        except OSError as exc:
            log.warning("%s: cannot open a UDP socket: %s", self.id, exc)
            return
        first = True
        while self.running:
            try:
                await self._active(clean=first)
                first = False
                await self._sleep_cycle()
            except (SnTimeout, SnError, OSError) as exc:
                log.info("%s: %s", self.id, exc)
                self._set_connected(False)
                self.asleep = False
                self.stats.reconnects += 1
                await self._backoff()
        await self._finish()

    async def _backoff(self) -> None:
        p = self.profile
        delay = self.backoff * (1 + self.link_rng.uniform(-p.backoff_jitter, p.backoff_jitter))
        self.backoff = min(self.backoff * 2, p.backoff_max)
        await asyncio.sleep(delay)

    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            self.connected = value
            self.stats.connected += 1 if value else -1

    async def _connect(self, *, clean: bool, will: bool = True) -> None:
        code = await self.client.connect(
            self.profile.keepalive, clean=clean,
            will=(self.status_topic, b"offline") if will else None)
        if code != ACCEPTED:
            raise SnError(f"CONNACK return code {code}")
        self._set_connected(True)
        self.asleep = False
        self.backoff = self.profile.backoff_initial
        for topic in (telemetry_topic(self.id), self.status_topic):
            tid = await self.client.register(topic)
            if not tid:
                raise SnError(f"REGISTER {topic} refused")
            self._ids[topic] = tid

    async def _active(self, *, clean: bool) -> None:
        """Connect, report everything read since last time, and go to sleep."""
        await self._connect(clean=clean)
        granted, _ = await self.client.subscribe(command_topic(self.id), 1)
        if granted < 0:
            raise SnError("SUBSCRIBE to the command topic refused")
        await self._status(b"online")
        self._beacon()
        await self._flush()
        if not self.running:
            return
        await self._status(b"asleep")
        await self.client.sleep(int(self.profile.sleep["duration"]))
        self._set_connected(False)
        self.asleep = True
        self.stats.sleeps += 1

    async def _flush(self) -> None:
        """Send what was read since the last time, oldest first, stop-and-wait at QoS 1."""
        tid = self._ids[telemetry_topic(self.id)]
        while self.buffer:
            seq, data = self.buffer[0]
            if self.qos == 0:
                await self.client.publish(tid, data, 0)
                self.buffer.popleft()
                self.stats.sent[0] += 1
                self.acked[0].append(seq)
                continue
            code = await self.client.publish(tid, data, 1)
            if code != ACCEPTED:  # e.g. congestion: try again at the next wake-up
                log.info("%s: PUBACK return code %d", self.id, code)
                break
            self.buffer.popleft()
            self.stats.sent[1] += 1
            self.acked[1].append(seq)

    async def _status(self, state: bytes) -> None:
        code = await self.client.publish(self._ids[self.status_topic], state, 1, retain=True)
        if code != ACCEPTED:
            raise SnError(f"status {state.decode()}: PUBACK return code {code}")

    async def _sleep_cycle(self) -> None:
        if not self.asleep:
            return
        s = self.profile.sleep
        wakes = int(s["wakes"])
        for _ in range(max(wakes, 1)):
            await asyncio.sleep(s["awake_every"])
            if wakes:
                await self._wake()
            if not self.running:
                return

    async def _wake(self) -> None:
        self._beacon()
        self.in_wakeup = True
        try:
            await self.client.wake()
        finally:
            self.in_wakeup = False
        self.stats.wakeups += 1

    async def _finish(self) -> None:
        """The run is over: collect what waits, say ``offline`` and disconnect for good."""
        try:
            if self.asleep:
                await self._wake()
                await self._connect(clean=False, will=False)
            if self.connected:
                await self._flush()
                await self._status(b"offline")
                await self.client.disconnect()
        except (SnTimeout, SnError, OSError) as exc:
            log.info("%s: at the end: %s", self.id, exc)
        self._set_connected(False)
        self.asleep = False
        self.client.close()

    def _beacon(self) -> None:
        b = self.profile.beacon
        if not b:
            return
        payload = json.dumps({"id": self.id, "b": self.beacon_seq},
                             separators=(",", ":")).encode()
        self.beacon_seq += 1
        if "topic_id" in b:
            self.client.publish_minus_one(int(b["topic_id"]), payload, TOPIC_PREDEFINED)
        else:
            self.client.publish_minus_one(short_topic_id(b["topic"]), payload, TOPIC_SHORT)
        self.stats.beacons += 1

    def _on_message(self, topic: str | None, payload: bytes, qos: int, dup: bool) -> None:
        if topic is not None and topic != command_topic(self.id):
            return
        try:
            cmd = json.loads(payload)
            number = int(cmd["c"])
        except (ValueError, KeyError, TypeError):
            log.info("%s: command %r not understood", self.id, payload[:40])
            return
        self.commands.append((number, self.in_wakeup, dup))

    def stop(self) -> None:
        """Cancel what is left (after :meth:`_finish` had its chance)."""
        self.running = False
        for t in self._timers:
            t.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.client.close()
