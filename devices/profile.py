"""Fleet profiles: how the simulated devices behave, read from ``configs/fleet-*.yaml``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything that shapes a fleet run (durations in seconds)."""

    name: str = "steady"
    description: str = ""
    mix: dict[str, float] = field(default_factory=dict)  # sensor kind -> weight
    qos: dict[str, int] = field(default_factory=dict)  # sensor kind -> QoS override
    interval_scale: float = 1.0  # multiplies every sensor's reporting interval
    v5_fraction: float = 0.25  # share of devices speaking MQTT 5 (the rest 3.1.1)
    keepalive: int = 30  # small, as constrained devices use
    payload: str = "msgpack"  # or "json"
    ramp_up: float = 2.0  # devices connect spread over this long
    session_expiry: int = 3600  # MQTT 5 Session Expiry Interval of persistent devices
    buffer_max: int = 1000  # readings a device keeps while offline
    backoff_initial: float = 0.5  # reconnect backoff: first delay
    backoff_max: float = 30.0  # reconnect backoff: cap
    backoff_jitter: float = 0.5  # +- fraction of random jitter on every delay
    duty_awake: float = 0.0  # duty cycle: seconds awake (0 = always awake)
    duty_sleep: float = 0.0  # duty cycle: seconds asleep
    duty_disconnect: bool = False  # disconnect while asleep (else stay connected, silent)
    drops_per_hour: float = 0.0  # flaky link: abrupt socket drops per device per hour
    half_open_per_hour: float = 0.0  # flaky link: silent half-open spells per device per hour
    half_open_duration: float = 10.0  # how long a half-open spell lasts
    storm_at: float | None = None  # reconnect storm: at this fraction of the run all drop
    burst_every: float = 0.0  # burst: every N seconds all devices report at the same instant
    drain: float = 5.0  # at most this long the verifier waits at the end for what is on its way
    # Longest silence of an event-driven sensor (door_motion) before it reports its state
    # anyway, in the field's seconds (scaled by interval_scale like every interval); None: the
    # sensor's default, an hour. It also reports once at power-up, whatever this says.
    supervision: float | None = None
    # Simulated local time of day (hours, 0 <= h < 24) when the run starts; the daily cycles
    # (door events, power peaks, temperature) follow it. None: drawn from the run's seed.
    start_hour: float | None = None
    # Edge gateway: cut the link between the edge broker's bridge and the cloud broker (the
    # fleet's link relay, ``devices run --relay``) at ``at`` seconds into the run for ``for``
    # seconds, for each entry ({at: 5, for: 3} or [5, 3]); kept as (at, for) pairs, in order.
    link_cuts: tuple[tuple[float, float], ...] = ()
    # seconds to wait, before the devices start, for the edge's bridge to be through the relay
    link_wait: float = 30.0
    # MQTT-SN sleepers (devices run --protocol mqttsn / --mqttsn-share): ``duration`` is the
    # Duration of the DISCONNECT that puts a sensor to sleep (the gateway gives up on it after
    # 1.5x), ``awake_every`` the seconds between its PINGREQ wake-ups, ``wakes`` the wake-ups
    # per sleep before it CONNECTs again to report, ``commands`` how many commands the fleet
    # publishes to each sensor per sleep (while it sleeps). Missing keys take SLEEP_DEFAULTS.
    sleep: dict[str, float] = field(default_factory=dict)
    # QoS -1 beacons of MQTT-SN sensors (the listener needs ``qos_minus_one: true``): ``topic``
    # is the topic name the verifier subscribes to; with ``topic_id`` the sensors publish to
    # that predefined id (the listener's ``predefined_topics`` must map it to ``topic``),
    # without it ``topic`` must be a 2-character short topic name. Empty: no beacons.
    beacon: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the two keys the seeded traffic depends on are checked here, so a bad profile is
        # refused when it is loaded, not in a worker process half way through a run
        if self.supervision is not None:
            seconds = _number("supervision", self.supervision)
            if not (math.isfinite(seconds) and seconds > 0.0):
                raise ValueError(f"supervision must be a positive number of seconds, "
                                 f"got {self.supervision!r}")
        if self.start_hour is not None:
            hour = _number("start_hour", self.start_hour)
            if not (math.isfinite(hour) and 0.0 <= hour < 24.0):
                raise ValueError(f"start_hour must be in [0, 24), got {self.start_hour!r}")
        object.__setattr__(self, "link_cuts", _link_cuts(self.link_cuts))
        wait = _number("link_wait", self.link_wait)
        if not (math.isfinite(wait) and 0.0 < wait <= MAX_LINK_WAIT):
            raise ValueError(f"link_wait must be a number of seconds in (0, {MAX_LINK_WAIT:g}], "
                             f"got {self.link_wait!r}")

        object.__setattr__(self, "sleep", _sleep(self.sleep))
        object.__setattr__(self, "beacon", _beacon(self.beacon))

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for the report and for worker processes."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


MAX_LINK_CUTS = 100
SLEEP_DEFAULTS: dict[str, float] = {"duration": 10, "awake_every": 2.0, "wakes": 2,
                                    "commands": 1}


