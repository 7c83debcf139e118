"""Bridge throughput, edge -> cloud: Mosquitto's bridge and ours, side by side in the same run.

    python -m benchmarks.bridge [--rounds 3] [--count 50000] [--qos 0,1] [--publishers 8]
                                [--window 100] [--payload 100] [--quick]
                                [--ours-rev working] [--out benchmarks/results/bridge]
    python -m benchmarks.bridge --redraw benchmarks/results/bridge.json

Two sides, each an *edge* broker bridging ``bench/#`` out to a *cloud* Mosquitto
(MQTT 3.1.1, ``cleansession false``, ``try_private``, the rule's QoS = the run's QoS):

* ``mosquitto``: Mosquitto edge -> Mosquitto cloud (Mosquitto's own bridge, a ``connection``
  block in mosquitto.conf);
* ``ours``: our broker as the edge (a ``bridges:`` section) -> Mosquitto cloud.

Every run gets a fresh cloud and a fresh edge: nothing carries over from one run to the next
(the bridge's persistent session at the cloud, queued or retained messages, the cloud's
memory), and both sides meet an identical, empty cloud. Both edges have the settings every
benchmark uses (``benchmarks/brokers.py``: in-flight window 20 towards clients, queue limit
1,000,000, no $SYS, WARNING log). The bridge's own window towards the cloud is each broker's
default for a 3.1.1 bridge: Mosquitto's is its ``max_inflight_messages`` (20), ours its
``max_inflight`` default for a 3.x remote, 20 too (3.1.1 has no Receive Maximum; see
docs/bridges.md); ``--mosquitto-inflight`` changes
Mosquitto's. Ours runs from this checkout as it is (``--ours-rev working``, the default) or
from a git revision exported the way ``benchmarks/ab.py`` does it (``--ours-rev HEAD``).

Before measuring, probes on ``bench/warmup`` are published at the edge until one reaches the
cloud (the bridge is up end to end). Then the load generator of the other benchmarks
(``benchmarks/loadgen.py``, ``benchmarks/clients.py``): ``--publishers`` publishers
(``bench/in/00``..) in one process, connected to the edge, publish ``--count`` messages in all
(QoS 1: each keeps ``--window`` PUBLISH in flight, so the edge, not the publisher, sets the
pace), and one subscriber of ``bench/in/+`` at the cloud counts every (publisher, sequence)
it gets: loss and duplicates are exact.

* **msg/s** = distinct messages that reached the cloud subscriber / (its last arrival - the
  first PUBLISH written at the edge): edge in to cloud out, the bridge's whole path.
* **edge in** = messages the publishers got through / their own time (QoS 1: until the last
  PUBACK from the edge). Above msg/s, the edge took messages faster than its bridge passed
  them on (its backlog grew); **lag** = last arrival at the cloud - the publishers' last
  write/ack.
* **loss** = messages published - distinct ones received at the cloud. QoS 1 must be 0 (a
  run with QoS 1 loss makes the exit status 1); QoS 0 loss is reported.
* CPU of the edge and the cloud (from /proc, share of one core over the run) and the edge's
  peak RSS (sampled every second) are kept per run.

Rounds interleave: each round runs every QoS on both sides, back to back, the side that goes
first alternating from round to round (A/B, then B/A, ...), so drift of this shared machine
hits both alike. The table gives the medians, ours / Mosquitto of the medians, and the ratio
of each round's pair. Bounded throughout: the publishers stop at ``--cap`` seconds, the
subscriber at ``--cap + --drain`` seconds or ``--grace`` seconds after the publishers finished
with nothing more arriving. Writes ``OUT.json``, ``OUT.md`` and ``OUT.png``
(``--quick``: ``bridge-quick.*``, git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait as wait_conns
from pathlib import Path
from typing import Any

import yaml

from . import brokers, loadgen, wire
from .clients import SubClient, Tally, open_client

Json = dict[str, Any]
Say = Callable[[str], None]

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("mosquitto", "ours")
LABELS = {"mosquitto": "Mosquitto -> Mosquitto", "ours": "ours -> Mosquitto"}
CLIENT_ID = "edge"              # the bridge's client id at the cloud (both sides)
RESTART = (1, 5)                # reconnect back-off base and cap, seconds (both sides)
FULL = {"count": 50_000, "rounds": 3}
QUICK = {"count": 5_000, "rounds": 1}
# The subscriber's fast path (clients.SubClient) decodes fixed-size frames whose remaining
# length fits one byte (< 128): with `bench/in/NN` at QoS 1 that leaves 112 payload bytes.
MAX_PAYLOAD = 112


# --------------------------------------------------------------------------------------------
# Brokers: a cloud (Mosquitto) and an edge (Mosquitto or ours) bridging to it


def mosquitto_bridge_block(cloud_port: int, qos: int) -> str:
    """The ``connection`` block of the Mosquitto edge."""
    return (
        "\n# bridge to the cloud (benchmarks/bridge.py)\n"
        "connection cloud\n"
        f"address 127.0.0.1:{cloud_port}\n"
        f"remote_clientid {CLIENT_ID}\n"
        f"topic bench/# out {qos}\n"
        "bridge_protocol_version mqttv311\n"
        "cleansession false\n"
        "try_private true\n"
        "notifications true\n"
        "keepalive_interval 60\n"
        f"restart_timeout {RESTART[0]} {RESTART[1]}\n")


def ours_bridge_config(cloud_port: int, qos: int) -> Json:
    """The ``bridges:`` section of our edge: the same options as Mosquitto's block."""
    return {"bridges": {"cloud": {
        "addresses": [f"127.0.0.1:{cloud_port}"],
        "protocol": "mqttv311",
        "client_id": CLIENT_ID,
        "clean_session": False,
        "try_private": True,
        "notifications": True,
        "keepalive": 60,
        "restart_timeout": list(RESTART),
        "topics": [{"pattern": "bench/#", "direction": "out", "qos": qos}],
        "queue": {"max_messages": 1_000_000, "full_policy": "drop_oldest"},
    }}}


