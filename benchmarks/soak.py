"""Soak: our broker under a long mixed device load, its memory and open files sampled.

    python -m benchmarks.soak --minutes 10 --devices 500 --profile steady \\
        --config configs/default.yaml --out benchmarks/results/soak

Starts ``python -m mqttbroker serve -c COPY --host 127.0.0.1 --port FREE`` from a copy of
``--config`` in a temporary folder (its persistence database moved there: no run touches
``data/``), then runs the simulated device fleet (``devices`` package) against it:

* ``base`` devices (most of them) follow ``--profile`` (``configs/fleet-NAME.yaml``);
* ``flaky`` devices follow ``configs/fleet-flaky.yaml`` (abrupt drops, half-open sockets,
  duty cycle with disconnects);
* ``storm`` devices follow ``configs/fleet-reconnect-storm.yaml`` but drop together every
  ``--storm-every`` seconds (a reconnect storm), not once.

Every device has its own client id (``soak-GROUP-NNNNNN``) and a persistent session; one
verifying subscriber receives everything for the whole run (loss, duplicates, latency per
QoS, see ``devices/verifier.py``). Every ``--sample-every`` seconds the broker's VmRSS
(``/proc/PID/status``), open files (``/proc/PID/fd``) and CPU are sampled and a progress line
printed. Writes ``OUT.json`` (samples, fleet summary, flatness, checks) and ``OUT.png`` (RSS
and open files over time).

Flatness, on the samples taken while the devices run: the least-squares slope of RSS over
the second half (MiB/min), and the median RSS of the last quarter / median of the second
quarter; open files when every client has gone vs before the first connected. Runs shorter
than two minutes report these without judging them (start-up growth dominates).

Exit status 0 when every check passed (no QoS 1/2 loss, no QoS 2 duplicate, open files back
to where they started, the broker alive throughout, RSS flat when judged), else 1.
Bounded: at most 240 minutes and 5,000 devices; every loop has a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from devices.device import Device, Stats
from devices.profile import Profile, load_profile, profile_from_dict
from devices.report import Timeline, percentile
from devices.sensors import pick_kind
from devices.verifier import Verifier

from . import brokers

Json = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
MAX_MINUTES = 240.0
MAX_DEVICES = 5000
JUDGE_MIN_S = 120.0          # shorter runs: flatness reported, not judged
FD_SLACK = 5                 # open files allowed above the start once every client is gone
SETTLE_S = 15.0              # at most this long for the broker to close the last sockets
WORKER_GRACE_S = 60.0        # after the run: workers must have reported within this
DEFAULT_MIX = "base=0.7,flaky=0.15,storm=0.15"


# --------------------------------------------------------------------------------------------
# The mixed fleet


@dataclass(frozen=True)
class Group:
    """Devices that behave alike: a profile and when they all drop together."""

    name: str
    profile: Profile
    share: float
    storms: tuple[float, ...] = ()   # seconds from the start at which all drop together
    what: str = ""


def parse_mix(text: str) -> dict[str, float]:
    """``base=0.7,flaky=0.15,storm=0.15`` -> shares that sum to 1."""
    out: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in ("base", "flaky", "storm"):
            raise ValueError(f"--mix: expected base=W,flaky=W,storm=W, got {part!r}")
        w = float(value)
        if w < 0 or not math.isfinite(w):
            raise ValueError(f"--mix: weight of {name} must be >= 0")
        out[name] = w
    total = sum(out.values())
    if total <= 0 or out.get("base", 0) <= 0:
        raise ValueError("--mix: base needs a weight > 0")
    return {k: v / total for k, v in out.items() if v > 0}


def storm_times(duration: float, every: float) -> tuple[float, ...]:
    """Storms every ``every`` seconds, none in the last stretch (devices must get back)."""
    if every <= 0:
        return ()
    tail = min(30.0, duration / 4)
    times: list[float] = []
    t = every
    while t <= duration - tail and len(times) < 1000:
        times.append(round(t, 3))
        t += every
    return tuple(times)


def build_groups(args: argparse.Namespace) -> list[Group]:
    duration = args.minutes * 60
    shares = parse_mix(args.mix)

    def tuned(p: Profile) -> Profile:
        if args.interval_scale is not None:
            p = replace(p, interval_scale=args.interval_scale)
        return replace(p, storm_at=None)  # storms are scheduled here, per group

    base = load_profile(args.profile)
    base_storms = (round(duration * base.storm_at, 3),) if base.storm_at is not None else ()
    groups = [Group("base", tuned(base), shares["base"], base_storms,
                    f"profile {base.name}: {base.description}")]
    if "flaky" in shares:
        p = load_profile("flaky")
        groups.append(Group("flaky", tuned(p), shares["flaky"], (),
                            f"profile {p.name}: {p.description}"))
    if "storm" in shares:
        p = load_profile("reconnect-storm")
        every = args.storm_every if args.storm_every is not None else min(120.0, duration / 3)
        groups.append(Group("storm", tuned(p), shares["storm"], storm_times(duration, every),
                            f"profile {p.name}, all drop together every {every:g} s"))
    return groups


def plan_devices(groups: Sequence[Group], devices: int) -> list[tuple[int, str, str]]:
    """(global index, group, sensor kind) per device; counts by largest remainder, and each
    group's sensor kinds spread over its own devices."""
    raw = [g.share * devices for g in groups]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(groups)), key=lambda i: raw[i] - counts[i],
                    reverse=True)[:devices - sum(counts)]:
        counts[i] += 1
    plan: list[tuple[int, str, str]] = []
    for g, n in zip(groups, counts, strict=True):
        for k in range(n):
            plan.append((len(plan), g.name, pick_kind(k, g.profile.mix or None)))
    return plan


