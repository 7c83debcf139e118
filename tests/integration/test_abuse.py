"""A broker that bad clients cannot hurt (issue 7, point 4), over real sockets on 127.0.0.1.

The three attacks run against the broker as a process (``python -m mqttbroker serve``), so its
RSS can be read from /proc/PID/status; an honest client keeps being served throughout:

* a slow-loris crowd: hundreds of sockets that never send a CONNECT, or only part of one, are
  closed after ``connect_timeout``; a header announcing more than ``max_connect_size`` is closed
  at once;
* a connection flood from one address: the per-address rate limit closes the excess at accept,
  logged once for the whole flood;
* a password-guessing loop: after ``auth_failure_threshold`` failures each further CONNECT from
  that address is answered only after a doubling delay (measured), parallel guesses queue or are
  refused unread, a success forgets it all.

Every test client shares 127.0.0.1 with the attacker unless it binds another loopback source
address: the honest client binds 127.0.0.2 (Linux routes all of 127/8 to the loopback device).
The in-process tests below them check the counters, the log lines, what a held CONNECT does
with the packets pipelined behind it, the CONNECT size bound and ``max_topic_levels``.
Measured numbers are printed (``pytest -s``). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import yaml

from mqttbroker.broker import Broker
from mqttbroker.protocol.packets import Connack, Disconnect, Publish, Suback, Subscribe, Will
from mqttbroker.protocol.packets import Subscription as Sub
from tests.conftest import base_config

from .brokerproc import BrokerProc, broker_procs
from .rawmqtt import RawClient, connect_bytes, frame

pytestmark = pytest.mark.timeout(90)

ATTACKER = "127.0.0.1"
HONEST = "127.0.0.2"
MEMORY = {"backend": "memory"}
MiB = 1024 * 1024
BAD_CREDENTIALS = 0x04  # MQTT 3.1.1 CONNACK return codes [MQTT 3.2.2.3]
SERVER_UNAVAILABLE = 0x03


# -- helpers ------------------------------------------------------------------------------------


async def open_from(port: int, source: str, level: int = 4) -> RawClient:
    """A raw client whose socket is bound to ``source`` (a loopback address) first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return RawClient(reader, writer, level)


_honest_n = 0


async def honest_round(port: int, username: str | None = None,
                       password: bytes | None = None) -> float:
    """An honest client from 127.0.0.2: connect, subscribe, a round trip to itself,
    disconnect. Returns the seconds it took; fails if any step does."""
    global _honest_n
    _honest_n += 1
    t0 = time.monotonic()
    c = await open_from(port, HONEST)
    try:
        ack = await c.connect(f"honest-{_honest_n}", username=username, password=password,
                              timeout=5.0)
        assert ack.return_code == 0, ack
        await c.subscribe("honest/#", qos=1, timeout=5.0)
        await c.publish("honest/x", b"still served", qos=0)  # (a PUBACK wait would eat it)
        p = await c.next_publish(timeout=5.0)
        assert p.payload == b"still served"
        await c.disconnect()
    finally:
        await c.close()
    return time.monotonic() - t0


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (its peak) of process ``pid``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


class Sampler:
    """Samples a process's RSS every 50 ms in the test's event loop; ``peak`` is the most
    seen (VmHWM included, which catches what happened between samples)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            m = memory(self.pid)
            self.peak = max(self.peak, m["VmRSS"], m["VmHWM"])
            await asyncio.sleep(0.05)

    def __enter__(self) -> Self:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        m = memory(self.pid)
        self.peak = max(self.peak, m["VmRSS"], m["VmHWM"])


async def keep_honest(port: int, stop: asyncio.Event, latencies: list[float],
                      every: float = 0.1, **login: Any) -> None:
    """Honest rounds one after another until ``stop``; each one's seconds into ``latencies``."""
    while not stop.is_set():
        latencies.append(await honest_round(port, **login))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


def summary(xs: list[float]) -> str:
    s = sorted(xs)
    return (f"{len(s)} rounds, median {s[len(s) // 2] * 1e3:.1f} ms, "
            f"max {s[-1] * 1e3:.1f} ms")


