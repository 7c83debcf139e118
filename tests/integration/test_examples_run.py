"""The runnable examples of examples/ (each README's steps), run against a broker on a free port.

Every program runs as its README says (``python examples/<dir>/<program>.py ...``), as a
subprocess pointed at the test's broker with ``--port``; the assertions are on what the
programs print and exit with, which is their real outcome:

* hello_world: the consumer prints every message the producer had acknowledged, in order;
* task_queue: three workers share ``$share/workers/tasks`` (one fast, one slow, one that
  holds its first task until the test SIGKILLs it): every task is done exactly once, the
  killed worker's task by another worker, and the workers' own logs agree with the tally;
* request_response: two requesters at once, one responder: every answer is matched by its
  Correlation Data, on the Response Topic the broker suggested (Response Information);
* dashboard_feed: the sensor's readings reach a client that connects the way the dashboard
  does (``/dashboard.json``, then MQTT 5 over WebSocket, ``#``), valid in the payload schema,
  and the dashboard's own decoder (``src/decode.js``, under Node) finds the numeric fields it
  charts and the reading it shows in the device table.

Every wait is on a printed line or an exit, bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices.payload import decode
from tests.conftest import BrokerThread, base_config

from .clientprocs import Lines

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DASHBOARD = ROOT / "mqttbroker" / "web" / "dashboard"
WAIT = 15.0  # seconds, the longest any single step may take

pytestmark = pytest.mark.timeout(60)


class Program(Lines):
    """One example program as a subprocess, run as its README says; its output lines are
    collected by :class:`~tests.integration.clientprocs.Lines`."""

    def __init__(self, script: str, *args: str) -> None:
        super().__init__([sys.executable, str(EXAMPLES / script), *args],
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.name = script

    @property
    def output(self) -> str:
        return f"--- {self.name} ---\n" + "".join(line + "\n" for line in self.lines)

    def wait_match(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The first output line matching ``pattern`` (a regex), waiting for it if need be."""
        rx = re.compile(pattern)
        lines = self.wait_for(lambda ls: any(map(rx.search, ls)), f"a line matching {pattern!r}",
                              timeout)
        return next(m for m in map(rx.search, lines) if m)

    def finish(self, timeout: float = WAIT) -> int:
        """Wait for the program to end by itself; its exit status (its output all read)."""
        rc = self.wait_exit(timeout)
        self._thread.join(timeout)
        return rc

    def matches(self, pattern: str) -> list[re.Match[str]]:
        rx = re.compile(pattern)
        return [m for m in map(rx.search, self.lines) if m]


