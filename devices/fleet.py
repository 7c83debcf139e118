"""Run a fleet: devices spread over one process per core, a verifier, a live progress line,
and at the end a summary table, a JSON report and a PNG plot.

The verifier subscribes at the devices' broker, or at another one (``verify_at``): an edge
gateway, where the devices publish to an edge broker that bridges to the cloud. With a
:class:`~devices.link.LinkRelay` between the edge's bridge and the cloud, the run cuts and
restores that link on the profile's ``link_cuts`` schedule and reports what the relay saw."""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing as mp
import os
import queue
import sys
import time
from typing import Any
from urllib.parse import urlparse

from .commands import COMMAND_DELAY, CommandSender, command_report
from .device import Device, Stats
from .link import LinkRelay
from .profile import Profile, check_link_cuts, profile_from_dict
from .report import Timeline, percentile, progress_line, verdict
from .seeding import run_midnight, start_hour
from .sensors import DEFAULT_QOS, KINDS, pick_kind
from .sn_device import SnDevice
from .verifier import Verifier

log = logging.getLogger("devices")


def parse_broker(url: str) -> tuple[str, int]:
    """``mqtt://HOST:PORT`` (or ``HOST:PORT``) -> (host, port)."""
    if "://" not in url:
        url = "mqtt://" + url
    u = urlparse(url)
    if u.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"unsupported broker URL scheme {u.scheme!r} (use mqtt://HOST:PORT)")
    return u.hostname or "127.0.0.1", u.port or 1883


def speaks_mqttsn(index: int, share: float) -> bool:
    """Whether device ``index`` is an MQTT-SN sensor in a fleet where ``share`` of them are.

    The golden-ratio (Weyl) sequence spreads them evenly over the indexes (any n consecutive
    devices hold n * share of them, give or take one or two) without following the base-2
    pattern :func:`~devices.sensors.pick_kind` gives the sensor kinds: with share 0.5, every
    kind is on both protocols."""
    if share >= 1.0:
        return True
    return math.modf((index + 1) * GOLDEN)[0] < share


GOLDEN = (math.sqrt(5) - 1) / 2


def device_id(index: int, share: float) -> str:
    return f"{'sn' if speaks_mqttsn(index, share) else 'sensor'}-{index:06d}"


def _worker(worker: int, indexes: list[int], host: str, port: int,
            profile_data: dict[str, Any], start_at: float, stop_at: float, seed: int,
            midnight: float, out: Any, gateway: tuple[str, int] | None = None,
            share: float = 0.0) -> None:
    """One process: its devices on one asyncio loop, stats to ``out`` every second."""
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker_main(worker, indexes, host, port, profile_from_dict(profile_data),
                             start_at, stop_at, seed, midnight, out, gateway, share))


