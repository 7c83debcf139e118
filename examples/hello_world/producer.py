"""Hello world, the producer: publish a few messages at QoS 1, each confirmed by the broker.

QoS 1 means "at least once": the broker answers every PUBLISH with a PUBACK once it has taken
the message in charge [MQTT-4.3.2]; paho's ``wait_for_publish()`` returns when that PUBACK has
arrived, so when this program says "sent", the broker has the message.

    .venv/bin/python examples/hello_world/producer.py --count 5
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


def say(line: str) -> None:
    print(line, flush=True)  # flushed at once: readable through a pipe too


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Publish COUNT 'hello world' messages at QoS 1.")
    ap.add_argument("--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    ap.add_argument("--topic", default="hello/world")
    ap.add_argument("--count", type=int, default=5, help="messages to send (default 5)")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds to wait for the broker at each step (default 10)")
    args = ap.parse_args(argv)

    # paho-mqtt 2.x: the first argument picks the callback signatures (VERSION2 is current).
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hello-producer")
    connected = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            say(f"the broker refused the connection: {reason_code}")
        else:
            connected.set()

    client.on_connect = on_connect
    client.connect(args.host, args.port)
    client.loop_start()  # paho's network loop, in a thread of its own
    try:
        if not connected.wait(args.timeout):
            say(f"no CONNACK from {args.host}:{args.port} within {args.timeout} s")
            return 1
        for i in range(1, args.count + 1):
            text = f"hello world #{i}"
            info = client.publish(args.topic, text, qos=1)
            info.wait_for_publish(args.timeout)  # returns once the broker's PUBACK is in
            if not info.is_published():
                say(f"no PUBACK for {text!r} within {args.timeout} s")
                return 1
            say(f"sent: {text}")
        return 0
    finally:
        client.disconnect()
        client.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
