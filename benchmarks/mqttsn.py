"""MQTT-SN at scale: memory per client and QoS 0/1 throughput, beside the same load over MQTT/TCP.

    python -m benchmarks.mqttsn [--clients 10000] [--sleepers 0.2] [--rounds 3]
                                [--count 10000] [--publishers 8] [--window 20] [--payload 100]
                                [--quick] [--skip-memory] [--skip-throughput]
                                [--out benchmarks/results/mqttsn]

Our broker runs as a subprocess (a fresh one per measurement) with two listeners on 127.0.0.1:
``tcp`` and ``mqttsn`` (UDP), ``allow_anonymous: true`` on both, no $SYS, WARNING log, and the
limits every benchmark uses (``benchmarks/brokers.py``: in-flight window 20, queue limit
1,000,000, no connection-rate limit). The MQTT-SN datagrams are built with the broker's own
codec (``mqttbroker.protocol.mqttsn.codec``); the MQTT side is the load generator of the other
benchmarks (``benchmarks/loadgen.py``, ``benchmarks/clients.py``).

**Memory per client.** ``--clients`` MQTT-SN clients, each its own UDP socket (own source
port), spread over worker processes: each CONNECTs (Duration ``--keepalive``, 600 s) and
SUBSCRIBEs (QoS 1) to its own topic ``bench/sn/<i>``; then a share of them (``--sleepers``,
20%) goes to sleep (DISCONNECT with Duration 600, answered by DISCONNECT). UDP may drop under
load, so every step is resent after ``--retry`` seconds, at most ``--tries`` times; a client
that never got its answer counts as failed. Broker RSS (``/proc/PID/status``) before the first
client and after the last (settled) gives KiB per client. Then the same number of clients over
MQTT/TCP (raw asyncio sockets: CONNECT with keep-alive 600, SUBSCRIBE to its own topic, all
staying connected: TCP has no sleep) against a fresh broker; the ratio is MQTT-SN / TCP.

**Throughput.** ``--publishers`` publishers, ``--count`` messages each of ``--payload`` bytes,
to topics ``bench/in/NN``, and one MQTT/TCP subscriber of ``bench/in/+`` at the same QoS that
counts every (publisher, sequence) it gets (loss and duplicates are exact). Over MQTT-SN each
publisher CONNECTs, REGISTERs its topic once and PUBLISHes with the topic id; QoS 0 datagrams
are sent as fast as the sender can (UDP has no back-pressure: what the gateway's socket cannot
hold is lost, and shown as loss); QoS 1 keeps ``--window`` PUBLISHes outstanding per client,
matches each PUBACK by MsgId and resends (DUP) after ``--retry`` seconds, ``--tries`` times at
most (then the message counts as given up). Over MQTT/TCP the publishers are loadgen's (same
window at QoS 1). msg/s = messages the subscriber received / (its last arrival - the first
PUBLISH written); broker CPU per message from /proc. Rounds interleave (SN, TCP, then TCP, SN,
...), each run with a fresh broker; the table has the medians and MQTT-SN / TCP.

Progress every second; writes ``OUT.json``, ``OUT.md`` and ``OUT.png`` (``--quick``:
``mqttsn-quick.*``, git-ignored). Exit status 1 if a client failed to connect, a QoS 1 message
was lost, or the broker exited.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_conns
from pathlib import Path
from typing import Any

import numpy as np

from mqttbroker.protocol.mqttsn import codec
from mqttbroker.protocol.mqttsn import messages as sn

from . import brokers, loadgen, wire
from .bridge import payload_size
from .clients import BaseClient, LoadgenError, open_client
from .idle import port_range

Json = dict[str, Any]
Say = Callable[[str], None]

ROOT = Path(__file__).resolve().parent.parent
FULL = {"clients": 10_000, "count": 10_000, "rounds": 3}
QUICK = {"clients": 500, "count": 1_000, "rounds": 1}
PROTOS = ("sn", "tcp")
LABELS = {"sn": "MQTT-SN (UDP)", "tcp": "MQTT/TCP"}
HOST = "127.0.0.1"
SN_PUBLISH, SN_PUBACK, SN_CONNACK, SN_REGACK, SN_SUBACK, SN_DISCONNECT = (
    0x0C, 0x0D, 0x05, 0x0B, 0x13, 0x18)
SN_PAYLOAD_OFFSET = 7       # Length, MsgType, Flags, TopicId (2), MsgId (2)
SN_FLAG_DUP = 0x80
HANDSHAKE_CONCURRENCY = 64  # handshakes in flight per worker process
MAX_PAYLOAD = 112           # the subscriber's fast path (see benchmarks/bridge.py)


# --------------------------------------------------------------------------------------------
# The broker: ours, a tcp and an mqttsn listener


@dataclass
class Ours(brokers.BrokerProcess):
    """Ours as benchmarks/brokers.py runs a broker (``port``: its TCP listener), with an
    ``mqttsn`` listener on ``sn_port`` too; stopping it also removes its folder."""

    sn_port: int = 0

    def stop(self, timeout: float = 10.0) -> int | None:
        status = super().stop(timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return status


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def config_text(tcp_port: int, sn_port: int) -> str:
    return (
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        f"    bind: {HOST}:{tcp_port}\n"
        "    allow_anonymous: true\n"
        "  sn:\n"
        "    type: mqttsn\n"
        f"    bind: {HOST}:{sn_port}\n"
        "    allow_anonymous: true\n"
        "    advertise_interval: 0\n"
        "sys_interval: 0\n"
        "auth:\n"
        "  allow_anonymous: true\n"
        "mqtt:\n"
        f"  max_inflight_messages: {brokers.MAX_INFLIGHT}\n"
        f"  max_queued_messages: {brokers.MAX_QUEUED}\n"
        "  max_connection_rate_per_address: 0\n"
        "log_level: WARNING\n")


def sn_probe(port: int, timeout: float = 0.5) -> bool:
    """The mqttsn listener answers a CONNECT (then the probe disconnects)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(codec.encode(sn.Connect("bench-probe", keep_alive=10)), (HOST, port))
            ok = isinstance(codec.decode(s.recv(64)), sn.Connack)
            s.sendto(codec.encode(sn.Disconnect()), (HOST, port))
            return ok
        except (OSError, ValueError):
            return False


