"""Crash and shutdown of the broker process (docs/durability.md), against
``python -m mqttbroker serve -c FILE`` with SQLite on a temporary database and a free port.

* SIGKILL mid-stream with ``sync: commit``: every QoS 1 message the publisher got PUBACK for,
  and every QoS 2 message it got PUBREC for, reaches every matching persistent session after
  the restart (the online subscriber's before-and-after union counts); QoS 2 never twice.
* SIGTERM: MQTT 5 clients get DISCONNECT 0x8B, the process exits 0 within 5 s, sessions
  resume after the restart.
* ``sync: periodic``: a SIGKILL loses at most the last flush interval.

Every wait is bounded; a failure names the lost message numbers and shows the broker's log.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.packets import Connect, Subscribe, Subscription
from mqttbroker.protocol.primitives import encode_varint
from mqttbroker.protocol.reader import FrameReader

from .brokerproc import HOST, BrokerProc, broker_procs, persistence
from .helpers import V311, Paho, wait_until
from .v5helpers import P, RawV5

pytestmark = pytest.mark.timeout(60)

#: the mqtt section of every broker here: queues far longer than any stream, so no
#: queue bound can be the reason a message is missing
MQTT = {"max_queued_messages": 100_000, "max_queued_bytes": 0}
#: how many times the crash tests kill the broker mid-stream
ROUNDS = int(os.environ.get("CRASH_ROUNDS", "2"))


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., BrokerProc]]:
    with broker_procs(tmp_path) as make:
        yield make


def _pid(body: bytes, at: int = 0) -> int:
    return (body[at] << 8) | body[at + 1]


def describe(numbers: set[int], limit: int = 40) -> str:
    """``N numbers: 1, 2, ...`` (the first ``limit`` of them, sorted)."""
    s = sorted(numbers)
    more = f", ... ({len(s) - limit} more)" if len(s) > limit else ""
    return f"{len(s)} number(s): {', '.join(map(str, s[:limit]))}{more}"


# -- publishers -----------------------------------------------------------------------------------

class PahoStreamer:
    """A paho-mqtt 3.1.1 publisher streaming numbered messages (payload = the number) as fast
    as a window of ``window`` unacknowledged ones allows; ``acked()`` is every number whose
    PUBACK (QoS 1) / PUBCOMP (QoS 2) paho reported through ``on_publish``."""

    def __init__(self, port: int, cid: str, topic: str, qos: int = 1, window: int = 100,
                 first: int = 0) -> None:
        self.topic = topic
        self.next = first  # the next number to publish
        self.qos = qos
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid,
                                  protocol=MQTTProtocolVersion.MQTTv311, clean_session=True,
                                  reconnect_on_failure=False)
        self.client.max_inflight_messages_set(window)
        self.slots = threading.Semaphore(window)
        self._lock = threading.Lock()
        self._acked_mids: set[int] = set()
        self._numbers: dict[int, int] = {}  # mid -> number
        self.acks = 0
        self.connected = threading.Event()
        self.down = threading.Event()
        self.stop = threading.Event()
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.connect(HOST, port, 60)
        self.client.loop_start()
        if not self.connected.wait(5):
            raise AssertionError("the streaming publisher got no CONNACK within 5 s")
        self._thread = threading.Thread(target=self._run, name="paho-streamer", daemon=True)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            self._acked_mids.add(mid)
            self.acks += 1
        self.slots.release()

    def _on_disconnect(self, *args: Any) -> None:
        self.down.set()

    def start(self, limit: int, seconds: float) -> None:
        """Publish at most ``limit`` messages (< 65535: paho's message ids must not wrap) for
        at most ``seconds``, in a thread."""
        assert limit < 65535
        self._end = self.next + limit
        self._deadline = time.monotonic() + seconds
        self._thread.start()

    def _run(self) -> None:
        while self.next < self._end and not self.stop.is_set() and not self.down.is_set() \
                and time.monotonic() < self._deadline:
            if not self.slots.acquire(timeout=0.1):
                continue
            n = self.next
            info = self.client.publish(self.topic, str(n).encode(), self.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break
            with self._lock:
                self._numbers[info.mid] = n
            self.next = n + 1

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(10)
        self.client.loop_stop()

    def acked(self) -> set[int]:
        with self._lock:
            return {self._numbers[m] for m in self._acked_mids if m in self._numbers}


class RawQos2Streamer:
    """A raw 3.1.1 publisher streaming numbered QoS 2 messages with a window of ``window``
    open flows; ``recd`` holds every number the broker answered PUBREC for (the moment the
    broker owns the message), ``completed`` those that got PUBCOMP."""

    def __init__(self, port: int, cid: str, topic: str, window: int = 100,
                 first: int = 0) -> None:
        self.next = first  # the next number to publish
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.topic = topic.encode()
        self.window = window
        self.reader = FrameReader()
        self.sock.sendall(encode(Connect("MQTT", 4, cid, True, 60), 4))
        frames: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 5
        while not frames and time.monotonic() < deadline:
            frames = self.reader.feed(self.sock.recv(4096))
        assert frames and frames[0][0] == 0x20 and frames[0][1][1] == 0, f"CONNACK? {frames}"
        self.open: dict[int, int] = {}  # packet id -> number, PUBLISH sent, no PUBCOMP yet
        self.recd: set[int] = set()
        self.completed: set[int] = set()
        self.stop = threading.Event()
        self.down = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qos2-streamer", daemon=True)

    @property
    def acks(self) -> int:
        return len(self.recd)

    def start(self, limit: int, seconds: float) -> None:
        """Publish at most ``limit`` messages (< 65535, so packet ids are never reused) for at
        most ``seconds``, in a thread."""
        assert limit < 65535
        self._end = self.next + limit
        self._deadline = time.monotonic() + seconds
        self._thread.start()

    def _frame(self, n: int, pid: int) -> bytes:
        body = (len(self.topic).to_bytes(2, "big") + self.topic + pid.to_bytes(2, "big")
                + str(n).encode())
        return b"\x34" + encode_varint(len(body)) + body

    def _run(self) -> None:
        self.sock.settimeout(0.05)
        try:
            while not self.stop.is_set() and time.monotonic() < self._deadline:
                out = []
                while len(self.open) < self.window and self.next < self._end:
                    n = self.next
                    pid = n % 65535 + 1
                    self.open[pid] = n
                    out.append(self._frame(n, pid))
                    self.next = n + 1
                if out:
                    self.sock.sendall(b"".join(out))
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                answers = []
                for first, body in self.reader.feed(data):
                    kind, pid = first >> 4, _pid(body)
                    if kind == 5 and pid in self.open:  # PUBREC
                        self.recd.add(self.open[pid])
                        answers.append(bytes((0x62, 2)) + body[:2])  # PUBREL
                    elif kind == 7 and pid in self.open:  # PUBCOMP
                        self.completed.add(self.open.pop(pid))
                if answers:
                    self.sock.sendall(b"".join(answers))
        except OSError:
            pass
        finally:
            self.down.set()

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(10)
        self.sock.close()

    def acked(self) -> set[int]:
        return set(self.recd)


# -- a subscriber that keeps its side of the session ----------------------------------------------

class RawSubscriber:
    """A raw 3.1.1 subscriber in a thread that keeps its own session state across
    connections, as a persistent client must: a QoS 2 PUBLISH is handed to the application
    (``delivered``) on first receipt and its packet identifier kept until PUBREL; a resent
    PUBLISH with a kept identifier is answered PUBREC again and not delivered again
    [MQTT-4.3.3-2] (counted in ``absorbed``). QoS 1 is acknowledged and delivered each time it
    comes. Payloads are message numbers."""

    def __init__(self, port: int, cid: str) -> None:
        self.port = port
        self.cid = cid
        self.delivered: list[int] = []
        self.awaiting_rel: set[int] = set()
        self.absorbed = 0
        self.last_rx = time.monotonic()
        self.sock: socket.socket | None = None
        self._control: list[tuple[int, bytes]] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def connect(self, clean: bool) -> bool:
        """CONNECT (the reader thread starts); return Session Present."""
        self.sock = socket.create_connection((HOST, self.port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(0.1)
        self._reader = FrameReader()
        self._control = []
        self._stop.clear()
        self.sock.sendall(encode(Connect("MQTT", 4, self.cid, clean, 60), 4))
        self._thread = threading.Thread(target=self._run, name=f"sub-{self.cid}", daemon=True)
        self._thread.start()
        _, body = self._expect(0x20)
        assert body[1] == 0, f"CONNACK return code {body[1]}"
        return bool(body[0] & 1)

    def subscribe(self, topic_filter: str, qos: int) -> int:
        assert self.sock is not None
        self.sock.sendall(encode(Subscribe(1, [Subscription(topic_filter, qos)]), 4))
        _, body = self._expect(0x90)
        return body[2]

    def disconnect(self) -> None:
        assert self.sock is not None
        self.sock.sendall(b"\xe0\x00")
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until the broker's end closed (the reader thread handled all it read)."""
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"{self.cid}: the connection stayed open"
        self.close()

    def _expect(self, first: int, timeout: float = 5.0) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, (f, body) in enumerate(self._control):
                    if f == first:
                        del self._control[i]
                        return f, body
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.cid}: no packet 0x{first:02X} within {timeout}s "
                        f"(got {self._control})")
                self._cond.wait(left)

    def _run(self) -> None:
        sock = self.sock
        assert sock is not None
        try:
            while not self._stop.is_set():
                try:
                    data = sock.recv(262144)
                except TimeoutError:
                    continue
                if not data:
                    return
                self.last_rx = time.monotonic()
                answers: list[bytes] = []
                with self._cond:
                    for first, body in self._reader.feed(data):
                        kind = first >> 4
                        if kind == 3:
                            self._publish(first, body, answers)
                        elif kind == 6:  # PUBREL: the flow is over, the id is free
                            self.awaiting_rel.discard(_pid(body))
                            answers.append(b"\x70\x02" + body[:2])
                        else:
                            self._control.append((first, body))
                            self._cond.notify_all()
                if answers:
                    sock.sendall(b"".join(answers))
        except OSError:
            return

    def _publish(self, first: int, body: bytes, answers: list[bytes]) -> None:
        qos = (first >> 1) & 3
        end = 2 + _pid(body)
        pid = _pid(body, end) if qos else 0
        n = int(body[end + 2 if qos else end:])
        if qos == 2:
            if pid in self.awaiting_rel:  # a resend of one we have: not delivered again
                self.absorbed += 1
            else:
                self.awaiting_rel.add(pid)
                self.delivered.append(n)
            answers.append(b"\x50\x02" + pid.to_bytes(2, "big"))
            return
        self.delivered.append(n)
        if qos == 1:
            answers.append(b"\x40\x02" + pid.to_bytes(2, "big"))

    def numbers(self) -> set[int]:
        with self._cond:
            return set(self.delivered)

    def wait_idle(self, quiet: float = 1.0, timeout: float = 10.0) -> None:
        """Wait until nothing has arrived for ``quiet`` seconds."""
        wait_until(lambda: time.monotonic() - self.last_rx >= quiet, timeout,
                   what=f"{self.cid} to go quiet")


