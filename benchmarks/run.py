"""Benchmark runner: this broker, Mosquitto and amqtt, a fresh broker per run, rounds interleaved.

    python -m benchmarks.run [--quick] [--rounds 3] [--brokers ours,mosquitto,amqtt]
                             [--scenarios fanin_q0,...] [--out benchmarks/results]
                             [--ours-config FILE] [--persistent-sub]

Round 1 runs every scenario against every broker (the broker order rotates each round), then
round 2, ...; the table gives each broker's median over the rounds, our ratio to Mosquitto and
whether the target is met, with loss and duplicates summed over every run (any is flagged).
Writes ``<out>/latest.json`` (every run, the machine, the versions), ``latest.png`` and
``latest.md`` (the block for README.md); ``--quick`` writes ``quick.*`` instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import brokers, loadgen, report

Json = dict[str, Any]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    """A scenario: the load-generator call, its counts (full / quick), what amqtt gets
    instead (it is an order of magnitude slower), and broker settings it needs."""

    key: str
    run: Callable[..., Json]
    full: Json
    quick: Json
    amqtt_full: Json = field(default_factory=dict)
    amqtt_quick: Json = field(default_factory=dict)
    broker_opts: Json = field(default_factory=dict)
    what: str = ""


def _fan_in(qos: int) -> Callable[..., Json]:
    def run(probe: loadgen.Probe, progress: Progress, **kw: Any) -> Json:
        return loadgen.fan_in(probe, qos, progress=progress, **kw)
    return run


def _fan_out(qos: int) -> Callable[..., Json]:
    def run(probe: loadgen.Probe, progress: Progress, **kw: Any) -> Json:
        return loadgen.fan_out(probe, qos, progress=progress, **kw)
    return run


def _connect(probe: loadgen.Probe, progress: Progress, **kw: Any) -> Json:
    return loadgen.idle_connections(probe, progress=progress, **kw)


def _retained(probe: loadgen.Probe, progress: Progress, **kw: Any) -> Json:
    return loadgen.retained(probe, progress=progress, **kw)


def _latency(probe: loadgen.Probe, progress: Progress, **kw: Any) -> Json:
    return loadgen.latency(probe, progress=progress, **kw)


CAP = {"cap_s": 20.0}
SCENARIOS: dict[str, Scenario] = {s.key: s for s in (
    Scenario("fanin_q0", _fan_in(0), {"count": 500_000, **CAP}, {"count": 50_000, **CAP},
             {"count": 50_000, **CAP}, {"count": 5_000, **CAP},
             what="8 publishers -> 1 subscriber of bench/in/+, QoS 0, 64-byte payloads"),
    Scenario("fanin_q1", _fan_in(1), {"count": 200_000, **CAP}, {"count": 20_000, **CAP},
             {"count": 20_000, **CAP}, {"count": 2_000, **CAP},
             what="the same at QoS 1 (publishers: 100 in flight each)"),
    Scenario("fanin_q2", _fan_in(2), {"count": 100_000, **CAP}, {"count": 10_000, **CAP},
             {"count": 10_000, **CAP}, {"count": 1_000, **CAP},
             broker_opts={"max_inflight": 0},
             what="the same at QoS 2; both brokers with unbounded outgoing in-flight windows"),
    Scenario("fanout_q0", _fan_out(0), {"count": 20_000, **CAP}, {"count": 2_000, **CAP},
             {"count": 2_000, **CAP}, {"count": 200, **CAP},
             what="1 publisher -> 50 subscribers of bench/out, QoS 0 (count = messages "
                  "published; deliveries = 50x)"),
    Scenario("fanout_q1", _fan_out(1), {"count": 8_000, **CAP}, {"count": 800, **CAP},
             {"count": 800, **CAP}, {"count": 100, **CAP},
             what="the same at QoS 1"),
    Scenario("connect", _connect, {"stages": (1000, 5000, 10000)}, {"stages": (1000, 5000)},
             what="idle connections in stages: connect rate, broker RSS growth per connection"),
    Scenario("retained", _retained, {"count": 10_000}, {"count": 10_000},
             what="10,000 retained messages, then a new subscriber to '#' (QoS 0)"),
    Scenario("latency", _latency, {"duration_s": 10.0}, {"duration_s": 3.0},
             what="QoS 1 publisher at 1,000 msg/s -> QoS 1 subscriber, p50/p99"),
)}

NOTES = [
    ("msg/s = messages received by the subscriber(s) / (last delivery - first PUBLISH written); "
    "fan-out counts deliveries (50 per message)."),
    ("QoS 2: Mosquitto 2.0.11 stops delivering outgoing QoS 2 once its in-flight window has "
    "been full (a quota leak fixed in 2.0.13, eclipse-mosquitto/mosquitto#2306), so the QoS 2 "
    "scenario runs both brokers with unbounded windows (Mosquitto max_inflight_messages 0, "
    "ours 65535); every other scenario uses 20, both brokers' default."),
    ("amqtt gets a tenth of the messages (it is about 10-20x slower); its figures are rates, "
    "so they stay comparable."),
    "Memory = (broker VmRSS after N idle connections - VmRSS before the first) / N.",
    ("The load generator shares the machine with the broker: 'cpu' in the JSON shows each "
    "process's share of a core; a broker below ~0.9 was not the bottleneck."),
]


def stopwatch(width: int = 6) -> Progress:
    """A progress printer for a long run: each line is prefixed with the seconds since this
    call, ``[   12.3s] ...``, and flushed at once."""
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:{width}.1f}s] {msg}", flush=True)

    return say


def machine() -> Json:
    """Date-independent facts about this machine for the results file."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, text=True,
                               check=False).stdout.strip()
    except OSError:
        uname = " ".join(platform.uname())
    return {"uname": uname, "kernel": platform.release(), "cpu_model": cpu,
            "cores": os.cpu_count(), "mem_gib": mem_kib / 1024 / 1024,
            "python": platform.python_version(), "nofile": brokers.raise_nofile()}


