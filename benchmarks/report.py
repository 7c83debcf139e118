"""Turn benchmark runs into medians, ratios to Mosquitto, target verdicts, tables and a chart."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .brokers import LABELS

Json = dict[str, Any]


MEMORY_TARGET = 1500  # bytes per idle connection at 10k (issue 18: "<= 1.5 KB")


@dataclass(frozen=True)
class Row:
    """One line of the results table.

    ``target`` is checked on ``ours / mosquitto`` ("ratio_min", "ratio_max") or on our
    value alone ("abs_max"); ``better`` says which way is good, for the chart."""

    key: str
    scenario: str
    label: str
    unit: str
    better: str                 # "higher" | "lower"
    target: tuple[str, float] | None
    target_text: str


ROWS: tuple[Row, ...] = (
    # targets: issue 18's acceptance ("level with Mosquitto"); memory at 10k only
    Row("fanin_q0", "fanin_q0", "fan-in QoS 0 (8 pub -> 1 sub)", "msg/s", "higher",
        ("ratio_min", 1.0), ">= 1.0x"),
    Row("fanin_q1", "fanin_q1", "fan-in QoS 1 (8 pub -> 1 sub)", "msg/s", "higher",
        ("ratio_min", 1.0), ">= 1.0x"),
    Row("fanin_q2", "fanin_q2", "fan-in QoS 2 (8 pub -> 1 sub)", "msg/s", "higher",
        ("ratio_min", 1.0), ">= 1.0x"),
    Row("fanout_q0", "fanout_q0", "fan-out QoS 0 (1 pub -> 50 sub)", "msg/s", "higher",
        ("ratio_min", 1.0), ">= 1.0x"),
    Row("fanout_q1", "fanout_q1", "fan-out QoS 1 (1 pub -> 50 sub)", "msg/s", "higher",
        ("ratio_min", 1.0), ">= 1.0x"),
    Row("connect_rate", "connect", "connect rate (CONNECT -> CONNACK)", "conn/s", "higher",
        ("ratio_min", 1.0), ">= 1.0x"),
    Row("connect_cpu", "connect", "broker CPU per connection", "us/conn", "lower",
        None, ""),
    Row("mem_1000", "connect", "memory per idle connection @ 1k", "B/conn", "lower",
        None, ""),
    Row("mem_5000", "connect", "memory per idle connection @ 5k", "B/conn", "lower",
        None, ""),
    Row("mem_10000", "connect", "memory per idle connection @ 10k", "B/conn", "lower",
        ("abs_max", MEMORY_TARGET), "<= 1.5 KB"),
    Row("retained", "retained", "10k retained -> new `#` subscriber", "s", "lower",
        ("ratio_max", 2.0), "<= 2x Mosquitto's time"),
    Row("latency_p50", "latency", "latency p50, QoS 1 at 1k msg/s", "ms", "lower",
        None, ""),
    Row("latency_p99", "latency", "latency p99, QoS 1 at 1k msg/s", "ms", "lower",
        ("ratio_max", 1.0), "<= Mosquitto's"),
)


def row_value(row: Row, result: Json) -> float | None:
    """The figure ``row`` takes from one scenario result."""
    if row.key == "connect_rate":
        v = result.get("value")
    elif row.key == "connect_cpu":
        v = result.get("broker_cpu_us_per_conn")
    elif row.key.startswith("mem_"):
        v = result.get("mem_per_conn", {}).get(row.key[4:])
    elif row.key == "latency_p50":
        v = result.get("p50_ms")
    elif row.key == "latency_p99":
        v = result.get("p99_ms")
    else:
        v = result.get("value")
    return None if v is None else float(v)


@dataclass
class Summary:
    row: Row
    medians: dict[str, float | None]
    values: dict[str, list[float]]
    loss: dict[str, int]
    dups: dict[str, int]
    errors: dict[str, int]
    ratio: float | None          # ours / mosquitto (raw)
    met: bool | None

    @property
    def speed_ratio(self) -> float | None:
        """Ratio to Mosquitto with higher = better (time and memory inverted)."""
        if self.ratio is None or self.ratio == 0:
            return None
        return self.ratio if self.row.better == "higher" else 1 / self.ratio


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(runs: Sequence[Json], brokers: Sequence[str]) -> list[Summary]:
    """Medians over rounds, per row and broker; loss and duplicates summed over all runs."""
    out: list[Summary] = []
    scenarios = {r["scenario"] for r in runs}
    for row in ROWS:
        if row.scenario not in scenarios:
            continue
        values: dict[str, list[float]] = {b: [] for b in brokers}
        loss = dict.fromkeys(brokers, 0)
        dups = dict.fromkeys(brokers, 0)
        errors = dict.fromkeys(brokers, 0)
        for run in runs:
            if run["scenario"] != row.scenario or run["broker"] not in values:
                continue
            b = run["broker"]
            res = run.get("result")
            if res is None:
                errors[b] += 1
                continue
            loss[b] += int(res.get("loss") or 0)
            dups[b] += int(res.get("dups") or 0)
            v = row_value(row, res)
            if v is not None:
                values[b].append(v)
        if not any(values.values()) and not any(errors.values()):
            continue  # e.g. memory at 10k in a --quick run that stops at 5k
        medians = {b: _median(values[b]) for b in brokers}
        ours, mosq = medians.get("ours"), medians.get("mosquitto")
        ratio = ours / mosq if ours is not None and mosq else None
        met: bool | None = None
        if row.target is not None:
            kind, limit = row.target
            if kind == "abs_max" and ours is not None:
                met = ours <= limit
            elif kind == "ratio_min" and ratio is not None:
                met = ratio >= limit
            elif kind == "ratio_max" and ratio is not None:
                met = ratio <= limit
        out.append(Summary(row, medians, values, loss, dups, errors, ratio, met))
    return out


def display_unit(row: Row) -> str:
    return {"B/conn": "KiB/conn", "s": "ms"}.get(row.unit, row.unit)


def fmt(row: Row, v: float | None) -> str:
    """``v`` (in ``row.unit``) as shown in ``display_unit(row)``."""
    if v is None:
        return "-"
    if row.unit in ("msg/s", "conn/s", "us/conn"):
        return f"{v:,.0f}"
    if row.unit == "B/conn":
        return f"{v / 1024:,.1f}"
    if row.unit == "s":
        return f"{v * 1000:,.0f}"
    if row.unit == "ms":
        return f"{v:.3f}"
    return f"{v:g}"


def _verdict(s: Summary) -> str:
    if s.row.target is None:
        return ""
    return {True: "met", False: "NOT met", None: "?"}[s.met]


def _lossdup(s: Summary, brokers: Sequence[str]) -> str:
    parts = []
    for b in brokers:
        flag = "!" if s.loss[b] or s.dups[b] else ""
        err = f" ({s.errors[b]} failed)" if s.errors[b] else ""
        parts.append(f"{s.loss[b]}/{s.dups[b]}{flag}{err}")
    return " · ".join(parts)


def _header(brokers: Sequence[str]) -> list[str]:
    cols = ["scenario", "unit"] + [LABELS[b] for b in brokers]
    cols += ["ours / Mosquitto", "target", "verdict",
             "loss/dups (" + ", ".join(LABELS[b] for b in brokers) + ")"]
    return cols


def _cells(s: Summary, brokers: Sequence[str]) -> list[str]:
    cells = [s.row.label, display_unit(s.row)] + [fmt(s.row, s.medians[b]) for b in brokers]
    cells.append(f"{s.ratio:.2f}x" if s.ratio is not None else "-")
    return cells + [s.row.target_text, _verdict(s), _lossdup(s, brokers)]


def text_table(summaries: Sequence[Summary], brokers: Sequence[str]) -> str:
    """An aligned plain-text table for the terminal."""
    rows = [_header(brokers)] + [_cells(s, brokers) for s in summaries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 or i >= len(r) - 3 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(summaries: Sequence[Summary], brokers: Sequence[str]) -> str:
    head = _header(brokers)
    align = ["---", "---"] + ["---:"] * (len(brokers) + 1) + ["---", "---", "---"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for s in summaries:
        cells = _cells(s, brokers)
        if s.met is False:
            cells[-2] = "**NOT met**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_line(meta: Json) -> str:
    m = meta["machine"]
    return (f"{meta['date'][:10]}, {m['cores']} cores {m['cpu_model']}, "
            f"{m['mem_gib']:.0f} GiB, Linux {m['kernel']}")


def markdown(summaries: Sequence[Summary], brokers: Sequence[str], meta: Json,
             chart: str | None) -> str:
    """The block to paste into README.md."""
    v = meta["versions"]
    lines = [
        f"### Benchmarks ({machine_line(meta)})",
        "",
        (f"`make bench` ({meta['rounds']} round{'s' if meta['rounds'] != 1 else ''}, medians"
        f"{', quick counts' if meta['quick'] else ''}): mqttbroker {v.get('ours', '?')}, "
        f"Mosquitto {v.get('mosquitto', '?')} (Debian), amqtt {v.get('amqtt', '?')} (PyPI); "
        "brokers and load generator on the same machine, a fresh broker per run. Ratios are "
        "ours / Mosquitto, measured in the same run."),
        "",
        markdown_table(summaries, brokers),
        "",
    ]
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    if chart:
        lines += ["", f"![benchmarks: ratio to Mosquitto]({chart})"]
    return "\n".join(lines) + "\n"


# --- chart -----------------------------------------------------------------------------------

COLORS = {"ours": "#1f77b4", "mosquitto": "#7f7f7f", "amqtt": "#ff7f0e"}


def chart(summaries: Sequence[Summary], brokers: Sequence[str], meta: Json,
          path: Path) -> None:
    """Three panels: ratio to Mosquitto per scenario (higher = better) with the targets;
    memory per idle connection; latency p50/p99."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratio_rows = [s for s in summaries if s.row.target and s.row.target[0] != "abs_max"]
    mem_rows = [s for s in summaries if s.row.key.startswith("mem_")]
    lat_rows = [s for s in summaries if s.row.key.startswith("latency_")]
    others = [b for b in brokers if b not in ("mosquitto",)]

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5),
                             gridspec_kw={"width_ratios": [2.2, 1, 1]})
    ax = axes[0]
    n = len(ratio_rows)
    height = 0.8 / max(1, len(others))
    for i, b in enumerate(others):
        ys = [n - 1 - k + (i - (len(others) - 1) / 2) * height for k in range(n)]
        vals = []
        for s in ratio_rows:
            m, mine = s.medians.get("mosquitto"), s.medians.get(b)
            if m and mine:
                vals.append(mine / m if s.row.better == "higher" else m / mine)
            else:
                vals.append(0.02)  # no figure: a stub at the left edge
        bars = ax.barh(ys, vals, height=height * 0.95, color=COLORS[b], label=LABELS[b])
        for bar, v in zip(bars, vals, strict=True):
            ax.text(max(bar.get_width(), 0.02) * 1.05, bar.get_y() + bar.get_height() / 2,
                    f"{v:.2f}", va="center", fontsize=8)
    for k, s in enumerate(ratio_rows):
        assert s.row.target is not None
        kind, limit = s.row.target
        t = limit if kind == "ratio_min" else 1 / limit
        y = n - 1 - k
        ax.plot([t, t], [y - 0.45, y + 0.45], color="red", linewidth=2,
                label="target" if k == 0 else None)
    ax.axvline(1.0, color=COLORS["mosquitto"], linestyle="--", linewidth=1,
               label="Mosquitto = 1")
    ax.set_xscale("log")
    ticks = [0.03, 0.1, 0.25, 0.5, 1, 2, 4, 8]
    ax.set_xlim(0.02, 16)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}x" for t in ticks])
    ax.set_yticks(range(n))
    ax.set_yticklabels([s.row.label for s in reversed(ratio_rows)], fontsize=8)
    ax.set_xlabel("ratio to Mosquitto, same run, log scale (higher is better; "
                  "retained and latency p99: Mosquitto's time / ours)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("throughput, connect rate, retained")

    ax = axes[1]
    if mem_rows:
        width = 0.8 / len(brokers)
        for i, b in enumerate(brokers):
            xs = [k + (i - (len(brokers) - 1) / 2) * width for k in range(len(mem_rows))]
            vals = [(s.medians.get(b) or 0) / 1024 for s in mem_rows]
            bars = ax.bar(xs, vals, width=width * 0.95, color=COLORS[b], label=LABELS[b])
            for bar, v in zip(bars, vals, strict=True):
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() * 1.08,
                        f"{v:.1f}", ha="center", fontsize=7)
        ax.axhline(MEMORY_TARGET / 1024, color="red", linewidth=1.5,
                   label="target 1.5 KB (at 10k)")
        ax.set_yscale("log")
        ax.set_xticks(range(len(mem_rows)))
        ax.set_xticklabels([s.row.key[4:] for s in mem_rows])
        ax.set_xlabel("idle connections")
        ax.set_ylabel("broker RSS growth per connection (KiB, log)")
        ax.legend(fontsize=8)
    ax.set_title("memory per idle connection")

    ax = axes[2]
    if lat_rows:
        width = 0.8 / len(brokers)
        for i, b in enumerate(brokers):
            xs = [k + (i - (len(brokers) - 1) / 2) * width for k in range(len(lat_rows))]
            vals = [s.medians.get(b) or 0 for s in lat_rows]
            bars = ax.bar(xs, vals, width=width * 0.95, color=COLORS[b], label=LABELS[b])
            for bar, v in zip(bars, vals, strict=True):
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{v:.2f}",
                        ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(lat_rows)))
        ax.set_xticklabels([s.row.key.split("_")[1] for s in lat_rows])
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
    ax.set_title("latency, QoS 1 at 1k msg/s")

    fig.suptitle(f"mqttbroker benchmarks — {machine_line(meta)}"
                 f"{' (quick)' if meta['quick'] else ''}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.report RESULTS.json``: table, markdown and chart again from a
    results file (e.g. after changing how they look), next to it."""
    import json
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m benchmarks.report RESULTS.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    data = json.loads(path.read_text())
    brokers = data["brokers"]
    summaries = summarize(data["runs"], brokers)
    png = path.with_suffix(".png")
    chart(summaries, brokers, data, png)
    md = markdown(summaries, brokers, data, f"benchmarks/results/{png.name}")
    path.with_suffix(".md").write_text(md)
    print(text_table(summaries, brokers))
    print(f"\nWrote {png} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
