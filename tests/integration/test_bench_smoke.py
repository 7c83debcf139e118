"""Smoke test for the benchmark suite: the load generator's fan-in QoS 1 scenario against our
broker, started the way ``make bench`` starts it (a separate process via
``benchmarks.brokers``), with tiny counts. Bounded: a few seconds."""

from __future__ import annotations

import pytest

from benchmarks import brokers, loadgen


@pytest.mark.timeout(30)
def test_bench_fan_in_qos1_loses_nothing() -> None:
    with brokers.running("ours") as b:
        result = loadgen.fan_in(loadgen.Probe(b.port, b.pid), 1, publishers=4, count=2_000,
                                cap_s=10.0)
        assert b.proc.poll() is None, f"broker exited early:\n{b.log_tail()}"
    assert result["published"] == 2_000
    assert result["acked"] == 2_000
    assert result["received"] == 2_000
    assert result["loss"] == 0
    assert result["dups"] == 0
    assert result["unexpected"] == 0
    assert result["value"] > 0
