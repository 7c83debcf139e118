"""Scale check: N idle MQTT connections to one fresh broker (default: ours), e.g. 100,000.

    python -m benchmarks.idle [--connections 100000] [--broker ours] [--procs 4]
                              [--sources K] [--stages 10] [--out benchmarks/results]

Each client process raises its own open-file limit; the broker inherits the runner's (raised
to the hard limit, and as root the hard limit to N + 1024). A 127.0.0.1 destination gives each
source address one ephemeral port range (``net.ipv4.ip_local_port_range``, 28,232 ports by
default), so the clients bind to 127.0.0.2 .. 127.0.0.(K+1), K chosen to keep each address
below 80% of its range (Linux routes all of 127/8 to the loopback interface). Connections open
in stages; after each the broker's RSS is read from /proc/PID/status. Prints and writes
``<out>/idle-<broker>-<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

from . import brokers, loadgen
from .run import machine


def port_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.idle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", "-n", type=int, default=10_000)
    p.add_argument("--broker", default="ours", choices=brokers.BROKERS)
    p.add_argument("--procs", type=int, default=4, help="client processes (default 4)")
    p.add_argument("--sources", type=int, default=0,
                   help="source addresses 127.0.0.2.. (default: enough for the port range)")
    p.add_argument("--stages", type=int, default=10, help="measure RSS after each of these")
    p.add_argument("--stage-cap", type=float, default=300.0,
                   help="seconds allowed per stage (default 300)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--force", action="store_true",
                   help="run even if the open-file limits cannot fit N connections")
    args = p.parse_args(argv)
    n = args.connections

    lo, hi = port_range()
    per_source = int((hi - lo + 1) * 0.8)
    sources = args.sources or max(1, math.ceil(n / per_source))
    stages = sorted({max(1, round(n * (i + 1) / args.stages)) for i in range(args.stages)})
    want_nofile = n + 1024
    runner_limits = brokers.raise_nofile(want_nofile)
    # Each client process holds its share of the sockets: enough processes to fit the limit.
    procs = max(args.procs, math.ceil(n / max(1, runner_limits[0] - 1024)))
    print(f"{n:,} idle connections to a fresh {args.broker}; {procs} client processes, "
          f"{sources} source address(es) (127.0.0.2..127.0.0.{sources + 1}, port range "
          f"{lo}-{hi}); runner/broker open-file limit {runner_limits}", flush=True)
    if runner_limits[0] < want_nofile and not args.force:
        print(f"error: the broker would inherit an open-file limit of {runner_limits[0]}, "
              f"below the {want_nofile} it needs, and this process cannot raise its hard "
              "limit (not root, or no CAP_SYS_RESOURCE). Raise it first (`ulimit -Hn "
              f"{want_nofile}` as root, or systemd LimitNOFILE=), or pass --force to see "
              "where it breaks.", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    with brokers.running(args.broker, nofile=want_nofile) as b:
        print(f"broker pid {b.pid} on 127.0.0.1:{b.port}, its open-file limit "
              f"(soft, hard) = {b.nofile}", flush=True)
        if b.nofile[0] and b.nofile[0] < want_nofile:
            print(f"WARNING: the broker's soft limit {b.nofile[0]} < {want_nofile}", flush=True)
        res = loadgen.idle_connections(
            loadgen.Probe(b.port, b.pid), stages=stages, procs=procs, sources=sources,
            settle_s=2.0, stage_cap_s=args.stage_cap,
            progress=lambda m: print(f"[{time.monotonic() - t0:6.1f}s] {m}", flush=True))
        alive = b.proc.poll() is None
        tail = b.log_tail() if not alive else ""
    last = res["stages"][-1]
    if last["errors"]:
        print("errors (first kinds): " + "; ".join(last["errors"]))
    out = {
        "broker": args.broker, "connections": n, "procs": procs, "sources": sources,
        "port_range": [lo, hi], "broker_nofile": list(b.nofile),
        "runner_nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "reached": last["connections"] if not last["failed"] else None,
        "failed": res["loss"], "connect_rate": res["value"], "rss0_bytes": res["rss0_bytes"],
        "rss_bytes": last["rss_bytes"], "bytes_per_conn": last["bytes_per_conn"],
        "broker_alive": alive, "stages": res["stages"],
        "machine": machine(),
        "elapsed_s": round(time.monotonic() - t0, 1),
    }
    path = Path(args.out) / f"idle-{args.broker}-{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print()
    print(f"{args.broker}: {last['connections']:,} connections requested in the last stage, "
          f"{res['loss']} failed; connect rate {res['value']:,.0f}/s; broker RSS "
          f"{res['rss0_bytes'] / 2**20:.1f} MiB -> {last['rss_bytes'] / 2**20:.1f} MiB = "
          f"{(last['bytes_per_conn'] or 0) / 1024:.2f} KiB per connection"
          + ("" if alive else f"; BROKER EXITED:\n{tail}"))
    print(f"Wrote {path}")
    return 0 if alive and not res["loss"] else 1


if __name__ == "__main__":
    sys.exit(main())