def start_ours(nofile: int, timeout: float = 20.0) -> Ours:
    brokers.raise_nofile(nofile)
    last = ""
    for _ in range(3):  # a free port may be taken between probing and binding
        workdir = Path(tempfile.mkdtemp(prefix="bench-mqttsn-"))
        tcp_port, sn_port = brokers.free_port(), free_udp_port()
        conf = workdir / "mqttbroker.yaml"
        conf.write_text(config_text(tcp_port, sn_port))
        log = workdir / "broker.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(brokers.VENV_BIN / "python"), "-m", "mqttbroker", "serve", "-c", str(conf)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
        b = Ours("ours", tcp_port, proc, workdir, log, sn_port=sn_port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if brokers.accepts(tcp_port) and sn_probe(sn_port):
                return b
            time.sleep(0.05)
        last = b.log_tail()
        b.stop()
    raise brokers.BrokerError(f"our broker did not start (tcp + mqttsn); log:\n{last}")


class Ticker:
    """Broker CPU (share of a core) and RSS since the last tick, for the progress lines."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = loadgen.proc_cpu_seconds(pid)
        self.t = time.monotonic()

    def line(self) -> str:
        cpu, t = loadgen.proc_cpu_seconds(self.pid), time.monotonic()
        share = (cpu - self.cpu) / (t - self.t) if t > self.t else 0.0
        self.cpu, self.t = cpu, t
        try:
            rss = loadgen.rss_bytes(self.pid) / 2**20
        except (OSError, LoadgenError):
            return "broker gone"
        return f"broker CPU {share:4.0%}, RSS {rss:6.1f} MiB"


def _recv(conn: Any) -> tuple[Any, ...]:
    try:
        msg: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise LoadgenError("a load-generator process exited") from None
    if msg[0] == "error":
        raise LoadgenError(f"load generator failed:\n{msg[1]}")
    return msg


# --------------------------------------------------------------------------------------------
# Memory: many clients, each subscribed to its own topic, some asleep (MQTT-SN)


class SnWaiter(asyncio.DatagramProtocol):
    """One connected UDP socket; ``expect(kind)`` waits for the next datagram of that type."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.want: int | None = None
        self.fut: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if (self.fut is not None and not self.fut.done() and len(data) >= 2
                and data[1] == self.want):
            self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        pass  # (ECONNREFUSED from an earlier datagram: the resend deals with it)

    async def exchange(self, datagram: bytes, kind: int, retry_s: float,
                       tries: int) -> tuple[bytes | None, int]:
        """Send, wait ``retry_s`` for a ``kind`` answer, resend up to ``tries`` times in all:
        (the answer or None, resends)."""
        assert self.transport is not None
        self.want = kind
        for attempt in range(tries):
            self.fut = asyncio.get_running_loop().create_future()
            self.transport.sendto(datagram)
            try:
                return await asyncio.wait_for(self.fut, retry_s), attempt
            except TimeoutError:
                continue
        return None, tries - 1



async def _open_all(ch: loadgen.Channel, stats: dict[str, int], errors: dict[str, int],
                    t0: int, cpu0: float, connects: Sequence[Awaitable[Any]]) -> None:
    """Run ``connects`` (one per client), telling the runner ``stats`` every second; then
    "done" with the errors, the time span and the CPU used, and hold the sockets until the
    runner has measured (its next message)."""

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            ch.send("progress", dict(stats))

    reporter = asyncio.ensure_future(report())
    await asyncio.gather(*connects)
    reporter.cancel()
    ch.send("done", {**stats, "errors": errors, "t0_ns": t0, "t1_ns": time.monotonic_ns(),
                     "cpu_s": loadgen.cpu_seconds() - cpu0})
    try:
        await ch.get(timeout=600)
    except TimeoutError:
        pass


async def sn_memory_worker(ch: loadgen.Channel, port: int, ids: list[int], sleepers: set[int],
                           sources: list[str], keepalive: int, retry_s: float,
                           tries: int) -> None:
    """Connect, subscribe and (``sleepers``) put to sleep one MQTT-SN client per id."""
    loop = asyncio.get_running_loop()
    ch.send("ready", {})
    await ch.expect("go")
    sem = asyncio.Semaphore(HANDSHAKE_CONCURRENCY)
    held: list[asyncio.DatagramTransport] = []
    stats = {"ok": 0, "failed": 0, "resends": 0, "asleep": 0}
    errors: dict[str, int] = {}
    t0 = time.monotonic_ns()
    cpu0 = loadgen.cpu_seconds()

    def fail(why: str) -> None:
        stats["failed"] += 1
        errors[why] = errors.get(why, 0) + 1

    async def one(i: int) -> None:
        async with sem:
            src = sources[i % len(sources)] if sources else HOST
            try:
                tr, proto = await loop.create_datagram_endpoint(
                    SnWaiter, local_addr=(src, 0), remote_addr=(HOST, port))
            except OSError as exc:
                fail(f"socket: {exc.strerror or exc}")
                return
            held.append(tr)
            steps = [(codec.encode(sn.Connect(f"sn{i}", keep_alive=keepalive)), SN_CONNACK,
                      "CONNACK"),
                     (codec.encode(sn.Subscribe(f"bench/sn/{i}", 1, qos=1)), SN_SUBACK,
                      "SUBACK")]
            if i in sleepers:
                steps.append((codec.encode(sn.Disconnect(duration=keepalive)), SN_DISCONNECT,
                              "DISCONNECT (sleep)"))
            for datagram, kind, name in steps:
                answer, resends = await proto.exchange(datagram, kind, retry_s, tries)
                stats["resends"] += resends
                if answer is None:
                    fail(f"no {name} after {tries} tries")
                    return
                msg = codec.decode(answer)
                rc = getattr(msg, "return_code", 0)
                if rc:
                    fail(f"{name} return code {int(rc)}")
                    return
            stats["ok"] += 1
            stats["asleep"] += i in sleepers

    await _open_all(ch, stats, errors, t0, cpu0, [one(i) for i in ids])
    for tr in held:
        tr.close()


class TcpIdle(BaseClient):
    """CONNECT, SUBSCRIBE, then quiet (CONNACK and SUBACK are read)."""

    def __init__(self, client_id: str) -> None:
        super().__init__(client_id)
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        frames, end = wire.split_frames(self.buf, 0)
        for first, b0, b1 in frames:
            self._control(first, self.buf[b0:b1])
        self.buf = self.buf[end:]


async def tcp_memory_worker(ch: loadgen.Channel, port: int, ids: list[int],
                            sleepers: set[int], sources: list[str], keepalive: int,
                            retry_s: float, tries: int) -> None:
    """The same clients over MQTT/TCP: CONNECT + SUBSCRIBE each, all stay connected."""
    ch.send("ready", {})
    await ch.expect("go")
    sem = asyncio.Semaphore(HANDSHAKE_CONCURRENCY)
    held: list[BaseClient] = []
    stats = {"ok": 0, "failed": 0, "resends": 0, "asleep": 0}
    errors: dict[str, int] = {}
    t0 = time.monotonic_ns()
    cpu0 = loadgen.cpu_seconds()

    async def one(i: int) -> None:
        async with sem:
            src = sources[i % len(sources)] if sources else None
            c: BaseClient | None = None
            try:
                c = await asyncio.wait_for(open_client(lambda: TcpIdle(f"tcp{i}"), port,
                                                       source=src), 10)
                await c.handshake(10)
                await c.subscribe([(f"bench/sn/{i}", 1)], 10)
                held.append(c)
                stats["ok"] += 1
            except (OSError, TimeoutError, LoadgenError, RuntimeError) as exc:
                stats["failed"] += 1
                why = type(exc).__name__
                errors[why] = errors.get(why, 0) + 1
                if c is not None:
                    c.transport.abort()

    await _open_all(ch, stats, errors, t0, cpu0, [one(i) for i in ids])
    for c in held:
        c.transport.abort()


def memory(proto: str, args: argparse.Namespace, say: Say) -> Json:
    """One fresh broker, ``args.clients`` clients of ``proto``: KiB per client."""
    n = args.clients
    lo, hi = port_range()
    nsources = max(1, math.ceil(n / int((hi - lo + 1) * 0.8)))
    sources = [f"127.0.0.{2 + k}" for k in range(nsources)] if nsources > 1 else []
    # one process holds its share of the sockets: stay well below the open-file limit
    soft = brokers.raise_nofile(n + 2048)[0]
    procs = max(args.procs, math.ceil(n / max(1, soft - 1024)))
    n_sleep = round(n * args.sleepers) if proto == "sn" else 0
    sleepers = set(range(0, n, max(1, round(n / n_sleep)))[:n_sleep]) if n_sleep else set()
    b = start_ours(n + 2048)
    fn = sn_memory_worker if proto == "sn" else tcp_memory_worker
    port = b.sn_port if proto == "sn" else b.port
    workers: list[loadgen.Worker] = []
    try:
        time.sleep(1.0)
        rss0 = loadgen.rss_bytes(b.pid)
        cpu0 = loadgen.proc_cpu_seconds(b.pid)
        for k in range(procs):
            ids = list(range(k, n, procs))
            workers.append(loadgen.Worker(f"{proto}-mem{k}", fn, port, ids,
                                          {i for i in ids if i in sleepers}, sources,
                                          args.keepalive, args.retry, args.tries))
        for w in workers:
            w.recv("ready", 30)
        say(f"  {LABELS[proto]}: {n:,} clients ({n_sleep:,} to sleep) from {procs} processes"
            f"{f', {nsources} source addresses' if sources else ''}; broker pid {b.pid}, "
            f"RSS before {rss0 / 2**20:.1f} MiB")
        for w in workers:
            w.send("go")
        tick = Ticker(b.pid)
        progress = [dict.fromkeys(("ok", "failed", "resends", "asleep"), 0) for _ in workers]
        done: dict[int, Json] = {}
        cap = time.monotonic() + args.connect_cap
        last_say = time.monotonic()
        while len(done) < len(workers) and time.monotonic() < cap:
            for conn in wait_conns([w.conn for w in workers], 1.0):
                k = next(i for i, w in enumerate(workers) if w.conn is conn)
                msg = _recv(conn)
                if msg[0] == "progress":
                    progress[k] = msg[1]
                elif msg[0] == "done":
                    done[k] = msg[1]
                    progress[k] = msg[1]
            if time.monotonic() - last_say >= 1.0 or len(done) == len(workers):
                last_say = time.monotonic()
                tot = {key: sum(p[key] for p in progress)
                       for key in ("ok", "failed", "resends", "asleep")}
                say(f"    {tot['ok']:,}/{n:,} ready ({tot['asleep']:,} asleep), "
                    f"{tot['failed']:,} failed, {tot['resends']:,} resends; {tick.line()}")
        if len(done) < len(workers):
            raise LoadgenError(f"clients still connecting after {args.connect_cap:.0f} s")
        connect_cpu = loadgen.proc_cpu_seconds(b.pid) - cpu0
        time.sleep(args.settle)
        rss1 = loadgen.rss_bytes(b.pid)
        alive = b.proc.poll() is None
        log = b.log_tail() if not alive else ""
        nlog = len(b.log.read_text(errors="replace").splitlines())
    finally:
        loadgen.stop_all(workers)
        b.stop()
    ok = sum(d["ok"] for d in done.values())
    failed = sum(d["failed"] for d in done.values())
    errors: dict[str, int] = {}
    for d in done.values():
        for k, v in d["errors"].items():
            errors[k] = errors.get(k, 0) + v
    span = (max(d["t1_ns"] for d in done.values()) - min(d["t0_ns"] for d in done.values())) / 1e9
    res = {
        "proto": proto, "clients": n, "ok": ok, "failed": failed, "errors": errors,
        "asleep": sum(d["asleep"] for d in done.values()), "sleepers_wanted": n_sleep,
        "resends": sum(d["resends"] for d in done.values()),
        "procs": procs, "sources": nsources, "seconds": round(span, 2),
        "rate": round(ok / span, 1) if span else None,
        "rss0_bytes": rss0, "rss_bytes": rss1,
        "kib_per_client": round((rss1 - rss0) / ok / 1024, 3) if ok else None,
        "broker_cpu_us_per_client": round(connect_cpu / ok * 1e6, 1) if ok else None,
        "client_cpu": {f"w{k}": round(d["cpu_s"] / span, 2) if span else None
                       for k, d in sorted(done.items())},
        "broker_alive": alive, "broker_log_lines": nlog, "broker_log_tail": log,
    }
    say(f"  {LABELS[proto]}: {ok:,}/{n:,} ready in {span:.1f} s ({res['rate'] or 0:,.0f}/s), "
        f"{failed} failed, {res['resends']} resends; RSS {rss0 / 2**20:.1f} -> "
        f"{rss1 / 2**20:.1f} MiB = {res['kib_per_client'] or 0:.2f} KiB/client"
        + ("" if alive else "; BROKER EXITED"))
    if errors:
        say(f"    failures: {errors}")
    return res


# --------------------------------------------------------------------------------------------
# Throughput: publishers over MQTT-SN (or TCP) -> one MQTT/TCP subscriber


class SnPub(asyncio.DatagramProtocol):
    """One MQTT-SN publisher: CONNECT, REGISTER, then pre-encoded PUBLISH datagrams."""

    def __init__(self, pub: int, topic: str, qos: int, count: int, window: int,
                 retry_s: float, tries: int) -> None:
        self.pub, self.topic, self.qos, self.count = pub, topic, qos, count
        self.window, self.retry_ns, self.tries = window, int(retry_s * 1e9), tries
        self.transport: asyncio.DatagramTransport | None = None
        self.waiter = SnWaiter()
        self.blob = b""
        self.size = 0
        self.sent = 0            # distinct messages written (first transmissions)
        self.acked = 0
        self.resends = 0
        self.given_up = 0
        self.rejected = 0
        self.congestion = 0
        self.unknown_acks = 0
        self.outstanding: dict[int, list[int]] = {}   # msg id -> [seq, sent_ns, tries]
        self.first_ns = 0
        self.last_ns = 0
        self.stopped = False
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.waiter.connection_made(transport)

    def error_received(self, exc: Exception) -> None:
        pass

    async def setup(self, retry_s: float, tries: int) -> None:
        for msg, kind in ((sn.Connect(f"snpub{self.pub}-{os.getpid() % 10000}",
                                      keep_alive=600), SN_CONNACK),
                          (sn.Register(0, 1, self.topic), SN_REGACK)):
            answer, _ = await self.waiter.exchange(codec.encode(msg), kind, retry_s, tries)
            if answer is None:
                raise LoadgenError(f"publisher {self.pub}: no answer to {type(msg).__name__}")
            got = codec.decode(answer)
            if getattr(got, "return_code", 0):
                raise LoadgenError(f"publisher {self.pub}: {got}")
        assert isinstance(got, sn.Regack)
        template = codec.encode(sn.Publish(got.topic_id, wire.payload(self.pub, 0),
                                           qos=self.qos, msg_id=1 if self.qos else 0))
        size = len(template)
        frames = np.tile(np.frombuffer(template, dtype=np.uint8), (self.count, 1))
        seqs = np.arange(self.count, dtype=np.uint32)
        po = SN_PAYLOAD_OFFSET
        frames[:, po + 4:po + 8] = seqs.astype(">u4").view(np.uint8).reshape(self.count, 4)
        if self.qos:
            frames[:, 5:7] = (seqs % 65535 + 1).astype(">u2").view(np.uint8).reshape(
                self.count, 2)
        self.blob, self.size = frames.tobytes(), size

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) == 7 and data[1] == SN_PUBACK:
            mid = (data[4] << 8) | data[5]
            entry = self.outstanding.get(mid)
            if entry is None:
                self.unknown_acks += 1      # an answer to a resend that was already acked
                return
            rc = data[6]
            if rc == 1:                     # congestion: try again later (resend timer)
                self.congestion += 1
                return
            del self.outstanding[mid]
            if rc:
                self.rejected += 1
            else:
                self.acked += 1
            self.last_ns = time.monotonic_ns()
            self._fill()
        else:
            self.waiter.datagram_received(data, addr)

    def _frame(self, seq: int) -> bytes:
        return self.blob[seq * self.size:(seq + 1) * self.size]

    def _fill(self) -> None:
        assert self.transport is not None
        while (not self.stopped and self.sent < self.count
               and len(self.outstanding) < self.window):
            seq = self.sent
            self.transport.sendto(self._frame(seq))
            self.outstanding[seq % 65535 + 1] = [seq, time.monotonic_ns(), 1]
            self.sent += 1
        self._check()

    def _check(self) -> None:
        if not self.finished.done() and not self.outstanding and (
                self.stopped or self.sent >= self.count):
            self.finished.set_result(None)

    def resend_due(self) -> None:
        """Resend (DUP) what waited longer than the retry interval; give up after ``tries``."""
        assert self.transport is not None
        now = time.monotonic_ns()
        for mid, entry in list(self.outstanding.items()):
            seq, sent_ns, n = entry
            if now - sent_ns < self.retry_ns:
                continue
            if n >= self.tries:
                del self.outstanding[mid]
                self.given_up += 1
                continue
            frame = bytearray(self._frame(seq))
            frame[2] |= SN_FLAG_DUP
            self.transport.sendto(bytes(frame))
            entry[1], entry[2] = now, n + 1
            self.resends += 1
        self._fill()

    async def run_qos0(self, rate: float) -> None:
        """Send every datagram; ``rate`` > 0: at most that many a second (in bursts of 32),
        else as fast as this process can."""
        assert self.transport is not None
        tr, size, blob = self.transport, self.size, self.blob
        t0 = time.monotonic()
        for seq in range(self.count):
            if self.stopped:
                break
            tr.sendto(blob[seq * size:(seq + 1) * size])
            self.sent += 1
            if seq % 32 == 31:
                # let the other publishers (and reads) in; paced: wait until this one is due
                ahead = (seq + 1) / rate - (time.monotonic() - t0) if rate > 0 else 0.0
                await asyncio.sleep(max(0.0, ahead))
        self.last_ns = time.monotonic_ns()
        if not self.finished.done():
            self.finished.set_result(None)


