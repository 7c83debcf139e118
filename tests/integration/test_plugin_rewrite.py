"""TopicRewrite (mqttbroker/plugins/rewrite.py, docs/plugins.md "Topic rewrite"): EMQX's
``rewrite`` rules against the real broker over real sockets, with paho-mqtt clients.

* publish rules rewrite the topic a PUBLISH is delivered on, ``$N`` filled from the regular
  expression's groups; subscribe rules rewrite SUBSCRIBE and UNSUBSCRIBE filters (the inner
  filter of a shared subscription), so a subscriber gets what is published to the new topic,
  retained messages included, and can unsubscribe by the filter it sent; ``all`` does both;
* the first rule whose filter and expression both match wins, in configuration order; a topic
  no rule matches (or whose filter matches but whose expression does not) is left as it is;
* a rewritten filter that is not well-formed is ignored (the filter stays, counted as a plugin
  error): the host's check of ``on_subscribe_filter``;
* every bad rule is a configuration error naming the file, the plugin entry's line and the rule.

A watcher subscribed to ``#`` sees every message on the topic it was finally published to
(``#`` itself matches no rule's filter). Every wait is bounded.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.config import load_config
from mqttbroker.errors import ConfigError
from mqttbroker.plugins.host import load_classes
from mqttbroker.plugins.rewrite import TopicRewrite
from tests.conftest import BrokerThread, base_config

from .helpers import unique_id
from .v5helpers import Env, Paho5, SubscribeOptions, no_message

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "mqttbroker.plugins.rewrite.TopicRewrite"


def rule(action: str, source: str, expression: str, dest: str) -> dict[str, str]:
    return {"action": action, "source_topic": source, "re": expression, "dest_topic": dest}


RULES = [
    # $N: two groups, swapped
    rule("publish", "old/#", r"^old/(\w+)/(\w+)$", "new/$2/$1"),
    # order: both filters match order/a/...; the first rule's expression decides
    rule("publish", "order/#", r"^order/a/(.+)$", "first/$1"),
    rule("publish", "order/#", r"^order/(.+)$", "second/$1"),
    rule("subscribe", "sub/#", r"^sub/(.+)$", "real/$1"),
    rule("publish", "pub/#", r"^pub/(.+)$", "moved/$1"),
    rule("all", "both/#", r"^both/(.+)$", "b2/$1"),
    rule("publish", "me/#", r"^me/(.+)$", "users/${clientid}/$1"),
    # a capture that makes a malformed filter for w/#: "#/end"
    rule("subscribe", "w/#", r"^w/(.+)$", "$1/end"),
]


def rewrite_config(rules: list[dict[str, str]] = RULES) -> dict[str, Any]:
    cfg = base_config()
    cfg["plugins"] = {PLUGIN: {"rules": rules}}
    return cfg


def plugin_errors(bt: BrokerThread) -> int:
    b = bt.broker
    assert b is not None
    return bt.call(lambda: b.metrics.plugin_errors)


@pytest.fixture
def watched(env: Env) -> tuple[Env, Paho5, Paho5]:
    """A broker with RULES, a publisher and a watcher subscribed to ``#``."""
    env.start(rewrite_config())
    watcher = env.paho(unique_id("watch-"))
    assert watcher.subscribe(("#", 1)) == [1]
    return env, env.paho(unique_id("pub-")), watcher


def delivered(w: Paho5, topic: str, payload: bytes) -> None:
    """``w`` gets ``payload`` on ``topic`` (bounded wait)."""
    m = w.messages.wait_topic(topic)
    assert m.payload == payload, m


# -- publish -----------------------------------------------------------------------------------------

def test_publish_rule_substitutes_groups_into_dest_topic(watched: tuple[Env, Paho5, Paho5]
                                                         ) -> None:
    """old/a/b -> new/b/a: $1 and $2 are the expression's groups; the message keeps its
    payload and QoS, and the original topic is never delivered."""
    _, pub, watcher = watched
    assert pub.publish("old/a/b", b"swap", qos=1) == 0
    m = watcher.messages.wait_topic("new/b/a")
    assert (m.payload, m.qos) == (b"swap", 1)
    assert watcher.messages.topic("old/a/b") == []


