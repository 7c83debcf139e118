"""Draining a large bridge backlog: the edge keeps answering while it drains (issue 16).

    python -m benchmarks.bridge_drain [--count 1000000] [--persistence sqlite|memory]
                                      [--cloud mosquitto|ours] [--protocol mqttv5|mqttv311]
                                      [--cloud-inflight 20] [--bridge-inflight N]
                                      [--ours-rev working] [--gc-log] [--stall-trace MS]
                                      [--quick] [--out benchmarks/results/bridge_drain]

The claim measured: "On reconnect the backlog drains in order at the remote's Receive Maximum,
without blocking live traffic or the event loop (a 1,000,000-message backlog drains with the
broker still answering PINGREQ within 100 ms)."

1. **Edge**: our broker (``python -m mqttbroker serve -c FILE``; this checkout, or
   ``--ours-rev REV`` exported as benchmarks/ab.py does it), with a bridge ``cloud``
   (``drain/#`` out at QoS 1, ``--protocol`` mqttv5 by default, client id ``edge``, clean
   session off, restart_timeout [0.5, 1]) to a 127.0.0.1 port where nothing listens yet,
   persistence SQLite with ``sync: commit`` (``--persistence memory``: none) in a temporary
   folder, the bridge's queue large enough for ``--count``, and its HTTP listener on
   (``/metrics``). A probe process connects to it at once and runs until the end: a raw
   client sends PINGREQ every ``--ping-interval`` ms (one outstanding) and times each
   PINGRESP; a live publisher sends QoS 1 on ``live/x`` ``--live-rate`` times a second to a
   subscriber of ``live/#`` at the edge (end-to-end latency and the PUBACK round trip).
2. **Fill**: ``--publishers`` publishers (``drain/00``.., ``--procs`` processes, the load
   generator of the other benchmarks: pre-encoded QoS 1 PUBLISH, ``--window`` in flight each)
   publish ``--count`` messages of ``--payload`` bytes, each carrying (publisher, sequence). The
   edge acknowledges each once it is in the bridge's backlog (with ``sync: commit``: on disk).
   Progress from the edge's ``mqttbroker_bridge_queued_messages``; the backlog must reach the
   count there before going on. Bounded by ``--fill-cap`` seconds.
3. **Drain**: ``--baseline`` seconds with the full backlog, then the cloud starts on the
   bridge's port (``--cloud``: Mosquitto, or ours; ``--cloud-inflight``: its
   max_inflight_messages, 20 as in the other benchmarks, which Mosquitto announces as its
   Receive Maximum), a subscriber of ``#`` (QoS 1) connects to it, and the edge's bridge
   reconnects by itself. That subscriber's session (clean session 0, ``#``) was stored at the
   cloud beforehand (the cloud started once on another port, then stopped; Mosquitto saves its
   state on exit, ours in SQLite), so what the bridge sends before the subscriber is back is
   queued for it, not dropped: no race between the bridge and the subscription. The
   subscriber counts every (publisher, sequence): loss, duplicates (allowed at QoS 1,
   reported) and order (a message that arrives for the first time after a later one of the
   same publisher is out of order). Bounded by ``--drain-cap`` seconds and ``--stall`` seconds
   without a new message.
4. **Figures**: drain duration and rate (first to last arrival at the cloud), PINGREQ round
   trip and live latency during the drain (cloud up to last arrival: the reconnect is inside),
   p50/p99/max, also while filling and before the cloud came up (the full backlog waiting),
   the edge's peak RSS (VmHWM) and CPU, its SQLite commits, the bridge's in-flight window seen
   in ``/metrics``. Where a stall comes from: ``--gc-log`` (the edge's garbage collections
   and a census of the objects its collector tracks) and ``--stall-trace MS`` (stack samples
   of the edge's main thread while its loop is stuck), see :data:`DIAG_WRAPPER`.

Writes ``OUT.json``, ``OUT.md`` and ``OUT.png`` (``--quick``: 20,000 messages,
``bridge_drain-quick.*``, git-ignored). Exit status 1 if a PINGREQ took >= ``--target-ms``
(100) during the drain, or any message was lost or out of order, or a phase failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from multiprocessing.connection import wait as wait_conns
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from . import brokers, loadgen, wire
from .bridge import MAX_PAYLOAD, _read_until, payload_size
from .clients import SubClient, Tally, open_client

Json = dict[str, Any]
Say = Callable[[str], None]

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = "cloud"                 # the bridge's name (the `bridge` label in /metrics)
CLIENT_ID = "edge"               # its client id at the cloud
TOPIC = "drain/{:02d}"           # publisher p's topic (bridged: drain/# out 1)
LIVE_TOPIC = "live/x"            # the live traffic at the edge (not bridged)
RESTART = (0.5, 1.0)             # the bridge's reconnect back-off, seconds
FULL = {"count": 1_000_000}
QUICK = {"count": 20_000}
PING_TIMEOUT_S = 30.0            # a PINGRESP later than this is recorded as this (a stall)


# Diagnostics (``--gc-log``, ``--stall-trace``): the edge runs as ``python -c DIAG_WRAPPER
# serve -c FILE`` -- the same process, ``python -m mqttbroker`` run by runpy -- with:
# * BENCH_GC_LOG: a gc callback writing each collection of generation 2, and any other taking
#   >= 1 ms, as "start_ns duration_ns generation collected"; on SIGUSR1 (sent once the backlog
#   is full, before the cloud starts) a census of the objects the collector tracks, by type;
# * BENCH_STALL_LOG: a heartbeat on the broker's event loop (uvloop.new_event_loop wrapped)
#   every 5 ms and a watchdog thread: while the loop has not run a callback for
#   BENCH_STALL_MS, the main thread's stack is sampled every 10 ms; each stall is written as
#   one JSON line (start ns, duration, the samples).
DIAG_WRAPPER = """\
import collections, gc, json, os, runpy, signal, sys, threading, time, traceback
if os.environ.get("BENCH_GC_LOG"):
    _log = open(os.environ["BENCH_GC_LOG"], "w", buffering=1)
    def _census(signum, frame):
        t = time.monotonic_ns()
        objs = gc.get_objects()
        top = collections.Counter(type(o).__qualname__ for o in objs).most_common(25)
        lists = [o for o in objs if type(o) is list]
        shapes = collections.Counter(
            (len(x), tuple(type(e).__qualname__ for e in x[:3])) for x in lists[-100000:])
        owners = []
        for x in lists[-3:]:
            owners.append([type(r).__qualname__ + (":" + ",".join(
                f"{k}" for k, v in vars(r).items() if v is x)[:80] if hasattr(r, "__dict__")
                else "") for r in gc.get_referrers(x) if r is not lists][:5])
        del lists
        with open(os.environ["BENCH_GC_LOG"] + ".census.json", "w") as f:
            json.dump({"tracked": len(objs), "top": top,
                       "list_shapes": [[list(k), n] for k, n in shapes.most_common(5)],
                       "list_owners": owners,
                       "took_ms": (time.monotonic_ns() - t) / 1e6,
                       "counts": gc.get_count(), "thresholds": gc.get_threshold()}, f)
        del objs
    signal.signal(signal.SIGUSR1, _census)
    _start = [0]
    def _cb(phase, info):
        if phase == "start":
            _start[0] = time.monotonic_ns()
            return
        d = time.monotonic_ns() - _start[0]
        if info["generation"] == 2 or d >= 1_000_000:
            _log.write(f"{_start[0]} {d} {info['generation']} {info['collected']}\\n")
    gc.callbacks.append(_cb)
if os.environ.get("BENCH_STALL_LOG"):
    import uvloop
    _stall_log = open(os.environ["BENCH_STALL_LOG"], "w", buffering=1)
    _limit = int(float(os.environ.get("BENCH_STALL_MS", "50")) * 1e6)
    _beat = [time.monotonic_ns()]
    _main = threading.get_ident()
    _new_loop = uvloop.new_event_loop
    def _beating():
        loop = _new_loop()
        def beat():
            _beat[0] = time.monotonic_ns()
            loop.call_later(0.005, beat)
        loop.call_soon(beat)
        return loop
    uvloop.new_event_loop = _beating
    def _watch():
        while True:
            time.sleep(0.002)
            last = _beat[0]
            if time.monotonic_ns() - last < _limit:
                continue
            samples = []
            while _beat[0] == last and len(samples) < 500:
                frame = sys._current_frames().get(_main)
                if frame is not None:
                    samples.append([f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                                    for f in traceback.extract_stack(frame)[-14:]])
                time.sleep(0.01)
            while _beat[0] == last:
                time.sleep(0.002)
            _stall_log.write(json.dumps({"start_ns": last,
                                         "dur_ms": (_beat[0] - last) / 1e6 - 5,
                                         "samples": samples}) + "\\n")
    threading.Thread(target=_watch, daemon=True).start()