async def sn_publisher_worker(ch: loadgen.Channel, port: int, pub_ids: list[int],
                              topics: list[str], qos: int, count: int, window: int,
                              retry_s: float, tries: int, q0_rate: float = 0.0) -> None:
    """MQTT-SN publishers ``pub_ids``, ``count`` messages each; QoS 0 at ``q0_rate`` msg/s
    per publisher (0: unpaced)."""
    loop = asyncio.get_running_loop()
    pubs: list[SnPub] = []
    for pub, topic in zip(pub_ids, topics, strict=True):
        _, p = await loop.create_datagram_endpoint(
            lambda pub=pub, topic=topic: SnPub(pub, topic, qos, count, window, retry_s, tries),
            local_addr=(HOST, 0), remote_addr=(HOST, port))
        await p.setup(retry_s, tries)
        pubs.append(p)
    ch.send("ready", {})
    _, cap_s = await ch.expect("go")
    cpu0, t0 = loadgen.cpu_seconds(), time.monotonic_ns()
    first = time.monotonic_ns()
    for p in pubs:
        p.first_ns = first
    capped = False

    def cap() -> None:
        nonlocal capped
        capped = True
        for p in pubs:
            p.stopped = True
            p._check()

    timer = loop.call_later(cap_s, cap)
    ticker: asyncio.Task[None] | None = None
    if qos:
        for p in pubs:
            p._fill()

        async def resend_loop() -> None:
            while True:
                await asyncio.sleep(min(0.05, retry_s / 4))
                for p in pubs:
                    p.resend_due()

        ticker = asyncio.ensure_future(resend_loop())
        waits = [p.finished for p in pubs]
    else:
        waits = [asyncio.ensure_future(p.run_qos0(q0_rate)) for p in pubs]
    try:
        # at QoS 1, messages still outstanding at the cap get their resends (bounded)
        await asyncio.wait_for(asyncio.gather(*waits), cap_s + retry_s * tries + 5)
    except TimeoutError:
        pass
    timer.cancel()
    if ticker is not None:
        ticker.cancel()
    t1 = time.monotonic_ns()
    ch.send("result", {
        "sent": {pub: p.sent for pub, p in zip(pub_ids, pubs, strict=True)},
        "acked": sum(p.acked for p in pubs) if qos else None,
        "capped": capped,
        "first_ns": first,
        "last_ns": max(p.last_ns or t1 for p in pubs),
        "cpu_s": loadgen.cpu_seconds() - cpu0, "wall_s": (t1 - t0) / 1e9,
        "resends": sum(p.resends for p in pubs), "given_up": sum(p.given_up for p in pubs),
        "rejected": sum(p.rejected for p in pubs),
        "congestion": sum(p.congestion for p in pubs),
        "unacked": sum(len(p.outstanding) for p in pubs),
        "unknown_acks": sum(p.unknown_acks for p in pubs),
    })
    try:
        await ch.get(timeout=120)
    except TimeoutError:
        pass
    for p in pubs:
        if p.transport is not None:
            p.transport.sendto(codec.encode(sn.Disconnect()))
            p.transport.close()