def mosquitto_line(user: str, password: str) -> str:
    """A password-file line in Mosquitto 2's format (``mosquitto_passwd``: PBKDF2-SHA512)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
    return (f"{user}:$7$101${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Any]:
    with broker_procs(tmp_path) as make:
        yield make


def with_auth(b: BrokerProc, auth: dict[str, Any]) -> BrokerProc:
    """Replace the ``auth`` section BrokerProc wrote (anonymous clients) with ``auth``."""
    config = yaml.safe_load(b.config_path.read_text())
    config["auth"] = auth
    b.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return b


def log_lines(b: BrokerProc, *words: str) -> list[str]:
    return [line for line in b.log_text().splitlines() if all(w in line for w in words)]


# -- the three attacks, against the broker as a process ------------------------------------------

CROWD = 600
CROWD_SOURCES = [f"127.0.1.{i}" for i in range(1, 7)]  # 100 each: inside the default burst
PARTIAL = 60_000  # a CONNECT header announcing this much (under max_connect_size) ...
PARTIAL_SENT = 30_000  # ... and this much of it sent, then silence


async def test_slow_loris_crowd_is_closed_after_connect_timeout(procs: Any) -> None:
    """600 sockets from 6 addresses: a third send nothing, a third half a fixed header, a
    third a CONNECT header announcing 60 kB and 30 kB of it. All are closed by the broker
    within connect_timeout (+ a margin); 10 announcing 1 MiB (over max_connect_size) are
    closed at once. An honest client is served meanwhile, and the broker's RSS stays within
    what the crowd may make it buffer."""
    connect_timeout = 1.0
    b = procs(persist=MEMORY, mqtt={"connect_timeout": connect_timeout}).start()
    await honest_round(b.port)  # warm up: every code path loaded
    base = memory(b.pid)["VmRSS"]

    async def one(i: int) -> tuple[RawClient, float]:
        opened = time.monotonic()  # (before: the broker's timer cannot start earlier)
        c = await open_from(b.port, CROWD_SOURCES[i % len(CROWD_SOURCES)])
        if i % 3 == 1:
            await c.send(b"\x10")
        elif i % 3 == 2:
            body = frame(0x10, b"\0" * (PARTIAL - 4))  # header says PARTIAL bytes in all
            await c.send(body[:PARTIAL_SENT])
        return c, opened

    with Sampler(b.pid) as sampler:
        t0 = time.monotonic()
        crowd = await asyncio.gather(*(one(i) for i in range(CROWD)))
        opened_in = time.monotonic() - t0
        # over max_connect_size (64 KiB): refused from the header, not buffered
        big = [await open_from(b.port, "127.0.2.1") for _ in range(10)]
        for c in big:
            await c.send(b"\x10\x80\x80\x40")  # CONNECT announcing 1 MiB
        big_closed = await asyncio.gather(*(c.expect_closed(1.0) for c in big))
        during = [await honest_round(b.port) for _ in range(5)]
        assert all(big_closed), "a CONNECT header over max_connect_size was not closed at once"

        async def closed_after(c: RawClient, opened: float) -> float:
            assert await c.expect_closed(connect_timeout + 3.0), "a silent socket stayed open"
            return time.monotonic() - opened

        lifetimes = await asyncio.gather(*(closed_after(c, t) for c, t in crowd))
    after = [await honest_round(b.port) for _ in range(3)]
    end = memory(b.pid)["VmRSS"]
    for c, _ in crowd:
        await c.close()
    grew = sampler.peak - base
    # what the crowd may make the broker hold by design: a partial CONNECT each (at most
    # max_connect_size), plus a socket's and a connection object's worth each
    bound = CROWD * (PARTIAL_SENT + 32 * 1024) + 16 * MiB
    print(f"\nslow loris: {CROWD} sockets opened in {opened_in:.2f}s; closed by the broker "
          f"after {min(lifetimes):.2f}..{max(lifetimes):.2f}s (connect_timeout "
          f"{connect_timeout}s); honest during: {summary(during)}; after: {summary(after)}; "
          f"RSS {base / MiB:.1f} MiB -> peak {sampler.peak / MiB:.1f} MiB (+{grew / MiB:.1f}, "
          f"bound {bound / MiB:.1f}) -> {end / MiB:.1f} MiB")
    assert max(lifetimes) < connect_timeout + 2.5
    assert min(lifetimes) >= connect_timeout - 0.05
    assert max(during + after) < 1.0
    assert grew < bound
    assert len(log_lines(b, "no CONNECT completed")) >= CROWD


FLOOD_SECONDS = 2.0
FLOOD_MAX = 30_000  # attempts at most (each one an ephemeral port, freed by the RST)


def flood(port: int, seconds: float, stop_after: int) -> tuple[int, int, int]:
    """From 127.0.0.1, as fast as one thread can: connect, send CONNECT, read the answer,
    reset. Returns (attempts, accepted: CONNACK read, refused: closed without one)."""
    attempts = accepted = refused = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end and attempts < stop_after:
        attempts += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        s.settimeout(2.0)
        try:
            s.bind((ATTACKER, 0))
            s.connect(("127.0.0.1", port))
            s.sendall(connect_bytes(f"flood-{attempts}"))
            data = s.recv(4)
            if data[:1] == b"\x20":
                accepted += 1
            else:
                refused += 1
        except OSError:
            refused += 1
        finally:
            s.close()
    return attempts, accepted, refused


async def test_connection_flood_from_one_address_is_rate_limited(procs: Any) -> None:
    """One thread opens connections from 127.0.0.1 as fast as it can for 2 s against the
    default limit (50/s, burst 200): at most burst + rate x T get a CONNACK, the rest are
    closed at accept; the flood is logged once; an honest client from 127.0.0.2 is served
    every 50 ms throughout; RSS stays flat."""
    b = procs(persist=MEMORY).start()
    await honest_round(b.port)
    base = memory(b.pid)["VmRSS"]
    stop = asyncio.Event()
    latencies: list[float] = []
    with Sampler(b.pid) as sampler:
        honest = asyncio.create_task(keep_honest(b.port, stop, latencies, every=0.05))
        t0 = time.monotonic()
        attempts, accepted, refused = await asyncio.to_thread(flood, b.port, FLOOD_SECONDS,
                                                              FLOOD_MAX)
        took = time.monotonic() - t0
        stop.set()
        await honest
    grew = sampler.peak - base
    rate, burst = 50, 200  # the defaults
    print(f"\nflood: {attempts} connections in {took:.2f}s ({attempts / took:.0f}/s) from "
          f"{ATTACKER}: {accepted} served, {refused} closed at accept (limit: burst {burst} + "
          f"{rate}/s x {took:.2f}s = {burst + rate * took:.0f}); honest from {HONEST}: "
          f"{summary(latencies)}; RSS {base / MiB:.1f} MiB -> peak {sampler.peak / MiB:.1f} "
          f"MiB (+{grew / MiB:.1f})")
    assert refused > 0 and accepted + refused == attempts
    assert accepted <= burst + rate * took + 5
    assert accepted >= min(attempts, burst)  # the burst itself is never refused
    assert len(latencies) >= 10 and max(latencies) < 1.0
    assert grew < 16 * MiB
    began = log_lines(b, "opens connections faster than max_connection_rate_per_address")
    assert len(began) == 1, began  # once for the flood, not per connection
    assert ATTACKER in began[0]


async def timed_connect(port: int, source: str, password: bytes,
                        user: str = "dev") -> tuple[int, float]:
    """One CONNECT as ``user``; returns (CONNACK return code, seconds to it)."""
    c = await open_from(port, source)
    try:
        t0 = time.monotonic()
        ack = await c.connect(f"guess-{time.monotonic_ns()}", username=user, password=password,
                              timeout=10.0)
        return ack.return_code, time.monotonic() - t0
    finally:
        await c.close()


async def test_password_guessing_slows_down_that_address(tmp_path: Path, procs: Any) -> None:
    """Wrong passwords from 127.0.0.1, one after another: the first two are answered at
    once, then each after twice the previous delay (0.1, 0.2, 0.4, 0.8 s), capped at 0.8 s.
    12 guesses at once: one is held for its turn, the rest refused at once unread (0x03).
    The right password from there waits its turn, then resets it all. Meanwhile an honest
    client with its password from 127.0.0.2 is served in milliseconds."""
    passwd = tmp_path / "passwd"
    passwd.write_text(mosquitto_line("dev", "right") + "\n" + mosquitto_line("honest", "h0n3st")
                      + "\n")
    delay, cap = 0.1, 0.8
    b = with_auth(procs(persist=MEMORY, mqtt={
        "auth_failure_threshold": 2, "auth_failure_delay": delay,
        "auth_failure_max_delay": cap}), {"allow-anonymous": False,
                                          "password-file": str(passwd)}).start()
    login = {"username": "honest", "password": b"h0n3st"}
    await honest_round(b.port, **login)
    base = memory(b.pid)["VmRSS"]
    stop = asyncio.Event()
    latencies: list[float] = []
    with Sampler(b.pid) as sampler:
        honest = asyncio.create_task(keep_honest(b.port, stop, latencies, every=0.05, **login))
        # sequential guessing
        waits = []
        for i in range(8):
            code, took = await timed_connect(b.port, ATTACKER, f"guess{i}".encode())
            assert code == BAD_CREDENTIALS
            waits.append(took)
        expected = [0.0, 0.0, 0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
        # parallel guessing: 12 at once
        t0 = time.monotonic()
        parallel = await asyncio.gather(*(timed_connect(b.port, ATTACKER, b"p%d" % i)
                                          for i in range(12)))
        parallel_took = time.monotonic() - t0
        # the right password from the attacker's address: waits its turn, then forgives
        code, right_took = await timed_connect(b.port, ATTACKER, b"right")
        assert code == 0
        code, after_reset = await timed_connect(b.port, ATTACKER, b"wrong-again")
        assert code == BAD_CREDENTIALS
        stop.set()
        await honest
    grew = sampler.peak - base
    checked = [t for c, t in parallel if c == BAD_CREDENTIALS]
    busy = [t for c, t in parallel if c == SERVER_UNAVAILABLE]
    print("\npassword guessing from 127.0.0.1: CONNACK after "
          + ", ".join(f"{w:.3f}" for w in waits) + f" s (expected ~{expected}); 12 at once: "
          f"{len(checked)} checked (after {', '.join(f'{t:.2f}' for t in checked)} s), "
          f"{len(busy)} refused unread within {max(busy, default=0) * 1e3:.0f} ms "
          f"({parallel_took:.2f} s in all); right password after {right_took:.2f} s, then a "
          f"wrong one answered in {after_reset * 1e3:.0f} ms; honest from {HONEST}: "
          f"{summary(latencies)}; RSS +{grew / MiB:.1f} MiB")
    for got, want in zip(waits, expected, strict=True):
        assert want - 0.05 <= got <= want + 0.25, (waits, expected)
    assert len(checked) + len(busy) == 12
    assert 1 <= len(checked) <= 2 and max(busy) < 0.5
    assert right_took <= 2 * cap + 0.3
    assert after_reset < 0.25
    assert len(latencies) >= 10 and max(latencies) < 1.0
    assert grew < 16 * MiB
    assert len(log_lines(b, "failed logins in a row")) == 1


# -- in process: counters, log lines, pipelining, size and depth bounds -------------------------

FLOOD_CONFIG = base_config(max_connection_rate_per_address=10, connection_burst_per_address=5)


@pytest.mark.parametrize("broker_config", [FLOOD_CONFIG], ids=["rate_10_burst_5"])
async def test_flood_counted_and_logged_once_per_episode(
        broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqttbroker")
    served = closed = 0
    for i in range(20):
        c = await open_from(broker.port, ATTACKER)
        await c.send(connect_bytes(f"f{i}"))
        try:
            p = await c.read_packet(2.0)
            assert isinstance(p, Connack) and p.return_code == 0
            served += 1
        except Exception:  # noqa: BLE001 - closed (reset) without a CONNACK
            closed += 1
        await c.close()
    assert 5 <= served <= 7 and served + closed == 20
    assert broker.metrics.connections_rate_limited == closed
    began = [r.getMessage() for r in caplog.records if "opens connections faster" in
             r.getMessage()]
    assert len(began) == 1 and "127.0.0.1" in began[0]
    assert await honest_round(broker.port) < 1.0  # another address is not affected
    await asyncio.sleep(0.6)  # the whole burst earned back at 10/s: the episode is over
    c = await open_from(broker.port, ATTACKER)
    assert (await c.connect("back")).return_code == 0
    await c.disconnect()
    ended = [r.getMessage() for r in caplog.records if "back under" in r.getMessage()]
    assert ended == [(f"address 127.0.0.1 is back under max_connection_rate_per_address: "
                      f"{closed} connection(s) from it were closed")]


def auth_config(tmp_path: Path, **mqtt: Any) -> dict[str, Any]:
    passwd = tmp_path / "passwd"
    passwd.write_text(mosquitto_line("dev", "right") + "\n")
    cfg = base_config(**mqtt)
    cfg["auth"] = {"allow-anonymous": False, "password-file": str(passwd)}
    return cfg


async def test_held_connect_keeps_the_packets_pipelined_behind_it(tmp_path: Path) -> None:
    """A CONNECT delayed for its address's failed logins is handled with whatever the client
    sent right after it (SUBSCRIBE, PUBLISH in the same write): nothing is lost or taken for
    a protocol error, and the event loop was never blocked."""
    broker = Broker(auth_config(tmp_path, auth_failure_threshold=1, auth_failure_delay=0.3,
                                auth_failure_max_delay=1.0))
    await broker.start()
    try:
        c = await open_from(broker.port, ATTACKER)
        assert (await c.connect("x", username="dev", password=b"wrong")).return_code == \
            BAD_CREDENTIALS
        await c.close()
        c = await open_from(broker.port, ATTACKER)
        t0 = time.monotonic()
        await c.send(connect_bytes("held", username="dev", password=b"right")
                     + frame(0x82, b"\x00\x01" + b"\x00\x03p/#" + b"\x01")
                     + frame(0x32, b"\x00\x03p/x" + b"\x00\x02" + b"hello"))
        ack = await c.read_packet(2.0)
        held = time.monotonic() - t0
        assert isinstance(ack, Connack) and ack.return_code == 0
        sub = await c.read_packet(2.0)
        assert isinstance(sub, Suback) and sub.return_codes == [1]
        got = await c.next_publish(2.0)
        assert got.topic == "p/x" and got.payload == b"hello"
        await c.disconnect()
        print(f"\nheld CONNECT answered after {held:.3f}s (auth_failure_delay 0.3)")
        assert 0.25 <= held < 1.0
        m = broker.metrics
        assert (m.auth_failures, m.auth_held) == (1, 1)
        # the success forgot the address: a wrong password is answered at once again
        code, took = await timed_connect(broker.port, ATTACKER, b"wrong")
        assert code == BAD_CREDENTIALS and took < 0.2
    finally:
        await broker.shutdown()


@pytest.mark.parametrize("broker_config", [base_config()], ids=["defaults"])
async def test_connect_size_before_connack(broker: Broker) -> None:
    """max_connect_size (64 KiB by default) bounds every packet before CONNACK: a 3.1.1
    CONNECT with a 60 kB will is accepted; a v5 CONNECT with 80 kB of user name and password
    gets CONNACK 0x95 Packet too large and is closed; after CONNACK max_packet_size applies."""
    c = await open_from(broker.port, HONEST)
    will = Will("w/t", b"w" * 60_000, 0, False)
    assert (await c.connect("big-will", will=will)).return_code == 0
    assert await c.publish("big/x", b"p" * 200_000, qos=1) is not None  # the limit opened
    await c.disconnect()
    c = await open_from(broker.port, HONEST, level=5)
    await c.send(connect_bytes("big-pass", level=5, username="u" * 40_000,
                               password=b"x" * 40_000))
    p = await c.read_packet(2.0)
    assert isinstance(p, Connack) and p.return_code == 0x95
    assert await c.expect_closed(2.0)


@pytest.mark.parametrize("broker_config", [base_config(max_connect_size=400_000)],
                         ids=["max_connect_size_400000"])
async def test_the_largest_connect_fits_when_allowed(broker: Broker) -> None:
    """The largest 3.1.1 CONNECT MQTT allows (every string and the will at 65535 bytes) is
    ~320 KiB: with max_connect_size raised it is accepted."""
    c = await open_from(broker.port, HONEST)
    data = connect_bytes("c" * 65535, username="u" * 65535, password=b"p" * 65535,
                         will=Will("t" * 65535, b"w" * 65535, 0, False))
    print(f"\nlargest 3.1.1 CONNECT: {len(data)} bytes")
    await c.send(data)
    p = await c.read_packet(5.0)
    assert isinstance(p, Connack) and p.return_code == 0
    await c.disconnect()


@pytest.mark.parametrize("broker_config", [base_config()], ids=["max_topic_levels_200"])
async def test_topic_levels_are_bounded(broker: Broker) -> None:
    """max_topic_levels (200): a deeper filter is refused in SUBACK, the rest of the
    SUBSCRIBE granted; a deeper PUBLISH topic closes the connection (v5: DISCONNECT 0x90), so
    does a deeper will topic. 200 levels are fine."""
    ok_filter = "/".join(["+"] * 200)
    deep_filter = "/".join(["+"] * 201)
    c = await open_from(broker.port, HONEST)
    assert (await c.connect("levels")).return_code == 0
    sub = await c.subscribe([(ok_filter, 1), (deep_filter, 1), ("$share/g/" + deep_filter, 0)])
    assert sub.return_codes == [1, 0x80, 0x80]
    await c.publish("/".join(["x"] * 200), b"ok", qos=0)
    assert (await c.next_publish()).payload == b"ok"
    await c.disconnect()
    v5 = await open_from(broker.port, HONEST, level=5)
    assert (await v5.connect("levels5")).return_code == 0
    await v5.send_packet(Subscribe(1, [Sub(deep_filter, 0)]))
    sub = await v5.read_packet()
    assert isinstance(sub, Suback) and sub.return_codes == [0x8F]  # Topic Filter invalid
    await v5.send_packet(Publish("/".join(["x"] * 201), b"deep", 0, False, False, None))
    d = await v5.read_packet()
    assert isinstance(d, Disconnect) and d.reason_code == 0x90  # Topic Name invalid
    assert await v5.expect_closed()
    w = await open_from(broker.port, HONEST)
    await w.send(connect_bytes("deep-will", will=Will("/".join(["w"] * 201), b"", 0, False)))
    assert await w.expect_closed()


@pytest.mark.parametrize("broker_config", [base_config(max_topic_levels=0)],
                         ids=["max_topic_levels_unlimited"])
async def test_deepest_filter_and_topic_are_matched_quickly(broker: Broker) -> None:
    """Even unbounded, the deepest filter and topic MQTT allows (32767 levels of '+' against
    32767 levels) are matched in one walk, over the wire, in milliseconds."""
    n = 32767
    c = await open_from(broker.port, HONEST)
    assert (await c.connect("deep")).return_code == 0
    t0 = time.monotonic()
    assert (await c.subscribe("/".join(["+"] * n), qos=1, timeout=5.0)).return_codes == [1]
    subscribed = time.monotonic() - t0
    t0 = time.monotonic()
    await c.publish("/".join(["x"] * n), b"deep", qos=0)
    got = await c.next_publish(5.0)
    delivered = time.monotonic() - t0
    assert got.payload == b"deep"
    await c.disconnect()
    print(f"\n{n}-level '+' filter subscribed in {subscribed * 1e3:.0f} ms; a {n}-level "
          f"topic delivered through it in {delivered * 1e3:.0f} ms")
    assert subscribed < 1.0 and delivered < 1.0