# -- helpers --------------------------------------------------------------------------------------

def paho_numbers(c: Paho) -> list[int]:
    return [int(m.payload) for m in c.messages.messages]


def wait_for_all(expected: set[int], got: Callable[[], set[int]], timeout: float) -> set[int]:
    """Wait until ``expected`` is a subset of ``got()``; return what is still missing."""
    deadline = time.monotonic() + timeout
    while True:
        missing = expected - got()
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.05)


def kill_mid_stream(broker: BrokerProc, streamer: Any, rng: random.Random, at_least: int,
                    at_most_seconds: float) -> int:
    """Let ``streamer`` run until ``at_least`` acknowledgements (or ``at_most_seconds``), wait a
    random few milliseconds more, SIGKILL the broker. Returns the acknowledgements seen then."""
    wait_until(lambda: streamer.acks >= at_least or streamer.down.is_set(),
               at_most_seconds + 5, interval=0.001, what=f"{at_least} acknowledgements")
    time.sleep(rng.uniform(0.0, 0.03))
    assert not streamer.down.is_set(), (
        f"the publisher lost its connection before the kill:\n{broker.log_tail()}")
    broker.kill()
    acks: int = streamer.acks
    streamer.finish()
    return acks


# -- 1. SIGKILL, QoS 1 ------------------------------------------------------------------------------