def test_rules_apply_in_order_first_whose_filter_and_expression_match_wins(
        watched: tuple[Env, Paho5, Paho5]) -> None:
    """order/a/x matches the first order/# rule (first/x); order/b/x matches its filter but
    not its expression, so the second rule applies (second/b/x)."""
    _, pub, watcher = watched
    pub.publish("order/a/x", b"1", qos=1)
    pub.publish("order/b/x", b"2", qos=1)
    delivered(watcher, "first/x", b"1")
    delivered(watcher, "second/b/x", b"2")
    assert {m.topic for m in watcher.messages.messages} == {"first/x", "second/b/x"}


def test_topics_no_rule_rewrites_are_delivered_as_published(
        watched: tuple[Env, Paho5, Paho5]) -> None:
    """A topic no rule's filter matches, and one whose filter matches but whose expression
    does not (old/onlyone), reach subscribers unchanged; so does a topic that only a
    subscribe rule matches (sub/t: publish is not rewritten by it)."""
    _, pub, watcher = watched
    for topic in ("other/t", "old/onlyone", "sub/t"):
        pub.publish(topic, topic.encode(), qos=1)
    msgs = watcher.messages.wait_for(3)
    assert [(m.topic, m.payload) for m in msgs] == [
        ("other/t", b"other/t"), ("old/onlyone", b"old/onlyone"), ("sub/t", b"sub/t")]


def test_clientid_variable_is_the_publishers(watched: tuple[Env, Paho5, Paho5]) -> None:
    """``${clientid}`` in dest_topic is the publishing client's id (EMQX's variable)."""
    env, _, watcher = watched
    cid = unique_id("me-")
    env.paho(cid).publish("me/status", b"up", qos=1)
    delivered(watcher, f"users/{cid}/status", b"up")


# -- subscribe ---------------------------------------------------------------------------------------

def test_subscribe_rule_rewrites_the_filter_not_published_topics(
        watched: tuple[Env, Paho5, Paho5]) -> None:
    """A subscription to sub/t is one to real/t: it gets what is published to real/t (on
    real/t), not what is published to sub/t (a subscribe rule does not touch PUBLISH)."""
    env, pub, watcher = watched
    s = env.paho(unique_id("s-"))
    assert s.subscribe(("sub/t", 1)) == [1]
    pub.publish("sub/t", b"not for s", qos=1)
    pub.publish("real/t", b"for s", qos=1)
    delivered(s, "real/t", b"for s")
    watcher.messages.wait_for(2)  # both went out, so s's view is complete
    assert [m.payload for m in s.messages.messages] == [b"for s"]


def test_publish_rule_does_not_rewrite_subscriptions(watched: tuple[Env, Paho5, Paho5]) -> None:
    """pub/# is a publish rule: a subscription to pub/t stays pub/t, so it misses what is
    published to pub/t (moved to moved/t) and a subscription to moved/t gets it."""
    env, pub, _ = watched
    s = env.paho(unique_id("s-"))
    assert s.subscribe(("pub/t", 1), ("moved/t", 1)) == [1, 1]
    pub.publish("pub/t", b"m", qos=1)
    delivered(s, "moved/t", b"m")
    assert no_message(s.messages, 0.2, lambda m: m.topic == "pub/t")


def test_all_rule_rewrites_both_publish_and_subscribe(watched: tuple[Env, Paho5, Paho5]) -> None:
    """both/t is b2/t for a subscriber and for a publisher alike."""
    env, pub, watcher = watched
    s = env.paho(unique_id("s-"))
    assert s.subscribe(("both/t", 1)) == [1]
    pub.publish("both/t", b"x", qos=1)
    delivered(s, "b2/t", b"x")
    delivered(watcher, "b2/t", b"x")
    assert watcher.messages.topic("both/t") == []


