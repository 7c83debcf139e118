"""Smoke test for ``benchmarks/inproc.py``: each mode runs in a fresh interpreter with tiny
counts, and says a positive CPU time per message or connection. ``--pingpong`` also checks
that every delivery was acknowledged over its sockets (it raises otherwise). Bounded: a few
seconds each."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "unit"), [
    (["--qos", "1", "--count", "400"], "us CPU per message"),
    (["--connect", "--count", "100"], "us CPU per connection"),
    (["--pingpong", "--count", "500"], "us CPU per message"),
])
def test_inproc_mode_reports_a_figure(args: list[str], unit: str) -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.inproc", *args, "--reps", "2"],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    m = re.search(r"min ([0-9.]+), median ([0-9.]+) " + unit, out.stdout)
    assert m is not None, out.stdout
    assert 0 < float(m.group(1)) <= float(m.group(2))