def headline(key: str, res: Json) -> str:
    """One line for the progress log."""
    lossdup = f"loss {res.get('loss', 0)}, dups {res.get('dups', 0)}"
    if res.get("loss") or res.get("dups"):
        lossdup += "  <-- LOSS/DUPLICATES"
    cpu = res.get("cpu", {}).get("broker")
    cpu_s = f", broker cpu {cpu:.2f}" if cpu is not None else ""
    if key == "connect":
        mem = ", ".join(f"{n}: {(v or 0) / 1024:.1f} KiB"
                        for n, v in res["mem_per_conn"].items())
        return f"{res['value']:,.0f} conn/s; per conn {mem}; {lossdup}"
    if key == "retained":
        t = res["value"]
        return (f"{t * 1000:,.0f} ms to the last retained" if t is not None else "INCOMPLETE") \
            + f" ({res['received']:,} received); {lossdup}{cpu_s}"
    if key == "latency":
        return (f"p50 {res['p50_ms']:.3f} ms, p99 {res['p99_ms']:.3f} ms, "
                f"max {res['max_ms']:.2f} ms; {lossdup}{cpu_s}")
    capped = " (time cap hit)" if res.get("capped") else ""
    return f"{res['value']:,.0f} msg/s{capped}; {lossdup}{cpu_s}"


def _sub_progress(say: Progress, label: str, msg: str) -> None:
    say(f"  {label}: {msg}")


def run_one(sc: Scenario, broker: str, kwargs: Json, progress: Progress,
            ours_config: str | None = None, ours_source: str | None = None) -> Json:
    opts = dict(sc.broker_opts)
    if broker == "ours" and ours_config:
        opts["config"] = ours_config  # with the benchmark's limits laid over it
    if broker == "ours" and ours_source:
        opts["source"] = ours_source  # e.g. compiled/, the mypyc build (`make compiled`)
    with brokers.running(broker, **opts) as b:
        probe = loadgen.Probe(b.port, b.pid)
        result = sc.run(probe, progress, **kwargs)
        result["broker_pid"] = b.pid
        result["broker_nofile"] = list(b.nofile)
        return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 round, small counts (a smoke check, < 2 minutes)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    p.add_argument("--brokers", default=",".join(brokers.BROKERS),
                   help="comma-separated: ours,mosquitto,amqtt")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="comma-separated: " + ",".join(SCENARIOS))
    p.add_argument("--out", default=str(Path(__file__).parent / "results"),
                   help="folder for the JSON, PNG and markdown (default benchmarks/results)")
    p.add_argument("--pub-procs", type=int, default=1,
                   help="processes for the 8 fan-in publishers (default 1)")
    p.add_argument("--connect-procs", type=int, default=2,
                   help="processes opening idle connections (default 2)")
    p.add_argument("--tag", default=None,
                   help="file name stem for the outputs (default latest, or quick)")
    p.add_argument("--ours-config", default=None, metavar="FILE",
                   help="run ours from a copy of this config file (its persistence database "
                        "in a temporary folder; listener, $SYS, log level, in-flight window "
                        "and queue limit set as for every run)")
    p.add_argument("--ours-source", default=None, metavar="DIR",
                   help="run ours from the mqttbroker package in DIR instead of the installed "
                        "one: compiled/, the mypyc build of `make compiled` (`make bench` "
                        "passes it when a C compiler is found)")
    p.add_argument("--persistent-sub", action="store_true",
                   help="fan-in/fan-out subscribers connect with clean session 0 (a stored "
                        "session: what makes a persistent broker write every message)")
    args = p.parse_args(argv)
    args.broker_list = [b.strip() for b in args.brokers.split(",") if b.strip()]
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for b in args.broker_list:
        if b not in brokers.BROKERS:
            p.error(f"unknown broker {b!r}")
    for s in args.scenario_list:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.ours_config and not Path(args.ours_config).is_file():
        p.error(f"--ours-config: no such file {args.ours_config!r}")
    if args.ours_source and not (Path(args.ours_source) / "mqttbroker").is_dir():
        p.error(f"--ours-source: no mqttbroker package in {args.ours_source!r}")
    return args


