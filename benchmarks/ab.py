"""Interleaved A/B of our broker at two git revisions, on one machine, in one run.

    python -m benchmarks.ab --before REV --after REV [--rounds 3] [--quick]
                            [--scenarios fanin_q0,...] [--out benchmarks/results] [--tag NAME]

Each revision's ``mqttbroker/`` package is exported with ``git archive`` (no worktree, nothing
in ``.git`` changes) into ``$TMPDIR/mqttbroker-ab/<sha>/`` and compiled there; that tree is
put first on the broker's PYTHONPATH (same interpreter, same venv, same dependencies). REV is
anything ``git rev-parse`` takes, or ``working``: this checkout as it is, uncommitted changes
included. Everything else -- the scenarios and their counts (``benchmarks.run.SCENARIOS``, as
``make bench``), the broker settings (``benchmarks.brokers``, no plugin configured), the load
generator and the measurements -- comes from the checkout this file is in, so both sides are
measured by the same code.

Interleaving: for each round, for each scenario, one run of each side, each against a fresh
broker process; which side goes first alternates from round to round (round 1: before first).
Per row of the ``make bench`` table: each side's median over the rounds, after / before, the
per-round (pair) ratios' range, loss and duplicates per side, and a verdict: "more than 5%
slower" when the medians say the after side is more than 5% worse (rates: after / before
< 0.95; times, latencies: > 1.05). A second figure, the broker's CPU time per message
(per connection for ``connect``), is less sensitive to the load generator competing for the
same cores than throughput is. Writes ``<out>/ab.json``, ``ab.md`` and ``ab.png`` (``--quick``:
``ab-quick.*``, git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from . import brokers, loadgen, report, run

Json = dict[str, Any]
Progress = Callable[[str], None]

ROOT = brokers.ROOT
SIDES = ("before", "after")
THRESHOLD = 0.05            # "more than 5% slower"
WORKING = "working"         # REV meaning this checkout, uncommitted changes included

# The broker CPU figure per scenario: its unit and how it is obtained.
CPU_UNITS = {
    "fanin": "us/msg",          # loadgen's broker_cpu_us_per_msg (measuring window)
    "fanout": "us/delivery",    # the same; received = deliveries (50 per message)
    "connect": "us/conn",       # loadgen's broker_cpu_us_per_conn (connecting windows)
    "retained": "us/msg",       # whole run (store 10k + deliver 10k) / 10k
    "latency": "us/msg",        # whole run / messages
}


def cpu_unit(scenario: str) -> str:
    return CPU_UNITS.get(scenario.split("_")[0], "us")


# --- the two trees ---------------------------------------------------------------------------


def git(*args: str) -> str:
    res = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                         check=False)
    if res.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {res.stderr.strip() or res.returncode}")
    return res.stdout.strip()


@dataclass(frozen=True)
class Side:
    """One side of the comparison: the revision asked for and the tree the broker runs from."""

    role: str           # "before" | "after"
    rev: str            # as given
    sha: str            # full commit (for ``working``: HEAD's)
    label: str          # "5573dde" or "working (HEAD 9a26210, uncommitted changes)"
    subject: str
    source: Path        # folder holding the mqttbroker package
    module_file: str    # mqttbroker.__file__ as the broker's interpreter sees it
    version: str

    def short(self) -> str:
        return self.label.split()[0]


def export(sha: str, base: Path, say: Progress) -> Path:
    """``git archive`` the commit's ``mqttbroker/`` into ``base/<sha12>`` (reused if already
    there) and byte-compile it, so neither side compiles on its first start."""
    dest = base / sha[:12]
    if (dest / ".complete").exists():
        say(f"reusing {dest}")
        return dest
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=base))
    try:
        tar = staging / "src.tar"
        git("archive", "--format=tar", f"--output={tar}", sha, "mqttbroker")
        subprocess.run(["tar", "-xf", str(tar), "-C", str(staging)], check=True)
        tar.unlink()
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(staging / "mqttbroker")],
                       check=True, stdout=subprocess.DEVNULL)
        (staging / ".complete").write_text(sha + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"exported {sha[:12]} mqttbroker/ to {dest}")
    return dest


def probe_source(source: Path) -> tuple[str, str]:
    """(mqttbroker.__file__, version) as a broker started with ``source`` on PYTHONPATH sees
    them: proof that the broker runs the exported tree, not the installed package."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(source), os.environ.get("PYTHONPATH", "")) if p)}
    res = subprocess.run(
        [str(brokers.VENV_BIN / "python"), "-c",
         "import mqttbroker; print(mqttbroker.__file__); print(mqttbroker.__version__)"],
        capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=False)
    lines = res.stdout.split("\n")
    if res.returncode != 0 or len(lines) < 2:
        raise SystemExit(f"cannot import mqttbroker from {source}: {res.stderr.strip()}")
    module_file, version = lines[0], lines[1]
    if not Path(module_file).resolve().is_relative_to(source.resolve()):
        raise SystemExit(f"mqttbroker from {source} resolved to {module_file}: the tree "
                         "is not the one the broker would run")
    return module_file, version


