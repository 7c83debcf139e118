"""devices.report: percentiles, the per-second timeline, the summary table, JSON and PNG."""

from __future__ import annotations

import json
import math
import random
import statistics
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.report import Timeline, percentile, plot, progress_line, summary_table, write_report

T0 = 1_717_372_800.0

REPORT: dict[str, Any] = {
    "broker": "127.0.0.1:1883",
    "profile": "steady",
    "devices": 2000,
    "connected_peak": 1987,
    "duration_s": 60.0,
    "published": {"0": 12001, "1": 24002, "2": 6003},
    "delivered": {"0": 11950, "1": 24002, "2": 6003},
    "lost": {"0": 51, "1": 0, "2": 0},
    "duplicates": {"0": 0, "1": 17, "2": 0},
    "reordered": {"0": 0, "1": 4, "2": 0},
    "latency_ms": {"p50": 2.345, "p99": 18.25, "max": 250.5},
    "reconnects": 9,
}


# -- percentile -------------------------------------------------------------------------------


def test_percentile_known_values() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert percentile(values, 0) == 15.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 25) == 20.0
    assert percentile(values, 90) == pytest.approx(46.0)  # 40 + 0.6 * 10
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5  # unsorted input, even count
    assert percentile([7.0], 99) == 7.0


def test_percentile_empty_is_nan_and_p_is_checked() -> None:
    assert math.isnan(percentile([], 50))
    for bad in (-1.0, 100.5):
        with pytest.raises(ValueError):
            percentile([1.0], bad)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=200))
def test_percentile_matches_statistics(values: list[float]) -> None:
    assert percentile(values, 50) == pytest.approx(statistics.median(values), abs=1e-6)
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    for p, expected in zip((25, 50, 75), quartiles):
        assert percentile(values, p) == pytest.approx(expected, rel=1e-9, abs=1e-6)
    assert min(values) <= percentile(values, 99) <= max(values)


# -- Timeline ---------------------------------------------------------------------------------


def test_empty_timeline() -> None:
    series = Timeline().series()
    assert set(series) == {"t", "published_per_s", "delivered_per_s", "latency_p50_ms",
                           "latency_p99_ms", "connected"}
    assert all(v == [] for v in series.values())


def test_timeline_series() -> None:
    tl = Timeline()
    tl.add_connected(T0 + 0.1, 10)
    tl.add_published(T0 + 0.2, 5)
    tl.add_published(T0 + 0.9)
    for latency in (1.0, 2.0, 3.0):
        tl.add_delivered(T0 + 0.5, latency)
    tl.add_published(T0 + 3.5, 4)  # nothing in seconds 1 and 2
    tl.add_delivered(T0 + 3.6, 10.0)
    tl.add_connected(T0 + 3.2, 12)
    tl.add_connected(T0 + 3.1, 11)  # older sample of the same second: the latest wins
    s = tl.series()
    assert s["t"] == [0.0, 1.0, 2.0, 3.0]
    assert s["published_per_s"] == [6.0, 0.0, 0.0, 4.0]
    assert s["delivered_per_s"] == [3.0, 0.0, 0.0, 1.0]
    assert s["latency_p50_ms"][0] == 2.0
    assert s["latency_p99_ms"][0] == pytest.approx(2.98)
    assert math.isnan(s["latency_p50_ms"][1]) and math.isnan(s["latency_p99_ms"][2])
    assert s["latency_p50_ms"][3] == 10.0
    assert s["connected"] == [10.0, 10.0, 10.0, 12.0]  # a gauge, carried forward
    assert len({len(v) for v in s.values()}) == 1


def test_timeline_explicit_start() -> None:
    tl = Timeline(start=T0 - 2.5)
    tl.add_published(T0, 1)
    s = tl.series()
    assert s["t"] == [0.0, 1.0, 2.0, 3.0]
    assert s["published_per_s"] == [0.0, 0.0, 0.0, 1.0]
    assert s["connected"] == [0.0] * 4


def test_timeline_busy_second_uses_histogram_within_one_percent() -> None:
    rng = random.Random(5)
    latencies = [rng.lognormvariate(1.0, 0.8) for _ in range(20_000)]
    tl = Timeline()
    for latency in latencies:
        tl.add_delivered(T0 + 0.5, latency)
    s = tl.series()
    assert s["delivered_per_s"] == [20_000.0]
    assert s["latency_p50_ms"][0] == pytest.approx(percentile(latencies, 50), rel=0.01)
    assert s["latency_p99_ms"][0] == pytest.approx(percentile(latencies, 99), rel=0.01)