def start_mosquitto_edge(cloud_port: int, qos: int, inflight: int,
                         timeout: float = 20.0) -> brokers.BrokerProcess:
    """A fresh Mosquitto with the benchmark settings plus the bridge block (as
    :func:`benchmarks.brokers.start`, which has no way to add a block)."""
    brokers.raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="bench-bridge-mosquitto-"))
    last = ""
    for _ in range(3):  # the free port may be taken between probing and binding
        port = brokers.free_port()
        argv = brokers.command("mosquitto", port, workdir, max_inflight=inflight)
        conf = workdir / "mosquitto.conf"
        conf.write_text(conf.read_text() + mosquitto_bridge_block(cloud_port, qos))
        log = workdir / "broker.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=workdir)
        bp = brokers.BrokerProcess("mosquitto", port, proc, workdir, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if brokers.accepts(port):
                return bp
            time.sleep(0.05)
        bp.stop(2)
        last = f"exit {proc.returncode}; log:\n{bp.log_tail()}"
    shutil.rmtree(workdir, ignore_errors=True)
    raise brokers.BrokerError(f"the Mosquitto edge did not start ({last})")


def start_ours_edge(cloud_port: int, qos: int, source: Path | None = None
                    ) -> brokers.BrokerProcess:
    """A fresh broker of ours from a config holding only the bridge; the benchmark settings
    (listener, no $SYS, WARNING log, window 20, queue 1,000,000) are laid over it."""
    src = Path(tempfile.mkdtemp(prefix="bench-bridge-ourscfg-"))
    try:
        cfg = src / "edge.yaml"
        cfg.write_text(yaml.safe_dump(ours_bridge_config(cloud_port, qos), sort_keys=False))
        return brokers.start("ours", config=cfg, bench_limits=True, persistence="memory",
                             source=source)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def start_edge(side: str, cloud_port: int, qos: int, args: argparse.Namespace
               ) -> brokers.BrokerProcess:
    if side == "mosquitto":
        return start_mosquitto_edge(cloud_port, qos, args.mosquitto_inflight)
    if side == "ours":
        return start_ours_edge(cloud_port, qos, args.ours_source)
    raise ValueError(f"unknown side {side!r}")


def _config_text(bp: brokers.BrokerProcess) -> str:
    for name in ("mosquitto.conf", "mqttbroker.yaml"):
        path = bp.workdir / name
        if path.exists():
            return path.read_text()
    return ""


# --------------------------------------------------------------------------------------------
# The bridge is up: a probe from the edge reaches the cloud


def _read_until(sock: socket.socket, kind: int, deadline: float) -> None:
    buf = b""
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        if not data:
            raise ConnectionError("closed by the broker")
        buf += data
        frames, _ = wire.split_frames(buf)
        if any(first >> 4 == kind for first, _, _ in frames):
            return
    raise TimeoutError(f"no packet of type {kind}")


def wait_bridge(edge_port: int, cloud_port: int, timeout: float = 30.0) -> float:
    """Publish QoS 0 probes on ``bench/warmup`` at the edge, one every 0.2 s, until one
    arrives at a subscriber at the cloud; return the seconds that took. The measuring
    subscriber listens on ``bench/in/+`` only, so a late probe does not count."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    tag = f"{os.getpid()}-{time.monotonic_ns() % 1_000_000}"
    with contextlib.ExitStack() as stack:
        sub = stack.enter_context(socket.create_connection(("127.0.0.1", cloud_port), 5))
        pub = stack.enter_context(socket.create_connection(("127.0.0.1", edge_port), 5))
        for s in (sub, pub):
            s.settimeout(0.2)
        sub.sendall(wire.connect(f"bench-probe-sub-{tag}"))
        _read_until(sub, wire.CONNACK, deadline)
        sub.sendall(wire.subscribe(1, [("bench/warmup", 0)]))
        _read_until(sub, wire.SUBACK, deadline)
        pub.sendall(wire.connect(f"bench-probe-pub-{tag}"))
        _read_until(pub, wire.CONNACK, deadline)
        while time.monotonic() < deadline:
            pub.sendall(wire.publish("bench/warmup", b"probe"))
            try:
                _read_until(sub, wire.PUBLISH, min(deadline, time.monotonic() + 0.2))
            except TimeoutError:
                continue
            for s in (sub, pub):
                with contextlib.suppress(OSError):
                    s.sendall(wire.DISCONNECT_PACKET)
            time.sleep(0.2)  # probes still on their way pass before the clock starts
            return time.monotonic() - t0
    raise TimeoutError(f"no probe crossed the bridge within {timeout:.0f} s")


# --------------------------------------------------------------------------------------------
# The subscriber at the cloud (a worker process, loadgen's protocol)


async def cloud_subscriber(ch: loadgen.Channel, port: int, qos: int, topic: str, npubs: int,
                           per_pub: int, grace_s: float) -> None:
    """One subscriber of ``bench/in/+``; reports its count every second; done when it has
    everything, ``grace_s`` after the publishers finished with nothing more arriving, or at
    the deadline of "go"."""
    layout = wire.PublishLayout(topic, qos)
    tally = Tally(npubs, per_pub)
    client = await open_client(
        lambda: SubClient(f"bench-cloud-sub-{os.getpid()}", layout, tally), port)
    assert isinstance(client, SubClient)
    await client.handshake()
    await client.subscribe([("bench/in/+", qos)])
    ch.send("ready", {})
    _, deadline_s = await ch.expect("go")
    cpu0, t0 = loadgen.cpu_seconds(), time.monotonic()
    sent = [per_pub] * npubs         # until the publishers say what they sent
    t_final: float | None = None
    next_report = t0 + 1.0
    timed_out = False
    while True:
        try:
            msg = await ch.get(timeout=0.02)
            if msg[0] == "expect":
                sent, t_final = list(msg[1]), time.monotonic()
            elif msg[0] == "close":
                break
        except TimeoutError:
            pass
        want = sum(sent)
        if tally.received >= want and tally.unique(sent) >= want:
            break
        now = time.monotonic()
        if now >= next_report:
            ch.send("progress", {"received": tally.received})
            next_report = now + 1.0
        if t_final is not None and now - max(tally.last_ns / 1e9, t_final) > grace_s:
            break
        if now - t0 > deadline_s:
            timed_out = True
            break
    uniq = tally.unique(sent)
    ch.send("result", {
        "received": tally.received, "unique": uniq, "dups": tally.dups(),
        "unexpected": tally.unexpected, "loss": sum(sent) - uniq,
        "first_ns": tally.first_ns, "last_ns": tally.last_ns, "timed_out": timed_out,
        "cpu_s": loadgen.cpu_seconds() - cpu0, "wall_s": time.monotonic() - t0})
    try:
        await ch.get(timeout=120)
    except TimeoutError:
        pass
    client.close()
    await asyncio.sleep(0.05)


# --------------------------------------------------------------------------------------------
# One run


@contextlib.contextmanager
def payload_size(n: int) -> Iterator[None]:
    """Payloads of ``n`` bytes for the runs inside (benchmarks/wire.py reads its module-level
    size when it builds frames; the worker processes are forked inside, so they inherit it)."""
    old = wire.PAYLOAD_SIZE
    wire.PAYLOAD_SIZE = n
    try:
        yield
    finally:
        wire.PAYLOAD_SIZE = old


def _recv_any(conn: Any) -> tuple[Any, ...]:
    try:
        msg: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise loadgen.LoadgenError("a load-generator process exited") from None
    if msg[0] == "error":
        raise loadgen.LoadgenError(f"load generator failed:\n{msg[1]}")
    return msg


def measure(edge: brokers.BrokerProcess, cloud: brokers.BrokerProcess, qos: int,
            args: argparse.Namespace, say: Say) -> Json:
    """Publishers at the edge, the subscriber at the cloud: one measured run."""
    npubs = args.publishers
    per_pub = max(1, args.count // npubs)
    topics = [f"bench/in/{p:02d}" for p in range(npubs)]
    workers: list[loadgen.Worker] = []
    try:
        sub = loadgen.Worker("cloud-sub", cloud_subscriber, cloud.port, qos, topics[0], npubs,
                             per_pub, args.grace)
        workers.append(sub)
        sub.recv("ready", 30)
        pub = loadgen.Worker("edge-pub", loadgen.publisher_worker, edge.port,
                             list(range(npubs)), topics, qos, per_pub, args.window)
        workers.append(pub)
        pub.recv("ready", 30)
        cpu0 = {"edge": loadgen.proc_cpu_seconds(edge.pid),
                "cloud": loadgen.proc_cpu_seconds(cloud.pid)}
        rss0 = loadgen.rss_bytes(edge.pid)
        rss_peak = rss0
        t0 = time.monotonic()
        sub.send("go", args.cap + args.drain)
        pub.send("go", args.cap)
        pres: Json | None = None
        sres: Json | None = None
        received = 0
        hard_deadline = t0 + args.cap + args.drain + 60
        total = per_pub * npubs
        while sres is None:
            if time.monotonic() > hard_deadline:
                raise loadgen.LoadgenError("no result from the load generator in time")
            ready = wait_conns([sub.conn] + ([pub.conn] if pres is None else []), 1.0)
            with contextlib.suppress(OSError, loadgen.LoadgenError):
                rss_peak = max(rss_peak, loadgen.rss_bytes(edge.pid))
            for conn in ready:
                msg = _recv_any(conn)
                if conn is pub.conn and msg[0] == "result":
                    pres = msg[1]
                    sent = [pres["sent"][p] for p in range(npubs)]
                    sub.send("expect", sent)
                    say(f"      published {sum(sent):,} in {pres['wall_s']:.1f} s "
                        f"({sum(sent) / pres['wall_s']:,.0f} msg/s into the edge); "
                        f"{received:,} at the cloud so far")
                elif conn is sub.conn and msg[0] == "progress":
                    received = msg[1]["received"]
                    say(f"      {received:,}/{total:,} at the cloud after "
                        f"{time.monotonic() - t0:.0f} s, edge RSS {rss_peak / 2**20:.0f} MiB")
                elif conn is sub.conn and msg[0] == "result":
                    sres = msg[1]
        if pres is None:  # (the subscriber gave up first: wait for the publishers, bounded)
            pres = pub.recv("result", args.cap + 30)[1]
        wall = time.monotonic() - t0
        cpu = {k: loadgen.proc_cpu_seconds(p) - cpu0[k]
               for k, p in (("edge", edge.pid), ("cloud", cloud.pid))}
    finally:
        loadgen.stop_all(workers)
    assert pres is not None and sres is not None
    published = sum(pres["sent"].values())
    t_first = pres["first_ns"]
    e2e = (sres["last_ns"] - t_first) / 1e9 if sres["last_ns"] else 0.0
    pub_s = (pres["last_ns"] - t_first) / 1e9
    return {
        "value": sres["unique"] / e2e if e2e > 0 else 0.0,
        "unit": "msg/s",
        "seconds": round(e2e, 3),
        "edge_in_rate": published / pub_s if pub_s > 0 else 0.0,
        "publish_s": round(pub_s, 3),
        "lag_s": round((sres["last_ns"] - pres["last_ns"]) / 1e9, 3) if sres["last_ns"]
        else None,
        "published": published,
        "acked": pres["acked"],
        "received": sres["received"],
        "unique": sres["unique"],
        "loss": sres["loss"],
        "dups": sres["dups"],
        "unexpected": sres["unexpected"],
        "capped": pres["capped"],
        "sub_timed_out": sres["timed_out"],
        "edge_rss_mib": {"start": round(rss0 / 2**20, 1), "peak": round(rss_peak / 2**20, 1)},
        "cpu": {"edge": round(cpu["edge"] / wall, 2), "cloud": round(cpu["cloud"] / wall, 2),
                "publishers": round(pres["cpu_s"] / wall, 2),
                "subscriber": round(sres["cpu_s"] / wall, 2)},
        "edge_cpu_us_per_msg": round(cpu["edge"] / sres["unique"] * 1e6, 2)
        if sres["unique"] else None,
    }


def run_one(side: str, qos: int, args: argparse.Namespace, say: Say) -> Json:
    """A fresh cloud, a fresh edge of ``side`` bridging to it, a probe, a measured run."""
    entry: Json = {"side": side, "qos": qos}
    cloud = brokers.start("mosquitto")
    edge: brokers.BrokerProcess | None = None
    try:
        edge = start_edge(side, cloud.port, qos, args)
        entry["edge_config"] = _config_text(edge)
        entry["bridge_up_s"] = round(wait_bridge(edge.port, cloud.port), 3)
        with payload_size(args.payload):
            entry["result"] = measure(edge, cloud, qos, args, say)
        for name, live in (("edge", edge), ("cloud", cloud)):
            if live.proc.poll() is not None:
                entry["error"] = f"the {name} exited ({live.proc.returncode}) during the run"
    except (loadgen.LoadgenError, brokers.BrokerError, OSError) as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for name, bp in (("edge", edge), ("cloud", cloud)):
            if bp is None:
                continue
            bp.stop()
            tail = bp.log_tail(15).strip()
            if tail:
                entry[f"{name}_log"] = tail
            shutil.rmtree(bp.workdir, ignore_errors=True)
    return entry


# --------------------------------------------------------------------------------------------
# Summary, table, chart


def _ok(r: Json) -> bool:
    return "result" in r and "error" not in r


def summarize(runs: Sequence[Json], qos_list: Sequence[int]) -> list[Json]:
    out = []
    for qos in qos_list:
        row: Json = {"qos": qos}
        by_round: dict[int, dict[str, float]] = {}
        for side in SIDES:
            mine = [r for r in runs if r["qos"] == qos and r["side"] == side]
            good = [r for r in mine if _ok(r)]
            vals = [r["result"]["value"] for r in good]
            res = [r["result"] for r in mine if "result" in r]
            row[side] = {
                "values": [round(v) for v in vals],
                "median": round(statistics.median(vals)) if vals else None,
                "edge_in_median": round(statistics.median(x["edge_in_rate"] for x in res))
                if res else None,
                "lag_s": [x["lag_s"] for x in res],
                "loss": sum(x["loss"] for x in res),
                "published": sum(x["published"] for x in res),
                "dups": sum(x["dups"] for x in res),
                "edge_cpu": [x["cpu"]["edge"] for x in res],
                "edge_us_per_msg": [x["edge_cpu_us_per_msg"] for x in res],
                "edge_us_per_msg_median": _median([x["edge_cpu_us_per_msg"] for x in res]),
                "cloud_cpu": [x["cpu"]["cloud"] for x in res],
                "edge_rss_peak_mib": max((x["edge_rss_mib"]["peak"] for x in res),
                                         default=None),
                "capped": any(x["capped"] or x["sub_timed_out"] for x in res),
                "failed_runs": sum(1 for r in mine if not _ok(r)),
            }
            for r in good:
                by_round.setdefault(r["round"], {})[side] = r["result"]["value"]
        m, o = row["mosquitto"]["median"], row["ours"]["median"]
        row["ratio"] = round(o / m, 3) if m and o is not None else None
        row["round_ratios"] = [round(v["ours"] / v["mosquitto"], 3)
                               for _, v in sorted(by_round.items())
                               if v.get("mosquitto") and "ours" in v]
        out.append(row)
    return out


def _median(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return round(statistics.median(vals), 1) if vals else None


def _range(xs: Sequence[float | None]) -> str:
    vals = [x for x in xs if x is not None]
    if not vals:
        return "n/a"
    lo, hi = min(vals), max(vals)
    return f"{lo:.2f}" if lo == hi else f"{lo:.2f}-{hi:.2f}"


def markdown(meta: Json, summary: Sequence[Json]) -> str:
    lines = [
        (f"Bridge throughput, edge -> cloud: {meta['publishers']} publishers at the edge "
         f"(`bench/in/NN`, {meta['payload']}-byte payloads, QoS 1 with {meta['window']} in "
         f"flight each), {meta['count']:,} messages a run, 1 subscriber of `bench/in/+` at a "
         f"Mosquitto cloud; a fresh cloud and edge per run, MQTT 3.1.1 bridge on `bench/#`; "
         f"{meta['rounds']} round{'s' if meta['rounds'] != 1 else ''}, medians. "
         f"{meta['machine_line']}; Mosquitto {meta['versions'].get('mosquitto', '?')}, "
         f"mqttbroker {meta['versions'].get('ours', '?')}, {meta['ours']['label']}."),
        "",
        ("| QoS | Mosquitto -> Mosquitto (msg/s) | ours -> Mosquitto (msg/s) | "
         "ours / Mosquitto | per round | into the edge (msg/s, Mosq / ours) | "
         "edge CPU us/msg (Mosq / ours) | edge CPU share (Mosq / ours) | "
         "edge peak RSS MiB (Mosq / ours) | "
         "loss (Mosq / ours) | dups (Mosq / ours) |"),
        "|---|---:|---:|---:|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        m, o = row["mosquitto"], row["ours"]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "n/a"
        rounds = ", ".join(f"{x:.2f}" for x in row["round_ratios"]) or "n/a"

        def loss(s: Json, qos: int = row["qos"]) -> str:
            text = f"{s['loss']:,} of {s['published']:,}"
            return f"**{text}**" if s["loss"] and qos else text

        def med(v: int | None) -> str:
            return f"{v:,}" if v is not None else "n/a"

        # QoS 0 publishers are done once the kernel has their bytes: no edge rate to show
        into = (f"{med(m['edge_in_median'])} / {med(o['edge_in_median'])}" if row["qos"]
                else "n/a")

        lines.append(
            f"| {row['qos']} | {med(m['median'])} | {med(o['median'])} | {ratio} | {rounds} | "
            f"{into} | "
            f"{m['edge_us_per_msg_median']} / {o['edge_us_per_msg_median']} | "
            f"{_range(m['edge_cpu'])} / {_range(o['edge_cpu'])} | "
            f"{m['edge_rss_peak_mib'] or 0:.0f} / {o['edge_rss_peak_mib'] or 0:.0f} | "
            f"{loss(m)} / {loss(o)} | {m['dups']} / {o['dups']} |")
    notes = [
        ("msg/s: distinct messages at the cloud subscriber / (its last arrival - the first "
         "PUBLISH written at the edge). Into the edge: the publishers' own rate, until the "
         "edge's last PUBACK (above msg/s: the edge's backlog grew). Edge CPU us/msg: the "
         "edge broker's CPU time (from /proc) per message that reached the cloud, median "
         "(less sensitive to a busy machine than the rates); share: of one core over each "
         "run, range over the rounds. Loss and dups are summed over the rounds."),
        (f"Bridge window towards the cloud: Mosquitto "
         f"{meta['mosquitto_inflight'] or 'unbounded'} (its max_inflight_messages), ours 20 "
         "(its max_inflight default for a 3.x remote)."),
    ]
    flagged = [f"{LABELS[s]} QoS {row['qos']}: {row[s]['failed_runs']} run(s) failed"
               for row in summary for s in SIDES if row[s]["failed_runs"]]
    flagged += [f"{LABELS[s]} QoS {row['qos']}: a run hit its time cap"
                for row in summary for s in SIDES if row[s]["capped"]]
    lines += [""] + [f"- {n}" for n in notes + flagged]
    return "\n".join(lines) + "\n"


def chart(summary: Sequence[Json], runs: Sequence[Json], meta: Json, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.38
    xs = list(range(len(summary)))
    for k, (side, color) in enumerate((("mosquitto", "tab:blue"), ("ours", "tab:orange"))):
        vals = [row[side]["median"] or 0 for row in summary]
        pos = [x + (k - 0.5) * width for x in xs]
        bars = ax.bar(pos, vals, width, color=color, label=LABELS[side])
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in vals], fontsize="small")
        for p, row in zip(pos, summary, strict=True):  # each run, as a dot
            pts = [r["result"]["value"] for r in runs
                   if r["side"] == side and r["qos"] == row["qos"] and _ok(r)]
            ax.plot([p] * len(pts), pts, "k.", markersize=4)
    for x, row in zip(xs, summary, strict=True):
        if row["ratio"] is not None:
            ax.annotate(f"{row['ratio']:.2f}x", (x, 0), xytext=(0, -28),
                        textcoords="offset points", ha="center", fontweight="bold")
    ax.set_xticks(xs, [f"QoS {row['qos']}" for row in summary])
    ax.set_ylabel("msg/s, edge in -> cloud out (median; dots: runs)")
    ax.set_title(f"bridge throughput, {meta['count']:,} messages, "
                 f"{meta['publishers']} publishers ({meta['date'][:10]})")
    top = max([row[s]["median"] or 0 for row in summary for s in SIDES]
              + [r["result"]["value"] / 1.1 for r in runs if _ok(r)], default=1)
    ax.set_ylim(0, max(top, 1) * 1.25)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper right")
    fig.savefig(os.fspath(path), format="png")


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bridge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick 1)")
    p.add_argument("--count", type=int, default=None,
                   help="messages per run (default 50,000; --quick 5,000)")
    p.add_argument("--quick", action="store_true",
                   help="1 round, 5,000 messages; writes bridge-quick.* unless --out")
    p.add_argument("--qos", default="0,1", help="QoS levels to run (default 0,1)")
    p.add_argument("--sides", default=",".join(SIDES), help="mosquitto,ours")
    p.add_argument("--publishers", type=int, default=8, help="publishers at the edge (8)")
    p.add_argument("--window", type=int, default=100,
                   help="QoS 1 PUBLISH in flight per publisher (100)")
    p.add_argument("--payload", type=int, default=100, help="payload bytes (100)")
    p.add_argument("--mosquitto-inflight", type=int, default=brokers.MAX_INFLIGHT,
                   help="the Mosquitto edge's max_inflight_messages, its bridge's window "
                        f"(default {brokers.MAX_INFLIGHT}; 0 = unbounded)")
    p.add_argument("--cap", type=float, default=60.0,
                   help="seconds the publishers may take (default 60)")
    p.add_argument("--drain", type=float, default=60.0,
                   help="seconds beyond --cap the subscriber waits (default 60)")
    p.add_argument("--grace", type=float, default=5.0,
                   help="after the publishers finish, stop once nothing arrived for this long")
    p.add_argument("--ours-rev", default="working",
                   help="our broker from this checkout as it is ('working', the default) or "
                        "from a git revision (exported as benchmarks/ab.py does)")
    p.add_argument("--trees", default=str(Path(tempfile.gettempdir()) / "mqttbroker-ab"),
                   help="where --ours-rev revisions are exported (shared with ab.py)")
    p.add_argument("--redraw", metavar="JSON", default=None,
                   help="run nothing: write the table and chart again from a results file")
    p.add_argument("--out", default=None,
                   help="output stem: OUT.json, OUT.md, OUT.png "
                        "(default benchmarks/results/bridge)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.rounds = preset["rounds"] if args.rounds is None else args.rounds
    args.count = preset["count"] if args.count is None else args.count
    if args.out is None:
        args.out = str(ROOT / "benchmarks" / "results"
                       / ("bridge-quick" if args.quick else "bridge"))
    try:
        args.qos_list = [int(q) for q in args.qos.split(",") if q.strip()]
    except ValueError:
        p.error("--qos: a comma-separated list of 0 and 1")
    if not args.qos_list or any(q not in (0, 1) for q in args.qos_list):
        p.error("--qos: 0, 1 or 0,1")
    args.side_list = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not args.side_list or any(s not in SIDES for s in args.side_list):
        p.error(f"--sides: one or both of {','.join(SIDES)}")
    if not 1 <= args.rounds <= 20:
        p.error("--rounds must be in 1..20")
    if not 1 <= args.publishers <= 64:
        p.error("--publishers must be in 1..64")
    if not args.publishers <= args.count <= 2_000_000:
        p.error("--count must be in --publishers..2,000,000")
    if not 1 <= args.window <= 1000:
        p.error("--window must be in 1..1000")
    if not wire.PAYLOAD_HEADER.size <= args.payload <= MAX_PAYLOAD:
        p.error(f"--payload must be in {wire.PAYLOAD_HEADER.size}..{MAX_PAYLOAD}")
    if not 0 <= args.mosquitto_inflight <= 65535:
        p.error("--mosquitto-inflight must be in 0..65535")
    for name in ("cap", "drain", "grace"):
        if not 0 < getattr(args, name) <= 600:
            p.error(f"--{name} must be in (0, 600] seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from . import ab, report
    from .run import machine, stopwatch

    args = parse_args(argv)
    t_start = time.monotonic()

    say = stopwatch()

    if args.redraw:
        return redraw(Path(args.redraw), say)
    if not Path(brokers.MOSQUITTO).exists():
        say(f"{brokers.MOSQUITTO} missing: `make peers` installs Debian's mosquitto")
        return 2
    ours = ab.prepare("ours", args.ours_rev, Path(args.trees), say)
    args.ours_source = None if ours.rev == ab.WORKING else ours.source
    # which uncommitted state of mqttbroker/ was measured (sha1 of `git diff HEAD`)
    diff_sha1 = (hashlib.sha1(ab.git("diff", "HEAD", "--", "mqttbroker").encode()).hexdigest()
                 if ours.rev == ab.WORKING and "uncommitted" in ours.label else None)
    say(f"ours: {ours.label} ({ours.subject[:60]}), {ours.module_file}"
        + (f"; diff sha1 {diff_sha1[:12]}" if diff_sha1 else ""))
    versions = brokers.versions()
    meta: Json = {
        "what": "bridge throughput edge -> cloud: Mosquitto -> Mosquitto vs ours -> Mosquitto",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "load": os.getloadavg(),
        "versions": {"ours": ours.version, "mosquitto": versions.get("mosquitto")},
        "ours": {"rev": ours.rev, "sha": ours.sha, "label": ours.label,
                 "subject": ours.subject, "module_file": ours.module_file,
                 "diff_sha1": diff_sha1},
        "rounds": args.rounds, "count": args.count, "qos": args.qos_list,
        "sides": args.side_list, "publishers": args.publishers, "window": args.window,
        "payload": args.payload, "mosquitto_inflight": args.mosquitto_inflight,
        "cap_s": args.cap, "drain_s": args.drain, "grace_s": args.grace,
        "bridge": {"protocol": "mqttv311", "pattern": "bench/#", "direction": "out",
                   "client_id": CLIENT_ID, "clean_session": False, "try_private": True,
                   "restart_timeout": list(RESTART)},
    }
    meta["machine_line"] = report.machine_line(meta)
    say(f"machine: {meta['machine_line']}; load average {meta['load'][0]:.2f}")
    say(f"{args.rounds} round(s) x QoS {args.qos} x {', '.join(args.side_list)}; "
        f"{args.count:,} messages a run from {args.publishers} publishers, "
        f"{args.payload}-byte payloads")
    runs: list[Json] = []
    n_runs = args.rounds * len(args.qos_list) * len(args.side_list)
    for rnd in range(1, args.rounds + 1):
        order = args.side_list if rnd % 2 else list(reversed(args.side_list))
        for qos in args.qos_list:
            for side in order:
                label = f"round {rnd}/{args.rounds} QoS {qos} {LABELS[side]}"
                say(f"[{len(runs) + 1}/{n_runs}] {label}: ...")
                t0 = time.monotonic()
                entry = run_one(side, qos, args, say)
                entry["round"] = rnd
                entry["run_s"] = round(time.monotonic() - t0, 2)
                runs.append(entry)
                if "error" in entry:
                    say(f"    {label}: FAILED: {entry['error']}")
                    for k in ("edge_log", "cloud_log"):
                        if k in entry:
                            say(f"    {k}:\n{entry[k]}")
                    continue
                r = entry["result"]
                flag = ""
                if r["loss"] or r["dups"]:
                    flag = "  ! " + ("LOSS AT QoS 1" if qos and r["loss"] else "loss/dups")
                if r["capped"] or r["sub_timed_out"]:
                    flag += "  (time cap hit)"
                say(f"    {label}: {r['value']:,.0f} msg/s edge->cloud (into the edge "
                    f"{r['edge_in_rate']:,.0f}, lag {r['lag_s']} s), loss "
                    f"{r['loss']:,}/{r['published']:,}, dups {r['dups']}, cpu edge "
                    f"{r['cpu']['edge']} cloud {r['cpu']['cloud']}, edge RSS peak "
                    f"{r['edge_rss_mib']['peak']} MiB{flag}")
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    return finish(meta, runs, Path(args.out), say)


def finish(meta: Json, runs: list[Json], out: Path, say: Say) -> int:
    """Summarize, write OUT.json/.md/.png, print the table and what failed or lost QoS 1
    messages; the exit status (1 if anything did)."""
    summary = summarize(runs, meta["qos"])
    md = markdown(meta, summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_name(out.name + ".json").write_text(json.dumps(
        {**meta, "summary": summary, "runs": runs}, indent=1, default=str) + "\n")
    out.with_name(out.name + ".md").write_text(md)
    try:
        chart(summary, runs, meta, out.with_name(out.name + ".png"))
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        say(f"chart failed: {exc}")
    print()
    print(md)
    errors = [f"round {r['round']} QoS {r['qos']} {LABELS[r['side']]}: {r['error']}"
              for r in runs if "error" in r]
    q1_loss = [f"round {r['round']} QoS 1 {LABELS[r['side']]}: lost {r['result']['loss']:,}"
               for r in runs if r["qos"] == 1 and "result" in r and r["result"]["loss"]]
    for e in errors:
        print(f"FAILED: {e}")
    for e in q1_loss:
        print(f"QoS 1 LOSS: {e}")
    print(f"wrote {out}.json, .md, .png (run took {meta['elapsed_s']:.0f} s)")
    return 1 if errors or q1_loss else 0


def redraw(path: Path, say: Say) -> int:
    """Table and chart again from a results file (e.g. after changing the table)."""
    data = json.loads(path.read_text())
    runs = data.pop("runs")
    data.pop("summary", None)
    return finish(data, runs, path.with_suffix(""), say)


if __name__ == "__main__":
    sys.exit(main())