async def _worker_main(worker: int, indexes: list[int], host: str, port: int,
                       profile: Profile, start_at: float, stop_at: float, seed: int,
                       midnight: float, out: Any, gateway: tuple[str, int] | None = None,
                       share: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    devices: list[Device | SnDevice] = []
    for i in indexes:
        kind = pick_kind(i, profile.mix or None)
        if gateway is not None and speaks_mqttsn(i, share):
            devices.append(SnDevice(i, kind, gateway, profile, stats, loop, seed,
                                    midnight=midnight))
        else:
            devices.append(Device(i, kind, host, port, profile, stats, loop, seed,
                                  midnight=midnight))
    n = max(len(devices), 1)
    for k, d in enumerate(devices):
        d.start(max(start_at - time.time(), 0) + profile.ramp_up * k / n)
    storm_at = start_at + (stop_at - start_at) * profile.storm_at \
        if profile.storm_at is not None else None
    next_burst = start_at + profile.burst_every if profile.burst_every else None
    last = [0, 0, 0]
    while time.time() < stop_at:
        await asyncio.sleep(min(1.0, max(stop_at - time.time(), 0.01)))
        for d in devices:
            d.misc()
        now = time.time()
        if storm_at is not None and now >= storm_at:
            storm_at = None
            for d in devices:
                d.storm()
        if next_burst is not None and now >= next_burst:
            next_burst += profile.burst_every
            for d in devices:  # everyone reports at the same instant
                if d.connected and not d.asleep:
                    d.report()
        pub = list(stats.published)
        out.put(("tick", worker, now, [pub[q] - last[q] for q in range(3)], stats.connected))
        last = pub
    for d in devices:
        d.running = False
    # let outstanding QoS 1/2 flows finish before reporting what was acknowledged; sleeping
    # MQTT-SN sensors wake once more, collect their commands and say goodbye
    sn_tasks = [d.task for d in devices if isinstance(d, SnDevice) and d.task is not None]
    deadline = time.time() + 5
    while time.time() < deadline and (any(d.pending and d.connected for d in devices)
                                      or not all(t.done() for t in sn_tasks)):
        for d in devices:
            d.misc()
        await asyncio.sleep(0.1)
    if sn_tasks and not all(t.done() for t in sn_tasks):  # retries still running
        await asyncio.wait(sn_tasks, timeout=max(stop_at + 20 - time.time(), 0.1))
    for d in devices:
        d.stop()
    await asyncio.sleep(0.2)
    sn = {"sleeps": stats.sleeps, "wakeups": stats.wakeups, "beacons": stats.beacons,
          "commands": stats.commands,
          "retransmissions": sum(d.client.retransmissions for d in devices
                                 if isinstance(d, SnDevice))}
    out.put(("final", stats.published, stats.sent, stats.acked, stats.reconnects,
             sum(len(d.buffer) for d in devices), sn))


def _protocols(acked: dict[str, dict[int, list[int]]],
               sn: set[str], verifier: Verifier) -> dict[str, Any]:
    """Published (acknowledged) / delivered / lost per QoS, for each protocol's devices."""
    qs = ("0", "1", "2")
    out: dict[str, Any] = {}
    for name, ids in (("mqtt", {d for d in acked if d not in sn}), ("mqttsn", sn)):
        mine = {d: v for d, v in acked.items() if d in ids}
        published = [sum(len(v.get(q, [])) for v in mine.values()) for q in range(3)]
        out[name] = {"devices": len(ids),
                     "published": dict(zip(qs, published)),
                     "delivered": dict(zip(qs, verifier.delivered_by(ids))),
                     "lost": dict(zip(qs, verifier.lost(mine)))}
    return out


def published_qos(profile: Profile) -> dict[str, int]:
    """The QoS each sensor kind publishes at under ``profile``."""
    return {kind: profile.qos.get(kind, DEFAULT_QOS[kind]) for kind in KINDS}


def run_fleet(broker: str, devices: int, duration: float, profile: Profile, *,
              processes: int | None = None, seed: int = 1, progress: bool = True,
              stream: Any = None, verify_at: str | None = None,
              relay: LinkRelay | None = None, mqttsn: tuple[str, int] | None = None,
              mqttsn_share: float = 1.0,
              ) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Run ``devices`` devices for ``duration`` seconds against ``broker``; return the report
    and the timeline series (for the plot).

    ``seed`` decides what the devices send (see :mod:`devices.seeding`); the report carries it
    and the simulated hour of day the run started at, so a run can be replayed.

    ``verify_at`` (a broker URL) is where the verifier subscribes, ``broker`` by default.
    ``relay`` (started by the caller, who also stops it) is the link between the edge's bridge
    and the cloud: the run waits up to the profile's ``link_wait`` for the bridge to be through
    it, cuts it on the profile's ``link_cuts`` schedule (which must end before the run does)
    and reports it under ``link``. A profile with ``link_cuts`` needs a relay.

    ``mqttsn`` (the (host, port) of an ``mqttsn`` listener): ``mqttsn_share`` of the devices
    (all by default) are sleeping MQTT-SN sensors (:mod:`devices.sn_device`) talking to it;
    the fleet sends them commands while they sleep and reports under ``mqttsn``."""
    host, port = parse_broker(broker)
    vhost, vport = parse_broker(verify_at) if verify_at else (host, port)
    check_link_cuts(profile, duration)
    if profile.link_cuts and relay is None:
        raise ValueError(f"profile {profile.name} cuts the link between an edge and a cloud "
                         f"broker: it needs a link relay (devices run --relay HOST:PORT)")
    stream = stream or sys.stderr
    procs = max(1, min(processes or os.cpu_count() or 1, devices))
    timeline = Timeline()
    if relay is not None:
        if progress:
            stream.write(f"link: waiting up to {profile.link_wait:g} s for a bridge to connect "
                         f"through the relay at {relay.address} (to {vhost}:{vport})\n")
            stream.flush()
        if not relay.wait_through(profile.link_wait):
            raise RuntimeError(f"no bridge came through the link relay at {relay.address} "
                               f"within {profile.link_wait:g} s: point the edge's bridge "
                               f"(bridges.<name>.addresses) at it")
    if not 0.0 <= mqttsn_share <= 1.0:
        raise ValueError(f"the MQTT-SN share must be in [0, 1], got {mqttsn_share!r}")
    share = mqttsn_share if mqttsn is not None else 0.0
    sn_ids = {device_id(i, share): i for i in range(devices) if speaks_mqttsn(i, share)}
    kind_qos = published_qos(profile)
    verifier = Verifier(vhost, vport, timeline)
    verifier.expect_qos(kind_qos)
    verifier.expect_device_qos({d: min(kind_qos[pick_kind(i, profile.mix or None)], 1)
                                for d, i in sn_ids.items()})
    if sn_ids and profile.beacon:
        verifier.watch_beacons(profile.beacon["topic"])
    verifier.start()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 1.0
    stop_at = start_at + duration
    commander = None
    if sn_ids and profile.sleep["commands"]:
        # no command in the last second: every one must reach the gateway before the
        # sensors' last wake-up, which comes after stop_at
        commander = CommandSender(host, port, sn_ids, int(profile.sleep["commands"]),
                                  until=stop_at - 1.0,
                                  delay=min(COMMAND_DELAY, 0.4 * profile.sleep["awake_every"]))
        commander.start()
    if relay is not None:
        verifier.watch_cuts([(start_at + at, start_at + at + length)
                             for at, length in profile.link_cuts])
        relay.schedule(start_at, profile.link_cuts)
    # one simulated day for the whole fleet, anchored at the run's start, not at the wall clock
    midnight = run_midnight(start_at, seed, profile.start_hour)
    workers = []
    for p in range(procs):
        idx = list(range(p, devices, procs))
        w = ctx.Process(target=_worker, args=(p, idx, host, port, profile.as_dict(),
                                              start_at, stop_at, seed, midnight, out,
                                              mqttsn, share),
                        daemon=True)
        w.start()
        workers.append(w)
    connected: dict[int, int] = {}
    connected_peak = 0
    finals: list[tuple[Any, ...]] = []
    last_print = 0.0
    hard_stop = stop_at + 30
    while len(finals) < procs and time.time() < hard_stop:
        try:
            msg = out.get(timeout=0.5)
        except queue.Empty:
            continue
        if msg[0] == "tick":
            _, worker_no, t, pub_delta, conn = msg
            timeline.add_published(t, sum(pub_delta))
            connected[worker_no] = conn
            total_conn = sum(connected.values())
            connected_peak = max(connected_peak, total_conn)
            now = time.time()
            if now - last_print >= 1.0:
                last_print = now
                timeline.add_connected(now, total_conn)
                if progress:
                    s = timeline.series()
                    pub_rate = s["published_per_s"][-2] if len(s["published_per_s"]) > 1 else 0
                    del_rate = s["delivered_per_s"][-2] if len(s["delivered_per_s"]) > 1 else 0
                    link = None if relay is None else not relay.is_cut
                    stream.write("\r" + progress_line(now - start_at, total_conn, pub_rate,
                                                      del_rate, 0, link=link))
                    stream.flush()
        else:
            finals.append(msg)
    for w in workers:
        w.join(5)
        if w.is_alive():
            w.terminate()
    if progress:
        stream.write("\n")
    published = [0, 0, 0]
    sent = [0, 0, 0]
    acked: dict[str, dict[int, list[int]]] = {}
    reconnects = 0
    buffered = 0
    sn_totals = {"sleeps": 0, "wakeups": 0, "beacons": 0, "retransmissions": 0}
    got_commands: dict[str, list[tuple[int, bool, bool]]] = {}
    for _, pub, snt, ack, rec, buf, sn in finals:
        for q in range(3):
            published[q] += pub[q]
            sent[q] += snt[q]
        acked.update(ack)
        reconnects += rec
        buffered += buf
        for key in sn_totals:
            sn_totals[key] += sn[key]
        got_commands.update(sn["commands"])
    if commander is not None:
        commander.wait_acked(2.0)
        commander.stop()
    if progress and relay is not None:
        stream.write(f"verifier: waiting up to {profile.drain:g} s for what the bridge "
                     f"still holds\n")
        stream.flush()
    verifier.wait_complete(acked, 1.0, profile.drain)
    verifier.stop()
    lost = verifier.lost(acked)
    lat = verifier.latencies
    qs = ("0", "1", "2")
    report: dict[str, Any] = {
        "broker": broker,
        "profile": profile.name,
        "seed": seed,
        "start_hour": start_hour(seed, profile.start_hour),
        "devices": devices,
        "processes": procs,
        "duration_s": duration,
        "connected_peak": connected_peak,
        "generated": dict(zip(qs, published)),
        "published": dict(zip(qs, sent)),
        "delivered": dict(zip(qs, verifier.delivered)),
        "lost": dict(zip(qs, lost)),
        "duplicates": dict(zip(qs, verifier.duplicates)),
        "reordered": dict(zip(qs, verifier.reordered)),
        "downgraded": dict(zip(qs, verifier.downgraded)),
        "still_buffered_on_devices": buffered,
        "reconnects": reconnects,
        "bad_payloads": verifier.bad_payloads,
        "workers_reported": len(finals),
        "latency_ms": {
            "p50": round(percentile(lat, 50), 3) if lat else None,
            "p99": round(percentile(lat, 99), 3) if lat else None,
            "max": round(max(lat), 3) if lat else None,
        },
    }
    if verify_at:
        report["verify_at"] = verify_at
    if mqttsn is not None:
        report["protocols"] = _protocols(acked, set(sn_ids), verifier)
        report["mqttsn"] = {
            "gateway": f"{mqttsn[0]}:{mqttsn[1]}",
            "share": share,
            "devices": len(sn_ids),
            "sleep": dict(profile.sleep),
            **sn_totals,
            "commands": command_report(commander.sent if commander else {}, got_commands),
            "beacons_delivered": len({k for k in verifier.beacons if k[0] in sn_ids}),
        }
    if relay is not None:
        report["link"] = {**relay.report(start_at), "planned_cuts": len(profile.link_cuts),
                          "made_while_cut": dict(zip(qs, verifier.during_cuts))}
    report["verdict"] = verdict(report)
    return report, timeline.series()

