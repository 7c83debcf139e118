"""100,000 devices on one machine: ``serve --workers N``, every device reached.

    python -m benchmarks.scale [--devices 100000] [--workers 0] [--procs 0]
                               [--out benchmarks/results]
    python -m benchmarks.scale --devices 19000 --workers 1   # one process, at its cap

This machine caps every process at 20,000 open files, so one broker process cannot hold
100,000 sockets. With ``--workers N`` (default: enough for at most 15,000 connections each)
our broker runs ``serve --workers N`` (SO_REUSEPORT: the kernel spreads the connections; the
workers are nodes of one cluster over a ``redis-server`` this script starts); with
``--workers 1`` it is one plain process (no cluster). The devices are raw-socket MQTT 3.1.1
clients in ``--procs`` processes (default: at most 17,000 sockets each), each binding its own
source address 127.0.0.(2+i) (one ephemeral port range per address). Every device connects
(clean session, keep-alive 600 s) and subscribes, at QoS 1, to its own ``devices/<id>/cmd``
and to the broadcast ``devices/all/cmd``. Then, from one more client:

1. **broadcast**: one QoS 1 message on ``devices/all/cmd``: the time until every device has
   it;
2. **unicast**: one QoS 1 message to each device's own topic (1,000 in flight): the time until
   every device has its own.

A device acknowledges (PUBACK) what it gets and counts it; it must get exactly one of each.
Reported: connect/subscribe rate, each worker's connections (its open sockets) and RSS, both
delivery times and counts. Every wait is bounded. Prints and writes
``OUT/scale-<devices>-w<workers>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import brokers, wire
from .cluster import Node, RedisServer
from .run import machine, stopwatch

Json = dict[str, Any]
PER_WORKER = 15_000  # connections per worker (under the 20,000 open-file cap, with room)
PER_PROC = 17_000  # sockets per client process
CONCURRENCY = 32  # CONNECTs in flight per client process (more only queues: see README)
OWN = "devices/{}/cmd"
ALL = "devices/all/cmd"
PHASE_CAP = 600.0  # seconds any phase may take


# -- the devices (one process holds many) ----------------------------------------------------


class Device(asyncio.Protocol):
    """One device: CONNECT, SUBSCRIBE (own topic and the broadcast), then count what comes,
    acknowledging QoS 1."""

    def __init__(self, index: int, fleet: Fleet) -> None:
        self.index = index
        self.fleet = fleet
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.own = 0
        self.all = 0
        self.ready = False  # SUBACK came

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        did = f"dev-{self.index:06d}"
        transport.write(wire.connect(did, keepalive=600)  # type: ignore[attr-defined]
                        + wire.subscribe(1, [(OWN.format(did), 1), (ALL, 1)]))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for first, body in wire.take_frames(self.buf):
            kind = first >> 4
            if kind == 2 and body[1:2] != b"\x00":  # CONNACK refusing
                self.fleet.errors.append(f"CONNACK 0x{body[1]:02X}")
            elif kind == 9:  # SUBACK: this device is ready
                self.ready = True
                self.fleet.subscribed += 1
                if body[2:] != b"\x01\x01":
                    self.fleet.errors.append(f"SUBACK {body[2:].hex()}")
            elif kind == 3:  # PUBLISH
                tlen = int.from_bytes(body[:2], "big")
                topic = body[2:2 + tlen].decode()
                if (first >> 1) & 3:
                    pid = body[2 + tlen:4 + tlen]
                    assert self.transport is not None
                    self.transport.write(b"\x40\x02" + pid)
                if topic == ALL:
                    self.all += 1
                    self.fleet.got_all += 1
                else:
                    self.own += 1
                    self.fleet.got_own += 1
                self.fleet.last_ns = time.monotonic_ns()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fleet.lost += 1
        if not self.ready:  # (refused, or closed before its SUBACK)
            self.fleet.failed += 1


class Fleet:
    def __init__(self) -> None:
        self.devices: list[Device] = []
        self.subscribed = 0
        self.got_all = 0
        self.got_own = 0
        self.lost = 0
        self.failed = 0
        self.errors: list[str] = []
        self.last_ns = 0


async def _run_devices(conn: Any, port: int, source: str, first: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    fleet = Fleet()
    window = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with window:
            try:
                _, dev = await loop.create_connection(
                    lambda: Device(i, fleet), "127.0.0.1", port, local_addr=(source, 0))
                fleet.devices.append(dev)
            except OSError as exc:
                fleet.failed += 1
                if len(fleet.errors) < 5:
                    fleet.errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.monotonic_ns()
    await asyncio.gather(*(one(i) for i in range(first, first + count)))
    deadline = time.monotonic() + PHASE_CAP
    while fleet.subscribed + fleet.failed < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    conn.send(("ready", {"t0_ns": t0, "t1_ns": time.monotonic_ns(), "ok": fleet.subscribed,
                         "failed": fleet.failed, "errors": fleet.errors[:5]}))
    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg[0] == "stop":
            break
        want_all, want_own = msg[1], msg[2]  # wait until every device has these counts
        deadline = time.monotonic() + PHASE_CAP
        while (fleet.got_all < want_all * len(fleet.devices)
               or fleet.got_own < want_own * len(fleet.devices)) \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        conn.send(("counts", {
            "got_all": fleet.got_all, "got_own": fleet.got_own, "last_ns": fleet.last_ns,
            "devices": len(fleet.devices), "lost": fleet.lost,
            "wrong": sum(1 for d in fleet.devices if d.all != want_all or d.own != want_own)}))
    for d in fleet.devices:
        if d.transport is not None:
            d.transport.close()


def _devices_main(conn: Any, port: int, source: str, first: int, count: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(_run_devices(conn, port, source, first, count))


# -- the publisher --------------------------------------------------------------------------


async def _publish(port: int, topics: list[str]) -> None:
    """QoS 1 messages, one per topic, 1,000 in flight; returns when all are acknowledged."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(wire.connect("scale-publisher", keepalive=600))
    await r.readexactly(4)
    window = asyncio.Semaphore(1000)
    acked = asyncio.Event()
    left = len(topics)

    async def acks() -> None:
        nonlocal left
        while left:
            head = await r.readexactly(4)  # PUBACK: 40 02 id id
            assert head[0] == 0x40, head
            window.release()
            left -= 1
        acked.set()

    reader = asyncio.create_task(acks())
    for n, topic in enumerate(topics):
        await window.acquire()
        w.write(wire.publish(topic, b"cmd", qos=1, packet_id=n % 65535 + 1))
    await asyncio.wait_for(acked.wait(), PHASE_CAP)
    reader.cancel()
    w.close()


