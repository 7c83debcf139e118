"""devices.sensors: bounded, deterministic sensor models with daily cycles and faults."""

from __future__ import annotations

import calendar
import itertools
import math
import random
import statistics
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.sensors import (
    BATTERY_RANGE_V,
    DEFAULT_INTERVAL,
    DEFAULT_QOS,
    GPS_RADIUS_KM,
    KINDS,
    RH_RANGE_PCT,
    SPEED_RANGE_KMH,
    TEMP_RANGE_C,
    VOLTAGE_RANGE_V,
    GpsTracker,
    Sensor,
    hour_of_day,
    make_sensor,
    pick_kind,
)

# Midnight of the sensors' default simulated day (UTC: midnight=0.0); no time zone involved.
MIDNIGHT = float(calendar.timegm((2024, 6, 3, 0, 0, 0)))
STEPS = 10_000


def run(kind: str, seed: int, steps: int = STEPS, start: float = MIDNIGHT,
        interval: float | None = None) -> list[tuple[float, dict[str, Any] | None]]:
    """``steps`` readings, one per interval, as (now, reading) pairs."""
    sensor = make_sensor(kind, random.Random(seed), interval=interval)
    out = []
    now = start
    for _ in range(steps):
        out.append((now, sensor.reading(now)))
        now += sensor.interval
    return out


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


seeds = st.integers(min_value=0, max_value=2**32 - 1)
starts = st.floats(min_value=0.0, max_value=86_400.0).map(lambda s: MIDNIGHT + s)


# -- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_make_sensor_defaults(kind: str) -> None:
    sensor = make_sensor(kind, random.Random(1))
    assert isinstance(sensor, Sensor)
    assert sensor.kind == kind
    assert sensor.qos == DEFAULT_QOS[kind]
    assert sensor.interval == DEFAULT_INTERVAL[kind]


def test_make_sensor_overrides_and_interval_is_settable() -> None:
    sensor = make_sensor("power_meter", random.Random(1), qos=2, interval=0.5)
    assert (sensor.qos, sensor.interval) == (2, 0.5)
    sensor.interval = 30  # what the device's command topic does
    assert sensor.interval == 30.0
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="interval"):
            sensor.interval = bad


@pytest.mark.parametrize("kwargs", [{"qos": 3}, {"qos": -1}, {"interval": 0.0}])
def test_make_sensor_rejects_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_sensor("temp_humidity", random.Random(1), **kwargs)


def test_make_sensor_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown sensor kind 'toaster'"):
        make_sensor("toaster", random.Random(1))


# -- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_readings(kind: str) -> None:
    assert run(kind, 7, steps=2000) == run(kind, 7, steps=2000)


@pytest.mark.parametrize("kind", ["temp_humidity", "power_meter", "gps_tracker"])
def test_different_seeds_differ(kind: str) -> None:
    assert run(kind, 1, steps=50) != run(kind, 2, steps=50)


# -- bounds over 10,000 steps -----------------------------------------------------------------


@settings(max_examples=4, deadline=None)
@given(seed=seeds, start=starts)
def test_temp_humidity_stays_in_bounds(seed: int, start: float) -> None:
    last_battery = math.inf
    for _, r in run("temp_humidity", seed, start=start):
        assert r is not None
        assert TEMP_RANGE_C[0] <= r["temp_c"] <= TEMP_RANGE_C[1]
        assert RH_RANGE_PCT[0] <= r["rh_pct"] <= RH_RANGE_PCT[1]
        assert BATTERY_RANGE_V[0] <= r["battery_v"] <= BATTERY_RANGE_V[1]
        assert r["battery_v"] <= last_battery  # it only drains
        last_battery = r["battery_v"]
        assert r.get("fault") in (None, "spike", "stuck")


@settings(max_examples=4, deadline=None)
@given(seed=seeds, start=starts)
def test_power_meter_stays_in_bounds_and_energy_is_monotonic(seed: int, start: float) -> None:
    last_energy = -math.inf
    for _, r in run("power_meter", seed, start=start):
        assert r is not None
        assert r["power_w"] >= 0.0
        assert VOLTAGE_RANGE_V[0] <= r["voltage_v"] <= VOLTAGE_RANGE_V[1]
        assert r["energy_kwh"] >= last_energy
        last_energy = r["energy_kwh"]
        if "fault" in r:
            assert r["fault"] == "dropout" and r["power_w"] == 0.0


@settings(max_examples=4, deadline=None)
@given(seed=seeds, start=starts)
def test_door_motion_events_alternate(seed: int, start: float) -> None:
    reports = [r for _, r in run("door_motion", seed, start=start) if r is not None]
    assert reports[0] == {"door": "closed", "motion": False, "events": 0, "supervision": True}
    events = [r for r in reports if "supervision" not in r]
    assert len(events) < STEPS // 4  # event driven: nothing most ticks (maybe none at night)
    assert [e["events"] for e in events] == list(range(1, len(events) + 1))
    doors = [e["door"] for e in events]
    assert set(doors) <= {"open", "closed"}
    assert all(not (a == b == "open") for a, b in itertools.pairwise(doors))
    assert all(isinstance(e["motion"], bool) for e in events)