def test_sigkill_mid_stream_loses_no_acknowledged_qos1_message(
        procs: Callable[..., BrokerProc]) -> None:
    """The acceptance test (sync: commit, fsync: false: SIGKILL is not a power cut). Two
    persistent QoS 1 subscribers of crash/#: "online" (connected throughout) and "offline"
    (subscribed, then disconnected). A paho QoS 1 publisher streams numbered messages as fast
    as it can; after ~2000 PUBACKs (plus a random few ms) the broker is SIGKILLed and
    restarted; "online" reconnects (CleanSession=0, Session Present 1 [MQTT-3.2.2-2]) and the
    stream and the kill are done again (CRASH_ROUNDS times in all, default 2: the second kill
    hits a broker busy resending). Then "offline" reconnects too: every number the publisher
    had a PUBACK for reaches both ("online": over all its connections); duplicates are allowed
    at QoS 1 [MQTT-4.3.2]. A retained message published before the first stream is still
    there."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    broker = procs(mqtt=MQTT).start()
    port = broker.port
    closers: list[Callable[[], None]] = []

    def paho(cid: str, clean: bool) -> Paho:
        c = Paho(cid, V311, clean_session=clean)
        closers.append(c.close)
        c.connect(port)
        return c

    try:
        keeper = paho("crash-retainer", True)
        keeper.publish("kept/crash", b"retained before the crash", 1, retain=True)
        keeper.disconnect()
        offline = paho("offline", False)
        assert offline.subscribe(("crash/#", 1)) == [1]
        offline.disconnect()
        online = paho("online", False)
        assert online.subscribe(("crash/#", 1)) == [1]

        acked: set[int] = set()
        seen_online: set[int] = set()
        published = 0
        rounds: list[str] = []
        for r in range(ROUNDS):
            streamer = PahoStreamer(port, f"crash-pub{r}", "crash/n", qos=1, first=published)
            closers.append(streamer.finish)
            target = rng.randint(1500, 2500)
            streamer.start(limit=20_000, seconds=20)
            acks = kill_mid_stream(broker, streamer, rng, target, 20)
            acked |= streamer.acked()
            published = streamer.next
            # paho hands over everything it read before it reports the connection lost
            assert online.disconnected.wait(5), "'online' did not notice the kill"
            seen_online |= set(paho_numbers(online))
            rounds.append(f"round {r + 1}: killed after {acks} PUBACKs (target {target}), "
                          f"published up to {published}, 'online' had {len(seen_online)}")
            assert acks >= min(target, 100), f"seed {seed}; {rounds}"
            broker.start()
            online = paho("online", False)
            assert online.session_present is True, (
                f"'online' lost its session; seed {seed}; {rounds}\n{broker.log_tail()}")
        info = f"seed {seed}; " + "; ".join(rounds)
        offline2 = paho("offline", False)
        assert offline2.session_present is True, f"'offline' lost its session; {info}"

        missing_on = wait_for_all(acked, lambda: seen_online | set(paho_numbers(online)), 20)
        missing_off = wait_for_all(acked, lambda: set(paho_numbers(offline2)), 20)
        assert not missing_on and not missing_off, (
            f"acknowledged QoS 1 messages lost in the crash ({info}):\n"
            f"  'online' (all its connections) is missing {describe(missing_on)}\n"
            f"  'offline' is missing {describe(missing_off)}\n{broker.log_tail()}")
        everything = seen_online | set(paho_numbers(online)) | set(paho_numbers(offline2))
        assert everything <= set(range(published)), "numbers nobody published"

        late = paho("crash-late", True)
        late.subscribe(("kept/#", 1))
        m = late.messages.wait_topic("kept/crash")
        assert (m.payload, m.retain) == (b"retained before the crash", True)
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()


# -- 2. SIGKILL, QoS 2 ------------------------------------------------------------------------------

def test_sigkill_mid_stream_qos2_exactly_once(procs: Callable[..., BrokerProc],
                                              tmp_path: Path) -> None:
    """The same with QoS 2 and ``fsync: true``: a raw publisher streams QoS 2 messages; the
    broker is SIGKILLed after ~1000 PUBRECs, restarted, "online2" reconnects, again
    (CRASH_ROUNDS in all). Every number the publisher got PUBREC for reaches both persistent
    QoS 2 subscribers ("online2" over all its connections, "offline2" at the end), and none
    reaches a subscriber twice: the broker resends unfinished flows with their packet
    identifiers (PUBLISH DUP=1 or PUBREL) [MQTT-4.4.0-1] and never delivers a message again
    under a new identifier [MQTT-4.3.3-2]. The subscribers keep their own state (identifiers
    awaiting PUBREL) across connections, as the spec requires of a receiver."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    broker = procs(persist=persistence(tmp_path / "qos2.sqlite", "commit", fsync=True),
                   mqtt=MQTT).start()
    port = broker.port
    subs = {cid: RawSubscriber(port, cid) for cid in ("online2", "offline2")}
    online, offline = subs["online2"], subs["offline2"]
    streamers: list[RawQos2Streamer] = []
    try:
        for s in subs.values():
            assert s.connect(clean=False) is False
            assert s.subscribe("crash2/#", 2) == 2
        offline.disconnect()

        acked: set[int] = set()
        published = 0
        rounds: list[str] = []
        for r in range(ROUNDS):
            streamer = RawQos2Streamer(port, f"crash2-pub{r}", "crash2/n", first=published)
            streamers.append(streamer)
            target = rng.randint(700, 1300)
            streamer.start(limit=20_000, seconds=20)
            acks = kill_mid_stream(broker, streamer, rng, target, 15)
            acked |= streamer.acked()
            published = streamer.next
            online.wait_closed()  # everything it read before the kill is handled
            rounds.append(f"round {r + 1}: killed after {acks} PUBRECs (target {target}, "
                          f"{len(streamer.completed)} PUBCOMPs), published up to {published}, "
                          f"'online2' had {len(online.delivered)}")
            assert acks >= 50, f"seed {seed}; {rounds}"
            broker.start()
            assert online.connect(clean=False) is True, (
                f"'online2' lost its session; seed {seed}; {rounds}\n{broker.log_tail()}")
        info = f"seed {seed}; " + "; ".join(rounds)
        assert offline.connect(clean=False) is True, f"'offline2' lost its session; {info}"

        missing = {cid: wait_for_all(acked, s.numbers, 20) for cid, s in subs.items()}
        for s in subs.values():
            s.wait_idle(quiet=1.0, timeout=10)
        assert not any(missing.values()), (
            f"acknowledged (PUBREC) QoS 2 messages lost in the crash ({info}):\n"
            + "\n".join(f"  {cid!r} is missing {describe(m)}" for cid, m in missing.items())
            + f"\n{broker.log_tail()}")
        for cid, s in subs.items():
            twice = {n for n, k in Counter(s.delivered).items() if k > 1}
            assert not twice, (
                f"QoS 2 messages delivered more than once to {cid!r} ({info}; {s.absorbed} "
                f"resends absorbed by packet identifier): {describe(twice)}")
            assert set(s.delivered) <= set(range(published)), "numbers nobody published"
    finally:
        for st in streamers:
            st.finish()
        for s in subs.values():
            s.close()


