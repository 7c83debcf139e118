"""What a fleet run leaves behind: a per-second timeline, a summary table, JSON and a PNG plot.

Nothing here talks to the network. :class:`Timeline` is thread-safe (the verifier's paho thread
adds deliveries while the runner adds publications and reads the series for the live line).
matplotlib is imported only inside :func:`plot`, so everything else works without it.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "Timeline",
    "clock",
    "percentile",
    "plot",
    "progress_line",
    "summary_table",
    "verdict",
    "write_report",
]

QOS_KEYS: Final = ("0", "1", "2")
COUNTERS: Final = ("published", "delivered", "lost", "duplicates", "reordered")


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values`` with linear interpolation between ranks.

    This is the "linear" method (Hyndman & Fan type 7), the default of NumPy and of
    ``statistics.quantiles(method="inclusive")``: p=0 is the minimum, p=100 the maximum, p=50
    the median. An empty input gives NaN (there is no latency when nothing arrived).
    """
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be between 0 and 100, got {p}")
    if not values:
        return math.nan
    ordered = sorted(values)
    return _percentile_sorted(ordered, p)


def _percentile_sorted(ordered: Sequence[float], p: float) -> float:
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


class _LatencyBucket:
    """Latencies of one second: exact while small, a log histogram once large.

    Up to :attr:`EXACT_LIMIT` values are kept as they are (exact percentiles). Beyond that they
    are folded into bins 1 % wide (relative), so memory stays bounded at tens of thousands of
    messages per second and percentiles stay within 0.5 % of the exact value.
    """

    __slots__ = ("bins", "cache", "count", "exact")
    EXACT_LIMIT: Final = 1024
    RATIO: Final = 1.01
    FLOOR_MS: Final = 1e-3  # histogram values below 1 microsecond count as 1 microsecond

    def __init__(self) -> None:
        self.exact: list[float] | None = []
        self.bins: dict[int, int] = {}
        self.count = 0
        self.cache: tuple[float, float] | None = None

    def _bin(self, value: float) -> int:
        return math.floor(math.log(max(value, self.FLOOR_MS) / self.FLOOR_MS, self.RATIO))

    def add(self, latency_ms: float) -> None:
        self.count += 1
        self.cache = None
        if self.exact is not None:
            self.exact.append(latency_ms)
            if len(self.exact) <= self.EXACT_LIMIT:
                return
            for value in self.exact:
                self._add_bin(value)
            self.exact = None
            return
        self._add_bin(latency_ms)

    def _add_bin(self, value: float) -> None:
        key = self._bin(value)
        self.bins[key] = self.bins.get(key, 0) + 1

    def _hist_percentile(self, p: float) -> float:
        keys = sorted(self.bins)
        cumulative: list[int] = []
        total = 0
        for key in keys:
            total += self.bins[key]
            cumulative.append(total)
        # the value of rank ceil(p% of n), at the bin's geometric middle
        rank = max(1, math.ceil(p / 100.0 * total))
        key = keys[bisect.bisect_left(cumulative, rank)]
        return float(self.FLOOR_MS * self.RATIO ** (key + 0.5))

    def p50_p99(self) -> tuple[float, float]:
        if self.cache is None:
            if self.count == 0:
                self.cache = (math.nan, math.nan)
            elif self.exact is not None:
                ordered = sorted(self.exact)
                self.cache = (_percentile_sorted(ordered, 50.0), _percentile_sorted(ordered, 99.0))
            else:
                self.cache = (self._hist_percentile(50.0), self._hist_percentile(99.0))
        return self.cache