def test_unsubscribe_filter_is_rewritten_like_the_subscribe(
        watched: tuple[Env, Paho5, Paho5]) -> None:
    """UNSUBSCRIBE sub/t removes the real/t subscription SUBSCRIBE sub/t made (UNSUBACK 0x00,
    not 0x11 No subscription existed); nothing arrives on real/t afterwards."""
    env, pub, watcher = watched
    s = env.paho(unique_id("s-"))
    assert s.subscribe(("sub/t", 1)) == [1]
    assert s.unsubscribe("sub/t") == [0x00]
    pub.publish("real/t", b"after", qos=1)
    watcher.messages.wait_topic("real/t")
    assert no_message(s.messages, 0.2)


def test_shared_subscription_rewrites_only_its_inner_filter(
        watched: tuple[Env, Paho5, Paho5]) -> None:
    """$share/g/sub/t is $share/g/real/t: the group prefix is kept, the filter rewritten."""
    env, pub, _ = watched
    s = env.paho(unique_id("s-"))
    assert s.subscribe(("$share/g/sub/t", 1)) == [1]
    pub.publish("real/t", b"shared", qos=1)
    delivered(s, "real/t", b"shared")
    assert s.unsubscribe("$share/g/sub/t") == [0x00]


def test_retained_messages_follow_the_rewritten_filter(watched: tuple[Env, Paho5, Paho5]) -> None:
    """A subscription to sub/t gets real/t's retained message (RETAIN 1)."""
    env, pub, _ = watched
    pub.publish("real/t", b"kept", qos=1, retain=True)
    s = env.paho(unique_id("s-"))
    s.subscribe(("sub/t", SubscribeOptions(qos=1)))
    m = s.messages.wait_topic("real/t")
    assert (m.payload, m.retain) == (b"kept", True)


def test_rewritten_filter_that_is_not_well_formed_is_ignored_and_counted(
        watched: tuple[Env, Paho5, Paho5], caplog: pytest.LogCaptureFixture) -> None:
    """w/# would become #/end: the host ignores it (logged, counted in plugin_errors) and
    the client is subscribed to w/# as it asked; w/a becomes a/end as the rule says."""
    caplog.set_level(logging.ERROR, logger="mqttbroker.plugins")
    env, pub, _ = watched
    before = plugin_errors(env.bt)
    s = env.paho(unique_id("s-"))
    assert s.subscribe(("w/#", 1), ("w/a", 1)) == [1, 1]
    assert plugin_errors(env.bt) == before + 1
    assert any(r.getMessage() == f"plugin {PLUGIN} failed in on_subscribe_filter"
               for r in caplog.records)
    pub.publish("w/x", b"1", qos=1)
    pub.publish("a/end", b"2", qos=1)
    msgs = s.messages.wait_for(2)
    assert sorted((m.topic, m.payload) for m in msgs) == [("a/end", b"2"), ("w/x", b"1")]


# -- configuration -----------------------------------------------------------------------------------

BAD_RULES = [
    pytest.param(rule("publish", "a/#", "(", "b"),
                 "rules[0]: re '(' is not a regular expression: missing ), unterminated "
                 "subpattern at position 0", id="bad-regex"),
    pytest.param(rule("move", "a/#", "a", "b"),
                 "rules[0]: action must be one of publish, subscribe, all, got 'move'",
                 id="bad-action"),
    pytest.param(rule("publish", "a/#/b", "a", "b"),
                 "rules[0]: source_topic 'a/#/b' is not a topic filter", id="bad-filter"),
    pytest.param(rule("publish", "a/#", "^a/(.+)$", "b/$2"),
                 "rules[0]: dest_topic 'b/$2' uses $2 but re '^a/(.+)$' has $1..$1",
                 id="group-out-of-range"),
    pytest.param(rule("all", "a/#", "a", "b/#"),
                 "rules[0]: dest_topic 'b/#' has a wildcard, but all rules make topic names",
                 id="wildcard-in-published-topic"),
    pytest.param(rule("subscribe", "a/#", "^a/(.+)$", "b/#/$1"),
                 "rules[0]: dest_topic 'b/#/$1' is not a topic filter", id="bad-dest-filter"),
    pytest.param({"action": "publish", "source_topic": "a/#", "re": "a"},
                 "rules[0]: missing 'dest_topic'", id="missing-key"),
    pytest.param({**rule("publish", "a/#", "a", "b"), "qos": 1},
                 "rules[0]: unknown key 'qos'", id="unknown-key"),
]