def _worker(worker: int, plan: list[tuple[int, str, str]], groups: dict[str, Json],
            host: str, port: int, start_at: float, stop_at: float, seed: int,
            out: Any) -> None:
    """One process: its devices on one event loop; cumulative counts to ``out`` each second,
    and a final report per group."""
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker_main(worker, plan, groups, host, port, start_at, stop_at, seed, out))


async def _worker_main(worker: int, plan: list[tuple[int, str, str]], groups: dict[str, Json],
                       host: str, port: int, start_at: float, stop_at: float, seed: int,
                       out: Any) -> None:
    loop = asyncio.get_running_loop()
    profiles = {g: profile_from_dict(spec["profile"]) for g, spec in groups.items()}
    stats = {g: Stats() for g in groups}
    devices: list[tuple[str, Device]] = []
    for index, g, kind in plan:
        devices.append((g, Device(index, kind, host, port, profiles[g], stats[g], loop, seed,
                                  id_prefix=f"soak-{g}")))
    n = max(len(devices), 1)
    for k, (g, d) in enumerate(devices):
        d.start(max(start_at - time.time(), 0) + profiles[g].ramp_up * k / n)
    storms = {g: [start_at + t for t in spec["storms"]] for g, spec in groups.items()}
    bursts = {g: start_at + p.burst_every for g, p in profiles.items() if p.burst_every}
    while time.time() < stop_at:
        await asyncio.sleep(min(1.0, max(stop_at - time.time(), 0.01)))
        for _, d in devices:
            d.misc()
        now = time.time()
        for g, times in storms.items():
            if times and now >= times[0]:
                while times and now >= times[0]:
                    times.pop(0)
                for dg, d in devices:
                    if dg == g:
                        d.storm()
        for g, at in bursts.items():
            if now >= at:
                bursts[g] = at + profiles[g].burst_every
                for dg, d in devices:
                    if dg == g and d.connected and not d.asleep:
                        d.report()
        out.put(("tick", worker, now,
                 sum(sum(s.published) for s in stats.values()),
                 sum(sum(s.sent) for s in stats.values()),
                 sum(s.connected for s in stats.values()),
                 sum(s.reconnects for s in stats.values())))
    for _, d in devices:
        d.running = False
    # let outstanding QoS 1/2 flows finish before reporting what was acknowledged
    deadline = time.time() + 5
    while time.time() < deadline and any(d.pending and d.connected for _, d in devices):
        for _, d in devices:
            d.misc()
        await asyncio.sleep(0.1)
    for _, d in devices:
        d.stop()
    await asyncio.sleep(0.2)
    final = {g: {"published": s.published, "sent": s.sent, "acked": s.acked,
                 "reconnects": s.reconnects,
                 "buffered": sum(len(d.buffer) for dg, d in devices if dg == g)}
             for g, s in stats.items()}
    out.put(("final", worker, final))


