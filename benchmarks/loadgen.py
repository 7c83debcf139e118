"""Load generator: raw MQTT 3.1.1 over asyncio (uvloop) sockets, several processes.

It measures a broker from the outside and must not be what limits the numbers, so:

* every PUBLISH a publisher sends is encoded before the clock starts, as one blob of fixed-size
  frames per publisher; sending is slicing that blob (QoS 0: big chunks under TCP
  backpressure; QoS 1/2: a bounded in-flight window refilled per batch of acks);
* a subscriber decodes whole runs of fixed-size PUBLISH frames at once with numpy (header
  check, publisher id, sequence number, packet id, send time) and answers a batch of
  PUBACK/PUBREC with one write; anything else takes a generic per-frame path;
* publishers, subscribers and connecting clients run in separate processes (``fork``), each on
  its own uvloop loop, coordinated over pipes; every process reports the CPU it used, so a
  saturated load generator shows up in the results instead of passing for a slow broker.

Every payload carries (publisher id, sequence number, send time) (see :mod:`benchmarks.wire`):
subscribers count each (publisher, sequence) they receive, so loss and duplicates are exact.
Rates count deliveries at the subscriber side, over the time from the first PUBLISH written to
the last delivery. The client protocols are in :mod:`benchmarks.clients`.

Each scenario is a function returning a plain dict (JSON-ready): ``value`` (the headline
figure), ``unit``, ``loss``, ``dups`` and details. All loops are bounded in count and time.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import resource
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import uvloop

from . import wire
from .brokers import raise_nofile
from .clients import (
    WINDOW,
    BaseClient,
    IdleClient,
    LoadgenError,
    PubClient,
    SubClient,
    Tally,
    open_client,
)

__all__ = ["LoadgenError", "Probe", "fan_in", "fan_out", "idle_connections", "latency",
           "retained", "rss_bytes"]

GRACE_S = 2.0                # a subscriber that got nothing for this long after the
                             # publishers finished has everything it will get
CONNECT_CONCURRENCY = 32     # connection attempts in flight per process (below every
                             # broker's listen backlog, so no SYN is dropped and retried)

Json = dict[str, Any]
_CTX = mp.get_context("fork")


def cpu_seconds() -> float:
    """User + system CPU this process has used."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU of another process, from /proc/PID/stat (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise LoadgenError(f"no VmRSS for pid {pid}")


# --------------------------------------------------------------------------------------------
# Worker processes


class Channel:
    """The worker's end of its pipe, readable from the event loop."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        asyncio.get_running_loop().add_reader(conn.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                self.queue.put_nowait(self.conn.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.queue.put_nowait(("close",))

    def send(self, *msg: Any) -> None:
        self.conn.send(msg)

    async def get(self, timeout: float | None = None) -> tuple[Any, ...]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def expect(self, kind: str, timeout: float | None = None) -> tuple[Any, ...]:
        msg = await self.get(timeout)
        if msg[0] != kind:
            raise LoadgenError(f"expected {kind!r} from the runner, got {msg[0]!r}")
        return msg


WorkerFn = Callable[..., Coroutine[Any, Any, None]]


def _entry(fn: WorkerFn, conn: Connection, args: tuple[Any, ...]) -> None:
    raise_nofile(1_048_576)

    async def main() -> None:
        await fn(Channel(conn), *args)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except BaseException:  # noqa: BLE001 - reported to the runner, which raises it
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass


class Worker:
    """A load-generator process and the runner's end of its pipe."""

    def __init__(self, name: str, fn: WorkerFn, *args: Any) -> None:
        self.name = name
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(target=_entry, args=(fn, child, args), name=name, daemon=True)
        self.proc.start()
        child.close()

    def send(self, *msg: Any) -> None:
        self.conn.send(msg)

    def recv(self, kind: str, timeout: float) -> tuple[Any, ...]:
        if not self.conn.poll(timeout):
            raise LoadgenError(f"{self.name}: no {kind!r} within {timeout:.0f} s")
        try:
            msg: tuple[Any, ...] = self.conn.recv()
        except EOFError:
            raise LoadgenError(f"{self.name}: exited (code {self.proc.exitcode})") from None
        if msg[0] == "error":
            raise LoadgenError(f"{self.name} failed:\n{msg[1]}")
        if msg[0] != kind:
            raise LoadgenError(f"{self.name}: expected {kind!r}, got {msg[0]!r}")
        return msg

    def stop(self) -> None:
        try:
            self.conn.send(("close",))
        except OSError:
            pass
        self.proc.join(3)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2)
        self.conn.close()


