"""Other MQTT client libraries in child processes, and the checks every one of them goes
through against our broker (issue 19, point 4: client libraries, proven).

* Brokers: :func:`ws_config` (a TCP and a WebSocket listener), :func:`port_of`,
  :func:`ws_uri`, and what the broker holds for a client (:func:`subscribed`,
  :func:`away_with_queue`).
* :class:`Lines`: a child process's output lines, read by a thread, with bounded waits.
* :class:`DriverProcess`: a client library run by a driver program that reads one JSON command
  a line on stdin and prints one JSON line a reply or event on stdout. MQTT.js
  (tests/clients/mqttjs/driver.mjs) and Paho C (tests/integration/pahoc.py) have one each:

  - ``{"cmd": "connect", "url", "clientId", "version": 4|5, "clean", "sessionExpiry",
    "will": {"topic", "payload", "qos", "retain"}}`` -> ``{"reply": "connect", "ok": true,
    "sessionPresent": ...}``
  - ``{"cmd": "subscribe", "topic", "qos"}`` -> ``{..., "granted": qos}``
  - ``{"cmd": "publish", "topic", "payload", "qos", "retain"}`` -> a reply once its QoS flow
    is complete (PUBACK / PUBCOMP received)
  - ``{"cmd": "disconnect"}``, ``{"cmd": "exit"}``
  - events ``{"event": "ready"}``, ``{"event": "message", "topic", "payload", "qos",
    "retain"}``, ``{"event": "close"}``; a failed command replies ``"ok": false, "error"``.

* The checks (``check_*``) take a driver and a broker and run one feature both ways: the
  client under test against paho-mqtt (Python) on the broker's TCP listener. Each check is
  one client process doing several steps, so that a client's whole matrix stays fast.

Every wait is bounded (``TIMEOUT``, 5 s, unless told); nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tests.conftest import BrokerThread, base_config

from .helpers import HOST, TIMEOUT, Msg, Paho, unique_id, wait_until

ROOT = Path(__file__).resolve().parents[2]
WS_PATH = "/mqtt"
SESSION_EXPIRY = 300  # seconds: an MQTT 5 persistent session outlives the test

P = TypeVar("P", bound="Lines")

MakeBroker = Callable[[dict[str, Any]], BrokerThread]


# -- brokers ------------------------------------------------------------------------------------

def ws_config(**ws: Any) -> dict[str, Any]:
    """A TCP listener ``tcp`` and a WebSocket listener ``ws`` (with ``ws`` keys added)."""
    cfg = base_config()
    cfg["listeners"] = {"tcp": {"type": "tcp", "bind": f"{HOST}:0"},
                        "ws": {"type": "ws", "bind": f"{HOST}:0", "path": WS_PATH, **ws}}
    return cfg


def port_of(bt: BrokerThread, listener: str) -> int:
    assert bt.broker is not None
    ports = [p for name, _, p in bt.broker.addresses if name == listener]
    assert ports, f"no listener {listener!r} in {bt.broker.addresses!r}"
    return ports[0]


def ws_uri(bt: BrokerThread) -> str:
    return f"ws://{HOST}:{port_of(bt, 'ws')}{WS_PATH}"


def subscribed(bt: BrokerThread, client_id: str, topic: str) -> bool:
    """Does the broker hold ``client_id``'s subscription to ``topic``?"""
    def read() -> bool:
        assert bt.broker is not None
        session = bt.broker.sessions.get(client_id)
        return session is not None and topic in session.subscriptions
    return bt.call(read)


def away_with_queue(bt: BrokerThread, client_id: str) -> int | None:
    """``client_id``'s queued messages while it is not connected (None while it is)."""
    def read() -> int | None:
        assert bt.broker is not None
        session = bt.broker.sessions.get(client_id)
        if session is None or client_id in bt.broker.connections:
            return None
        return len(session.queue) + len(session.inflight)
    return bt.call(read)


# -- child processes ----------------------------------------------------------------------------

