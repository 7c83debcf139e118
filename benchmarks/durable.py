"""Fan-in QoS 1 with our broker in memory and with a durable config, in the same run.

    python -m benchmarks.durable [--config configs/durable.yaml] [--rounds 3] [--quick]
                                 [--sessions clean,persistent] [--pub-persistent]
                                 [--out benchmarks/results/durable]

The target: QoS 1 fan-in with ``configs/durable.yaml`` (SQLite, ``sync: commit``, fsync)
stays at >= 50% of the in-memory figure. Both brokers start from the same copy of
``--config`` with the settings every benchmark run of ours uses laid over it (listener on
127.0.0.1, no $SYS, WARNING log, in-flight window 20, queue limit 1,000,000; see
``benchmarks/brokers.py``); the in-memory one has its ``persistence`` section removed, the
durable one keeps it with the database moved into the run's temporary folder (``TMPDIR``
decides which disk; nothing touches ``data/``).

A broker stores only sessions that outlive their connection, so the subscriber's session
decides what persistence costs:

* ``clean``: the subscriber connects with clean session 1 (nothing of it is stored; the
  durable broker only pays for the publishers' QoS 1 handling);
* ``persistent``: clean session 0, a stored session: every message queued to it must be
  committed before the publisher gets its PUBACK. This is the honest figure.

Publishers always publish at QoS 1 (8 publishers, 100 in flight each, as ``fanin_q1``);
``--pub-persistent`` gives them stored sessions too. Rounds alternate: each round runs
every session variant against both brokers, the order of the two flipping each round. The
ratio is durable median / memory median per variant (the per-round ratios are kept too).
Writes ``OUT.json``, ``OUT.md`` and ``OUT.png``.

If ``--config`` is the default and ``configs/durable.yaml`` does not exist yet, a stand-in with
the documented section is used: ``persistence: {backend: sqlite, path: ../data/durable.db,
sync: commit, fsync: true}``; the results say so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import brokers, loadgen

Json = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "durable.yaml"
STANDIN = """\
# stand-in for configs/durable.yaml (not there yet when this run was made)
listeners:
  default:
    type: tcp
    bind: 127.0.0.1:1883
persistence:
  backend: sqlite
  path: ../data/durable.db
  sync: commit
  fsync: true