def stop_all(workers: Sequence[Worker]) -> None:
    for w in workers:
        w.stop()


async def _linger(ch: Channel, clients: Sequence[BaseClient]) -> None:
    """Hold the connections until the runner says close (bounded), then DISCONNECT."""
    try:
        await ch.get(timeout=120)
    except TimeoutError:
        pass
    for c in clients:
        c.close()
    await asyncio.sleep(0.05)


async def publisher_worker(ch: Channel, port: int, pub_ids: list[int], topics: list[str],
                           qos: int, count: int, window: int, clean: bool = True) -> None:
    """Publishers ``pub_ids`` (one connection each), ``count`` messages each; ``clean``
    False connects them with persistent sessions (clean session 0)."""
    clients: list[PubClient] = []
    for pub, topic in zip(pub_ids, topics, strict=True):
        layout = wire.PublishLayout(topic, qos)
        blob = layout.blob(pub, 0, count)

        def make(pub: int = pub, blob: bytes = blob, size: int = layout.size) -> PubClient:
            return PubClient(f"bench-pub-{pub}-{os.getpid()}", blob, size, qos, window,
                             clean=clean)

        client = await open_client(make, port)
        assert isinstance(client, PubClient)
        await client.handshake()
        clients.append(client)
    ch.send("ready", {})
    _, cap_s = await ch.expect("go")
    cpu0, t0 = cpu_seconds(), time.monotonic_ns()
    for c in clients:
        c.start()
    loop = asyncio.get_running_loop()
    capped = False

    def cap() -> None:
        nonlocal capped
        capped = True
        for c in clients:
            c.stop()

    timer = loop.call_later(cap_s, cap)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.finished for c in clients)), cap_s + 15)
    except TimeoutError:
        pass  # acks still missing: reported as sent > acked
    timer.cancel()
    # QoS 0: "sent" means handed to the kernel; wait (bounded) for the transports to drain.
    deadline = time.monotonic() + 10
    while (any(c.transport.get_write_buffer_size() for c in clients)
           and time.monotonic() < deadline):
        await asyncio.sleep(0.005)
    t1 = time.monotonic_ns()
    ch.send("result", {
        "sent": {c_pub: c.sent for c_pub, c in zip(pub_ids, clients, strict=True)},
        "acked": sum(c.completed for c in clients) if qos else None,
        "capped": capped,
        "first_ns": min(c.first_ns for c in clients),
        "last_ns": max(c.last_ns or t1 for c in clients),
        "cpu_s": cpu_seconds() - cpu0, "wall_s": (t1 - t0) / 1e9,
    })
    await _linger(ch, clients)


async def subscriber_worker(ch: Channel, port: int, n_clients: int, first_index: int,
                            filters: list[tuple[str, int]], layout_topic: str,
                            delivered_qos: int, npubs: int, per_pub: int,
                            clean: bool = True) -> None:
    """``n_clients`` subscribers; each must receive every message of every publisher.
    ``clean`` False: persistent sessions (clean session 0), so a broker that stores sessions
    stores every message queued to them."""
    layout = wire.PublishLayout(layout_topic, delivered_qos)
    clients: list[SubClient] = []
    for i in range(n_clients):
        tally = Tally(npubs, per_pub)

        def make(i: int = i, tally: Tally = tally) -> SubClient:
            return SubClient(f"bench-sub-{first_index + i}-{os.getpid()}", layout, tally,
                             clean=clean)

        client = await open_client(make, port)
        assert isinstance(client, SubClient)
        await client.handshake()
        await client.subscribe(filters)
        clients.append(client)
    ch.send("ready", {})
    _, deadline_s = await ch.expect("go")
    cpu0, t0 = cpu_seconds(), time.monotonic()
    sent: list[int] = [per_pub] * npubs      # until the publishers say what they sent
    final = False
    while True:
        try:
            msg = await ch.get(timeout=0.02)
            if msg[0] == "expect":
                sent, final = list(msg[1]), True
            elif msg[0] == "close":
                break
        except TimeoutError:
            pass
        want = sum(sent)
        if all(c.tally.received >= want for c in clients) and all(
                c.tally.unique(sent) >= want for c in clients):
            break
        now = time.monotonic()
        last = max((c.tally.last_ns for c in clients), default=0) / 1e9
        if final and now - max(last, t0) > GRACE_S:
            break
        if now - t0 > deadline_s:
            break
    cpu = cpu_seconds() - cpu0
    per_client = []
    for c in clients:
        t = c.tally
        uniq = t.unique(sent)
        per_client.append({"received": t.received, "unique": uniq, "dups": t.dups(),
                           "unexpected": t.unexpected, "loss": sum(sent) - uniq,
                           "first_ns": t.first_ns, "last_ns": t.last_ns})
    ch.send("result", {"clients": per_client, "cpu_s": cpu, "wall_s": time.monotonic() - t0})
    await _linger(ch, clients)


