"""Request/response, the requester: send several requests at once and match each answer to
its request by Correlation Data.

1. CONNECT with Request Response Information = 1: the broker answers in CONNACK with a
   Response Information string, a topic prefix meant for answers to this client (this broker
   gives ``response_information`` + client id, ``response/<client id>`` by default). A broker
   that gives none is fine too: the requester then makes its own, ``calc/replies/<client id>``.
2. Subscribe to that response topic (before asking anything, so no answer can be missed).
3. Publish every request to ``calc/add`` with the Response Topic and a fresh Correlation
   Data (16 random bytes) [MQTT-3.3.2-13..16], without waiting for the answers in between.
4. Each answer carries the Correlation Data back: look it up among the requests still open,
   check the sum, close the request.

Exit status 0 when every request got its right answer within ``--timeout`` seconds.

    .venv/bin/python examples/request_response/requester.py --count 5
"""

from __future__ import annotations

import argparse
import json
import os
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
    ap = argparse.ArgumentParser(description=f"Send COUNT concurrent requests to {REQUESTS}.")
    ap.add_argument("--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    ap.add_argument("--count", type=int, default=5, help="requests to send (default 5)")
    ap.add_argument("--client-id", default=f"requester-{os.getpid()}")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds to wait for all the answers (default 10)")
    args = ap.parse_args(argv)

    response_topic = f"calc/replies/{args.client_id}"  # unless the broker suggests one
    ready = threading.Event()
    all_answered = threading.Event()
    lock = threading.Lock()
    pending: dict[bytes, dict[str, int]] = {}  # correlation data -> the open request
    arrival: list[int] = []  # request numbers, in the order their answers came
    wrong: list[str] = []

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        nonlocal response_topic
        if reason_code.is_failure:
            say(f"the broker refused the connection: {reason_code}")
            return
        info = getattr(properties, "ResponseInformation", None)
        if info:
            response_topic = info
            say(f"broker's Response Information: {info!r}")
        client.subscribe(response_topic, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int,
                     reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        ready.set()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        correlation: bytes | None = getattr(msg.properties, "CorrelationData", None)
        answer = json.loads(msg.payload)
        with lock:
            request = pending.pop(correlation, None) if correlation is not None else None
            if correlation is None or request is None:
                wrong.append(f"an answer nobody is waiting for: {answer} "
                             f"(correlation {correlation!r})")
                say(f"unmatched answer {answer}")
                return
            expected = request["a"] + request["b"]
            if answer.get("sum") != expected:
                wrong.append(f"request {request['n']}: {answer} != {expected}")
            arrival.append(request["n"])
            say(f"answer to request {request['n']}: {request['a']} + {request['b']} = "
                f"{answer.get('sum')} (matched by correlation {correlation.hex()})")
            if not pending:
                all_answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         protocol=mqtt.MQTTv5)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # (paho: untyped)
    connect.RequestResponseInformation = 1  # "please suggest a response topic"
    client.connect(args.host, args.port, clean_start=True, properties=connect)
    client.loop_start()
    try:
        if not ready.wait(args.timeout):
            say(f"could not subscribe to {response_topic} within {args.timeout} s")
            return 1
        say(f"waiting for answers on {response_topic}")
        for n in range(1, args.count + 1):
            request = {"n": n, "a": n, "b": 10 * n}
            correlation = os.urandom(16)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = response_topic
            props.CorrelationData = correlation
            with lock:
                pending[correlation] = request
            client.publish(REQUESTS, json.dumps({"a": request["a"], "b": request["b"]}),
                           qos=1, properties=props)
            say(f"request {n}: {request['a']} + {request['b']} ? "
                f"(correlation {correlation.hex()})")
        all_answered.wait(args.timeout)
    finally:
        client.disconnect()
        client.loop_stop()

    with lock:
        for problem in wrong:
            say(f"WRONG: {problem}")
        if pending:
            say(f"NO ANSWER to request(s) {' '.join(str(r['n']) for r in pending.values())}")
        say(f"answers arrived in the order {' '.join(map(str, arrival))}")
        ok = not pending and not wrong
        say(f"{len(arrival)} of {args.count} answers matched by correlation data"
            + ("" if ok else "; FAILED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