def prepare(role: str, rev: str, base: Path, say: Progress) -> Side:
    if rev == WORKING:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "mqttbroker"))
        label = (f"{WORKING} (HEAD {sha[:7]}"
                 f"{', uncommitted changes in mqttbroker/' if dirty else ', clean'})")
        source = ROOT
    else:
        sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
        label = sha[:7]
        source = export(sha, base, say)
    subject = git("log", "-1", "--format=%s", sha)
    module_file, version = probe_source(source)
    return Side(role, rev, sha, label, subject, source, module_file, version)


# --- running ---------------------------------------------------------------------------------


def run_one(sc: run.Scenario, side: Side, kwargs: Json, progress: Progress) -> Json:
    """One scenario against a fresh broker started from ``side``'s tree; also the broker's
    CPU seconds over the whole scenario (for the scenarios that do not report CPU per
    message themselves)."""
    with brokers.running("ours", source=side.source, **sc.broker_opts) as b:
        probe = loadgen.Probe(b.port, b.pid)
        cpu0 = loadgen.proc_cpu_seconds(b.pid)
        result = sc.run(probe, progress, **kwargs)
        result["broker_cpu_run_s"] = round(loadgen.proc_cpu_seconds(b.pid) - cpu0, 4)
        result["broker_pid"] = b.pid
        return result


def cpu_value(entry: Json) -> float | None:
    """The broker's CPU per message (per connection for ``connect``) in one run, in us."""
    res = entry.get("result")
    if not res:
        return None
    kind = entry["scenario"].split("_")[0]
    if kind in ("fanin", "fanout"):
        v = res.get("broker_cpu_us_per_msg")
    elif kind == "connect":
        v = res.get("broker_cpu_us_per_conn")
    else:
        total, n = res.get("broker_cpu_run_s"), res.get("count")
        v = total / n * 1e6 if total is not None and n else None
    return None if v is None else float(v)


# --- summary ---------------------------------------------------------------------------------


@dataclass
class RowAB:
    row: report.Row
    values: dict[str, list[float]]           # side -> values, in round order
    medians: dict[str, float | None]
    ratio: float | None                      # after median / before median (raw)
    pairs: list[float]                       # per-round after / before (raw)
    cpu_values: dict[str, list[float]]
    cpu_medians: dict[str, float | None]
    cpu_ratio: float | None
    cpu_pairs: list[float]
    loss: dict[str, int]
    dups: dict[str, int]
    errors: dict[str, int]

    @property
    def higher_better(self) -> bool:
        return self.row.better == "higher"

    def worse(self, ratio: float | None) -> float | None:
        """How much worse the after side is, as a fraction (> 0: worse; for rates
        1 - after/before, for times and memory after/before - 1)."""
        if ratio is None:
            return None
        return 1 - ratio if self.higher_better else ratio - 1

    @property
    def slower(self) -> bool | None:
        w = self.worse(self.ratio)
        return None if w is None else w > THRESHOLD

    @property
    def pairs_beyond(self) -> int:
        return sum(1 for r in self.pairs if (self.worse(r) or 0) > THRESHOLD)


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _by_round(runs: Sequence[Json], scenario: str, side: str,
              value: Callable[[Json], float | None]) -> dict[int, float]:
    out: dict[int, float] = {}
    for r in runs:
        if r["scenario"] == scenario and r["side"] == side and r.get("result"):
            v = value(r)
            if v is not None:
                out[r["round"]] = v
    return out