# -- the run ----------------------------------------------------------------------------------


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _sockets(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            continue
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", "-n", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=0,
                   help=f"broker workers (default: one per {PER_WORKER:,} devices)")
    p.add_argument("--procs", type=int, default=0,
                   help=f"device processes (default: one per {PER_PROC:,} devices)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    n = args.devices
    workers = args.workers or max(1, math.ceil(n / PER_WORKER))
    procs = args.procs or max(1, math.ceil(n / PER_PROC))
    brokers.raise_nofile()
    t_start = time.monotonic()

    say = stopwatch()

    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    redis = RedisServer(folder) if workers > 1 else None
    out: Json = {"devices": n, "workers": workers, "procs": procs, "machine": machine()}
    ctx = mp.get_context("spawn")
    pipes: list[Any] = []
    children: list[Any] = []
    node: Node | None = None
    try:
        if redis is not None:
            redis.start()
        node = Node(redis, "scale", workers=workers).start()
        say(f"broker: {workers} worker(s) on 127.0.0.1:{node.port}"
            + (f", cluster over redis-server :{redis.port}" if redis else ", no cluster"))
        rss0 = {name: _rss(pid) for name, pid in node.procs.items()}
        shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        first = 0
        for i, k in enumerate(shares):
            a, b = ctx.Pipe()
            proc = ctx.Process(target=_devices_main,
                               args=(b, node.port, f"127.0.0.{2 + i}", first, k))
            proc.start()
            pipes.append(a)
            children.append(proc)
            first += k
        ready = []
        for a in pipes:
            if not a.poll(PHASE_CAP + 60):
                raise RuntimeError("a device process did not report")
            ready.append(a.recv()[1])
        span = (max(r["t1_ns"] for r in ready) - min(r["t0_ns"] for r in ready)) / 1e9
        ok = sum(r["ok"] for r in ready)
        failed = sum(r["failed"] for r in ready)
        per_worker = {name: {"sockets": _sockets(pid), "rss_mib": round(_rss(pid) / 2**20, 1),
                             "rss_per_conn_kib": None}
                      for name, pid in node.procs.items()}
        for name, pid in node.procs.items():
            socks = per_worker[name]["sockets"]
            if socks:
                per_worker[name]["rss_per_conn_kib"] = round(
                    (_rss(pid) - rss0[name]) / socks / 1024, 2)
        out["connect"] = {"subscribed": ok, "failed": failed, "seconds": round(span, 1),
                          "rate": round(ok / span) if span else None,
                          "errors": sorted({e for r in ready for e in r["errors"]})[:5],
                          "workers": per_worker}
        say(f"{ok:,} devices connected and subscribed ({failed} failed) in {span:.1f} s "
            f"({ok / span if span else 0:,.0f}/s); per worker: "
            + ", ".join(f"{k} {v['sockets']:,} sockets {v['rss_mib']} MiB"
                        for k, v in per_worker.items()))
        if failed or ok < n:
            say("not every device is in: no deliveries measured")
            return 1

        def deliver(name: str, topics: list[str], want_all: int, want_own: int) -> Json:
            t0 = time.monotonic_ns()
            asyncio.run(_publish(node.port, topics))
            for a in pipes:
                a.send(("wait", want_all, want_own))
            counts = []
            for a in pipes:
                if not a.poll(PHASE_CAP + 60):
                    raise RuntimeError("a device process did not report")
                counts.append(a.recv()[1])
            last = max(c["last_ns"] for c in counts)
            res = {"messages": len(topics), "got_all": sum(c["got_all"] for c in counts),
                   "got_own": sum(c["got_own"] for c in counts),
                   "devices_wrong": sum(c["wrong"] for c in counts),
                   "lost_connections": sum(c["lost"] for c in counts),
                   "seconds": round((last - t0) / 1e9, 2)}
            say(f"{name}: {len(topics):,} message(s) published; devices got broadcast "
                f"{res['got_all']:,} / own {res['got_own']:,}; {res['devices_wrong']} devices "
                f"with a wrong count; last delivery after {res['seconds']} s")
            return res

        out["broadcast"] = deliver("broadcast", [ALL], 1, 0)
        out["unicast"] = deliver("unicast", [OWN.format(f"dev-{i:06d}") for i in range(n)],
                                 1, 1)
        good = (out["broadcast"]["got_all"] == n and out["unicast"]["got_own"] == n
                and out["broadcast"]["devices_wrong"] == 0
                and out["unicast"]["devices_wrong"] == 0)
        out["ok"] = good
        return 0 if good else 1
    finally:
        for a in pipes:
            try:
                a.send(("stop",))
            except (OSError, BrokenPipeError):
                pass
        for proc in children:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        if node is not None:
            out["broker_stop"] = node.stop()
            node.cleanup()
        if redis is not None:
            redis.stop()
        out["elapsed_s"] = round(time.monotonic() - t_start, 1)
        path = Path(args.out) / f"scale-{n}-w{workers}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"Wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
