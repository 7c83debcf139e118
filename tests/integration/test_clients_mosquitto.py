"""Mosquitto's command-line clients (``mosquitto_pub`` / ``mosquitto_sub``, built on
libmosquitto; Debian's ``mosquitto-clients``) against our broker over TCP, MQTT 3.1.1
(``-V mqttv311``) and 5.0 (``-V mqttv5``) (issue 19, point 4).

QoS 0/1/2 both ways (``-q``), retained messages both ways (``-r``), a will when
``mosquitto_sub`` is killed (``--will-*``), and a persistent session (``-c -i``; at 5.0 ``-c``
also asks for a session that never expires) that gets what was published while it was away.
``mosquitto_sub`` prints each message as JSON (``-F %j``: topic, QoS, retain flag, payload);
every run is bounded (``-C`` messages, ``-W`` seconds, and a timeout on the process).
paho-mqtt (Python) is the other side of each check. libmosquitto has no WebSocket client, so
these run over TCP only.

``make test`` installs the package (``make mosquitto-clients``); without it these tests fail
and say so, they are not skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import BrokerThread

from .clientprocs import (
    Lines,
    MakeBroker,
    Processes,
    away_with_queue,
    by_topic,
    json_lines,
    peer,
    port_of,
    processes,
    subscribed,
    ws_config,
)
from .helpers import HOST, TIMEOUT, Msg, unique_id, wait_until

MOSQUITTO_PUB = "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = "/usr/bin/mosquitto_sub"
INSTALL_HINT = ("run `make mosquitto-clients` (`make test` installs it: Debian's "
                "mosquitto-clients)")
WAIT = str(int(TIMEOUT))  # mosquitto_sub -W: seconds it runs at most

versions = pytest.mark.parametrize("version", ["mqttv311", "mqttv5"], ids=["3.1.1", "5.0"])

Sub = Callable[..., Lines]


@pytest.fixture
def procs() -> Iterator[Processes]:
    for tool in (MOSQUITTO_PUB, MOSQUITTO_SUB):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} is not installed: {INSTALL_HINT}")
    with processes() as started:
        yield started


def mosquitto_pub(bt: BrokerThread, version: str, *args: str) -> None:
    """Run ``mosquitto_pub`` to completion: at QoS 1 and 2 it exits 0 only once its flow is
    complete (PUBACK / PUBCOMP)."""
    cmd = [MOSQUITTO_PUB, "-h", HOST, "-p", str(port_of(bt, "tcp")), "-V", version, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"{cmd!r} exited {done.returncode}: {done.stderr.strip()}"


def mosquitto_sub(procs: Processes, bt: BrokerThread, version: str, *args: str) -> Lines:
    """Start ``mosquitto_sub`` printing each message as a JSON line; killed at the end."""
    return procs.add(Lines([MOSQUITTO_SUB, "-h", HOST, "-p", str(port_of(bt, "tcp")),
                            "-V", version, "-W", WAIT, "-F", "%j", *args]))


def received(sub: Lines, n: int, what: str) -> list[Msg]:
    """Wait until ``sub`` printed ``n`` messages and exited 0 (``-C n``)."""
    sub.wait_for(lambda ls: len(json_lines(ls)) >= n, what)
    assert sub.wait_exit() == 0, sub.lines
    return [Msg(e["topic"], e["payload"].encode(), int(e["qos"]), bool(e["retain"]))
            for e in json_lines(sub.lines)]


@versions
def test_publish_qos(make_broker_thread: MakeBroker, procs: Processes, version: str) -> None:
    """``mosquitto_pub -q n``: a QoS 2 subscriber gets the message at QoS n."""
    bt = make_broker_thread(ws_config())
    with peer(bt) as other:
        assert other.subscribe(("out/#", 2)) == [2]
        for q in (0, 1, 2):
            mosquitto_pub(bt, version, "-q", str(q), "-t", f"out/{q}", "-m", f"from-{q}")
        seen = by_topic(other.messages.wait_for(3))
        assert seen == [Msg(f"out/{q}", f"from-{q}".encode(), q, False) for q in (0, 1, 2)], seen


@versions
def test_subscribe_qos(make_broker_thread: MakeBroker, procs: Processes, version: str) -> None:
    """``mosquitto_sub -q n`` gets a QoS 2 message at QoS n (the minimum of the two
    [MQTT-3.8.4-6]; 5.0: [MQTT-3.8.4-8]), and completes its flow before exiting."""
    bt = make_broker_thread(ws_config())
    cids = {q: unique_id("mosq") for q in (0, 1, 2)}
    subs = {q: mosquitto_sub(procs, bt, version, "-i", cid, "-q", str(q), "-t", f"in/{q}",
                             "-C", "1")
            for q, cid in cids.items()}
    wait_until(lambda: all(subscribed(bt, cid, f"in/{q}") for q, cid in cids.items()),
               what="the 3 mosquitto_sub subscriptions")
    with peer(bt) as other:
        for q in (0, 1, 2):
            other.publish(f"in/{q}", f"to-{q}".encode(), qos=2)
    for q, sub in subs.items():
        assert received(sub, 1, f"the message on in/{q}") == [
            Msg(f"in/{q}", f"to-{q}".encode(), q, False)]


@versions
def test_retained(make_broker_thread: MakeBroker, procs: Processes, version: str) -> None:
    """``mosquitto_pub -r``: a subscriber already there gets it without the flag
    [MQTT-3.3.1-9], a later one with it [MQTT-3.3.1-6] [MQTT-3.3.1-8]; ``mosquitto_sub`` gets
    a message already kept with the flag."""
    bt = make_broker_thread(ws_config())
    with peer(bt) as other:
        other.publish("kept/by-peer", b"old", qos=1, retain=True)
        assert other.subscribe(("kept/by-client", 1)) == [1]
        mosquitto_pub(bt, version, "-r", "-q", "1", "-t", "kept/by-client", "-m", "new")
        assert other.messages.wait_for(1) == [Msg("kept/by-client", b"new", 1, False)]
    sub = mosquitto_sub(procs, bt, version, "-q", "1", "-t", "kept/by-peer", "-C", "1")
    assert received(sub, 1, "the retained message") == [Msg("kept/by-peer", b"old", 1, True)]
    with peer(bt) as later:
        assert later.subscribe(("kept/by-client", 2)) == [2]
        assert later.messages.wait_for(1) == [Msg("kept/by-client", b"new", 1, True)]


@versions
def test_will(make_broker_thread: MakeBroker, procs: Processes, version: str) -> None:
    """``mosquitto_sub --will-*`` killed (no DISCONNECT, the OS closes its socket): the broker
    publishes its will [MQTT-3.1.2-8], and keeps it (``--will-retain``)."""
    bt = make_broker_thread(ws_config())
    cid = unique_id("mosq")
    with peer(bt) as other:
        assert other.subscribe((f"will/{cid}", 1)) == [1]
        sub = procs.add(Lines([MOSQUITTO_SUB, "-h", HOST, "-p", str(port_of(bt, "tcp")),
                               "-V", version, "-i", cid, "-t", "idle",
                               "--will-topic", f"will/{cid}", "--will-payload", "gone",
                               "--will-qos", "1", "--will-retain"]))
        wait_until(lambda: subscribed(bt, cid, "idle"), what="mosquitto_sub to connect")
        sub.kill()
        assert other.messages.wait_for(1) == [Msg(f"will/{cid}", b"gone", 1, False)]
    with peer(bt) as later:
        assert later.subscribe((f"will/{cid}", 1)) == [1]
        assert later.messages.wait_for(1) == [Msg(f"will/{cid}", b"gone", 1, True)]


@versions
def test_persistent_session(make_broker_thread: MakeBroker, procs: Processes,
                            version: str) -> None:
    """``mosquitto_sub -c -i ID -q 2`` subscribes and exits (``-E``); QoS 1 and 2 messages
    published meanwhile queue [MQTT-3.1.2-5] and arrive at their QoS when it comes back with
    the same id."""
    bt = make_broker_thread(ws_config())
    cid = unique_id("mosq")
    session = ["-c", "-i", cid, "-q", "2", "-t", "queued/1", "-t", "queued/2"]
    first = mosquitto_sub(procs, bt, version, *session, "-E")
    assert first.wait_exit() == 0, first.lines
    wait_until(lambda: away_with_queue(bt, cid) == 0, what="the session, subscribed and away")
    assert subscribed(bt, cid, "queued/1") and subscribed(bt, cid, "queued/2")
    with peer(bt) as other:
        other.publish("queued/1", b"one", qos=1)
        other.publish("queued/2", b"two", qos=2)
    wait_until(lambda: away_with_queue(bt, cid) == 2, what="2 messages queued for the session")
    back = mosquitto_sub(procs, bt, version, *session, "-C", "2")
    got = by_topic(received(back, 2, "the 2 queued messages"))
    assert got == [Msg("queued/1", b"one", 1, False), Msg("queued/2", b"two", 2, False)], got