class Timeline:
    """Per-second buckets of what happened during a run, for the live line and the plot.

    Times are seconds since the epoch (``time.time()``); bucket ``i`` holds ``[start + i,
    start + i + 1)``. ``start`` defaults to the whole second of the earliest time added.
    Rates are counts per bucket, so the last (partial) second reads low.
    """

    def __init__(self, start: float | None = None) -> None:
        self._start = None if start is None else math.floor(start)
        self._lock = threading.Lock()
        self._published: dict[int, int] = {}
        self._delivered: dict[int, int] = {}
        self._latency: dict[int, _LatencyBucket] = {}
        self._connected: dict[int, tuple[float, int]] = {}  # second -> (latest t, count)

    def add_published(self, t: float, n: int = 1) -> None:
        """``n`` messages were published at ``t``."""
        second = math.floor(t)
        with self._lock:
            self._published[second] = self._published.get(second, 0) + n

    def add_delivered(self, t: float, latency_ms: float) -> None:
        """One message arrived at the subscriber at ``t``, ``latency_ms`` after it was made."""
        second = math.floor(t)
        with self._lock:
            self._delivered[second] = self._delivered.get(second, 0) + 1
            bucket = self._latency.get(second)
            if bucket is None:
                bucket = self._latency[second] = _LatencyBucket()
            bucket.add(latency_ms)

    def add_connected(self, t: float, connected: int) -> None:
        """``connected`` devices were connected at ``t`` (a gauge: the latest sample counts)."""
        second = math.floor(t)
        with self._lock:
            previous = self._connected.get(second)
            if previous is None or t >= previous[0]:
                self._connected[second] = (t, connected)

    def series(self) -> dict[str, list[float]]:
        """Equal-length lists, one entry per second from the start to the last second seen.

        Keys: ``t`` (seconds from the start), ``published_per_s``, ``delivered_per_s``,
        ``latency_p50_ms`` and ``latency_p99_ms`` (NaN in seconds with no delivery, which
        matplotlib draws as a gap and :func:`write_report` writes as ``null``), ``connected``
        (carried forward from the latest sample; 0 before the first).
        """
        with self._lock:
            seconds = [*self._published, *self._delivered, *self._connected]
            out: dict[str, list[float]] = {
                key: []
                for key in ("t", "published_per_s", "delivered_per_s", "latency_p50_ms",
                            "latency_p99_ms", "connected")
            }
            if not seconds:
                return out
            first = self._start if self._start is not None else min(seconds)
            last = max(seconds)
            connected = 0.0
            for second in range(first, last + 1):
                out["t"].append(float(second - first))
                out["published_per_s"].append(float(self._published.get(second, 0)))
                out["delivered_per_s"].append(float(self._delivered.get(second, 0)))
                bucket = self._latency.get(second)
                p50, p99 = bucket.p50_p99() if bucket is not None else (math.nan, math.nan)
                out["latency_p50_ms"].append(p50)
                out["latency_p99_ms"].append(p99)
                sample = self._connected.get(second)
                if sample is not None:
                    connected = float(sample[1])
                out["connected"].append(connected)
            return out


# -- text -------------------------------------------------------------------------------------


def _num(value: Any, digits: int = 3) -> str:
    """A number as a short string: ints plainly, floats rounded, missing/NaN as n/a."""
    if value is None or isinstance(value, bool):
        return "n/a" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def _count(report: Mapping[str, Any], key: str, qos: str) -> int | None:
    per_qos = report.get(key)
    if not isinstance(per_qos, Mapping):
        return None
    value = per_qos.get(qos, per_qos.get(int(qos)))
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return " ".join(f"{k}={_describe(v)}" for k, v in value.items())
    return _num(value)