# --------------------------------------------------------------------------------------------
# Scenarios (runner side)


@dataclass
class Probe:
    """The broker under test as the runner sees it: port and PID (for RSS and CPU)."""

    port: int
    pid: int | None = None


def _split(items: Sequence[int], parts: int) -> list[list[int]]:
    parts = max(1, min(parts, len(items)))
    return [list(items[i::parts]) for i in range(parts)]


def _cpu_report(broker_cpu_s: float | None, wall_s: float, workers: dict[str, float]) -> Json:
    """CPU used during the run by the broker and each load-generator process, as a fraction
    of one core over the run's wall time (1.0 = one core busy throughout)."""
    out: Json = {}
    if broker_cpu_s is not None:
        out["broker"] = round(broker_cpu_s / wall_s, 2)
    out |= {name: round(c / wall_s, 2) for name, c in workers.items()}
    return out


class _BrokerCpu:
    """The broker's CPU seconds between construction and ``stop()`` (None without a PID)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.start = proc_cpu_seconds(pid) if pid else 0.0
        self.used: float | None = None

    def stop(self) -> float | None:
        if self.pid:
            self.used = proc_cpu_seconds(self.pid) - self.start
        return self.used


def _pubsub(probe: Probe, *, qos: int, pub_topics: list[str], sub_filters: list[tuple[str, int]],
            n_subs: int, sub_procs: int, pub_procs: int, count: int, cap_s: float,
            window: int, progress: Callable[[str], None] | None, sub_clean: bool = True,
            pub_clean: bool = True) -> Json:
    """Publishers (one per topic, ``count`` messages each) -> ``n_subs`` subscribers that all
    receive everything. Shared by fan-in and fan-out. ``sub_clean``/``pub_clean`` False
    connect subscribers/publishers with persistent sessions (clean session 0)."""
    npubs = len(pub_topics)
    workers: list[Worker] = []
    try:
        sub_groups = _split(list(range(n_subs)), sub_procs)
        subs = [Worker(f"sub{i}", subscriber_worker, probe.port, len(g), g[0], sub_filters,
                       pub_topics[0], qos, npubs, count, sub_clean)
                for i, g in enumerate(sub_groups)]
        workers += subs
        for w in subs:
            w.recv("ready", 60)
        pub_groups = _split(list(range(npubs)), pub_procs)
        pubs = [Worker(f"pub{i}", publisher_worker, probe.port, g, [pub_topics[p] for p in g],
                       qos, count, window, pub_clean)
                for i, g in enumerate(pub_groups)]
        workers += pubs
        for w in pubs:
            w.recv("ready", 60)
        bcpu = _BrokerCpu(probe.pid)
        t0 = time.monotonic()
        for w in subs:
            w.send("go", cap_s + 20)
        for w in pubs:
            w.send("go", cap_s)
        pres = [w.recv("result", cap_s + 40)[1] for w in pubs]
        sent_by_pub = [0] * npubs
        for r in pres:
            for p, s in r["sent"].items():
                sent_by_pub[p] = s
        if progress:
            progress(f"published {sum(sent_by_pub):,} in "
                     f"{max(r['wall_s'] for r in pres):.1f} s; draining subscribers")
        for w in subs:
            w.send("expect", sent_by_pub)
        sres = [w.recv("result", cap_s + 60)[1] for w in subs]
        wall = time.monotonic() - t0
        bcpu.stop()
    finally:
        stop_all(workers)
    clients = [c for r in sres for c in r["clients"]]
    received = sum(c["received"] for c in clients)
    firsts = [c["first_ns"] for c in clients if c["first_ns"]]
    lasts = [c["last_ns"] for c in clients if c["last_ns"]]
    span = (max(lasts) - min(firsts)) / 1e9 if firsts else 0.0
    cpu = {f"pub{i}": r["cpu_s"] for i, r in enumerate(pres)}
    cpu |= {f"sub{i}": r["cpu_s"] for i, r in enumerate(sres)}
    # From the first PUBLISH written to the last delivery: the broker's whole job. (First to
    # last delivery alone would hand a broker that batches its first batch for free.)
    t_start = min(r["first_ns"] for r in pres)
    e2e = (max(lasts) - t_start) / 1e9 if lasts else 0.0
    return {
        "value": received / e2e if e2e > 0 else 0.0,
        "unit": "msg/s",
        "seconds": round(e2e, 3),
        "delivery_span_rate": received / span if span > 0 else 0.0,
        "published": sum(sent_by_pub),
        "acked": sum(r["acked"] for r in pres) if qos else None,
        "expected_deliveries": sum(sent_by_pub) * n_subs,
        "received": received,
        "loss": sum(c["loss"] for c in clients),
        "dups": sum(c["dups"] for c in clients),
        "unexpected": sum(c["unexpected"] for c in clients),
        "delivery_span_s": round(span, 3),
        "capped": any(r["capped"] for r in pres),
        "sub_clean": sub_clean,
        "pub_clean": pub_clean,
        "cpu": _cpu_report(bcpu.used, wall, cpu),
        "broker_cpu_us_per_msg": (round(bcpu.used / received * 1e6, 2)
                                  if bcpu.used is not None and received else None),
    }


def fan_in(probe: Probe, qos: int, *, publishers: int = 8, count: int = 200_000,
           pub_procs: int = 1, cap_s: float = 20.0, window: int = WINDOW,
           progress: Callable[[str], None] | None = None, sub_clean: bool = True,
           pub_clean: bool = True) -> Json:
    """``publishers`` publishers -> 1 subscriber on ``bench/in/+``; ``count`` messages in all.
    msg/s = messages the subscriber received / (last delivery - first PUBLISH written).
    ``sub_clean``/``pub_clean`` False: persistent sessions (clean session 0)."""
    per_pub = max(1, count // publishers)
    topics = [f"bench/in/{p:02d}" for p in range(publishers)]
    return _pubsub(probe, qos=qos, pub_topics=topics, sub_filters=[("bench/in/+", qos)],
                   n_subs=1, sub_procs=1, pub_procs=pub_procs, count=per_pub, cap_s=cap_s,
                   window=window, progress=progress, sub_clean=sub_clean,
                   pub_clean=pub_clean)


def fan_out(probe: Probe, qos: int, *, subscribers: int = 50, count: int = 10_000,
            sub_procs: int = 2, cap_s: float = 20.0, window: int = WINDOW,
            progress: Callable[[str], None] | None = None, sub_clean: bool = True,
            pub_clean: bool = True) -> Json:
    """1 publisher (``count`` messages) -> ``subscribers`` subscribers of ``bench/out``.
    msg/s = deliveries (all subscribers) / (last delivery - first delivery)."""
    return _pubsub(probe, qos=qos, pub_topics=["bench/out"], sub_filters=[("bench/out", qos)],
                   n_subs=subscribers, sub_procs=sub_procs, pub_procs=1, count=count,
                   cap_s=cap_s, window=window, progress=progress, sub_clean=sub_clean,
                   pub_clean=pub_clean)


# --- idle connections: connect rate and memory ----------------------------------------------


async def _open_idle(port: int, n: int, first: int, tag: str, sources: list[str],
                     concurrency: int, deadline: float, clients: list[BaseClient]) -> list[str]:
    """Open ``n`` idle connections, at most ``concurrency`` attempts at a time; append the
    ones that got CONNACK 0 to ``clients``; return the failures."""
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            if time.monotonic() > deadline:
                failures.append("time cap")
                return
            cid = f"bench-idle-{tag}-{i}"
            src = sources[i % len(sources)] if sources else None
            c: BaseClient | None = None
            try:
                c = await asyncio.wait_for(open_client(lambda: IdleClient(cid), port,
                                                       source=src), 10)
                await c.handshake(10)
                clients.append(c)
            except (OSError, TimeoutError, LoadgenError, RuntimeError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}".replace(cid, "<client>"))
                if c is not None:
                    c.transport.abort()

    await asyncio.gather(*(one(first + i) for i in range(n)))
    return failures


async def connector_worker(ch: Channel, port: int, sources: list[str], tag: str,
                           concurrency: int = CONNECT_CONCURRENCY) -> None:
    """Open connections on request (``("open", n, timeout_s)``) and keep them idle."""
    clients: list[BaseClient] = []
    serial = 0
    ch.send("ready", {})
    while True:
        msg = await ch.get(timeout=900)
        if msg[0] != "open":
            break
        n, timeout_s = int(msg[1]), float(msg[2])
        cpu0 = cpu_seconds()
        t0 = time.monotonic_ns()
        failures = await _open_idle(port, n, serial, tag, sources, concurrency,
                                    time.monotonic() + timeout_s, clients)
        t1 = time.monotonic_ns()
        serial += n
        ch.send("opened", {"ok": n - len(failures), "failed": len(failures),
                           "errors": sorted(set(failures))[:5], "t0_ns": t0, "t1_ns": t1,
                           "cpu_s": cpu_seconds() - cpu0, "open": len(clients)})
    for c in clients:
        c.transport.abort()


def _source_addresses(k: int) -> list[str]:
    """127.0.0.2 .. 127.0.0.(k+1): each source address has its own ephemeral port range."""
    return [f"127.0.0.{2 + i}" for i in range(k)]


def idle_connections(probe: Probe, *, stages: Sequence[int] = (1000, 5000, 10000),
                     procs: int = 2, sources: int = 1, settle_s: float = 1.0,
                     stage_cap_s: float = 60.0, concurrency: int = CONNECT_CONCURRENCY,
                     progress: Callable[[str], None] | None = None) -> Json:
    """Open idle connections in stages (cumulative totals); per stage: the connect rate
    (new connections / time from the first attempt to the last CONNACK) and the broker's
    RSS growth per connection since before the first connection."""
    if probe.pid is None:
        raise LoadgenError("idle_connections needs the broker's PID")
    addrs = _source_addresses(sources) if sources > 0 else []
    # Every process cycles through every source address (from a different starting point),
    # so each address carries 1/sources of all connections.
    workers = [Worker(f"conn{i}", connector_worker, probe.port,
                      addrs[i % len(addrs):] + addrs[:i % len(addrs)] if addrs else [],
                      f"{i}", concurrency)
               for i in range(procs)]
    stage_out: list[Json] = []
    try:
        for w in workers:
            w.recv("ready", 30)
        time.sleep(settle_s)
        rss0 = rss_bytes(probe.pid)
        total = 0
        for target in stages:
            new = target - total
            shares = [new // procs + (1 if i < new % procs else 0) for i in range(procs)]
            bcpu = _BrokerCpu(probe.pid)
            for w, k in zip(workers, shares, strict=True):
                w.send("open", k, stage_cap_s)
            res = [w.recv("opened", stage_cap_s + 30)[1] for w in workers]
            bcpu_s = bcpu.stop() or 0.0
            t0 = min(r["t0_ns"] for r in res)
            t1 = max(r["t1_ns"] for r in res)
            ok = sum(r["ok"] for r in res)
            failed = sum(r["failed"] for r in res)
            total = target
            span = (t1 - t0) / 1e9
            broker_cpu = bcpu_s / span if span else 0.0
            time.sleep(settle_s)
            rss = rss_bytes(probe.pid)
            open_now = sum(r["open"] for r in res)
            stage_out.append({
                "connections": target, "new": new, "ok": ok, "failed": failed,
                "errors": sorted({e for r in res for e in r["errors"]})[:5],
                "seconds": round(span, 3), "rate": ok / span if span else 0.0,
                "rss_bytes": rss, "rss_delta": rss - rss0,
                "bytes_per_conn": (rss - rss0) / open_now if open_now else None,
                "broker_cpu_us_per_conn": round(bcpu_s / ok * 1e6, 1) if ok else None,
                "cpu": {"broker": round(broker_cpu, 2),
                        **{f"conn{i}": round(r["cpu_s"] / span, 2) if span else None
                           for i, r in enumerate(res)}},
            })
            if progress:
                s = stage_out[-1]
                progress(f"{target:,} connections: {s['rate']:,.0f} conn/s, "
                         f"{(s['bytes_per_conn'] or 0) / 1024:.1f} KiB/conn"
                         + (f", {failed} FAILED" if failed else ""))
            if failed:
                break
    finally:
        stop_all(workers)
    ok_all = sum(s["ok"] for s in stage_out)
    secs = sum(s["seconds"] for s in stage_out)
    cpu_us = [s["broker_cpu_us_per_conn"] * s["ok"] for s in stage_out
              if s["broker_cpu_us_per_conn"] is not None]
    return {
        "value": ok_all / secs if secs else 0.0, "unit": "conn/s",
        # Broker CPU per connection: independent of how fast the clients can connect.
        "broker_cpu_us_per_conn": round(sum(cpu_us) / ok_all, 1) if ok_all else None,
        "rss0_bytes": rss0, "stages": stage_out,
        "loss": sum(s["failed"] for s in stage_out), "dups": 0,
        "mem_per_conn": {str(s["connections"]): s["bytes_per_conn"] for s in stage_out},
    }


# --- retained --------------------------------------------------------------------------------


async def retained_worker(ch: Channel, port: int, count: int) -> None:
    """Store ``count`` retained messages (QoS 1, windowed, all acknowledged), then on "go"
    SUBSCRIBE a new client to ``#`` (QoS 0) and time the arrival of the last one."""
    frames = b"".join(
        wire.publish(f"bench/r/{i:05d}", wire.payload(0, i), qos=1,
                     packet_id=wire.packet_id_for(i), retain=True)
        for i in range(count))
    size = len(frames) // count
    pub = await open_client(lambda: PubClient(f"bench-ret-pub-{os.getpid()}", frames, size, 1),
                            port)
    assert isinstance(pub, PubClient)
    await pub.handshake()
    t0 = time.monotonic()
    pub.start()
    await asyncio.wait_for(pub.finished, 120)
    store_s = time.monotonic() - t0
    pub.close()
    await asyncio.sleep(0.2)
    layout = wire.PublishLayout("bench/r/00000", 0, retain=True)
    tally = Tally(1, count)
    tally.reach_target = count
    sub = await open_client(lambda: SubClient(f"bench-ret-sub-{os.getpid()}", layout, tally),
                            port)
    assert isinstance(sub, SubClient)
    await sub.handshake()
    ch.send("ready", {"store_s": store_s})
    _, cap_s = await ch.expect("go")
    cpu0 = cpu_seconds()
    t_sub = time.monotonic_ns()
    sub.transport.write(wire.subscribe(1, [("#", 0)]))
    deadline = time.monotonic() + cap_s
    while not tally.reach_ns and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    if tally.reach_ns:      # anything more would be a duplicate: give it a moment
        await asyncio.sleep(0.2)
    uniq = tally.unique()
    ch.send("result", {
        "seconds": (tally.reach_ns - t_sub) / 1e9 if tally.reach_ns else None,
        "first_s": (tally.first_ns - t_sub) / 1e9 if tally.first_ns else None,
        "received": tally.received, "unique": uniq, "dups": tally.dups(),
        "loss": count - uniq, "store_s": store_s, "cpu_s": cpu_seconds() - cpu0,
        "wall_s": (time.monotonic_ns() - t_sub) / 1e9,
    })
    await _linger(ch, [sub])