def summarize(runs: Sequence[Json]) -> list[RowAB]:
    scenarios = {r["scenario"] for r in runs}
    rows: list[RowAB] = []
    for row in report.ROWS:
        if row.scenario not in scenarios:
            continue
        def prim(entry: Json, row: report.Row = row) -> float | None:
            return report.row_value(row, entry["result"])
        by = {s: _by_round(runs, row.scenario, s, prim) for s in SIDES}
        if not any(by.values()):
            continue  # e.g. memory at 10k in a --quick run that stops at 5k
        cpu_by = ({s: _by_round(runs, row.scenario, s, cpu_value) for s in SIDES}
                  if not row.key.startswith("mem_") else {s: {} for s in SIDES})
        med = {s: _median(list(by[s].values())) for s in SIDES}
        cmed = {s: _median(list(cpu_by[s].values())) for s in SIDES}
        b, a = med["before"], med["after"]
        cb, ca = cmed["before"], cmed["after"]
        loss = dict.fromkeys(SIDES, 0)
        dups = dict.fromkeys(SIDES, 0)
        errors = dict.fromkeys(SIDES, 0)
        for r in runs:
            if r["scenario"] != row.scenario:
                continue
            res = r.get("result")
            if res is None:
                errors[r["side"]] += 1
                continue
            loss[r["side"]] += int(res.get("loss") or 0)
            dups[r["side"]] += int(res.get("dups") or 0)
        rows.append(RowAB(
            row=row,
            values={s: list(by[s].values()) for s in SIDES}, medians=med,
            ratio=a / b if a is not None and b else None,
            pairs=[by["after"][k] / by["before"][k] for k in sorted(by["before"])
                   if k in by["after"] and by["before"][k]],
            cpu_values={s: list(cpu_by[s].values()) for s in SIDES}, cpu_medians=cmed,
            cpu_ratio=ca / cb if ca is not None and cb else None,
            cpu_pairs=[cpu_by["after"][k] / cpu_by["before"][k] for k in sorted(cpu_by["before"])
                       if k in cpu_by["after"] and cpu_by["before"][k]],
            loss=loss, dups=dups, errors=errors))
    return rows


# --- tables ----------------------------------------------------------------------------------


_NOUNS = {"B/conn": "memory", "us/conn": "CPU"}   # rows where "slower" would be the wrong word


def _change(s: RowAB) -> str:
    """The median change in words, so the direction is unambiguous."""
    w = s.worse(s.ratio)
    if w is None:
        return "-"
    noun = _NOUNS.get(s.row.unit)
    if noun:
        return f"{abs(w) * 100:.1f}% {'more' if w > 0 else 'less'} {noun}"
    return f"{abs(w) * 100:.1f}% {'slower' if w > 0 else 'faster'}"


def _range(xs: Sequence[float]) -> str:
    if not xs:
        return "-"
    return f"{min(xs):.3f}" if len(xs) == 1 else f"{min(xs):.3f}-{max(xs):.3f}"


def _verdict(s: RowAB, md: bool) -> str:
    if s.slower is None:
        return "?"
    n = len(s.pairs)
    pairs = f" ({s.pairs_beyond}/{n} pairs beyond 5%)" if n > 1 else ""
    if s.slower:
        noun = _NOUNS.get(s.row.unit)
        what = f"more {noun}" if noun else "slower"
        text = f"more than 5% {what}"
        return (f"**{text}**" if md else text.upper()) + pairs
    return "ok" + pairs


def _cpu_fmt(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.1f}" if v < 100 else f"{v:,.0f}")


def _lossdup(s: RowAB) -> str:
    parts = []
    for side in SIDES:
        flag = "!" if s.loss[side] or s.dups[side] else ""
        err = f" ({s.errors[side]} failed)" if s.errors[side] else ""
        parts.append(f"{s.loss[side]}/{s.dups[side]}{flag}{err}")
    return " · ".join(parts)


HEADER = ["row", "unit", "better", "before", "after", "after/before", "change",
          "per pair", "verdict", "CPU unit", "CPU before", "CPU after", "CPU after/before",
          "CPU per pair", "loss/dups (before · after)"]
RIGHT = {3, 4, 5, 10, 11, 12}


