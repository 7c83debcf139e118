"""Task queue, a worker: take tasks from a shared subscription, acknowledge each only when done.

Every worker subscribes to ``$share/workers/tasks``: the broker hands each task to ONE member
of the group "workers" [MQTT 4.8.2], in turn, skipping a member that already holds as many
unacknowledged tasks as it allows (its Receive Maximum, 1 here: one task at a time).

The PUBACK is the acknowledgement. paho normally sends it as soon as ``on_message`` returns;
with ``manual_ack=True`` it waits for ``client.ack(mid, qos)``, which this worker calls only
after the work is done and its result reported. Until then the broker counts the task as in
flight to this worker. If the worker dies first, its connection closes, its session ends
(clean start, Session Expiry Interval 0) and the broker gives the task to another member of
the group (MQTT 5 section 4.8.2: "If the Client's Session terminates before the Client
reconnects, the Server SHOULD send the Application Message to another Client that is
subscribed to the same Shared Subscription"). Delivery is at least once: a task may be done
twice (a worker that dies after reporting "done" but before its PUBACK), so work must be
idempotent.

The worker reports on ``tasks/status`` (JSON: ``{"task", "worker", "event"}``, event
``started`` or ``done``) for the producer's tally.

    .venv/bin/python examples/task_queue/worker.py --name alice
    .venv/bin/python examples/task_queue/worker.py --name bob --work-time 1.0    # a slow one
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

TASKS = "$share/workers/tasks"  # group "workers", topic filter "tasks"
STATUS = "tasks/status"


def say(line: str) -> None:
    print(line, flush=True)  # flushed at once: readable through a pipe too


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Do tasks from $share/workers/tasks.")
    ap.add_argument("--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    ap.add_argument("--name", required=True, help="this worker's name (its client id: worker-NAME)")
    ap.add_argument("--work-time", type=float, default=0.2,
                    help="seconds each task takes (default 0.2)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="stop after this many seconds without a task (default 60)")
    args = ap.parse_args(argv)
    name = args.name

    # on_message runs in paho's network thread, which must keep running (keep-alive, other
    # packets) while we work: it only hands the message over; the main thread does the work.
    inbox: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue()

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            say(f"{name}: the broker refused the connection: {reason_code}")
            inbox.put(None)
            return
        client.subscribe(TASKS, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int,
                     reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        if reason_codes[0].is_failure:
            say(f"{name}: subscription refused: {reason_codes[0]}")
            inbox.put(None)
            return
        say(f"{name}: ready (pid {os.getpid()}), waiting for tasks on {TASKS}")

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        inbox.put(msg)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"worker-{name}",
                         protocol=mqtt.MQTTv5, manual_ack=True)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # (paho: untyped)
    connect.SessionExpiryInterval = 0  # the session ends with the connection...
    connect.ReceiveMaximum = 1  # ...and holds one unacknowledged task at most
    client.connect(args.host, args.port, clean_start=True, properties=connect)
    client.loop_start()

    def report(task: int, event: str) -> None:
        doc = {"task": task, "worker": name, "event": event}
        client.publish(STATUS, json.dumps(doc), qos=1).wait_for_publish(10)

    done = 0
    try:
        while True:
            try:
                msg = inbox.get(timeout=args.timeout)
            except queue.Empty:
                say(f"{name}: no task for {args.timeout} s; stopping")
                break
            if msg is None:
                return 1
            task = json.loads(msg.payload)["id"]
            report(task, "started")
            say(f"{name}: working on task {task} (not acknowledged yet)")
            time.sleep(args.work_time)  # the work itself
            report(task, "done")
            client.ack(msg.mid, msg.qos)  # the PUBACK: now the broker forgets the task
            done += 1
            say(f"{name}: task {task} done and acknowledged")
    except KeyboardInterrupt:
        say(f"{name}: interrupted; a task not acknowledged goes to another worker")
    finally:
        client.disconnect()
        client.loop_stop()
    say(f"{name}: {done} task(s) done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
