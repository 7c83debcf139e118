"""Smoke test for ``benchmarks/scale.py`` (the 100,000-device run, issue 18): 300 devices on
``serve --workers 2`` (a cluster over its own redis-server), each subscribed to its own topic
and the broadcast one; one broadcast message and one message per device reach every device
exactly once, and the JSON says so with each worker's sockets and RSS. Bounded: ~5 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import scale

DEVICES = 300


@pytest.mark.timeout(120)
def test_scale_bench_smoke(tmp_path: Path) -> None:
    status = scale.main(["--devices", str(DEVICES), "--workers", "2", "--procs", "2",
                         "--out", str(tmp_path)])
    data = json.loads((tmp_path / f"scale-{DEVICES}-w2.json").read_text())
    assert status == 0, data
    assert data["ok"] is True
    c = data["connect"]
    assert (c["subscribed"], c["failed"]) == (DEVICES, 0), c
    assert sorted(c["workers"]) == ["scale-w0", "scale-w1"]
    assert sum(w["sockets"] for w in c["workers"].values()) >= DEVICES
    assert all(w["rss_mib"] > 0 for w in c["workers"].values())
    assert data["broadcast"]["got_all"] == DEVICES
    assert data["unicast"]["got_own"] == DEVICES
    assert data["unicast"]["devices_wrong"] == 0
