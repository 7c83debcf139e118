"""Cluster mode over Redis: what it costs on one node, what --workers gains, what crosses Redis.

    python -m benchmarks.cluster [--rounds 3] [--quick] [--scenarios fanin_q0,fanin_q1,...]
                                 [--configs single,cluster-1,workers-2] [--no-cross]
                                 [--out benchmarks/results]

Starts its own ``redis-server`` (loopback, free port, no persistence) in a temporary folder,
and per run a fresh broker of ours on a free port, its config written into a temporary folder
(listener 127.0.0.1:PORT, ``sys_interval: 0``, anonymous, WARNING log, the in-flight window
and queue limit every benchmark run of ours uses, no per-address connection rate limit):

* ``single``: no ``cluster`` section: the plain broker, nothing about Redis loaded;
* ``cluster-1``: a ``cluster`` section (node ``bench``), one process: the cost of being a
  node (sessions and routes in Redis, PUBACK held until Redis has written);
* ``workers-2``: the same config with ``mqttbroker serve --workers 2``: two nodes
  (``bench-w0``, ``bench-w1``) on the same port (SO_REUSEPORT). The kernel spreads the
  connections, so the subscriber and each publisher land on either worker and part of the
  traffic crosses from one node to the other through Redis (``xadd`` = inbox entries Redis
  counted; a node writes up to 256 messages for another node in one entry).

Scenarios (``benchmarks.loadgen``, as ``benchmarks.run`` calls them): ``fanin_q0``, ``fanin_q1``
(8 publishers -> 1 subscriber, QoS 0 / QoS 1, 100 in flight per publisher) and ``fanout_q0``
(1 publisher -> 50 subscribers, deliveries/s). Then ``cross``: two single-process nodes ``a``
and ``b`` (the ``cluster-1`` config, separate ports), the 8 publishers on ``a``, the subscriber
on ``b``: every message goes ``a`` -> Redis stream -> ``b``: the per-node forwarding throughput,
fan-in QoS 0 and QoS 1 (``cross_q0``, ``cross_q1``).

For every run: the loadgen result (rate, loss, duplicates: all must be 0, any other value is
flagged), the CPU seconds of each broker process (each worker) and of Redis (``/proc/PID/stat``)
over the loadgen's own measuring window (from "go" to the last subscriber result), Redis's
command counts (``INFO commandstats``, reset before each run) and, with ``--workers``, how
many connections each worker held. Between runs Redis gets ``FLUSHALL`` (no broker running),
so no run sees another's state. Rounds interleave: each round runs every scenario against
every config, the config order rotated each round; the table shows medians.

Writes ``OUT/cluster.json`` (every run, machine, versions), ``OUT/cluster.png`` and
``OUT/cluster.md`` (``--quick``: ``cluster-quick.*``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml

from . import brokers, loadgen
from .clients import WINDOW

Json = dict[str, Any]
Say = Callable[[str], None]

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = "/usr/bin/redis-server"
PREFIX = "mqttbroker"          # the cluster's default Redis key prefix
NODE = "bench"                 # the node name of cluster-1 (workers: bench-w0, bench-w1)
WORKERS = 2
CONFIGS = ("single", "cluster-1", "workers-2")
SCENARIOS = ("fanin_q0", "fanin_q1", "fanout_q0")
CROSS = ("cross_q0", "cross_q1")
LABELS = {"fanin_q0": "fan-in QoS 0 (8 pub -> 1 sub)",
          "fanin_q1": "fan-in QoS 1 (8 pub -> 1 sub)",
          "fanout_q0": "fan-out QoS 0 (1 pub -> 50 sub)",
          "cross_q0": "cross-node fan-in QoS 0 (8 pub on a -> 1 sub on b)",
          "cross_q1": "cross-node fan-in QoS 1 (8 pub on a -> 1 sub on b)"}
CROSS_OF = {"fanin_q0": "cross_q0", "fanin_q1": "cross_q1"}  # the same row of the table
CAP_S = 20.0
FULL = {"fanin_q0": 200_000, "fanin_q1": 200_000, "fanout_q0": 20_000,
        "cross_q0": 150_000, "cross_q1": 100_000}
QUICK = {"fanin_q0": 40_000, "fanin_q1": 20_000, "fanout_q0": 2_000,
         "cross_q0": 20_000, "cross_q1": 12_000}
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 25.0


class BenchError(RuntimeError):
    """Redis or a broker did not start or stop as it should."""


# --------------------------------------------------------------------------------------------
# processes


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), 0.0 if it is gone."""
    return loadgen.proc_cpu_seconds(pid)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class RedisServer:
    """Our own ``redis-server`` on a free loopback port, no persistence, files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = 0
        self.log = folder / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        import redis

        for _ in range(3):  # the free port may be taken between probing and binding
            self.port = brokers.free_port()
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                     "--daemonize", "no"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if brokers.accepts(self.port):
                    self.client = redis.Redis(host="127.0.0.1", port=self.port, db=0,
                                              socket_timeout=10, decode_responses=True)
                    if self.client.ping():
                        return
                time.sleep(0.05)
            self.stop()
        raise BenchError(f"redis-server did not start; log:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None
        if self.proc is not None:
            brokers.terminate(self.proc)

    def version(self) -> str:
        return str(self.client.info("server").get("redis_version", "?"))

    def flush(self) -> None:
        """Forget every key (no broker is running) and reset the command counters."""
        self.client.flushall()
        self.client.config_resetstat()

    def snapshot(self) -> Json:
        """Calls and microseconds per command (``INFO commandstats``) and Redis's own CPU
        seconds (``INFO cpu``, getrusage: finer than /proc's clock ticks), now."""
        raw: dict[str, Any] = self.client.info("commandstats")
        per: dict[str, Json] = {}
        for key, v in raw.items():
            if key.startswith("cmdstat_") and isinstance(v, dict):
                per[key[len("cmdstat_"):]] = {"calls": int(v.get("calls", 0)),
                                              "usec": int(v.get("usec", 0))}
        cpu: dict[str, Any] = self.client.info("cpu")
        return {"commands": per,
                "cpu_s": float(cpu.get("used_cpu_user", 0)) + float(cpu.get("used_cpu_sys", 0))}

    @staticmethod
    def diff(s0: Json, s1: Json) -> Json:
        """What Redis did between two snapshots: commands (calls, usec), totals, XADD calls
        (= messages forwarded to another node) and its CPU seconds by its own count."""
        per: dict[str, Json] = {}
        for name, v in s1["commands"].items():
            w = s0["commands"].get(name, {"calls": 0, "usec": 0})
            if v["calls"] - w["calls"] > 0 and name != "info":  # (our own snapshots)
                per[name] = {"calls": v["calls"] - w["calls"], "usec": v["usec"] - w["usec"]}
        # EXEC's time includes the commands of its transaction, which count on their own too
        return {"calls": sum(v["calls"] for v in per.values()),
                "usec": sum(v["usec"] for k, v in per.items() if k != "exec"),
                "xadd": per.get("xadd", {}).get("calls", 0),
                "info_cpu_s": round(s1["cpu_s"] - s0["cpu_s"], 4),
                "by_command": dict(sorted(per.items(), key=lambda kv: -kv[1]["calls"]))}

    def node_keys(self) -> list[str]:
        return sorted(str(k) for k in self.client.keys(f"{PREFIX}:node:*"))

    def has_route(self, node: str, flt: str) -> bool:
        return bool(self.client.hexists(f"{PREFIX}:routes:{node}", flt))


def write_config(folder: Path, port: int, redis_url: str | None, node: str) -> Path:
    """Our broker's config: the benchmark settings of ``benchmarks/brokers.py`` for ours,
    plus a ``cluster`` section when ``redis_url`` is given."""
    conf: Json = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "sys_interval": 0,
        "auth": {"allow-anonymous": True},
        "mqtt": {"max_inflight_messages": brokers.MAX_INFLIGHT or brokers.OURS_MAX_INFLIGHT,
                 "max_queued_messages": brokers.MAX_QUEUED,
                 "max_connection_rate_per_address": 0},
        "log_level": "WARNING",
    }
    if redis_url is not None:
        conf["cluster"] = {"redis": redis_url, "node": node}
    path = folder / "mqttbroker.yaml"
    path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return path