def _sleep(value: object) -> dict[str, float]:
    """``sleep`` with defaults filled in, or ``ValueError`` naming the bad key."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f"sleep must be a mapping like {{duration: 10, awake_every: 2}}, "  # noqa: TRY004
                         f"got {value!r}")
    unknown = sorted(set(value) - set(SLEEP_DEFAULTS))
    if unknown:
        raise ValueError(f"sleep: unknown keys {unknown}; known: {sorted(SLEEP_DEFAULTS)}")
    out = {**SLEEP_DEFAULTS, **value}
    out = {key: _number(f"sleep.{key}", v) for key, v in out.items()}
    duration, every = out["duration"], out["awake_every"]
    if not (duration.is_integer() and 1 <= duration <= 0xFFFF):
        raise ValueError(f"sleep.duration must be whole seconds in 1..65535 (the DISCONNECT "
                         f"Duration), got {value.get('duration')!r}")
    if not (math.isfinite(every) and 0.05 <= every <= duration):
        raise ValueError(f"sleep.awake_every must be in [0.05, sleep.duration] seconds (a "
                         f"sleeper that does not wake within 1.5x its Duration is lost), "
                         f"got {every!r}")
    for key, top in (("wakes", 1000), ("commands", 100)):
        if not (out[key].is_integer() and 0 <= out[key] <= top):
            raise ValueError(f"sleep.{key} must be a whole number in 0..{top}, "
                             f"got {value.get(key)!r}")
    return out


def _beacon(value: object) -> dict[str, Any]:
    """``beacon`` checked: {} or {topic: NAME, topic_id: ID} or {topic: 2-char short name}."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"beacon must be a mapping like {{topic: fleet/beacons, "  # noqa: TRY004
                         f"topic_id: 1}}, got {value!r}")
    unknown = sorted(set(value) - {"topic", "topic_id"})
    if unknown:
        raise ValueError(f"beacon: unknown keys {unknown}; known: ['topic', 'topic_id']")
    topic = value.get("topic")
    if not isinstance(topic, str) or not topic or any(c in topic for c in "+#"):
        raise ValueError(f"beacon.topic must be a topic name without wildcards, got {topic!r}")
    tid = value.get("topic_id")
    if tid is None:
        if len(topic.encode()) != 2:
            raise ValueError(f"beacon: without topic_id (a predefined id) the topic must be a "
                             f"2-character short topic name, got {topic!r}")
        return {"topic": topic}
    if isinstance(tid, bool) or not isinstance(tid, int) or not 1 <= tid <= 0xFFFE:
        raise ValueError(f"beacon.topic_id must be a predefined topic id in 1..65534, "
                         f"got {tid!r}")
    return {"topic": topic, "topic_id": tid}
MAX_LINK_WAIT = 600.0
MIN_CUT = 0.1  # seconds: shorter than that, a bridge would not even notice


def _link_cuts(value: object) -> tuple[tuple[float, float], ...]:
    """``link_cuts`` as ordered, non-overlapping ``(at, for)`` pairs, or ``ValueError``."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"link_cuts must be a list of {{at: SECONDS, for: SECONDS}}, "  # noqa: TRY004
                         f"got {value!r}")
    if len(value) > MAX_LINK_CUTS:
        raise ValueError(f"link_cuts: at most {MAX_LINK_CUTS} cuts, got {len(value)}")
    cuts: list[tuple[float, float]] = []
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"at", "for"})
            if unknown or "at" not in entry or "for" not in entry:
                raise ValueError(f"link_cuts[{i}]: expected {{at: SECONDS, for: SECONDS}}, "
                                 f"got {entry!r}")
            at, length = entry["at"], entry["for"]
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            at, length = entry
        else:
            raise ValueError(f"link_cuts[{i}]: expected {{at: SECONDS, for: SECONDS}}, "
                             f"got {entry!r}")
        start = _number(f"link_cuts[{i}].at", at)
        seconds = _number(f"link_cuts[{i}].for", length)
        if not (math.isfinite(start) and start >= 0.0):
            raise ValueError(f"link_cuts[{i}].at must be >= 0 seconds, got {at!r}")
        if not (math.isfinite(seconds) and seconds >= MIN_CUT):
            raise ValueError(f"link_cuts[{i}].for must be at least {MIN_CUT:g} s, "
                             f"got {length!r}")
        if cuts and start < cuts[-1][0] + cuts[-1][1]:
            raise ValueError(f"link_cuts[{i}] starts at {start:g} s, before cut {i - 1} ends "
                             f"(cuts must be in order and must not overlap)")
        cuts.append((start, seconds))
    return tuple(cuts)


def check_link_cuts(profile: Profile, duration: float) -> None:
    """``ValueError`` unless every cut of ``profile`` is over before a ``duration`` s run
    ends (so the run shows the link restored and what was queued meanwhile delivered)."""
    for i, (at, length) in enumerate(profile.link_cuts):
        if at + length >= duration:
            raise ValueError(f"profile {profile.name}: link cut {i} (at {at:g} s for "
                             f"{length:g} s) does not end before the {duration:g} s run does; "
                             f"give a longer --duration")


def _number(key: str, value: object) -> float:
    """``value`` as a float, or ``ValueError`` naming ``key`` (YAML may give a str or a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")  # noqa: TRY004 (usage error)
    return float(value)


def load_profile(name_or_path: str | os.PathLike[str]) -> Profile:
    """A profile by name (``steady`` -> ``configs/fleet-steady.yaml``) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"fleet-{name_or_path}.yaml"
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a profile is a mapping of settings")  # noqa: TRY004
    known = {f.name for f in fields(Profile)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown profile keys {unknown}; known: {sorted(known)}")
    data.setdefault("name", path.stem.removeprefix("fleet-"))
    try:
        return Profile(**data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def profile_from_dict(data: dict[str, Any]) -> Profile:
    """Rebuild a profile sent to a worker process."""
    return Profile(**data)
