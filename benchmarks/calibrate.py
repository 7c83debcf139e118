"""Where does the load generator limit the numbers? Runs against Mosquitto (a fresh one per run)
with more load-generator processes than ``make bench`` uses, and the latency scenario against
the null relay (:mod:`benchmarks.nullbroker`), the floor the machine and the load generator
set on their own.

    python -m benchmarks.calibrate [--out benchmarks/results]

If a figure rises with more processes, the default number of processes limits it (on a
2-core machine, more processes also take CPU from the broker: read the CPU shares).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from . import brokers, loadgen
from .run import machine

Json = dict[str, Any]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--broker", default="mosquitto", choices=brokers.BROKERS)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    checks: list[tuple[str, str, Callable[[loadgen.Probe], Json]]] = []
    for qos, count in ((0, 500_000), (1, 200_000), (2, 100_000)):
        for procs in (1, 2):
            checks.append((f"fanin_q{qos}", f"{procs} publisher process(es)",
                           partial(loadgen.fan_in, qos=qos, count=count, pub_procs=procs)))
    for qos, count in ((0, 20_000), (1, 8_000)):
        for procs in (2, 3):
            checks.append((f"fanout_q{qos}", f"{procs} subscriber processes",
                           partial(loadgen.fan_out, qos=qos, count=count, sub_procs=procs)))
    for procs in (2, 3):
        checks.append(("connect", f"{procs} connecting processes",
                       partial(loadgen.idle_connections, stages=(10_000,), procs=procs)))
    results: list[Json] = []
    for name, variant, fn in checks:
        opts: Json = {"max_inflight": 0} if name == "fanin_q2" else {}
        with brokers.running(args.broker, **opts) as b:
            res = fn(loadgen.Probe(b.port, b.pid))
        results.append({"scenario": name, "variant": variant, "broker": args.broker,
                        "value": res["value"], "unit": res["unit"], "cpu": res.get("cpu")
                        or res["stages"][-1]["cpu"], "loss": res["loss"], "dups": res["dups"]})
        print(f"[{time.monotonic() - t0:5.0f}s] {args.broker} {name:9} {variant:26} "
              f"{res['value']:>12,.0f} {res['unit']:7} cpu {results[-1]['cpu']}", flush=True)
    for target in ("null", args.broker):
        with brokers.running(target) as b:
            res = loadgen.latency(loadgen.Probe(b.port, b.pid), duration_s=10.0)
        results.append({"scenario": "latency", "variant": "busy-polling client",
                        "broker": target, "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
                        "max_ms": res["max_ms"], "cpu": res["cpu"], "loss": res["loss"],
                        "dups": res["dups"]})
        print(f"[{time.monotonic() - t0:5.0f}s] {target:9} latency p50 {res['p50_ms']:.3f} ms "
              f"p99 {res['p99_ms']:.3f} ms max {res['max_ms']:.2f} ms", flush=True)
    out = Path(args.out) / "calibration.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=1) + "\n")
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
