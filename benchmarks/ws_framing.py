"""What one WebSocket frame per MQTT packet costs our broker, against one frame per write.

    python -m benchmarks.ws_framing [--messages 100000] [--pairs 10] [--time-cap 150]
                                    [--run-timeout 30] [--out benchmarks/results/ws_framing]

A ``type: ws`` listener sends every MQTT packet in a binary frame of its own by default
(``ws-pack-packets: false``), because Paho C 1.3 reads only the first packet of a frame;
``ws-pack-packets: true`` packs each write of the broker (a batch of packets) into one frame.
This measures the difference on one broker started with both listeners and a TCP listener
(127.0.0.1, free ports, no $SYS, WARNING log, anonymous, QoS 0 drop limits raised so a slow
reader loses nothing).

Each run: a WebSocket subscriber (the ``websockets`` library's sans-I/O client over a blocking
socket, subprotocol ``mqtt``, MQTT 3.1.1 CONNECT then SUBSCRIBE ``bench/#`` QoS 0) on one of the
two ws listeners, and a TCP publisher that writes N QoS 0 PUBLISH packets (topic
``bench/ws``, 64-byte payloads, encoded before the clock starts) in ``sendall`` batches of
``--batch`` packets. The subscriber parses the MQTT stream across frame boundaries and counts
every PUBLISH, checking its sequence number (they must arrive whole, in order, none missing),
until N have arrived or ``--run-timeout`` passes. Per run: wall time from the first PUBLISH
written to the N-th received, the broker's CPU over that span (``/proc/PID/stat`` utime +
stime), the WebSocket frames received, and this process's own CPU (subscriber + publisher).

Runs alternate split, packed, split, packed, ... (``--pairs`` pairs, after an uncounted warm-up
of each); per pair the ratios split / packed of broker CPU per message and of wall time, and
their medians. No new pair starts after ``--time-cap`` seconds. The subscriber shares the
machine with the broker, and its per-frame work grows with the frame count, so the wall-time
ratio includes the client's side too; broker CPU per message is the broker's own cost.
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from . import brokers, loadgen, wire

Json = dict[str, Any]

VARIANTS = ("split", "packed")  # ws-pack-packets false, true
TOPIC = "bench/ws"
WS_PATH = "/mqtt"
RECV_SIZE = 1 << 20
SEQ = struct.Struct(">I")


@dataclass
class Broker(brokers.BrokerProcess):
    """Our broker with a tcp listener (``port``) and one ws listener per variant."""

    ws_ports: dict[str, int] = field(default_factory=dict)


def start_broker(timeout: float = 20.0) -> Broker:
    """One broker process, three listeners on free 127.0.0.1 ports; ready when all accept."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-wsframing-"))
    last = ""
    for _ in range(3):  # a free port may be taken between probing and binding
        tcp = brokers.free_port()
        ws = {v: brokers.free_port() for v in VARIANTS}
        if len({tcp, *ws.values()}) < 3:
            continue
        conf = workdir / "mqttbroker.yaml"
        conf.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: 127.0.0.1:{tcp}\n"
            + "".join(
                f"  ws_{v}:\n"
                "    type: ws\n"
                f"    bind: 127.0.0.1:{ws[v]}\n"
                f"    path: {WS_PATH}\n"
                f"    ws-pack-packets: {'true' if v == 'packed' else 'false'}\n"
                for v in VARIANTS)
            + "sys_interval: 0\n"
            "auth:\n"
            "  allow-anonymous: true\n"
            "mqtt:\n"
            # QoS 0 to a socket with this much queued is dropped (default 1 MiB): the whole
            # run may queue up when the subscriber reads slower than the broker writes
            "  write_buffer_limit: 1073741824\n"
            "  max_write_buffer: 2147483648\n"
            "  max_connection_rate_per_address: 0\n"
            "log_level: WARNING\n")
        log = workdir / "broker.log"
        argv = [str(brokers.VENV_BIN / "python"), "-m", "mqttbroker", "serve", "-c", str(conf)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=workdir)
        b = Broker("ours", tcp, proc, workdir, log, ws_ports=ws)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if all(brokers.accepts(p) for p in (tcp, *ws.values())):
                return b
            time.sleep(0.05)
        brokers.terminate(proc, 2)
        last = (f"broker did not accept on {tcp}, {ws} within {timeout:.0f} s "
                f"(exit {proc.returncode}); log:\n{b.log_tail()}")
    shutil.rmtree(workdir, ignore_errors=True)
    raise brokers.BrokerError(last or "no distinct free ports")


