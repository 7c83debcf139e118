"""Sensor models for the simulated fleet: pure, deterministic given a :class:`random.Random`.

Each model is a bounded random walk on top of a daily cycle, with the occasional fault a real
device shows. The hour of the day is simulated: hours since the sensor's ``midnight`` (seconds
since the epoch, a constructor argument; the fleet derives it from the run's seed), never the
machine's clock or time zone. Nothing here reads a clock or does I/O: the caller passes ``now``,
so the same seed, ``midnight`` and sequence of ``now`` values always give the same readings
(the broker core follows the same rule; see design.md).

Kinds and their readings (units in the names; the full table is in ``docs/payload.md``):

* ``temp_humidity`` -- a battery room/outdoor sensor: ``temp_c``, ``rh_pct``, ``battery_v``,
  and ``fault`` (``"spike"`` or ``"stuck"``) on the rare bad reading.
* ``power_meter`` -- a household meter: ``power_w``, ``voltage_v``, ``energy_kwh`` (a register
  that only goes up), and ``fault`` = ``"dropout"`` when the measurement reads 0 W.
* ``door_motion`` -- event driven: most ticks report nothing; an event reports ``door``
  (``"open"``/``"closed"``), ``motion`` and ``events`` (running count). It also reports its
  state at power-up and whenever it has been silent for its supervision period (those reports
  carry ``supervision`` = true), so every door sensor is heard from, even at night.
* ``gps_tracker`` -- a vehicle: ``lat``, ``lon``, ``speed_kmh``, ``heading_deg``, ``sats``; it
  also drives through tunnels, see :meth:`GpsTracker.in_coverage`.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping
from typing import Any, Final, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_QOS",
    "DEFAULT_SUPERVISION",
    "KINDS",
    "DoorMotion",
    "GpsTracker",
    "PowerMeter",
    "Sensor",
    "TempHumidity",
    "hour_of_day",
    "make_sensor",
    "pick_kind",
]

KINDS: Final = ("temp_humidity", "power_meter", "door_motion", "gps_tracker")
"""Every sensor kind, in a fixed order (:func:`pick_kind` relies on it)."""

DEFAULT_QOS: Final[Mapping[str, int]] = {
    "temp_humidity": 0,  # a lost temperature is replaced 10 s later: at most once is fine
    "power_meter": 1,  # billing-grade: at least once, the energy register makes dups harmless
    "door_motion": 2,  # an alarm event must arrive, and exactly once
    "gps_tracker": 1,
}
DEFAULT_INTERVAL: Final[Mapping[str, float]] = {
    "temp_humidity": 10.0,
    "power_meter": 5.0,
    "door_motion": 2.0,  # how often the sensor checks for an event, not how often it reports
    "gps_tracker": 5.0,
}
DEFAULT_SUPERVISION: Final = 3600.0
"""Seconds an event-driven sensor stays silent at most: then it reports its state anyway. Alarm
sensors do this so the panel can tell a quiet door from a dead one (supervision, check-in)."""

# Physical limits the models never leave (a fault may sit at a limit, never beyond it).
TEMP_RANGE_C: Final = (-40.0, 85.0)  # the operating range of common parts (SHT3x, DS18B20 rail)
RH_RANGE_PCT: Final = (0.0, 100.0)
BATTERY_RANGE_V: Final = (3.0, 4.2)  # one Li-ion cell, from full to the cut-off
VOLTAGE_RANGE_V: Final = (207.0, 253.0)  # EN 50160: 230 V +- 10 %
SPEED_RANGE_KMH: Final = (0.0, 120.0)
GPS_RADIUS_KM: Final = 30.0  # a tracker never strays further than this from its home point

_TWO_PI: Final = 2.0 * math.pi
_KM_PER_DEG_LAT: Final = 111.32


def hour_of_day(now: float, midnight: float = 0.0) -> float:
    """The simulated hour of ``now`` as a float in [0, 24), e.g. 14.5 for 14:30: hours since
    ``midnight`` (seconds since the epoch; 0.0 gives UTC), modulo a day.

    Plain arithmetic on purpose: the wall clock's local time depends on the machine's time
    zone, and the daily cycles decide what traffic a run generates.
    """
    return ((now - midnight) % 86_400.0) / 3600.0


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(value, high))


def _ar1(value: float, dt: float, tau: float, sd: float, rng: random.Random) -> float:
    """One step of an Ornstein-Uhlenbeck walk around 0: correlation time ``tau`` seconds,
    stationary standard deviation ``sd``. Exact for any ``dt`` (so a slow or irregular
    reporting interval does not change the statistics)."""
    decay = math.exp(-dt / tau)
    return value * decay + rng.gauss(0.0, sd * math.sqrt(1.0 - decay * decay))


@runtime_checkable
class Sensor(Protocol):
    """What a simulated device needs from its sensor."""

    kind: str
    qos: int
    interval: float
    """Seconds between readings; settable (the device's command topic changes it)."""

    def reading(self, now: float) -> dict[str, Any] | None:
        """The reading at ``now`` (seconds since the epoch); ``None`` if nothing to report."""
        ...


class _BaseSensor:
    """Shared bookkeeping: kind, QoS, a validated interval and the time since the last call."""

    KIND: str = ""

    def __init__(self, rng: random.Random, *, qos: int | None = None,
                 interval: float | None = None, midnight: float = 0.0) -> None:
        self.kind: str = self.KIND
        self.rng = rng
        self.midnight = float(midnight)
        """The instant the daily cycle counts hours from (see :func:`hour_of_day`)."""
        chosen_qos = DEFAULT_QOS[self.KIND] if qos is None else qos
        if chosen_qos not in (0, 1, 2) or isinstance(chosen_qos, bool):
            raise ValueError(f"qos must be 0, 1 or 2, got {chosen_qos!r}")
        self.qos: int = chosen_qos
        self._interval = 1.0
        self.interval = DEFAULT_INTERVAL[self.KIND] if interval is None else interval
        self._last: float | None = None

    @property
    def interval(self) -> float:
        """Seconds between readings (must be positive and finite)."""
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        seconds = float(value)
        if not math.isfinite(seconds) or seconds <= 0.0:
            raise ValueError(f"interval must be a positive number of seconds, got {value!r}")
        self._interval = seconds

    def reading(self, now: float) -> dict[str, Any] | None:
        """The reading at ``now`` (seconds since the epoch); ``None`` if nothing to report."""
        raise NotImplementedError

    def in_coverage(self, now: float) -> bool:
        """Whether the device has a network at ``now``; fixed sensors always do."""
        return True

    def hour(self, now: float) -> float:
        """The simulated hour of day at ``now``, in [0, 24)."""
        return hour_of_day(now, self.midnight)

    def _elapsed(self, now: float) -> float:
        """Seconds since the previous reading (the interval on the first one, never < 0)."""
        last, self._last = self._last, now
        if last is None:
            return self._interval
        return max(0.0, now - last)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(qos={self.qos}, interval={self._interval})"


class TempHumidity(_BaseSensor):
    """A battery temperature/humidity sensor.

    Temperature follows a daily sine (coolest around 03:00, warmest around 15:00) plus an
    Ornstein-Uhlenbeck walk (weather); relative humidity moves against temperature, as it does
    at constant absolute humidity. The battery drains a little per transmission. About 0.5 % of
    readings are faulty: a ``"spike"`` to a rail value (85.0 is the DS18B20's power-on-reset
    reading, -40.0 a disconnected thermistor), or a ``"stuck"`` run repeating the last value.
    """

    KIND = "temp_humidity"
    FAULT_START_P: Final = 0.0025  # per reading; spikes last 1 reading, stuck runs 2..4
    BATTERY_DRAIN_V: Final = 2e-5  # per transmission: ~60,000 readings (a week at 10 s) to empty

    def __init__(self, rng: random.Random, *, qos: int | None = None,
                 interval: float | None = None, midnight: float = 0.0) -> None:
        super().__init__(rng, qos=qos, interval=interval, midnight=midnight)
        self.mean_c = rng.uniform(17.0, 23.0)
        self.amplitude_c = rng.uniform(2.5, 5.0)
        self.mean_rh = rng.uniform(40.0, 60.0)
        self.battery = rng.uniform(3.7, 4.2)
        self._weather = rng.gauss(0.0, 1.0)
        self._damp = rng.gauss(0.0, 3.0)
        self._stuck_left = 0
        self._last_good: tuple[float, float] | None = None

    def reading(self, now: float) -> dict[str, Any]:
        """Temperature (deg C), relative humidity (%) and battery voltage at ``now``."""
        rng = self.rng
        dt = self._elapsed(now)
        self._weather = _clamp(_ar1(self._weather, dt, 3600.0, 1.5, rng), -10.0, 10.0)
        self._damp = _clamp(_ar1(self._damp, dt, 1800.0, 4.0, rng), -25.0, 25.0)
        daily = math.sin(_TWO_PI * (self.hour(now) - 9.0) / 24.0)  # +1 at 15:00, -1 at 03:00
        anomaly = self.amplitude_c * daily + self._weather
        temp = _clamp(self.mean_c + anomaly + rng.gauss(0.0, 0.05), *TEMP_RANGE_C)
        rh = _clamp(self.mean_rh - 2.5 * anomaly + self._damp, *RH_RANGE_PCT)
        self.battery = max(BATTERY_RANGE_V[0], self.battery - self.BATTERY_DRAIN_V)
        battery_v = round(self.battery, 3)
        if self._stuck_left > 0 and self._last_good is not None:
            self._stuck_left -= 1
            temp_c, rh_pct = self._last_good
            return {"temp_c": temp_c, "rh_pct": rh_pct, "battery_v": battery_v, "fault": "stuck"}
        if rng.random() < self.FAULT_START_P:
            if rng.random() < 0.5:
                temp_c, rh_pct = rng.choice(TEMP_RANGE_C), rng.choice(RH_RANGE_PCT)
                return {"temp_c": temp_c, "rh_pct": rh_pct, "battery_v": battery_v,
                        "fault": "spike"}
            self._stuck_left = rng.randint(2, 4)  # this reading is good; the next ones repeat it
        self._last_good = temp_c, rh_pct = round(temp, 2), round(rh, 1)
        return {"temp_c": temp_c, "rh_pct": rh_pct, "battery_v": battery_v}


class PowerMeter(_BaseSensor):
    """A household electricity meter.

    Power is a standby base load plus a morning and a (larger) evening peak, scaled by a
    log-normal walk, plus appliances (kettle, oven, ...) that switch on about once an hour for
    a few minutes; a meter averages roughly 400-800 W (3,500-7,000 kWh a year).
    Voltage wanders around 230 V and sags a little under load. ``energy_kwh`` integrates power
    over the time elapsed between readings, so it never decreases. About 0.3 % of readings
    start a ``"dropout"`` (1..5 readings of 0 W during which the register does not advance).
    """

    KIND = "power_meter"
    DROPOUT_START_P: Final = 0.003
    APPLIANCES_PER_H: Final = 1.0
    APPLIANCES_W: Final = (800.0, 1200.0, 2000.0, 2200.0, 3000.0)  # microwave .. kettle

    def __init__(self, rng: random.Random, *, qos: int | None = None,
                 interval: float | None = None, midnight: float = 0.0) -> None:
        super().__init__(rng, qos=qos, interval=interval, midnight=midnight)
        self.base_w = rng.uniform(60.0, 300.0)
        self.morning_w = rng.uniform(200.0, 800.0)
        self.evening_w = rng.uniform(400.0, 1500.0)
        self.energy_kwh = round(rng.uniform(100.0, 30000.0), 1)
        self._load = 0.0  # log-scale factor walk
        self._volt = rng.gauss(0.0, 2.0)
        self._appliance_w = 0.0
        self._appliance_until = -math.inf
        self._dropout_left = 0

    def _daily_w(self, hour: float) -> float:
        """Expected demand above base load: Gaussian bumps at 07:30 and 19:00 (wrapping)."""

        def bump(centre: float, width: float) -> float:
            d = (hour - centre + 12.0) % 24.0 - 12.0
            return math.exp(-0.5 * (d / width) ** 2)

        return self.morning_w * bump(7.5, 1.0) + self.evening_w * bump(19.0, 1.5)

    def reading(self, now: float) -> dict[str, Any]:
        """Power (W), voltage (V) and the energy register (kWh) at ``now``."""
        rng = self.rng
        dt = self._elapsed(now)
        self._load = _clamp(_ar1(self._load, dt, 900.0, 0.2, rng), -1.0, 1.0)
        self._volt = _clamp(_ar1(self._volt, dt, 600.0, 2.0, rng), -8.0, 8.0)
        if now >= self._appliance_until:
            self._appliance_w = 0.0
            if rng.random() < -math.expm1(-self.APPLIANCES_PER_H * dt / 3600.0):
                self._appliance_w = rng.choice(self.APPLIANCES_W)
                self._appliance_until = now + rng.uniform(60.0, 900.0)
        power = (self.base_w + self._daily_w(self.hour(now))) * math.exp(self._load)
        power = max(0.0, power + self._appliance_w + rng.gauss(0.0, 5.0))
        voltage = _clamp(230.0 + self._volt - power / 1000.0 * 0.8 + rng.gauss(0.0, 0.2),
                         *VOLTAGE_RANGE_V)
        voltage_v = round(voltage, 1)
        if self._dropout_left == 0 and rng.random() < self.DROPOUT_START_P:
            self._dropout_left = rng.randint(1, 5)
        if self._dropout_left > 0:
            self._dropout_left -= 1
            return {"power_w": 0.0, "voltage_v": voltage_v,
                    "energy_kwh": round(self.energy_kwh, 4), "fault": "dropout"}
        self.energy_kwh += power * dt / 3.6e6  # W x s -> kWh
        return {"power_w": round(power, 1), "voltage_v": voltage_v,
                "energy_kwh": round(self.energy_kwh, 4)}


# Door/motion events per hour at each hour of the (simulated) day, for a busy home entrance.
_DOOR_RATE_PER_H: Final = (
    0.3, 0.2, 0.2, 0.2, 0.3, 0.8, 4.0, 12.0, 10.0, 5.0, 4.0, 4.0,  # 00..11
    6.0, 5.0, 4.0, 5.0, 7.0, 12.0, 15.0, 14.0, 10.0, 7.0, 3.0, 1.0,  # 12..23
)


class DoorMotion(_BaseSensor):
    """A door contact with a PIR motion sensor: event driven.

    Events are a Poisson process whose rate follows the hour (busy in the morning and evening,
    nearly silent at night). Their times are drawn ahead, each from the previous one, and a
    tick reports an event once its time has come (one per tick); ticks with nothing to say
    return ``None``. So the sequence of events is a function of the generator and the
    simulated clock alone: a late or irregular tick delays a report, it never changes what
    happens. A door that opens closes again after a few seconds (now and then it is left open
    for minutes); no event happens while it is open, so the events' ``door`` values never
    show two ``"open"`` in a row without a ``"closed"`` between them.

    Like a real alarm sensor, it also sends supervision reports (its current state, with
    ``supervision`` = true, ``events`` unchanged): one at power-up (its first reading) and
    one whenever it has reported nothing for :attr:`supervision` seconds. A door sensor is
    therefore heard from at least once per supervision period, even at 03:00, and every run
    gets QoS 2 traffic from its first seconds. Supervision reports draw nothing from the
    generator, so they do not shift the events.
    """

    KIND = "door_motion"
    OPEN_P: Final = 0.6  # share of events that open the door; the rest are motion only

    def __init__(self, rng: random.Random, *, qos: int | None = None,
                 interval: float | None = None, midnight: float = 0.0,
                 supervision: float | None = None) -> None:
        super().__init__(rng, qos=qos, interval=interval, midnight=midnight)
        self.activity = rng.uniform(0.5, 2.0)  # how busy this entrance is
        self.events = 0
        self.door_open = False
        self._close_at = 0.0
        self._next_event = math.inf  # drawn at the first reading, from its ``now``
        self._last_report: float | None = None  # None until powered up
        self._supervision = DEFAULT_SUPERVISION
        self.supervision = DEFAULT_SUPERVISION if supervision is None else supervision

    @property
    def supervision(self) -> float:
        """Longest silence in seconds: after it, the sensor reports its state anyway."""
        return self._supervision

    @supervision.setter
    def supervision(self, value: float) -> None:
        seconds = float(value)
        if not math.isfinite(seconds) or seconds <= 0.0:
            raise ValueError(f"supervision must be a positive number of seconds, got {value!r}")
        self._supervision = seconds

    def _arrival_after(self, start: float) -> float:
        """The time of the next event after ``start``: one unit-exponential draw of "hazard",
        used up hour by hour at each hour's rate (exact for a rate constant within the hour)."""
        need = self.rng.expovariate(1.0)
        t = start
        while True:
            hour_no = math.floor((t - self.midnight) / 3600.0)
            end = self.midnight + (hour_no + 1) * 3600.0  # the next full hour
            if end <= t:  # float rounding left t on the boundary: take the next hour
                hour_no += 1
                end += 3600.0
            rate_per_s = _DOOR_RATE_PER_H[hour_no % 24] * self.activity / 3600.0
            if rate_per_s * (end - t) >= need:
                return t + need / rate_per_s
            need -= rate_per_s * (end - t)
            t = end

    def _state(self, now: float) -> dict[str, Any]:
        """A supervision report: the state as it is, no event."""
        self._last_report = now
        return {"door": "open" if self.door_open else "closed", "motion": False,
                "events": self.events, "supervision": True}

    def reading(self, now: float) -> dict[str, Any] | None:
        """An event, a supervision report, or ``None`` (most ticks) at ``now``."""
        if self._last_report is None:  # power-up
            self._next_event = self._arrival_after(now)
            return self._state(now)
        event = self._event(now)
        if event is not None:
            self._last_report = now
            return event
        if now - self._last_report >= self._supervision:
            return self._state(now)
        return None

    def _event(self, now: float) -> dict[str, Any] | None:
        rng = self.rng
        if self.door_open:
            if now < self._close_at:
                return None
            self.door_open = False
            self.events += 1
            self._next_event = self._arrival_after(self._close_at)
            return {"door": "closed", "motion": rng.random() < 0.5, "events": self.events}
        if now < self._next_event:
            return None
        at = self._next_event
        self.events += 1
        if rng.random() < self.OPEN_P:
            self.door_open = True
            long_open = rng.random() < 0.05
            self._close_at = at + (rng.uniform(60.0, 600.0) if long_open
                                   else rng.uniform(3.0, 40.0))
            return {"door": "open", "motion": rng.random() < 0.85, "events": self.events}
        self._next_event = self._arrival_after(at)
        return {"door": "closed", "motion": True, "events": self.events}


# Home points for trackers: city centres (lat, lon), so tracks land somewhere plausible.
_HOMES: Final = (
    (52.5200, 13.4050),  # Berlin
    (48.8566, 2.3522),  # Paris
    (51.5072, -0.1276),  # London
    (40.4168, -3.7038),  # Madrid
    (41.9028, 12.4964),  # Rome
    (52.3676, 4.9041),  # Amsterdam
    (52.2297, 21.0122),  # Warsaw
    (59.3293, 18.0686),  # Stockholm
    (47.4979, 19.0402),  # Budapest
    (38.7223, -9.1393),  # Lisbon
)

# Driving regimes: (weight, target speed range km/h, duration range s).
_REGIMES: Final = (
    (0.20, (0.0, 0.0), (10.0, 120.0)),  # stopped: lights, traffic, parked
    (0.45, (20.0, 50.0), (60.0, 600.0)),  # city
    (0.25, (50.0, 90.0), (120.0, 900.0)),  # main road
    (0.10, (90.0, 120.0), (180.0, 1200.0)),  # motorway
)


def _splitmix64(x: int) -> int:
    """SplitMix64's finaliser: a cheap, well-mixed hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


class GpsTracker(_BaseSensor):
    """A vehicle tracker: a mobile device that sometimes loses its network.

    The vehicle switches between driving regimes (stopped, city, main road, motorway),
    accelerates at most 2.5 m/s^2 and brakes at most 4 m/s^2 towards the regime's speed,
    wanders in heading (more in town than on the motorway) and turns back towards its home
    point when it nears :data:`GPS_RADIUS_KM`. In a tunnel (see :meth:`in_coverage`) it loses
    both the network and the GPS fix: ``sats`` is 0 and the position is dead-reckoned.
    """

    KIND = "gps_tracker"
    ACCEL_KMH_PER_S: Final = 9.0  # 2.5 m/s^2
    BRAKE_KMH_PER_S: Final = 14.4  # 4 m/s^2
    MAX_STEP_S: Final = 5.0  # longer gaps are simulated in steps of at most this
    MAX_GAP_S: Final = 600.0  # after a longer gap, assume it was parked for the rest
    OUTAGE_P: Final = 0.35  # share of coverage windows that contain a tunnel

    def __init__(self, rng: random.Random, *, qos: int | None = None,
                 interval: float | None = None, midnight: float = 0.0) -> None:
        super().__init__(rng, qos=qos, interval=interval, midnight=midnight)
        city = rng.choice(_HOMES)
        self.home = (city[0] + rng.uniform(-0.05, 0.05), city[1] + rng.uniform(-0.05, 0.05))
        self.lat = self.home[0] + rng.uniform(-0.02, 0.02)
        self.lon = self.home[1] + rng.uniform(-0.02, 0.02)
        self.heading = rng.uniform(0.0, 360.0)
        self.speed = 0.0
        self._target = 0.0
        self._regime_left = 0.0
        self._sats = rng.randint(7, 12)
        # Coverage windows: a few % of the time in tunnels, fixed per tracker by these draws.
        self._salt = rng.getrandbits(64)
        self._window_s = rng.uniform(400.0, 900.0)
        self._phase_s = rng.uniform(0.0, self._window_s)

    # -- coverage -------------------------------------------------------------------------

    def _unit(self, window: int, which: int) -> float:
        """A uniform [0, 1) value fixed by (this tracker, window, which)."""
        key = self._salt ^ ((window * 0xD6E8FEB86659FD93) & 0xFFFFFFFFFFFFFFFF) ^ (which << 56)
        return _splitmix64(key) / 2.0**64

    def outage(self, now: float) -> tuple[float, float] | None:
        """The tunnel (start, end) covering ``now``, or ``None``; a pure function of ``now``."""
        window = math.floor((now - self._phase_s) / self._window_s)
        if self._unit(window, 1) >= self.OUTAGE_P:
            return None
        duration = 10.0 + 50.0 * self._unit(window, 2)  # 10..60 s underground
        start = self._phase_s + window * self._window_s
        start += self._unit(window, 3) * (self._window_s - duration)
        end = start + duration
        return (start, end) if start <= now < end else None

    def in_coverage(self, now: float) -> bool:
        """False inside an outage window (a tunnel): 1.4-3 % of the time, per tracker.

        Deterministic: it depends only on ``now`` and on values drawn from the tracker's
        random generator when it was made, never on the order of calls.
        """
        return self.outage(now) is None

    # -- motion ---------------------------------------------------------------------------

    def _distance_km(self, lat: float, lon: float) -> float:
        """Equirectangular distance from home, ample at tens of km."""
        dy = (lat - self.home[0]) * _KM_PER_DEG_LAT
        dx = (lon - self.home[1]) * _KM_PER_DEG_LAT * math.cos(math.radians(self.home[0]))
        return math.hypot(dx, dy)

    def _bearing_home(self) -> float:
        dy = (self.home[0] - self.lat) * _KM_PER_DEG_LAT
        dx = (self.home[1] - self.lon) * _KM_PER_DEG_LAT * math.cos(math.radians(self.lat))
        return math.degrees(math.atan2(dx, dy)) % 360.0

    def _step(self, dt: float) -> None:
        rng = self.rng
        self._regime_left -= dt
        if self._regime_left <= 0.0:
            weights = [r[0] for r in _REGIMES]
            _, (lo, hi), (dmin, dmax) = rng.choices(_REGIMES, weights)[0]
            self._target = rng.uniform(lo, hi)
            self._regime_left = rng.uniform(dmin, dmax)
        old = self.speed
        if self._target > old:
            new = min(self._target, old + self.ACCEL_KMH_PER_S * dt)
        else:
            new = max(self._target, old - self.BRAKE_KMH_PER_S * dt)
        if new > 0.0:
            new += rng.gauss(0.0, 1.0) * min(1.0, dt)
        self.speed = _clamp(new, *SPEED_RANGE_KMH)
        # heading: slow drift on the motorway, turns in town
        if self.speed > 0.0:
            turn_sd = 2.0 if self.speed > 80.0 else 8.0
            self.heading += rng.gauss(0.0, turn_sd * math.sqrt(dt))
            if self.speed < 50.0 and rng.random() < 0.01 * dt:
                self.heading += rng.choice((-90.0, 90.0))  # a junction
            dist = self._distance_km(self.lat, self.lon)
            if dist > 0.7 * GPS_RADIUS_KM:
                # steer back towards home, harder the further out
                diff = (self._bearing_home() - self.heading + 180.0) % 360.0 - 180.0
                pull = min(1.0, (dist - 0.7 * GPS_RADIUS_KM) / (0.2 * GPS_RADIUS_KM))
                self.heading += diff * pull * min(1.0, dt / 10.0)
        self.heading %= 360.0
        km = (old + self.speed) / 2.0 * dt / 3600.0
        rad = math.radians(self.heading)
        lat = self.lat + km * math.cos(rad) / _KM_PER_DEG_LAT
        lon = self.lon + km * math.sin(rad) / (_KM_PER_DEG_LAT * math.cos(math.radians(self.lat)))
        if self._distance_km(lat, lon) <= GPS_RADIUS_KM:
            self.lat, self.lon = lat, lon
        else:
            self.heading = self._bearing_home()  # the edge of its patch: turn round, stay put

    def reading(self, now: float) -> dict[str, Any]:
        """Position (deg, WGS 84), speed (km/h), heading (deg from north) and satellites."""
        dt = min(self._elapsed(now), self.MAX_GAP_S)
        steps = max(1, math.ceil(dt / self.MAX_STEP_S))
        for _ in range(steps):
            self._step(dt / steps)
        if self.in_coverage(now):
            self._sats = int(_clamp(self._sats + self.rng.choice((-1, 0, 0, 0, 1)), 4, 14))
            sats = self._sats
        else:
            sats = 0  # underground: no fix, the position is dead reckoning
        return {
            "lat": round(self.lat, 6),
            "lon": round(self.lon, 6),
            "speed_kmh": round(self.speed, 1),
            "heading_deg": round(self.heading, 1) % 360.0,
            "sats": sats,
        }


_CLASSES: Final[Mapping[str, type[_BaseSensor]]] = {
    cls.KIND: cls for cls in (TempHumidity, PowerMeter, DoorMotion, GpsTracker)
}


def make_sensor(kind: str, rng: random.Random, *, qos: int | None = None,
                interval: float | None = None, midnight: float = 0.0,
                supervision: float | None = None) -> Sensor:
    """A new sensor of ``kind`` drawing from ``rng`` (give each sensor its own generator).

    ``qos`` and ``interval`` default to :data:`DEFAULT_QOS` and :data:`DEFAULT_INTERVAL`;
    ``midnight`` is when the simulated day starts (see :func:`hour_of_day`); ``supervision``
    (default :data:`DEFAULT_SUPERVISION`) is the longest silence of an event-driven sensor
    (``door_motion``); sensors that report every interval ignore it.
    Raises ``ValueError`` for an unknown kind, a QoS other than 0/1/2 or a non-positive interval
    or supervision.
    """
    try:
        cls = _CLASSES[kind]
    except KeyError:
        raise ValueError(
            f"unknown sensor kind {kind!r}; expected one of {', '.join(KINDS)}"
        ) from None
    if cls is DoorMotion:
        return DoorMotion(rng, qos=qos, interval=interval, midnight=midnight,
                          supervision=supervision)
    return cls(rng, qos=qos, interval=interval, midnight=midnight)


def _van_der_corput(index: int) -> float:
    """The ``index``-th point of the base-2 van der Corput sequence, in [0, 1)."""
    result, denom = 0.0, 1.0
    while index:
        denom *= 2.0
        index, bit = divmod(index, 2)
        result += bit / denom
    return result


def pick_kind(index: int, mix: Mapping[str, float] | None = None) -> str:
    """The sensor kind of device number ``index``, spreading kinds by weight.

    ``mix`` maps kinds to non-negative weights (any scale; missing kinds weigh 0); ``None``
    means an equal mix. Devices 0..n-1 get each kind in proportion to its weight for every n,
    not only on average: indexes are mapped through the van der Corput low-discrepancy
    sequence, so with an equal mix of four kinds, every run of four consecutive indexes
    starting at a multiple of 4 holds one of each. Deterministic and O(log index).
    """
    if index < 0:
        raise ValueError(f"device index must be >= 0, got {index}")
    weights = mix if mix is not None else dict.fromkeys(KINDS, 1.0)
    unknown = sorted(set(weights) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown sensor kind(s) in mix: {', '.join(unknown)}")
    cumulative: list[float] = []
    total = 0.0
    for kind in KINDS:
        weight = float(weights.get(kind, 0.0))
        if not math.isfinite(weight) or weight < 0.0:
            raise ValueError(f"mix weight for {kind} must be a finite number >= 0, got {weight}")
        total += weight
        cumulative.append(total)
    if total <= 0.0:
        raise ValueError("mix must give at least one kind a positive weight")
    return KINDS[bisect.bisect_right(cumulative, _van_der_corput(index) * total)]
