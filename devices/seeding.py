"""Where a fleet's randomness comes from: one seed, split into independent streams.

Everything that decides *what* traffic a run generates (which devices speak MQTT 5, when
each door opens, what every sensor reads, the simulated time of day) is drawn from generators
derived here from the run's seed, never from the ``random`` module's global generator nor from
the wall clock or the machine's time zone. The report carries the seed, so ``devices run
--seed N`` replays a run's traffic. Timing (how fast the broker answers, how the OS schedules
the workers) still varies from run to run, and only shifts *when* things happen.

Each device gets three separate streams, so that decisions of one kind never shift another:
the number of reconnect attempts depends on how the broker and the OS behave, and if those
draws came from the sensor's generator, every reading after the first reconnect would differ
from the seed's plan.

* :func:`sensor_rng` -- the sensor model: its readings, events and faults.
* :func:`device_rng` -- the device's fixed traits: MQTT version, the phase of its ticks.
* :func:`link_rng` -- network timing: reconnect backoff jitter, when a flaky link drops.
"""

from __future__ import annotations

import math
import random

__all__ = ["device_rng", "link_rng", "run_midnight", "sensor_rng", "start_hour"]


def sensor_rng(seed: int, index: int) -> random.Random:
    """The generator of device ``index``'s sensor (the fleet's original per-device formula,
    kept so a seed's readings stay what they were)."""
    return random.Random(seed * 1_000_003 + index)


def device_rng(seed: int, index: int) -> random.Random:
    """The generator of device ``index``'s fixed traits (MQTT version, tick phase)."""
    # str seeds are hashed with SHA-512 (random.seed version 2): stable across runs and
    # processes, unlike hash(), which PYTHONHASHSEED randomises
    return random.Random(f"devices/{seed}/{index}/device")


def link_rng(seed: int, index: int) -> random.Random:
    """The generator of device ``index``'s network timing (backoff jitter, flaky links)."""
    return random.Random(f"devices/{seed}/{index}/link")


def start_hour(seed: int, fixed: float | None = None) -> float:
    """The simulated local time of day (hours in [0, 24)) at which a run starts.

    ``fixed`` (a profile's ``start_hour``) wins when given; otherwise it is drawn from the
    seed, to the minute, so different seeds cover different times of day while one seed is
    always the same hour. The daily cycles (door events are 75 times busier at 18:00 than at
    03:00) used to follow the machine's clock, so a test run at night saw different traffic.
    """
    if fixed is not None:
        hour = float(fixed)
        if not (math.isfinite(hour) and 0.0 <= hour < 24.0):
            raise ValueError(f"start_hour must be in [0, 24), got {fixed!r}")
        return hour
    return random.Random(f"devices/{seed}/start_hour").randrange(24 * 60) / 60.0


def run_midnight(start_at: float, seed: int, fixed_hour: float | None = None) -> float:
    """The instant (seconds since the epoch) the sensors treat as local midnight, for a run
    starting at ``start_at``: :func:`start_hour` hours before it."""
    return start_at - start_hour(seed, fixed_hour) * 3600.0
