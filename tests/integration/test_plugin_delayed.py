"""DelayedPublish (mqttbroker/plugins/delayed.py, docs/plugins.md "Delayed publish"): EMQX's
``$delayed/{seconds}/{topic}`` against the real broker over real sockets, with paho-mqtt
clients.

* a delayed message reaches ``{topic}``'s subscribers after its delay, not before, in the order
  of the deadlines (not of publication), with its payload, QoS, retain flag and properties;
* malformed ``$delayed`` topics (no delay, not a whole number, over ``max_delay``, no topic, a
  ``$`` topic) are dropped and logged; over ``max_messages``, messages are dropped, logged and
  counted;
* with SQLite persistence, waiting messages survive a restart: one whose time passed while the
  broker was down is published as it starts, one not yet due when it is due; its row is
  deleted once the broker has it;
* bad options are configuration errors with the plugin entry's line.

Clients publish to ``$delayed/{seconds}/{topic}`` directly (the plugin claims the ``$delayed/``
prefix, so the broker does not refuse it as one of its own ``$`` topics), or to
``delay/{seconds}/{topic}``, which a TopicRewrite rule in front turns into
``$delayed/{seconds}/{topic}`` (the combination EMQX documents).

Delays are 1-2 s; "not before" is checked by waiting until just before the deadline, every
other wait is bounded.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.config import load_config
from mqttbroker.errors import ConfigError
from mqttbroker.plugins.delayed import DelayedPublish, default_path
from mqttbroker.plugins.host import load_classes
from tests.conftest import BrokerThread, base_config

from .brokerproc import persistence
from .helpers import unique_id, wait_until
from .v5helpers import Env, Msg5, Paho5, SubscribeOptions, no_message

pytestmark = pytest.mark.timeout(60)

DELAYED = "mqttbroker.plugins.delayed.DelayedPublish"
REWRITE = "mqttbroker.plugins.rewrite.TopicRewrite"
# clients cannot publish to $ topics: delay/{seconds}/{topic} becomes $delayed/{seconds}/{topic}
TO_DELAYED = {"rules": [{"action": "publish", "source_topic": "delay/#",
                         "re": "^delay/(.*)$", "dest_topic": "$delayed/$1"}]}
EARLY = 0.15  # a message due at T must not have arrived at T - EARLY


def delayed_config(**options: Any) -> dict[str, Any]:
    cfg = base_config()
    cfg["plugins"] = {REWRITE: TO_DELAYED, DELAYED: options}
    return cfg


def the_plugin(bt: BrokerThread) -> DelayedPublish:
    b = bt.broker
    assert b is not None
    (p,) = [p for p in b.plugins.plugins if isinstance(p, DelayedPublish)]
    return p


def waiting(bt: BrokerThread) -> int:
    p = the_plugin(bt)
    return bt.call(lambda: len(p.pending))


def rows(db: str) -> list[tuple[str, bytes]]:
    """(topic, payload) of the rows of a DelayedPublish file."""
    with sqlite3.connect(db) as c:
        return c.execute("SELECT topic, payload FROM delayed ORDER BY id").fetchall()


# -- delivery -----------------------------------------------------------------------------------

def test_message_arrives_after_its_delay_not_before_in_deadline_order(env: Env) -> None:
    """delay/2/x/late then delay/1/x/early: nothing until just before 1 s; then x/early, then
    x/late (not before 2 s), each once, with its payload; the publisher's PUBACK is at once
    (0x00: the message was taken)."""
    env.start(delayed_config())
    s = env.paho(unique_id("s-"))
    s.subscribe(("x/#", 1))
    pub = env.paho(unique_id("p-"))
    t0 = time.monotonic()
    assert pub.publish("delay/2/x/late", b"L", qos=1) == 0
    assert pub.publish("delay/1/x/early", b"E", qos=1) == 0
    assert waiting(env.bt) == 2
    assert no_message(s.messages, t0 + 1 - EARLY - time.monotonic())
    s.messages.wait_topic("x/early", timeout=3)
    assert no_message(s.messages, t0 + 2 - EARLY - time.monotonic(),
                      lambda m: m.topic == "x/late")
    msgs = s.messages.wait_for(2, timeout=3)
    assert [(m.topic, m.payload) for m in msgs] == [("x/early", b"E"), ("x/late", b"L")]
    assert waiting(env.bt) == 0 and the_plugin(env.bt).published == 2


def test_qos_retain_and_properties_are_kept(env: Env) -> None:
    """A QoS 2 retained message with MQTT 5 properties is published at QoS 2, retained (a
    Retain As Published subscriber sees RETAIN 1, a later subscriber gets it as retained),
    with its content type and user properties."""
    env.start(delayed_config())
    s = env.paho(unique_id("s-"))
    s.subscribe(("x/#", SubscribeOptions(qos=2, retainAsPublished=True)))
    pub = env.paho(unique_id("p-"))
    props = {"ContentType": "text/plain", "UserProperty": [("k", "v")]}
    assert pub.publish("delay/1/x/kept", b"R", qos=2, retain=True, properties=props) == 0
    m = s.messages.wait_topic("x/kept", timeout=3)
    assert isinstance(m, Msg5)
    assert (m.payload, m.qos, m.retain) == (b"R", 2, True)
    assert m.props.get("ContentType") == "text/plain", m.props
    assert ("k", "v") in m.props.get("UserProperty", []), m.props
    later = env.paho(unique_id("l-"))
    later.subscribe(("x/kept", 2))
    r = later.messages.wait_topic("x/kept")
    assert (r.payload, r.qos, r.retain) == (b"R", 2, True)


def test_qos0_message_is_delayed_too(env: Env) -> None:
    env.start(delayed_config())
    s = env.paho(unique_id("s-"))
    s.subscribe(("x/#", 1))
    env.paho(unique_id("p-")).publish("delay/1/x/q0", b"0", qos=0)
    m = s.messages.wait_topic("x/q0", timeout=3)
    assert (m.payload, m.qos) == (b"0", 0)


# -- malformed topics and the bound ------------------------------------------------------------------

MALFORMED = [
    ("delay/x/t", "delay 'x' is not a whole number of seconds"),
    ("delay/-1/t", "delay '-1' is not a whole number of seconds"),
    ("delay/1.5/t", "delay '1.5' is not a whole number of seconds"),
    ("delay//t", "delay '' is not a whole number of seconds"),
    ("delay/5", "expected $delayed/{seconds}/{topic}"),
    ("delay/5/", "no topic after the delay"),
    ("delay/11/t", "delay 11s is over max_delay 10s"),
    ("delay/1/$SYS/broker/x", "topic '$SYS/broker/x' is a $ topic (the broker's)"),
]


def test_malformed_delayed_topics_are_dropped_and_logged(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """Each malformed ``$delayed`` topic is acknowledged (0x00), not held, not delivered to
    anyone, counted and logged with why; a good one after them is held."""
    caplog.set_level(logging.INFO, logger="mqttbroker.plugins")
    env.start(delayed_config(max_delay=10))
    watcher = env.paho(unique_id("w-"))
    watcher.subscribe(("#", 1), ("$SYS/#", 1))
    pub = env.paho(unique_id("p-"))
    for topic, _ in MALFORMED:
        assert pub.publish(topic, b"bad", qos=1) == 0
    assert pub.publish("delay/10/t", b"good", qos=1) == 0
    p = the_plugin(env.bt)
    assert env.bt.call(lambda: (p.malformed, len(p.pending))) == (len(MALFORMED), 1)
    logged = [r.getMessage() for r in caplog.records if r.name == f"mqttbroker.plugins.{DELAYED}"]
    for topic, why in MALFORMED:
        line = f"PUBLISH to '$delayed/{topic[6:]}' dropped: {why}"
        assert any(line in text for text in logged), (line, logged)
    assert no_message(watcher.messages, 0.2, lambda m: m.payload == b"bad")


def test_over_max_messages_new_ones_are_dropped_logged_and_counted(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """With max_messages 3, the 4th and 5th waiting messages are dropped (acknowledged,
    counted, one WARNING); when the first ones have gone out, there is room again."""
    caplog.set_level(logging.WARNING, logger="mqttbroker.plugins")
    env.start(delayed_config(max_messages=3))
    s = env.paho(unique_id("s-"))
    s.subscribe(("x/#", 1))
    pub = env.paho(unique_id("p-"))
    for i in range(5):
        assert pub.publish(f"delay/1/x/{i}", b"%d" % i, qos=1) == 0
    p = the_plugin(env.bt)
    assert env.bt.call(lambda: (len(p.pending), p.dropped)) == (3, 2)
    warnings = [r.getMessage() for r in caplog.records
                if r.name == f"mqttbroker.plugins.{DELAYED}" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped: 3 delayed messages wait (max_messages)" \
        in warnings[0], warnings
    msgs = s.messages.wait_for(3, timeout=3)
    assert sorted(m.topic for m in msgs) == ["x/0", "x/1", "x/2"]
    assert pub.publish("delay/1/x/5", b"5", qos=1) == 0
    s.messages.wait_topic("x/5", timeout=3)
    assert env.bt.call(lambda: (len(p.pending), p.dropped)) == (0, 2)


# -- restart with SQLite persistence ---------------------------------------------------------------

class Restartable:
    """A broker with SQLite persistence and the plugins, restartable on the same database and
    port; clients are closed at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = str(tmp_path / "db.sqlite")
        self.config = delayed_config()
        self.config["persistence"] = persistence(self.db, "commit")
        self.bt: BrokerThread | None = None
        self.port = 0
        self.clients: list[Paho5] = []

    def start(self) -> BrokerThread:
        cfg = copy.deepcopy(self.config)
        if self.port:
            cfg["listeners"]["default"]["bind"] = f"127.0.0.1:{self.port}"
        self.bt = BrokerThread(cfg).start()
        self.port = self.bt.port
        return self.bt

    def stop(self) -> None:
        bt, self.bt = self.bt, None
        assert bt is not None
        bt.stop()
        assert not bt._thread.is_alive(), "the broker did not shut down within 10 s"

    def paho(self, cid: str, clean_start: bool = True) -> Paho5:
        c = Paho5(cid)
        self.clients.append(c)
        c.connect(self.port, 60, clean_start, {"SessionExpiryInterval": 300})
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()
        if self.bt is not None:
            self.bt.stop()


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Restartable]:
    r = Restartable(tmp_path)
    r.start()
    yield r
    r.close()


