"""Request/response, the responder: answer each request on its Response Topic, with its
Correlation Data.

MQTT 5 carries request/response in two PUBLISH properties (section 4.10): the requester
names a Response Topic (where it wants the answer) and may add Correlation Data (opaque
bytes it uses to tell its requests apart). The responder publishes its answer to that Response
Topic and sends the Correlation Data back unchanged [MQTT-3.3.2-13..16]; the broker passes
both properties through untouched to the subscriber [MQTT-3.3.2-15, MQTT-3.3.2-16].

This one is a tiny calculator: a request ``{"a": 2, "b": 3}`` on ``calc/add`` gets the
answer ``{"sum": 5}``. Each answer waits a random moment (``--max-delay``), as a real service
would take varying times, so answers come back in another order than the requests went out:
only the Correlation Data says which answer is whose.

    .venv/bin/python examples/request_response/responder.py
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

REQUESTS = "calc/add"


def say(line: str) -> None:
    print(line, flush=True)  # flushed at once: readable through a pipe too


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=f"Answer the requests on {REQUESTS}.")
    ap.add_argument("--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    ap.add_argument("--count", type=int, default=0,
                    help="stop after answering this many requests (default 0: never)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="stop after this many seconds without a request (default 300)")
    ap.add_argument("--max-delay", type=float, default=0.3,
                    help="each answer waits a random time up to this (default 0.3 s)")
    args = ap.parse_args(argv)

    answered = 0
    lock = threading.Lock()
    activity = threading.Event()  # set at each request, and when the count is reached
    finished = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            say(f"the broker refused the connection: {reason_code}")
            finished.set()
            activity.set()
            return
        client.subscribe(REQUESTS, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int,
                     reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        say(f"responder: ready, answering requests on {REQUESTS}")

    def answer(client: mqtt.Client, response_topic: str, correlation: bytes | None,
               request: dict[str, Any]) -> None:
        nonlocal answered
        reply = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # (paho: untyped)
        if correlation is not None:
            reply.CorrelationData = correlation  # back unchanged: the requester's key
        body = {"sum": request["a"] + request["b"]}
        client.publish(response_topic, json.dumps(body), qos=1, properties=reply)
        with lock:  # (timer threads: one line at a time)
            say(f"responder: {request['a']} + {request['b']} = {body['sum']} -> "
                f"{response_topic} (correlation {correlation.hex() if correlation else None})")
            answered += 1
            if args.count and answered >= args.count:
                finished.set()
                activity.set()  # wake the main thread: it is done

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        activity.set()
        props = msg.properties
        response_topic: str | None = getattr(props, "ResponseTopic", None)
        correlation: bytes | None = getattr(props, "CorrelationData", None)
        if not response_topic:
            say("responder: a request without a Response Topic: nowhere to answer")
            return
        request = json.loads(msg.payload)
        # answer later, from a timer thread: the network loop goes on with the next request
        delay = random.uniform(0.0, args.max_delay)
        threading.Timer(delay, answer, (client, response_topic, correlation, request)).start()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="calc-responder",
                         protocol=mqtt.MQTTv5)
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
                say(f"responder: no request for {args.timeout} s; stopping")
                break
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    say(f"responder: {answered} request(s) answered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
