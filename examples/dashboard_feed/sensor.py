"""Dashboard feed, a sensor: publish MessagePack telemetry that the built-in dashboard shows.

The dashboard (http://127.0.0.1:8080/ under ``make run``; docs/web.md) subscribes to ``#``
over MQTT/WebSocket and

* lists a device for each ``fleet/<id>/status`` (retained ``online``; ``offline`` as the
  will, so a sensor that dies shows as offline) with its last ``fleet/<id>/telemetry``
  reading, the ``r`` map of a document in the fleet's payload schema (docs/payload.md);
* charts every numeric field of a topic you click in its topic tree: ``r.temp_c``,
  ``r.rh_pct``, ``r.battery_v``, and ``seq``, ``ts``, ``v``.

So this sensor publishes exactly that: a ``temp_humidity`` document (schema version 1,
MessagePack) every ``--interval`` seconds, with a temperature on a slow sine wave (a minute
per cycle), a humidity that moves against it and a battery that slowly drains.

    .venv/bin/python examples/dashboard_feed/sensor.py --count 120 --interval 0.5
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from typing import Any

import msgpack  # type: ignore[import-untyped]
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


def say(line: str) -> None:
    print(line, flush=True)  # flushed at once: readable through a pipe too


def reading(seq: int, interval: float) -> dict[str, float]:
    """The ``r`` map of a temp_humidity reading (units and ranges: docs/payload.md)."""
    phase = 2 * math.pi * (seq * interval) / 60.0  # one cycle a minute, to see it move
    temp = 21.0 + 3.0 * math.sin(phase)
    return {"temp_c": round(temp, 2),
            "rh_pct": round(50.0 - 2.5 * (temp - 21.0), 1),  # humidity moves against it
            "battery_v": round(4.1 - 0.0005 * seq, 3)}  # one Li-ion cell, slowly draining


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Publish temp/humidity telemetry (MessagePack).")
    ap.add_argument("--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    ap.add_argument("--id", default="sensor-demo01", help="device id (default sensor-demo01)")
    ap.add_argument("--count", type=int, default=120, help="readings to send (default 120)")
    ap.add_argument("--interval", type=float, default=0.5,
                    help="seconds between readings (default 0.5)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds to wait for the broker at each step (default 10)")
    args = ap.parse_args(argv)

    status = f"fleet/{args.id}/status"
    telemetry = f"fleet/{args.id}/telemetry"
    connected = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            say(f"the broker refused the connection: {reason_code}")
            return
        # the birth message, retained: a dashboard opened later still sees the device
        client.publish(status, b"online", qos=1, retain=True)
        connected.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.id)
    client.on_connect = on_connect
    # the will: if the sensor vanishes without a DISCONNECT, the broker says so for it
    client.will_set(status, b"offline", qos=1, retain=True)
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    try:
        if not connected.wait(args.timeout):
            say(f"no CONNACK from {args.host}:{args.port} within {args.timeout} s")
            return 1
        say(f"{args.id}: online; publishing {args.count} readings to {telemetry}")
        next_at = time.monotonic()
        try:
            for seq in range(args.count):
                r = reading(seq, args.interval)
                doc = {"v": 1, "id": args.id, "k": "temp_humidity", "seq": seq,
                       "ts": time.time(), "r": r}
                payload = msgpack.packb(doc, use_bin_type=True)  # a map: first byte 0x86
                client.publish(telemetry, payload, qos=1).wait_for_publish(args.timeout)
                say(f"seq {seq}: temp_c={r['temp_c']} rh_pct={r['rh_pct']} "
                    f"battery_v={r['battery_v']} ({len(payload)} bytes)")
                next_at += args.interval
                time.sleep(max(0.0, next_at - time.monotonic()))  # the pace of the readings
        except KeyboardInterrupt:
            pass
        # a clean goodbye: a DISCONNECT discards the will [MQTT-3.1.2-10], so say it ourselves
        client.publish(status, b"offline", qos=1, retain=True).wait_for_publish(args.timeout)
        say(f"{args.id}: offline")
        return 0
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