def retained(probe: Probe, *, count: int = 10_000, cap_s: float = 30.0,
             progress: Callable[[str], None] | None = None) -> Json:
    """``count`` retained messages on distinct topics, then a new subscriber to ``#``:
    seconds from writing SUBSCRIBE to receiving the ``count``-th retained message."""
    w = Worker("retained", retained_worker, probe.port, count)
    try:
        ready = w.recv("ready", 180)[1]
        if progress:
            progress(f"{count:,} retained stored in {ready['store_s']:.1f} s; subscribing")
        bcpu = _BrokerCpu(probe.pid)
        t0 = time.monotonic()
        w.send("go", cap_s)
        r = w.recv("result", cap_s + 30)[1]
        wall = time.monotonic() - t0
        bcpu.stop()
    finally:
        w.stop()
    return {"value": r["seconds"], "unit": "s", "count": count, "first_s": r["first_s"],
            "received": r["received"], "loss": r["loss"], "dups": r["dups"],
            "store_s": round(r["store_s"], 3), "capped": r["seconds"] is None,
            "cpu": _cpu_report(bcpu.used, wall, {"client": r["cpu_s"]})}


# --- latency ---------------------------------------------------------------------------------


async def latency_worker(ch: Channel, port: int, rate: float, duration_s: float,
                         warmup: int) -> None:
    """One QoS 1 publisher at a fixed rate and one QoS 1 subscriber, in one process; every
    payload carries its send time."""
    count = int(rate * duration_s)
    topic = "bench/lat"
    layout = wire.PublishLayout(topic, 1)
    tally = Tally(1, count, latency=True)
    sub = await open_client(lambda: SubClient(f"bench-lat-sub-{os.getpid()}", layout, tally),
                            port)
    assert isinstance(sub, SubClient)
    await sub.handshake()
    await sub.subscribe([(topic, 1)])
    blob = layout.blob(0, 0, count)
    size = layout.size
    acked = 0

    class Acks(IdleClient):
        def data_received(self, data: bytes) -> None:
            nonlocal acked
            if not self.connack.done():
                super().data_received(data)
                data = data[4:]
            acked += len(data) // 4

    pub = await open_client(lambda: Acks(f"bench-lat-pub-{os.getpid()}"), port)
    await pub.handshake()
    ch.send("ready", {})
    await ch.expect("go")
    cpu0 = cpu_seconds()
    interval = 1e9 / rate
    po = layout.payload_offset + wire.TS_OFFSET
    t0 = time.monotonic_ns()
    i = 0
    while i < count:
        due = min(count, int((time.monotonic_ns() - t0) / interval) + 1)
        while i < due:
            frame = bytearray(blob[i * size:(i + 1) * size])
            frame[po:po + 8] = time.monotonic_ns().to_bytes(8, "big")
            pub.transport.write(frame)
            i += 1
        # Busy-poll (zero-timeout loop turns) rather than sleep: the client then reads each
        # delivery as soon as it lands, so its own wake-up latency is not in the figures.
        next_ns = t0 + i * interval
        while time.monotonic_ns() < next_ns:
            await asyncio.sleep(0)
    sent_s = (time.monotonic_ns() - t0) / 1e9
    deadline = time.monotonic() + 10
    while (tally.received < count or acked < count) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    lat = np.concatenate(tally.latencies) if tally.latencies else np.zeros(0, np.int64)
    # Deliveries in arrival order; the first `warmup` are left out of the percentiles.
    steady = lat[warmup:] if len(lat) > warmup else lat
    uniq = tally.unique()
    ch.send("result", {
        "count": count, "sent_s": sent_s, "received": tally.received, "acked": acked,
        "loss": count - uniq, "dups": tally.dups(),
        "p50_ms": float(np.percentile(steady, 50)) / 1e6 if len(steady) else None,
        "p99_ms": float(np.percentile(steady, 99)) / 1e6 if len(steady) else None,
        "max_ms": float(steady.max()) / 1e6 if len(steady) else None,
        "mean_ms": float(steady.mean()) / 1e6 if len(steady) else None,
        "cpu_s": cpu_seconds() - cpu0, "wall_s": (time.monotonic_ns() - t0) / 1e9,
    })
    await _linger(ch, [sub, pub])


def latency(probe: Probe, *, rate: float = 1000.0, duration_s: float = 5.0, warmup: int = 100,
            progress: Callable[[str], None] | None = None) -> Json:
    """QoS 1 publish -> QoS 1 subscriber at a fixed ``rate``: latency from just before the
    publisher's write to the subscriber's read, p50/p99 after ``warmup`` messages."""
    w = Worker("latency", latency_worker, probe.port, rate, duration_s, warmup)
    try:
        w.recv("ready", 60)
        bcpu = _BrokerCpu(probe.pid)
        t0 = time.monotonic()
        w.send("go")
        r = w.recv("result", duration_s + 40)[1]
        wall = time.monotonic() - t0
        bcpu.stop()
    finally:
        w.stop()
    return {"value": r["p99_ms"], "unit": "ms", "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "max_ms": r["max_ms"], "mean_ms": r["mean_ms"], "count": r["count"],
            "rate": r["count"] / r["sent_s"] if r["sent_s"] else None,
            "received": r["received"], "loss": r["loss"], "dups": r["dups"],
            "cpu": _cpu_report(bcpu.used, wall, {"client": r["cpu_s"]})}