# --------------------------------------------------------------------------------------------
# Sampling the broker


def rss_fds_cpu(pid: int) -> tuple[int, int, float]:
    """VmRSS in bytes, open file descriptors, CPU seconds (user + system) of ``pid``."""
    rss = 0
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, fds, cpu


@dataclass
class Counters:
    """What the fleet did so far, as the runner sees it."""

    generated: int = 0
    sent: int = 0
    connected: int = 0
    reconnects: int = 0


class Sampler:
    """Samples the broker; each sample also records the fleet's counters at that moment."""

    def __init__(self, pid: int, t0: float) -> None:
        self.pid = pid
        self.t0 = t0
        self.samples: list[Json] = []
        self._last_cpu: tuple[float, float] | None = None

    def sample(self, phase: str, counters: Counters, delivered: int) -> Json:
        now = time.time()
        rss, fds, cpu = rss_fds_cpu(self.pid)
        share = None
        if self._last_cpu is not None and now > self._last_cpu[0]:
            share = round((cpu - self._last_cpu[1]) / (now - self._last_cpu[0]), 3)
        self._last_cpu = (now, cpu)
        s: Json = {"t": round(now - self.t0, 2), "phase": phase,
                   "rss_mib": round(rss / 2**20, 2), "fds": fds, "cpu": share,
                   "connected": counters.connected, "generated": counters.generated,
                   "sent": counters.sent, "delivered": delivered,
                   "reconnects": counters.reconnects}
        self.samples.append(s)
        return s


def progress_line(s: Json, prev: Json | None) -> str:
    t = max(s["t"], 0.0)
    minutes, seconds = divmod(int(t), 60)
    rate = ""
    if prev is not None and s["t"] > prev["t"]:
        rate = f" ({(s['delivered'] - prev['delivered']) / (s['t'] - prev['t']):,.0f}/s)"
    cpu = f"  cpu {s['cpu']:.2f}" if s.get("cpu") is not None else ""
    return (f"[{minutes:3d}:{seconds:02d} {s['phase']:<6}] rss {s['rss_mib']:7.1f} MiB  "
            f"fds {s['fds']:5d}  connected {s['connected']:5d}  sent {s['sent']:,}  "
            f"delivered {s['delivered']:,}{rate}  reconnects {s['reconnects']:,}{cpu}")


# --------------------------------------------------------------------------------------------
# Flatness and checks


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    if len(points) < 3 or len({x for x, _ in points}) < 2:
        return None
    xs, ys = zip(*points, strict=True)
    return float(statistics.linear_regression(xs, ys).slope)