sys.argv[0] = "mqttbroker"
runpy.run_module("mqttbroker", run_name="__main__", alter_sys=True)
"""


class DrainError(RuntimeError):
    """A phase failed or did not finish in time."""


# --------------------------------------------------------------------------------------------
# The edge (ours, with the bridge, persistence and /metrics) and the cloud


def edge_config(args: argparse.Namespace, port: int, http_port: int, cloud_port: int,
                workdir: Path) -> Json:
    cfg: Json = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "sys_interval": 0,
        "log_level": "INFO",
        "auth": {"allow_anonymous": True},
        "mqtt": {"max_inflight_messages": brokers.MAX_INFLIGHT,
                 "max_queued_messages": brokers.MAX_QUEUED,
                 "max_connection_rate_per_address": 0},
        "http": {"enabled": True, "bind": f"127.0.0.1:{http_port}", "dashboard": False},
        "bridges": {BRIDGE: {
            "addresses": [f"127.0.0.1:{cloud_port}"],
            "protocol": args.protocol,
            "client_id": CLIENT_ID,
            "clean_session": False,
            "try_private": True,
            "notifications": True,
            "keepalive": 60,
            "restart_timeout": list(RESTART),
            "topics": [{"pattern": "drain/#", "direction": "out", "qos": 1}],
            **({"max_inflight": args.bridge_inflight} if args.bridge_inflight else {}),
            "queue": {"max_messages": max(args.count, 1_000_000),
                      "max_bytes": max(1 << 30, 2 * args.count * args.payload),
                      "full_policy": "drop_new"},
        }},
    }
    if args.persistence == "sqlite":
        cfg["persistence"] = {"backend": "sqlite", "path": str(workdir / "edge.db"),
                              "sync": "commit", "fsync": args.fsync}
    return cfg


def _wait_ready(ok: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ok():
            return True
        time.sleep(0.05)
    return False


def ours_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment our broker runs in: with ``--ours-rev REV``, that revision's exported
    tree first on PYTHONPATH (as benchmarks/ab.py and bridge.py do it)."""
    env = dict(os.environ)
    if args.ours_source is not None:
        paths = [str(args.ours_source), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def _all_accept(ports: tuple[int, ...]) -> bool:
    return all(brokers.accepts(p) for p in ports)


def start_edge(args: argparse.Namespace, cloud_port: int) -> tuple[brokers.BrokerProcess, int]:
    """Our broker as the edge; returns it and its HTTP port, once both ports accept."""
    brokers.raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="bench-drain-edge-"))
    last = ""
    for _ in range(3):  # a free port may be taken between probing and binding
        port, http_port = brokers.free_port(), brokers.free_port()
        if cloud_port in (port, http_port) or port == http_port:
            continue
        conf = workdir / "edge.yaml"
        conf.write_text(yaml.safe_dump(edge_config(args, port, http_port, cloud_port, workdir),
                                       sort_keys=False))
        log = workdir / "broker.log"
        python = str(brokers.VENV_BIN / "python")
        diag = args.gc_log or args.stall_trace
        argv = ([python, "-c", DIAG_WRAPPER] if diag else [python, "-m", "mqttbroker"])
        argv += ["serve", "-c", str(conf)]
        env = ours_env(args)
        if args.gc_log:
            env["BENCH_GC_LOG"] = str(workdir / "gc.log")
        if args.stall_trace:
            env["BENCH_STALL_LOG"] = str(workdir / "stalls.jsonl")
            env["BENCH_STALL_MS"] = str(args.stall_trace)
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=workdir, env=env)
        bp = brokers.BrokerProcess("ours", port, proc, workdir, log)
        if _wait_ready(partial(_all_accept, (port, http_port)), proc, 30):
            return bp, http_port
        bp.stop(2)
        last = f"exit {proc.returncode}; log:\n{bp.log_tail()}"
    shutil.rmtree(workdir, ignore_errors=True)
    raise DrainError(f"the edge did not start ({last})")


def _cloud_command(name: str, port: int, workdir: Path, inflight: int) -> list[str]:
    """The cloud's command line: the settings every benchmark uses (benchmarks/brokers.py)
    plus persistence in ``workdir``, so that the measuring subscriber's session (clean session
    0, subscribed to ``#``) is there before the bridge can connect (see :func:`prepare_cloud`).
    Mosquitto keeps everything in memory and saves only when it stops (autosave_interval 0);
    ours stores messages queued to that session in SQLite (sync: periodic)."""
    argv = brokers.command(name, port, workdir, max_inflight=inflight)
    if name == "mosquitto":
        conf = workdir / "mosquitto.conf"
        text = conf.read_text()
        if "persistence false\n" not in text:
            raise DrainError("unexpected mosquitto.conf from benchmarks/brokers.py")
        conf.write_text(text.replace(
            "persistence false\n", f"persistence true\npersistence_location {workdir}/\n"
            "persistence_file cloud.db\nautosave_interval 0\n"))
    else:
        conf = workdir / "mqttbroker.yaml"
        conf.write_text(conf.read_text() + yaml.safe_dump({"persistence": {
            "backend": "sqlite", "path": str(workdir / "cloud.db"), "sync": "periodic"}}))
    return argv


def start_cloud(name: str, port: int, workdir: Path, args: argparse.Namespace
                ) -> brokers.BrokerProcess:
    """The cloud on ``port``, its persistence in ``workdir``; ready once the port accepts."""
    argv = _cloud_command(name, port, workdir, args.cloud_inflight)
    log = workdir / "broker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=workdir,
                                env=ours_env(args) if name == "ours" else None)
    bp = brokers.BrokerProcess(name, port, proc, workdir, log)
    if _wait_ready(partial(_all_accept, (port,)), proc, 20):
        return bp
    bp.stop(2)
    raise DrainError(f"the {name} cloud did not start on 127.0.0.1:{port} "
                     f"(exit {proc.returncode}); log:\n{bp.log_tail()}")


SUB_ID = "drain-cloud-sub"       # the measuring subscriber at the cloud (clean session 0)


def prepare_cloud(name: str, args: argparse.Namespace) -> Path:
    """Start the cloud once on a port of its own, give the measuring subscriber a persistent
    session subscribed to ``#`` (QoS 1), stop it (its state saved). When the cloud starts
    again on the bridge's port, whatever the bridge sends before the subscriber is back is
    queued for it: no race between the bridge reconnecting and the subscription."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-drain-cloud-{name}-"))
    # Mosquitto started as root runs as user mosquitto: it must be able to write its state
    workdir.chmod(0o777)
    port = brokers.free_port()
    try:
        bp = start_cloud(name, port, workdir, args)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        deadline = time.monotonic() + 10
        with socket.create_connection(("127.0.0.1", port), 5) as sock:
            sock.settimeout(0.2)
            sock.sendall(wire.connect(SUB_ID, clean=False))
            _read_until(sock, wire.CONNACK, deadline)
            sock.sendall(wire.subscribe(1, [("#", 1)]))
            _read_until(sock, wire.SUBACK, deadline)
            sock.sendall(wire.DISCONNECT_PACKET)
        time.sleep(0.1)
    except BaseException:
        bp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    code = bp.stop()
    if not any(workdir.glob("cloud.db*")):
        shutil.rmtree(workdir, ignore_errors=True)
        raise DrainError(f"the {name} cloud saved no state (exit {code}); log:\n"
                         f"{bp.log_tail()}")
    return workdir


def scrape(http_port: int, timeout: float = 5.0) -> dict[str, float]:
    """The edge's /metrics: unlabelled samples by name, the bridge's by name without its
    label; other labelled samples are left out."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics",
                                timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    mine = f'{{bridge="{BRIDGE}"}}'
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key.endswith(mine):
            key = key[:-len(mine)]
        elif "{" in key:
            continue
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out


def try_scrape(http_port: int, timeout: float = 5.0) -> dict[str, float] | None:
    try:
        return scrape(http_port, timeout)
    except (OSError, ValueError):
        return None


def commits(m0: dict[str, float] | None, m1: dict[str, float] | None) -> Json | None:
    """SQLite commits between two scrapes: how many, their mean and the total time."""
    key = "mqttbroker_storage_commit_seconds"
    if not m0 or not m1 or key + "_count" not in m1:
        return None
    n = m1[key + "_count"] - m0.get(key + "_count", 0.0)
    total = m1[key + "_sum"] - m0.get(key + "_sum", 0.0)
    return {"count": int(n), "total_s": round(total, 2),
            "mean_ms": round(total / n * 1e3, 2) if n else None}