def subscriber_offline(r: Restartable, cid: str) -> None:
    """``cid`` has a stored session subscribed to x/# at QoS 1, and is not connected."""
    s = r.paho(cid)
    assert s.subscribe(("x/#", 1)) == [1]
    s.disconnect()


def test_message_due_while_the_broker_was_down_is_published_at_start(
        restartable: Restartable) -> None:
    """$delayed/1/x/r is written to db-delayed.sqlite beside the broker's db; the broker
    stops at once and stays down past the deadline; the new broker publishes it as it starts
    (into the stored session of the subscriber, which gets it on reconnecting) and deletes
    its row."""
    r = restartable
    cid = unique_id("ds-")
    subscriber_offline(r, cid)
    t0 = time.monotonic()
    assert r.paho(unique_id("p-")).publish("delay/1/x/r", b"survived", qos=1) == 0
    r.stop()
    stored = default_path(r.db)
    assert stored == str(Path(r.db).with_name("db-delayed.sqlite"))
    assert rows(stored) == [("x/r", b"survived")]
    time.sleep(max(t0 + 1.2 - time.monotonic(), 0))
    r.start()
    s = r.paho(cid, clean_start=False)
    assert s.session_present
    m = s.messages.wait_topic("x/r")
    assert (m.payload, m.qos) == (b"survived", 1)
    wait_until(lambda: rows(stored) == [], what="the row to be deleted")