class WsSubscriber:
    """An MQTT 3.1.1 subscriber over WebSocket: counts frames and whole PUBLISH packets."""

    def __init__(self, port: int, layout: wire.PublishLayout, timeout: float) -> None:
        self.layout = layout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.settimeout(timeout)
        self.ws = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}{WS_PATH}"),
                                 subprotocols=[Subprotocol("mqtt")], max_size=None)
        self.buf = bytearray()  # MQTT bytes not yet parsed (a packet may span frames)
        self.frames = 0
        self.publishes = 0
        self.next_seq = 0
        self.bad = 0          # packets that are not our PUBLISH, or out of sequence
        self.others: list[tuple[int, bytes]] = []  # non-PUBLISH packets (CONNACK, SUBACK)
        self.last_ns = 0      # when the last PUBLISH was parsed
        self.closed = False
        self.ws.send_request(self.ws.connect())
        self._flush()

    def _flush(self) -> None:
        out = self.ws.data_to_send()
        if out:
            data = b"".join(out)
            if data:
                self.sock.sendall(data)

    def send(self, packet: bytes) -> None:
        self.ws.send_binary(packet)
        self._flush()

    def pump(self) -> None:
        """One socket read: feed the WebSocket parser, collect frames, parse packets."""
        data = self.sock.recv(RECV_SIZE)
        if not data:
            self.closed = True
            self.ws.receive_eof()
        else:
            self.ws.receive_data(data)
        for ev in self.ws.events_received():
            if isinstance(ev, Frame):
                if ev.opcode in (Opcode.BINARY, Opcode.CONT):
                    self.frames += 1
                    self.buf += ev.data
                elif ev.opcode is Opcode.CLOSE:
                    self.closed = True
            elif isinstance(ev, Response) and self.ws.handshake_exc is not None:
                raise RuntimeError(f"WebSocket upgrade refused: {self.ws.handshake_exc}")
        self._flush()  # pongs, close replies
        self._parse()

    def _parse(self) -> None:
        buf, lay = self.buf, self.layout
        publishes, seq, bad = self.publishes, self.next_seq, self.bad
        size, first_ok, seq_at = lay.size, lay.first, lay.payload_offset + wire.SEQ_OFFSET
        frames, used = wire.split_frames(buf)
        begin = 0  # frames are contiguous: each packet starts where the last one ended
        for first, start, end in frames:
            if first >> 4 == wire.PUBLISH:
                publishes += 1
                if end - begin == size and first == first_ok:
                    got = SEQ.unpack_from(buf, begin + seq_at)[0]
                    if got != seq:
                        bad += 1
                    seq = got + 1
                else:
                    bad += 1
            else:
                self.others.append((first, bytes(buf[start:end])))
            begin = end
        if used:
            del buf[:used]
        if publishes != self.publishes:
            self.last_ns = time.monotonic_ns()
        self.publishes, self.next_seq, self.bad = publishes, seq, bad

    def wait_for(self, kind: int, deadline: float) -> bytes:
        """Read until a packet of ``kind`` (CONNACK, SUBACK) arrives; its body."""
        while time.monotonic() < deadline and not self.closed:
            for k, (first, body) in enumerate(self.others):
                if first >> 4 == kind:
                    del self.others[:k + 1]
                    return body
            self.pump()
        raise TimeoutError(f"no packet type {kind} from the broker (closed={self.closed})")

    def handshake(self, client_id: str, deadline: float) -> None:
        while self.ws.state is State.CONNECTING and time.monotonic() < deadline:
            self.pump()
            if self.closed:
                break
        if self.ws.state is not State.OPEN:
            raise RuntimeError(f"WebSocket not open: {self.ws.state.name}, "
                               f"{self.ws.handshake_exc}")
        self.send(wire.connect(client_id))
        body = self.wait_for(wire.CONNACK, deadline)
        if body[1:2] != b"\x00":
            raise RuntimeError(f"CONNACK {body.hex()}")
        self.send(wire.subscribe(1, [("bench/#", 0)]))
        body = self.wait_for(wire.SUBACK, deadline)
        if body[2:] != b"\x00":
            raise RuntimeError(f"SUBACK {body.hex()}")
        self.frames = 0  # count the PUBLISH traffic only

    def close(self) -> None:
        try:
            if self.ws.state is State.OPEN:
                self.send(wire.DISCONNECT_PACKET)
                self.ws.send_close()
                self._flush()
        except OSError:
            pass
        self.sock.close()


