"""devices.seeding and the traffic guarantees: what a fleet sends is a function of its seed
(timing only moves it), and every door sensor, the fleet's QoS 2 source, is heard from at
power-up and at least once per supervision period, whatever the seed and the hour."""

from __future__ import annotations

import asyncio
import calendar
import itertools
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devices.device import Device, Stats
from devices.profile import Profile, load_profile, profile_from_dict
from devices.seeding import device_rng, link_rng, run_midnight, sensor_rng, start_hour
from devices.sensors import DEFAULT_QOS, DEFAULT_SUPERVISION, DoorMotion, make_sensor, pick_kind

START = float(calendar.timegm((2024, 6, 3, 9, 41, 7)))  # any instant: only the seed matters
SEEDS = range(200)

Reading = dict[str, Any]


def ticks(first: float, interval: float, end: float, jitter: random.Random | None,
          stall: float = 0.0) -> Iterator[float]:
    """Tick times as a device's event loop gives them: every ``interval`` after ``first``,
    each late by up to a tick when ``jitter`` is given, and with one ``stall`` (a CPU hog, a
    GC pause) a third of the way in."""
    now = first
    stalled = False
    while now < end:
        yield now
        now += interval
        if jitter is not None:
            now += jitter.uniform(0.0, interval)
        if stall and not stalled and now >= first + (end - first) / 3:
            now += stall
            stalled = True


def door(seed: int, index: int = 0, *, supervision: float | None = None,
         hour: float | None = None) -> DoorMotion:
    sensor = make_sensor("door_motion", sensor_rng(seed, index),
                         midnight=run_midnight(START, seed, hour), supervision=supervision)
    assert isinstance(sensor, DoorMotion)
    return sensor


def reports(sensor: Any, times: Iterator[float]) -> list[tuple[float, Reading]]:
    out = []
    for now in times:
        r = sensor.reading(now)
        if r is not None:
            out.append((now, r))
    return out


def events(rs: list[tuple[float, Reading]]) -> list[Reading]:
    return [r for _, r in rs if "supervision" not in r]


# -- the seed's streams -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [sensor_rng, device_rng, link_rng])
def test_streams_are_a_function_of_seed_and_index(stream: Any) -> None:
    def draws(seed: int, index: int) -> list[float]:
        rng = stream(seed, index)
        return [rng.random() for _ in range(5)]

    assert draws(7, 3) == draws(7, 3)
    assert draws(7, 3) != draws(8, 3)
    assert draws(7, 3) != draws(7, 4)


def test_streams_are_independent_of_each_other() -> None:
    firsts = {stream(5, 2).random() for stream in (sensor_rng, device_rng, link_rng)}
    assert len(firsts) == 3


def test_start_hour_comes_from_the_seed_or_the_profile() -> None:
    hours = [start_hour(seed) for seed in SEEDS]
    assert hours == [start_hour(seed) for seed in SEEDS]  # a replay gets the same hour
    assert all(0.0 <= h < 24.0 and abs(h * 60 - round(h * 60)) < 1e-9 for h in hours)  # minutes
    assert len({int(h) for h in hours}) == 24  # 200 seeds visit every hour of the day
    assert start_hour(3, 18.25) == 18.25
    for bad in (24.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="start_hour"):
            start_hour(3, bad)
    assert run_midnight(START, 3, 18.25) == START - 18.25 * 3600


# -- the same seed, the same traffic; timing only moves it -------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 99])
def test_door_events_do_not_depend_on_tick_timing(seed: int) -> None:
    """Two runs of one seed over the same two hours: ticks on time against late, irregular
    ticks with a 30 s stall. The same events, in the same order, each reported at most a tick
    interval plus the lateness after its twin (the stall delays, never drops)."""
    end = START + 2 * 3600
    steady = reports(door(seed, hour=18.0), ticks(START, 2.0, end, None))
    shaky = reports(door(seed, hour=18.0), ticks(START, 2.0, end, random.Random(seed),
                                                 stall=30.0))
    a, b = events(steady), events(shaky)
    assert len(a) >= 10  # the evening peak: plenty of events to compare
    n = min(len(a), len(b))
    assert a[:n] == b[:n] and abs(len(a) - len(b)) <= 2  # only the last may miss the end


@pytest.mark.parametrize("kind", ["temp_humidity", "power_meter", "door_motion",
                                  "gps_tracker"])
def test_same_seed_same_readings_different_seed_different(kind: str) -> None:
    def run(seed: int) -> list[tuple[float, Reading]]:
        sensor = make_sensor(kind, sensor_rng(seed, 3), midnight=run_midnight(START, seed))
        return reports(sensor, ticks(START, 2.0, START + 6 * 3600, None))

    assert run(11) == run(11)
    assert run(11) != run(12)


def fleet(seed: int, n: int, profile: Profile) -> list[Device]:
    loop = asyncio.new_event_loop()
    try:
        stats = Stats()
        midnight = run_midnight(START, seed, profile.start_hour)
        return [Device(i, pick_kind(i, profile.mix or None), "127.0.0.1", 1, profile, stats,
                       loop, seed, midnight=midnight) for i in range(n)]
    finally:
        loop.close()


def test_devices_traits_are_a_function_of_the_seed() -> None:
    """Kind, QoS, MQTT version and the sensor's first readings of 40 devices: equal for one
    seed, different for another."""
    prof = Profile(v5_fraction=0.5, interval_scale=0.2)

    def traits(seed: int) -> list[tuple[Any, ...]]:
        return [(d.kind, d.qos, d.v5, d.sensor.interval, d.sensor.reading(START + 1.0))
                for d in fleet(seed, 40, prof)]

    assert traits(5) == traits(5)
    other = traits(6)
    assert [t[:2] for t in other] == [t[:2] for t in traits(5)]  # the mix is the profile's
    assert [t[2:] for t in other] != [t[2:] for t in traits(5)]