def flatness(samples: Sequence[Json], duration: float, *, max_ratio: float,
             max_slope: float) -> Json:
    """RSS trend over the run: slope over the second half (MiB/min), last-quarter median /
    second-quarter median, and whether that is flat (judged only for runs >= 2 min)."""
    run = [s for s in samples if s["phase"] == "run"]
    half = [(s["t"] / 60, s["rss_mib"]) for s in run if s["t"] >= duration / 2]
    q2 = [s["rss_mib"] for s in run if duration / 4 <= s["t"] < duration / 2]
    q4 = [s["rss_mib"] for s in run if s["t"] >= duration * 3 / 4]
    slope = _slope(half)
    fd_half = [(s["t"] / 60, float(s["fds"])) for s in run if s["t"] >= duration / 2]
    fd_slope = _slope(fd_half)
    ratio = statistics.median(q4) / statistics.median(q2) if q2 and q4 else None
    out: Json = {
        "rss_slope_second_half_mib_per_min": None if slope is None else round(slope, 4),
        "rss_q4_over_q2_median": None if ratio is None else round(ratio, 4),
        "rss_median_q2_mib": round(statistics.median(q2), 2) if q2 else None,
        "rss_median_q4_mib": round(statistics.median(q4), 2) if q4 else None,
        "rss_max_run_mib": max((s["rss_mib"] for s in run), default=None),
        "fds_slope_second_half_per_min": None if fd_slope is None else round(fd_slope, 3),
        "fds_max_run": max((s["fds"] for s in run), default=None),
        "max_ratio": max_ratio, "max_slope_mib_per_min": max_slope,
        "samples_in_run": len(run),
    }
    if duration < JUDGE_MIN_S:
        out["flat"] = None
        out["why"] = f"run shorter than {JUDGE_MIN_S:.0f} s: start-up growth dominates"
    elif slope is None or ratio is None:
        out["flat"] = None
        out["why"] = "too few samples"
    else:
        out["flat"] = bool(ratio <= max_ratio and slope <= max_slope)
        out["why"] = (f"ratio {ratio:.3f} (<= {max_ratio}), slope {slope:+.3f} MiB/min "
                      f"(<= {max_slope})")
    return out


def fleet_summary(finals: Sequence[Json], groups: Sequence[Group], plan_counts: dict[str, int],
                  verifier: Verifier, workers: int) -> Json:
    """Per QoS and per group: generated, published (QoS 0 written / QoS 1-2 acknowledged),
    delivered (distinct, at the verifier), lost, duplicates, reordered; reconnects, latency."""
    qs = ("0", "1", "2")
    per_group: Json = {}
    totals = {k: [0, 0, 0] for k in ("generated", "published", "delivered", "lost")}
    reconnects = buffered = 0
    with verifier.lock:
        seen = {k: len(v) for k, v in verifier.seen.items()}
    for g in groups:
        acked: dict[str, dict[int, list[int]]] = {}
        gen, pub = [0, 0, 0], [0, 0, 0]
        rec = buf = 0
        for f in finals:
            part = f.get(g.name)
            if not part:
                continue
            for q in range(3):
                gen[q] += part["published"][q]
                pub[q] += part["sent"][q]
            acked.update(part["acked"])
            rec += part["reconnects"]
            buf += part["buffered"]
        lost = verifier.lost(acked)
        prefix = f"soak-{g.name}-"
        delivered = [0, 0, 0]
        for (device, q), n in seen.items():
            if device.startswith(prefix):
                delivered[q] += n
        per_group[g.name] = {
            "devices": plan_counts.get(g.name, 0), "what": g.what,
            "storms_at_s": list(g.storms),
            "generated": dict(zip(qs, gen, strict=True)),
            "published": dict(zip(qs, pub, strict=True)),
            "delivered": dict(zip(qs, delivered, strict=True)),
            "lost": dict(zip(qs, lost, strict=True)),
            "reconnects": rec, "still_buffered_on_devices": buf,
        }
        for q in range(3):
            totals["generated"][q] += gen[q]
            totals["published"][q] += pub[q]
            totals["delivered"][q] += delivered[q]
            totals["lost"][q] += lost[q]
        reconnects += rec
        buffered += buf
    lat = verifier.latencies

    def pct(p: float) -> float | None:
        return round(percentile(lat, p), 3) if lat else None

    return {
        **{k: dict(zip(qs, v, strict=True)) for k, v in totals.items()},
        "duplicates": dict(zip(qs, verifier.duplicates, strict=True)),
        "reordered": dict(zip(qs, verifier.reordered, strict=True)),
        "delivered_all_devices": dict(zip(qs, verifier.delivered, strict=True)),
        "bad_payloads": verifier.bad_payloads,
        "reconnects": reconnects,
        "still_buffered_on_devices": buffered,
        "workers_reported": len(finals), "workers": workers,
        "latency_ms": {"p50": pct(50), "p99": pct(99),
                       "max": round(max(lat), 3) if lat else None},
        "groups": per_group,
    }


