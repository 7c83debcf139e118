"""Smoke test for ``benchmarks/storm.py`` (issue 18's reconnect storm): 100 clients with
persistent sessions drop at once, a QoS 1 message is queued for each, and all come back at
the same moment, against ours and Mosquitto: every one gets Session Present 1 and its queued
message exactly once, and the JSON says so. Bounded: ~5 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import storm

CLIENTS = 100


@pytest.mark.timeout(120)
def test_storm_bench_smoke(tmp_path: Path) -> None:
    status = storm.main(["--clients", str(CLIENTS), "--out", str(tmp_path)])
    data = json.loads((tmp_path / "storm.json").read_text())
    assert status == 0, data
    assert data["ok"] is True
    assert sorted(r["broker"] for r in data["runs"]) == ["mosquitto", "ours"]
    for r in data["runs"]:
        assert (r["subscribed"], r["reconnected"], r["session_present"], r["delivered"],
                r["wrong"]) == (CLIENTS, CLIENTS, CLIENTS, CLIENTS, 0), r
        assert r["all_delivered_s"] >= r["all_connacks_s"] > 0, r