def queued(m: dict[str, float] | None) -> int | None:
    if m is None or "mqttbroker_bridge_queued_messages" not in m:
        return None
    return int(m["mqttbroker_bridge_queued_messages"])


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` size field (VmRSS, VmHWM) in bytes (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------------------------
# Worker processes (loadgen.Worker): the subscriber at the cloud, the probe at the edge


class OrderTally(Tally):
    """:class:`Tally` plus order: a message received for the first time after a later one of
    the same publisher is out of order (a redelivered duplicate is not)."""

    def __init__(self, npubs: int, per_pub: int) -> None:
        super().__init__(npubs, per_pub)
        self.top = np.full(npubs, -1, dtype=np.int64)  # highest sequence seen per publisher
        self.out_of_order = 0
        self.examples: list[tuple[int, int, int]] = []  # (publisher, sequence, highest then)

    def _order(self, pubs: npt.NDArray[np.uint32], seqs: npt.NDArray[np.uint32]) -> None:
        ok = (pubs < self.npubs) & (seqs < self.per_pub)
        p, s = pubs[ok].astype(np.int64), seqs[ok].astype(np.int64)
        if not len(p):
            return
        idx = p * self.per_pub + s
        first = np.zeros(len(idx), dtype=bool)
        first[np.unique(idx, return_index=True)[1]] = True  # (a repeat inside the batch)
        new = first & (self.hits[idx] == 0)
        p, s = p[new], s[new]
        for q in np.unique(p):
            sq = s[p == q]
            before = np.maximum.accumulate(np.concatenate(([self.top[q]], sq)))[:-1]
            bad = sq < before
            if bad.any():
                self.out_of_order += int(bad.sum())
                for i in np.flatnonzero(bad)[:max(0, 10 - len(self.examples))]:
                    self.examples.append((int(q), int(sq[i]), int(before[i])))
            self.top[q] = max(int(self.top[q]), int(sq.max()))

    def add(self, pubs: npt.NDArray[np.uint32], seqs: npt.NDArray[np.uint32],
            ts: npt.NDArray[np.uint64] | None, now: int) -> None:
        self._order(pubs, seqs)
        super().add(pubs, seqs, ts, now)

    def add_list(self, pubs: list[int], seqs: list[int], stamps: list[int], now: int) -> None:
        if pubs:
            self._order(np.array(pubs, dtype=np.uint32), np.array(seqs, dtype=np.uint32))
        super().add_list(pubs, seqs, stamps, now)


async def cloud_subscriber(ch: loadgen.Channel, port: int, npubs: int, per_pub: int,
                           stall_s: float, first_s: float) -> None:
    """One subscriber of ``#`` (QoS 1) at the cloud. Reports every 0.5 s; done when it has
    every message, after ``stall_s`` without a new one (``first_s`` for the first), or at the
    deadline of "go"."""
    layout = wire.PublishLayout(TOPIC.format(0), 1)
    tally = OrderTally(npubs, per_pub)
    client = await open_client(lambda: SubClient(SUB_ID, layout, tally, clean=False), port)
    assert isinstance(client, SubClient)
    await client.handshake()
    await client.subscribe([("#", 1)])
    ch.send("ready", {"t_ns": time.monotonic_ns()})
    _, deadline_s = await ch.expect("go")
    cpu0, t0 = loadgen.cpu_seconds(), time.monotonic()
    total = npubs * per_pub
    why = "deadline"
    unique = 0
    while time.monotonic() - t0 < deadline_s:
        try:
            msg = await ch.get(timeout=0.5)
            if msg[0] == "close":
                why = "closed by the runner"
                break
        except TimeoutError:
            pass
        unique = tally.unique()
        ch.send("progress", {"t_ns": time.monotonic_ns(), "received": tally.received,
                             "unique": unique, "out_of_order": tally.out_of_order})
        if unique >= total:
            why = "complete"
            break
        now_ns = time.monotonic_ns()
        if tally.last_ns and (now_ns - tally.last_ns) / 1e9 > stall_s:
            why = f"stalled: nothing new for {stall_s:.0f} s"
            break
        if not tally.last_ns and time.monotonic() - t0 > first_s:
            why = f"nothing arrived within {first_s:.0f} s"
            break
    hits = tally.hits.reshape(npubs, per_pub)
    missing = [int(np.count_nonzero(hits[p] == 0)) for p in range(npubs)]
    first_missing = [int(np.argmin(hits[p] > 0)) if missing[p] else None for p in range(npubs)]
    ch.send("result", {
        "why": why, "received": tally.received, "unique": tally.unique(), "dups": tally.dups(),
        "unexpected": tally.unexpected, "loss": total - tally.unique(),
        "out_of_order": tally.out_of_order, "out_of_order_examples": tally.examples,
        "missing_per_publisher": missing, "first_missing": first_missing,
        "max_dup": int(tally.hits.max()) if total else 0,
        "first_ns": tally.first_ns, "last_ns": tally.last_ns,
        "cpu_s": loadgen.cpu_seconds() - cpu0, "wall_s": time.monotonic() - t0})
    if why != "closed by the runner":
        with contextlib.suppress(TimeoutError):
            await ch.get(timeout=120)
    client.close()
    await asyncio.sleep(0.05)


class RawClient(asyncio.Protocol):
    """A minimal MQTT 3.1.1 client for the probe: frames in, a callback per frame."""

    def __init__(self, on_frame: Callable[[int, bytes, int], None]) -> None:
        self.on_frame = on_frame
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.buf += data
        frames, end = wire.split_frames(self.buf)
        for first, b0, b1 in frames:
            self.on_frame(first, self.buf[b0:b1], now)
        self.buf = self.buf[end:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def edge_probe(ch: loadgen.Channel, port: int, ping_ms: float, live_rate: float,
                     cap_s: float) -> None:
    """At the edge: PINGREQ every ``ping_ms`` (one outstanding at a time), and live QoS 1
    messages on ``live/x`` to a subscriber of ``live/#``, until "stop" (or ``cap_s``).
    Reports every second; the result holds every sample (monotonic ns)."""
    loop = asyncio.get_running_loop()
    waiters: dict[int, asyncio.Future[int]] = {}  # packet type -> its next answer's time
    pings: list[tuple[int, int]] = []            # (sent ns, rtt ns)
    live_sent: dict[int, int] = {}               # seq -> sent ns
    live_ack: dict[int, int] = {}                # seq -> PUBACK ns
    live_recv: dict[int, int] = {}               # seq -> received ns (first)
    live_dups = 0

    def control(kind: int, now: int) -> None:
        fut = waiters.pop(kind, None)
        if fut is not None and not fut.done():
            fut.set_result(now)

    def on_ping(first: int, body: bytes, now: int) -> None:
        control(first >> 4, now)

    def on_pub(first: int, body: bytes, now: int) -> None:
        kind = first >> 4
        if kind == wire.PUBACK:
            seq = int.from_bytes(body[:2], "big") - 1
            live_ack.setdefault(seq, now)
        else:
            control(kind, now)

    def on_sub(first: int, body: bytes, now: int) -> None:
        nonlocal live_dups
        kind = first >> 4
        if kind == wire.PUBLISH:
            tlen = int.from_bytes(body[:2], "big")
            p = 2 + tlen
            qos = (first >> 1) & 3
            if qos:
                sub.write(wire.ack(wire.PUBACK, int.from_bytes(body[p:p + 2], "big")))
                p += 2
            _, seq, _ = wire.PAYLOAD_HEADER.unpack_from(body, p)
            if seq in live_recv:
                live_dups += 1
            else:
                live_recv[seq] = now
        else:
            control(kind, now)

    async def connect(client_id: str, on_frame: Callable[[int, bytes, int], None]
                      ) -> RawClient:
        sock = socket.create_connection(("127.0.0.1", port), 10)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _, proto = await loop.create_connection(lambda: RawClient(on_frame), sock=sock)
        fut = waiters[wire.CONNACK] = loop.create_future()
        proto.write(wire.connect(client_id))
        await asyncio.wait_for(fut, 10)
        return proto

    tag = os.getpid()
    ping = await connect(f"drain-ping-{tag}", on_ping)
    pub = await connect(f"drain-live-pub-{tag}", on_pub)
    sub = await connect(f"drain-live-sub-{tag}", on_sub)
    fut = waiters[wire.SUBACK] = loop.create_future()
    sub.write(wire.subscribe(1, [("live/#", 1)]))
    await asyncio.wait_for(fut, 10)
    ch.send("ready", {})
    await ch.expect("go")
    t0 = time.monotonic()
    stop = asyncio.Event()

    stop_task = asyncio.ensure_future(stop.wait())
    mark = 0

    async def pinger() -> None:
        while not stop.is_set() and time.monotonic() - t0 < cap_s:
            fut = waiters[wire.PINGRESP] = loop.create_future()
            t = time.monotonic_ns()
            ping.write(wire.PINGREQ_PACKET)
            done, _ = await asyncio.wait([fut, stop_task],
                                         timeout=PING_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if fut in done:
                pings.append((t, fut.result() - t))
            elif stop.is_set():  # unanswered when the run ended: as long as it waited
                pings.append((t, time.monotonic_ns() - t))
                return
            else:  # a stall longer than the timeout: recorded as the timeout, then go on
                pings.append((t, int(PING_TIMEOUT_S * 1e9)))
                waiters.pop(wire.PINGRESP, None)
            await asyncio.sleep(ping_ms / 1000)

    async def live() -> None:
        seq = 0
        period = 1.0 / live_rate
        nxt = time.monotonic()
        with payload_size(32):
            while not stop.is_set() and time.monotonic() - t0 < cap_s and seq < 65534:
                t = time.monotonic_ns()
                live_sent[seq] = t
                pub.write(wire.publish(LIVE_TOPIC, wire.payload(0, seq, t), qos=1,
                                       packet_id=seq + 1))
                seq += 1
                nxt += period
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, nxt - time.monotonic()))

    async def reporter() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            rtts = [r for _, r in pings[-200:]]
            ch.send("progress", {"pings": len(pings),
                                 "max_ms": max((r for _, r in pings[mark:]), default=0) / 1e6,
                                 "recent_max_ms": max(rtts, default=0) / 1e6,
                                 "live_sent": len(live_sent), "live_recv": len(live_recv)})

    async def control_channel() -> None:
        nonlocal mark
        while True:
            msg = await ch.get()
            if msg[0] == "mark":  # the max reported from here on
                mark = len(pings)
            elif msg[0] in ("stop", "close"):
                stop.set()
                return

    tasks = [asyncio.ensure_future(c()) for c in (pinger, live, reporter, control_channel)]
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.gather(*tasks[:2])), cap_s + 60)
    except TimeoutError:
        stop.set()
    stop.set()
    await asyncio.sleep(0.3)  # the last live messages and acks
    for t in [*tasks, stop_task]:
        t.cancel()
    ch.send("result", {
        "pings": np.array(pings, dtype=np.int64).reshape(-1, 2),
        "live": [(seq, ts, live_ack.get(seq), live_recv.get(seq))
                 for seq, ts in sorted(live_sent.items())],
        "live_dups": live_dups})
    for c in (ping, pub, sub):
        with contextlib.suppress(Exception):
            c.write(wire.DISCONNECT_PACKET)
            assert c.transport is not None
            c.transport.close()
    await asyncio.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Phases


def _recv_any(conn: Any) -> tuple[Any, ...]:
    try:
        msg: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise DrainError("a load-generator process exited") from None
    if msg[0] == "error":
        raise DrainError(f"load generator failed:\n{msg[1]}")
    return msg


def recv_result(w: loadgen.Worker, timeout: float) -> Json:
    """The worker's "result", skipping the progress reports before it."""
    deadline = time.monotonic() + timeout
    while w.conn.poll(max(0.0, deadline - time.monotonic())):
        msg = _recv_any(w.conn)
        if msg[0] == "result":
            out: Json = msg[1]
            return out
    raise DrainError(f"{w.name}: no result within {timeout:.0f} s")


class ProbeView:
    """The probe's latest progress report, as the runner reads it between other work."""

    def __init__(self, worker: loadgen.Worker) -> None:
        self.worker = worker
        self.last: Json = {}

    def take(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "progress":
            self.last = msg[1]

    def poll(self) -> None:
        while self.worker.conn.poll():
            self.take(_recv_any(self.worker.conn))

    def line(self) -> str:
        p = self.last
        return (f"PINGREQ max {p.get('max_ms', 0):.1f} ms in this phase (last 200: "
                f"{p.get('recent_max_ms', 0):.1f}), live {p.get('live_recv', 0)}/"
                f"{p.get('live_sent', 0)}")


def start_probe(edge: brokers.BrokerProcess, args: argparse.Namespace,
                workers: list[loadgen.Worker], say: Say) -> ProbeView:
    probe = loadgen.Worker("probe", edge_probe, edge.port, args.ping_interval, args.live_rate,
                           args.fill_cap + args.drain_cap + args.baseline + 300)
    workers.append(probe)
    probe.recv("ready", 30)
    probe.send("go")
    say(f"probe at the edge from now on: PINGREQ every {args.ping_interval:g} ms, live QoS 1 "
        f"{args.live_rate:g}/s on {LIVE_TOPIC}")
    return ProbeView(probe)


def fill(edge: brokers.BrokerProcess, http_port: int, args: argparse.Namespace,
         workers: list[loadgen.Worker], probe: ProbeView, say: Say) -> Json:
    """Publish ``count`` messages into the edge; wait until its backlog shows them all."""
    npubs, per_pub = args.publishers, args.count // args.publishers
    total = npubs * per_pub
    groups = [list(range(npubs))[i::args.procs] for i in range(min(args.procs, npubs))]
    pubs = [loadgen.Worker(f"fill{i}", loadgen.publisher_worker, edge.port, g,
                           [TOPIC.format(p) for p in g], 1, per_pub, args.window)
            for i, g in enumerate(groups)]
    workers += pubs
    for w in pubs:
        w.recv("ready", 120)
    m0 = try_scrape(http_port)
    if queued(m0) != 0:
        raise DrainError(f"the bridge's backlog is not empty before filling: {queued(m0)}")
    if m0 and m0.get("mqttbroker_bridge_connected"):
        raise DrainError("the bridge is connected before the cloud exists")
    rss0 = proc_status(edge.pid, "VmRSS")
    cpu0 = loadgen.proc_cpu_seconds(edge.pid)
    t0 = time.monotonic()
    t0_ns = time.monotonic_ns()
    for w in pubs:
        w.send("go", args.fill_cap)
    results: dict[int, Json] = {}
    timeline: list[Json] = [{"t_ns": t0_ns, "queued": 0, "rss_mib": round(rss0 / 2**20, 1)}]
    last_t, last_q = t0, 0
    next_print = t0
    while len(results) < len(pubs):
        if time.monotonic() - t0 > args.fill_cap + 60:
            raise DrainError(f"the publishers did not report within {args.fill_cap + 60:.0f} s")
        ready = wait_conns([w.conn for i, w in enumerate(pubs) if i not in results]
                           + [probe.worker.conn], 1.0)
        for conn in ready:
            if conn is probe.worker.conn:
                probe.poll()
                continue
            i = next(k for k, w in enumerate(pubs) if w.conn is conn)
            msg = _recv_any(conn)
            if msg[0] == "result":
                results[i] = msg[1]
        now = time.monotonic()
        m = try_scrape(http_port)
        q = queued(m)
        rss = proc_status(edge.pid, "VmRSS")
        timeline.append({"t_ns": time.monotonic_ns(), "queued": q,
                         "rss_mib": round(rss / 2**20, 1)})
        if q is not None and now >= next_print:
            rate = (q - last_q) / (now - last_t) if now > last_t else 0.0
            say(f"  fill: {q:,}/{total:,} queued at the edge ({rate:,.0f} msg/s now, "
                f"{q / (now - t0):,.0f} on average), {now - t0:.0f} s, edge RSS "
                f"{rss / 2**20:.0f} MiB; {probe.line()}")
            last_t, last_q, next_print = now, q, now + args.progress
    t_pub = time.monotonic() - t0
    sent = sum(sum(r["sent"].values()) for r in results.values())
    acked = sum(r["acked"] for r in results.values())
    capped = any(r["capped"] for r in results.values())
    first_ns = min(r["first_ns"] for r in results.values())
    last_ns = max(r["last_ns"] for r in results.values())
    if capped or acked < total:
        raise DrainError(f"filling did not finish within {args.fill_cap:.0f} s: {acked:,} of "
                         f"{total:,} acknowledged by the edge ({sent:,} sent)")
    # the backlog at the edge must hold them all (bounded wait: the gauge is read live)
    deadline = time.monotonic() + 30
    q = None
    while time.monotonic() < deadline:
        q = queued(try_scrape(http_port))
        if q is not None and q >= total:
            break
        time.sleep(0.25)
        probe.poll()
    t1_ns = time.monotonic_ns()
    m = try_scrape(http_port) or {}
    if q != total:
        raise DrainError(f"the edge's backlog shows {q} messages after {total:,} were "
                         f"acknowledged (dropped: {m.get('mqttbroker_bridge_dropped_total')})")
    wall = (last_ns - first_ns) / 1e9
    rss = proc_status(edge.pid, "VmRSS")
    out = {"messages": total, "publishers": npubs, "procs": len(pubs), "window": args.window,
           "seconds": round(wall, 2), "rate": round(total / wall) if wall > 0 else None,
           "runner_s": round(t_pub, 2), "backlog_metric": q,
           "queued_bytes_metric": m.get("mqttbroker_bridge_queued_bytes"),
           "edge_rss_mib": {"before": round(rss0 / 2**20, 1), "after": round(rss / 2**20, 1)},
           "edge_cpu_share": round((loadgen.proc_cpu_seconds(edge.pid) - cpu0) / t_pub, 2),
           "publisher_cpu_s": [round(r["cpu_s"], 2) for r in results.values()],
           "db_mib": None, "timeline": timeline, "t_start_ns": t0_ns, "t_end_ns": t1_ns,
           "commits": commits(m0, m)}
    db = edge.workdir / "edge.db"
    if db.exists():
        out["db_mib"] = round(sum(p.stat().st_size for p in edge.workdir.glob("edge.db*"))
                              / 2**20, 1)
    say(f"  filled: {total:,} messages in {wall:.1f} s ({out['rate']:,} msg/s into the edge); "
        f"backlog {q:,} ({(m.get('mqttbroker_bridge_queued_bytes') or 0) / 2**20:.1f} MiB of "
        f"payload), edge RSS {rss / 2**20:.0f} MiB"
        + (f", database {out['db_mib']} MiB" if out["db_mib"] else ""))
    for w in pubs:  # their connections go: nothing of theirs stays in the edge
        w.stop()
        workers.remove(w)
    return out


def drain(edge: brokers.BrokerProcess, http_port: int, cloud_port: int, cloud_dir: Path,
          args: argparse.Namespace, workers: list[loadgen.Worker],
          clouds: list[brokers.BrokerProcess], probe: ProbeView, say: Say) -> Json:
    """The backlog waits ``--baseline`` seconds; then the cloud and a subscriber there, until
    everything arrived."""
    npubs, per_pub = args.publishers, args.count // args.publishers
    total = npubs * per_pub
    t_probe = time.monotonic_ns()
    say(f"  {args.baseline:g} s with the full backlog before the cloud starts")
    if args.gc_log:  # the census of tracked objects (a pause of its own, before the cloud)
        edge.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + args.baseline
    while time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        probe.poll()
    m_before = try_scrape(http_port) or {}
    cpu0 = loadgen.proc_cpu_seconds(edge.pid)
    t_cloud = time.monotonic_ns()
    probe.worker.send("mark")
    probe.last = {}
    cloud = start_cloud(args.cloud, cloud_port, cloud_dir, args)
    clouds.append(cloud)
    sub = loadgen.Worker("cloud-sub", cloud_subscriber, cloud_port, npubs, per_pub, args.stall,
                         args.first_wait)
    workers.append(sub)
    t_sub = sub.recv("ready", 30)[1]["t_ns"]
    sub.send("go", args.drain_cap)
    say(f"  cloud ({args.cloud}) up on 127.0.0.1:{cloud_port} after "
        f"{(t_cloud - t_probe) / 1e9:.1f} s, subscriber of # ready "
        f"{(t_sub - t_cloud) / 1e9:.2f} s later; the bridge reconnects within "
        f"{RESTART[1]:g} s")
    timeline: list[Json] = [{"t_ns": t_cloud, "unique": 0, "out_of_order": 0,
                             "queued": queued(m_before), "inflight": 0,
                             "rss_mib": round(proc_status(edge.pid, "VmRSS") / 2**20, 1),
                             "edge_cpu_s": 0.0}]
    sres: Json | None = None
    last_unique, last_t = 0, time.monotonic()
    next_print = next_scrape = time.monotonic()
    inflight_max = 0
    connects = None
    hard = time.monotonic() + args.drain_cap + 60
    while sres is None:
        if time.monotonic() > hard:
            raise DrainError("no result from the cloud subscriber in time")
        ready = wait_conns([sub.conn, probe.worker.conn], 0.5)
        unique = None
        for conn in ready:
            if conn is probe.worker.conn:
                probe.poll()
                continue
            msg = _recv_any(conn)
            if conn is sub.conn and msg[0] == "progress":
                unique = msg[1]["unique"]
                timeline.append({"t_ns": msg[1]["t_ns"], "unique": unique,
                                 "out_of_order": msg[1]["out_of_order"]})
            elif conn is sub.conn and msg[0] == "result":
                sres = msg[1]
        for p in (edge, cloud):
            if p.proc.poll() is not None:
                raise DrainError(f"the {'edge' if p is edge else 'cloud'} exited "
                                 f"({p.proc.returncode}) during the drain")
        now = time.monotonic()
        if unique is None or now < next_scrape:
            continue
        next_scrape = now + 0.9  # the edge's /metrics and RSS about once a second
        m = try_scrape(http_port, timeout=2.0)
        rss = proc_status(edge.pid, "VmRSS")
        q = queued(m)
        infl = int(m.get("mqttbroker_bridge_inflight_messages", 0)) if m else None
        if infl is not None:
            inflight_max = max(inflight_max, infl)
        if m:
            connects = m.get("mqttbroker_bridge_connects_total")
        timeline[-1].update({"queued": q, "inflight": infl, "rss_mib": round(rss / 2**20, 1),
                             "edge_cpu_s": round(loadgen.proc_cpu_seconds(edge.pid) - cpu0,
                                                 2)})
        if now >= next_print:
            rate = (unique - last_unique) / (now - last_t) if now > last_t else 0.0
            say(f"  drain: {unique:,}/{total:,} at the cloud ({rate:,.0f} msg/s now), backlog "
                f"{'?' if q is None else format(q, ',')}, in flight {infl}, "
                f"{(time.monotonic_ns() - t_cloud) / 1e9:.0f} s; {probe.line()}, edge RSS "
                f"{rss / 2**20:.0f} MiB")
            last_unique, last_t, next_print = unique, now, now + args.progress
    cpu = loadgen.proc_cpu_seconds(edge.pid) - cpu0
    t_end = time.monotonic_ns()
    time.sleep(args.tail)
    probe.worker.send("stop")
    pres = recv_result(probe.worker, 30)
    # the backlog at the edge empties once the cloud's last PUBACKs are in (bounded wait)
    deadline = time.monotonic() + 10
    m_after = try_scrape(http_port) or {}
    while time.monotonic() < deadline and queued(m_after) not in (0, None):
        time.sleep(0.2)
        m_after = try_scrape(http_port) or {}
    if sres["last_ns"]:  # the last arrival, and the edge once it had every PUBACK
        timeline.append({"t_ns": sres["last_ns"], "unique": sres["unique"],
                         "out_of_order": sres["out_of_order"]})
    timeline.append({"t_ns": time.monotonic_ns(), "unique": sres["unique"],
                     "out_of_order": sres["out_of_order"], "queued": queued(m_after),
                     "rss_mib": round(proc_status(edge.pid, "VmRSS") / 2**20, 1)})
    timeline.sort(key=lambda e: e["t_ns"])
    return {"t_idle_ns": t_probe, "t_cloud_ns": t_cloud, "t_sub_ns": t_sub, "t_end_ns": t_end,
            "sub": sres, "probe": pres, "timeline": timeline, "inflight_max": inflight_max,
            "connects": connects, "edge_cpu_s": cpu, "metrics_before": m_before,
            "commits": commits(m_before, m_after),
            "metrics_after": m_after, "total": total}


# --------------------------------------------------------------------------------------------
# Figures


def read_gc(path: Path) -> list[tuple[int, int, int]]:
    """``--gc-log``: the edge's collections as (start ns, duration ns, generation)."""
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                start, dur, gen, _ = (int(x) for x in line.split())
                out.append((start, dur, gen))
    return out


def read_stalls(path: Path) -> list[Json]:
    """``--stall-trace``: the edge's event-loop stalls, each with its stack samples."""
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def stall_stats(stalls: list[Json], a: int, b: int, t0: int,
                gc_events: list[tuple[int, int, int]] | None) -> Json:
    """Stalls that started in [a, b]: how many, the longest, and where the samples were:
    the innermost frame (self) and every function on the stack (inclusive), by count; with
    ``--gc-log`` also the longest collection inside each stall, and the stalls without one."""
    inside = [x for x in stalls if a <= x["start_ns"] <= b]

    def gc_in(x: Json) -> float | None:
        if gc_events is None:
            return None
        s0, s1 = x["start_ns"], x["start_ns"] + int((x["dur_ms"] + 5) * 1e6)
        over = [dur for st, dur, _ in gc_events if st < s1 and st + dur > s0]
        return round(max(over) / 1e6, 1) if over else 0.0

    listed = [{"t_s": round((x["start_ns"] - t0) / 1e9, 3), "dur_ms": round(x["dur_ms"], 1),
               "gc_ms": gc_in(x), "samples": x["samples"][:4]} for x in inside[:300]]
    no_gc = [x for x in listed if not x["gc_ms"]]
    leaf: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    n = 0
    for x in inside:
        for stack in x["samples"]:
            n += 1
            if stack:
                leaf[stack[-1]] += 1
            incl.update({f.split(" ", 1)[-1] + " (" + f.split(":", 1)[0] + ")"
                         for f in stack})
    return {"count": len(inside),
            "max_ms": round(max((x["dur_ms"] for x in inside), default=0.0), 1),
            "total_ms": round(sum(x["dur_ms"] for x in inside), 1), "samples": n,
            "self": leaf.most_common(12), "inclusive": incl.most_common(25),
            "without_gc": {"count": len(no_gc),
                           "max_ms": max((x["dur_ms"] for x in no_gc), default=0.0)}
            if gc_events is not None else None,
            "stalls": listed}


def gc_stats(events: list[tuple[int, int, int]], a: int, b: int) -> Json:
    """Collections that started in [a, b]: generation 2 ones, and every one >= 1 ms."""
    inside = [(s, d, g) for s, d, g in events if a <= s <= b]
    g2 = [d / 1e6 for _, d, g in inside if g == 2]
    slow = [d / 1e6 for _, d, _ in inside]
    return {"gen2": len(g2), "gen2_max_ms": round(max(g2), 1) if g2 else None,
            "gen2_total_ms": round(sum(g2), 1),
            "over_1ms": sum(1 for x in slow if x >= 1.0),
            "max_ms": round(max(slow), 1) if slow else None}


def pct(values: npt.NDArray[np.float64], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def stats_ms(values: npt.NDArray[np.float64], target: float | None = None) -> Json:
    """p50/p99/max (ms) of ``values`` (ms)."""
    out: Json = {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
                 "max": round(float(values.max()), 3) if len(values) else None}
    if target is not None:
        out["over_target"] = int(np.count_nonzero(values >= target))
    return out


def summarize(d: Json, fill_res: Json, args: argparse.Namespace) -> Json:
    sres, pres = d["sub"], d["probe"]
    pings = np.asarray(pres["pings"], dtype=np.int64).reshape(-1, 2)
    # the drain: from the cloud's start (the bridge reconnects inside it) to the last arrival
    t_a = d["t_cloud_ns"]
    t_b = sres["last_ns"] or d["t_end_ns"]
    f_a, f_b = fill_res["t_start_ns"], fill_res["t_end_ns"]
    during = (pings[:, 0] >= t_a) & (pings[:, 0] <= t_b)
    before = (pings[:, 0] > f_b) & (pings[:, 0] < t_a)
    filling = (pings[:, 0] >= f_a) & (pings[:, 0] <= f_b)
    rtt_ms = pings[:, 1] / 1e6
    live = list(pres["live"])
    lat_d, lat_b, lat_f, ack_d, ack_f = [], [], [], [], []
    live_lost = 0
    for _, ts, ack, recv in live:
        if recv is None:
            if ts < t_b:
                live_lost += 1
            continue
        if t_a <= ts <= t_b:
            lat_d.append((recv - ts) / 1e6)
            if ack is not None:
                ack_d.append((ack - ts) / 1e6)
        elif f_b < ts < t_a:
            lat_b.append((recv - ts) / 1e6)
        elif f_a <= ts <= f_b:
            lat_f.append((recv - ts) / 1e6)
            if ack is not None:
                ack_f.append((ack - ts) / 1e6)
    span = (sres["last_ns"] - sres["first_ns"]) / 1e9 if sres["first_ns"] else 0.0
    target = args.target_ms
    ping_d = stats_ms(rtt_ms[during], target)
    worst = np.argsort(np.where(during, rtt_ms, -1.0))[::-1][:10]
    gc_events: list[tuple[int, int, int]] | None = d.get("gc")

    def gc_during(i: int) -> float | None:
        """The longest edge collection overlapping ping ``i`` (ms), with --gc-log."""
        if gc_events is None:
            return None
        s0, s1 = int(pings[i, 0]), int(pings[i, 0] + pings[i, 1])
        over = [dur for st, dur, _ in gc_events if st < s1 and st + dur > s0]
        return round(max(over) / 1e6, 1) if over else 0.0

    res: Json = {
        "messages": d["total"],
        "delivered_unique": sres["unique"], "received": sres["received"],
        "loss": sres["loss"], "dups": sres["dups"], "max_copies": sres["max_dup"],
        "out_of_order": sres["out_of_order"],
        "out_of_order_examples": sres["out_of_order_examples"],
        "unexpected": sres["unexpected"], "why": sres["why"],
        "missing_per_publisher": sres["missing_per_publisher"],
        "first_missing": sres["first_missing"],
        "reconnect_s": round((sres["first_ns"] - d["t_cloud_ns"]) / 1e9, 3)
        if sres["first_ns"] else None,
        "drain_s": round(span, 2),
        "drain_rate": round(sres["unique"] / span) if span > 0 else None,
        "window_s": round((t_b - t_a) / 1e9, 2),
        "inflight_max": d["inflight_max"],
        "connects": d["connects"],
        "ping_during": ping_d,
        "ping_before": stats_ms(rtt_ms[before]),
        "ping_fill": stats_ms(rtt_ms[filling]),
        "ping_fill_worst": [{"t_s": round((int(pings[i, 0]) - t_a) / 1e9, 3),
                             "rtt_ms": round(float(rtt_ms[i]), 2), "gc_ms": gc_during(int(i))}
                            for i in np.argsort(np.where(filling, rtt_ms, -1.0))[::-1][:10]
                            if filling[i]],
        "ping_worst": [{"t_s": round((int(pings[i, 0]) - t_a) / 1e9, 3),
                        "rtt_ms": round(float(rtt_ms[i]), 2), "gc_ms": gc_during(int(i))}
                       for i in worst if during[i]],
        "live_during": stats_ms(np.array(lat_d, dtype=np.float64), target),
        "live_before": stats_ms(np.array(lat_b, dtype=np.float64)),
        "live_fill": stats_ms(np.array(lat_f, dtype=np.float64)),
        "live_puback_fill": stats_ms(np.array(ack_f, dtype=np.float64)),
        "commits_drain": d["commits"],
        "live_puback_during": stats_ms(np.array(ack_d, dtype=np.float64)),
        "live_sent": len(live), "live_lost": live_lost, "live_dups": pres["live_dups"],
        "edge_cpu_share": round(d["edge_cpu_s"] / max(1e-9, (t_b - t_a) / 1e9), 2),
        "edge_cpu_us_per_msg": round(d["edge_cpu_s"] / sres["unique"] * 1e6, 1)
        if sres["unique"] else None,
        "backlog_after": queued(d["metrics_after"]),
        "dropped": d["metrics_after"].get("mqttbroker_bridge_dropped_total"),
        "sent_metric": d["metrics_after"].get("mqttbroker_bridge_sent_total"),
    }
    if d.get("gc_census"):
        c = d["gc_census"]
        res["gc_census"] = {**c, "tracked_per_message": round(c["tracked"] / d["total"], 1)}
    if d.get("stalls") is not None:
        res["stalls"] = {"fill": stall_stats(d["stalls"], f_a, f_b, t_a, gc_events),
                         "idle": stall_stats(d["stalls"], f_b, t_a, t_a, gc_events),
                         "drain": stall_stats(d["stalls"], t_a, t_b, t_a, gc_events),
                         "threshold_ms": args.stall_trace}
    if gc_events is not None:
        res["gc"] = {"fill": gc_stats(gc_events, f_a, f_b), "idle": gc_stats(gc_events, f_b, t_a),
                     "drain": gc_stats(gc_events, t_a, t_b)}
    failures = []
    if res["loss"]:
        failures.append(f"{res['loss']:,} message(s) lost ({sres['why']})")
    if res["out_of_order"]:
        failures.append(f"{res['out_of_order']:,} message(s) out of order")
    if ping_d["max"] is None:
        failures.append("no PINGREQ answered during the drain")
    elif ping_d["max"] >= target:
        failures.append(f"PINGREQ max {ping_d['max']:.1f} ms >= {target:g} ms "
                        f"({ping_d['over_target']} of {ping_d['n']} at or over)")
    if res["live_lost"]:
        failures.append(f"{res['live_lost']} live message(s) not delivered at the edge")
    res["failures"] = failures
    res["verdict"] = "met" if not failures else "NOT met"
    return res


def _f(v: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _ms(s: Json) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{s['p50']:.2f} / {s['p99']:.2f} / **{s['max']:.2f}**"


def markdown(meta: Json, fill_res: Json, r: Json) -> str:
    target = meta["target_ms"]
    lines = [
        (f"Draining a {meta['count']:,}-message bridge backlog: our edge ({meta['ours_label']}, "
         f"persistence {meta['persistence']}"
         + (f", sync: commit, fsync {'on' if meta['fsync'] else 'off'}"
            if meta["persistence"] == "sqlite" else "")
         + f") -> a {meta['cloud_label']} cloud (max_inflight_messages "
         f"{meta['cloud_inflight'] or 'unbounded'}), {meta['protocol']} bridge on `drain/#` at "
         f"QoS 1" + (f" (max_inflight {meta['bridge_inflight']})" if meta["bridge_inflight"]
                     else "")
         + f"; {meta['publishers']} publishers, {meta['payload']}-byte payloads. "
         f"{meta['machine_line']}. Load average {meta['load'][0]:.2f} at the start."),
        "",
        "| measure | value | target | verdict |",
        "|---|---|---|---|",
        (f"| backlog filled (QoS 1 into the edge, acknowledged) | {fill_res['messages']:,} in "
         f"{fill_res['seconds']:.1f} s = {_f(fill_res['rate'])} msg/s; `/metrics` queued "
         f"{fill_res['backlog_metric']:,} | | |"),
        (f"| cloud up -> first message at its subscriber (the bridge reconnecting) | "
         f"{_f(r['reconnect_s'], '.2f')} s | back-off {meta['restart_timeout'][0]:g}-"
         f"{meta['restart_timeout'][1]:g} s | |"),
        (f"| drain (first -> last arrival at the cloud) | {r['drain_s']:.1f} s = "
         f"**{_f(r['drain_rate'])} msg/s**; bridge in flight max {r['inflight_max']} "
         f"(`/metrics`, ~1/s) | | |"),
        (f"| delivered at the cloud | {r['delivered_unique']:,} of {r['messages']:,}; lost "
         f"{r['loss']:,}, out of order {r['out_of_order']:,}, duplicates {r['dups']:,} | "
         f"lost 0, in order | {'met' if not r['loss'] and not r['out_of_order'] else '**NOT met**'}"
         " |"),
        (f"| PINGREQ RTT at the edge during the drain, p50 / p99 / max (ms) | {_ms(r['ping_during'])}"
         f" ({r['ping_during']['n']:,} pings, {r['ping_during'].get('over_target', 0)} >= "
         f"{target:g} ms) | max < {target:g} ms | "
         f"{'met' if r['ping_during']['max'] is not None and r['ping_during']['max'] < target else '**NOT met**'} |"),
        (f"| PINGREQ RTT before the cloud was up (full backlog, idle) | {_ms(r['ping_before'])} "
         f"({r['ping_before']['n']:,} pings) | | |"),
        (f"| PINGREQ RTT while filling (for comparison) | {_ms(r['ping_fill'])} "
         f"({r['ping_fill']['n']:,} pings) | | |"),
        (f"| live QoS 1 `{LIVE_TOPIC}` at the edge, publish -> local subscriber, during the "
         f"drain (ms) | {_ms(r['live_during'])} ({r['live_during']['n']} messages, "
         f"{r['live_lost']} lost) | | |"),
        (f"| live PUBACK round trip during the drain (ms) | {_ms(r['live_puback_during'])} "
         f"| | |"),
        (f"| live QoS 1 while filling (ms): publish -> subscriber; PUBACK | {_ms(r['live_fill'])}"
         f" ({r['live_fill']['n']} messages); {_ms(r['live_puback_fill'])} | | |"),
        (f"| edge RSS: before filling / filled / peak (VmHWM) | "
         f"{fill_res['edge_rss_mib']['before']:.0f} / {fill_res['edge_rss_mib']['after']:.0f}"
         f" / **{meta['edge_peak_rss_mib']:.0f} MiB** | | |"),
        (f"| edge CPU during the drain | {r['edge_cpu_share']:.2f} of a core, "
         f"{_f(r['edge_cpu_us_per_msg'], '.1f')} us per message | | |"),
    ]
    if "gc" in r:
        g = r["gc"]

        def gcs(x: Json) -> str:
            return (f"{x['gen2']} (max {_f(x['gen2_max_ms'], '.1f')} ms, total "
                    f"{x['gen2_total_ms']:.0f} ms)")

        lines.append(f"| edge gen-2 garbage collections (`--gc-log`): while filling / during "
                     f"the drain | {gcs(g['fill'])} / {gcs(g['drain'])} | | |")
    if "gc_census" in r:
        c = r["gc_census"]
        top = ", ".join(f"{name} {n:,}" for name, n in c["top"][:6])
        lines.append(f"| objects the edge's GC tracks, backlog full (`--gc-log`) | "
                     f"{c['tracked']:,} = {c['tracked_per_message']} per queued message; "
                     f"{top} | | |")
    notes = [
        ("Drain window: from starting the cloud (the bridge reconnects within it) to the last "
         "arrival at the cloud; the PINGREQ and live figures cover that window. A PINGREQ is "
         f"sent every {meta['ping_interval_ms']:g} ms after the previous PINGRESP (one "
         "outstanding), from a separate process, on the same 2-core machine as both brokers "
         "and the subscriber: its RTT includes the probe's own scheduling delays."),
        (f"Edge: bridge queue max_messages {meta['queue_max']:,}; persistence "
         f"{meta['persistence']}" + (f", database {fill_res['db_mib']} MiB after filling"
                                     if fill_res.get("db_mib") else "") + "."),
    ]
    for label, c in (("filling", fill_res.get("commits")), ("the drain", r["commits_drain"])):
        if c and c["count"]:
            notes.append(f"SQLite commits at the edge during {label} (`/metrics`): "
                         f"{c['count']:,}, mean {c['mean_ms']} ms, {c['total_s']} s in all.")
    if "gc_census" in r:
        notes.append(f"`--gc-log`: the census of tracked objects (`gc.get_objects()`, on "
                     f"SIGUSR1 once the backlog was full) paused the edge for "
                     f"{r['gc_census']['took_ms']:.0f} ms before the cloud started: the "
                     "\"before the cloud was up\" PINGREQ row includes that pause.")
    if "stalls" in r:
        for phase in ("fill", "drain"):
            st = r["stalls"][phase]
            where = "; ".join(f"`{f}` {c}" for f, c in st["self"][:5])
            wo = st["without_gc"]
            notes.append(f"`--stall-trace {r['stalls']['threshold_ms']:g}`: {st['count']} "
                         f"stall(s) of the edge's loop while "
                         f"{'filling' if phase == 'fill' else 'draining'}, longest "
                         f"{st['max_ms']} ms"
                         + (f" ({wo['count']} without a garbage collection in them, longest "
                            f"{wo['max_ms']} ms)" if wo else "")
                         + f"; {st['samples']} stack samples, innermost frames: "
                         f"{where or 'none'} (all in the JSON)")
    if r["failures"]:
        notes.append("**Failed:** " + "; ".join(r["failures"]) + ".")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def chart(d: Json, fill_res: Json, r: Json, meta: Json, path: Path) -> None:
    """Top: every PINGREQ round trip and live latency at the edge over the run (log scale);
    bottom: the backlog at the edge, what arrived at the cloud, the edge's RSS."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t0 = d["t_cloud_ns"]
    pings = np.asarray(d["probe"]["pings"], dtype=np.int64).reshape(-1, 2)
    fig = Figure(figsize=(11.0, 7.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    ax1.plot((pings[:, 0] - t0) / 1e9, pings[:, 1] / 1e6, ".", markersize=2,
             color="tab:blue",
             label=f"PINGREQ -> PINGRESP at the edge (every {meta['ping_interval_ms']:g} ms)")
    live = [(ts, recv) for _, ts, _, recv in d["probe"]["live"] if recv is not None]
    if live:
        lv = np.array(live, dtype=np.int64)
        ax1.plot((lv[:, 0] - t0) / 1e9, (lv[:, 1] - lv[:, 0]) / 1e6, "x", markersize=4,
                 color="tab:green", label=f"live QoS 1 {LIVE_TOPIC}, publish -> subscriber")
    if d.get("gc"):
        g = np.array([(st, dur) for st, dur, gen in d["gc"] if gen == 2], dtype=np.int64)
        if len(g):
            ax1.plot((g[:, 0] - t0) / 1e9, g[:, 1] / 1e6, "v", markersize=5, color="tab:red",
                     label="edge gen-2 garbage collection (its duration)")
    ax1.axhline(meta["target_ms"], color="tab:red", linestyle="--", linewidth=1,
                label=f"target {meta['target_ms']:g} ms")
    ax1.set_yscale("log")
    top = max(float(pings[:, 1].max()) / 1e6 if len(pings) else 0.0, meta["target_ms"])
    ax1.set_ylim(top=top * 8)  # room for the legend above the points
    ax1.set_ylabel("ms (log)")
    ax1.grid(True, alpha=0.3, which="both")
    ax1.legend(loc="upper center", ncol=3, fontsize="small")
    fig.suptitle(
        f"bridge backlog of {meta['count']:,} messages: edge ours ({meta['persistence']}), "
        f"{meta['protocol']} bridge, cloud {meta['cloud']} ({meta['date'][:10]})\n"
        f"drained at {_f(r['drain_rate'])} msg/s; PINGREQ during the drain p99 "
        f"{_f(r['ping_during']['p99'], '.1f')} ms, max {_f(r['ping_during']['max'], '.1f')} ms",
        fontsize="medium")
    ax3 = ax2.twinx()
    fill_tl = [e for e in fill_res["timeline"] if e.get("queued") is not None]
    tl = d["timeline"]
    fx = [(e["t_ns"] - t0) / 1e9 for e in fill_tl]
    dx = [(e["t_ns"] - t0) / 1e9 for e in tl]
    q_pts = [(x, e["queued"]) for x, e in zip(fx + dx, fill_tl + tl, strict=True)
             if e.get("queued") is not None]
    ax2.plot([a for a, _ in q_pts], [b for _, b in q_pts], color="tab:purple",
             label="edge backlog (/metrics)")
    ax2.plot(dx, [e["unique"] for e in tl], color="tab:orange", label="arrived at the cloud")
    rs = [(x, e["rss_mib"]) for x, e in zip(fx + dx, fill_tl + tl, strict=True)
          if e.get("rss_mib") is not None]
    if rs:
        ax3.plot([a for a, _ in rs], [b for _, b in rs], color="tab:gray", linestyle=":",
                 label="edge RSS (right)")
        ax3.set_ylim(0, max(b for _, b in rs) * 1.15)
    ax3.set_ylabel("edge RSS, MiB")
    f_a, f_b = (fill_res["t_start_ns"] - t0) / 1e9, (fill_res["t_end_ns"] - t0) / 1e9
    end = (d["sub"]["last_ns"] - t0) / 1e9 if d["sub"]["last_ns"] else None
    for ax in (ax1, ax2):
        ax.axvspan(f_a, f_b, color="tab:blue", alpha=0.06)
        if end is not None:
            ax.axvspan(0, end, color="tab:orange", alpha=0.08)
        ax.axvline(0, color="k", linewidth=0.8)
    ax2.set_ylabel("messages")
    ax2.set_xlabel("seconds since the cloud started (blue: filling the backlog, "
                   "orange: the drain)")
    ax2.grid(True, alpha=0.3)
    h2, l2 = ax2.get_legend_handles_labels()
    h3, l3 = ax3.get_legend_handles_labels()
    ax2.legend(h2 + h3, l2 + l3, loc="best", fontsize="small")
    fig.savefig(os.fspath(path), format="png")


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bridge_drain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=None,
                   help="messages in the backlog (default 1,000,000; --quick 20,000)")
    p.add_argument("--quick", action="store_true",
                   help="20,000 messages, shorter baseline; writes bridge_drain-quick.*")
    p.add_argument("--persistence", choices=("sqlite", "memory"), default="sqlite",
                   help="the edge's persistence (default sqlite, sync: commit)")
    p.add_argument("--fsync", action="store_true", help="sqlite: fsync each commit")
    p.add_argument("--cloud", choices=("mosquitto", "ours"), default="mosquitto",
                   help="the remote broker (default mosquitto)")
    p.add_argument("--protocol", choices=("mqttv5", "mqttv311"), default="mqttv5",
                   help="the bridge's protocol (default mqttv5: the remote's Receive Maximum "
                        "is the window; 3.1.1 has none, so ours keeps up to 65535 in flight)")
    p.add_argument("--cloud-inflight", type=int, default=brokers.MAX_INFLIGHT,
                   help="the cloud's max_inflight_messages, as in the other benchmarks "
                        f"(default {brokers.MAX_INFLIGHT}; 0 = unbounded). Mosquitto announces "
                        "it as its Receive Maximum (none when 0); ours announces its "
                        "receive_maximum (100) whatever this is")
    p.add_argument("--bridge-inflight", type=int, default=None,
                   help="the bridge's max_inflight (default: its own, the remote's Receive "
                        "Maximum at 5.0, 20 at 3.x)")
    p.add_argument("--publishers", type=int, default=8, help="publishers filling (8)")
    p.add_argument("--procs", type=int, default=2, help="publisher processes (2)")
    p.add_argument("--window", type=int, default=100,
                   help="QoS 1 PUBLISH in flight per publisher (100)")
    p.add_argument("--payload", type=int, default=100, help="payload bytes (100)")
    p.add_argument("--ping-interval", type=float, default=15.0,
                   help="ms between a PINGRESP and the next PINGREQ (15)")
    p.add_argument("--live-rate", type=float, default=5.0, help="live messages a second (5)")
    p.add_argument("--baseline", type=float, default=None,
                   help="seconds of probing before the cloud starts (3; --quick 1)")
    p.add_argument("--tail", type=float, default=1.0,
                   help="seconds of probing after the last arrival (1)")
    p.add_argument("--target-ms", type=float, default=100.0,
                   help="PINGREQ round trip that fails the run (100)")
    p.add_argument("--fill-cap", type=float, default=600.0,
                   help="seconds the filling may take (600)")
    p.add_argument("--drain-cap", type=float, default=1800.0,
                   help="seconds the drain may take (1800)")
    p.add_argument("--stall", type=float, default=60.0,
                   help="stop when nothing new arrived at the cloud for this long (60)")
    p.add_argument("--first-wait", type=float, default=60.0,
                   help="stop when nothing at all arrived at the cloud after this long (60)")
    p.add_argument("--progress", type=float, default=None,
                   help="seconds between progress lines (5; --quick 1)")
    p.add_argument("--ours-rev", default="working",
                   help="our broker (edge, and cloud with --cloud ours) from this checkout as "
                        "it is ('working', the default) or from a git revision, exported as "
                        "benchmarks/ab.py does it")
    p.add_argument("--trees", default=str(Path(tempfile.gettempdir()) / "mqttbroker-ab"),
                   help="where --ours-rev revisions are exported (shared with ab.py)")
    p.add_argument("--gc-log", action="store_true",
                   help="log the edge's garbage collections (generation 2, and any >= 1 ms) "
                        "with a gc callback, to see whether its pauses are the GC's")
    p.add_argument("--stall-trace", type=float, default=None, metavar="MS",
                   help="sample the edge's main-thread stack while its event loop has not "
                        "run for MS ms (a heartbeat every 5 ms, a watchdog thread): where "
                        "the stalls are spent")
    p.add_argument("--out", default=None,
                   help="output stem: OUT.json, OUT.md, OUT.png "
                        "(default benchmarks/results/bridge_drain)")
    args = p.parse_args(argv)
    args.count = (QUICK if args.quick else FULL)["count"] if args.count is None else args.count
    if args.baseline is None:
        args.baseline = 1.0 if args.quick else 3.0
    if args.progress is None:
        args.progress = 1.0 if args.quick else 5.0
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results"
                       / ("bridge_drain-quick" if args.quick else "bridge_drain"))
    if not 1 <= args.publishers <= 64:
        p.error("--publishers must be in 1..64")
    if not 1 <= args.procs <= 16:
        p.error("--procs must be in 1..16")
    if not args.publishers <= args.count <= 5_000_000:
        p.error("--count must be in --publishers..5,000,000")
    if not 0 <= args.cloud_inflight <= 65535:
        p.error("--cloud-inflight must be in 0..65535")
    if args.bridge_inflight is not None and not 1 <= args.bridge_inflight <= 65535:
        p.error("--bridge-inflight must be in 1..65535")
    if not 1 <= args.window <= 1000:
        p.error("--window must be in 1..1000")
    if not wire.PAYLOAD_HEADER.size <= args.payload <= MAX_PAYLOAD:
        p.error(f"--payload must be in {wire.PAYLOAD_HEADER.size}..{MAX_PAYLOAD}")
    if not 1 <= args.ping_interval <= 1000:
        p.error("--ping-interval must be in 1..1000 ms")
    if not 0.1 <= args.live_rate <= 100:
        p.error("--live-rate must be in 0.1..100")
    for name in ("fill_cap", "drain_cap", "stall", "first_wait"):
        if not 0 < getattr(args, name) <= 7200:
            p.error(f"--{name.replace('_', '-')} must be in (0, 7200] seconds")
    for name in ("baseline", "tail", "progress"):
        if not 0 <= getattr(args, name) <= 60:
            p.error(f"--{name} must be in [0, 60] seconds")
    return args


def _ours_label(args: argparse.Namespace, say: Say) -> str:
    """This checkout: HEAD, and the sha1 of ``git diff HEAD -- mqttbroker`` when dirty; or
    the revision asked for (its tree exported, ``args.ours_source``)."""
    from . import ab

    args.ours_source = None
    if args.ours_rev != ab.WORKING:
        side = ab.prepare("ours", args.ours_rev, Path(args.trees), say)
        args.ours_source = side.source
        return f"revision {side.sha[:7]} ({side.subject[:50]})"
    sha = ab.git("rev-parse", "--short", "HEAD")
    if not ab.git("status", "--porcelain", "--", "mqttbroker"):
        return f"this checkout (HEAD {sha})"
    diff = hashlib.sha1(ab.git("diff", "HEAD", "--", "mqttbroker").encode()).hexdigest()
    return f"this checkout (HEAD {sha}, uncommitted changes in mqttbroker/, diff sha1 {diff[:12]})"


def main(argv: Sequence[str] | None = None) -> int:
    from . import report
    from .run import machine, stopwatch

    args = parse_args(argv)
    t_start = time.monotonic()

    say = stopwatch(7)

    if args.cloud == "mosquitto" and not Path(brokers.MOSQUITTO).exists():
        say(f"{brokers.MOSQUITTO} missing: `make peers` installs Debian's mosquitto")
        return 2
    args.count = (args.count // args.publishers) * args.publishers
    versions = brokers.versions()
    meta: Json = {
        "what": "draining a bridge backlog at the edge while it keeps answering (issue 16)",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "load": os.getloadavg(),
        "versions": {"ours": versions.get("ours"), "mosquitto": versions.get("mosquitto")},
        "ours_label": _ours_label(args, say), "ours_rev": args.ours_rev,
        "count": args.count, "persistence": args.persistence, "fsync": args.fsync,
        "cloud": args.cloud,
        "cloud_label": ("Mosquitto " + str(versions.get("mosquitto"))
                        if args.cloud == "mosquitto" else "mqttbroker (ours)"),
        "protocol": args.protocol, "publishers": args.publishers, "procs": args.procs,
        "cloud_inflight": args.cloud_inflight, "bridge_inflight": args.bridge_inflight,
        "window": args.window, "payload": args.payload,
        "ping_interval_ms": args.ping_interval, "live_rate": args.live_rate,
        "target_ms": args.target_ms, "restart_timeout": list(RESTART),
        "queue_max": max(args.count, 1_000_000), "quick": args.quick, "gc_log": args.gc_log,
        "stall_trace_ms": args.stall_trace,
    }
    meta["machine_line"] = report.machine_line(meta)
    say(f"machine: {meta['machine_line']}; load average {meta['load'][0]:.2f}; "
        f"ours: {meta['ours_label']}")
    say(f"{args.count:,} messages, persistence {args.persistence}, cloud {args.cloud}, "
        f"bridge {args.protocol}")
    workers: list[loadgen.Worker] = []
    clouds: list[brokers.BrokerProcess] = []
    edge: brokers.BrokerProcess | None = None
    cloud_dir: Path | None = None
    out = Path(args.out)
    status = 1
    try:
        with payload_size(args.payload):
            cloud_dir = prepare_cloud(args.cloud, args)
            say(f"cloud ({args.cloud}) prepared in {cloud_dir}: the subscriber's session "
                "(clean session 0, # at QoS 1) is stored there")
            cloud_port = brokers.free_port()
            edge, http_port = start_edge(args, cloud_port)
            meta["edge_config"] = (edge.workdir / "edge.yaml").read_text()
            say(f"edge (ours) pid {edge.pid} on 127.0.0.1:{edge.port}, /metrics on "
                f"{http_port}; its bridge tries 127.0.0.1:{cloud_port}, where nothing listens")
            probe = start_probe(edge, args, workers, say)
            say("phase 1: filling the backlog")
            fill_res = fill(edge, http_port, args, workers, probe, say)
            say("phase 2: draining")
            d = drain(edge, http_port, cloud_port, cloud_dir, args, workers, clouds, probe,
                      say)
        sampled = [e.get("rss_mib") or 0.0 for e in fill_res["timeline"] + d["timeline"]]
        meta["edge_peak_rss_mib"] = max(round(proc_status(edge.pid, "VmHWM") / 2**20, 1),
                                        *sampled)
        d["gc"] = read_gc(edge.workdir / "gc.log") if args.gc_log else None
        d["stalls"] = read_stalls(edge.workdir / "stalls.jsonl") if args.stall_trace else None
        census = edge.workdir / "gc.log.census.json"
        d["gc_census"] = json.loads(census.read_text()) if census.exists() else None
        meta["edge_rss_end_mib"] = round(proc_status(edge.pid, "VmRSS") / 2**20, 1)
        meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
        r = summarize(d, fill_res, args)
        status = finish(meta, fill_res, d, r, out, say)
    except (DrainError, loadgen.LoadgenError, brokers.BrokerError, OSError) as exc:
        say(f"FAILED: {type(exc).__name__}: {exc}")
        if edge is not None:
            say(f"edge log (last lines):\n{edge.log_tail(30)}")
        status = 1
    except KeyboardInterrupt:
        say("interrupted")
        status = 130
    finally:
        loadgen.stop_all(workers)
        for bp in [*clouds, edge]:
            if bp is not None:
                bp.stop()
                shutil.rmtree(bp.workdir, ignore_errors=True)
        if cloud_dir is not None:
            shutil.rmtree(cloud_dir, ignore_errors=True)
    return status


def finish(meta: Json, fill_res: Json, d: Json, r: Json, out: Path, say: Say) -> int:
    md = markdown(meta, fill_res, r)
    out.parent.mkdir(parents=True, exist_ok=True)
    tl = d["timeline"]
    t0 = d["t_cloud_ns"]
    pings = np.asarray(d["probe"]["pings"], dtype=np.int64).reshape(-1, 2)
    # per second of the run (since the cloud started): pings, p50 and max RTT
    secs = np.floor((pings[:, 0] - t0) / 1e9).astype(np.int64)
    per_s = []
    for s in np.unique(secs):
        v = pings[secs == s, 1] / 1e6
        per_s.append({"t": int(s), "n": len(v), "p50": round(float(np.median(v)), 3),
                      "max": round(float(v.max()), 3)})
    def rel(entries: list[Json]) -> list[Json]:  # times in s since the cloud started
        return [{"t": round((e["t_ns"] - t0) / 1e9, 2),
                 **{k: v for k, v in e.items() if k != "t_ns"}} for e in entries]

    fill_doc = {k: v for k, v in fill_res.items()
                if k not in ("timeline", "t_start_ns", "t_end_ns")}
    fill_doc["t_start"] = round((fill_res["t_start_ns"] - t0) / 1e9, 2)
    fill_doc["t_end"] = round((fill_res["t_end_ns"] - t0) / 1e9, 2)
    fill_doc["timeline"] = rel(fill_res["timeline"])
    doc = {**meta, "fill": fill_doc, "result": r, "drain_timeline": rel(tl),
           "ping_per_second": per_s,
           "note": "times (t, t_s) are seconds since the cloud started; ping_per_second: "
                   "PINGREQ round trips (ms) per second of the run"}
    out.with_name(out.name + ".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    out.with_name(out.name + ".md").write_text(md)
    try:
        chart(d, fill_res, r, meta, out.with_name(out.name + ".png"))
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        say(f"chart failed: {exc}")
    print()
    print(md)
    for f in r["failures"]:
        print(f"FAILED: {f}")
    print(f"wrote {out}.json, .md, .png (run took {meta['elapsed_s']:.0f} s)")
    return 1 if r["failures"] else 0


_MAIN_PID = 0


def _sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the run as Ctrl-C does (everything started is stopped); a forked worker
    that inherited this handler just dies."""
    if os.getpid() != _MAIN_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise KeyboardInterrupt


if __name__ == "__main__":
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _sigterm)
    sys.exit(main())
