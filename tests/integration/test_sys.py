"""`$` topics: clients cannot publish to them, wildcards do not reach them [MQTT-4.7.2-1], and
the broker publishes `$SYS/broker/...` every ``sys_interval`` (0.2 s here) with sensible values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import BrokerThread, base_config

from .helpers import Clients, Collector, Paho, protocols, unique_id

INTERVAL = 0.2
SYS = "$SYS/broker/"


@pytest.fixture
def broker_config() -> dict[str, Any]:
    cfg = base_config()
    cfg["sys_interval"] = INTERVAL
    return cfg


@pytest.fixture
def clients(broker_thread: BrokerThread) -> Iterator[Clients]:
    with Clients(broker_thread.port) as c:
        yield c


def latest(messages: Collector, topic: str) -> str | None:
    """The newest value seen on ``topic``."""
    got = messages.topic(topic)
    return got[-1].payload.decode() if got else None


def number(value: str | None) -> int:
    """The leading integer of a `$SYS` value (`"12"`, `"3 seconds"`)."""
    assert value is not None
    m = re.match(r"\s*(\d+)", value)
    assert m, f"not a number: {value!r}"
    return int(m.group(1))


def wait_value(c: Paho, topic: str, predicate: Callable[[int], bool], what: str,
               timeout: float = 5.0) -> int:
    """Wait until a value published on ``topic`` (after now) satisfies ``predicate``."""
    start = len(c.messages)
    msgs = c.messages.wait_until(
        lambda ms: any(m.topic == topic and predicate(number(m.payload.decode()))
                       for m in ms[start:]), timeout, f"{topic} {what}")
    return next(number(m.payload.decode()) for m in msgs[start:]
                if m.topic == topic and predicate(number(m.payload.decode())))


def test_sys_topics_published_every_interval(clients: Clients) -> None:
    """Version, uptime, clients, message and byte counters, subscription and retained counts are
    published, and again every interval."""
    watcher = clients.paho(unique_id("sys"))
    assert watcher.subscribe(("$SYS/#", 0)) == [0]
    wanted = ["version", "uptime", "clients/connected", "messages/received", "bytes/sent",
              "subscriptions/count", "retained messages/count"]
    # two rounds, so the values are known to be refreshed periodically
    watcher.messages.wait_until(
        lambda ms: all(sum(m.topic == SYS + w for m in ms) >= 2 for w in wanted),
        timeout=10 * INTERVAL + 2, what="two rounds of $SYS values")
    version = latest(watcher.messages, SYS + "version")
    assert version and re.search(r"\d+\.\d+", version), version
    assert number(latest(watcher.messages, SYS + "uptime")) >= 0
    assert number(latest(watcher.messages, SYS + "clients/connected")) == 1
    assert number(latest(watcher.messages, SYS + "messages/received")) >= 2  # CONNECT, SUBSCRIBE
    assert number(latest(watcher.messages, SYS + "bytes/sent")) > 0
    assert number(latest(watcher.messages, SYS + "subscriptions/count")) == 1
    assert number(latest(watcher.messages, SYS + "retained messages/count")) >= 0


def test_sys_uptime_grows(clients: Clients) -> None:
    """`uptime` counts seconds since the start: it goes up, it never goes back."""
    watcher = clients.paho(unique_id("sys"))
    watcher.subscribe((SYS + "uptime", 0))
    first = number(watcher.messages.wait_for(1)[0].payload.decode())
    later = wait_value(watcher, SYS + "uptime", lambda v: v > first, "greater than before",
                       timeout=3.0)
    values = [number(m.payload.decode()) for m in watcher.messages.messages]
    assert values == sorted(values)
    assert later >= first + 1


def test_sys_clients_connected_follows_connections(clients: Clients) -> None:
    """`clients/connected` equals the number of connected clients as they come and go."""
    watcher = clients.paho(unique_id("sys"))
    watcher.subscribe((SYS + "clients/connected", 0))
    wait_value(watcher, SYS + "clients/connected", lambda v: v == 1, "== 1")
    others = [clients.paho(unique_id("o")) for _ in range(3)]
    wait_value(watcher, SYS + "clients/connected", lambda v: v == 4, "== 4")
    others[0].disconnect()
    others[1].drop()
    wait_value(watcher, SYS + "clients/connected", lambda v: v == 2, "== 2")


def test_sys_message_and_byte_counters_grow(clients: Clients) -> None:
    """`messages/received` and `bytes/sent` grow with traffic."""
    watcher = clients.paho(unique_id("sys"))
    watcher.subscribe((SYS + "messages/received", 0), (SYS + "bytes/sent", 0))
    watcher.messages.wait_until(lambda ms: {m.topic for m in ms} == {
        SYS + "messages/received", SYS + "bytes/sent"}, what="both counters")
    received = number(latest(watcher.messages, SYS + "messages/received"))
    sent = number(latest(watcher.messages, SYS + "bytes/sent"))
    pub = clients.paho(unique_id("pub"))
    sub = clients.paho(unique_id("sub"))
    sub.subscribe(("traffic", 1))
    for i in range(20):
        pub.publish("traffic", b"x" * 100, 1)
    sub.messages.wait_for(20)
    # 20 PUBLISH + 20 PUBACK from the clients at least; 20 x ~110 bytes sent at least
    wait_value(watcher, SYS + "messages/received", lambda v: v >= received + 40, "+40")
    wait_value(watcher, SYS + "bytes/sent", lambda v: v >= sent + 2000, "+2000 bytes")


def test_sys_subscriptions_count(clients: Clients) -> None:
    """`subscriptions/count` counts (client, filter) subscriptions."""
    watcher = clients.paho(unique_id("sys"))
    watcher.subscribe((SYS + "subscriptions/count", 0))
    wait_value(watcher, SYS + "subscriptions/count", lambda v: v == 1, "== 1")
    other = clients.paho(unique_id("o"))
    other.subscribe(("s/1", 0), ("s/2", 1), ("s/#", 2))
    wait_value(watcher, SYS + "subscriptions/count", lambda v: v == 4, "== 4")
    other.subscribe(("s/1", 2))  # a replacement, not a new subscription
    other.unsubscribe("s/2")
    wait_value(watcher, SYS + "subscriptions/count", lambda v: v == 3, "== 3")


def test_sys_retained_messages_count(clients: Clients) -> None:
    """`retained messages/count` goes up by one per retained topic and down on deletion."""
    watcher = clients.paho(unique_id("sys"))
    watcher.subscribe((SYS + "retained messages/count", 0))
    topic = SYS + "retained messages/count"
    # wait for the count to settle (the first round may predate the $SYS retained values)
    msgs = watcher.messages.wait_until(
        lambda ms: len(ms) >= 3 and ms[-1].payload == ms[-2].payload, what="a stable count")
    base = number(msgs[-1].payload.decode())
    pub = clients.paho(unique_id("pub"))
    pub.publish("rc/a", b"1", 1, retain=True)
    pub.publish("rc/b", b"2", 1, retain=True)
    pub.publish("rc/b", b"3", 1, retain=True)  # replaces: still two
    wait_value(watcher, topic, lambda v: v == base + 2, f"== {base + 2}")
    pub.publish("rc/a", b"", 1, retain=True)
    wait_value(watcher, topic, lambda v: v == base + 1, f"== {base + 1}")


# -- $ topics and wildcards ----------------------------------------------------------------------

@protocols
def test_wildcards_do_not_match_sys_topics_mqtt_4_7_2_1(clients: Clients, protocol: int) -> None:
    """`#` and `+/...` do not match topics beginning with `$`: neither the retained `$SYS`
    values on subscribe nor the live ones every interval."""
    watcher = clients.paho(unique_id("sys"), protocol)
    watcher.subscribe(("$SYS/#", 0))
    watcher.messages.wait_for(1)  # $SYS values exist (and are retained) by now
    everything = clients.paho(unique_id("all"), protocol)
    everything.subscribe(("#", 0), ("+/broker/#", 0), ("+/broker/uptime", 0))
    # let two more rounds go by, then a sentinel
    start = len(watcher.messages.topic(SYS + "uptime"))
    watcher.messages.wait_until(
        lambda ms: sum(m.topic == SYS + "uptime" for m in ms) >= start + 2,
        what="two more $SYS rounds")
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("sentinel", b"s", 1)
    msgs = everything.messages.wait_until(lambda ms: any(m.topic == "sentinel" for m in ms))
    assert [m.topic for m in msgs] == ["sentinel"]


@protocols
def test_client_publish_to_dollar_topics_not_delivered(clients: Clients, protocol: int) -> None:
    """A client's PUBLISH to `$SYS/foo` or `$x` reaches no `$SYS/#` / `$x` subscriber and is not
    retained (`$` topics are the Server's [MQTT-4.7.2]); the publisher stays connected."""
    sub = clients.paho(unique_id("sub"), protocol)
    sub.subscribe(("$SYS/#", 0), ("$x", 1), ("sentinel", 1))
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("$SYS/foo", b"forged", 1, retain=True)
    pub.publish("$x", b"forged", 1, retain=True)
    pub.publish("sentinel", b"s", 1)
    msgs = sub.messages.wait_until(lambda ms: any(m.topic == "sentinel" for m in ms))
    forged = [m for m in msgs if m.payload == b"forged" or m.topic in ("$SYS/foo", "$x")]
    assert forged == []
    # not retained either
    late = clients.paho(unique_id("late"), protocol)
    late.subscribe(("$SYS/foo", 1), ("$x", 1), ("sentinel", 1))
    pub.publish("sentinel", b"s2", 1)
    msgs = late.messages.wait_until(lambda ms: any(m.topic == "sentinel" for m in ms))
    assert [m.topic for m in msgs] == ["sentinel"]
    assert not pub.disconnected.is_set()


@protocols
def test_client_will_to_dollar_topics_not_published(clients: Clients, protocol: int) -> None:
    """A will is a PUBLISH that comes later: one to `$SYS/...` is not published when its client
    drops either ($ topics are the Server's [MQTT-4.7.2]); the client is still accepted. A
    bridge's state topic (`$SYS/broker/connection/<name>/state`, Mosquitto's notifications,
    whose will says 0) is the one exception, as for PUBLISH."""
    sub = clients.paho(unique_id("sub"), protocol)
    sub.subscribe(("$SYS/broker/forged", 0), ("$SYS/broker/connection/+/state", 1),
                  ("sentinel", 1))
    forger = clients.paho(unique_id("forger"), protocol,
                          will=("$SYS/broker/forged", b"forged", 1, True))
    bridge = clients.paho(unique_id("bridge"), protocol,
                          will=("$SYS/broker/connection/edge-9/state", b"0", 1, True))
    forger.drop()
    bridge.drop()
    state = sub.messages.wait_topic("$SYS/broker/connection/edge-9/state")
    assert state.payload == b"0"
    pub = clients.paho(unique_id("pub"), protocol)
    pub.publish("sentinel", b"s", 1)
    msgs = sub.messages.wait_until(lambda ms: any(m.topic == "sentinel" for m in ms))
    assert [m.payload for m in msgs if m.topic == "$SYS/broker/forged"] == []