def test_reconnects_do_not_shift_what_a_device_reads() -> None:
    """Reconnect backoff draws its jitter from the link's generator: a device that went
    through five reconnects reads exactly what its undisturbed twin reads."""
    prof = Profile(interval_scale=0.2)
    calm, = fleet(8, 1, prof)
    loop = asyncio.new_event_loop()
    try:
        stormy = Device(0, calm.kind, "127.0.0.1", 1, prof, Stats(), loop, 8,
                        midnight=run_midnight(START, 8))
        for _ in range(5):
            stormy._retry()  # what a refused or lost connection does
        for t in stormy._timers:
            t.cancel()
    finally:
        loop.close()
    times = [START + 0.4 * k for k in range(500)]
    assert [stormy.sensor.reading(t) for t in times] == [calm.sensor.reading(t) for t in times]


# -- the guarantee: door sensors are heard from -------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_every_door_sensor_reports_at_power_up_whatever_the_seed(seed: int) -> None:
    """The test fleet (200 devices, 10 s at five times the field rate, every hour of the day
    across the seeds): each of its 50 door sensors sends a QoS 2 message at its first tick,
    so the run's QoS 2 traffic is at least 50 messages, never left to the Poisson process."""
    qos2: Counter[int] = Counter()
    midnight = run_midnight(START, seed)
    for i in range(200):
        kind = pick_kind(i)
        if kind != "door_motion":
            continue
        sensor = make_sensor(kind, sensor_rng(seed, i), midnight=midnight,
                             supervision=DEFAULT_SUPERVISION * 0.2)
        sensor.interval *= 0.2
        first = START + device_rng(seed, i).uniform(0.0, sensor.interval)
        rs = reports(sensor, ticks(first, sensor.interval, START + 10.0, random.Random(i)))
        assert rs and rs[0][0] == first, (seed, i)
        assert rs[0][1]["supervision"] is True and rs[0][1]["events"] == 0
        qos2[sensor.qos] += len(rs)
    assert DEFAULT_QOS["door_motion"] == 2
    assert qos2[2] >= 50


@pytest.mark.parametrize("seed", SEEDS)
def test_a_door_sensor_is_never_silent_longer_than_its_supervision(seed: int) -> None:
    """Six hours from 22:00 (the quietest part of the day) with ticks late by up to one
    interval and a 30 s stall: the gap between two reports never exceeds the supervision
    period plus the longest gap between two ticks, so a run of D seconds gets at least
    D / (supervision + that) reports from every door sensor."""
    supervision, interval = 120.0, 2.0
    sensor = door(seed, supervision=supervision, hour=22.0)
    times = list(ticks(START, interval, START + 6 * 3600, random.Random(-seed), stall=30.0))
    longest_tick_gap = max(b - a for a, b in itertools.pairwise(times))
    rs = reports(sensor, iter(times))
    at = [now for now, _ in rs]
    assert at[0] == START
    assert max(b - a for a, b in itertools.pairwise(at)) <= supervision + longest_tick_gap
    assert len(rs) >= 6 * 3600 / (supervision + longest_tick_gap)
    # supervision reports tell the state and keep the event count; events still count 1, 2, ...
    assert [e["events"] for e in events(rs)] == list(range(1, len(events(rs)) + 1))
    for _, r in rs:
        if "supervision" in r:
            assert r["motion"] is False and r["door"] in ("open", "closed")


def test_supervision_is_validated_and_settable() -> None:
    sensor = door(1)
    assert sensor.supervision == DEFAULT_SUPERVISION
    sensor.supervision = 30
    assert sensor.supervision == 30.0
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="supervision"):
            sensor.supervision = bad


def test_profile_scales_supervision_like_intervals() -> None:
    for prof, expected in ((Profile(interval_scale=0.2, supervision=50.0), 10.0),
                           (Profile(interval_scale=0.5), DEFAULT_SUPERVISION * 0.5)):
        doors = [d.sensor for d in fleet(1, 4, prof) if d.kind == "door_motion"]
        assert len(doors) == 1 and isinstance(doors[0], DoorMotion)
        assert doors[0].supervision == pytest.approx(expected)



def test_profile_files_take_supervision_and_start_hour(tmp_path: Path) -> None:
    path = tmp_path / "fleet-night.yaml"
    path.write_text("supervision: 600\nstart_hour: 3.5\n", encoding="utf-8")
    prof = load_profile(path)
    assert (prof.name, prof.supervision, prof.start_hour) == ("night", 600, 3.5)
    assert profile_from_dict(prof.as_dict()) == prof  # what a worker process gets


@pytest.mark.parametrize("line", ["supervision: 0", "supervision: -5", "supervision: .inf",
                                  "supervision: '1h'", "start_hour: 24", "start_hour: -1",
                                  "start_hour: .nan", "start_hour: '18:30'", "start_hour: true"])
def test_profile_files_refuse_bad_supervision_or_start_hour(tmp_path: Path, line: str) -> None:
    path = tmp_path / "fleet-bad.yaml"
    path.write_text(line + "\n", encoding="utf-8")
    key = line.split(":")[0]
    with pytest.raises(ValueError, match=f"fleet-bad.yaml: {key} must be"):
        load_profile(path)
