"""Smoke test for ``benchmarks/bridge_drain.py``: a 5,000-message backlog at our edge (SQLite,
``sync: commit``) drains to a Mosquitto cloud started afterwards, with the PINGREQ probe and
the live traffic at the edge running. Asserts that every message arrived, none out of order,
that the probe measured during the drain and that the script wrote its report. The latency
target is the benchmark's own verdict, not asserted here (timing on a shared machine).
Bounded: ~10 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bridge_drain

COUNT = 5_000


@pytest.mark.timeout(120)
def test_bridge_drain_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "drain"
    status = bridge_drain.main(["--quick", "--count", str(COUNT), "--fill-cap", "30",
                                "--drain-cap", "30", "--stall", "15", "--first-wait", "20",
                                "--out", str(out)])
    assert (tmp_path / "drain.json").exists(), f"no report written (exit status {status})"
    data = json.loads((tmp_path / "drain.json").read_text())
    fill, res = data["fill"], data["result"]
    assert fill["messages"] == COUNT and fill["backlog_metric"] == COUNT, fill
    assert res["why"] == "complete", res
    assert res["delivered_unique"] == COUNT, res
    assert res["loss"] == 0, res
    assert res["out_of_order"] == 0, res
    assert res["unexpected"] == 0, res
    assert res["backlog_after"] == 0, res
    assert res["ping_during"]["n"] > 0 and res["ping_during"]["max"] is not None, res
    assert res["live_sent"] > 0 and res["live_lost"] == 0, res
    md = (tmp_path / "drain.md").read_text()
    assert "| measure | value | target | verdict |" in md
    assert "PINGREQ RTT at the edge during the drain" in md
    assert (tmp_path / "drain.png").stat().st_size > 0
    # the exit status is 1 only for the latency target here (loss/order asserted above)
    assert status == 0 or res["failures"] and all("PINGREQ" in f for f in res["failures"]), res