class Publisher(threading.Thread):
    """A TCP publisher: CONNECT, then on ``go`` the pre-encoded PUBLISH blob in batches."""

    def __init__(self, port: int, blob: bytes, batch_bytes: int, timeout: float) -> None:
        super().__init__(daemon=True, name="publisher")
        self.port, self.blob, self.batch_bytes, self.timeout = port, blob, batch_bytes, timeout
        self.ready = threading.Event()
        self.go = threading.Event()
        self.done = threading.Event()  # set by the main thread when the run is over
        self.error: BaseException | None = None
        self.sent_ns = 0  # when the last byte was handed to the kernel

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), self.timeout) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(wire.connect(f"wsf-pub-{self.port}"))
                ack = b""
                while len(ack) < 4:
                    chunk = s.recv(4 - len(ack))
                    if not chunk:
                        raise ConnectionError("publisher: closed before CONNACK")
                    ack += chunk
                if ack[0] >> 4 != wire.CONNACK or ack[3] != 0:
                    raise ConnectionError(f"publisher: CONNACK {ack.hex()}")
                self.ready.set()
                if not self.go.wait(self.timeout):
                    return
                view = memoryview(self.blob)
                for off in range(0, len(view), self.batch_bytes):
                    s.sendall(view[off:off + self.batch_bytes])
                self.sent_ns = time.monotonic_ns()
                self.done.wait(self.timeout)
                s.sendall(wire.DISCONNECT_PACKET)
        except OSError as e:  # reported by the main thread
            self.error = e
            self.ready.set()


@dataclass
class RunResult:
    variant: str
    messages: int
    received: int
    bad: int
    frames: int
    wall_s: float
    send_s: float
    broker_cpu_s: float
    client_cpu_s: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.received == self.messages and not self.bad and not self.timed_out

    @property
    def broker_us_per_msg(self) -> float:
        return self.broker_cpu_s / max(1, self.received) * 1e6


def one_run(b: Broker, variant: str, n: int, blob: bytes, layout: wire.PublishLayout,
            batch_bytes: int, run_timeout: float, tag: str) -> RunResult:
    """Subscriber on ``variant``'s ws listener, publisher on tcp; N PUBLISH through."""
    deadline = time.monotonic() + run_timeout
    sub = WsSubscriber(b.ws_ports[variant], layout, timeout=min(10.0, run_timeout))
    pub = Publisher(b.port, blob, batch_bytes, timeout=run_timeout)
    try:
        sub.handshake(f"wsf-sub-{tag}", deadline)
        pub.start()
        if not pub.ready.wait(max(0.1, deadline - time.monotonic())) or pub.error:
            raise RuntimeError(f"publisher not ready: {pub.error!r}")
        sub.sock.settimeout(0.5)
        cpu0, bcpu0 = loadgen.cpu_seconds(), loadgen.proc_cpu_seconds(b.pid)
        t0 = time.monotonic_ns()
        pub.go.set()
        timed_out = False
        while sub.publishes < n and not sub.closed:
            if time.monotonic() > deadline:
                timed_out = True
                break
            try:
                sub.pump()
            except TimeoutError:
                continue
        t1 = sub.last_ns or time.monotonic_ns()
        bcpu1, cpu1 = loadgen.proc_cpu_seconds(b.pid), loadgen.cpu_seconds()
        pub.done.set()
        pub.join(5)
        if pub.error:
            raise RuntimeError(f"publisher failed: {pub.error!r}")
    finally:
        pub.done.set()
        pub.go.set()
        sub.close()
    return RunResult(variant, n, sub.publishes, sub.bad, sub.frames, (t1 - t0) / 1e9,
                     ((pub.sent_ns or t1) - t0) / 1e9, bcpu1 - bcpu0, cpu1 - cpu0, timed_out)