def config_file(tmp_path: Path, rules_yaml: str) -> Path:
    path = tmp_path / "rewrite.yaml"
    path.write_text("listeners:\n"
                    "  default:\n"
                    "    type: tcp\n"
                    "    bind: 127.0.0.1:0\n"
                    "plugins:\n"
                    f"  {PLUGIN}:\n"
                    "    rules:\n"
                    + rules_yaml)
    return path


def yaml_rule(r: dict[str, str]) -> str:
    items = [f"{k}: '{v}'" for k, v in r.items()]
    return "      - " + "\n        ".join(items) + "\n"


@pytest.mark.parametrize(("bad", "problem"), BAD_RULES)
def test_bad_rule_is_a_config_error_with_file_and_line(
        tmp_path: Path, bad: dict[str, str], problem: str) -> None:
    """A bad rule (after a good one: reported as rules[1]) fails when the plugin's options are
    built, as ``FILE:6: plugins.<path>: bad options: rules[1]: ...`` (line 6: the plugin's
    entry)."""
    path = config_file(tmp_path, yaml_rule(rule("publish", "ok/#", "ok", "fine"))
                       + yaml_rule(bad))
    with pytest.raises(ConfigError) as err:
        load_classes(load_config(str(path)).plugins, str(path))
    text = str(err.value)
    assert text.startswith(f"{path}:6: plugins.{PLUGIN}: bad options: "), text
    assert problem.replace("rules[0]", "rules[1]") in text, text


def test_check_config_reports_a_bad_rule(tmp_path: Path) -> None:
    """``mqttbroker check-config`` prints the same line and fails; a file of good rules
    passes."""
    bad = config_file(tmp_path, yaml_rule(rule("publish", "a/#", "(", "b")))
    result = subprocess.run([sys.executable, "-m", "mqttbroker", "check-config", str(bad)],
                            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout.startswith(f"{bad}:6: plugins.{PLUGIN}: bad options: rules[0]: re "
                                    "'(' is not a regular expression"), result.stdout
    good = tmp_path / "good.yaml"
    good.write_text(bad.read_text().replace("'('", "'^a/(.+)$'"))
    result = subprocess.run([sys.executable, "-m", "mqttbroker", "check-config", str(good)],
                            cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode, result.stdout) == (0, f"{good}: OK\n"), result.stderr


def test_rules_must_be_a_list(env: Env) -> None:
    """``rules`` that is not a list, or missing, is refused by Broker({...}) too."""
    for options in ({"rules": {"action": "all"}}, {}):
        cfg = base_config()
        cfg["plugins"] = {PLUGIN: options}
        with pytest.raises(ConfigError, match=f"plugins.{PLUGIN}: bad options: "):
            env.start(cfg)


def test_plugin_overrides_only_the_hooks_it_needs(watched: tuple[Env, Paho5, Paho5]) -> None:
    """The host calls TopicRewrite for messages and filters, nothing else."""
    env, _, _ = watched
    b = env.bt.broker
    assert b is not None
    (p,) = b.plugins.plugins
    assert isinstance(p, TopicRewrite)
    assert b.plugins.message_hooks == [p] and b.plugins.filter_hooks == [p]
    assert not b.plugins.authorizers and not any(b.plugins.events.values())