def cells(s: RowAB, md: bool) -> list[str]:
    has_cpu = any(s.cpu_values.values())
    cpu_ratio = f"{s.cpu_ratio:.3f}" if s.cpu_ratio is not None else "-"
    if md and s.cpu_ratio is not None and s.cpu_ratio > 1 + THRESHOLD:
        cpu_ratio = f"**{cpu_ratio}**"
    return [
        s.row.label, report.display_unit(s.row),
        "higher" if s.higher_better else "lower",
        report.fmt(s.row, s.medians["before"]), report.fmt(s.row, s.medians["after"]),
        f"{s.ratio:.3f}" if s.ratio is not None else "-", _change(s), _range(s.pairs),
        _verdict(s, md),
        cpu_unit(s.row.scenario) if has_cpu else "",
        _cpu_fmt(s.cpu_medians["before"]) if has_cpu else "",
        _cpu_fmt(s.cpu_medians["after"]) if has_cpu else "",
        cpu_ratio if has_cpu else "", _range(s.cpu_pairs) if has_cpu else "",
        _lossdup(s),
    ]


def text_table(rows: Sequence[RowAB]) -> str:
    table = [HEADER] + [cells(s, md=False) for s in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]
    lines = []
    for n, r in enumerate(table):
        lines.append("  ".join(c.rjust(w) if i in RIGHT else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(rows: Sequence[RowAB], meta: Json, chart: str | None) -> str:
    b, a = meta["sides"]["before"], meta["sides"]["after"]
    m = meta["machine"]
    lines = [
        f"### A/B: {b['label']} -> {a['label']}",
        "",
        f"- before: `{b['label']}` {b['subject']}",
        f"- after: `{a['label']}` {a['subject']}",
        (f"- {meta['date'][:10]}, `python -m benchmarks.ab`, {meta['rounds']} "
         f"round{'s' if meta['rounds'] != 1 else ''} interleaved (each round: every scenario, "
         f"before and after back to back, the first side alternating), "
         f"{'quick counts' if meta['quick'] else 'make bench counts'}, our broker only, no "
         f"plugin configured, a fresh broker per run; {meta.get('elapsed_s', 0):.0f} s."),
        f"- {m['cores']} cores {m['cpu_model']}, {m['mem_gib']:.0f} GiB, Linux {m['kernel']}.",
    ]
    if meta["quick"] or meta["rounds"] < 3:
        lines.append("- **A smoke check, not evidence**: quick counts and/or fewer than 3 "
                     "rounds; single runs here vary by more than 5%.")
    if meta.get("interrupted"):
        lines.append("- **Interrupted**: only the runs made before ^C are in the table.")
    lines += [
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---:" if i in RIGHT else "---" for i in range(len(HEADER))) + "|",
    ]
    lines += ["| " + " | ".join(cells(s, md=True)) + " |" for s in rows]
    slower = [s.row.label for s in rows if s.slower]
    lines += [
        "",
        ("**Rows more than 5% slower: " + ", ".join(slower) + ".**") if slower
        else "No row more than 5% slower (medians).",
        "",
        ("- before / after: medians over the rounds; after/before is the ratio of the medians, "
         "\"per pair\" the range of the per-round ratios (same round, back to back). For rates "
         "higher is better (after/before < 0.95 = more than 5% slower); for times, latencies "
         "and memory lower is better (> 1.05 = more than 5% slower / more memory)."),
        ("- CPU: the broker's CPU time per delivered message (fan-in, fan-out: over the "
         "measuring window; retained, latency: over the whole run, per message), per "
         "connection for connect; lower is better. It is less affected than the rates by how "
         "much of the two cores the load generator took (not immune: a broker that reads "
         "bigger batches also spends less per message)."),
        "- loss/dups summed over the rounds per side; any is flagged with `!`.",
    ]
    if chart:
        lines += ["", f"![A/B per-pair ratios]({chart})"]
    return "\n".join(lines) + "\n"


# --- chart -----------------------------------------------------------------------------------


def chart(rows: Sequence[RowAB], meta: Json, path: Path) -> None:
    """Left: the after side relative to the before side per pair (higher = after better,
    times and memory inverted), the medians' ratio marked; right: broker CPU per message,
    after / before per pair (lower = after cheaper)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * n + 2.4), sharey=True)
    ys = list(range(n - 1, -1, -1))

    def perf(s: RowAB, r: float) -> float:
        return r if s.higher_better else 1 / r

    ax = axes[0]
    for y, s in zip(ys, rows, strict=True):
        xs = [perf(s, r) for r in s.pairs if r]
        ax.scatter(xs, [y] * len(xs), color="#1f77b4", s=18, alpha=0.7, zorder=3)
        if s.ratio:
            ax.scatter([perf(s, s.ratio)], [y], marker="|", s=250, color="black", zorder=4)
    for y, s in zip(ys, rows, strict=True):  # rates: 0.95; times: 1 / 1.05
        t = 1 - THRESHOLD if s.higher_better else 1 / (1 + THRESHOLD)
        ax.plot([t, t], [y - 0.4, y + 0.4], color="red", linewidth=1.5,
                label="more than 5% worse to the left" if y == ys[0] else None)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels([s.row.label for s in rows], fontsize=8)
    ax.set_xlabel("after relative to before (higher = after better; times/memory inverted)")
    ax.set_title("per pair (dots), ratio of medians (bar)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)

    ax = axes[1]
    for y, s in zip(ys, rows, strict=True):
        ax.scatter(s.cpu_pairs, [y] * len(s.cpu_pairs), color="#ff7f0e", s=18, alpha=0.7,
                   zorder=3)
        if s.cpu_ratio:
            ax.scatter([s.cpu_ratio], [y], marker="|", s=250, color="black", zorder=4)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.axvline(1 + THRESHOLD, color="red", linewidth=1.2, label="+5% CPU")
    ax.set_xlabel("broker CPU per message, after / before (lower = after cheaper)")
    ax.set_title("broker CPU per message (per connection for connect)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)

    b, a = meta["sides"]["before"]["label"], meta["sides"]["after"]["label"]
    fig.suptitle(f"A/B {b} -> {a}: {meta['rounds']} round(s){' (quick)' if meta['quick'] else ''}"
                 f", {meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- main ------------------------------------------------------------------------------------


def _sub_progress(say: Progress, label: str, msg: str) -> None:
    say(f"  {label}: {msg}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, metavar="REV",
                   help=f"git revision of the baseline (or {WORKING!r}: this checkout as is)")
    p.add_argument("--after", required=True, metavar="REV",
                   help=f"git revision to compare (or {WORKING!r})")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="the small counts of `benchmarks.run --quick` (a smoke check)")
    p.add_argument("--scenarios", default=",".join(run.SCENARIOS),
                   help="comma-separated: " + ",".join(run.SCENARIOS))
    p.add_argument("--out", default=str(Path(__file__).parent / "results"),
                   help="folder for the JSON, PNG and markdown (default benchmarks/results)")
    p.add_argument("--tag", default=None,
                   help="file name stem for the outputs (default ab, or ab-quick)")
    p.add_argument("--trees", default=str(Path(tempfile.gettempdir()) / "mqttbroker-ab"),
                   help="where the revisions are exported (default $TMPDIR/mqttbroker-ab)")
    args = p.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in args.scenario_list:
        if s not in run.SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    # what benchmarks.run.kwargs_for reads: make bench's defaults
    args.pub_procs, args.connect_procs, args.persistent_sub = 1, 2, False
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.tag or ("ab-quick" if args.quick else "ab")

    say = run.stopwatch(7)

    trees = Path(args.trees)
    sides = {"before": prepare("before", args.before, trees, say),
             "after": prepare("after", args.after, trees, say)}
    for s in sides.values():
        say(f"{s.role}: {s.label} {s.subject!r}; broker imports {s.module_file}")
    counts = {k: run.kwargs_for(run.SCENARIOS[k], "ours", args) for k in args.scenario_list}
    meta: Json = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": run.machine(), "rounds": args.rounds, "quick": args.quick,
        "scenarios": args.scenario_list, "threshold": THRESHOLD,
        "sides": {k: {"rev": s.rev, "sha": s.sha, "label": s.label, "subject": s.subject,
                      "source": str(s.source), "module_file": s.module_file,
                      "version": s.version} for k, s in sides.items()},
        "measured_by": {"checkout": str(ROOT), "head": git("rev-parse", "HEAD"),
                        "benchmarks_dirty": bool(git("status", "--porcelain", "--",
                                                     "benchmarks"))},
        "counts": {k: {p: list(v) if isinstance(v, tuple) else v for p, v in kw.items()}
                   for k, kw in counts.items()},
        "what": {k: run.SCENARIOS[k].what for k in args.scenario_list},
    }
    say(f"machine: {report.machine_line(meta)}")
    runs: list[Json] = []
    total = args.rounds * len(args.scenario_list) * 2
    interrupted = False
    try:
        for rnd in range(1, args.rounds + 1):
            order = list(SIDES) if rnd % 2 == 1 else list(reversed(SIDES))
            for key in args.scenario_list:
                sc = run.SCENARIOS[key]
                for role in order:
                    side = sides[role]
                    label = f"round {rnd}/{args.rounds} {key} {role} ({side.short()})"
                    t0 = time.monotonic()
                    entry: Json = {"round": rnd, "scenario": key, "side": role,
                                   "sha": side.sha, "first": role == order[0],
                                   "params": meta["counts"][key]}
                    try:
                        res = run_one(sc, side, counts[key],
                                      partial(_sub_progress, say, label))
                        entry["result"] = res
                        cpu = cpu_value(entry)
                        cpu_s = f"; broker {_cpu_fmt(cpu)} {cpu_unit(key)}" if cpu else ""
                        head = run.headline(key, res) + cpu_s
                    except (loadgen.LoadgenError, brokers.BrokerError, OSError) as exc:
                        entry["error"] = f"{type(exc).__name__}: {exc}"
                        head = f"FAILED: {entry['error']}"
                    entry["seconds"] = round(time.monotonic() - t0, 2)
                    runs.append(entry)
                    done = len(runs)
                    elapsed = time.monotonic() - t_start
                    eta = (f", ~{(elapsed / done) * (total - done) / 60:.1f} min left"
                           if done < total else "")
                    say(f"{label}: {head}  [{done}/{total}{eta}]")
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: writing what has been measured")

    rows = summarize(runs)
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    meta["interrupted"] = interrupted
    chart_path = out / f"{stem}.png"
    chart_rel: str | None = None
    if rows:
        try:
            chart(rows, meta, chart_path)
            chart_rel = chart_path.name
        except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
            say(f"chart failed: {exc}")
    md = markdown(rows, meta, chart_rel)
    summary = [{"row": s.row.key, "label": s.row.label, "unit": s.row.unit,
                "better": s.row.better, "values": s.values, "medians": s.medians,
                "ratio_after_before": s.ratio, "pair_ratios": s.pairs,
                "worse_fraction": s.worse(s.ratio), "more_than_5pct_slower": s.slower,
                "pairs_beyond_5pct": s.pairs_beyond,
                "cpu_unit": cpu_unit(s.row.scenario) if any(s.cpu_values.values()) else None,
                "cpu_values": s.cpu_values, "cpu_medians": s.cpu_medians,
                "cpu_ratio_after_before": s.cpu_ratio, "cpu_pair_ratios": s.cpu_pairs,
                "loss": s.loss, "dups": s.dups, "failed_runs": s.errors} for s in rows]
    (out / f"{stem}.json").write_text(json.dumps(
        {**meta, "summary": summary, "runs": runs}, indent=1, default=str) + "\n")
    (out / f"{stem}.md").write_text(md)

    print()
    print(f"before: {sides['before'].label} {sides['before'].subject}")
    print(f"after:  {sides['after'].label} {sides['after'].subject}")
    print()
    print(text_table(rows))
    print()
    flagged = [r for r in runs if r.get("error") or (r.get("result") or {}).get("loss")
               or (r.get("result") or {}).get("dups")]
    for r in flagged:
        res = r.get("result") or {}
        why = r.get("error") or f"loss {res.get('loss')}, dups {res.get('dups')}"
        print(f"FLAGGED: round {r['round']} {r['scenario']} {r['side']}: {why}")
    if not flagged:
        print("No loss, no duplicates, no failed run.")
    slower = [s.row.label for s in rows if s.slower]
    print("Rows more than 5% slower (medians): " + (", ".join(slower) if slower else "none"))
    written = ", ".join(str(out / f"{stem}.{ext}") for ext in ("json", "md")) + (
        f", {chart_path}" if chart_rel else "")
    print(f"Wrote {written} in {meta['elapsed_s']:.0f} s.")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