def _fmt_ratio(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ws_framing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", "-n", type=int, default=100_000,
                   help="QoS 0 PUBLISH per run (default 100,000)")
    p.add_argument("--pairs", type=int, default=10, help="split/packed pairs (default 10)")
    p.add_argument("--batch", type=int, default=1000,
                   help="PUBLISH packets per sendall (default 1000)")
    p.add_argument("--run-timeout", type=float, default=30.0,
                   help="seconds allowed per run (default 30)")
    p.add_argument("--time-cap", type=float, default=150.0,
                   help="no new pair starts after this many seconds (default 150)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ws_framing"),
                   help="write OUT.json and OUT.md ('' to write nothing)")
    args = p.parse_args(argv)
    n = max(1, args.messages)
    pairs = max(1, args.pairs)

    layout = wire.PublishLayout(TOPIC, 0)
    blob = layout.blob(1, 0, n)
    batch_bytes = max(1, args.batch) * layout.size
    t0 = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    b = start_broker()
    runs: list[RunResult] = []
    failed: list[str] = []
    try:
        progress(f"broker pid {b.pid}: tcp 127.0.0.1:{b.port}, ws split "
                 f"127.0.0.1:{b.ws_ports['split']}, ws packed 127.0.0.1:{b.ws_ports['packed']}; "
                 f"{n:,} x {layout.size}-byte PUBLISH per run, {pairs} pairs")
        warm = max(1, min(n, 10_000))
        for v in VARIANTS:
            r = one_run(b, v, warm, blob[:warm * layout.size], layout, batch_bytes,
                        args.run_timeout, f"warm-{v}")
            progress(f"warm-up {v}: {r.received:,}/{warm:,} in {r.wall_s:.2f} s")
        for i in range(pairs):
            if time.monotonic() - t0 > args.time_cap:
                progress(f"time cap {args.time_cap:.0f} s reached: {i} pairs done")
                break
            for v in VARIANTS:
                r = one_run(b, v, n, blob, layout, batch_bytes, args.run_timeout, f"{i}-{v}")
                runs.append(r)
                flag = "" if r.ok else (f"  FAILED: {r.received:,} received, {r.bad} bad"
                                        + (", timed out" if r.timed_out else ""))
                if not r.ok:
                    failed.append(f"pair {i + 1} {v}")
                progress(f"pair {i + 1} {v:6}: {r.received:,} in {r.wall_s:.3f} s "
                         f"({r.received / r.wall_s if r.wall_s else 0:,.0f} msg/s), "
                         f"{r.frames:,} frames, broker CPU {r.broker_cpu_s:.2f} s "
                         f"({r.broker_us_per_msg:.2f} us/msg, {r.broker_cpu_s / r.wall_s if r.wall_s else 0:.2f}"
                         f" of a core), client CPU "
                         f"{r.client_cpu_s:.2f} s{flag}")
                if b.proc.poll() is not None:
                    raise brokers.BrokerError(f"broker exited {b.proc.returncode}:\n"
                                              f"{b.log_tail()}")
                time.sleep(0.2)
    finally:
        brokers.terminate(b.proc)
        shutil.rmtree(b.workdir, ignore_errors=True)

    # pairs: (split, packed) in run order
    pair_runs = [(runs[k], runs[k + 1]) for k in range(0, len(runs) - 1, 2)]
    rows: list[Json] = []
    for k, (s, pk) in enumerate(pair_runs):
        cpu_ratio = (s.broker_us_per_msg / pk.broker_us_per_msg
                     if pk.broker_cpu_s > 0 and s.ok and pk.ok else None)
        wall_ratio = s.wall_s / pk.wall_s if pk.wall_s > 0 and s.ok and pk.ok else None
        rows.append({"pair": k + 1, "split": asdict(s), "packed": asdict(pk),
                     "cpu_ratio": cpu_ratio, "wall_ratio": wall_ratio})
    cpu_ratios = [r["cpu_ratio"] for r in rows if r["cpu_ratio"] is not None]
    wall_ratios = [r["wall_ratio"] for r in rows if r["wall_ratio"] is not None]
    med_cpu = statistics.median(cpu_ratios) if cpu_ratios else None
    med_wall = statistics.median(wall_ratios) if wall_ratios else None

    def med(v: str, f: str) -> float:
        vals = [getattr(r, f) if f != "us" else r.broker_us_per_msg
                for r in runs if r.variant == v and r.ok]
        return statistics.median(vals) if vals else float("nan")

    lines = [
        (f"WebSocket framing, our broker: {n:,} QoS 0 PUBLISH ({layout.size} bytes each, "
         f"64-byte payload) TCP publisher -> 1 ws subscriber, per run; split = one frame per "
         f"packet (ws-pack-packets: false), packed = one frame per write (true)."),
        "",
        ("| pair | split wall s | packed wall s | split frames | packed frames | "
         "split broker us/msg | packed broker us/msg | CPU ratio split/packed | "
         "wall ratio split/packed |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        rs, rp = row["split"], row["packed"]
        lines.append(
            f"| {row['pair']} | {rs['wall_s']:.3f} | {rp['wall_s']:.3f} | {rs['frames']:,} | "
            f"{rp['frames']:,} | {rs['broker_cpu_s'] / max(1, rs['received']) * 1e6:.2f} | "
            f"{rp['broker_cpu_s'] / max(1, rp['received']) * 1e6:.2f} | "
            f"{_fmt_ratio(row['cpu_ratio'])} | {_fmt_ratio(row['wall_ratio'])} |")
    lines.append(
        f"| **median** | {med('split', 'wall_s'):.3f} | {med('packed', 'wall_s'):.3f} | "
        f"{med('split', 'frames'):,.0f} | {med('packed', 'frames'):,.0f} | "
        f"{med('split', 'us'):.2f} | {med('packed', 'us'):.2f} | "
        f"**{_fmt_ratio(med_cpu)}** | **{_fmt_ratio(med_wall)}** |")
    lines += [
        "",
        (f"Median ratio split/packed: broker CPU per message {_fmt_ratio(med_cpu)}x, wall time "
         f"{_fmt_ratio(med_wall)}x (over {len(cpu_ratios)} pairs). Client CPU (subscriber + "
         f"publisher, this process) median: split {med('split', 'client_cpu_s'):.2f} s, "
         f"packed {med('packed', 'client_cpu_s'):.2f} s."),
    ]
    if failed:
        lines.append(f"FAILED runs (not in the ratios): {', '.join(failed)}")
    print()
    print("\n".join(lines))

    if args.out:
        from .run import machine
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "messages": n, "packet_bytes": layout.size, "batch": args.batch,
            "pairs": rows, "median_cpu_ratio": med_cpu, "median_wall_ratio": med_wall,
            "failed": failed, "machine": machine(),
            "elapsed_s": round(time.monotonic() - t0, 1),
        }
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")
        print(f"\nWrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0 if not failed and pair_runs else 1


if __name__ == "__main__":
    sys.exit(main())
