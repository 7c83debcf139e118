"""Smoke test for ``benchmarks/bridge.py``: one tiny round (400 messages a run) of Mosquitto's
bridge and ours (this checkout) from an edge to a Mosquitto cloud, QoS 0 and 1, each on fresh
brokers started as the benchmark starts them. Asserts that every run worked, that QoS 1 lost
nothing through either bridge, and that the script wrote its table. Bounded: ~10 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bridge

COUNT = 400


@pytest.mark.timeout(150)
def test_bridge_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bridge"
    status = bridge.main(["--count", str(COUNT), "--rounds", "1", "--cap", "20",
                          "--drain", "20", "--out", str(out)])
    data = json.loads((tmp_path / "bridge.json").read_text())
    runs = data["runs"]
    assert sorted((r["side"], r["qos"]) for r in runs) == [
        ("mosquitto", 0), ("mosquitto", 1), ("ours", 0), ("ours", 1)]
    for r in runs:
        assert "error" not in r, r
        res = r["result"]
        assert res["published"] == COUNT, r
        assert res["value"] > 0, r
        assert res["unexpected"] == 0, r
        if r["qos"] == 1:
            assert res["acked"] == COUNT, r
            assert res["loss"] == 0, r
            assert res["unique"] == COUNT, r
    md = (tmp_path / "bridge.md").read_text()
    assert "| QoS | Mosquitto -> Mosquitto (msg/s) | ours -> Mosquitto (msg/s) |" in md
    assert md.count("\n| 0 | ") == 1 and md.count("\n| 1 | ") == 1, md
    assert (tmp_path / "bridge.png").stat().st_size > 0
    assert status == 0
