"""The plugin API (mqttbroker/plugins, docs/plugins.md) against the real broker over real
sockets, with the sample plugins of tests/integration/sample_plugins.py:

* loading: ``mqttbroker check-config`` names the file and line of a plugin entry that does not
  load (import error, no such class, not a Plugin, unknown / wrongly typed / missing option);
  amqtt 0.10's list form is ignored, null options are the defaults;
* ``authenticate``: False refuses (3.1.1 0x05, MQTT 5 0x87), True admits whom the password file
  refuses, None leaves it to the password file; the first definite answer of a chain wins; an
  async answer holds only its CONNECT; no answer in ``plugin_timeout`` and a plugin that
  raises take ``plugin_timeout_outcome`` and are counted;
* ``authorize`` for PUBLISH (v5 PUBACK 0x87, 3.1.1 acknowledged, never delivered), SUBSCRIBE
  (SUBACK 0x87 / 0x80 for that filter only) and RECEIVE (per subscriber), each also async:
  the packets that wait keep their order and the plugin is asked once per client and topic;
* ``on_message`` changes, drops (QoS 1/2 flows still complete), fails (message unchanged,
  counted) or spoils (a wildcard topic: ignored, counted) messages;
* the events, in order, with the right client ids and filters; failing events are counted,
  never fatal; ``PluginContext.publish`` reaches subscribers; ``$SYS/broker/plugins/...`` and
  ``/metrics`` count errors and timeouts.

Every broker is in-process (``make_broker_thread``), so a test reads what its plugin saw
through ``broker.plugins``. Every wait is bounded; the only time measurements are lower
bounds (an answer given after ``delay`` cannot arrive before it).

Two tests began as strict xfails showing broker bugs, fixed since: a held SUBSCRIBE with more
filters than the answer cache holds was never answered (the cache dropped answers still on
their way), and a will was published to a topic the plugins deny its client.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mqttbroker.config import load_config
from mqttbroker.passwd import set_password
from mqttbroker.plugins.host import CACHE_PER_CLIENT
from mqttbroker.protocol.packets import (
    Connack,
    Connect,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Will,
)
from tests.conftest import BrokerThread, base_config

from . import sample_plugins as sp
from .helpers import ConnectionClosed, unique_id, wait_until
from .test_http_api import Http
from .v5helpers import Env, P, Paho5, RawV5

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
MOD = "tests.integration.sample_plugins"
T = TypeVar("T")


def plugin_config(plugins: dict[str, dict[str, Any] | None], *,
                  auth: dict[str, Any] | None = None, sys_interval: float = 0,
                  http: bool = False, **mqtt: Any) -> dict[str, Any]:
    """base_config with ``plugins`` (sample plugin class name -> options), no login-failure
    delays (refused CONNECTs are what these tests make)."""
    cfg = base_config(auth_failure_delay=0, **mqtt)
    cfg["plugins"] = {f"{MOD}.{name}": options for name, options in plugins.items()}
    cfg["sys_interval"] = sys_interval
    if auth is not None:
        cfg["auth"] = auth
    if http:
        cfg["http"] = {"enabled": True, "bind": "127.0.0.1:0"}
    return cfg


def plugin(bt: BrokerThread, cls: type[T]) -> T:
    """The running instance of sample plugin ``cls`` in ``bt``'s broker."""
    assert bt.broker is not None
    found = [p for p in bt.broker.plugins.plugins if type(p) is cls]
    assert len(found) == 1, f"{cls.__name__} is not loaded: {bt.broker.plugins.plugins!r}"
    return found[0]  # type: ignore[return-value]


def counters(bt: BrokerThread) -> tuple[int, int]:
    """(plugin_errors, plugin_timeouts) as the broker counts them."""
    b = bt.broker
    assert b is not None
    return bt.call(lambda: (b.metrics.plugin_errors, b.metrics.plugin_timeouts))


def sys_watcher(env: Env) -> Paho5:
    """A client subscribed to ``$SYS/broker/plugins/#`` (the broker needs a sys_interval)."""
    w = env.paho(unique_id("sysw-"))
    w.subscribe(("$SYS/broker/plugins/#", 0))
    return w


def wait_sys(w: Paho5, name: str, value: int) -> None:
    """Wait until ``$SYS/broker/plugins/<name>`` is published as ``value``."""
    topic = f"$SYS/broker/plugins/{name}"
    want = str(value).encode()
    w.messages.wait_until(lambda ms: any(m.topic == topic and m.payload == want for m in ms),
                          what=f"{topic} = {value}")


def plugin_log(caplog: pytest.LogCaptureFixture, name: str, hook: str) -> list[str]:
    """The broker's log lines saying plugin ``name`` failed in ``hook``."""
    text = f"plugin {MOD}.{name} failed in {hook}"
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(text)]


def burst(r: RawV5, items: list[tuple[str, bytes]], qos: int = 1) -> list[int]:
    """Send one PUBLISH per (topic, payload) in a single write; their packet ids."""
    pids = [r.next_packet_id() for _ in items]
    r.send(*(Publish(t, payload, qos, False, False, pid) for (t, payload), pid
             in zip(items, pids, strict=True)))
    return pids


