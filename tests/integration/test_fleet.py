"""The device fleet against a real broker: ours (started by the fixture) and Mosquitto (started
by the test, from Debian's ``mosquitto`` package). Bounded: a few hundred devices, seconds."""

from __future__ import annotations

from typing import Any

import pytest

from devices.fleet import run_fleet
from devices.profile import Profile, load_profile
from tests.conftest import BrokerThread

# a quick profile: every sensor reports five times as often as in the field
FAST = Profile(name="test-fast", interval_scale=0.2, ramp_up=1.0, drain=5.0)
# what the devices send (readings, door events, the simulated hour) is a function of the seed
# (devices/seeding.py); the traffic the tests count on holds for every seed
SEED = 1


def assert_counts_add_up(report: dict[str, Any], devices: int) -> None:
    """What the report says must be consistent with itself."""
    assert report["devices"] == devices
    assert report["seed"] == SEED
    assert report["workers_reported"] == report["processes"]
    assert report["bad_payloads"] == 0
    for q in ("0", "1", "2"):
        generated, published = report["generated"][q], report["published"][q]
        delivered, lost = report["delivered"][q], report["lost"][q]
        # every published message was delivered or counted lost; nothing arrives that was
        # never generated
        assert published - lost <= delivered <= generated, (q, report)
        assert 0 <= lost <= published
    assert sum(report["published"].values()) > devices  # it really ran
    p50, p99 = report["latency_ms"]["p50"], report["latency_ms"]["p99"]
    assert p50 is not None and 0 <= p50 <= p99


def test_fleet_200_devices_lose_no_qos1_or_qos2(broker_thread: BrokerThread) -> None:
    """200 devices, 10 s, mixed QoS against our broker: QoS 1/2 loss is zero, QoS 2 has no
    duplicates, every device was connected at once."""
    report, series = run_fleet(f"mqtt://127.0.0.1:{broker_thread.port}", 200, 10, FAST,
                               seed=SEED, progress=False)
    assert_counts_add_up(report, 200)
    assert report["lost"]["1"] == 0 and report["lost"]["2"] == 0, report
    assert report["duplicates"]["2"] == 0, report
    assert report["connected_peak"] == 200, report
    # by construction: power meters and trackers report every second or so (QoS 1), and each
    # of the 50 door sensors reports its state at power-up (QoS 2), whatever the seed and hour
    assert report["published"]["1"] > 0 and report["published"]["2"] >= 50, report
    assert len(series["t"]) >= 5 and max(series["delivered_per_s"]) > 0


def test_reconnect_storm_loses_no_qos1_or_qos2(broker_thread: BrokerThread) -> None:
    """All devices drop together half way and come back with backoff; readings taken while
    away are buffered and sent after, so QoS 1/2 still lose nothing."""
    prof = load_profile("reconnect-storm")
    prof = Profile(**{**prof.as_dict(), "interval_scale": 0.2, "ramp_up": 1.0, "drain": 5.0})
    report, _ = run_fleet(f"mqtt://127.0.0.1:{broker_thread.port}", 100, 8, prof,
                          seed=SEED, progress=False)
    assert_counts_add_up(report, 100)
    assert report["reconnects"] >= 100, report
    assert report["lost"]["1"] == 0 and report["lost"]["2"] == 0, report


@pytest.mark.parametrize("name", ["steady", "burst", "reconnect-storm", "flaky",
                                  "broker-restart"])
def test_shipped_profiles_load(name: str) -> None:
    prof = load_profile(name)
    assert prof.name == name and prof.description


def test_fleet_against_mosquitto(mosquitto: int) -> None:
    """The fleet is broker-agnostic: the same run against Mosquitto adds up and loses no
    QoS 1/2 message either."""
    report, _ = run_fleet(f"mqtt://127.0.0.1:{mosquitto}", 100, 6, FAST, seed=SEED,
                          progress=False)
    assert_counts_add_up(report, 100)
    assert report["lost"]["1"] == 0 and report["lost"]["2"] == 0, report
