"""Hello world, the consumer: subscribe at QoS 1 and print what arrives.

The subscription is made in ``on_connect``, so that a reconnect (paho reconnects by itself
while ``loop_start()`` runs) subscribes again. It ends after ``--count`` messages, or after
``--timeout`` seconds without one.

    .venv/bin/python examples/hello_world/consumer.py --count 5
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
    ap = argparse.ArgumentParser(description="Print the messages of a topic, QoS 1.")
    ap.add_argument("--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    ap.add_argument("--topic", default="hello/world")
    ap.add_argument("--count", type=int, default=5,
                    help="stop after this many messages (default 5; 0: never)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="stop after this many seconds without a message (default 60)")
    args = ap.parse_args(argv)

    received = 0
    activity = threading.Event()  # set at each message (and when the count is reached)
    finished = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            say(f"the broker refused the connection: {reason_code}")
            finished.set()
            activity.set()
            return
        client.subscribe(args.topic, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int,
                     reason_codes: list[ReasonCode],
                     properties: Properties | None) -> None:
        # the SUBACK: from now on the broker sends us every message published to the topic
        say(f"subscribed to {args.topic} (granted QoS {reason_codes[0].value}); "
            "waiting for messages")

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        say(f"received: {msg.payload.decode()} (topic {msg.topic}, QoS {msg.qos})")
        if args.count and received >= args.count:
            finished.set()
        activity.set()  # (after finished: the main thread looks at both when it wakes)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hello-consumer")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port)
    client.loop_start()
    try:
        while True:  # until finished, or a whole --timeout without activity
            activity.clear()
            if finished.is_set():  # (checked after clear(): a later finish sets activity)
                break
            if not activity.wait(args.timeout):
                say(f"no message for {args.timeout} s; stopping")
                break
    finally:
        client.disconnect()
        client.loop_stop()
    say(f"received {received} message(s)")
    return 0 if not args.count or received >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