def clock(hour: float) -> str:
    """Hours since midnight as ``HH:MM`` (14.5 -> ``"14:30"``), for the simulated start."""
    minutes = round(hour * 60) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def summary_table(report: Mapping[str, Any]) -> str:
    """A plain-text summary of a fleet report for a terminal.

    The first line names the profile, the broker and, when the report has them, the seed
    (``devices run --seed`` replays the run's traffic) and the simulated time of day the run
    started at. Then one row per QoS with published/delivered/lost/duplicates/reordered
    counts (and generated, when the report has it) and the loss rate (lost / published, in
    %), a total row, then latency p50/p99/max, devices, connected peak, duration, and any
    other top-level numbers in the report. A QoS whose counts are all zero gets no row.
    """
    columns = (["generated"] if isinstance(report.get("generated"), Mapping) else [])
    columns += list(COUNTERS)
    header = ["QoS", *columns, "loss %"]
    rows: list[list[str]] = []
    totals = dict.fromkeys(columns, 0)
    for qos in QOS_KEYS:
        counts = {c: _count(report, c, qos) for c in columns}
        if all(v is None or v == 0 for v in counts.values()):
            continue
        for c, v in counts.items():
            totals[c] += v or 0
        rows.append([qos, *(_num(counts[c]) for c in columns), _loss_pct(counts)])
    rows.append(["all", *(str(totals[c]) for c in columns), _loss_pct(dict(totals))])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths)).rstrip()

    latency = report.get("latency_ms")
    lat: Mapping[str, Any] = latency if isinstance(latency, Mapping) else {}
    rule = line(["-" * w for w in widths])
    first = f"profile {_describe(report.get('profile'))}  broker {_describe(report.get('broker'))}"
    if "seed" in report:
        first += f"  seed {_describe(report['seed'])}"
    hour = report.get("start_hour")
    if isinstance(hour, (int, float)) and not isinstance(hour, bool) and math.isfinite(hour):
        first += f"  simulated start {clock(float(hour))}"
    lines = [
        first,
        (
            f"devices {_num(report.get('devices'))}  connected peak "
            f"{_num(report.get('connected_peak'))}  duration {_num(report.get('duration_s'), 1)} s"
        ),
        "",
        line(header),
        rule,
        *(line(r) for r in rows[:-1]),
        *([rule] if len(rows) > 1 else []),
        line(rows[-1]),
        "",
        (
            f"latency ms  p50 {_num(lat.get('p50'))}  p99 {_num(lat.get('p99'))}  "
            f"max {_num(lat.get('max'))}"
        ),
    ]
    shown = {"profile", "broker", "seed", "start_hour", "devices", "connected_peak",
             "duration_s", "latency_ms", "generated", *COUNTERS}
    extras = [
        f"{key} {_num(value)}"
        for key, value in sorted(report.items())
        if key not in shown and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    if extras:
        lines.append("  ".join(extras))
    link = report.get("link")
    if isinstance(link, Mapping):
        lines.append(_link_line(link))
    sn = report.get("mqttsn")
    if isinstance(sn, Mapping):
        lines.extend(_mqttsn_lines(report, sn))
    result = report.get("verdict")
    if isinstance(result, Mapping):
        lines.append(_verdict_line(result))
    return "\n".join(lines)


def _link_line(link: Mapping[str, Any]) -> str:
    windows = [w for w in link.get("windows") or [] if isinstance(w, Mapping)]
    after = "/".join(_num(w.get("reconnected_after_s")) for w in windows) or "n/a"
    made = link.get("made_while_cut")
    while_cut = ("  made while cut (QoS 0/1/2) "
                 + "/".join(_num(made.get(q)) for q in QOS_KEYS)) if isinstance(made, Mapping) \
        else ""
    return (
        f"link {link.get('relay')} -> {link.get('upstream')}  cuts {_num(link.get('cuts'))}  "
        f"down {_num(link.get('down_s'), 1)} s  dropped "
        f"{sum(int(w.get('dropped_connections') or 0) for w in windows)}  refused "
        f"{_num(link.get('refused'))}  bridge back after {after} s{while_cut}"
    )


def _mqttsn_lines(report: Mapping[str, Any], sn: Mapping[str, Any]) -> list[str]:
    lines = []
    protocols = report.get("protocols")
    if isinstance(protocols, Mapping):
        for name, p in protocols.items():
            if not isinstance(p, Mapping) or not p.get("devices"):
                continue
            per = "  ".join(
                f"QoS {q} {_num(_count(p, 'published', q))}/{_num(_count(p, 'delivered', q))}"
                f"/{_num(_count(p, 'lost', q))}"
                for q in QOS_KEYS if _count(p, "published", q))
            lines.append(f"{name:6s} devices {_num(p.get('devices'))}  "
                         f"published/delivered/lost {per or 'none'}")
    cmd = sn.get("commands")
    c: Mapping[str, Any] = cmd if isinstance(cmd, Mapping) else {}
    lines.append(
        f"mqttsn gateway {sn.get('gateway')}  sleep cycles {_num(sn.get('sleeps'))}  "
        f"wake-ups {_num(sn.get('wakeups'))}  beacons {_num(sn.get('beacons'))}/"
        f"{_num(sn.get('beacons_delivered'))} (sent/delivered)  retransmissions "
        f"{_num(sn.get('retransmissions'))}")
    lines.append(
        f"commands to sleepers: sent {_num(c.get('sent'))}  delivered {_num(c.get('delivered'))}"
        f"  collected at wake-up {_num(c.get('collected_on_wakeup'))}  lost "
        f"{_num(c.get('lost'))}  duplicates {_num(c.get('duplicates'))}")
    return lines


def _verdict_line(result: Mapping[str, Any]) -> str:
    notes = [str(n) for n in result.get("notes") or []]
    if result.get("ok"):
        text = "verdict OK: no QoS 1/2 message lost, none downgraded, QoS 2 exactly once"
    else:
        text = "verdict FAIL: " + "; ".join(str(p) for p in result.get("problems") or [])
    return text + ("" if not notes else " (" + "; ".join(notes) + ")")


def _loss_pct(counts: Mapping[str, int | None]) -> str:
    base = counts.get("published") or counts.get("generated") or 0
    lost = counts.get("lost") or 0
    return f"{100.0 * lost / base:.2f}" if base else "n/a"


def progress_line(elapsed: float, connected: int, pub_rate: float, del_rate: float,
                  lost_so_far: int, link: bool | None = None) -> str:
    """One fixed-width line for a display refreshed with ``"\\r"`` (no newline, < 80 chars).

    ``link`` (a run with a link relay): is the link between edge and cloud up (``link up``)
    or cut (``link CUT``) right now."""
    minutes, seconds = divmod(max(0, int(elapsed)), 60)
    line = (
        f"{minutes:3d}:{seconds:02d}  connected {connected:6d}  "
        f"pub {pub_rate:8.0f}/s  del {del_rate:8.0f}/s  lost {lost_so_far:6d}"
    )
    if link is not None:
        line += "  link up " if link else "  link CUT"
    return line


def verdict(report: Mapping[str, Any]) -> dict[str, Any]:
    """What a run proves: ``{"ok": bool, "problems": [...], "notes": [...]}``.

    ``ok`` when no QoS 1/2 message the broker acknowledged was lost, none arrived at a lower
    QoS than it was published with (a bridge with a lower QoS in between), no QoS 2 message
    arrived twice, every worker reported and every payload decoded; and, with a link relay
    (``link``), when every planned cut happened while a bridge was connected through it
    (it dropped a live connection) and the bridge got through again after each one. QoS 1
    duplicates are allowed (at least once) and only noted, as is QoS 0 loss.
    """
    problems: list[str] = []
    notes: list[str] = []

    def count(key: str, qos: str) -> int:
        return _count(report, key, qos) or 0

    for qos in ("1", "2"):
        if count("lost", qos):
            problems.append(f"{count('lost', qos)} QoS {qos} message(s) acknowledged by the "
                            f"broker never arrived")
        if count("downgraded", qos):
            problems.append(f"{count('downgraded', qos)} QoS {qos} message(s) arrived at a "
                            f"lower QoS than they were published with")
    if count("duplicates", "2"):
        problems.append(f"{count('duplicates', '2')} QoS 2 message(s) arrived more than once")
    workers, procs = report.get("workers_reported"), report.get("processes")
    if isinstance(workers, int) and isinstance(procs, int) and workers < procs:
        problems.append(f"only {workers} of {procs} worker processes reported: their "
                        f"devices' messages are not counted")
    if report.get("bad_payloads"):
        problems.append(f"{report['bad_payloads']} payload(s) did not decode")
    link = report.get("link")
    if isinstance(link, Mapping):
        windows = link.get("windows") or []
        planned = link.get("planned_cuts", len(windows))
        if len(windows) < planned:
            problems.append(f"only {len(windows)} of {planned} link cuts happened")
        for i, cut in enumerate(windows):
            if not cut.get("dropped_connections"):
                problems.append(f"link cut {i} dropped no live connection: no bridge was "
                                f"connected through the relay when it was cut")
            if cut.get("reconnected_after_s") is None:
                problems.append(f"no bridge got through the relay again after link cut {i}")
    sn = report.get("mqttsn")
    if isinstance(sn, Mapping):
        cmd = sn.get("commands")
        c: Mapping[str, Any] = cmd if isinstance(cmd, Mapping) else {}
        if c.get("lost"):
            problems.append(f"{c['lost']} QoS 1 command(s) to sleeping MQTT-SN sensors, "
                            f"acknowledged by the broker, never reached them")
        if c.get("duplicates"):
            notes.append(f"{c['duplicates']} command(s) reached a sensor twice (QoS 1: "
                         f"allowed)")
        beacons, got = sn.get("beacons"), sn.get("beacons_delivered")
        if isinstance(beacons, int) and isinstance(got, int) and got < beacons:
            notes.append(f"{beacons - got} QoS -1 beacon(s) lost (UDP, no acknowledgement: "
                         f"allowed)")
    if count("duplicates", "1"):
        notes.append(f"{count('duplicates', '1')} QoS 1 duplicate(s) (at least once: allowed)")
    if count("lost", "0"):
        notes.append(f"{count('lost', '0')} QoS 0 message(s) lost (at most once: allowed)")
    return {"ok": not problems, "problems": problems, "notes": notes}


# -- files ------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Plain JSON data: string keys, lists, finite numbers (NaN/inf become null)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def write_report(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the report as indented JSON with sorted keys (strict JSON: NaN is written null).

    Written to a temporary file and renamed, so a reader never sees half a report.
    """
    text = json.dumps(_jsonable(report), indent=2, sort_keys=True, allow_nan=False) + "\n"
    target = os.fspath(path)
    tmp = f"{target}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, target)


def _floats(values: Sequence[Any] | None, n: int) -> list[float]:
    """``n`` floats from a series (None -> NaN; short or missing series padded with NaN)."""
    out = [math.nan if v is None else float(v) for v in (values or [])][:n]
    return out + [math.nan] * (n - len(out))


def plot(series: Mapping[str, Sequence[float]], path: str | os.PathLike[str],
         title: str = "") -> None:
    """Draw a :meth:`Timeline.series` as a PNG with two panels sharing the time axis.

    Top: messages per second published and delivered. Bottom: latency p50 and p99 (log scale
    when they span more than two decades), with the connected-device count on a twin axis.
    Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch, thread-safe).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = _floats(series.get("t"), len(series.get("t") or []))
    n = len(t)
    fig = Figure(figsize=(10.0, 7.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    rate_ax, lat_ax = fig.subplots(2, 1, sharex=True, height_ratios=(1.0, 1.0))
    if title:
        fig.suptitle(title)

    rate_ax.plot(t, _floats(series.get("published_per_s"), n), label="published",
                 color="tab:blue", linewidth=1.2)
    rate_ax.plot(t, _floats(series.get("delivered_per_s"), n), label="delivered",
                 color="tab:green", linewidth=1.2, linestyle="--")
    rate_ax.set_ylabel("messages / s")
    rate_ax.set_ylim(bottom=0)
    rate_ax.grid(True, alpha=0.3)
    rate_ax.legend(loc="upper left")
    rate_ax.set_title("throughput", loc="left", fontsize="medium")

    p50 = _floats(series.get("latency_p50_ms"), n)
    p99 = _floats(series.get("latency_p99_ms"), n)
    lat_ax.plot(t, p50, label="latency p50", color="tab:purple", linewidth=1.2)
    lat_ax.plot(t, p99, label="latency p99", color="tab:red", linewidth=1.2)
    positive = [v for v in (*p50, *p99) if math.isfinite(v) and v > 0]
    if positive and max(positive) / min(positive) > 100.0:
        lat_ax.set_yscale("log")
    else:
        lat_ax.set_ylim(bottom=0)
    lat_ax.set_ylabel("latency (ms)")
    lat_ax.set_xlabel("time since start (s)")
    lat_ax.grid(True, alpha=0.3)
    lat_ax.set_title("end-to-end latency", loc="left", fontsize="medium")

    conn_ax = lat_ax.twinx()
    conn_ax.plot(t, _floats(series.get("connected"), n), label="connected devices",
                 color="tab:gray", linewidth=1.0, alpha=0.8, drawstyle="steps-post")
    conn_ax.set_ylabel("connected devices")
    conn_ax.set_ylim(bottom=0)
    lat_ax.set_zorder(conn_ax.get_zorder() + 1)  # latency lines over the device count
    lat_ax.patch.set_visible(False)
    handles = lat_ax.get_legend_handles_labels()
    twin = conn_ax.get_legend_handles_labels()
    lat_ax.legend(handles[0] + twin[0], handles[1] + twin[1], loc="upper left")

    if n == 0:
        rate_ax.text(0.5, 0.5, "no data", transform=rate_ax.transAxes, ha="center")
    fig.savefig(os.fspath(path), format="png")