def test_message_not_yet_due_at_restart_is_published_when_due(
        restartable: Restartable) -> None:
    """$delayed/3/x/s survives a quick restart and arrives after its 3 s (counted from the
    publication, across the restart), not before."""
    r = restartable
    cid = unique_id("ds-")
    subscriber_offline(r, cid)
    t0 = time.monotonic()
    assert r.paho(unique_id("p-")).publish("delay/3/x/s", b"later", qos=1) == 0
    r.stop()
    r.start()
    s = r.paho(cid, clean_start=False)
    assert no_message(s.messages, t0 + 3 - EARLY - time.monotonic())
    m = s.messages.wait_topic("x/s", timeout=3)
    assert m.payload == b"later"
    wait_until(lambda: rows(default_path(r.db)) == [], what="the row to be deleted")


def test_without_persistence_nothing_is_written(env: Env, tmp_path: Path) -> None:
    """``backend: memory`` (the default): no file; a ``path`` option: that file, relative
    to the database's folder."""
    bt = env.start(delayed_config())
    assert the_plugin(bt).store is None
    cfg = delayed_config(path="delayed.sqlite")
    cfg["persistence"] = {"backend": "memory", "path": str(tmp_path / "m.db")}
    bt = env.start(cfg)
    store = the_plugin(bt).store
    assert store is not None and store.path == str(tmp_path / "delayed.sqlite")


# -- configuration and the direct form ------------------------------------------------------------

@pytest.mark.parametrize(("options", "problem"), [
    ("max_messages: 0", "bad options: max_messages must be >= 1, got 0"),
    ("max_delay: -1", "bad options: max_delay must be >= 0 seconds, got -1"),
    ("max_delay: soon", "option 'max_delay' must be int, got str 'soon'"),
    ("max_wait: 3", "unknown option 'max_wait'"),
])
def test_bad_options_are_config_errors_with_the_line(tmp_path: Path, options: str,
                                                     problem: str) -> None:
    path = tmp_path / "delayed.yaml"
    path.write_text("listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n"
                    f"plugins:\n  {DELAYED}:\n    {options}\n")
    with pytest.raises(ConfigError) as err:
        load_classes(load_config(str(path)).plugins, str(path))
    assert str(err.value).startswith(f"{path}:6: plugins.{DELAYED}: {problem}"), str(err.value)


def test_client_publishes_to_delayed_directly(env: Env) -> None:
    env.start(delayed_config())
    s = env.paho(unique_id("s-"))
    s.subscribe(("x/#", 1))
    assert env.paho(unique_id("p-")).publish("$delayed/1/x/d", b"D", qos=1) == 0
    assert s.messages.wait_topic("x/d", timeout=3).payload == b"D"