def throughput(proto: str, qos: int, args: argparse.Namespace, say: Say) -> Json:
    """One run on a fresh broker: publishers over ``proto`` -> one MQTT/TCP subscriber."""
    npubs, per_pub = args.publishers, args.count
    topics = [f"bench/in/{p:02d}" for p in range(npubs)]
    b = start_ours(4096)
    workers: list[loadgen.Worker] = []
    try:
        sub = loadgen.Worker("sub", loadgen.subscriber_worker, b.port, 1, 0,
                             [("bench/in/+", qos)], topics[0], qos, npubs, per_pub)
        workers.append(sub)
        sub.recv("ready", 60)
        groups = [list(range(npubs))[i::args.pub_procs] for i in range(args.pub_procs)]
        groups = [g for g in groups if g]
        pubs = []
        for i, g in enumerate(groups):
            gt = [topics[p] for p in g]
            if proto == "sn":
                w = loadgen.Worker(f"snpub{i}", sn_publisher_worker, b.sn_port, g, gt, qos,
                                   per_pub, args.window, args.retry, args.tries,
                                   args.q0_rate / npubs)
            else:
                w = loadgen.Worker(f"pub{i}", loadgen.publisher_worker, b.port, g, gt, qos,
                                   per_pub, args.window)
            pubs.append(w)
            workers.append(w)
        for w in pubs:
            w.recv("ready", 60)
        bcpu0 = loadgen.proc_cpu_seconds(b.pid)
        t0 = time.monotonic()
        sub.send("go", args.cap + 20)
        for w in pubs:
            w.send("go", args.cap)
        tick = Ticker(b.pid)
        pres: dict[int, Json] = {}
        limit = time.monotonic() + args.cap + args.retry * args.tries + 40
        while len(pres) < len(pubs) and time.monotonic() < limit:
            for conn in wait_conns([w.conn for w in pubs], 1.0):
                k = next(i for i, w in enumerate(pubs) if w.conn is conn)
                pres[k] = _recv(conn)[1]
            if len(pres) < len(pubs):
                say(f"    publishing, {time.monotonic() - t0:5.1f} s; {tick.line()}")
        if len(pres) < len(pubs):
            raise LoadgenError("publishers did not report")
        sent_by_pub = [0] * npubs
        for r in pres.values():
            for p, s in r["sent"].items():
                sent_by_pub[int(p)] = s
        say(f"    published {sum(sent_by_pub):,} in "
            f"{max(r['wall_s'] for r in pres.values()):.1f} s; draining the subscriber")
        sub.send("expect", sent_by_pub)
        sres = None
        limit = time.monotonic() + args.cap + 60
        while sres is None and time.monotonic() < limit:
            if sub.conn.poll(1.0):
                sres = _recv(sub.conn)[1]
            else:
                say(f"    draining, {time.monotonic() - t0:5.1f} s; {tick.line()}")
        if sres is None:
            raise LoadgenError("the subscriber did not report")
        wall = time.monotonic() - t0
        bcpu = loadgen.proc_cpu_seconds(b.pid) - bcpu0
        alive = b.proc.poll() is None
        log_lines = b.log.read_text(errors="replace").splitlines()
    finally:
        loadgen.stop_all(workers)
        b.stop()
    c = sres["clients"][0]
    received = c["received"]
    t_start = min(r["first_ns"] for r in pres.values())
    e2e = (c["last_ns"] - t_start) / 1e9 if c["last_ns"] else 0.0
    published = sum(sent_by_pub)
    plist = list(pres.values())
    res: Json = {
        "proto": proto, "qos": qos,
        "value": received / e2e if e2e > 0 else 0.0, "unit": "msg/s",
        "seconds": round(e2e, 3), "published": published,
        "acked": sum(r["acked"] for r in plist) if qos else None,
        "received": received, "unique": c["unique"], "loss": c["loss"], "dups": c["dups"],
        "unexpected": c["unexpected"],
        "loss_pct": round(100 * c["loss"] / published, 3) if published else None,
        "capped": any(r["capped"] for r in plist),
        "pub_rate": round(published / max(r["wall_s"] for r in plist), 1),
        "broker_cpu_share": round(bcpu / wall, 2),
        "broker_cpu_us_per_msg": round(bcpu / received * 1e6, 2) if received else None,
        "client_cpu": {**{f"pub{k}": round(r["cpu_s"] / wall, 2) for k, r in pres.items()},
                       "sub": round(sres["cpu_s"] / wall, 2)},
        "broker_alive": alive, "broker_log_lines": len(log_lines),
        "broker_log_tail": "\n".join(log_lines[-10:]) if log_lines else "",
    }
    if proto == "sn":
        for k in ("resends", "given_up", "rejected", "congestion", "unacked", "unknown_acks"):
            res[k] = sum(r[k] for r in plist)
    return res