def by_topic(publishes: list[Publish]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for p in publishes:
        out.setdefault(p.topic, []).append(p.payload)
    return out


# -- 1. configuration --------------------------------------------------------------------------------

BAD_ENTRIES = [
    pytest.param("tests.integration.no_such_module.Plugin", {},
                 "cannot import module 'tests.integration.no_such_module': "
                 "ModuleNotFoundError", id="unknown-module"),
    pytest.param(f"{MOD}.NoSuchClass", None, f"module '{MOD}' has no 'NoSuchClass'",
                 id="module-without-the-class"),
    pytest.param(f"{MOD}.NotAPlugin", {}, f"{MOD}.NotAPlugin is not a plugin",
                 id="not-a-plugin-subclass"),
    pytest.param(f"{MOD}.Authenticator", {"allow": "x", "colour": "blue"},
                 "unknown option 'colour'", id="unknown-option"),
    pytest.param(f"{MOD}.NeedsCount", {"count": "three"},
                 "option 'count' must be int, got str 'three'", id="option-of-wrong-type"),
    pytest.param(f"{MOD}.NeedsCount", {"label": "x"},
                 "missing 1 required positional argument: 'count'",
                 id="missing-required-option"),
]


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mqttbroker", "check-config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(("dotted", "options", "problem"), BAD_ENTRIES)
def test_check_config_names_file_and_line_of_a_bad_plugin_entry(
        tmp_path: Path, dotted: str, options: dict[str, Any] | None, problem: str) -> None:
    """A plugin entry that does not load fails check-config (exit 1) with one line
    ``FILE:LINE: plugins.<path>: <why>``, LINE being the entry's; the good entry before it
    is not reported."""
    path = tmp_path / "plugins.yaml"
    path.write_text(
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        "    bind: 127.0.0.1:0\n"
        "plugins:\n"
        f"  {MOD}.EventLog:\n"
        f"  {dotted}: {json.dumps(options)}\n")
    result = check_config(path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith(f"{path}:7: plugins.{dotted}: "), lines[0]
    assert problem in lines[0], lines[0]


def test_amqtt_010_plugin_list_is_ignored_and_null_options_are_the_defaults(
        tmp_path: Path, env: Env) -> None:
    """``plugins:`` as amqtt 0.10's list of names passes check-config and starts a broker
    without plugins; a plugin entry with null options passes and runs with its defaults (the
    Greeter greets on ``greet/<id>``)."""
    listener = "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\nsys_interval: 0\n"
    old = tmp_path / "amqtt010.yaml"
    old.write_text(listener + "plugins:\n  - auth_anonymous\n  - broker_sys\n")
    new = tmp_path / "null.yaml"
    new.write_text(listener + f"plugins:\n  {MOD}.Greeter:\n")
    for path in (old, new):
        result = check_config(path)
        assert (result.returncode, result.stdout) == (0, f"{path}: OK\n"), result.stderr

    bt_old = env.start(load_config(str(old)))  # type: ignore[arg-type]
    assert bt_old.broker is not None and not bt_old.broker.plugins
    bt = env.start(load_config(str(new)))  # type: ignore[arg-type]
    assert plugin(bt, sp.Greeter).config == sp.GreeterOptions()
    s, _ = env.raw_connect(unique_id("nul-s"))
    s.subscribe5(("greet/#", 1))
    gid = unique_id("nul-g")
    env.raw_connect(gid)
    m = s.next_publish()
    assert (m.topic, m.payload, m.qos) == (f"greet/{gid}", f"hello {gid}".encode(), 1)


# -- 2. authenticate -------------------------------------------------------------------------------

def test_authenticate_false_refuses_311_with_0x05_and_v5_with_0x87(env: Env) -> None:
    """A plugin's False refuses the CONNECT even though anonymous clients are allowed:
    3.1.1 CONNACK 0x05, MQTT 5 CONNACK 0x87, then the connection closes. A client the
    plugin has no opinion on gets in."""
    bt = env.start(plugin_config({"Authenticator": {"deny": "no-"}}))
    cid3, cid5, ok = unique_id("no-"), unique_id("no-"), unique_id("yes-")
    r3 = env.raw3()
    assert r3.connect(cid3).return_code == 0x05
    assert r3.wait_closed() == []
    r5 = env.raw()
    assert r5.connect5(cid5).return_code == 0x87
    assert r5.wait_closed() == []
    env.raw_connect(ok)
    asked = [c[0] for c in plugin(bt, sp.Authenticator).calls]
    assert asked == [cid3, cid5, ok]


def test_authenticate_true_admits_whom_the_password_file_refuses(
        env: Env, tmp_path: Path) -> None:
    """allow-anonymous false and a password file: the plugin's True admits a client without
    credentials and one with a wrong password; the same clients without the plugin's
    word are refused (0x87 / 0x86)."""
    passwd = tmp_path / "passwd"
    set_password(str(passwd), "alice", "alice-pw")
    env.start(plugin_config({"Authenticator": {"allow": "vip-"}},
                            auth={"allow-anonymous": False, "password-file": str(passwd)}))
    env.raw_connect(unique_id("vip-"))
    env.raw_connect(unique_id("vip-"), username="alice", password=b"wrong")
    env.raw_connect(unique_id("std-"), expect=0x87)
    env.raw_connect(unique_id("std-"), expect=0x86, username="alice", password=b"wrong")


def test_authenticate_none_leaves_it_to_the_password_file(env: Env, tmp_path: Path) -> None:
    """A plugin with no opinion is asked first, then the password file decides: the right
    password gets in (3.1.1 and 5), a wrong one is refused (0x04 / 0x86), no credentials are
    refused (anonymous off)."""
    passwd = tmp_path / "passwd"
    set_password(str(passwd), "alice", "alice-pw")
    bt = env.start(plugin_config({"Authenticator": {}},
                                 auth={"allow-anonymous": False, "password-file": str(passwd)}))
    ids = [unique_id("pf-") for _ in range(5)]
    env.raw_connect(ids[0], username="alice", password=b"alice-pw")
    env.raw_connect(ids[1], expect=0x86, username="alice", password=b"bad")
    env.raw_connect(ids[2], expect=0x87)
    r3 = env.raw3()
    assert r3.connect(ids[3], username="alice", password=b"alice-pw").return_code == 0
    r3b = env.raw3()
    assert r3b.connect(ids[4], username="alice", password=b"bad").return_code == 0x04
    calls = plugin(bt, sp.Authenticator).calls
    assert [c[0] for c in calls] == ids
    assert calls[0] == (ids[0], "alice", b"alice-pw")


def test_authenticate_chain_first_definite_answer_wins(env: Env) -> None:
    """Two authenticating plugins, in configuration order: the first one's True or False
    decides (the second is not asked); its None hands over to the second; two Nones to the
    built-in check (anonymous refused here)."""
    bt = env.start(plugin_config(
        {"Authenticator": {"allow": "a-", "deny": "d-"},
         "SecondAuthenticator": {"deny": "a-", "allow": "d-,n-"}},
        auth={"allow-anonymous": False}))
    first_yes, first_no, second_yes, nobody = (unique_id("a-"), unique_id("d-"),
                                               unique_id("n-"), unique_id("z-"))
    env.raw_connect(first_yes)
    env.raw_connect(first_no, expect=0x87)
    env.raw_connect(second_yes)
    env.raw_connect(nobody, expect=0x87)
    assert [c[0] for c in plugin(bt, sp.Authenticator).calls] == [
        first_yes, first_no, second_yes, nobody]
    assert [c[0] for c in plugin(bt, sp.SecondAuthenticator).calls] == [second_yes, nobody]


def test_async_authenticate_holds_its_connect_while_others_are_served(env: Env) -> None:
    """A coroutine's answer: that CONNECT (and a SUBSCRIBE sent right behind it) waits, the
    broker meanwhile connects, subscribes and serves another client; once the answer comes
    the first client gets its CONNACK, then its SUBACK."""
    bt = env.start(plugin_config({"Authenticator": {"gated": "gate-"}}))
    auth = plugin(bt, sp.Authenticator)
    waiting = env.raw()
    gid = unique_id("gate-")
    waiting.send(Connect("MQTT", 5, gid), Subscribe(1, [Subscription("gate/w", 1)]))
    wait_until(lambda: any(c[0] == gid for c in auth.calls), what="the plugin asked")

    other, _ = env.raw_connect(unique_id("free-"))
    assert other.subscribe5(("gate/t", 1)).return_codes == [1]
    ack = other.publish5("gate/t", b"meanwhile", 1)
    assert ack is not None and ack.reason_code == 0
    assert other.next_publish().payload == b"meanwhile"
    assert waiting.no_packet(0.05), "the held CONNECT was answered before its plugin"

    bt.call(auth.gate.set)
    assert waiting.expect(Connack).return_code == 0
    suback = waiting.expect(Suback)
    assert (suback.packet_id, suback.return_codes) == (1, [1])


def test_async_authenticate_answer_after_a_delay_decides(env: Env) -> None:
    """Coroutines answering after 0.3 s: True admits, False refuses (0x87), None leaves it to
    the built-in check (anonymous refused); no CONNACK comes before the answer."""
    delay = 0.3
    env.start(plugin_config({"Authenticator": {"slow": "s", "allow": "sy-", "deny": "sn-",
                                               "delay": delay}},
                            auth={"allow-anonymous": False}))
    clients = [(env.raw(), unique_id(p)) for p in ("sy-", "sn-", "s0-")]
    began = time.monotonic()
    for r, cid in clients:
        r.send(Connect("MQTT", 5, cid))
    codes = [r.expect(Connack).return_code for r, _ in clients]
    assert time.monotonic() - began >= delay - 0.02
    assert codes == [0x00, 0x87, 0x87]


def test_authenticate_timeout_refuses_by_default_and_is_counted(env: Env) -> None:
    """No answer within mqtt.plugin_timeout (0.5 s): refused (0x87; deny is the default
    outcome) no sooner, plugin_timeouts 1 in /metrics; another client gets in meanwhile."""
    bt = env.start(plugin_config({"Authenticator": {"hang": "hang-"}}, http=True,
                                 plugin_timeout=0.5))
    hung = env.raw()
    began = time.monotonic()
    hung.send(Connect("MQTT", 5, unique_id("hang-")))
    env.raw_connect(unique_id("ok-"))
    ack = hung.expect(Connack)
    assert time.monotonic() - began >= 0.5 - 0.02
    assert ack.return_code == 0x87
    scrape = Http(bt).metrics()
    assert scrape.get("mqttbroker_plugin_timeouts_total") == 1
    assert scrape.get("mqttbroker_plugin_errors_total") == 0


def test_authenticate_timeout_outcome_allow_admits_and_is_counted(env: Env) -> None:
    """plugin_timeout_outcome: allow: a CONNECT with no answer in time gets in, even with
    anonymous clients refused; $SYS/broker/plugins/timeouts says 1."""
    bt = env.start(plugin_config({"Authenticator": {"hang": "hang-", "allow": "sysw-"}},
                                 auth={"allow-anonymous": False}, sys_interval=0.1,
                                 plugin_timeout=0.5, plugin_timeout_outcome="allow"))
    w = sys_watcher(env)
    env.raw_connect(unique_id("hang-"), expect=0)
    wait_sys(w, "timeouts", 1)
    assert counters(bt) == (0, 1)


def test_timeout_outcome_decides_when_connect_timeout_equals_plugin_timeout(env: Env) -> None:
    """mqtt.connect_timeout equal to mqtt.plugin_timeout (their defaults are both 5 s): a
    CONNECT whose plugin never answers gets plugin_timeout_outcome's answer (allow: CONNACK
    0x00), not a close without CONNACK."""
    env.start(plugin_config({"Authenticator": {"hang": "hang-"}}, plugin_timeout=0.5,
                            connect_timeout=0.5, plugin_timeout_outcome="allow"))
    r = env.raw()
    r.send(Connect("MQTT", 5, unique_id("hang-")))
    try:
        ack = r.expect(Connack)
    except ConnectionClosed:
        pytest.fail("the broker closed the connection without a CONNACK")
    assert ack.return_code == 0


@pytest.mark.parametrize(("outcome", "code"), [("deny", 0x87), ("allow", 0x00)])
def test_authenticate_that_raises_takes_the_timeout_outcome_and_is_counted(
        env: Env, caplog: pytest.LogCaptureFixture, outcome: str, code: int) -> None:
    """authenticate raising: the CONNECT gets plugin_timeout_outcome's answer, the error is
    counted ($SYS/broker/plugins/errors) and logged with the plugin's name, and the broker
    goes on serving other clients."""
    caplog.set_level(logging.ERROR, logger="mqttbroker.plugins")
    bt = env.start(plugin_config({"Authenticator": {"fail": "boom-", "allow": "sysw-"}},
                                 auth={"allow-anonymous": False}, sys_interval=0.1,
                                 plugin_timeout_outcome=outcome))
    w = sys_watcher(env)
    env.raw_connect(unique_id("boom-"), expect=code)
    wait_sys(w, "errors", 1)
    assert counters(bt) == (1, 0)
    assert len(plugin_log(caplog, "Authenticator", "authenticate")) == 1
    assert w.publish("after/boom", b"x", 1) == 0x10  # served (nobody subscribes to it)


# -- 3. authorize PUBLISH --------------------------------------------------------------------------

def test_publish_denied_by_plugin_v5_gets_0x87_and_is_not_delivered(env: Env) -> None:
    """MQTT 5: a PUBLISH the plugin denies gets PUBACK 0x87 (QoS 1) / PUBREC 0x87 (QoS 2)
    and reaches no subscriber; the next allowed one does."""
    env.start(plugin_config({"TopicAuthorizer": {"deny_publish": "pd/deny"}}))
    s, _ = env.raw_connect(unique_id("pds-"))
    s.subscribe5(("pd/#", 2))
    pub, _ = env.raw_connect(unique_id("pdp-"))
    assert pub.publish5("pd/deny/1", b"no", 1).reason_code == 0x87  # type: ignore[union-attr]
    assert pub.publish5("pd/deny/2", b"no", 2).reason_code == 0x87  # type: ignore[union-attr]
    assert pub.publish5("pd/ok", b"yes", 1).reason_code == 0x00  # type: ignore[union-attr]
    m = s.next_publish()
    assert (m.topic, m.payload) == ("pd/ok", b"yes")


def test_publish_denied_by_plugin_311_is_acknowledged_but_not_delivered(env: Env) -> None:
    """MQTT 3.1.1 cannot say no: the denied PUBLISH is acknowledged as usual (PUBACK; QoS 2
    PUBREC/PUBREL/PUBCOMP) and delivered to nobody."""
    env.start(plugin_config({"TopicAuthorizer": {"deny_publish": "pd/deny"}}))
    s, _ = env.raw_connect(unique_id("pds-"))
    s.subscribe5(("pd/#", 2))
    pub = env.raw3()
    assert pub.connect(unique_id("pdp-")).return_code == 0
    pub.publish("pd/deny/1", b"no", 1)  # asserts the PUBACK
    pub.publish("pd/deny/2", b"no", 2)  # asserts PUBREC, PUBCOMP
    pub.publish("pd/ok", b"yes", 1)
    m = s.next_publish()
    assert (m.topic, m.payload) == ("pd/ok", b"yes")


def test_async_publish_decision_keeps_order_and_asks_once_per_topic(env: Env) -> None:
    """Publish decisions answered after 0.2 s: a burst of PUBLISH packets on four topics (one
    denied) is acknowledged in order (0x87 for the denied one), delivered in order per topic,
    the first one that waited included, and the plugin is asked once per (client, topic)."""
    delay = 0.2
    bt = env.start(plugin_config({"TopicAuthorizer": {
        "slow": "publish", "delay": delay, "deny_publish": "ord/deny"}}))
    s, _ = env.raw_connect(unique_id("ords-"))
    s.subscribe5(("ord/#", 1))
    pub_id = unique_id("ordp-")
    pub, _ = env.raw_connect(pub_id)
    topics = ["ord/a", "ord/b", "ord/a", "ord/deny", "ord/b", "ord/c", "ord/a", "ord/c"]
    items = [(t, str(i).encode()) for i, t in enumerate(topics)]
    began = time.monotonic()
    pids = burst(pub, items)
    acks = [pub.expect(Puback) for _ in pids]
    assert time.monotonic() - began >= delay - 0.02
    assert [a.packet_id for a in acks] == pids
    assert [a.reason_code for a in acks] == [0x87 if t == "ord/deny" else 0 for t in topics]

    got = s.publishes(7)
    assert by_topic(got) == {"ord/a": [b"0", b"2", b"6"], "ord/b": [b"1", b"4"],
                             "ord/c": [b"5", b"7"]}
    asked = Counter(c[2] for c in plugin(bt, sp.TopicAuthorizer).calls
                    if c[0] == pub_id and c[1] == "publish")
    assert asked == {"ord/a": 1, "ord/b": 1, "ord/deny": 1, "ord/c": 1}


# -- 4. authorize SUBSCRIBE ------------------------------------------------------------------------

def test_subscribe_denied_filter_gets_0x87_v5_and_0x80_311_others_granted(env: Env) -> None:
    """The plugin denies one filter of a SUBSCRIBE: SUBACK 0x87 (MQTT 5) / 0x80 (3.1.1) for
    that filter, the granted QoS for the others; the denied filter brings no message."""
    env.start(plugin_config({"TopicAuthorizer": {"deny_subscribe": "sd/deny"}}))
    s5, _ = env.raw_connect(unique_id("sd5-"))
    assert s5.subscribe5(("sd/ok", 1), ("sd/deny/#", 1), ("sd/+/x", 2)).return_codes == [
        1, 0x87, 2]
    s3 = env.raw3()
    assert s3.connect(unique_id("sd3-")).return_code == 0
    assert s3.subscribe(("sd/ok", 1), ("sd/deny/#", 0), ("sd/other", 2)) == [1, 0x80, 2]
    pub, _ = env.raw_connect(unique_id("sdp-"))
    pub.publish5("sd/deny/y", b"no", 1)
    pub.publish5("sd/ok", b"yes", 1)
    for s in (s5, s3):
        m = s.expect(Publish)
        assert (m.topic, m.payload) == ("sd/ok", b"yes")


def test_async_subscribe_decision_holds_the_subscribe_and_later_packets_in_order(
        env: Env) -> None:
    """Subscribe decisions answered after 0.2 s: SUBSCRIBE, PUBLISH, SUBSCRIBE (one filter
    denied), PUBLISH, PUBLISH, PINGREQ sent in one write are handled in that order: each
    PUBLISH comes back to its sender through the subscription made just before it, the
    denied filter brings nothing, and nothing is answered before the first decision."""
    delay = 0.2
    bt = env.start(plugin_config({"TopicAuthorizer": {
        "slow": "subscribe", "delay": delay, "deny_subscribe": "sh/deny"}}))
    cid = unique_id("sh-")
    c, _ = env.raw_connect(cid)
    began = time.monotonic()
    c.send(Subscribe(1, [Subscription("sh/a", 1)]),
           Publish("sh/a", b"m1"),
           Subscribe(2, [Subscription("sh/b", 1), Subscription("sh/deny", 1)]),
           Publish("sh/b", b"m2"),
           Publish("sh/deny", b"m3"),
           Pingreq())
    first = c.recv()
    assert time.monotonic() - began >= delay - 0.02
    got = [first] + [c.recv() for _ in range(4)]
    assert isinstance(got[0], Suback) and (got[0].packet_id, got[0].return_codes) == (1, [1])
    assert isinstance(got[1], Publish) and (got[1].topic, got[1].payload) == ("sh/a", b"m1")
    assert isinstance(got[2], Suback) and (got[2].packet_id, got[2].return_codes) == (
        2, [1, 0x87])
    assert isinstance(got[3], Publish) and (got[3].topic, got[3].payload) == ("sh/b", b"m2")
    assert isinstance(got[4], Pingresp), got[4]
    asked = Counter(t for who, action, t in plugin(bt, sp.TopicAuthorizer).calls
                    if who == cid and action == "subscribe")
    assert asked == {"sh/a": 1, "sh/b": 1, "sh/deny": 1}


# -- 5. authorize RECEIVE --------------------------------------------------------------------------

def test_receive_denied_topic_is_not_delivered_to_that_subscriber(env: Env) -> None:
    """A subscriber to '#' the plugin denies rx/secret/... gets the other topics only;
    another subscriber to '#' gets everything."""
    bt = env.start(plugin_config({"TopicAuthorizer": {"deny_receive": "rx-:rx/secret"}}))
    denied_id = unique_id("rx-")
    denied, _ = env.raw_connect(denied_id)
    denied.subscribe5(("#", 1))
    other, _ = env.raw_connect(unique_id("ok-"))
    other.subscribe5(("#", 1))
    pub, _ = env.raw_connect(unique_id("rxp-"))
    pub.publish5("rx/secret/1", b"s", 1)
    pub.publish5("rx/public", b"p", 1)
    m = denied.next_publish()
    assert (m.topic, m.payload) == ("rx/public", b"p")  # the secret one came before, or never
    assert [(m.topic, m.payload) for m in other.publishes(2)] == [
        ("rx/secret/1", b"s"), ("rx/public", b"p")]
    assert (denied_id, "receive", "rx/secret/1") in plugin(bt, sp.TopicAuthorizer).calls


def test_async_receive_decision_delivers_first_message_after_answer_in_order(
        env: Env) -> None:
    """Receive decisions answered after 0.25 s: the publisher is acknowledged as usual, the
    subscriber gets the first message of each topic once its answer came and
    the later ones behind it, in order; the denied topic never; one question per topic."""
    delay = 0.25
    bt = env.start(plugin_config({"TopicAuthorizer": {
        "slow": "receive", "delay": delay, "deny_receive": "rxa-:rxa/deny"}}))
    auth = plugin(bt, sp.TopicAuthorizer)
    sid = unique_id("rxa-")
    s, _ = env.raw_connect(sid)
    s.subscribe5(("rxa/#", 1))
    pub, _ = env.raw_connect(unique_id("rxap-"))
    topics = ["rxa/x", "rxa/x", "rxa/deny", "rxa/y", "rxa/x", "rxa/y"]
    began = time.monotonic()
    pids = burst(pub, [(t, str(i).encode()) for i, t in enumerate(topics)])
    acks = [pub.expect(Puback) for _ in pids]
    assert [a.reason_code for a in acks] == [0] * len(topics)
    got = s.publishes(5)
    assert time.monotonic() - began >= delay - 0.02
    assert by_topic(got) == {"rxa/x": [b"0", b"1", b"4"], "rxa/y": [b"3", b"5"]}
    # the denied one: answered (and dropped) before this marker is even read
    wait_until(lambda: any(a[:3] == (sid, "receive", "rxa/deny") for a in auth.answered),
               what="the answer for rxa/deny")
    pub.publish5("rxa/x", b"marker", 1)
    m = s.next_publish()
    assert (m.topic, m.payload) == ("rxa/x", b"marker")
    asked = Counter(t for who, action, t in auth.calls if who == sid and action == "receive")
    assert asked == {"rxa/x": 1, "rxa/deny": 1, "rxa/y": 1}


def test_retained_message_on_subscribe_respects_receive_denial(env: Env) -> None:
    """A retained message on a topic the plugin denies a client to receive is not sent to it
    when it subscribes (as a live message on that topic is not); the others are."""
    env.start(plugin_config({"TopicAuthorizer": {"deny_receive": "rr-:rr/secret"}}))
    pub, _ = env.raw_connect(unique_id("rrp-"))
    pub.publish5("rr/secret", b"retained secret", 1, retain=True)
    pub.publish5("rr/public", b"retained public", 1, retain=True)
    s, _ = env.raw_connect(unique_id("rr-"))
    s.subscribe5(("rr/#", 1))
    pub.publish5("rr/secret", b"live secret", 1)
    pub.publish5("rr/marker", b"end", 1)
    got = []
    while not got or got[-1].topic != "rr/marker":
        got.append(s.next_publish())
    assert [(m.topic, m.payload) for m in got] == [
        ("rr/public", b"retained public"), ("rr/marker", b"end")]


def test_async_receive_decision_for_retained_message_keeps_it_before_live_ones(
        env: Env) -> None:
    """Receive decisions answered after 0.25 s: on SUBSCRIBE the SUBACK comes at once, the
    retained message once its answer came, and a live message on its topic published right
    after the SUBACK comes behind it; a denied retained message never comes."""
    delay = 0.25
    env.start(plugin_config({"TopicAuthorizer": {
        "slow": "receive", "delay": delay, "deny_receive": "rta-:rta/deny"}}))
    pub, _ = env.raw_connect(unique_id("rtap-"))
    pub.publish5("rta/x", b"old", 1, retain=True)
    pub.publish5("rta/deny", b"never", 1, retain=True)
    s, _ = env.raw_connect(unique_id("rta-"))
    began = time.monotonic()
    assert s.subscribe5(("rta/#", 1)).return_codes == [1]
    pub.publish5("rta/x", b"live", 1)
    first = s.next_publish()
    assert time.monotonic() - began >= delay - 0.02
    assert (first.topic, first.payload, first.retain) == ("rta/x", b"old", True)
    second = s.next_publish()
    assert (second.topic, second.payload, second.retain) == ("rta/x", b"live", False)
    pub.publish5("rta/x", b"marker", 1)  # every answer is in: the denied one came before, or never
    assert s.next_publish().payload == b"marker"


def test_subscribe_with_more_filters_than_the_answer_cache_is_answered(env: Env) -> None:
    """A SUBSCRIBE with CACHE_PER_CLIENT + 6 filters, each decided asynchronously (0.05 s) and
    allowed: one SUBACK granting them all, each filter asked about a bounded number of times."""
    bt = env.start(plugin_config({"TopicAuthorizer": {"slow": "subscribe", "delay": 0.05}}))
    auth = plugin(bt, sp.TopicAuthorizer)
    c, _ = env.raw_connect(unique_id("cch-"))
    n = CACHE_PER_CLIENT + 6
    try:
        ack = c.subscribe5(*[(f"cch/{i}", 0) for i in range(n)], timeout=2.0)
    except TimeoutError:
        pytest.fail(f"no SUBACK within 2 s; the plugin was asked {len(auth.calls)} times "
                    f"about {n} filters")
    assert ack.return_codes == [0] * n
    assert len(auth.calls) <= 2 * n


def test_will_to_a_topic_the_plugin_denies_is_not_published(env: Env) -> None:
    """A client may not publish to wl/deny/...: nor does its will (the broker treats a will
    as "a PUBLISH like any other" for its ACL file)."""
    env.start(plugin_config({"TopicAuthorizer": {"deny_publish": "wl/deny"}}))
    s, _ = env.raw_connect(unique_id("wls-"))
    s.subscribe5(("wl/#", 1))
    wid = unique_id("wlw-")
    w, _ = env.raw_connect(wid, will=Will("wl/deny/will", b"last words", 1))
    assert w.publish5("wl/deny/x", b"no", 1).reason_code == 0x87  # type: ignore[union-attr]
    w.abort()
    wait_until(lambda: not env.connected(wid), what="the broker saw the connection end")
    pub, _ = env.raw_connect(unique_id("wlp-"))
    pub.publish5("wl/marker", b"end", 1)
    m = s.next_publish()
    assert (m.topic, m.payload) == ("wl/marker", b"end")


# -- 6. on_message ---------------------------------------------------------------------------------

def test_on_message_changed_topic_and_payload_is_what_subscribers_get(env: Env) -> None:
    """on_message returning dataclasses.replace(message, topic=..., payload=...): subscribers
    get the changed message, never the original."""
    bt = env.start(plugin_config({"Rewriter": {}}))
    s, _ = env.raw_connect(unique_id("rws-"))
    s.subscribe5(("rw/#", 1))
    pid = unique_id("rwp-")
    pub, _ = env.raw_connect(pid)
    pub.publish5("rw/in/t", b"hello", 1)
    pub.publish5("rw/plain", b"as is", 1)
    assert [(m.topic, m.payload) for m in s.publishes(2)] == [
        ("rw/out/t", b"HELLO"), ("rw/plain", b"as is")]
    assert (pid, "rw/in/t", b"hello") in plugin(bt, sp.Rewriter).seen


def test_on_message_drop_still_completes_qos1_and_qos2_flows(env: Env) -> None:
    """on_message returning None: the message goes nowhere, yet a QoS 1 publisher gets PUBACK
    0x00 and a QoS 2 one PUBREC 0x00 then PUBCOMP (MQTT 5), a 3.1.1 QoS 2 flow completes."""
    env.start(plugin_config({"Rewriter": {}}))
    s, _ = env.raw_connect(unique_id("rds-"))
    s.subscribe5(("rw/#", 2))
    pub, _ = env.raw_connect(unique_id("rdp-"))
    assert pub.publish5("rw/drop/1", b"x", 1).reason_code == 0x00  # type: ignore[union-attr]
    # publish5 QoS 2 sends PUBREL and waits for the PUBCOMP itself
    assert pub.publish5("rw/drop/2", b"x", 2).reason_code == 0x00  # type: ignore[union-attr]
    p3 = env.raw3()
    assert p3.connect(unique_id("rdp3-")).return_code == 0
    p3.publish("rw/drop/3", b"x", 2)  # asserts PUBREC and PUBCOMP
    p3.publish("rw/drop/4", b"x", 1)  # asserts PUBACK
    pub.publish5("rw/kept", b"end", 1)
    m = s.next_publish()
    assert (m.topic, m.payload) == ("rw/kept", b"end")


def test_on_message_that_raises_leaves_the_message_unchanged_and_is_counted(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """on_message raising: the message is delivered as published, plugin_errors counts it
    ($SYS/broker/plugins/errors 1) and the log names the plugin."""
    caplog.set_level(logging.ERROR, logger="mqttbroker.plugins")
    bt = env.start(plugin_config({"Rewriter": {}}, sys_interval=0.1))
    w = sys_watcher(env)
    s, _ = env.raw_connect(unique_id("rfs-"))
    s.subscribe5(("rw/#", 1))
    pub, _ = env.raw_connect(unique_id("rfp-"))
    assert pub.publish5("rw/fail/1", b"same", 1).reason_code == 0  # type: ignore[union-attr]
    m = s.next_publish()
    assert (m.topic, m.payload) == ("rw/fail/1", b"same")
    wait_sys(w, "errors", 1)
    assert counters(bt) == (1, 0)
    assert len(plugin_log(caplog, "Rewriter", "on_message")) == 1


def test_on_message_returning_a_wildcard_topic_is_ignored_and_counted(env: Env) -> None:
    """on_message returning a message whose topic has a wildcard: ignored (the original goes
    out unchanged), counted as a plugin error in /metrics."""
    bt = env.start(plugin_config({"Rewriter": {}}, http=True))
    s, _ = env.raw_connect(unique_id("rws-"))
    s.subscribe5(("rw/#", 1))
    pub, _ = env.raw_connect(unique_id("rwp-"))
    pub.publish5("rw/wild/1", b"intact", 1)
    m = s.next_publish()
    assert (m.topic, m.payload) == ("rw/wild/1", b"intact")
    scrape = Http(bt).metrics()
    assert scrape.get("mqttbroker_plugin_errors_total") == 1
    assert counters(bt) == (1, 0)


# -- 7. events -------------------------------------------------------------------------------------

def test_events_report_connect_subscribe_unsubscribe_retained_disconnect_in_order(
        env: Env) -> None:
    """on_connect (id, user name, listener, protocol), on_subscribe (filter, granted QoS),
    on_unsubscribe, on_retained (set, then cleared: None), on_disconnect: in order, with the
    right client ids and filters."""
    bt = env.start(plugin_config({"EventLog": None}))
    events = plugin(bt, sp.EventLog)
    a, b = unique_id("eva-"), unique_id("evb-")
    ra, _ = env.raw_connect(a, username="ann")
    assert ra.subscribe5(("ev/+", 1), ("ev/x/#", 0)).return_codes == [1, 0]
    ra.unsubscribe5("ev/+")
    rb = env.raw3()
    assert rb.connect(b).return_code == 0
    rb.publish("ev/r", b"keep", 1, retain=True)
    rb.publish("ev/r", b"", 1, retain=True)
    rb.disconnect()
    wait_until(lambda: ("disconnect", b) in events.names(), what=f"{b} disconnected")
    ra.disconnect()
    expected = [
        ("broker_start",),
        ("connect", a, "ann", "default", 5),
        ("subscribe", a, "ev/+", 1),
        ("subscribe", a, "ev/x/#", 0),
        ("unsubscribe", a, "ev/+"),
        ("connect", b, None, "default", 4),
        ("retained", "ev/r", b"keep"),
        ("retained", "ev/r", None),
        ("disconnect", b),
        ("disconnect", a),
    ]
    wait_until(lambda: len(events.events) >= len(expected), what="the events")
    assert events.names() == expected


def test_on_session_expired_when_the_expiry_ends_not_at_disconnect(env: Env) -> None:
    """A session with Session Expiry Interval 1 s: on_session_expired comes about 1 s after
    its client's on_disconnect, not with it; a clean session's end is not reported."""
    bt = env.start(plugin_config({"EventLog": None}))
    events = plugin(bt, sp.EventLog)
    cid, clean = unique_id("exp-"), unique_id("cln-")
    r, _ = env.raw_connect(cid, properties={P.SESSION_EXPIRY_INTERVAL: 1})
    r.subscribe5(("exp/t", 1))
    r.disconnect()
    rc = env.raw3()
    assert rc.connect(clean).return_code == 0
    rc.disconnect()
    wait_until(lambda: ("session_expired", cid) in events.names(), what="the session expired")
    times = {e[:-1]: e[-1] for e in events.events}
    assert times[("session_expired", cid)] - times[("disconnect", cid)] >= 0.9
    assert ("disconnect", clean) in times
    assert ("session_expired", clean) not in times
    assert not env.has_session(cid)


def test_on_broker_start_comes_first_and_on_broker_stop_last(env: Env) -> None:
    """on_broker_start before any client's event; at shutdown the connected client's
    on_disconnect, then on_broker_stop, last."""
    bt = env.start(plugin_config({"EventLog": None}))
    events = plugin(bt, sp.EventLog)
    assert events.names() == [("broker_start",)]
    cid = unique_id("stp-")
    env.raw_connect(cid)
    wait_until(lambda: len(events.events) == 2, what="on_connect")
    bt.stop()
    assert events.names() == [("broker_start",), ("connect", cid, None, "default", 5),
                              ("disconnect", cid), ("broker_stop",)]


def test_failing_events_are_counted_not_fatal(env: Env) -> None:
    """An async on_connect that raises and a sync on_subscribe that raises: each failure is
    counted ($SYS/broker/plugins/errors), the clients stay connected and are served."""
    bt = env.start(plugin_config({"FailingEvents": None}, sys_interval=0.1))
    w = sys_watcher(env)  # its connect and subscribe fail: 2
    c = env.paho(unique_id("fev-"))  # 3
    assert c.subscribe(("fev/t", 1)) == [1]  # 4
    assert c.publish("fev/t", b"still here", 1) == 0
    assert c.messages.wait_for(1)[0].payload == b"still here"
    wait_sys(w, "errors", 4)
    assert counters(bt) == (4, 0)
    assert len(plugin(bt, sp.FailingEvents).connects) == 2


# -- 8. PluginContext.publish ----------------------------------------------------------------------

def test_plugin_context_publish_reaches_subscribers_through_on_message(env: Env) -> None:
    """A plugin publishing from on_connect (PluginContext.publish): the greeting reaches a
    subscriber, after going through the other plugins' on_message as the broker's own
    message (client None)."""
    bt = env.start(plugin_config({"Greeter": {"prefix": "greet/", "qos": 1}, "Rewriter": {}}))
    s, _ = env.raw_connect(unique_id("grs-"))
    s.subscribe5(("greet/#", 1))
    gid = unique_id("grg-")
    env.raw_connect(gid)
    m = s.next_publish()
    assert (m.topic, m.payload, m.qos) == (f"greet/{gid}", f"hello {gid}".encode(), 1)
    assert (None, f"greet/{gid}", f"hello {gid}".encode()) in plugin(bt, sp.Rewriter).seen


# -- 9. no plugins ---------------------------------------------------------------------------------

def test_broker_without_plugins_serves_and_counts_no_plugin_errors(env: Env) -> None:
    """No plugins section: publish/subscribe as ever, and the plugin counters are there at 0
    ($SYS/broker/plugins/errors and timeouts, /metrics)."""
    cfg = base_config()
    cfg["sys_interval"] = 0.1
    cfg["http"] = {"enabled": True, "bind": "127.0.0.1:0"}
    bt = env.start(cfg)
    assert bt.broker is not None and not bt.broker.plugins
    w = sys_watcher(env)
    wait_sys(w, "errors", 0)
    wait_sys(w, "timeouts", 0)
    s, _ = env.raw_connect(unique_id("nps-"))
    s.subscribe5(("np/#", 1))
    pub, _ = env.raw_connect(unique_id("npp-"))
    assert pub.publish5("np/t", b"x", 1).reason_code == 0  # type: ignore[union-attr]
    assert s.next_publish().payload == b"x"
    scrape = Http(bt).metrics()
    assert scrape.get("mqttbroker_plugin_errors_total") == 0
    assert scrape.get("mqttbroker_plugin_timeouts_total") == 0