# -- 3. SIGTERM -------------------------------------------------------------------------------------

def test_sigterm_disconnects_v5_with_0x8b_exits_0_and_sessions_resume(
        procs: Callable[..., BrokerProc]) -> None:
    """SIGTERM (durability.md "Shutdown and restart"): a connected MQTT 5 client gets
    DISCONNECT with reason 0x8B Server shutting down, the last packet before the socket closes
    [MQTT-3.14.2]; the process exits with code 0 within 5 s. After the restart the MQTT 5
    session (Session Expiry 300 s) resumes (Session Present 1) with its unacknowledged messages
    resent (DUP=1, same identifiers) [MQTT-4.4.0-1], and an offline 3.1.1 session gets what
    was queued for it, in order."""
    broker = procs(persist=None, mqtt=MQTT).start()
    port = broker.port
    closers: list[Callable[[], None]] = []
    try:
        off = Paho("term-off", V311, clean_session=False)
        closers.append(off.close)
        off.connect(port)
        off.subscribe(("term/#", 1))
        off.disconnect()
        v5 = RawV5(port)
        closers.append(v5.close)
        ack = v5.connect5("term-v5", properties={P.SESSION_EXPIRY_INTERVAL: 300})
        assert ack.return_code == 0
        assert v5.subscribe5(("term/#", 1)).return_codes == [1]
        pub = Paho("term-pub", V311)
        closers.append(pub.close)
        pub.connect(port)
        sent = [b"term %d" % i for i in range(3)]
        for body in sent:
            pub.publish("term/t", body, 1)
        first = [v5.next_publish(ack=False) for _ in sent]  # in flight: no PUBACK

        t0 = time.monotonic()
        code = broker.terminate(timeout=5)
        took = time.monotonic() - t0
        assert code == 0, f"exit code {code} after SIGTERM:\n{broker.log_tail()}"
        disc = v5.expect_disconnect(timeout=2)
        assert disc.reason_code == 0x8B, f"DISCONNECT reason 0x{disc.reason_code:02X}"
        assert took < 5

        broker.start()
        v5b = RawV5(port)
        closers.append(v5b.close)
        ack = v5b.connect5("term-v5", clean_start=False,
                           properties={P.SESSION_EXPIRY_INTERVAL: 300})
        assert ack.session_present is True, (
            f"the MQTT 5 session did not survive SIGTERM:\n{broker.log_tail()}")
        resent = v5b.publishes(len(sent))
        assert [(p.payload, p.dup, p.packet_id) for p in resent] == [
            (p.payload, True, p.packet_id) for p in first]
        off2 = Paho("term-off", V311, clean_session=False)
        closers.append(off2.close)
        off2.connect(port)
        assert off2.session_present is True
        msgs = off2.messages.wait_for(len(sent))
        assert [m.payload for m in msgs] == sent
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()