def log_summary(log: Path, keep: int = 10) -> Json:
    """Counts of WARNING/ERROR/Traceback lines in the broker's log, and the first few of each
    (warnings: the first of each kind, told apart by their text up to the first digit)."""
    counts = {"WARNING": 0, "ERROR": 0, "CRITICAL": 0, "Traceback": 0}
    errors: list[str] = []
    warnings: dict[str, str] = {}
    size = 0
    try:
        size = log.stat().st_size
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                for key in counts:
                    if key in line:
                        counts[key] += 1
                        text = line.rstrip()[:300]
                        if key != "WARNING" and len(errors) < keep:
                            errors.append(text)
                        elif key == "WARNING" and len(warnings) < keep:
                            body = text.split("WARNING", 1)[1]
                            kind = "".join(c for c in body if not c.isdigit())[:40]
                            warnings.setdefault(kind, text)
                        break
    except OSError:
        pass
    return {"bytes": size, "counts": counts, "first_errors": errors,
            "first_warnings": list(warnings.values())}


# --------------------------------------------------------------------------------------------
# The chart


def chart(result: Json, path: Path) -> None:
    """RSS (with the second-half trend line) and open files over time, connected devices on a
    twin axis, storms marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    samples = result["samples"]
    duration = result["params"]["duration_s"]
    t = [s["t"] / 60 for s in samples]
    fig = Figure(figsize=(10.0, 7.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    rss_ax, fd_ax = fig.subplots(2, 1, sharex=True)
    fig.suptitle(f"soak: {result['params']['devices']} devices, "
                 f"{duration / 60:g} min, {Path(result['params']['config']).name}")
    rss_ax.plot(t, [s["rss_mib"] for s in samples], color="tab:blue", linewidth=1.2,
                label="broker RSS")
    fl = result["flatness"]
    slope = fl.get("rss_slope_second_half_mib_per_min")
    half = [s for s in samples if s["phase"] == "run" and s["t"] >= duration / 2]
    if slope is not None and half:
        xs = [s["t"] / 60 for s in half]
        mean_x = statistics.fmean(xs)
        mean_y = statistics.fmean(s["rss_mib"] for s in half)
        rss_ax.plot([xs[0], xs[-1]], [mean_y + slope * (xs[0] - mean_x),
                                      mean_y + slope * (xs[-1] - mean_x)],
                    color="tab:red", linestyle="--", linewidth=1.0,
                    label=f"second-half trend {slope:+.3f} MiB/min")
    rss_ax.set_ylabel("RSS (MiB)")
    rss_ax.set_ylim(0, max((s["rss_mib"] for s in samples), default=1.0) * 1.15)
    rss_ax.grid(True, alpha=0.3)
    rss_ax.legend(loc="lower right")
    fd_ax.plot(t, [s["fds"] for s in samples], color="tab:green", linewidth=1.2,
               label="broker open files")
    fd_ax.set_ylabel("open files")
    fd_ax.set_ylim(0, max((s["fds"] for s in samples), default=1) * 1.15)
    fd_ax.set_xlabel("minutes since the devices started")
    fd_ax.grid(True, alpha=0.3)
    conn_ax = fd_ax.twinx()
    conn_ax.plot(t, [s["connected"] for s in samples], color="tab:gray", linewidth=1.0,
                 alpha=0.8, drawstyle="steps-post", label="connected devices")
    conn_ax.set_ylabel("connected devices (same scale)")
    conn_ax.set_ylim(fd_ax.get_ylim())  # open files ~ those before + connected devices
    storms = sorted({x for g in result["fleet"]["groups"].values() for x in g["storms_at_s"]})
    for ax in (rss_ax, fd_ax):
        for x in storms:
            ax.axvline(x / 60, color="tab:orange", alpha=0.4, linestyle=":")
        ax.axvline(duration / 60, color="black", alpha=0.3)
    handles = fd_ax.get_legend_handles_labels()
    twin = conn_ax.get_legend_handles_labels()
    fd_ax.legend(handles[0] + twin[0], handles[1] + twin[1], loc="lower right")
    fig.savefig(os.fspath(path), format="png")


# --------------------------------------------------------------------------------------------
# The run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0,
                   help=f"how long the devices run (default 10, at most {MAX_MINUTES:g})")
    p.add_argument("--devices", type=int, default=500,
                   help=f"devices in all (default 500, at most {MAX_DEVICES})")
    p.add_argument("--profile", default="steady",
                   help="profile of the base devices (configs/fleet-NAME.yaml or a path)")
    p.add_argument("--mix", default=DEFAULT_MIX,
                   help=f"shares of base/flaky/storm devices (default {DEFAULT_MIX})")
    p.add_argument("--storm-every", type=float, default=None,
                   help="seconds between the storm group's reconnect storms "
                        "(default min(120, duration/3); 0: none)")
    p.add_argument("--interval-scale", type=float, default=None,
                   help="override every profile's interval_scale (< 1: more messages)")
    p.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"),
                   help="our broker's config file (copied; default configs/default.yaml)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "soak"),
                   help="output path stem: writes OUT.json and OUT.png")
    p.add_argument("--sample-every", type=float, default=None,
                   help="seconds between samples (default 5; 1 for runs under 2 minutes)")
    p.add_argument("--processes", type=int, default=None,
                   help="device worker processes (default: one per core)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-ratio", type=float, default=1.10,
                   help="flat: last-quarter / second-quarter median RSS at most this")
    p.add_argument("--max-slope", type=float, default=0.5,
                   help="flat: second-half RSS slope at most this many MiB/min")
    args = p.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        p.error(f"--minutes must be in (0, {MAX_MINUTES:g}]")
    if args.minutes * 60 < 5:
        p.error("--minutes: at least 5 seconds")
    if not 1 <= args.devices <= MAX_DEVICES:
        p.error(f"--devices must be in 1..{MAX_DEVICES}")
    if not Path(args.config).is_file():
        p.error(f"--config: no such file {args.config!r}")
    if args.sample_every is None:
        args.sample_every = 5.0 if args.minutes * 60 >= JUDGE_MIN_S else 1.0
    args.sample_every = min(max(args.sample_every, 0.2), 60.0)
    if args.processes is not None and not 1 <= args.processes <= 64:
        p.error("--processes must be in 1..64")
    try:
        parse_mix(args.mix)
        load_profile(args.profile)
    except (ValueError, OSError) as exc:
        p.error(str(exc))
    return args


def run(args: argparse.Namespace) -> Json:
    """Start the broker, run the fleet, sample; return the result (not yet written)."""
    from .run import machine

    duration = args.minutes * 60
    groups = build_groups(args)
    plan = plan_devices(groups, args.devices)
    plan_counts = {g.name: sum(1 for _, pg, _ in plan if pg == g.name) for g in groups}
    procs = max(1, min(args.processes or os.cpu_count() or 1, len(plan)))
    t_begin = time.monotonic()

    def say(msg: str) -> None:
        print(f"[soak {time.monotonic() - t_begin:6.1f}s] {msg}", flush=True)

    say(f"{args.devices} devices for {duration:g} s: " + ", ".join(
        f"{g.name} {plan_counts[g.name]} ({g.what}"
        + (f"; storms at {', '.join(f'{x:g}' for x in g.storms)} s" if g.storms else "") + ")"
        for g in groups))
    b = brokers.start("ours", config=args.config, bench_limits=False, timeout=30)
    cfg = b.config
    assert cfg is not None
    say(f"broker pid {b.pid} on 127.0.0.1:{b.port}, config {args.config} "
        f"(persistence {cfg.backend}{', ' + str(cfg.sync) if cfg.sync else ''}"
        f"{', db in ' + str(cfg.db_path.parent) if cfg.db_path else ''}), "
        f"nofile {b.nofile[0]}")
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    workers: list[Any] = []
    verifier: Verifier | None = None
    errors: list[str] = []
    finals: list[Json] = []
    broker_exit: int | None = None
    try:
        time.sleep(0.5)  # the readiness probe's connection is gone
        start_at = time.time() + 1.5
        sampler = Sampler(b.pid, start_at)
        counters = Counters()
        before = sampler.sample("before", counters, 0)
        say(f"before any client: rss {before['rss_mib']:.1f} MiB, fds {before['fds']}")
        verifier = Verifier("127.0.0.1", b.port, Timeline())
        verifier.start()
        stop_at = start_at + duration
        groups_data = {g.name: {"profile": g.profile.as_dict(), "storms": list(g.storms)}
                       for g in groups}
        for w in range(procs):
            part = plan[w::procs]
            proc = ctx.Process(target=_worker, args=(w, part, groups_data, "127.0.0.1", b.port,
                                                     start_at, stop_at, args.seed, out),
                               daemon=True)
            proc.start()
            workers.append(proc)
        ticks: dict[int, tuple[int, int, int, int]] = {}
        next_sample = start_at
        prev: Json | None = None
        hard_stop = stop_at + WORKER_GRACE_S
        while len(finals) < procs and time.time() < hard_stop:
            wait = min(0.5, max(next_sample - time.time(), 0.02))
            try:
                msg = out.get(timeout=wait)
            except queue.Empty:
                msg = None
            if msg is not None and msg[0] == "tick":
                ticks[msg[1]] = tuple(msg[3:7])
                counters = Counters(*(sum(v[i] for v in ticks.values()) for i in range(4)))
            elif msg is not None and msg[0] == "final":
                finals.append(msg[2])
            if b.proc.poll() is not None:
                broker_exit = b.proc.returncode
                errors.append(f"broker exited with status {broker_exit} during the run")
                break
            now = time.time()
            if now >= next_sample:
                phase = "run" if now <= stop_at else "drain"
                s = sampler.sample(phase, counters, sum(verifier.delivered))
                print(progress_line(s, prev), flush=True)
                prev = s
                next_sample += args.sample_every
                if next_sample < now:
                    next_sample = now + args.sample_every
            if not any(p.is_alive() for p in workers) and len(finals) < procs:
                try:  # the last finals may still be in the queue
                    while True:
                        msg = out.get(timeout=1.0)
                        if msg[0] == "final":
                            finals.append(msg[2])
                except queue.Empty:
                    break
        if len(finals) < procs:
            errors.append(f"only {len(finals)} of {procs} device workers reported")
        for p in workers:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(2)
        counters.connected = 0  # every device process has ended
        if broker_exit is None:
            drain = max(g.profile.drain for g in groups)
            verifier.wait_complete({}, 1.0, drain)  # (nothing to wait for but quiet)
        verifier.stop()
        fleet = fleet_summary(finals, groups, plan_counts, verifier, procs)
        verifier = None
        # every client is gone: wait (bounded) for the broker to close the last sockets
        settle_end = time.time() + SETTLE_S
        after: Json | None = None
        while broker_exit is None and b.proc.poll() is None:
            time.sleep(1.0)
            after = sampler.sample("after", counters, fleet["delivered"]["0"] +
                                   fleet["delivered"]["1"] + fleet["delivered"]["2"])
            if (after["fds"] <= before["fds"] + FD_SLACK and after["t"] > duration + 3) \
                    or time.time() > settle_end:
                break
        if after is not None:
            print(progress_line(after, prev), flush=True)
        if b.proc.poll() is not None and broker_exit is None:
            broker_exit = b.proc.returncode
            errors.append(f"broker exited with status {broker_exit}")
    finally:
        if verifier is not None:
            verifier.stop()
        for p in workers:
            if p.is_alive():
                p.terminate()
                p.join(2)
        stop_status = b.stop()
        db = None
        if cfg.db_path is not None:
            files = [f for f in cfg.db_path.parent.glob(cfg.db_path.name + "*") if f.is_file()]
            db = {"files": sorted(f.name for f in files),
                  "bytes": sum(f.stat().st_size for f in files)}
        logs = log_summary(b.log)
        shutil.rmtree(b.workdir, ignore_errors=True)

    samples = sampler.samples
    fl = flatness(samples, duration, max_ratio=args.max_ratio, max_slope=args.max_slope)
    fds_start = before["fds"]
    fds_end = samples[-1]["fds"] if samples[-1]["phase"] == "after" else None
    checks: Json = {
        "qos1_lost": fleet["lost"]["1"], "qos2_lost": fleet["lost"]["2"],
        "qos2_duplicates": fleet["duplicates"]["2"],
        "fds_start": fds_start, "fds_end": fds_end, "fd_slack": FD_SLACK,
        "rss_start_mib": before["rss_mib"],
        "rss_end_mib": samples[-1]["rss_mib"] if fds_end is not None else None,
        "broker_alive": broker_exit is None, "broker_stop_status": stop_status,
        "errors": errors,
    }
    failed = []
    if fleet["lost"]["1"] or fleet["lost"]["2"]:
        failed.append(f"QoS 1/2 lost {fleet['lost']['1']}/{fleet['lost']['2']}")
    if fleet["duplicates"]["2"]:
        failed.append(f"QoS 2 duplicates {fleet['duplicates']['2']}")
    if fds_end is None or fds_end > fds_start + FD_SLACK:
        failed.append(f"open files {fds_start} -> {fds_end}")
    if fl["flat"] is False:
        failed.append(f"RSS not flat: {fl['why']}")
    failed += errors
    checks["failed"] = failed
    checks["ok"] = not failed
    return {
        "what": "soak: our broker under a mixed device fleet; RSS and open files sampled",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "params": {"duration_s": duration, "devices": args.devices, "profile": args.profile,
                   "mix": parse_mix(args.mix), "config": str(args.config),
                   "sample_every_s": args.sample_every, "processes": procs,
                   "interval_scale": args.interval_scale, "seed": args.seed},
        "broker": {"pid": b.pid, "port": b.port, "nofile": list(b.nofile),
                   "persistence": cfg.backend, "sync": cfg.sync, "database": db,
                   "log": logs},
        "flatness": fl,
        "checks": checks,
        "fleet": fleet,
        "samples": samples,
        "elapsed_s": round(time.monotonic() - t_begin, 1),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run(args)
    json_path = out.with_name(out.name + ".json")
    png_path = out.with_name(out.name + ".png")
    json_path.write_text(json.dumps(_finite(result), indent=1, allow_nan=False) + "\n")
    try:
        chart(result, png_path)
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        print(f"chart failed: {exc}", file=sys.stderr)
    fl, ck, fleet = result["flatness"], result["checks"], result["fleet"]
    print()
    print(f"fleet: published {fleet['published']}, delivered {fleet['delivered']}, "
          f"lost {fleet['lost']}, duplicates {fleet['duplicates']}, "
          f"reconnects {fleet['reconnects']}, latency ms {fleet['latency_ms']}")
    print(f"RSS: {ck['rss_start_mib']} MiB before, q2 median {fl['rss_median_q2_mib']}, "
          f"q4 median {fl['rss_median_q4_mib']} (ratio {fl['rss_q4_over_q2_median']}), "
          f"second-half slope {fl['rss_slope_second_half_mib_per_min']} MiB/min, "
          f"max {fl['rss_max_run_mib']}, after {ck['rss_end_mib']}; flat: {fl['flat']} "
          f"({fl['why']})")
    print(f"open files: {ck['fds_start']} before, max {fl['fds_max_run']} during, "
          f"{ck['fds_end']} after")
    logs = result["broker"]["log"]
    print(f"broker log: {logs['bytes']:,} bytes, {logs['counts']}")
    print(f"{'OK' if ck['ok'] else 'FAILED: ' + '; '.join(ck['failed'])}")
    print(f"wrote {json_path}, {png_path} in {result['elapsed_s']:.0f} s")
    return 0 if ck["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