def _pgroup_pids(pgid: int) -> list[int]:
    """Every live process in process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry))
    return out


def _worker_index(pid: int) -> int | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if b"--worker-index" in argv:
        i = argv.index(b"--worker-index")
        if i + 1 < len(argv):
            return int(argv[i + 1])
    return None


class Node:
    """One broker of ours (``serve -c``, optionally ``--workers N``) in its own process group,
    config and log in a temporary folder."""

    def __init__(self, redis: RedisServer | None, node: str, workers: int = 1) -> None:
        self.redis = redis
        self.node = node
        self.workers = workers
        self.folder = Path(tempfile.mkdtemp(prefix=f"bench-cluster-{node}-"))
        self.log = self.folder / "broker.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.procs: dict[str, int] = {}   # name -> pid of the processes doing the work

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def expected_keys(self) -> list[str]:
        if self.redis is None:
            return []
        if self.workers > 1:
            return [f"{PREFIX}:node:{self.node}-w{i}" for i in range(self.workers)]
        return [f"{PREFIX}:node:{self.node}"]

    def start(self) -> Node:
        last = ""
        for _ in range(3):  # the free port may be taken between probing and binding
            self.port = brokers.free_port()
            conf = write_config(self.folder, self.port,
                                self.redis.url if self.redis else None, self.node)
            argv = [str(brokers.VENV_BIN / "python"), "-m", "mqttbroker", "serve", "-c",
                    str(conf)]
            if self.workers > 1:
                argv += ["--workers", str(self.workers)]
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self.folder,
                                             start_new_session=True)
            want = self.expected_keys()
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if brokers.accepts(self.port) and (
                        not want or set(want) <= set(self.redis.node_keys()  # type: ignore[union-attr]
                                                     )):
                    self._find_procs()
                    if len(self.procs) == self.workers:
                        return self
                time.sleep(0.05)
            last = (f"{self.node} did not accept on 127.0.0.1:{self.port} and show "
                    f"{want} in Redis within {READY_TIMEOUT:.0f} s (exit {self.proc.poll()});"
                    f" log:\n{_tail(self.log)}")
            self.stop()
        raise BenchError(last)

    def _find_procs(self) -> None:
        if self.workers == 1:
            self.procs = {self.node: self.pid}
            return
        self.procs = {}
        for pid in _pgroup_pids(self.pid):
            i = _worker_index(pid)
            if i is not None:
                self.procs[f"{self.node}-w{i}"] = pid

    def alive(self) -> bool:
        return (self.proc is not None and self.proc.poll() is None
                and all(os.path.exists(f"/proc/{p}") for p in self.procs.values()))

    def stop(self) -> Json:
        """SIGTERM to the parent; wait for it and for its whole process group to be gone
        (SIGKILL to the group after ``STOP_TIMEOUT``)."""
        if self.proc is None:
            return {"status": None}
        t0 = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            killed = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        deadline = time.monotonic() + 10
        while _pgroup_pids(self.proc.pid):
            if time.monotonic() > deadline:
                killed = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                time.sleep(0.2)
                break
            time.sleep(0.05)
        return {"status": self.proc.returncode, "seconds": round(time.monotonic() - t0, 2),
                "killed": killed}

    def log_problems(self) -> str:
        text = _tail(self.log, 30)
        return text if ("Traceback" in text or "ERROR" in text or "CRITICAL" in text) else ""

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# measuring


class Pinger:
    """A thread that PINGs Redis every ``interval`` s on a connection of its own: the round
    trips say how long Redis (one thread running commands) kept other clients waiting."""

    def __init__(self, port: int, interval: float = 0.005) -> None:
        self.port = port
        self.interval = interval
        self.rtts: list[float] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-pinger", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), 5)
        except OSError:
            self.failed += 1
            return
        with sock:
            sock.settimeout(30)
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    sock.sendall(b"PING\r\n")
                    got = b""
                    while not got.endswith(b"\r\n"):
                        chunk = sock.recv(64)
                        if not chunk:
                            raise OSError("closed")
                        got += chunk
                except OSError:
                    self.failed += 1
                    return
                self.rtts.append(time.perf_counter() - t0)
                self._stop.wait(self.interval)

    def stop(self) -> Json:
        self._stop.set()
        self._thread.join(35)
        r = sorted(self.rtts)
        if not r:
            return {"n": 0, "failed": self.failed, "max_ms": None, "p99_ms": None}
        return {"n": len(r), "failed": self.failed, "max_ms": round(r[-1] * 1000, 2),
                "p99_ms": round(r[int(0.99 * (len(r) - 1))] * 1000, 2),
                "median_ms": round(r[len(r) // 2] * 1000, 3)}


class Meter:
    """CPU seconds of named processes between :meth:`begin` and :meth:`end`.

    ``hooked()`` makes loadgen's own broker-CPU window (from "go" to the last subscriber's
    result) call ``begin``/``end``, so the figures cover the same time as loadgen's rate; if
    loadgen does not call it, the window is the whole scenario call."""

    active: ClassVar[Meter | None] = None

    def __init__(self, procs: dict[str, int], redis: RedisServer | None = None) -> None:
        self.procs = dict(procs)
        self.redis = redis
        self.t0 = self.t1 = 0.0
        self.c0: dict[str, float] = {}
        self.c1: dict[str, float] = {}
        self.s0: Json = {}
        self.s1: Json = {}
        self.hook_used = False
        self.pinger: Pinger | None = None
        self.ping: Json = {}

    def begin(self) -> None:
        if self.redis is not None:
            self.s0 = self.redis.snapshot()
            if self.pinger is not None:
                self.pinger.stop()
            self.pinger = Pinger(self.redis.port)
        self.c0 = {n: cpu_of(p) for n, p in self.procs.items()}
        self.t0 = time.monotonic()

    def end(self) -> None:
        self.t1 = time.monotonic()
        self.c1 = {n: cpu_of(p) for n, p in self.procs.items()}
        if self.pinger is not None:
            self.ping = self.pinger.stop()
            self.pinger = None
        if self.redis is not None:
            self.s1 = self.redis.snapshot()

    @contextlib.contextmanager
    def hooked(self) -> Iterator[Meter]:
        saved = loadgen._BrokerCpu
        Meter.active = self
        loadgen._BrokerCpu = _HookedCpu  # type: ignore[misc]
        self.begin()
        try:
            yield self
        finally:
            loadgen._BrokerCpu = saved  # type: ignore[misc]
            Meter.active = None
            if not self.c1 or self.t1 < self.t0:
                self.end()

    def report(self) -> Json:
        wall = max(self.t1 - self.t0, 1e-9)
        cpu = {n: round(self.c1.get(n, 0.0) - self.c0.get(n, 0.0), 3) for n in self.procs}
        out: Json = {"window_s": round(wall, 3),
                     "window": "loadgen" if self.hook_used else "call",
                     "cpu_s": cpu, "cores": {n: round(c / wall, 2) for n, c in cpu.items()}}
        if self.s0 and self.s1:
            out["redis"] = RedisServer.diff(self.s0, self.s1)
        if self.ping:
            out["redis_ping"] = self.ping
        return out


class _HookedCpu(loadgen._BrokerCpu):
    """loadgen's broker-CPU meter, also starting and stopping the active :class:`Meter`."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(pid)
        m = Meter.active
        if m is not None:
            m.hook_used = True
            m.begin()

    def stop(self) -> float | None:
        m = Meter.active
        if m is not None:
            m.end()
        return super().stop()