class Lines:
    """A child process's output lines (stdout and stderr), read by a thread; bounded waits.
    With ``stdin``, :meth:`write` sends it lines."""

    def __init__(self, args: list[str], *, stdin: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
                                     text=True, bufsize=1, env=env)
        self._cond = threading.Condition()
        self._lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def write(self, line: str) -> None:
        assert self.proc.stdin is not None, "started without stdin"
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, predicate: Callable[[list[str]], bool], what: str,
                 timeout: float = TIMEOUT) -> list[str]:
        """Wait until ``predicate(lines)``; fail naming ``what`` and showing the output."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what}; "
                        f"{os.path.basename(self.args[0])} printed {self._lines!r}"
                        + ("" if self.proc.poll() is None
                           else f" and exited with {self.proc.returncode}"))
                self._cond.wait(left)
            return list(self._lines)

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.args!r} still running after {timeout}s; "
                                 f"output {self.lines!r}") from None

    def kill(self) -> None:
        """SIGKILL: the process ends without a word to the broker (the OS closes its socket)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)
        self._thread.join(TIMEOUT)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class Processes:
    """Child processes of one test; every one is killed at the end (a fixture's body)."""

    def __init__(self) -> None:
        self.started: list[Lines] = []

    def add(self, p: P) -> P:
        self.started.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.started:
            with contextlib.suppress(Exception):
                p.kill()


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.kill_all()


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    """The lines that are JSON objects (a runtime may print a warning among them)."""
    out = []
    for line in lines:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def as_msg(event: dict[str, Any]) -> Msg:
    return Msg(event["topic"], event["payload"].encode(), int(event["qos"]),
               bool(event["retain"]))


class DriverProcess(Lines):
    """A client library run by a JSON-lines driver (the protocol in the module docstring)."""

    def __init__(self, args: list[str], name: str) -> None:
        super().__init__(args, stdin=True)
        self.name = name
        self.wait_for(lambda ls: any(e.get("event") == "ready" for e in json_lines(ls)),
                      f"{name}'s driver to start")

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in json_lines(self.lines) if e.get("event") == kind]

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send a command; wait for its reply and fail the test with the client's error."""
        def replies(ls: list[str]) -> list[dict[str, Any]]:
            return [e for e in json_lines(ls) if "reply" in e]
        before = len(replies(self.lines))
        self.write(json.dumps({"cmd": cmd, **args}))
        got = replies(self.wait_for(lambda ls: len(replies(ls)) > before,
                                    f"{self.name}'s reply to {cmd} {args!r}"))
        reply = got[before]
        assert reply["reply"] == cmd, reply
        assert reply["ok"], f"{self.name}: {cmd} {args!r} failed: {reply.get('error')}"
        return reply

    def connect(self, url: str, client_id: str, version: int, clean: bool = True,
                session_expiry: int | None = None,
                will: tuple[str, str, int, bool] | None = None) -> bool | None:
        """Connect (the CONNACK accepted it); return its session present flag (None: the
        client library does not report it)."""
        args: dict[str, Any] = {"url": url, "clientId": client_id, "version": version,
                                "clean": clean}
        if session_expiry is not None:
            args["sessionExpiry"] = session_expiry
        if will is not None:
            topic, payload, qos, retain = will
            args["will"] = {"topic": topic, "payload": payload, "qos": qos, "retain": retain}
        present = self.request("connect", **args)["sessionPresent"]
        return None if present is None else bool(present)

    def subscribe(self, topic: str, qos: int) -> int:
        """Subscribe; return the QoS the broker granted (SUBACK)."""
        return int(self.request("subscribe", topic=topic, qos=qos)["granted"])

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> None:
        self.request("publish", topic=topic, payload=payload, qos=qos, retain=retain)

    def disconnect(self) -> None:
        self.request("disconnect")

    def messages(self) -> list[Msg]:
        return [as_msg(e) for e in self.events("message")]

    def wait_messages(self, n: int, timeout: float = TIMEOUT) -> list[Msg]:
        self.wait_for(lambda ls: len([e for e in json_lines(ls)
                                      if e.get("event") == "message"]) >= n,
                      f"{n} message(s) at {self.name}", timeout)
        return self.messages()


# -- the checks -----------------------------------------------------------------------------------

@contextlib.contextmanager
def peer(bt: BrokerThread) -> Iterator[Paho]:
    """paho-mqtt (Python), MQTT 3.1.1 over TCP: the other side of every check."""
    p = Paho(unique_id("peer"))
    try:
        p.connect(port_of(bt, "tcp"))
        yield p
    finally:
        p.close()


def by_topic(msgs: list[Msg]) -> list[Msg]:
    """``msgs`` sorted by topic (a duplicate still shows)."""
    return sorted(msgs, key=lambda m: m.topic)