# -- 4. sync: periodic --------------------------------------------------------------------------------

def test_sigkill_periodic_keeps_what_is_older_than_flush_interval(
        procs: Callable[..., BrokerProc], tmp_path: Path) -> None:
    """``sync: periodic`` (flush_interval 0.5 s) promises that a crash loses at most the last
    flush interval (plus a commit): state changed 2 s before a SIGKILL (a persistent session,
    its subscription, 20 messages queued for it, a retained message) is all there after the
    restart."""
    broker = procs(persist=persistence(tmp_path / "periodic.sqlite", "periodic", False, 0.5),
                   mqtt=MQTT).start()
    port = broker.port
    closers: list[Callable[[], None]] = []
    try:
        off = Paho("per-off", V311, clean_session=False)
        closers.append(off.close)
        off.connect(port)
        off.subscribe(("per/#", 1))
        off.disconnect()
        pub = Paho("per-pub", V311)
        closers.append(pub.close)
        pub.connect(port)
        sent = [b"periodic %d" % i for i in range(20)]
        for body in sent:
            pub.publish("per/t", body, 1)
        pub.publish("kept/per", b"kept", 1, retain=True)
        pub.disconnect()
        time.sleep(2.0)
        broker.kill()

        broker.start()
        off2 = Paho("per-off", V311, clean_session=False)
        closers.append(off2.close)
        off2.connect(port)
        assert off2.session_present is True, (
            f"the session, 2 s old, did not survive SIGKILL:\n{broker.log_tail()}")
        msgs = off2.messages.wait_for(len(sent))
        got = [m.payload for m in msgs]
        assert got == sent, f"lost: {[b for b in sent if b not in got]}; got {got}"
        late = Paho("per-late", V311)
        closers.append(late.close)
        late.connect(port)
        late.subscribe(("kept/#", 1))
        assert late.messages.wait_topic("kept/per").payload == b"kept"
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()