"""
TARGET = 0.5
FULL = {"count": 200_000, "cap_s": 20.0}
QUICK = {"count": 20_000, "cap_s": 20.0}
SESSIONS = ("clean", "persistent")
BACKENDS = ("memory", "durable")


def filesystem_of(path: Path) -> Json:
    """The mount (point, type, device) holding ``path``, from /proc/mounts."""
    best: tuple[str, str, str] = ("/", "?", "?")
    target = str(path.resolve())
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) \
                    and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    except (OSError, ValueError):
        pass
    return {"mount": best[0], "type": best[1], "device": best[2]}


def fsync_probe(folder: Path, n: int = 50) -> Json:
    """How long a 4 KiB write + fsync takes in ``folder`` (median, p90 in ms): the floor of
    one ``sync: commit`` transaction."""
    times: list[float] = []
    fd, name = tempfile.mkstemp(prefix="fsync-probe-", dir=folder)
    try:
        block = b"\0" * 4096
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        os.unlink(name)
    times.sort()
    return {"n": n, "median_ms": round(statistics.median(times), 3),
            "p90_ms": round(times[int(0.9 * (n - 1))], 3)}


def run_one(config: Path, backend: str, session: str, args: argparse.Namespace,
            say: Any) -> Json:
    """One fan-in QoS 1 run against a fresh broker; the database inspected after it stops."""
    kw = dict(QUICK if args.quick else FULL)
    if args.count:
        kw["count"] = args.count
    b = brokers.start("ours", config=config, bench_limits=True,
                      persistence="keep" if backend == "durable" else "memory")
    entry: Json = {"backend": backend, "session": session, "params": kw}
    try:
        cfg = b.config
        assert cfg is not None
        entry["persistence"] = {"backend": cfg.backend, "sync": cfg.sync}
        if backend == "durable" and cfg.backend == "memory":
            raise brokers.BrokerError(f"{config} has no persistence section (backend memory)")
        res = loadgen.fan_in(loadgen.Probe(b.port, b.pid), 1, count=int(kw["count"]),
                             cap_s=float(kw["cap_s"]), pub_procs=args.pub_procs,
                             sub_clean=session == "clean", pub_clean=not args.pub_persistent,
                             progress=lambda m: say(f"    {m}"))
        entry["result"] = res
        if b.proc.poll() is not None:
            entry["error"] = f"broker exited ({b.proc.returncode}) during the run"
    except (loadgen.LoadgenError, brokers.BrokerError, OSError) as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        entry["broker_stop_status"] = b.stop()
        cfg = b.config
        if cfg is not None and cfg.db_path is not None:
            files = sorted(f for f in cfg.db_path.parent.glob(cfg.db_path.name + "*")
                           if f.is_file())
            entry["database"] = {"files": [f.name for f in files],
                                 "bytes": sum(f.stat().st_size for f in files)}
            if not files:
                entry["warning"] = ("no database file was written: the broker ignored the "
                                    "persistence section")
        tail = b.log_tail(10)
        if "Traceback" in tail or "ERROR" in tail:
            entry["log_tail"] = tail
        shutil.rmtree(b.workdir, ignore_errors=True)
    return entry


def summarize(runs: Sequence[Json], sessions: Sequence[str]) -> list[Json]:
    out = []
    for session in sessions:
        row: Json = {"session": session}
        by_round: dict[int, dict[str, float]] = {}
        for backend in BACKENDS:
            vals = [r["result"]["value"] for r in runs
                    if r["session"] == session and r["backend"] == backend and "result" in r
                    and "error" not in r]
            row[backend] = {"values": [round(v) for v in vals],
                            "median": round(statistics.median(vals)) if vals else None,
                            "loss": sum(r["result"]["loss"] for r in runs
                                        if r["session"] == session and r["backend"] == backend
                                        and "result" in r),
                            "dups": sum(r["result"]["dups"] for r in runs
                                        if r["session"] == session and r["backend"] == backend
                                        and "result" in r),
                            "broker_cpu": [r["result"]["cpu"].get("broker") for r in runs
                                           if r["session"] == session
                                           and r["backend"] == backend and "result" in r],
                            "capped": any(r["result"].get("capped") for r in runs
                                          if r["session"] == session
                                          and r["backend"] == backend and "result" in r),
                            "failed_runs": sum(1 for r in runs if r["session"] == session
                                               and r["backend"] == backend and "error" in r)}
            for r in runs:
                if r["session"] == session and r["backend"] == backend and "result" in r \
                        and "error" not in r:
                    by_round.setdefault(r["round"], {})[backend] = r["result"]["value"]
        mem, dur = row["memory"]["median"], row["durable"]["median"]
        row["ratio"] = round(dur / mem, 3) if mem and dur is not None else None
        row["round_ratios"] = [round(v["durable"] / v["memory"], 3)
                               for _, v in sorted(by_round.items())
                               if v.get("memory") and "durable" in v]
        row["met"] = None if row["ratio"] is None else row["ratio"] >= TARGET
        out.append(row)
    return out


def markdown(meta: Json, summary: Sequence[Json]) -> str:
    lines = [
        (f"Fan-in QoS 1 (8 publishers -> 1 subscriber, {meta['count']:,} messages, "
        f"{meta['rounds']} rounds, medians), ours in memory vs ours with "
        f"`{meta['config_label']}` (persistence {meta['persistence']}). "
        f"{meta['machine_line']}."),
        "",
        ("| subscriber session | in memory (msg/s) | durable (msg/s) | durable / memory | "
        "per round | target | verdict | loss/dups (memory, durable) |"),
        "|---|---:|---:|---:|---|---|---|---|",
    ]
    for row in summary:
        m, d = row["memory"], row["durable"]
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "n/a"
        verdict = {True: "met", False: "**not met**", None: "n/a"}[row["met"]]
        rounds = ", ".join(f"{x:.2f}" for x in row["round_ratios"])
        lines.append(
            f"| {row['session']} (clean session {1 if row['session'] == 'clean' else 0}) | "
            f"{m['median'] or 0:,} | {d['median'] or 0:,} | {ratio} | {rounds} | "
            f">= {TARGET:.1f}x | {verdict} | {m['loss']}/{m['dups']} · {d['loss']}/{d['dups']} |")
    lines += ["", (f"Database folder on {meta['filesystem']['type']} "
              f"({meta['filesystem']['device']} at {meta['filesystem']['mount']}); "
              f"4 KiB write + fsync there: median {meta['fsync_probe']['median_ms']} ms, "
              f"p90 {meta['fsync_probe']['p90_ms']} ms.")]
    if meta.get("standin"):
        lines += ["", ("configs/durable.yaml did not exist: a stand-in with the documented "
                  "persistence section was used.")]
    return "\n".join(lines) + "\n"


def chart(summary: Sequence[Json], meta: Json, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.38
    xs = list(range(len(summary)))
    for k, (backend, color) in enumerate((("memory", "tab:blue"), ("durable", "tab:orange"))):
        vals = [row[backend]["median"] or 0 for row in summary]
        bars = ax.bar([x + (k - 0.5) * width for x in xs], vals, width, color=color,
                      label="in memory" if backend == "memory" else meta["config_label"])
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in vals], fontsize="small")
    for x, row in zip(xs, summary, strict=True):
        if row["ratio"] is not None:
            ax.annotate(f"{row['ratio']:.2f}x", (x, 0), xytext=(0, -28),
                        textcoords="offset points", ha="center", fontweight="bold")
    ax.set_xticks(xs, [f"subscriber: {row['session']} session" for row in summary])
    ax.set_ylabel("msg/s (median)")
    ax.set_title(f"fan-in QoS 1: durable / in-memory (target >= {TARGET:.1f}x)")
    top = max((row[b]["median"] or 0 for row in summary for b in BACKENDS), default=1)
    ax.set_ylim(0, top * 1.25)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncols=2)
    fig.savefig(os.fspath(path), format="png")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.durable", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="the durable config (default configs/durable.yaml)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick 1)")
    p.add_argument("--quick", action="store_true", help="1 round, 20,000 messages")
    p.add_argument("--count", type=int, default=None,
                   help="messages per run (default 200,000; --quick 20,000; at most 1,000,000)")
    p.add_argument("--sessions", default=",".join(SESSIONS),
                   help="subscriber session variants: clean,persistent")
    p.add_argument("--pub-persistent", action="store_true",
                   help="publishers connect with clean session 0 too")
    p.add_argument("--pub-procs", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "durable"),
                   help="output path stem: OUT.json, OUT.md, OUT.png")
    args = p.parse_args(argv)
    args.session_list = [s.strip() for s in args.sessions.split(",") if s.strip()]
    for s in args.session_list:
        if s not in SESSIONS:
            p.error(f"unknown session variant {s!r}")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if not 1 <= args.rounds <= 20:
        p.error("--rounds must be in 1..20")
    if args.count is not None and not 8 <= args.count <= 1_000_000:
        p.error("--count must be in 8..1,000,000")
    args.standin = False
    if not Path(args.config).is_file():
        if Path(args.config).resolve() != DEFAULT_CONFIG:
            p.error(f"--config: no such file {args.config!r}")
        args.standin = True
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from . import report
    from .run import machine, stopwatch

    args = parse_args(argv)
    t_start = time.monotonic()

    say = stopwatch()

    tmp = Path(tempfile.mkdtemp(prefix="bench-durable-cfg-"))
    try:
        config = Path(args.config)
        if args.standin:
            config = tmp / "durable.yaml"
            config.write_text(STANDIN)
            say(f"{args.config} does not exist: using a stand-in with its documented "
                "persistence section (sqlite, sync: commit, fsync: true)")
        probe_cfg = brokers.ours_config(config, tmp, port=0, bench_limits=True)
        label = "configs/durable.yaml (stand-in)" if args.standin else _shown(config)
        persistence = (f"{probe_cfg.backend}, sync {probe_cfg.sync}"
                       if probe_cfg.backend != "memory" else "memory")
        fsys = filesystem_of(Path(tempfile.gettempdir()))
        fprobe = fsync_probe(Path(tempfile.gettempdir()))
        kw = dict(QUICK if args.quick else FULL)
        meta: Json = {
            "what": "fan-in QoS 1, ours in memory vs ours durable, same run, rounds alternating",
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine(), "versions": {"ours": brokers.versions()["ours"]},
            "config": str(args.config), "config_label": label, "standin": args.standin,
            "config_used": yaml_text(probe_cfg.path), "persistence": persistence,
            "rounds": args.rounds, "count": args.count or kw["count"],
            "cap_s": kw["cap_s"], "sessions": args.session_list,
            "pub_persistent": args.pub_persistent, "target_ratio": TARGET,
            "filesystem": fsys, "fsync_probe": fprobe,
        }
        meta["machine_line"] = report.machine_line(meta)
        say(f"machine: {meta['machine_line']}")
        say(f"durable broker: {label}, persistence {persistence}; database folder on "
            f"{fsys['type']} ({fsys['device']}); 4 KiB write+fsync median "
            f"{fprobe['median_ms']} ms, p90 {fprobe['p90_ms']} ms")
        runs: list[Json] = []
        for rnd in range(1, args.rounds + 1):
            order = list(BACKENDS) if rnd % 2 else list(reversed(BACKENDS))
            for session in args.session_list:
                for backend in order:
                    label_run = f"round {rnd}/{args.rounds} {session} sub, {backend}"
                    say(f"{label_run}: ...")
                    t0 = time.monotonic()
                    entry = run_one(config, backend, session, args, say)
                    entry["round"] = rnd
                    entry["seconds"] = round(time.monotonic() - t0, 2)
                    runs.append(entry)
                    if "error" in entry:
                        say(f"{label_run}: FAILED: {entry['error']}")
                        continue
                    res = entry["result"]
                    db = entry.get("database")
                    db_s = f", db {db['bytes'] / 2**20:.1f} MiB" if db else ""
                    say(f"{label_run}: {res['value']:,.0f} msg/s"
                        f"{' (time cap hit)' if res.get('capped') else ''}, loss "
                        f"{res['loss']}, dups {res['dups']}, broker cpu "
                        f"{res['cpu'].get('broker')}{db_s}"
                        + (f"  WARNING: {entry['warning']}" if "warning" in entry else ""))
        summary = summarize(runs, args.session_list)
        meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        md = markdown(meta, summary)
        out.with_name(out.name + ".json").write_text(json.dumps(
            {**meta, "summary": summary, "runs": runs}, indent=1, default=str) + "\n")
        out.with_name(out.name + ".md").write_text(md)
        try:
            chart(summary, meta, out.with_name(out.name + ".png"))
        except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
            say(f"chart failed: {exc}")
        print()
        print(md)
        warnings = sorted({r["warning"] for r in runs if "warning" in r})
        errors = [f"round {r['round']} {r['session']} {r['backend']}: {r['error']}"
                  for r in runs if "error" in r]
        for w in warnings:
            print(f"WARNING: {w}")
        for e in errors:
            print(f"FAILED: {e}")
        print(f"wrote {out}.json, .md, .png in {meta['elapsed_s']:.0f} s")
        return 1 if errors or warnings else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def yaml_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