# --------------------------------------------------------------------------------------------
# Summary, table, chart


def _median(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(mem: dict[str, Json], runs: Sequence[Json], qos_list: Sequence[int]) -> Json:
    out: Json = {"memory": None, "throughput": []}
    if mem:
        out["memory"] = {
            p: {"kib_per_client": mem[p]["kib_per_client"], "failed": mem[p]["failed"]}
            for p in mem}
        if "sn" in mem and "tcp" in mem:
            out["memory"]["ratio"] = _ratio(mem["sn"]["kib_per_client"],
                                            mem["tcp"]["kib_per_client"])
    for qos in qos_list:
        row: Json = {"qos": qos}
        for p in PROTOS:
            rs = [r["result"] for r in runs if r["proto"] == p and r["qos"] == qos
                  and "result" in r]
            row[p] = {
                "median": _median([r["value"] for r in rs]),
                "values": [round(r["value"]) for r in rs],
                "cpu_us": _median([r["broker_cpu_us_per_msg"] for r in rs]),
                "loss": sum(r["loss"] for r in rs), "dups": sum(r["dups"] for r in rs),
                "published": sum(r["published"] for r in rs),
                "given_up": sum(r.get("given_up", 0) for r in rs),
                "resends": sum(r.get("resends", 0) for r in rs),
                "capped": any(r["capped"] for r in rs), "runs": len(rs),
            }
        row["ratio"] = _ratio(row["sn"]["median"], row["tcp"]["median"])
        row["cpu_ratio"] = _ratio(row["sn"]["cpu_us"], row["tcp"]["cpu_us"])
        out["throughput"].append(row)
    return out


def _fmt(v: float | None, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def markdown(meta: Json, summary: Json, mem: dict[str, Json]) -> str:
    lines = [f"### MQTT-SN vs MQTT/TCP ({meta['machine_line']})", ""]
    lines.append(f"`python -m benchmarks.mqttsn{' --quick' if meta['quick'] else ''}`, "
                 f"mqttbroker {meta['version']}, load average {meta['load'][0]:.2f} at start, "
                 f"{meta['elapsed_s']:.0f} s.")
    lines.append("")
    if mem:
        lines += [("| memory | clients | ready | failed | resends | asleep | connect rate "
                   "| broker RSS before -> after | KiB/client |"),
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in PROTOS:
            if p not in mem:
                continue
            m = mem[p]
            lines.append(
                f"| {LABELS[p]} | {m['clients']:,} | {m['ok']:,} | {m['failed']:,} | "
                f"{m['resends']:,} | {m['asleep']:,} | {_fmt(m['rate'])}/s | "
                f"{m['rss0_bytes'] / 2**20:.1f} -> {m['rss_bytes'] / 2**20:.1f} MiB | "
                f"**{_fmt(m['kib_per_client'], '.2f')}** |")
        ratio = summary["memory"].get("ratio") if summary["memory"] else None
        if ratio is not None:
            lines.append(f"| MQTT-SN / TCP | | | | | | | | **{ratio:.2f}x** |")
        lines.append("")
    if summary["throughput"]:
        lines += [f"| throughput ({meta['publishers']} pub -> 1 MQTT sub, "
                  f"{meta['count']:,} msg each, {meta['payload']} B"
                  + (f"; SN QoS 0 paced at {meta['q0_rate']:,.0f} msg/s" if meta['q0_rate']
                     else "") + ") | MQTT-SN msg/s "
                  "| MQTT/TCP msg/s | SN / TCP | broker us/msg SN | TCP | SN / TCP "
                  "| loss SN | loss TCP | SN resends / given up |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in summary["throughput"]:
            s, t = row["sn"], row["tcp"]

            def loss(x: Json, qos: int = row["qos"]) -> str:
                if not x["published"]:
                    return "-"
                flag = " !" if x["loss"] and qos else ""
                return f"{x['loss']:,} ({100 * x['loss'] / x['published']:.2f}%){flag}"

            lines.append(
                f"| QoS {row['qos']} | {_fmt(s['median'])} | {_fmt(t['median'])} | "
                f"**{_fmt(row['ratio'], '.2f')}x** | {_fmt(s['cpu_us'], '.1f')} | "
                f"{_fmt(t['cpu_us'], '.1f')} | {_fmt(row['cpu_ratio'], '.2f')}x | "
                f"{loss(s)} | {loss(t)} | {s['resends']:,} / {s['given_up']:,} |")
        lines.append("")
        lines.append(f"Medians of {meta['rounds']} round(s); runs: "
                     + "; ".join(f"QoS {row['qos']} SN {row['sn']['values']} TCP "
                                 f"{row['tcp']['values']}" for row in summary["throughput"])
                     + ". Loss and resends are summed over all rounds.")
    return "\n".join(lines) + "\n"


def chart(meta: Json, summary: Json, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_mem, ax_tp = fig.subplots(1, 2, width_ratios=[1, 2])
    colors = {"sn": "tab:green", "tcp": "tab:blue"}
    if summary["memory"]:
        vals = [(summary["memory"].get(p) or {}).get("kib_per_client") or 0 for p in PROTOS]
        bars = ax_mem.bar([LABELS[p] for p in PROTOS], vals,
                          color=[colors[p] for p in PROTOS])
        ax_mem.bar_label(bars, labels=[f"{v:.2f}" for v in vals])
        ax_mem.set_ylabel("broker KiB per client")
        ax_mem.set_title(f"memory, {meta['clients']:,} clients")
        ax_mem.set_ylim(0, max(vals + [0.1]) * 1.25)
    rows = summary["throughput"]
    width = 0.38
    for k, p in enumerate(PROTOS):
        vals = [row[p]["median"] or 0 for row in rows]
        xs = [x + (k - 0.5) * width for x in range(len(rows))]
        bars = ax_tp.bar(xs, vals, width, color=colors[p], label=LABELS[p])
        ax_tp.bar_label(bars, labels=[f"{v:,.0f}" for v in vals], fontsize="small")
        for x, row in zip(xs, rows, strict=True):
            ax_tp.plot([x] * len(row[p]["values"]), row[p]["values"], "k.", markersize=4)
    for x, row in enumerate(rows):
        if row["ratio"] is not None:
            ax_tp.annotate(f"{row['ratio']:.2f}x", (x, 0), xytext=(0, -28),
                           textcoords="offset points", ha="center", fontweight="bold")
    ax_tp.set_xticks(range(len(rows)), [f"QoS {row['qos']}" for row in rows])
    ax_tp.set_ylabel("msg/s at the MQTT subscriber (median; dots: runs)")
    ax_tp.set_title(f"{meta['publishers']} publishers -> 1 subscriber ({meta['date'][:10]})")
    ax_tp.grid(True, axis="y", alpha=0.3)
    ax_tp.legend(loc="upper right")
    top = max([row[p]["median"] or 0 for row in rows for p in PROTOS] + [1])
    ax_tp.set_ylim(0, top * 1.3)
    fig.savefig(os.fspath(path), format="png")


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mqttsn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=None,
                   help="clients for the memory measurement (default 10,000; --quick 500)")
    p.add_argument("--sleepers", type=float, default=0.2,
                   help="share of the MQTT-SN clients that go to sleep (default 0.2)")
    p.add_argument("--keepalive", type=int, default=600,
                   help="CONNECT Duration and sleep Duration, seconds (default 600)")
    p.add_argument("--procs", type=int, default=4, help="client processes for memory (4)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds before reading RSS after the last client (default 2)")
    p.add_argument("--connect-cap", type=float, default=300.0,
                   help="seconds all clients may take to get ready (default 300)")
    p.add_argument("--rounds", type=int, default=None, help="throughput rounds (3; --quick 1)")
    p.add_argument("--count", type=int, default=None,
                   help="messages per publisher (default 10,000; --quick 1,000)")
    p.add_argument("--publishers", type=int, default=8, help="publishers (default 8)")
    p.add_argument("--pub-procs", type=int, default=1, help="publisher processes (default 1)")
    p.add_argument("--window", type=int, default=20,
                   help="QoS 1 PUBLISHes in flight per publisher, both protocols (default 20)")
    p.add_argument("--payload", type=int, default=100, help="payload bytes (default 100)")
    p.add_argument("--qos", default="0,1", help="QoS levels for throughput (default 0,1)")
    p.add_argument("--q0-rate", type=float, default=0.0,
                   help="MQTT-SN QoS 0: send at most this many msg/s in all (default 0: as "
                        "fast as the sender can; UDP has no back-pressure)")
    p.add_argument("--retry", type=float, default=2.0,
                   help="MQTT-SN resend after this many seconds without an answer (default 2)")
    p.add_argument("--tries", type=int, default=5,
                   help="MQTT-SN transmissions per message at most (default 5)")
    p.add_argument("--cap", type=float, default=30.0,
                   help="seconds the publishers may take in a run (default 30)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="500 clients, 1,000 messages per publisher, 1 round; writes "
                        "mqttsn-quick.* unless --out")
    p.add_argument("--out", default=None,
                   help="output stem: OUT.json, OUT.md, OUT.png (default "
                        "benchmarks/results/mqttsn)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for k in ("clients", "count", "rounds"):
        if getattr(args, k) is None:
            setattr(args, k, preset[k])
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results"
                       / ("mqttsn-quick" if args.quick else "mqttsn"))
    try:
        args.qos_list = [int(q) for q in args.qos.split(",") if q.strip()]
    except ValueError:
        p.error("--qos: 0, 1 or 0,1")
    if not args.qos_list or any(q not in (0, 1) for q in args.qos_list):
        p.error("--qos: 0, 1 or 0,1")
    checks = [(1 <= args.clients <= 200_000, "--clients must be in 1..200,000"),
              (0 <= args.sleepers <= 1, "--sleepers must be in 0..1"),
              (1 <= args.keepalive <= 65535, "--keepalive must be in 1..65535"),
              (1 <= args.procs <= 64, "--procs must be in 1..64"),
              (1 <= args.rounds <= 20, "--rounds must be in 1..20"),
              (1 <= args.count <= 1_000_000, "--count must be in 1..1,000,000"),
              (1 <= args.publishers <= 64, "--publishers must be in 1..64"),
              (1 <= args.pub_procs <= args.publishers, "--pub-procs must be in 1..publishers"),
              (1 <= args.window <= 1000, "--window must be in 1..1000"),
              (wire.PAYLOAD_HEADER.size <= args.payload <= MAX_PAYLOAD,
               f"--payload must be in {wire.PAYLOAD_HEADER.size}..{MAX_PAYLOAD}"),
              (0.05 <= args.retry <= 60, "--retry must be in 0.05..60 s"),
              (1 <= args.tries <= 20, "--tries must be in 1..20"),
              (0 <= args.q0_rate <= 10_000_000, "--q0-rate must be in 0..10,000,000"),
              (0 < args.cap <= 600, "--cap must be in (0, 600] s"),
              (0 < args.connect_cap <= 3600, "--connect-cap must be in (0, 3600] s"),
              (0 <= args.settle <= 60, "--settle must be in 0..60 s")]
    for ok, msg in checks:
        if not ok:
            p.error(msg)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from . import report
    from .run import machine, stopwatch

    args = parse_args(argv)
    t_start = time.monotonic()

    say = stopwatch()

    meta: Json = {
        "what": "MQTT-SN (UDP) vs MQTT/TCP on one broker: memory per client, QoS 0/1 fan-in",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "load": os.getloadavg(),
        "version": brokers.versions().get("ours", "?"), "quick": args.quick,
        "clients": args.clients, "sleepers": args.sleepers, "keepalive": args.keepalive,
        "rounds": args.rounds, "count": args.count, "publishers": args.publishers,
        "pub_procs": args.pub_procs, "window": args.window, "payload": args.payload,
        "qos": args.qos_list, "q0_rate": args.q0_rate, "retry_s": args.retry,
        "tries": args.tries, "cap_s": args.cap,
        "broker_config": config_text(0, 0),
    }
    meta["machine_line"] = report.machine_line(meta)
    say(f"machine: {meta['machine_line']}; load average {meta['load'][0]:.2f}; "
        f"mqttbroker {meta['version']}")
    mem: dict[str, Json] = {}
    errors: list[str] = []
    if not args.skip_memory:
        for proto in PROTOS:
            say(f"memory: {args.clients:,} {LABELS[proto]} clients on a fresh broker")
            try:
                mem[proto] = memory(proto, args, say)
            except (LoadgenError, brokers.BrokerError, OSError) as exc:
                errors.append(f"memory {proto}: {exc}")
                say(f"  FAILED: {exc}")
    runs: list[Json] = []
    if not args.skip_throughput:
        n_runs = args.rounds * len(args.qos_list) * len(PROTOS)
        say(f"throughput: {args.rounds} round(s) x QoS {args.qos_list} x SN/TCP; "
            f"{args.publishers} publishers x {args.count:,} messages of {args.payload} B")
        with payload_size(args.payload):
            for rnd in range(1, args.rounds + 1):
                order = PROTOS if rnd % 2 else tuple(reversed(PROTOS))
                for qos in args.qos_list:
                    for proto in order:
                        label = f"round {rnd}/{args.rounds} QoS {qos} {LABELS[proto]}"
                        say(f"[{len(runs) + 1}/{n_runs}] {label}")
                        entry: Json = {"round": rnd, "qos": qos, "proto": proto}
                        try:
                            r = throughput(proto, qos, args, say)
                            entry["result"] = r
                            extra = (f", resends {r['resends']}, given up {r['given_up']}"
                                     if proto == "sn" else "")
                            flag = "  ! LOSS AT QoS 1" if qos and r["loss"] else ""
                            say(f"    {label}: {r['value']:,.0f} msg/s, loss "
                                f"{r['loss']:,}/{r['published']:,}, dups {r['dups']}"
                                f"{extra}; broker {r['broker_cpu_us_per_msg']} us/msg "
                                f"({r['broker_cpu_share']:.0%} of a core){flag}"
                                + ("  (time cap hit)" if r["capped"] else ""))
                        except (LoadgenError, brokers.BrokerError, OSError) as exc:
                            entry["error"] = str(exc)
                            errors.append(f"{label}: {exc}")
                            say(f"    FAILED: {exc}")
                        runs.append(entry)
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    summary = summarize(mem, runs, args.qos_list if not args.skip_throughput else [])
    md = markdown(meta, summary, mem)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".json").write_text(json.dumps(
        {**meta, "summary": summary, "memory": mem, "runs": runs, "errors": errors},
        indent=1, default=str) + "\n")
    out.with_name(out.name + ".md").write_text(md)
    try:
        chart(meta, summary, out.with_name(out.name + ".png"))
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        say(f"chart failed: {exc}")
    print()
    print(md)
    problems = list(errors)
    problems += [f"memory {p}: {m['failed']} clients not ready" for p, m in mem.items()
                 if m["failed"]]
    problems += [f"memory {p}: broker exited" for p, m in mem.items() if not m["broker_alive"]]
    problems += [f"round {r['round']} QoS 1 {LABELS[r['proto']]}: lost {r['result']['loss']:,}"
                 for r in runs if r["qos"] == 1 and "result" in r and r["result"]["loss"]]
    problems += [f"round {r['round']} QoS {r['qos']} {LABELS[r['proto']]}: broker exited"
                 for r in runs if "result" in r and not r["result"]["broker_alive"]]
    for e in problems:
        print(f"PROBLEM: {e}")
    print(f"wrote {out}.json, .md, .png (run took {meta['elapsed_s']:.0f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
