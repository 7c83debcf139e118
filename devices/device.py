"""One simulated device: a sensor model behind a paho-mqtt client, run without threads.

Many devices share one asyncio loop per process: paho's external-loop hooks
(``on_socket_open``/``on_socket_register_write``...) register each socket with the loop, so
there is no thread per device. A device behaves like a constrained one: small keep-alive,
QoS by sensor type, duty cycle, flaky links (abrupt drops, silent half-open sockets),
reconnect with exponential backoff and jitter, a persistent session and an offline buffer, a
retained birth message with a last will on its status topic, and a command topic it obeys
(MQTT 5 devices answer with request/response).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections import deque
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .paho_client import Client
from .payload import decode_raw, encode, make_doc
from .profile import Profile
from .seeding import device_rng, link_rng, run_midnight, sensor_rng
from .sensors import DEFAULT_SUPERVISION, Sensor, make_sensor

log = logging.getLogger("devices")

TOPIC_ROOT = "fleet"


def telemetry_topic(device_id: str) -> str:
    """Where a device publishes its readings."""
    return f"{TOPIC_ROOT}/{device_id}/telemetry"


class Stats:
    """What one worker's devices did, shared by all of them."""

    __slots__ = ("acked", "beacons", "commands", "connected", "published", "reconnects",
                 "sent", "sleeps", "wakeups")

    def __init__(self) -> None:
        self.published = [0, 0, 0]  # readings handed to the client, per QoS
        self.sent = [0, 0, 0]  # QoS 0 written / QoS 1-2 acknowledged, per QoS
        self.acked: dict[str, dict[int, list[int]]] = {}  # device -> QoS -> seqs confirmed
        self.connected = 0
        self.reconnects = 0
        # MQTT-SN sleepers: sleep cycles, PINGREQ wake-ups, QoS -1 beacons sent, and the
        # commands each got: device -> [(command number, collected at a wake-up, dup flag)]
        self.sleeps = 0
        self.wakeups = 0
        self.beacons = 0
        self.commands: dict[str, list[tuple[int, bool, bool]]] = {}


class Reporting(Protocol):
    """What :func:`take_reading` needs of a device (TCP or MQTT-SN)."""

    id: str
    kind: str
    qos: int
    seq: int
    sensor: Sensor
    profile: Profile
    stats: Stats


def take_reading(dev: Reporting, now: float) -> tuple[int, bytes] | None:
    """``dev``'s sensor reading now, as its next sequence number and the encoded document
    (counted as published at its QoS); None when the sensor has nothing to say."""
    reading = dev.sensor.reading(now)
    if reading is None:
        return None
    seq = dev.seq
    dev.seq += 1
    dev.stats.published[dev.qos] += 1
    return seq, encode(make_doc(dev.id, dev.kind, seq, now, reading), dev.profile.payload)


def device_sensor(kind: str, profile: Profile, seed: int, index: int,
                  midnight: float | None) -> Sensor:
    """Device ``index``'s sensor model, as the profile and the run's seed make it (its
    reporting interval scaled like the profile's supervision)."""
    if midnight is None:
        midnight = run_midnight(time.time(), seed, profile.start_hour)
    supervision = (DEFAULT_SUPERVISION if profile.supervision is None
                   else profile.supervision) * profile.interval_scale
    sensor = make_sensor(kind, sensor_rng(seed, index), qos=profile.qos.get(kind),
                         midnight=midnight, supervision=supervision)
    sensor.interval *= profile.interval_scale
    return sensor


