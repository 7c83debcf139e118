"""The device fleet's broker-restart profile against a durable broker killed with SIGKILL
mid-run: devices buffer through the outage and resend, the verifier resumes its MQTT 5
session, and no QoS 1/2 message the broker acknowledged is lost (issue 6: the promise, seen
from a whole fleet rather than one publisher)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from devices.fleet import run_fleet
from devices.profile import Profile, load_profile

from .brokerproc import broker_procs, persistence

DEVICES = 60
DURATION = 14.0
KILL_AT = 5.0
DOWNTIME = 1.5
SEED = 1  # what the devices send is a function of the seed (devices/seeding.py)


def test_fleet_rides_out_a_sigkill_of_a_durable_broker(tmp_path: Path) -> None:
    prof = load_profile("broker-restart")
    prof = Profile(**{**prof.as_dict(), "interval_scale": 0.2, "ramp_up": 1.0, "drain": 6.0})
    with broker_procs(tmp_path) as make:
        b = make(persist=persistence(tmp_path / "broker" / "db.sqlite", sync="commit",
                                     fsync=True))
        b.start()
        result: dict[str, Any] = {}

        def fleet() -> None:
            result["report"], _ = run_fleet(f"mqtt://127.0.0.1:{b.port}", DEVICES, DURATION,
                                            prof, processes=1, seed=SEED, progress=False)

        t = threading.Thread(target=fleet, daemon=True)
        t.start()
        t.join(KILL_AT)
        assert t.is_alive(), "the fleet ended before the broker was killed"
        b.restart(DOWNTIME, kill=True)
        t.join(DURATION + 60)
        assert not t.is_alive(), "the fleet did not finish"
    report = result["report"]
    assert report["seed"] == SEED, report
    assert report["published"]["1"] > 0, report
    # QoS 2 by construction: every door sensor (a quarter of the devices) reports its state at
    # power-up, before the kill, whatever the seed and the simulated hour
    assert report["published"]["2"] >= DEVICES // 4, report
    assert report["reconnects"] >= DEVICES, report  # every device went through the outage
    assert report["lost"]["1"] == 0 and report["lost"]["2"] == 0, report
    assert report["duplicates"]["2"] == 0, report