def test_timeline_is_thread_safe() -> None:
    tl = Timeline()

    def worker() -> None:
        for i in range(2000):
            tl.add_published(T0 + i / 1000)
            tl.add_delivered(T0 + i / 1000, 1.0)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(20):
        tl.series()  # reading while writing is fine
    for t in threads:
        t.join()
    s = tl.series()
    assert sum(s["published_per_s"]) == 8000 and sum(s["delivered_per_s"]) == 8000


# -- text -------------------------------------------------------------------------------------


def test_summary_table_contains_the_numbers() -> None:
    table = summary_table(REPORT)
    for number in ("2000", "1987", "60", "12001", "24002", "6003", "11950", "51", "17",
                   "2.345", "18.25", "250.5", "42006", "41955"):
        assert number in table, number
    assert "steady" in table and "127.0.0.1:1883" in table
    assert "reconnects 9" in table
    lines = table.splitlines()
    row = next(line for line in lines if line.lstrip().startswith("0 "))
    assert row.split() == ["0", "12001", "11950", "51", "0", "0", "0.42"]
    header = next(line for line in lines if line.startswith("QoS"))
    assert header.split() == ["QoS", "published", "delivered", "lost", "duplicates",
                              "reordered", "loss", "%"]


def test_summary_table_names_the_seed_and_the_simulated_start() -> None:
    first = summary_table({**REPORT, "seed": 42, "start_hour": 18.5}).splitlines()[0]
    assert first == ("profile steady  broker 127.0.0.1:1883  seed 42  "
                     "simulated start 18:30")
    assert "seed" not in summary_table(REPORT)  # an older report without one


def test_summary_table_tolerates_missing_parts() -> None:
    table = summary_table({"devices": 3, "published": {"1": 5}, "latency_ms": {"p50": None}})
    assert "devices 3" in table and "n/a" in table
    assert summary_table({})  # never raises on a sparse report


def test_progress_line_is_one_short_line() -> None:
    line = progress_line(75.4, 1500, 2345.6, 2340.2, 7)
    assert "\n" not in line and "\r" not in line and len(line) < 80
    assert "1:15" in line and "1500" in line and "2346" in line and "2340" in line
    assert line.rstrip().endswith("7")
    # fixed width: a shorter number does not leave stale characters behind a \r
    assert len(progress_line(1.0, 1, 1.0, 1.0, 0)) == len(line)


# -- files ------------------------------------------------------------------------------------


def test_write_report_sorted_indented_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_report({**REPORT, "latency_ms": {"p50": math.nan, "p99": 1.0, "max": math.inf},
                  "by_int_key": {0: 1, 1: 2}}, path)
    text = path.read_text()
    assert text.startswith("{\n  \"broker\"")  # sorted, two-space indent
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["latency_ms"] == {"max": None, "p50": None, "p99": 1.0}
    assert data["by_int_key"] == {"0": 1, "1": 2}
    assert list(data) == sorted(data)
    assert not list(tmp_path.glob("*.tmp"))


def sample_series() -> dict[str, list[float]]:
    tl = Timeline()
    rng = random.Random(2)
    for second in range(60):
        connected = min(500, second * 25)
        tl.add_connected(T0 + second, connected)
        tl.add_published(T0 + second + 0.1, connected // 5)
        for _ in range(connected // 5):
            tl.add_delivered(T0 + second + rng.random(), rng.lognormvariate(1.0, 0.5))
    return tl.series()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"  # PNG spec (ISO/IEC 15948) section 5.2


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "run.png"
    plot(sample_series(), path, title="500 devices, profile steady")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000  # two panels of lines, not an empty canvas
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1000, 700)


def test_plot_copes_with_empty_and_sparse_series(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot(Timeline().series(), tmp_path / "empty.png")
    plot({"t": [0.0, 1.0, 2.0], "published_per_s": [1.0, 2.0, 3.0],
          "latency_p50_ms": [None, 1.0, math.nan]},  # type: ignore[list-item]
         str(tmp_path / "sparse.png"))
    for name in ("empty.png", "sparse.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
