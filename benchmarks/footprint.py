"""What a broker executes per message, counted rather than timed: each broker runs under
valgrind's callgrind while the latency scenario's client (one QoS 1 publisher, one QoS 1
subscriber) sends at a low fixed rate. After a warm-up the counters are zeroed, and a fixed
time later they are written out; from that dump:

- instructions per message (the whole process: the broker's code, the interpreter, libc);
- the code it executes for every message: the 64-byte lines of machine code that ran at least
  ``--hot`` times the number of messages ("hot lines"), and the 4 KiB pages they lie on.

Counts do not depend on what else the machine is doing, so they compare two builds where the
timed scenarios cannot (the same build's latency p99 varies by 2x between runs here). On this
machine latency at 1k msg/s followed the hot lines, not the instructions: a core that slept
for a millisecond fetches that code again (docs/performance.md, "round four").

    python -m benchmarks.footprint [--brokers ours,null,mosquitto] [--ours-source compiled]
                                   [--rate 200] [--seconds 8] [--out benchmarks/results]

Needs valgrind (Debian's package: ``make footprint`` installs it). Each broker takes ~40 s:
valgrind runs it some 50 times slower. Writes ``<out>/footprint.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from . import brokers, loadgen
from .run import machine

VALGRIND = "valgrind"
START_TIMEOUT_S = 120.0  # a Python broker under valgrind takes ~15 s to listen
WARMUP_S = 4.0  # from the client's start to zeroing the counters (its connect, the first
# messages, whatever the broker does once)
TAIL_S = 3.0  # the client goes on sending this long after the dump


@dataclass
class Footprint:
    """One dump's figures (see the module's docstring)."""

    instructions: int
    messages: float
    hot_lines: int
    hot_pages: int
    lines: int
    hot_by_object: dict[str, int]

    @property
    def per_message(self) -> float:
        return self.instructions / self.messages if self.messages else 0.0


def parse(lines: Iterable[str], messages: float, hot: float = 0.9) -> Footprint:
    """Read a callgrind dump made with ``--dump-instr=yes``: every cost line's first position
    is an instruction's address (absolute, or relative to the previous line's), its last
    number how often it ran. A ``calls=`` line is followed by the call's inclusive cost at the
    call site: that line's address is the call instruction's, its count is not."""
    names: dict[str, str] = {}  # "(n)" compression of object names (ob= and cob= share it)
    npos = 1
    ob = "?"
    last = 0
    after_call = False
    total = 0
    summary = -1
    count: dict[int, int] = defaultdict(int)  # 64-byte line -> most runs of one instruction
    line_ob: dict[int, str] = {}
    for raw in lines:
        line = raw.rstrip("\n")
        if not line:
            continue
        head = line[0]
        if head.isdigit() or head in "+-*":
            fields = line.split()
            tok = fields[0]
            if tok.startswith("0x"):
                addr = int(tok, 16)
            elif tok == "*":
                addr = last
            else:
                addr = last + int(tok) if head in "+-" else int(tok)
            last = addr
            key = addr >> 6
            if key not in line_ob:
                line_ob[key] = ob
            if after_call:  # (inclusive: the callee's instructions, counted where they ran)
                after_call = False
                count.setdefault(key, 0)
                continue
            runs = int(fields[npos]) if len(fields) > npos else 0
            total += runs
            count[key] = max(count[key], runs)
        elif line.startswith("calls="):
            after_call = True
        elif line.startswith(("ob=", "cob=")):
            value = line.split("=", 1)[1]
            m = re.match(r"\((\d+)\)(?:\s+(.*))?$", value)
            name = value
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                name = names.get(m.group(1), "?")
            if line.startswith("ob="):
                ob = name
        elif line.startswith("positions:"):
            npos = len(line.split()) - 1
        elif line.startswith("summary:"):  # what callgrind counted (callgrind_annotate's total)
            summary = int(line.split()[1])
    threshold = hot * messages
    hot_keys = [k for k, runs in count.items() if runs >= threshold]
    by_object: dict[str, int] = defaultdict(int)
    for k in hot_keys:
        by_object[_label(line_ob[k])] += 1
    pages = {k >> 6 for k in hot_keys}
    return Footprint(summary if summary >= 0 else total, messages, len(hot_keys), len(pages),
                     len(count), dict(sorted(by_object.items(), key=lambda kv: -kv[1])))


def _label(path: str) -> str:
    """A short name for a code object: ``libpython3.11``, ``uvloop``, ``ours (mypyc)``."""
    name = Path(path).name
    if "__mypyc" in name:
        return "ours (mypyc)"
    if "/uvloop/" in path:
        return "uvloop"
    return re.sub(r"(\.cpython-[^.]*)?\.so(\.[0-9.]+)?$", "", name)


def _control(pid: int, flag: str) -> None:
    """callgrind_control -z (zero) or -d (dump): synchronous, through valgrind's gdbserver."""
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True,
                   timeout=60)


