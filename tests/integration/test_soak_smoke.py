"""The soak harness (``benchmarks/soak.py``) end to end: our broker as a subprocess from
``configs/default.yaml`` (its database in a temporary folder), a mixed device fleet (steady,
flaky, reconnect storms), RSS and open files sampled.

* ``test_soak_smoke``: bounded, ~18 s, 50 devices: the JSON has samples, no QoS 1/2 message
  acknowledged by the broker was lost, and the broker's open files went back to where they
  started once every client had gone.
* ``test_soak_full`` (slow, opt-in): ``SOAK_MINUTES=10 [SOAK_DEVICES=500] pytest -m slow
  tests/integration/test_soak_smoke.py``; also requires flat RSS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks import soak

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "default.yaml"


def run_soak(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "soak"
    status = soak.main(["--config", str(CONFIG), "--out", str(out), *args])
    result: dict[str, Any] = json.loads((tmp_path / "soak.json").read_text())
    assert (tmp_path / "soak.png").stat().st_size > 0
    return status, result


def assert_sound(result: dict[str, Any], devices: int) -> None:
    samples = result["samples"]
    run = [s for s in samples if s["phase"] == "run"]
    assert len(run) >= 5, samples
    assert all(s["rss_mib"] > 0 and s["fds"] > 0 for s in samples)
    assert max(s["connected"] for s in run) >= devices * 0.8, run
    fleet = result["fleet"]
    assert fleet["workers_reported"] == fleet["workers"], fleet
    assert fleet["bad_payloads"] == 0
    assert fleet["published"]["1"] > 0, fleet
    assert fleet["lost"]["1"] == 0, fleet
    assert fleet["lost"]["2"] == 0, fleet
    assert fleet["duplicates"]["2"] == 0, fleet
    assert fleet["reconnects"] > 0, fleet  # the storms and flaky links really happened
    checks = result["checks"]
    assert checks["broker_alive"], checks
    assert checks["fds_end"] is not None
    assert checks["fds_end"] <= checks["fds_start"] + soak.FD_SLACK, checks
    assert not checks["errors"], checks


@pytest.mark.timeout(120)
def test_soak_smoke(tmp_path: Path) -> None:
    """12 s, 50 devices reporting 5x as often as in the field, storms every 5 s."""
    status, result = run_soak(tmp_path, "--minutes", "0.2", "--devices", "50",
                              "--interval-scale", "0.2", "--storm-every", "5",
                              "--sample-every", "1")
    assert_sound(result, 50)
    assert result["flatness"]["flat"] is None  # too short to judge
    assert status == 0, result["checks"]


@pytest.mark.slow
@pytest.mark.skipif("SOAK_MINUTES" not in os.environ,
                    reason="set SOAK_MINUTES (and optionally SOAK_DEVICES) to run the full soak")
@pytest.mark.timeout(int(float(os.environ.get("SOAK_MINUTES", "10")) * 60 + 300))
def test_soak_full(tmp_path: Path) -> None:
    minutes = os.environ["SOAK_MINUTES"]
    devices = int(os.environ.get("SOAK_DEVICES", "500"))
    status, result = run_soak(tmp_path, "--minutes", minutes, "--devices", str(devices))
    assert_sound(result, devices)
    if float(minutes) * 60 >= soak.JUDGE_MIN_S:
        assert result["flatness"]["flat"] is True, result["flatness"]
    assert status == 0, result["checks"]
