"""Task queue, the producer: send tasks, then follow the workers' reports and print a tally.

Each task is a QoS 1 message on ``tasks`` (JSON ``{"id": N}``); the workers share them through
``$share/workers/tasks``. Before sending, the producer subscribes to ``tasks/status``, where
each worker says which task it started and which it finished. It ends when every task has
been done at least once (exit status 0), or after ``--timeout`` seconds (exit status 1, with
the tasks still missing).

Start the workers first: a message published while nobody subscribes to its topic is not
kept for a later subscriber (only a session's subscriptions queue messages).

    .venv/bin/python examples/task_queue/producer.py --count 12
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

TASKS = "tasks"
STATUS = "tasks/status"


def say(line: str) -> None:
    print(line, flush=True)  # flushed at once: readable through a pipe too


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Send COUNT tasks and tally who did them.")
    ap.add_argument("--host", default="127.0.0.1", help="broker address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=1883, help="broker port (default 1883)")
    ap.add_argument("--count", type=int, default=12, help="tasks to send (default 12)")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="give up after this many seconds (default 120)")
    args = ap.parse_args(argv)
    deadline = time.monotonic() + args.timeout

    started: dict[int, list[str]] = defaultdict(list)  # task -> workers that started it
    finished: dict[int, list[str]] = defaultdict(list)  # task -> workers that finished it
    lock = threading.Lock()
    all_done = threading.Event()
    subscribed = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode, properties: Properties | None) -> None:
        if not reason_code.is_failure:
            client.subscribe(STATUS, qos=1)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int,
                     reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        task, worker = int(doc["task"]), str(doc["worker"])
        with lock:
            (started if doc["event"] == "started" else finished)[task].append(worker)
            if doc["event"] == "done":
                say(f"task {task} done by {worker}")
            if all(finished[t] for t in range(1, args.count + 1)):
                all_done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="task-producer")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port)
    client.loop_start()
    try:
        if not subscribed.wait(max(0.0, deadline - time.monotonic())):
            say(f"could not subscribe to {STATUS} at {args.host}:{args.port}")
            return 1
        for task in range(1, args.count + 1):
            client.publish(TASKS, json.dumps({"id": task}), qos=1).wait_for_publish(10)
        say(f"sent {args.count} tasks")
        all_done.wait(max(0.0, deadline - time.monotonic()))
    finally:
        client.disconnect()
        client.loop_stop()

    with lock:
        return tally(args.count, started, finished)


def tally(count: int, started: dict[int, list[str]], finished: dict[int, list[str]]) -> int:
    """Print who did what; 0 when every task was done at least once."""
    say("tally:")
    by_worker: dict[str, list[int]] = defaultdict(list)
    for task in range(1, count + 1):
        done_by = finished.get(task, [])
        for w in done_by:
            by_worker[w].append(task)
        # a worker that started a task and never finished it: it died holding the task
        lost = [w for w in started.get(task, []) if w not in done_by]
        line = f"  task {task}: done by {', '.join(done_by) or 'NOBODY'}"
        if lost:
            line += f" (redone: {', '.join(lost)} started it and never finished)"
        if len(done_by) > 1:
            line += f" (done {len(done_by)} times: at least once)"
        say(line)
    for worker in sorted(by_worker):
        tasks = by_worker[worker]
        say(f"  {worker}: {len(tasks)} task(s): {' '.join(map(str, tasks))}")
    missing = [t for t in range(1, count + 1) if not finished.get(t)]
    if missing:
        say(f"NOT DONE: {' '.join(map(str, missing))}")
        return 1
    say(f"all {count} tasks done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