def measure(name: str, rate: float, seconds: float, hot: float,
            source: str | None = None) -> Footprint:
    """Start ``name`` under callgrind on a free port, run the latency client at ``rate`` for
    WARMUP_S + ``seconds`` + TAIL_S, dump the ``seconds`` in between and read it."""
    if shutil.which(VALGRIND) is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is missing: `make footprint` installs Debian's valgrind")
    wrap = [VALGRIND, "--tool=callgrind", "--dump-instr=yes",
            "--callgrind-out-file=callgrind.out"]  # (in the broker's folder)
    # started as root, Mosquitto changes to its own user, which callgrind_control (root)
    # then cannot reach: it stays root
    user = "root" if name == "mosquitto" and os.geteuid() == 0 else None
    with brokers.running(name, timeout=START_TIMEOUT_S, source=source, wrap=wrap,
                         mosquitto_user=user) as b:
        window: list[float] = []
        failed: list[BaseException] = []

        def counters() -> None:
            # each action takes effect during its call: the window's ends are the calls'
            # midpoints, each known to within half a call (~0.1 s; the messages counted to
            # within rate x that)
            try:
                time.sleep(WARMUP_S)
                for flag, wait in (("-z", seconds), ("-d", 0.0)):
                    before = time.monotonic()
                    _control(b.pid, flag)
                    window.append((before + time.monotonic()) / 2)
                    time.sleep(wait)
            except (subprocess.SubprocessError, OSError) as exc:
                failed.append(exc)

        # the latency scenario's client (loadgen.latency's steps): it sends from "go" on, so
        # the counters' times are taken from then, however long its start took
        sending = WARMUP_S + seconds + TAIL_S
        w = loadgen.Worker("latency", loadgen.latency_worker, b.port, rate, sending, 0)
        try:
            w.recv("ready", 60)
            timer = threading.Thread(target=counters, daemon=True)
            w.send("go")
            t0 = time.monotonic()
            timer.start()
            res = w.recv("result", sending + 40)[1]
        finally:
            w.stop()
        timer.join(60)
        if failed or len(window) != 2:
            raise SystemExit(f"callgrind_control failed for {name}: {failed}")
        if window[1] - t0 > sending:
            raise SystemExit(f"{name}: the dump came after the client stopped sending")
        if res["loss"]:
            raise SystemExit(f"{name} lost {res['loss']} messages under valgrind")
        dumps = sorted(b.workdir.glob("callgrind.out.*"))
        if not dumps:
            raise SystemExit(f"no callgrind dump for {name} in {b.workdir}")
        with open(dumps[0], encoding="utf-8", errors="replace") as dump:
            return parse(dump, rate * (window[1] - window[0]), hot)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.footprint", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--brokers", default="ours,null,mosquitto",
                   help="comma-separated: ours, null (benchmarks/nullbroker.py), mosquitto")
    p.add_argument("--ours-source", default=None,
                   help="run ours from this folder's mqttbroker package (e.g. compiled)")
    p.add_argument("--rate", type=float, default=200.0, help="messages per second")
    p.add_argument("--seconds", type=float, default=8.0, help="the counted window")
    p.add_argument("--hot", type=float, default=0.9,
                   help="a hot line runs at least this many times per message")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    names = [n for n in args.brokers.split(",") if n]
    for n in names:
        if n not in ("ours", "null", "mosquitto"):
            p.error(f"unknown broker {n!r}")
    t0 = time.monotonic()
    results: dict[str, Footprint] = {}
    for n in names:
        print(f"[{time.monotonic() - t0:4.0f}s] {n} under callgrind ...", flush=True)
        fp = measure(n, args.rate, args.seconds, args.hot,
                     args.ours_source if n == "ours" else None)
        results[n] = fp
        print(f"[{time.monotonic() - t0:4.0f}s] {n}: {fp.per_message:,.0f} instructions per "
              f"message, {fp.hot_lines} hot lines ({fp.hot_lines * 64 / 1024:.0f} KiB) on "
              f"{fp.hot_pages} pages", flush=True)
    print("\n| broker | instructions / message | hot code lines (KiB) | pages | by object |")
    print("|---|---:|---:|---:|---|")
    for n, fp in results.items():
        objs = ", ".join(f"{k} {v}" for k, v in list(fp.hot_by_object.items())[:4])
        print(f"| {n} | {fp.per_message:,.0f} | {fp.hot_lines} ({fp.hot_lines * 64 / 1024:.0f})"
              f" | {fp.hot_pages} | {objs} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
           "rate": args.rate, "seconds": args.seconds, "hot": args.hot,
           "ours_source": args.ours_source,
           "versions": brokers.versions(args.ours_source),
           "results": {n: {**asdict(fp), "per_message": fp.per_message}
                       for n, fp in results.items()}}
    (out / "footprint.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out / 'footprint.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