@settings(max_examples=4, deadline=None)
@given(seed=seeds, start=starts)
def test_gps_stays_in_bounds_at_plausible_speed(seed: int, start: float) -> None:
    sensor = make_sensor("gps_tracker", random.Random(seed))
    assert isinstance(sensor, GpsTracker)
    prev: tuple[float, tuple[float, float]] | None = None
    travelled = 0.0
    for now, r in run("gps_tracker", seed, start=start):
        assert r is not None
        assert SPEED_RANGE_KMH[0] <= r["speed_kmh"] <= SPEED_RANGE_KMH[1]
        assert 0.0 <= r["heading_deg"] < 360.0
        assert 0 <= r["sats"] <= 14
        pos = (r["lat"], r["lon"])
        assert haversine_km(pos, sensor.home) <= GPS_RADIUS_KM * 1.02
        if prev is not None:
            km = haversine_km(prev[1], pos)
            travelled += km
            # straight-line distance per hour never beats the top speed (rounding: 0.2 m)
            assert km <= 120.0 * (now - prev[0]) / 3600.0 * 1.01 + 0.0002
        prev = (now, pos)
    hours = STEPS * DEFAULT_INTERVAL["gps_tracker"] / 3600.0
    assert 10.0 < travelled / hours < 100.0  # it drives, with stops: a plausible average


# -- behaviour --------------------------------------------------------------------------------


def test_hour_of_day() -> None:
    assert hour_of_day(MIDNIGHT) == 0.0
    assert hour_of_day(MIDNIGHT + 14.5 * 3600) == pytest.approx(14.5)
    assert hour_of_day(MIDNIGHT + 14.5 * 3600, midnight=MIDNIGHT + 3600) == pytest.approx(13.5)
    assert hour_of_day(MIDNIGHT - 1800) == pytest.approx(23.5)  # the day before


def test_daily_cycle_follows_the_sensors_midnight_not_the_clock() -> None:
    """The same sensor read at the same instants with its day shifted by 12 h: what was the
    night's reading is now the afternoon's."""
    night = make_sensor("temp_humidity", random.Random(4), midnight=MIDNIGHT)
    day = make_sensor("temp_humidity", random.Random(4), midnight=MIDNIGHT - 12 * 3600)
    t = MIDNIGHT + 3 * 3600  # 03:00 for one, 15:00 for the other
    cold, warm = night.reading(t), day.reading(t)
    assert cold is not None and warm is not None
    assert warm["temp_c"] > cold["temp_c"] + 4.0  # twice the daily amplitude, >= 2 x 2.5


def test_daily_cycle_warmer_at_14_than_at_04() -> None:
    at = {4: [], 14: []}  # type: dict[int, list[float]]
    for seed in range(5):
        for now, r in run("temp_humidity", seed, steps=3 * 24 * 60, interval=60.0):
            hour = int(hour_of_day(now))
            if hour in at and r is not None and "fault" not in r:
                at[hour].append(r["temp_c"])
    assert statistics.mean(at[14]) > statistics.mean(at[4]) + 3.0


def test_humidity_moves_against_temperature() -> None:
    readings = [r for _, r in run("temp_humidity", 3, steps=5000, interval=60.0)
                if r is not None and "fault" not in r]
    temps = [r["temp_c"] for r in readings]
    rhs = [r["rh_pct"] for r in readings]
    assert statistics.correlation(temps, rhs) < -0.5


def test_power_peaks_in_the_evening() -> None:
    at = {3: [], 19: []}  # type: dict[int, list[float]]
    for seed in range(5):
        for now, r in run("power_meter", seed, steps=2 * 24 * 120, interval=30.0):
            hour = int(hour_of_day(now))
            if hour in at and r is not None:
                at[hour].append(r["power_w"])
    assert statistics.mean(at[19]) > 2 * statistics.mean(at[3])


def test_energy_integrates_power_over_elapsed_time() -> None:
    sensor = make_sensor("power_meter", random.Random(5))
    first = sensor.reading(MIDNIGHT)
    assert first is not None
    total = 0.0
    now, prev = MIDNIGHT, first
    for _ in range(720):  # an hour at 5 s
        now += 5.0
        r = sensor.reading(now)
        assert r is not None
        if "fault" not in r:
            total += r["power_w"] * 5.0 / 3.6e6
        prev = r
    assert prev["energy_kwh"] - first["energy_kwh"] == pytest.approx(total, abs=2e-4)