class Device:
    """A simulated sensor with its MQTT client.

    What it sends is a function of ``seed`` and ``index`` (see :mod:`devices.seeding`): the
    sensor, the device's traits and its network timing each draw from their own generator.
    ``midnight`` is the start of the simulated day the sensor's daily cycle follows (the
    fleet passes one for all its devices); ``None`` starts the day the profile's
    ``start_hour`` (or the seed's) before this device is made.
    """

    def __init__(self, index: int, kind: str, host: str, port: int, profile: Profile,
                 stats: Stats, loop: asyncio.AbstractEventLoop, seed: int = 0,
                 id_prefix: str = "sensor", midnight: float | None = None) -> None:
        self.index = index
        self.id = f"{id_prefix}-{index:06d}"
        self.status_topic = f"{TOPIC_ROOT}/{self.id}/status"  # retained birth, will, goodbye
        self.kind = kind
        self.host = host
        self.port = port
        self.profile = profile
        self.stats = stats
        self.loop = loop
        self.sensor = device_sensor(kind, profile, seed, index, midnight)
        self.qos = self.sensor.qos
        self.traits_rng = device_rng(seed, index)  # drawn only here and in start()
        # backoff jitter and flaky-link timings: how often they are drawn depends on the
        # broker and the OS, so they must not share a generator with what is sent
        self.link_rng = link_rng(seed, index)
        self.v5 = self.traits_rng.random() < profile.v5_fraction
        self.seq = 0
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=profile.buffer_max)
        self._attempted = False
        self.connected = False
        self.running = True
        self.asleep = False
        self.half_open_until = 0.0
        self.backoff = profile.backoff_initial
        self.pending: dict[int, int] = {}  # mid -> seq awaiting PUBACK/PUBCOMP
        self.acked = stats.acked.setdefault(self.id, {0: [], 1: [], 2: []})
        self._sock: socket.socket | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._next_tick: asyncio.TimerHandle | None = None
        self.client = self._make_client()

    # -- the MQTT client ----------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = Client(CallbackAPIVersion.VERSION2, client_id=self.id,
                   protocol=MQTTProtocolVersion.MQTTv5 if self.v5
                   else MQTTProtocolVersion.MQTTv311,
                   clean_session=None if self.v5 else False,
                   reconnect_on_failure=False)
        c.max_inflight_messages_set(20)
        c.max_queued_messages_set(self.profile.buffer_max)
        c.will_set(self.status_topic, b"offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        return c

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._sock = sock
        self.loop.add_reader(sock, self._readable)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._forget_socket(sock)

    def _forget_socket(self, sock: Any) -> None:
        try:
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
        except (ValueError, OSError):  # already closed
            pass
        if self._sock is sock:
            self._sock = None

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self.half_open_until <= time.monotonic():
            self.loop.add_writer(sock, self._writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    def _readable(self) -> None:
        self.client.loop_read(max_packets=50)

    def _writable(self) -> None:
        self.client.loop_write()

    def misc(self) -> None:
        """Called about once a second: keep-alive pings, and the end of a half-open spell."""
        if self.half_open_until and time.monotonic() >= self.half_open_until:
            self.half_open_until = 0.0
            # the device notices its link is dead (no PINGRESP) and starts over
            self._drop("half-open spell over")
            return
        if self._sock is not None and not self.half_open_until:
            self.client.loop_misc()

    # -- connecting ---------------------------------------------------------------------------

    def start(self, delay: float) -> None:
        """Connect after ``delay`` seconds, then report on the sensor's schedule."""
        self._later(delay, self._connect)
        self._next_tick = self._later(delay + self.traits_rng.uniform(0, self.sensor.interval),
                                      self._tick)
        p = self.profile
        if p.duty_awake and p.duty_sleep:
            self._later(delay + p.duty_awake, self._sleep)
        if p.drops_per_hour:
            self._later(delay + self.link_rng.expovariate(p.drops_per_hour / 3600),
                        self._flaky_drop)
        if p.half_open_per_hour:
            self._later(delay + self.link_rng.expovariate(p.half_open_per_hour / 3600),
                        self._flaky_half_open)

    def _later(self, delay: float, fn: Any) -> asyncio.TimerHandle:
        timer = self.loop.call_later(max(delay, 0.0), fn)
        self._timers.append(timer)
        if len(self._timers) > 16:
            self._timers = [t for t in self._timers if not t.cancelled()]
        return timer

    def _connect(self) -> None:
        if not self.running or self.connected or self.asleep:
            return
        props = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.profile.session_expiry
        try:
            if not self._attempted:
                self._attempted = True
                if self.v5:
                    self.client.connect(self.host, self.port, keepalive=self.profile.keepalive,
                                        clean_start=False, properties=props)
                else:
                    self.client.connect(self.host, self.port, keepalive=self.profile.keepalive)
            else:
                self.client.reconnect()
        except (OSError, ValueError) as exc:
            log.debug("%s: connect failed: %s", self.id, exc)
            self._retry()

    def _retry(self) -> None:
        """Exponential backoff with jitter: no thundering herd after an outage."""
        if not self.running:
            return
        p = self.profile
        delay = self.backoff * (1 + self.link_rng.uniform(-p.backoff_jitter, p.backoff_jitter))
        self.backoff = min(self.backoff * 2, p.backoff_max)
        self._later(delay, self._connect)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Properties | None) -> None:
        if rc.is_failure:
            log.info("%s: refused: %s", self.id, rc)
            self._retry()
            return
        self.connected = True
        self.stats.connected += 1
        self.backoff = self.profile.backoff_initial
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        client.subscribe(f"{TOPIC_ROOT}/{self.id}/cmd", qos=1)
        self._flush_buffer()  # what was read while offline, oldest first

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Properties | None) -> None:
        if self.connected:
            self.connected = False
            self.stats.connected -= 1
        if self._sock is not None:
            self._forget_socket(self._sock)
        if self.running and not self.asleep:
            self.stats.reconnects += 1
            self._retry()

    def _drop(self, why: str) -> None:
        """Lose the link abruptly: no DISCONNECT, so the broker publishes the will. The
        socket is shut down under paho, which reads the end of stream and reports the loss."""
        sock = self._sock
        if sock is None:
            return
        log.debug("%s: link drop (%s)", self.id, why)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.loop.add_reader(sock, self._readable)

    # -- behaviour ----------------------------------------------------------------------------

    def _tick(self) -> None:
        if not self.running:
            return
        self._next_tick = self._later(self.sensor.interval, self._tick)
        if self.asleep:
            return
        self.report()

    def report(self) -> None:
        """Take a reading and publish it (or buffer it while offline)."""
        now = time.time()
        taken = take_reading(self, now)
        if taken is None:
            return
        seq, data = taken
        # a tracker out of coverage still reads; it just cannot send (nor can anyone offline)
        covered = self.sensor.in_coverage(now)  # type: ignore[attr-defined]
        if self.connected and covered and not self.buffer:
            self._send(seq, data)
        else:
            self.buffer.append((seq, data))
            if self.connected and covered:
                self._flush_buffer()

    def _flush_buffer(self) -> None:
        while self.buffer and self.connected and self._send(*self.buffer.popleft()):
            pass

    def _send(self, seq: int, data: bytes) -> bool:
        """Publish one reading; False when it went back to the buffer."""
        info = self.client.publish(telemetry_topic(self.id), data, qos=self.qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and self.qos == 0:
            self.buffer.appendleft((seq, data))  # paho keeps only QoS 1/2 while offline
            return False
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return True  # paho's own queue is full: this reading is lost on the device
        self.pending[info.mid] = seq
        return True

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    properties: Properties | None) -> None:
        seq = self.pending.pop(mid, None)
        if seq is None:
            return  # the birth message, a command answer
        self.stats.sent[self.qos] += 1
        self.acked[self.qos].append(seq)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """A command: ``{"interval": seconds}`` changes the reporting interval."""
        try:
            cmd = decode_raw(msg.payload)  # JSON or msgpack
        except ValueError:
            cmd = {}
        result: dict[str, Any] = {"ok": False}
        interval = cmd.get("interval") if isinstance(cmd, dict) else None
        if isinstance(interval, (int, float)) and 0.05 <= interval <= 86400:
            self.sensor.interval = float(interval)
            result = {"ok": True, "interval": float(interval)}
            # a shorter interval applies now, not after the tick the old one scheduled (up to
            # an old interval away: the phase of the first tick is drawn from the seed)
            tick = self._next_tick
            if (tick is not None and not tick.cancelled()
                    and tick.when() - self.loop.time() > self.sensor.interval):
                tick.cancel()
                self._next_tick = self._later(self.sensor.interval, self._tick)
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        if self.v5 and response_topic:
            out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            corr = getattr(props, "CorrelationData", None)
            if corr is not None:
                out.CorrelationData = corr
            client.publish(response_topic, json.dumps(result).encode(), qos=1, properties=out)
        else:
            client.publish(f"{TOPIC_ROOT}/{self.id}/cmd/ack", json.dumps(result).encode(), qos=1)

    def _sleep(self) -> None:
        if not self.running:
            return
        self.asleep = True
        if self.profile.duty_disconnect and self.connected:
            self.client.publish(self.status_topic, b"asleep", qos=1, retain=True)
            self.client.disconnect()
        self._later(self.profile.duty_sleep, self._wake)

    def _wake(self) -> None:
        if not self.running:
            return
        self.asleep = False
        if not self.connected:
            self._connect()
        self._later(self.profile.duty_awake, self._sleep)

    def _flaky_drop(self) -> None:
        if not self.running:
            return
        if self.connected:
            self._drop("flaky link")
        self._later(self.link_rng.expovariate(self.profile.drops_per_hour / 3600),
                    self._flaky_drop)

    def _flaky_half_open(self) -> None:
        if not self.running:
            return
        if self.connected and self._sock is not None:
            # the socket stays open but nothing moves either way: the broker must notice
            self.half_open_until = time.monotonic() + self.profile.half_open_duration
            self.loop.remove_reader(self._sock)
            self.loop.remove_writer(self._sock)
        self._later(self.link_rng.expovariate(self.profile.half_open_per_hour / 3600),
                    self._flaky_half_open)

    def storm(self) -> None:
        """Reconnect storm: drop now, come back with everyone else (backoff spreads them)."""
        if self.connected:
            self._drop("reconnect storm")

    def stop(self) -> None:
        """Stop reporting, say so on the status topic, and disconnect cleanly."""
        self.running = False
        for t in self._timers:
            t.cancel()
        if self.connected:
            self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            self.client.disconnect()
        sock = self._sock
        if sock is not None:
            self.client.loop_write()
            self._forget_socket(sock)
