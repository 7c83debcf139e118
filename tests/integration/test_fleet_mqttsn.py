"""The device fleet's sleeping MQTT-SN sensors (``devices run --protocol mqttsn``) against our
broker's MQTT-SN gateway: readings at QoS 0/1 and QoS -1 beacons, sleep cycles, commands
published on the MQTT side while the sensors sleep and collected at their wake-ups. Bounded:
a dozen sensors, about ten seconds."""

from __future__ import annotations

import os
from typing import Any

import pytest
from click.testing import CliRunner

from devices.cli import cli
from devices.fleet import run_fleet, speaks_mqttsn
from devices.profile import Profile, load_profile
from devices.sensors import pick_kind
from tests.conftest import BrokerThread, base_config

pytestmark = pytest.mark.timeout(90)

SEED = 1


@pytest.fixture
def broker_config() -> dict[str, Any]:
    cfg = base_config()
    cfg["listeners"]["sn"] = {"type": "mqttsn", "bind": "127.0.0.1:0", "qos_minus_one": True,
                              "predefined_topics": {1: "fleet/beacons"}, "retry_interval": 1}
    return cfg


def gateway(bt: BrokerThread) -> tuple[str, int]:
    return "127.0.0.1", next(p for name, _h, p in bt.broker.addresses if name == "sn")


def fast_profile() -> Profile:
    prof = load_profile("sensors-sn")
    return Profile(**{**prof.as_dict(), "ramp_up": 1.0, "drain": 5.0,
                      "sleep": {"duration": 5, "awake_every": 0.8, "wakes": 2, "commands": 1}})


def assert_sleepers_ok(report: dict[str, Any], sn_devices: int, min_cycles: int) -> None:
    sn = report["mqttsn"]
    assert sn["devices"] == sn_devices, sn
    assert report["workers_reported"] == report["processes"], report
    assert report["bad_payloads"] == 0, report
    # zero loss of what the gateway acknowledged at QoS 1, across the sleep cycles
    assert report["lost"]["1"] == 0 and report["lost"]["2"] == 0, report
    proto = report["protocols"]["mqttsn"]
    assert proto["published"]["1"] > 0 and proto["lost"]["1"] == 0, report
    assert proto["published"]["0"] > 0, report  # QoS 0 readings went out too
    # every sensor slept and woke several times
    assert sn["sleeps"] >= min_cycles * sn_devices, sn
    assert sn["wakeups"] >= min_cycles * sn_devices, sn
    # every command sent while a sensor slept reached it exactly once, at a wake-up
    cmd = sn["commands"]
    assert cmd["sent"] >= sn_devices, cmd
    assert cmd["devices_commanded"] == sn_devices == cmd["devices_served"], cmd
    assert cmd["lost"] == 0 and cmd["duplicates"] == 0 and cmd["unexpected"] == 0, cmd
    assert cmd["delivered"] == cmd["sent"], cmd
    # sent 0.3 s after the sensor said "asleep": all, or nearly all on a loaded machine (where
    # its DISCONNECT may come later), wait for its wake-up
    assert cmd["collected_on_wakeup"] >= 0.9 * cmd["sent"], cmd
    # QoS -1 beacons: sent and (over loopback) seen on the MQTT side
    assert sn["beacons"] > 0 and sn["beacons_delivered"] > 0, sn
    assert report["verdict"]["ok"], report["verdict"]


def test_sleeping_sensors_lose_nothing_at_qos1(broker_thread: BrokerThread) -> None:
    """12 MQTT-SN sensors, 10 s: a few sleep cycles each, commands sent while they sleep."""
    report, _ = run_fleet(f"mqtt://127.0.0.1:{broker_thread.port}", 12, 10, fast_profile(),
                          seed=SEED, progress=False, processes=2,
                          mqttsn=gateway(broker_thread))
    assert_sleepers_ok(report, 12, min_cycles=3)
    assert report["protocols"]["mqtt"]["devices"] == 0


def _skip_unless_slow(request: pytest.FixtureRequest) -> None:
    """``make test`` runs one fleet (above); the mixed fleet and the CLI run with -m slow
    (or FLEET_MQTTSN_ALL=1), to keep the suite within its time."""
    if not (os.environ.get("FLEET_MQTTSN_ALL") == "1"
            or "slow" in (request.config.getoption("markexpr", "") or "")):
        pytest.skip("a second and third fleet run: run with -m slow")


@pytest.mark.slow
def test_mixed_fleet_half_mqttsn(broker_thread: BrokerThread,
                                 request: pytest.FixtureRequest) -> None:
    """Half the fleet on MQTT (paho, TCP), half sleeping on MQTT-SN, one verifier."""
    _skip_unless_slow(request)
    prof = Profile(**{**fast_profile().as_dict(), "interval_scale": 0.2})
    report, _ = run_fleet(f"mqtt://127.0.0.1:{broker_thread.port}", 20, 8, prof, seed=SEED,
                          progress=False, processes=2, mqttsn=gateway(broker_thread),
                          mqttsn_share=0.5)
    sn = sum(speaks_mqttsn(i, 0.5) for i in range(20))
    assert 9 <= sn <= 11
    assert_sleepers_ok(report, sn, min_cycles=2)
    mqtt = report["protocols"]["mqtt"]
    assert mqtt["devices"] == 20 - sn and mqtt["published"]["1"] > 0, mqtt
    assert mqtt["lost"]["1"] == 0, mqtt


def test_share_spreads_evenly() -> None:
    for share in (0.1, 0.3, 0.5, 0.9):
        for n in (20, 100, 1000):
            assert abs(sum(speaks_mqttsn(i, share) for i in range(n)) - n * share) <= 2
    # not in step with the sensor kinds (pick_kind): each kind is on both protocols
    kinds = {(pick_kind(i), speaks_mqttsn(i, 0.5)) for i in range(20)}
    assert len(kinds) == 8, kinds
    assert all(speaks_mqttsn(i, 1.0) for i in range(10))
    assert not any(speaks_mqttsn(i, 0.0) for i in range(10))


@pytest.mark.slow
def test_cli_runs_mqttsn(broker_thread: BrokerThread, request: pytest.FixtureRequest) -> None:
    _skip_unless_slow(request)
    host, port = gateway(broker_thread)
    result = CliRunner().invoke(cli, [
        "run", "--broker", f"mqtt://127.0.0.1:{broker_thread.port}", "--devices", "4",
        "--duration", "4", "--profile", "sensors-sn", "--processes", "1", "--quiet",
        "--protocol", "mqttsn", "--mqttsn", f"{host}:{port}", "--check"])
    assert result.exit_code == 0, result.output
    assert "commands to sleepers" in result.output and "mqttsn" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--protocol", "mqttsn"], "give --mqttsn"),
    (["--mqttsn-share", "0.5"], "give --mqttsn"),
    (["--protocol", "mqttsn", "--mqttsn", "10.0.0.1:1885"], "loopback"),
    (["--mqttsn-share", "2", "--mqttsn", "127.0.0.1:1885"], "--mqttsn-share"),
])
def test_cli_refuses(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["run", "--devices", "1", "--duration", "1", *args])
    assert result.exit_code == 2 and message in result.output, result.output