def test_energy_monotonic_with_irregular_and_backwards_clock() -> None:
    sensor = make_sensor("power_meter", random.Random(9))
    rng = random.Random(0)
    now, last = MIDNIGHT, -math.inf
    for _ in range(3000):
        now += rng.choice((-3.0, 0.0, 0.5, 5.0, 60.0, 3600.0))
        r = sensor.reading(now)
        assert r is not None and r["energy_kwh"] >= last
        last = r["energy_kwh"]


def test_temp_faults_are_rare_and_flagged() -> None:
    readings = [r for _, r in run("temp_humidity", 11, steps=40_000) if r is not None]
    faults = Counter(r.get("fault") for r in readings)
    assert faults["spike"] > 0 and faults["stuck"] > 0
    share = (faults["spike"] + faults["stuck"]) / len(readings)
    assert 0.001 < share < 0.015  # about 0.5 %
    for prev, r in itertools.pairwise(readings):
        if r.get("fault") == "spike":
            assert r["temp_c"] in TEMP_RANGE_C  # a rail value, flagged
        if r.get("fault") == "stuck":
            assert (r["temp_c"], r["rh_pct"]) == (prev["temp_c"], prev["rh_pct"])


def test_power_dropouts_happen() -> None:
    readings = [r for _, r in run("power_meter", 4, steps=20_000) if r is not None]
    dropouts = [r for r in readings if r.get("fault") == "dropout"]
    assert dropouts and all(r["power_w"] == 0.0 for r in dropouts)
    assert len(dropouts) / len(readings) < 0.03


def test_door_busier_by_day_than_by_night() -> None:
    day = night = 0
    for seed in range(4):
        for now, r in run("door_motion", seed, steps=2 * 43_200):  # two days at 2 s
            if r is not None and "supervision" not in r:
                hour = hour_of_day(now)
                day += 7 <= hour < 22
                night += hour < 5
    assert day > 5 * night


def test_gps_has_coverage_gaps() -> None:
    sensor = make_sensor("gps_tracker", random.Random(21))
    assert isinstance(sensor, GpsTracker)
    times = [MIDNIGHT + i * 5.0 for i in range(24 * 720)]  # a day at 5 s
    covered = [sensor.in_coverage(t) for t in times]
    share_out = covered.count(False) / len(covered)
    assert 0.005 < share_out < 0.06  # a few % of the time
    gaps = sum(1 for a, b in itertools.pairwise(covered) if a and not b)
    assert gaps >= 10  # several separate tunnels, not one long outage
    # a pure function of time: the same answer in any order, and the same for a twin
    twin = make_sensor("gps_tracker", random.Random(21))
    assert isinstance(twin, GpsTracker)
    assert [twin.in_coverage(t) for t in reversed(times)] == covered[::-1]


def test_gps_loses_fix_in_tunnels() -> None:
    sensor = make_sensor("gps_tracker", random.Random(21))
    assert isinstance(sensor, GpsTracker)
    seen_out = False
    now = MIDNIGHT
    for _ in range(5000):
        r = sensor.reading(now)
        assert r is not None
        if not sensor.in_coverage(now):
            seen_out = True
            assert r["sats"] == 0
        else:
            assert r["sats"] >= 4
        now += 5.0
    assert seen_out


@pytest.mark.parametrize("kind", ["temp_humidity", "power_meter", "door_motion"])
def test_fixed_sensors_always_in_coverage(kind: str) -> None:
    sensor: Any = make_sensor(kind, random.Random(1))  # in_coverage is not in the Protocol
    assert all(sensor.in_coverage(MIDNIGHT + i * 97.0) for i in range(1000))


# -- pick_kind --------------------------------------------------------------------------------


def test_pick_kind_equal_mix_cycles_through_all_kinds() -> None:
    for block in range(0, 400, 4):
        assert sorted(pick_kind(i) for i in range(block, block + 4)) == sorted(KINDS)


def test_pick_kind_follows_weights() -> None:
    mix = {"temp_humidity": 5, "power_meter": 3, "gps_tracker": 2}
    for n in (10, 100, 1000):
        counts = Counter(pick_kind(i, mix) for i in range(n))
        assert counts["door_motion"] == 0
        for kind, weight in mix.items():
            assert abs(counts[kind] - n * weight / 10) <= max(2, n // 50)


def test_pick_kind_is_deterministic() -> None:
    mix = {"door_motion": 0.25, "gps_tracker": 0.75}
    assert [pick_kind(i, mix) for i in range(100)] == [pick_kind(i, mix) for i in range(100)]


@pytest.mark.parametrize("mix", [{"toaster": 1.0}, {"door_motion": -1.0},
                                 {"door_motion": 0.0}, {"gps_tracker": math.nan}])
def test_pick_kind_rejects_bad_mix(mix: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        pick_kind(0, mix)


def test_pick_kind_rejects_negative_index() -> None:
    with pytest.raises(ValueError):
        pick_kind(-1)