@pytest.fixture
def run() -> Iterator[Callable[..., Program]]:
    """``run(script, *args)`` starts an example program; any still running at the end is
    killed (a failing test leaves none behind)."""
    started: list[Program] = []

    def start(script: str, *args: str) -> Program:
        p = Program(script, *args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def port(make_broker_thread: Callable[[dict[str, Any]], BrokerThread]) -> int:
    """The TCP port of a broker as `make run` has it, for what the examples use: anonymous
    clients, Response Information ``response/`` (the built-in default)."""
    return make_broker_thread(base_config()).port


def test_hello_world(run: Callable[..., Program], port: int) -> None:
    """examples/hello_world: the consumer gets every message the producer sent, in order."""
    consumer = run("hello_world/consumer.py", "--port", str(port), "--count", "5",
                   "--timeout", str(WAIT))
    consumer.wait_match(r"^subscribed to hello/world \(granted QoS 1\)")
    producer = run("hello_world/producer.py", "--port", str(port), "--count", "5")
    assert producer.finish() == 0, producer.output
    assert consumer.finish() == 0, consumer.output
    sent = [m[1] for m in producer.matches(r"^sent: (.*)$")]
    got = [m[1] for m in consumer.matches(r"^received: (.*) \(topic hello/world, QoS 1\)$")]
    assert sent == [f"hello world #{i}" for i in range(1, 6)], producer.output
    assert got == sent, consumer.output
    assert consumer.lines[-1] == "received 5 message(s)"


def test_task_queue_killed_worker_loses_nothing(run: Callable[..., Program], port: int) -> None:
    """examples/task_queue: 12 tasks over a fast, a slow and a doomed worker. The doomed one
    holds a task unacknowledged (manual ack) until it is SIGKILLed; the broker then gives that
    task (and any queued behind it) to another member [MQTT 4.8.2]. Every task is done exactly
    once, by alice or bob, and each worker's log agrees with the producer's tally. Fair
    dispatch: the slow worker does fewer tasks than the fast one."""
    count = 12
    p = str(port)
    alice = run("task_queue/worker.py", "--port", p, "--name", "alice", "--work-time", "0.05")
    bob = run("task_queue/worker.py", "--port", p, "--name", "bob", "--work-time", "0.3")
    carol = run("task_queue/worker.py", "--port", p, "--name", "carol", "--work-time", "60")
    for w in (alice, bob, carol):
        w.wait_match(r": ready \(pid \d+\), waiting for tasks on \$share/workers/tasks$")
    producer = run("task_queue/producer.py", "--port", p, "--count", str(count),
                   "--timeout", str(WAIT))
    held = int(carol.wait_match(r"^carol: working on task (\d+) \(not acknowledged yet\)$")[1])
    carol.proc.send_signal(signal.SIGKILL)  # no DISCONNECT, no PUBACK: it dies holding it
    assert carol.finish() == -signal.SIGKILL

    assert producer.finish() == 0, producer.output + carol.output
    tally = {int(m[1]): m[2] for m in producer.matches(r"^  task (\d+): done by (\w+)")}
    assert sorted(tally) == list(range(1, count + 1)), producer.output
    assert set(tally.values()) <= {"alice", "bob"}, producer.output
    assert "bob" in tally.values() and "alice" in tally.values(), producer.output
    assert producer.matches(rf"^  task {held}: done by \w+ \(redone: carol started it "
                            r"and never finished\)$"), producer.output
    assert not producer.matches(r"done \d+ times"), producer.output  # nothing twice here
    assert producer.lines[-1] == f"all {count} tasks done"
    # fair dispatch: a task waiting at bob goes to alice whenever she is free first, so bob
    # (0.3 s a task) does fewer than alice (0.05 s): for bob to reach 6 of the 12, alice
    # would have to take over 0.25 s a task, five times her work time
    done = Counter(tally.values())
    assert done["bob"] < done["alice"], producer.output

    for worker, name in ((alice, "alice"), (bob, "bob")):
        worker.proc.send_signal(signal.SIGINT)  # Ctrl-C: it disconnects cleanly
        assert worker.finish() == 0, worker.output
        acked = sorted(int(m[1]) for m in worker.matches(rf"^{name}: task (\d+) done and "
                                                          r"acknowledged$"))
        assert acked == sorted(t for t, w in tally.items() if w == name), worker.output
    assert not carol.matches(r"done and acknowledged"), carol.output


def test_request_response_matches_every_answer(run: Callable[..., Program], port: int) -> None:
    """examples/request_response: two requesters send 5 requests each at once; the responder
    answers each on its Response Topic with its Correlation Data [MQTT-3.3.2-13..16], which the
    broker passes through unchanged. Each requester matches all 5 answers; the response
    topics are the broker's Response Information, ``response/<client id>``."""
    responder = run("request_response/responder.py", "--port", str(port), "--count", "10",
                    "--max-delay", "0.2", "--timeout", str(WAIT))
    responder.wait_match(r"^responder: ready, answering requests on calc/add$")
    requesters = {cid: run("request_response/requester.py", "--port", str(port), "--count",
                           "5", "--client-id", cid, "--timeout", str(WAIT))
                  for cid in ("req-one", "req-two")}
    sent: set[tuple[str, str]] = set()  # (response topic, correlation data in hex)
    for cid, r in requesters.items():
        assert r.finish() == 0, r.output + responder.output
        assert r.lines[-1] == "5 of 5 answers matched by correlation data", r.output
        assert r.matches(rf"^broker's Response Information: 'response/{cid}'$"), r.output
        corr = {m[1] for m in r.matches(r"^request \d+: .* \(correlation ([0-9a-f]{32})\)$")}
        matched = {m[1] for m in r.matches(r"^answer to request \d+: .* \(matched by "
                                           r"correlation ([0-9a-f]{32})\)$")}
        assert len(corr) == 5 and matched == corr, r.output
        sent |= {(f"response/{cid}", c) for c in corr}
    assert responder.finish() == 0, responder.output
    assert responder.lines[-1] == "responder: 10 request(s) answered"
    answered = {(m[1], m[2]) for m in responder.matches(
        r"^responder: .* -> (\S+) \(correlation ([0-9a-f]{32})\)$")}
    assert answered == sent, responder.output


# -- the dashboard feed ---------------------------------------------------------------------

def _dashboard_config() -> dict[str, Any]:
    cfg = base_config()
    cfg["listeners"]["ws"] = {"type": "ws", "bind": "127.0.0.1:0", "path": "/mqtt"}
    cfg["http"] = {"enabled": True, "bind": "127.0.0.1:0", "token": "t0k3n-examples"}
    return cfg


class DashboardLike:
    """A client that reads the broker the way the dashboard's main.js does: the first ``ws``
    listener of ``/dashboard.json``, MQTT 5 clean start over WebSocket, ``$SYS/#`` and ``#``
    at QoS 0. Collects every message of ``fleet/``."""

    def __init__(self, http_port: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/dashboard.json",
                                    timeout=WAIT) as resp:
            cfg = json.load(resp)
        self.fleet_root = cfg["fleet_root"]
        ws = cfg["mqtt"][0]
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dashboard-like",
                        protocol=mqtt.MQTTv5, transport="websockets")
        c.ws_set_options(path=ws["path"])
        c.on_subscribe = lambda *_a: subscribed.set()
        c.on_connect = lambda cl, *_a: cl.subscribe([("$SYS/#", 0), ("#", 0)])
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        c.connect("127.0.0.1", ws["port"], keepalive=30, clean_start=True, properties=props)
        c.loop_start()
        self.client = c
        assert subscribed.wait(WAIT), "the dashboard-like client could not subscribe"

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.startswith(self.fleet_root + "/"):
            with self._cond:
                self.messages.append((msg.topic, msg.payload))
                self._cond.notify_all()

    def wait_until(self, done: Callable[[list[tuple[str, bytes]]], bool]) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: done(self.messages), WAIT):
                raise AssertionError(f"the dashboard path did not see it: {self.messages}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# The dashboard's own decoder (mqttbroker/web/dashboard/src/decode.js) on each payload: the
# numeric fields its charts plot and the reading its device table shows.
_NODE_DECODE = """
import { decodePayload, numericFields, formatReading } from "./src/decode.js";
const out = process.argv.slice(1).map((h) => {
  const d = decodePayload(Uint8Array.from(Buffer.from(h, "hex")));
  return { kind: d.kind, fields: numericFields(d), reading: formatReading(d) };
});
console.log(JSON.stringify(out));
"""


def test_dashboard_feed_reaches_the_dashboard_path(
        run: Callable[..., Program],
        make_broker_thread: Callable[[dict[str, Any]], BrokerThread]) -> None:
    """examples/dashboard_feed: the sensor's retained ``online`` status, its 5 readings and
    its ``offline`` goodbye reach the dashboard's path (WebSocket listener of
    /dashboard.json); every reading is a valid schema-1 document (devices.payload.decode) and
    the dashboard's decode.js makes of it the chart fields r.temp_c, r.rh_pct, r.battery_v
    and the device-table reading."""
    bt = make_broker_thread(_dashboard_config())
    assert bt.broker is not None
    dash = DashboardLike(bt.broker.http_port)
    try:
        sensor = run("dashboard_feed/sensor.py", "--port", str(bt.port), "--id", "sensor-ex01",
                     "--count", "5", "--interval", "0.05")
        assert sensor.finish() == 0, sensor.output
        status, telemetry = "fleet/sensor-ex01/status", "fleet/sensor-ex01/telemetry"
        dash.wait_until(lambda ms: (status, b"offline") in ms)
    finally:
        dash.close()
    assert [p for t, p in dash.messages if t == status] == [b"online", b"offline"]
    payloads = [p for t, p in dash.messages if t == telemetry]
    docs = [decode(p) for p in payloads]  # raises on anything outside the schema
    assert [d["seq"] for d in docs] == [0, 1, 2, 3, 4]
    assert {(d["id"], d["k"]) for d in docs} == {("sensor-ex01", "temp_humidity")}
    printed = [m[1] for m in sensor.matches(r"^seq \d+: (temp_c=\S+ rh_pct=\S+ battery_v=\S+)")]
    assert printed == [" ".join(f"{k}={v}" for k, v in d["r"].items()) for d in docs]

    if not (DASHBOARD / "node_modules" / "@msgpack" / "msgpack").is_dir():
        pytest.skip("the dashboard's npm packages are not installed (make dashboard)")
    done = subprocess.run(["node", "--input-type=module", "-e", _NODE_DECODE,
                           *(p.hex() for p in payloads)], cwd=DASHBOARD, capture_output=True,
                          text=True, timeout=WAIT, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    for doc, js in zip(docs, seen, strict=True):
        assert js["kind"] == "msgpack"
        r = doc["r"]
        assert js["fields"] == {"v": 1, "seq": doc["seq"], "ts": doc["ts"],
                                **{f"r.{k}": v for k, v in r.items()}}
        shown = dict(pair.split("=") for pair in js["reading"].split(" "))
        assert {k: float(v) for k, v in shown.items()} == r  # (JS prints 21.0 as 21)