def kwargs_for(sc: Scenario, broker: str, args: argparse.Namespace) -> Json:
    kw = dict(sc.quick if args.quick else sc.full)
    if broker == "amqtt":
        kw |= sc.amqtt_quick if args.quick else sc.amqtt_full
    if sc.key.startswith("fanin"):
        kw["pub_procs"] = args.pub_procs
    if sc.key.startswith(("fanin", "fanout")) and args.persistent_sub:
        kw["sub_clean"] = False
    if sc.key == "connect":
        kw["procs"] = args.connect_procs
    return kw


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.tag or ("quick" if args.quick else "latest")

    say = stopwatch()

    meta: Json = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "versions": brokers.versions(args.ours_source),
        "rounds": args.rounds,
        "quick": args.quick, "brokers": args.broker_list, "scenarios": args.scenario_list,
        "ours_config": args.ours_config, "ours_source": args.ours_source,
        "persistent_sub": args.persistent_sub,
        "notes": NOTES,
        "counts": {s: {b: kwargs_for(SCENARIOS[s], b, args) for b in args.broker_list}
                   for s in args.scenario_list},
        "what": {s: SCENARIOS[s].what for s in args.scenario_list},
    }
    say(f"machine: {report.machine_line(meta)}")
    say(f"versions: {meta['versions']}")
    if "amqtt" in args.broker_list:
        say("amqtt runs with a tenth of the messages (it is much slower); rates stay comparable")
    runs: list[Json] = []
    n = len(args.broker_list)
    for rnd in range(1, args.rounds + 1):
        order = args.broker_list[(rnd - 1) % n:] + args.broker_list[:(rnd - 1) % n]
        for key in args.scenario_list:
            sc = SCENARIOS[key]
            for broker in order:
                kw = kwargs_for(sc, broker, args)
                label = f"round {rnd}/{args.rounds} {key} {broker}"
                say(f"{label}: {sc.what if rnd == 1 and broker == order[0] else '...'}")
                t0 = time.monotonic()
                entry: Json = {"round": rnd, "scenario": key, "broker": broker,
                               "params": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in kw.items()}}
                try:
                    res = run_one(sc, broker, kw, partial(_sub_progress, say, label),
                                  args.ours_config, args.ours_source)
                    entry["result"] = res
                    say(f"{label}: {headline(key, res)}")
                except (loadgen.LoadgenError, brokers.BrokerError, OSError) as exc:
                    entry["error"] = f"{type(exc).__name__}: {exc}"
                    say(f"{label}: FAILED: {entry['error']}")
                entry["seconds"] = round(time.monotonic() - t0, 2)
                runs.append(entry)

    summaries = report.summarize(runs, args.broker_list)
    chart_path = out / f"{stem}.png"
    try:
        report.chart(summaries, args.broker_list, meta, chart_path)
        chart_rel: str | None = f"benchmarks/results/{chart_path.name}"
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        say(f"chart failed: {exc}")
        chart_rel = None
    md = report.markdown(summaries, args.broker_list, meta, chart_rel)
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    summary_json = [{"row": s.row.key, "label": s.row.label, "unit": s.row.unit,
                     "medians": s.medians, "values": s.values, "ratio_to_mosquitto": s.ratio,
                     "target": s.row.target_text, "met": s.met, "loss": s.loss,
                     "dups": s.dups, "failed_runs": s.errors} for s in summaries]
    (out / f"{stem}.json").write_text(json.dumps(
        {**meta, "summary": summary_json, "runs": runs}, indent=1, default=str) + "\n")
    (out / f"{stem}.md").write_text(md)

    print()
    print(report.text_table(summaries, args.broker_list))
    print()
    flagged = [r for r in runs if r.get("error") or (r.get("result") or {}).get("loss")
               or (r.get("result") or {}).get("dups")]
    for r in flagged:
        res = r.get("result") or {}
        why = r.get("error") or f"loss {res.get('loss')}, dups {res.get('dups')}"
        print(f"FLAGGED: round {r['round']} {r['scenario']} {r['broker']}: {why}")
    if not flagged:
        print("No loss, no duplicates, no failed run.")
    print()
    print("Markdown for README.md:\n")
    print(md)
    print(f"Wrote {out / (stem + '.json')}, {chart_path}, {out / (stem + '.md')} "
          f"in {meta['elapsed_s']:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