def check_qos(client: DriverProcess, bt: BrokerThread, url: str, version: int) -> None:
    """QoS 0, 1 and 2 both ways. The client subscribes at QoS n and gets a QoS 2 message at
    QoS n (the minimum of the two [MQTT-3.8.4-6]; 5.0: [MQTT-3.8.4-8]); it publishes at QoS n
    and a QoS 2 subscriber gets it at QoS n. Each flow completes on the client's side."""
    with peer(bt) as other:
        assert other.subscribe(("out/#", 2)) == [2]
        client.connect(url, unique_id("cut"), version)
        for q in (0, 1, 2):
            assert client.subscribe(f"in/{q}", q) == q, f"SUBACK for QoS {q}"
        for q in (0, 1, 2):
            other.publish(f"in/{q}", f"to-{q}".encode(), qos=2)
        got = by_topic(client.wait_messages(3))
        assert got == [Msg(f"in/{q}", f"to-{q}".encode(), q, False) for q in (0, 1, 2)], got
        for q in (0, 1, 2):
            client.publish(f"out/{q}", f"from-{q}", q)  # returns once PUBACK / PUBCOMP came
        seen = by_topic(other.messages.wait_for(3))
        assert seen == [Msg(f"out/{q}", f"from-{q}".encode(), q, False)
                        for q in (0, 1, 2)], seen
        client.disconnect()


def check_retained(client: DriverProcess, bt: BrokerThread, url: str, version: int) -> None:
    """Retained messages both ways. A subscriber already there gets the client's retained
    PUBLISH without the flag [MQTT-3.3.1-9]; a later one gets it with the flag
    [MQTT-3.3.1-6] [MQTT-3.3.1-8]; the client subscribing gets the one already kept with the
    flag."""
    with peer(bt) as other:
        other.publish("kept/by-peer", b"old", qos=1, retain=True)
        assert other.subscribe(("kept/by-client", 1)) == [1]
        client.connect(url, unique_id("cut"), version)
        client.publish("kept/by-client", "new", qos=1, retain=True)
        assert other.messages.wait_for(1) == [Msg("kept/by-client", b"new", 1, False)]
        assert client.subscribe("kept/by-peer", 1) == 1
        assert client.wait_messages(1) == [Msg("kept/by-peer", b"old", 1, True)]
        client.disconnect()

    with peer(bt) as later:
        assert later.subscribe(("kept/by-client", 2)) == [2]
        assert later.messages.wait_for(1) == [Msg("kept/by-client", b"new", 1, True)]


def check_will(client: DriverProcess, bt: BrokerThread, url: str, version: int) -> None:
    """The client connects with a will (QoS 1) and its process is killed: no DISCONNECT, the
    OS closes the socket; the broker publishes the will [MQTT-3.1.2-8]. A retained will is
    kept too: a later subscriber gets it with the flag."""
    cid = unique_id("cut")
    with peer(bt) as other:
        assert other.subscribe((f"will/{cid}", 1)) == [1]
        client.connect(url, cid, version, will=(f"will/{cid}", "gone", 1, True))
        client.kill()
        assert other.messages.wait_for(1) == [Msg(f"will/{cid}", b"gone", 1, False)]
    with peer(bt) as later:
        assert later.subscribe((f"will/{cid}", 1)) == [1]
        assert later.messages.wait_for(1) == [Msg(f"will/{cid}", b"gone", 1, True)]


def check_persistent_session(client: DriverProcess, bt: BrokerThread, url: str,
                             version: int) -> None:
    """A persistent session (3.1.1: clean session 0; 5.0: clean start 0 and a session
    expiry) subscribes at QoS 1 and 2 and disconnects; messages published meanwhile queue
    [MQTT-3.1.2-5] and arrive, at their QoS, when the same client id comes back with session
    present 1 [MQTT-3.2.2-2] (where the client library reports the flag: Paho C does not
    at 5.0; the queued messages arriving prove the session all the same)."""
    cid = unique_id("cut")
    expiry = SESSION_EXPIRY if version == 5 else None
    present = client.connect(url, cid, version, clean=False, session_expiry=expiry)
    assert present in (False, None), "session present 1 for a client id never seen"
    assert client.subscribe("queued/1", 1) == 1
    assert client.subscribe("queued/2", 2) == 2
    client.disconnect()
    wait_until(lambda: away_with_queue(bt, cid) is not None, what="the session to go offline")
    with peer(bt) as other:
        other.publish("queued/1", b"one", qos=1)
        other.publish("queued/2", b"two", qos=2)
    wait_until(lambda: away_with_queue(bt, cid) == 2, what="2 messages queued for the session")
    present = client.connect(url, cid, version, clean=False, session_expiry=expiry)
    assert present in (True, None), "session present 0 on coming back"
    got = by_topic(client.wait_messages(2))
    assert got == [Msg("queued/1", b"one", 1, False), Msg("queued/2", b"two", 2, False)], got
    client.disconnect()


CHECKS: dict[str, Callable[[DriverProcess, BrokerThread, str, int], None]] = {
    "qos": check_qos,
    "retained": check_retained,
    "will": check_will,
    "session": check_persistent_session,
}