def _established_inodes(port: int) -> set[int]:
    """Socket inodes of established TCP connections whose local port is ``port``."""
    out: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "01" and int(f[1].rsplit(":", 1)[1], 16) == port:
                out.add(int(f[9]))
    return out


def connections_per_process(procs: dict[str, int], port: int) -> dict[str, int]:
    """How many client connections each process holds on ``port``."""
    est = _established_inodes(port)
    out: dict[str, int] = {}
    for name, pid in procs.items():
        n = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and int(link[8:-1]) in est:
                        n += 1
        out[name] = n
    return out


# --------------------------------------------------------------------------------------------
# cross-node fan-in: loadgen's publisher and subscriber processes on two different ports


def cross_fan_in(pub_port: int, sub_port: int, qos: int, *, count: int, cap_s: float,
                 redis: RedisServer, sub_node: str, progress: Say | None = None,
                 publishers: int = 8) -> Json:
    """``loadgen.fan_in`` with the publishers on ``pub_port`` and the subscriber on
    ``sub_port``: the same worker processes and the same figure (messages received / (last
    delivery - first PUBLISH written))."""
    per_pub = max(1, count // publishers)
    topics = [f"bench/in/{p:02d}" for p in range(publishers)]
    flt = "bench/in/+"
    workers: list[loadgen.Worker] = []
    try:
        sub = loadgen.Worker("sub0", loadgen.subscriber_worker, sub_port, 1, 0, [(flt, qos)],
                             topics[0], qos, publishers, per_pub, True)
        workers.append(sub)
        sub.recv("ready", 60)
        deadline = time.monotonic() + 5   # the route is in Redis once SUBACK is out
        while not redis.has_route(sub_node, flt) and time.monotonic() < deadline:
            time.sleep(0.01)
        pub = loadgen.Worker("pub0", loadgen.publisher_worker, pub_port,
                             list(range(publishers)), topics, qos, per_pub, WINDOW, True)
        workers.append(pub)
        pub.recv("ready", 60)
        meter = Meter.active
        if meter is not None:
            meter.hook_used = True
            meter.begin()
        t0 = time.monotonic()
        sub.send("go", cap_s + 20)
        pub.send("go", cap_s)
        pres = pub.recv("result", cap_s + 40)[1]
        sent_by_pub = [0] * publishers
        for p, s in pres["sent"].items():
            sent_by_pub[p] = s
        if progress:
            progress(f"published {sum(sent_by_pub):,} in {pres['wall_s']:.1f} s; "
                     "draining the subscriber")
        sub.send("expect", sent_by_pub)
        sres = sub.recv("result", cap_s + 60)[1]
        wall = time.monotonic() - t0
        if meter is not None:
            meter.end()
    finally:
        loadgen.stop_all(workers)
    c = sres["clients"][0]
    e2e = (c["last_ns"] - pres["first_ns"]) / 1e9 if c["last_ns"] else 0.0
    span = (c["last_ns"] - c["first_ns"]) / 1e9 if c["first_ns"] else 0.0
    return {
        "value": c["received"] / e2e if e2e > 0 else 0.0, "unit": "msg/s",
        "seconds": round(e2e, 3),
        "delivery_span_rate": c["received"] / span if span > 0 else 0.0,
        "published": sum(sent_by_pub), "acked": pres["acked"] if qos else None,
        "expected_deliveries": sum(sent_by_pub), "received": c["received"],
        "loss": c["loss"], "dups": c["dups"], "unexpected": c["unexpected"],
        "capped": pres["capped"],
        "cpu": {"pub0": round(pres["cpu_s"] / wall, 2), "sub0": round(sres["cpu_s"] / wall, 2)},
    }


# --------------------------------------------------------------------------------------------
# runs


def _count(args: argparse.Namespace, key: str) -> int:
    return int(args.counts[key])


def _scenario(key: str, probe: loadgen.Probe, count: int, progress: Say) -> Json:
    if key == "fanin_q0":
        return loadgen.fan_in(probe, 0, count=count, cap_s=CAP_S, progress=progress)
    if key == "fanin_q1":
        return loadgen.fan_in(probe, 1, count=count, cap_s=CAP_S, progress=progress)
    if key == "fanout_q0":
        return loadgen.fan_out(probe, 0, count=count, cap_s=CAP_S, progress=progress)
    raise ValueError(key)


def _finish(entry: Json, nodes: Sequence[Node], redis: RedisServer) -> None:
    """Stop the brokers, note what they logged, clean up, flush Redis."""
    entry["broker_stop"] = {}
    for n in nodes:
        st = n.stop()
        entry["broker_stop"][n.node] = st
        if st.get("killed"):
            entry.setdefault("warnings", []).append(
                f"{n.node} did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM (killed)")
        problems = n.log_problems()
        if problems:
            entry.setdefault("log_tails", {})[n.node] = problems
        n.cleanup()
    try:
        redis.flush()
    except Exception as exc:  # noqa: BLE001 - reported with the run
        entry.setdefault("warnings", []).append(f"FLUSHALL failed: {exc}")


def _measure(entry: Json, meter: Meter, res: Json) -> None:
    entry["result"] = res
    entry |= meter.report()
    stats = entry["redis"]
    received = res.get("received") or 0
    published = res.get("published") or 0
    cpu = entry["cpu_s"]
    entry["redis_cpu_ms_per_1k_msg"] = (round(cpu["redis"] / published * 1e6, 2)
                                        if published else None)
    # per XADD entry (an entry holds up to 256 forwarded messages)
    entry["redis_cpu_ms_per_1k_forwarded"] = (round(cpu["redis"] / stats["xadd"] * 1e6, 2)
                                              if stats["xadd"] > 100 else None)
    entry["redis_info_cpu_ms_per_1k_forwarded"] = (
        round(stats["info_cpu_s"] / stats["xadd"] * 1e6, 2) if stats["xadd"] > 100 else None)
    entry["forwarded"] = stats["xadd"]
    # messages per inbox entry, if every message published was forwarded (cross runs)
    entry["forwarded_share"] = round(published / stats["xadd"], 1) if stats["xadd"] else None
    broker = sum(v for k, v in cpu.items() if k != "redis")
    entry["broker_cpu_us_per_msg"] = round(broker / received * 1e6, 2) if received else None
    entry["cpu_us_per_msg"] = ({k: round(v / received * 1e6, 2) for k, v in cpu.items()}
                               if received else {})


def run_one(config: str, key: str, redis: RedisServer, args: argparse.Namespace,
            say: Say) -> Json:
    """One scenario against a fresh broker in configuration ``config``."""
    count = _count(args, key)
    entry: Json = {"config": config, "scenario": key, "count": count}
    node = Node(None if config == "single" else redis, NODE,
                workers=WORKERS if config == "workers-2" else 1)
    try:
        node.start()
        entry["pids"] = dict(node.procs)
        meter = Meter({**node.procs, "redis": redis.pid}, redis)
        conns: dict[str, int] = {}

        def progress(msg: str) -> None:
            if len(node.procs) > 1 and not conns:  # the clients are all connected now
                conns.update(connections_per_process(node.procs, node.port))
            say(f"    {msg}")

        probe = loadgen.Probe(node.port, node.pid if config != "workers-2" else None)
        with meter.hooked():
            res = _scenario(key, probe, count, progress)
        _measure(entry, meter, res)
        if conns:
            entry["connections"] = conns
        if not node.alive():
            entry["error"] = "a broker process exited during the run"
    except (loadgen.LoadgenError, BenchError, OSError) as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        _finish(entry, [node], redis)
    return entry


def run_cross(key: str, redis: RedisServer, args: argparse.Namespace, say: Say) -> Json:
    """Two single-process nodes, a and b: publishers on a, the subscriber on b."""
    qos = 0 if key == "cross_q0" else 1
    count = _count(args, key)
    entry: Json = {"config": "cross", "scenario": key, "count": count}
    a, b = Node(redis, "a"), Node(redis, "b")
    try:
        a.start()
        b.start()
        entry["pids"] = {"a": a.pid, "b": b.pid}
        meter = Meter({"a": a.pid, "b": b.pid, "redis": redis.pid}, redis)
        with meter.hooked():
            res = cross_fan_in(a.port, b.port, qos, count=count, cap_s=CAP_S, redis=redis,
                               sub_node="b", progress=lambda m: say(f"    {m}"))
        _measure(entry, meter, res)
        if not (a.alive() and b.alive()):
            entry["error"] = "a broker process exited during the run"
    except (loadgen.LoadgenError, BenchError, OSError) as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        _finish(entry, [a, b], redis)
    return entry


def headline(entry: Json) -> str:
    if "error" in entry:
        return f"FAILED: {entry['error']}"
    res = entry["result"]
    unit = "deliveries/s" if entry["scenario"] == "fanout_q0" else "msg/s"
    bad = res["loss"] or res["dups"] or res.get("unexpected")
    cores = ", ".join(f"{n} {c:.2f}" for n, c in entry["cores"].items())
    parts = [f"{res['value']:,.0f} {unit}", f"loss {res['loss']}, dups {res['dups']}"
             + ("  <-- LOSS/DUPLICATES" if bad else ""),
             f"cpu (cores) {cores}"]
    if entry["forwarded"]:
        parts.append(f"{entry['forwarded']:,} inbox entries")
    if entry["config"] == "cross":
        parts.append("loadgen " + ", ".join(f"{n} {c:.2f}" for n, c in res["cpu"].items()))
    ping = entry.get("redis_ping") or {}
    if ping.get("max_ms") is not None:
        parts.append(f"Redis PING max {ping['max_ms']:.1f} ms")
    if entry.get("connections"):
        parts.append("conns " + "/".join(str(v) for v in entry["connections"].values()))
    if res.get("capped"):
        parts.append("TIME CAP HIT")
    return "; ".join(parts) + "".join(f"  WARNING: {w}" for w in entry.get("warnings", []))


# --------------------------------------------------------------------------------------------
# summary, table, chart


def _ok(r: Json) -> bool:
    return "result" in r and "error" not in r


def _clean(r: Json) -> bool:
    """A run whose figures count: it finished, lost nothing and duplicated nothing (a rate
    from a run that lost messages is not a rate of the same work)."""
    res = r.get("result") or {}
    return _ok(r) and not (res["loss"] or res["dups"] or res.get("unexpected"))


def _median(vals: Sequence[float]) -> float | None:
    return statistics.median(vals) if vals else None


def _cell(runs: Sequence[Json], config: str, key: str) -> Json:
    mine = [r for r in runs if r["config"] == config and r["scenario"] == key]
    good = [r for r in mine if _clean(r)]
    vals = [r["result"]["value"] for r in good]

    def med(field: str) -> float | None:
        return _median([r[field] for r in good if r.get(field) is not None])

    cores: dict[str, list[float]] = {}
    per_msg: dict[str, list[float]] = {}
    for r in good:
        for n, c in r["cores"].items():
            cores.setdefault(n, []).append(c)
        for n, c in r["cpu_us_per_msg"].items():
            per_msg.setdefault(n, []).append(c)
    return {
        "values": [round(v) for v in vals], "median": round(m) if (m := _median(vals)) else None,
        "loss": sum(r["result"]["loss"] for r in mine if "result" in r),
        "dups": sum(r["result"]["dups"] for r in mine if "result" in r),
        "unexpected": sum(r["result"].get("unexpected") or 0 for r in mine if "result" in r),
        "capped": any(r["result"].get("capped") for r in mine if "result" in r),
        "failed_runs": sum(1 for r in mine if "error" in r),
        "lossy_runs": sum(1 for r in mine if _ok(r) and not _clean(r)),
        "runs": len(mine),
        "forwarded_share": med("forwarded_share"),
        "redis_cpu_ms_per_1k_msg": med("redis_cpu_ms_per_1k_msg"),
        "redis_cpu_ms_per_1k_forwarded": med("redis_cpu_ms_per_1k_forwarded"),
        "redis_info_cpu_ms_per_1k_forwarded": med("redis_info_cpu_ms_per_1k_forwarded"),
        "broker_cpu_us_per_msg": med("broker_cpu_us_per_msg"),
        "redis_calls_per_msg": _median([r["redis"]["calls"] / r["result"]["published"]
                                        for r in good if r["result"]["published"]]),
        "redis_cmd_usec_per_msg": _median([r["redis"]["usec"] / r["result"]["published"]
                                           for r in good if r["result"]["published"]]),
        "cores": {n: _median(v) for n, v in cores.items()},
        "cpu_us_per_msg": {n: _median(v) for n, v in per_msg.items()},
        "ping_max_ms": max((r["redis_ping"]["max_ms"] for r in good
                            if (r.get("redis_ping") or {}).get("max_ms") is not None),
                           default=None),
    }


def _ratio(row: Json, num: str, den: str) -> float | None:
    n = row.get(num, {}).get("median")
    d = row.get(den, {}).get("median")
    return round(n / d, 3) if n and d else None


def summarize(runs: Sequence[Json], scenarios: Sequence[str], configs: Sequence[str],
              cross: Sequence[str]) -> Json:
    rows = []
    for key in scenarios:
        row: Json = {"scenario": key, "label": LABELS[key]}
        for c in configs:
            row[c] = _cell(runs, c, key)
        by_round: dict[int, dict[str, float]] = {}
        for r in runs:
            if r["scenario"] == key and _clean(r):
                by_round.setdefault(r["round"], {})[r["config"]] = r["result"]["value"]

        row["w2_over_c1"] = _ratio(row, "workers-2", "cluster-1")
        row["w2_over_single"] = _ratio(row, "workers-2", "single")
        row["c1_over_single"] = _ratio(row, "cluster-1", "single")
        row["round_w2_over_c1"] = [round(v["workers-2"] / v["cluster-1"], 3)
                                   for _, v in sorted(by_round.items())
                                   if v.get("cluster-1") and "workers-2" in v]
        row["round_w2_over_single"] = [round(v["workers-2"] / v["single"], 3)
                                       for _, v in sorted(by_round.items())
                                       if v.get("single") and "workers-2" in v]
        ck = CROSS_OF.get(key)
        row["cross"] = _cell(runs, "cross", ck) if ck is not None and ck in cross else None
        rows.append(row)
    cross_rows = [{"scenario": k, "label": LABELS[k], **_cell(runs, "cross", k)} for k in cross]
    return {"rows": rows, "cross": cross_rows}


def _n(v: float | None, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _lossdup(cells: Sequence[Json | None]) -> str:
    parts = []
    for c in cells:
        if c is None:
            continue
        flag = "!" if c["loss"] or c["dups"] or c["unexpected"] else ""
        fail = f" ({c['failed_runs']} failed)" if c["failed_runs"] else ""
        lossy = (f" ({c['lossy_runs']} of {c['runs']} runs)" if c["lossy_runs"] else "")
        parts.append(f"{c['loss']}/{c['dups']}{flag}{lossy}{fail}")
    return " · ".join(parts)


def _med(cell: Json) -> str:
    """The median; with a note when runs were left out (failed, or lost messages)."""
    out = _n(cell["median"])
    left = cell["failed_runs"] + cell["lossy_runs"]
    return out + (f" ({left} of {cell['runs']} runs left out)" if left else "")


def table_rows(summary: Json, configs: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    head = (["scenario"] + [f"{c} (msg/s)" for c in configs]
            + ["workers-2 / cluster-1", "workers-2 / single", "cluster-1 / single",
               "cross-node (msg/s)", "Redis CPU ms per 1k msg (cross-node)",
               "loss/dups (" + ", ".join([*configs, "cross"]) + ")"])
    rows = []
    for row in summary["rows"]:
        cross = row["cross"]
        label = row["label"] + (" [deliveries/s]" if row["scenario"] == "fanout_q0" else "")
        rows.append([label] + [_med(row[c]) for c in configs]
                    + [_x(row["w2_over_c1"]), _x(row["w2_over_single"]),
                       _x(row["c1_over_single"]),
                       _n(cross["median"]) if cross else "-",
                       _n(cross["redis_cpu_ms_per_1k_msg"], ".1f") if cross else "-",
                       _lossdup([row[c] for c in configs] + [cross])])
    return head, rows


def _per_msg(cell: Json) -> str:
    per = cell["cpu_us_per_msg"]
    brokers_ = [f"{n} {_n(v, '.1f')}" for n, v in per.items() if n != "redis"]
    total = (f" ({_n(cell['broker_cpu_us_per_msg'], '.1f')})" if len(brokers_) > 1 else "")
    return ", ".join(brokers_) + total + f", redis {_n(per.get('redis'), '.2f')}"


def _fwd(cell: Json) -> str:
    a, b = cell["redis_cpu_ms_per_1k_forwarded"], cell["redis_info_cpu_ms_per_1k_forwarded"]
    return "-" if a is None else f"{a:.1f}; {_n(b, '.1f')}"


def detail_rows(summary: Json, configs: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "msg/s", "CPU (cores): brokers, Redis", "CPU us/msg: brokers (sum), Redis",
            "inbox entries: published / XADD",
            "Redis CPU ms per 1k XADD (/proc; INFO cpu)",
            "Redis commands per msg", "Redis cmd time us/msg", "Redis PING max (ms)"]
    rows = []
    for row in summary["rows"]:
        for c in configs:
            if c == "single":
                continue
            cell = row[c]
            rows.append([f"{row['scenario']} {c}", _n(cell["median"]),
                         ", ".join(f"{n} {_n(v, '.2f')}" for n, v in cell["cores"].items()),
                         _per_msg(cell),
                         _n(cell["forwarded_share"], ".1f"),
                         _fwd(cell),
                         _n(cell["redis_calls_per_msg"], ".2f"),
                         _n(cell["redis_cmd_usec_per_msg"], ".2f"),
                         _n(cell["ping_max_ms"], ".1f")])
    for cell in summary["cross"]:
        rows.append([f"{cell['scenario']} (a -> b)", _n(cell["median"]),
                     ", ".join(f"{n} {_n(v, '.2f')}" for n, v in cell["cores"].items()),
                         _per_msg(cell),
                     _n(cell["forwarded_share"], ".1f"),
                         _fwd(cell),
                     _n(cell["redis_calls_per_msg"], ".2f"),
                     _n(cell["redis_cmd_usec_per_msg"], ".2f"),
                     _n(cell["ping_max_ms"], ".1f")])
    return head, rows


def text_table(head: list[str], rows: list[list[str]]) -> str:
    allr = [head, *rows]
    widths = [max(len(r[i]) for r in allr) for i in range(len(head))]
    lines = []
    for n, r in enumerate(allr):
        lines.append("  ".join(c.ljust(w) if i == 0 or i == len(r) - 1 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|---|" + "|".join("---:" for _ in head[1:-1]) + "|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(meta: Json, summary: Json, configs: Sequence[str], runs: Sequence[Json]) -> str:
    c = meta["counts"]
    lines = [
        (f"Cluster mode over Redis: one broker process without (`single`) and with a `cluster` "
         f"section (`cluster-1`), and `--workers 2` (two nodes on one port); "
         f"{meta['rounds']} round{'s' if meta['rounds'] != 1 else ''}, medians; "
         f"fan-in {c['fanin_q0']:,} (QoS 0) / {c['fanin_q1']:,} (QoS 1) messages, fan-out "
         f"{c['fanout_q0']:,} messages x 50 subscribers, cross-node {c['cross_q0']:,} / "
         f"{c['cross_q1']:,}. Redis {meta['versions']['redis']} on the same machine. "
         f"{meta['machine_line']}."),
        "",
        md_table(*table_rows(summary, configs)),
        "",
        ("Per run type (medians): CPU as a share of one core over loadgen's measuring window; "
         "a node writes up to 256 messages for another node in one inbox entry (one XADD); "
         "\"published / XADD\" is messages per entry where all were forwarded (cross)."),
        "",
        md_table(*detail_rows(summary, configs)),
    ]
    bad = [r for r in runs if _ok(r) and not _clean(r)]
    failed = [r for r in runs if not _ok(r)]
    if bad or failed:
        lines += ["", "Runs left out of the medians:", ""]
        lines += [f"- round {r['round']} {r['scenario']} {r['config']}: received "
                  f"{r['result']['received']:,} of {r['result']['expected_deliveries']:,}, loss "
                  f"{r['result']['loss']:,}, dups {r['result']['dups']:,}" for r in bad]
        lines += [f"- round {r['round']} {r['scenario']} {r['config']}: FAILED: {r['error']}"
                  for r in failed]
    return "\n".join(lines) + "\n"


def chart(summary: Json, configs: Sequence[str], meta: Json, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 1.4])
    rows = summary["rows"]
    colors = {"single": "tab:gray", "cluster-1": "tab:blue", "workers-2": "tab:orange"}
    width = 0.8 / max(1, len(configs))
    xs = list(range(len(rows)))
    top = 1.0
    for k, c in enumerate(configs):
        rel, labels = [], []
        for row in rows:
            base = row["single"]["median"] if "single" in configs else None
            v = row[c]["median"]
            r = v / base if v and base else 0.0
            rel.append(r)
            labels.append(f"{r:.2f}x\n{v / 1000:,.0f}k" if v else "n/a")
            top = max(top, r)
        bars = ax.bar([x + (k - (len(configs) - 1) / 2) * width for x in xs], rel, width,
                      color=colors.get(c, None), label=c)
        ax.bar_label(bars, labels=labels, fontsize="small")
    ax.axhline(1.0, color="black", lw=0.7, alpha=0.5)
    ax.set_xticks(xs, [row["label"].replace(" (", "\n(") for row in rows])
    ax.set_ylabel("msg/s relative to single (median)")
    ax.set_title("single node vs cluster node vs --workers 2 (labels: ratio, msg/s)")
    ax.set_ylim(0, top * 1.3)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", ncols=len(configs))
    cross = summary["cross"]
    if cross:
        vals = [c["median"] or 0 for c in cross]
        bars = ax2.bar(range(len(cross)), vals, 0.6, color="tab:green")
        ax2.bar_label(bars, labels=[
            f"{v:,.0f}\nRedis {c['cores'].get('redis') or 0:.2f} core\n"
            f"{c['redis_cpu_ms_per_1k_msg'] or 0:.1f} ms/1k msg"
            for v, c in zip(vals, cross, strict=True)], fontsize="small")
        ax2.set_xticks(range(len(cross)), [f"QoS {c['scenario'][-1]}" for c in cross])
        ax2.set_ylim(0, max(vals + [1]) * 1.45)
        ax2.set_ylabel("msg/s a -> Redis -> b (median)")
        ax2.set_title("cross-node fan-in, a -> Redis -> b")
        ax2.grid(True, axis="y", alpha=0.3)
    else:
        ax2.set_axis_off()
    fig.suptitle(f"cluster mode, {meta['machine_line']}", fontsize="small")
    fig.savefig(os.fspath(path), format="png")


# --------------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick 1)")
    p.add_argument("--quick", action="store_true", help="1 round, small counts (< 1 minute)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma-separated: " + ",".join(SCENARIOS))
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help="comma-separated: " + ",".join(CONFIGS))
    p.add_argument("--no-cross", action="store_true", help="leave out the cross-node runs")
    p.add_argument("--count", action="append", default=[], metavar="KEY=N",
                   help="messages for one scenario, e.g. fanin_q0=500000 (repeatable)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"),
                   help="folder for cluster.json/.md/.png (--quick: cluster-quick.*)")
    args = p.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    for s in args.scenario_list:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    for c in args.config_list:
        if c not in CONFIGS:
            p.error(f"unknown config {c!r}")
    args.cross_list = [] if args.no_cross else list(CROSS)
    args.counts = dict(QUICK if args.quick else FULL)
    for item in args.count:
        key, _, n = item.partition("=")
        if key not in args.counts or not n.isdigit() or not 8 <= int(n) <= 2_000_000:
            p.error(f"--count {item!r}: KEY=N with KEY one of {', '.join(args.counts)}, "
                    "N in 8..2,000,000")
        args.counts[key] = int(n)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if not 1 <= args.rounds <= 20:
        p.error("--rounds must be in 1..20")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from . import report
    from .run import machine, stopwatch

    args = parse_args(argv)
    t_start = time.monotonic()

    say = stopwatch()

    if not Path(REDIS_SERVER).exists():
        print(f"{REDIS_SERVER} missing (Debian: apt-get install redis-server)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-redis-"))
    redis = RedisServer(tmp)
    runs: list[Json] = []
    try:
        redis.start()
        counts = dict(args.counts)
        meta: Json = {
            "what": ("cluster mode over Redis: single vs cluster-1 vs --workers 2, same run, "
                     "rounds interleaved; cross-node fan-in between two nodes"),
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine(),
            "versions": {"ours": brokers.versions()["ours"], "redis": redis.version()},
            "rounds": args.rounds, "quick": args.quick, "counts": counts, "cap_s": CAP_S,
            "configs": args.config_list, "scenarios": args.scenario_list,
            "cross": args.cross_list, "workers": WORKERS,
            "broker_settings": {"max_inflight_messages": brokers.MAX_INFLIGHT,
                                "max_queued_messages": brokers.MAX_QUEUED,
                                "max_connection_rate_per_address": 0,
                                "sys_interval": 0, "log_level": "WARNING"},
            "redis_args": "--save '' --appendonly no (no persistence), loopback",
        }
        meta["machine_line"] = report.machine_line(meta)
        say(f"machine: {meta['machine_line']}; redis {meta['versions']['redis']} on port "
            f"{redis.port} (pid {redis.pid})")
        redis.flush()
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(args.config_list)
            order = args.config_list[shift:] + args.config_list[:shift]
            for key in args.scenario_list:
                for config in order:
                    label = f"round {rnd}/{args.rounds} {key} {config}"
                    say(f"{label}: ...")
                    t0 = time.monotonic()
                    entry = run_one(config, key, redis, args, say)
                    entry["round"] = rnd
                    entry["seconds"] = round(time.monotonic() - t0, 2)
                    runs.append(entry)
                    say(f"{label}: {headline(entry)}")
            for key in args.cross_list:
                label = f"round {rnd}/{args.rounds} {key} (a -> b)"
                say(f"{label}: ...")
                t0 = time.monotonic()
                entry = run_cross(key, redis, args, say)
                entry["round"] = rnd
                entry["seconds"] = round(time.monotonic() - t0, 2)
                runs.append(entry)
                say(f"{label}: {headline(entry)}")
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(runs, args.scenario_list, args.config_list, args.cross_list)
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / ("cluster-quick" if args.quick else "cluster")
    md = markdown(meta, summary, args.config_list, runs)
    stem.with_suffix(".json").write_text(json.dumps(
        {**meta, "summary": summary, "runs": runs}, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(md)
    try:
        chart(summary, args.config_list, meta, stem.with_suffix(".png"))
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        say(f"chart failed: {exc}")
    print()
    print(text_table(*table_rows(summary, args.config_list)))
    print()
    print(text_table(*detail_rows(summary, args.config_list)))
    print()
    bad = [r for r in runs if "result" in r and (r["result"]["loss"] or r["result"]["dups"]
                                                 or r["result"].get("unexpected"))]
    for r in bad:
        print(f"LOSS/DUPLICATES: round {r['round']} {r['scenario']} {r['config']}: loss "
              f"{r['result']['loss']}, dups {r['result']['dups']}, unexpected "
              f"{r['result'].get('unexpected')}")
    errors = [r for r in runs if "error" in r]
    for r in errors:
        print(f"FAILED: round {r['round']} {r['scenario']} {r['config']}: {r['error']}")
    for r in runs:
        for w in r.get("warnings", []):
            print(f"WARNING: round {r['round']} {r['scenario']} {r['config']}: {w}")
        for n, t in r.get("log_tails", {}).items():
            print(f"LOG ({n}, round {r['round']} {r['scenario']} {r['config']}):\n{t}")
    print(f"wrote {stem}.json, .md, .png in {meta['elapsed_s']:.0f} s")
    return 1 if errors or bad else 0


if __name__ == "__main__":
    sys.exit(main())
