"""Smoke test for benchmarks/mqttsn.py: ``--quick`` with tiny sizes against our broker (started
as a subprocess, as the benchmark does). Checks that every client got ready over MQTT-SN and
MQTT/TCP, that QoS 1 lost nothing either way, and that the report was written; no timing
asserts. Bounded: a few seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_bench_mqttsn_quick(tmp_path: Path) -> None:
    out = tmp_path / "mqttsn"
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.mqttsn", "--quick", "--clients", "60",
         "--count", "100", "--publishers", "2", "--procs", "2", "--settle", "0.2",
         "--cap", "10", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=55, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads((tmp_path / "mqttsn.json").read_text())
    assert (tmp_path / "mqttsn.md").read_text().startswith("### MQTT-SN vs MQTT/TCP")
    for proto in ("sn", "tcp"):
        mem = data["memory"][proto]
        assert mem["ok"] == 60 and mem["failed"] == 0, mem
        assert mem["broker_alive"]
    assert data["memory"]["sn"]["asleep"] == 12
    assert not data["errors"]
    runs = [r for r in data["runs"] if r["qos"] == 1]
    assert {r["proto"] for r in runs} == {"sn", "tcp"}
    for r in runs:
        assert r["result"]["published"] == 200
        assert r["result"]["loss"] == 0, r
        assert r["result"]["acked"] == 200, r
    for r in data["runs"]:
        assert r["result"]["received"] > 0, r
