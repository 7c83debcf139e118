"""config/bridges.py: the ``bridges`` section (issue 16, point 1: configuration only).

Every problem names FILE:LINE: bridges.<name>.<key>...: problem, like the other sections.
"""

from __future__ import annotations

import dataclasses
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mqttbroker.broker import Broker
from mqttbroker.cli import cli
from mqttbroker.config import (
    BridgeConfig,
    BridgeQueue,
    BridgeTLS,
    BridgeTopic,
    Config,
    load_config,
)
from mqttbroker.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

# The example of issue 16, point 1, word for word (but for the TLS file names).
ISSUE_EXAMPLE = """\
bridges:
  cloud:                          # Mosquitto: connection cloud
    addresses: ["cloud.example:8883", "backup.example:8883"]  # tried in order (failover)
    round_robin: false            # true: rotate through addresses
    protocol: mqttv311            # mqttv31 | mqttv311 | mqttv5 (bridge_protocol_version)
    client_id: edge-7             # remote_clientid
    username: edge-7              # remote_username / remote_password (or password-file)
    password: "..."
    clean_session: false          # cleansession
    keepalive: 60
    try_private: true             # 3.x: CONNECT protocol level | 0x80; 5.0: No Local + Retain As Published
    notifications: true           # retained 1/0 on $SYS/broker/connection/<name>/state (local and remote)
    restart_timeout: [5, 60]      # reconnect back-off base and cap, jittered
    tls: {cafile: ca.pem, certfile: edge.crt, keyfile: edge.key, insecure: false}
    topics:                       # Mosquitto: topic pattern direction qos local-prefix remote-prefix
      - {pattern: "sensors/#", direction: out, qos: 1, local_prefix: "", remote_prefix: "site-7/"}
      - {pattern: "commands/#", direction: in, qos: 1, remote_prefix: "site-7/"}
      - {pattern: "shared/#", direction: both, qos: 2}
    queue: {max_messages: 1000000, max_bytes: 1073741824, full_policy: drop_oldest}
"""

MINIMAL = {"addresses": ["cloud.example:8883"], "topics": [{"pattern": "sensors/#"}]}


def write(tmp_path: Path, text: str, name: str = "broker.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_bridge(tmp_path: Path, body: str, name: str = "cloud") -> Path:
    """A config file holding one bridge; the first line of ``body`` is line 3."""
    lines = textwrap.dedent(body).strip("\n")
    return write(tmp_path, f"bridges:\n  {name}:\n" + textwrap.indent(lines, "    ") + "\n")


def issues_of(source: Any) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return [(i.key, i.line, i.problem) for i in info.value.issues]


def only_issue(source: Any) -> tuple[str, int | None, str]:
    found = issues_of(source)
    assert len(found) == 1, found
    return found[0]


def tls_files(tmp_path: Path) -> None:
    for name in ("ca.pem", "edge.crt", "edge.key"):
        (tmp_path / name).write_text("-----BEGIN PLACEHOLDER-----\n")


# --------------------------------------------------------------------------- what parses


def test_issue_example_parses_to_the_values_it_shows(tmp_path: Path) -> None:
    tls_files(tmp_path)
    config = load_config(write(tmp_path, ISSUE_EXAMPLE))
    assert config.bridges == (BridgeConfig(
        name="cloud",
        addresses=(("cloud.example", 8883), ("backup.example", 8883)),
        round_robin=False,
        protocol="mqttv311",
        client_id="edge-7",
        username="edge-7",
        password="...",
        clean_session=False,
        keepalive=60,
        try_private=True,
        notifications=True,
        restart_timeout=(5.0, 60.0),
        tls=BridgeTLS(cafile=str(tmp_path / "ca.pem"), certfile=str(tmp_path / "edge.crt"),
                      keyfile=str(tmp_path / "edge.key"), insecure=False),
        topics=(BridgeTopic("sensors/#", "out", 1, "", "site-7/"),
                BridgeTopic("commands/#", "in", 1, "", "site-7/"),
                BridgeTopic("shared/#", "both", 2, "", "")),
        queue=BridgeQueue(max_messages=1_000_000, max_bytes=1_073_741_824,
                          full_policy="drop_oldest"),
    ),)
    assert config.bridges[0].state_topic == "$SYS/broker/connection/cloud/state"
    # the rest of the config is the built-in defaults
    assert dataclasses.replace(config, bridges=()) == load_config()


def test_password_is_kept_out_of_repr(tmp_path: Path) -> None:
    tls_files(tmp_path)
    bridge = load_config(write(tmp_path, ISSUE_EXAMPLE)).bridges[0]
    assert bridge.password == "..." and "password=" not in repr(bridge)


def test_defaults_are_mosquittos() -> None:
    (bridge,) = load_config({"bridges": {"cloud": MINIMAL}}).bridges
    assert bridge == BridgeConfig(
        name="cloud", addresses=(("cloud.example", 8883),),
        topics=(BridgeTopic("sensors/#"),), client_id=f"{socket.gethostname()}.cloud")
    assert (bridge.round_robin, bridge.protocol, bridge.username, bridge.password,
            bridge.password_file, bridge.clean_session, bridge.keepalive, bridge.try_private,
            bridge.notifications, bridge.restart_timeout, bridge.tls) == (
        False, "mqttv311", None, None, None, False, 60, True, True, (5.0, 60.0), None)
    assert bridge.topics[0] == BridgeTopic(pattern="sensors/#", direction="out", qos=0,
                                           local_prefix="", remote_prefix="")
    assert bridge.queue == BridgeQueue(1_000_000, 1_073_741_824, "drop_oldest")
    assert bridge.max_inflight is None  # the remote's Receive Maximum; 20 for a 3.x remote


@pytest.mark.parametrize("source", [{}, {"bridges": None}, {"bridges": {}}])
def test_no_bridges_is_an_empty_tuple_and_changes_nothing(source: dict[str, Any]) -> None:
    config = load_config(source)
    assert config.bridges == () and config == load_config()
    assert Config(listeners=config.listeners).bridges == ()


def test_several_bridges_keep_their_order() -> None:
    config = load_config({"bridges": {
        "zeta": MINIMAL,
        "alpha": {**MINIMAL, "client_id": "other"},
        "mid-1.x_y": {**MINIMAL, "addresses": ["[::1]:1883", "10.0.0.1:1884"]},
    }})
    assert [b.name for b in config.bridges] == ["zeta", "alpha", "mid-1.x_y"]
    assert config.bridges[2].addresses == (("::1", 1883), ("10.0.0.1", 1884))


@pytest.mark.parametrize(("given", "expected"), [
    ({"protocol": "mqttv5"}, {"protocol": "mqttv5"}),
    ({"protocol": "mqttv50"}, {"protocol": "mqttv5"}),  # Mosquitto's spelling
    ({"protocol": "MQTTv31"}, {"protocol": "mqttv31"}),
    ({"restart_timeout": 10}, {"restart_timeout": (10.0, 10.0)}),  # constant, like Mosquitto
    ({"restart_timeout": [2.5]}, {"restart_timeout": (2.5, 2.5)}),
    ({"restart_timeout": [1, 7200]}, {"restart_timeout": (1.0, 7200.0)}),
    ({"keepalive": 5}, {"keepalive": 5}),
    ({"keepalive": 65535}, {"keepalive": 65535}),
    ({"max_inflight": 1}, {"max_inflight": 1}),
    ({"max-inflight": 65535}, {"max_inflight": 65535}),
    ({"tls": {}}, {"tls": BridgeTLS()}),  # TLS with the system's CAs
    ({"tls": {"insecure": True}}, {"tls": BridgeTLS(insecure=True)}),
    ({"queue": {"full-policy": "Drop-New"}}, {"queue": BridgeQueue(full_policy="drop_new")}),
    ({"queue": None}, {"queue": BridgeQueue()}),
    ({"client-id": "x", "clean-session": True, "round-robin": True, "try-private": False},
     {"client_id": "x", "clean_session": True, "round_robin": True, "try_private": False}),
    ({"password": "p", "protocol": "mqttv5"}, {"password": "p", "protocol": "mqttv5"}),
])
def test_accepted_values(given: dict[str, Any], expected: dict[str, Any]) -> None:
    (bridge,) = load_config({"bridges": {"cloud": {**MINIMAL, **given}}}).bridges
    assert {k: getattr(bridge, k) for k in expected} == expected


@pytest.mark.parametrize(("topic", "expected"), [
    ({"pattern": "#", "direction": "IN", "qos": 2, "local_prefix": "a/", "remote_prefix": "b/"},
     BridgeTopic("#", "in", 2, "a/", "b/")),
    ({"pattern": "t/+", "remote_prefix": "site"}, BridgeTopic("t/+", "out", 0, "", "site")),
    ({"pattern": "$SYS/#", "direction": "both"}, BridgeTopic("$SYS/#", "both")),
])
def test_topics(topic: dict[str, Any], expected: BridgeTopic) -> None:
    (bridge,) = load_config({"bridges": {"b": {**MINIMAL, "topics": [topic]}}}).bridges
    assert bridge.topics == (expected,)


def test_password_file_is_read_and_kept_by_name(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    path = one_bridge(tmp_path, """
        addresses: ["cloud.example:8883"]
        topics: [{pattern: "sensors/#"}]
        username: edge
        password_file: secret
        """)
    (bridge,) = load_config(path).bridges
    assert (bridge.password, bridge.password_file) == (None, str(tmp_path / "secret"))


def test_shipped_bridge_example_loads() -> None:
    (bridge,) = load_config(ROOT / "configs" / "bridge-example.yaml").bridges
    assert (bridge.name, bridge.addresses, bridge.client_id) == (
        "cloud", (("127.0.0.1", 1884),), "edge-1.cloud")
    assert [(t.pattern, t.direction, t.qos, t.remote_prefix) for t in bridge.topics] == [
        ("sensors/#", "out", 1, "site-1/"), ("commands/#", "in", 1, "site-1/")]


# --------------------------------------------------------------------------- what is refused

BASE = 'addresses: ["cloud.example:8883"]\ntopics: [{pattern: "sensors/#"}]\n'
# (lines 3 and 4 of one_bridge's file; a case's own lines start at 5)


@pytest.mark.parametrize(("extra", "issue"), [
    # unknown keys, with a hint
    ("keep_alive: 60", ("bridges.cloud.keep_alive", 5, "unknown key; did you mean 'keepalive'?")),
    ("remote_clientid: x", ("bridges.cloud.remote_clientid", 5,
                            "unknown key; did you mean 'client_id'?")),
    ("queue: {max_msgs: 5}", ("bridges.cloud.queue.max_msgs", 5,
                              "unknown key; did you mean 'max_messages'?")),
    ("tls: {capath: /etc}", ("bridges.cloud.tls.capath", 5,
                             "unknown key (expected one of: cafile, certfile, insecure, keyfile)")),
    # types and ranges
    ("round_robin: 'yes'", ("bridges.cloud.round_robin", 5,
                            "expected true or false, got a string ('yes')")),
    ("protocol: mqttv4", ("bridges.cloud.protocol", 5,
                          "must be one of mqttv31, mqttv311, mqttv5; got 'mqttv4'")),
    ("keepalive: 4", ("bridges.cloud.keepalive", 5, "must be between 5 and 65535, got 4")),
    ("keepalive: 65536", ("bridges.cloud.keepalive", 5, "must be between 5 and 65535, got 65536")),
    ("max_inflight: 0", ("bridges.cloud.max_inflight", 5, "must be between 1 and 65535, got 0")),
    ("keepalive: true", ("bridges.cloud.keepalive", 5, ("expected an integer, got a boolean "
                         "(true; YAML reads yes/no/on/off as booleans)"))),
    ("notifications: 1", ("bridges.cloud.notifications", 5,
                          "expected true or false, got an integer (1)")),
    ("try_private: null", ("bridges.cloud.try_private", 5,
                           "expected true or false, got nothing (null)")),
    ("clean_session: on-off", ("bridges.cloud.clean_session", 5,
                               "expected true or false, got a string ('on-off')")),
    # client id
    ("client_id: ''", ("bridges.cloud.client_id", 5, ("must not be empty: the remote keeps the "
                       "bridge's session under it (leave client_id out for "
                       "'<hostname>.<bridge name>')"))),
    ("client_id: 7", ("bridges.cloud.client_id", 5,
                      "expected a client id as a string, got an integer (7) (quote it: '7')")),
    ('client_id: "a\\0b"', ("bridges.cloud.client_id", 5, "a client id contains a NUL character")),
    # username and password
    ("username: u\npassword: 1234", ("bridges.cloud.password", 6, ("expected a password as a "
                                     "string, got an integer (1234) (quote it: '1234')"))),
    ("password: p", ("bridges.cloud.password", 5, ("a password needs a username in MQTT 3.1 and "
                     "3.1.1 [MQTT-3.1.2-22]; give username (or protocol: mqttv5)"))),
    # restart_timeout
    ("restart_timeout: [60, 5]", ("bridges.cloud.restart_timeout", 5,
                                  "the cap (5 s) must not be lower than the base (60 s)")),
    ("restart_timeout: [0, 5]", ("bridges.cloud.restart_timeout", 5,
                                 "must be greater than 0, got 0")),
    ("restart_timeout: -1", ("bridges.cloud.restart_timeout", 5,
                             "must be greater than 0, got -1")),
    ("restart_timeout: '5'", ("bridges.cloud.restart_timeout", 5,
                              "expected a number, got a string ('5')")),
    ("restart_timeout: [1, 2, 3]", ("bridges.cloud.restart_timeout", 5,
                                    ("expected [base, cap] in seconds, e.g. [5, 60], or one number "
                                    "for a constant delay; got a list of 3"))),
    ("restart_timeout: []", ("bridges.cloud.restart_timeout", 5,
                             ("expected [base, cap] in seconds, e.g. [5, 60], or one number "
                             "for a constant delay; got a list of 0"))),
    # tls
    ("tls: true", ("bridges.cloud.tls", 5, ("expected a mapping, e.g. {cafile: ca.pem} ({}: the "
                   "system's CA certificates), got a boolean (true; YAML reads yes/no/on/off as "
                   "booleans); leave tls out for plain TCP"))),
    ("tls:", ("bridges.cloud.tls", 5, ("expected a mapping, e.g. {cafile: ca.pem} ({}: the "
              "system's CA certificates), got nothing (null); leave tls out for plain TCP"))),
    ("tls: {insecure: 0}", ("bridges.cloud.tls.insecure", 5,
                            "expected true or false, got an integer (0)")),
    # queue
    ("queue: {max_messages: 0}", ("bridges.cloud.queue.max_messages", 5,
                                  "must be at least 1, got 0")),
    ("queue: {max_bytes: -1}", ("bridges.cloud.queue.max_bytes", 5,
                                "must be at least 1, got -1")),
    ("queue: {full_policy: drop}", ("bridges.cloud.queue.full_policy", 5,
                                    "must be one of drop_oldest, drop_new; got 'drop'")),
    ("queue: [1]", ("bridges.cloud.queue", 5, "expected a mapping, got a list")),
    # a key given twice, in two spellings
    ("keepalive: 30\nkeep-alive: 30", ("bridges.cloud.keep-alive", 6,
                                       "unknown key; did you mean 'keepalive'?")),
    ("client_id: a\nclient-id: b", ("bridges.cloud.client-id", 6,
                                    "same setting as 'client_id' on line 5; give it once")),
])
def test_bridge_key_errors_name_the_key_and_line(
        tmp_path: Path, extra: str, issue: tuple[str, int, str]) -> None:
    path = one_bridge(tmp_path, BASE + extra)
    assert only_issue(path) == issue


@pytest.mark.parametrize(("addresses", "issue"), [
    ("[]", ("bridges.cloud.addresses", 3, "expected at least one 'host:port'")),
    ("cloud:1883", ("bridges.cloud.addresses", 3, ("expected a list of 'host:port', got a string "
                    "('cloud:1883') (write ['cloud:1883'])"))),
    ("[cloud]", ("bridges.cloud.addresses[0]", 3,
                 "missing port in 'cloud': expected 'host:port', e.g. '127.0.0.1:1883'")),
    ("['cloud:']", ("bridges.cloud.addresses[0]", 3,
                    "missing port in 'cloud:': expected 'host:port', e.g. '127.0.0.1:1883'")),
    ("[':1883']", ("bridges.cloud.addresses[0]", 3, ("missing host in ':1883': expected "
                   "'host:port', e.g. 'cloud.example:8883'"))),
    ("['1883']", ("bridges.cloud.addresses[0]", 3, ("missing host in '1883': expected "
                  "'host:port', e.g. 'cloud.example:8883'"))),
    ("[1883]", ("bridges.cloud.addresses[0]", 3,
                "expected 'host:port' as a string, got an integer (1883)")),
    ("['cloud:0']", ("bridges.cloud.addresses[0]", 3, "port 0 is out of range 1..65535")),
    ("['cloud:65536']", ("bridges.cloud.addresses[0]", 3, "port 65536 is out of range 1..65535")),
    ("['cloud:mqtt']", ("bridges.cloud.addresses[0]", 3, "port 'mqtt' is not a number")),
    ("['::1:1883']", ("bridges.cloud.addresses[0]", 3,
                      "write IPv6 addresses in brackets, e.g. '[::1]:1883'")),
    ("['[::1:1883']", ("bridges.cloud.addresses[0]", 3,
                       "missing ']' after the IPv6 address in '[::1:1883' (e.g. '[::1]:1883')")),
    ("['[nope]:1883']", ("bridges.cloud.addresses[0]", 3, "'nope' is not an IPv6 address")),
    ("['bad host:1883']", ("bridges.cloud.addresses[0]", 3, "invalid host 'bad host'")),
    ("\n  - a:1\n  - b:2\n  - a:1", ("bridges.cloud.addresses[2]", 6,
                                     "'a:1' is already given as item 0")),
])
def test_address_errors(tmp_path: Path, addresses: str, issue: tuple[str, int, str]) -> None:
    path = one_bridge(tmp_path, f"addresses: {addresses}\ntopics: [{{pattern: a}}]")
    assert only_issue(path) == issue


@pytest.mark.parametrize(("topics", "issue"), [
    ("[]", ("bridges.cloud.topics", 4,
            "expected at least one topic, e.g. {pattern: 'sensors/#', direction: out}")),
    ("sensors/#", ("bridges.cloud.topics", 4, ("expected a list of topics ({pattern: ..., "
                   "direction: ..., qos: ...}), got a string ('sensors/#')"))),
    ("[sensors/#]", ("bridges.cloud.topics[0]", 4,
                     "expected a mapping, got a string ('sensors/#')")),
    ("[{direction: in}]", ("bridges.cloud.topics[0].pattern", 4,
                           "missing: each topic needs a pattern, e.g. 'sensors/#'")),
    ("[{pattern: 'a/#/b'}]", ("bridges.cloud.topics[0].pattern", 4,
                              "'a/#/b': '#' must be a whole level and the last one")),
    ("[{pattern: 'a/b+'}]", ("bridges.cloud.topics[0].pattern", 4,
                             "'a/b+': '+' must be a whole level")),
    ("[{pattern: ''}]", ("bridges.cloud.topics[0].pattern", 4, ("empty topic filter (Mosquitto's "
                         "'\"\"' pattern, which maps one topic to another by the prefixes "
                         "alone, is not supported)"))),
    ("[{pattern: 5}]", ("bridges.cloud.topics[0].pattern", 4,
                        "expected a topic filter string, got an integer (5)")),
    ("[{pattern: a, qos: 3}]", ("bridges.cloud.topics[0].qos", 4,
                                "must be between 0 and 2, got 3")),
    ("[{pattern: a, qos: -1}]", ("bridges.cloud.topics[0].qos", 4,
                                 "must be between 0 and 2, got -1")),
    ("[{pattern: a, direction: up}]", ("bridges.cloud.topics[0].direction", 4,
                                       "must be one of in, out, both; got 'up'")),
    ("[{pattern: a, local_prefix: 'x/+/'}]", ("bridges.cloud.topics[0].local_prefix", 4,
                                              ("'x/+/': a prefix must not contain the "
                                              "wildcards '+' or '#'"))),
    ("[{pattern: a, remote_prefix: '#'}]", ("bridges.cloud.topics[0].remote_prefix", 4,
                                            ("'#': a prefix must not contain the wildcards "
                                            "'+' or '#'"))),
    ("[{pattern: a, remote_prefix: null}]", ("bridges.cloud.topics[0].remote_prefix", 4,
                                             ("expected a topic prefix string ('' for none), "
                                             "got nothing (null)"))),
    ("[{pattern: '#', local_prefix: site}]", ("bridges.cloud.topics[0].local_prefix", 4,
                                              ("prefix + pattern is not a valid topic filter: "
                                              "'site#': '#' must be a whole level and the "
                                              "last one (end the prefix with '/')"))),
    ("[{pattern: '+/x', remote_prefix: site}]", ("bridges.cloud.topics[0].remote_prefix", 4,
                                                 ("prefix + pattern is not a valid topic filter: "
                                                 "'site+/x': '+' must be a whole level "
                                                 "(end the prefix with '/')"))),
    ("[{pattern: a, qos: 1, foo: true}]", ("bridges.cloud.topics[0].foo", 4,
                                              ("unknown key (expected one of: direction, "
                                              "local_prefix, pattern, qos, remote_prefix)"))),
    ("\n  - {pattern: a}\n  - {pattern: 'b/#/c'}", ("bridges.cloud.topics[1].pattern", 6,
                                                    ("'b/#/c': '#' must be a whole level and "
                                                    "the last one"))),
])
def test_topic_errors(tmp_path: Path, topics: str, issue: tuple[str, int, str]) -> None:
    path = one_bridge(tmp_path, f"addresses: ['cloud:1883']\ntopics: {topics}")
    assert only_issue(path) == issue


def test_missing_addresses_and_topics_are_named_on_the_bridge_line(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: INFO\nbridges:\n  cloud:\n  edge:\n    keepalive: 30\n")
    assert issues_of(path) == [
        ("bridges.cloud.addresses", 3,
         "missing: a bridge needs addresses, e.g. addresses: ['cloud.example:8883']"),
        ("bridges.cloud.topics", 3, ("missing: a bridge needs topics, e.g. topics: "
         "[{pattern: 'sensors/#', direction: out}]")),
        ("bridges.edge.addresses", 4,
         "missing: a bridge needs addresses, e.g. addresses: ['cloud.example:8883']"),
        ("bridges.edge.topics", 4, ("missing: a bridge needs topics, e.g. topics: "
         "[{pattern: 'sensors/#', direction: out}]")),
    ]


@pytest.mark.parametrize("name", ["a/b", "a+b", "a#", "a b", "x" * 65, "$SYS", "é"])
def test_bridge_name_must_be_safe_as_a_topic_level(tmp_path: Path, name: str) -> None:
    path = one_bridge(tmp_path, "addresses: ['cloud:1883']\ntopics: [{pattern: a}]",
                      name=f"'{name}'")
    assert only_issue(path) == (
        f"bridges.{name}", 2, ("a bridge name is 1 to 64 letters, digits, '.', '_' or '-' (it is "
        f"a level of $SYS/broker/connection/<name>/state); got {name!r}"))


def test_bridge_names_are_unique(tmp_path: Path) -> None:
    path = write(tmp_path, textwrap.dedent("""\
        bridges:
          cloud:
            addresses: ['a:1']
            topics: [{pattern: a}]
          cloud:
            addresses: ['b:1']
            topics: [{pattern: b}]
        """))
    assert only_issue(path) == ("bridges.cloud", 5, "duplicate key (first given on line 2)")


def test_two_bridges_must_not_meet_at_one_remote_under_one_client_id(tmp_path: Path) -> None:
    path = write(tmp_path, textwrap.dedent("""\
        bridges:
          one:
            addresses: ['a:1', '[::1]:1883']
            topics: [{pattern: a}]
            client_id: edge
          two:
            addresses: ['[::1]:1883']
            topics: [{pattern: b}]
            client-id: edge
          three:
            addresses: ['b:1']
            topics: [{pattern: b}]
            client_id: edge
        """))
    assert only_issue(path) == (
        "bridges.two.client-id", 9, ("bridges 'one' and 'two' both connect to [::1]:1883 as "
        "client id 'edge'; the remote would disconnect one for the other: give each its own "
        "client_id"))


def test_password_and_password_file_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    path = one_bridge(tmp_path, BASE + "username: u\npassword: p\npassword_file: secret\n")
    assert only_issue(path) == ("bridges.cloud.password_file", 7,
                                "give password or password_file, not both")


@pytest.mark.parametrize(("content", "problem"), [
    (None, "file not found: {path}"),
    ("", "{path} is empty; it must hold the bridge's password on one line"),
    ("\n", "{path} is empty; it must hold the bridge's password on one line"),
    ("a\nb\n", "{path} has more than one line; it must hold the password on one line"),
    (b"\xff\n", "{path}:1: not valid UTF-8 text"),
])
def test_password_file_problems(tmp_path: Path, content: str | bytes | None,
                                problem: str) -> None:
    secret = tmp_path / "secret"
    if isinstance(content, bytes):
        secret.write_bytes(content)
    elif content is not None:
        secret.write_text(content)
    path = one_bridge(tmp_path, BASE + "username: u\npassword_file: secret\n")
    assert only_issue(path) == ("bridges.cloud.password_file", 6,
                                problem.format(path=secret))


def test_password_file_without_username_on_mqtt311(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret")
    path = one_bridge(tmp_path, BASE + "password_file: secret\n")
    assert only_issue(path) == (
        "bridges.cloud.password_file", 5, ("a password needs a username in MQTT 3.1 and 3.1.1 "
        "[MQTT-3.1.2-22]; give username (or protocol: mqttv5)"))


def test_tls_files_must_exist_and_come_in_pairs(tmp_path: Path) -> None:
    (tmp_path / "edge.crt").write_text("x")
    path = one_bridge(tmp_path, BASE + "tls:\n  cafile: absent.pem\n  certfile: edge.crt\n")
    assert only_issue(path) == ("bridges.cloud.tls.cafile", 6,
                                f"file not found: {tmp_path / 'absent.pem'}")
    path = one_bridge(tmp_path, BASE + "tls:\n  certfile: edge.crt\n")
    assert only_issue(path) == ("bridges.cloud.tls.certfile", 6, ("certfile needs keyfile: give "
                                "the client certificate and its private key together"))
    path = one_bridge(tmp_path, BASE + "tls: {keyfile: edge.crt}\n")
    assert only_issue(path) == ("bridges.cloud.tls.keyfile", 5, ("keyfile needs certfile: give "
                                "the client certificate and its private key together"))


def test_bridges_section_must_be_a_mapping(tmp_path: Path) -> None:
    assert only_issue(write(tmp_path, "bridges:\n  - cloud\n")) == (
        "bridges", 1, "expected a mapping, got a list")
    assert only_issue(write(tmp_path, "bridges:\n  cloud: [a]\n")) == (
        "bridges.cloud", 2, "expected a mapping, got a list")


def test_bridge_keys_at_the_top_level_point_to_the_section(tmp_path: Path) -> None:
    path = write(tmp_path, "addresses: ['a:1']\npassword_file: x\n")
    assert issues_of(path) == [
        ("addresses", 1, "unknown key here; it belongs in the 'bridges.<name>' section"),
        ("password_file", 2, "unknown key here; it belongs in the 'auth' section"),
    ]


def test_every_problem_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    path = write(tmp_path, textwrap.dedent("""\
        bridges:
          cloud:
            addresses: ['cloud:0']
            protocol: v5
            topics:
              - {pattern: 'a/#/b', qos: 3}
            queue: {full_policy: never}
        mqtt:
          max_qos: 3
        """))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == [
        f"{path}:3: bridges.cloud.addresses[0]: port 0 is out of range 1..65535",
        f"{path}:4: bridges.cloud.protocol: must be one of mqttv31, mqttv311, mqttv5; got 'v5'",
        (f"{path}:6: bridges.cloud.topics[0].pattern: 'a/#/b': '#' must be a whole level and "
        "the last one"),
        f"{path}:6: bridges.cloud.topics[0].qos: must be between 0 and 2, got 3",
        (f"{path}:7: bridges.cloud.queue.full_policy: must be one of drop_oldest, drop_new; "
        "got 'never'"),
        f"{path}:9: mqtt.max_qos: must be between 0 and 2, got 3",
    ]


def test_dict_input_names_the_key_without_a_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"bridges": {"cloud": {**MINIMAL, "keepalive": 1}}})
    assert str(info.value) == "bridges.cloud.keepalive: must be between 5 and 65535, got 1"


def test_check_config_reports_bridge_errors_like_any_other_section(tmp_path: Path) -> None:
    path = one_bridge(tmp_path, "addresses: ['cloud:99999']\ntopics: [{pattern: a, qos: 5}]")
    result = CliRunner().invoke(cli, ["check-config", str(path)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{path}:3: bridges.cloud.addresses[0]: port 99999 is out of range 1..65535",
        f"{path}:4: bridges.cloud.topics[0].qos: must be between 0 and 2, got 5",
    ]


# --------------------------------------------------------------------------- the broker


async def test_broker_starts_and_stops_its_bridges() -> None:
    """Each configured bridge is a local client of the broker while it runs (and tries its
    remote, here one nobody listens on), and is gone after shutdown."""
    local = {**MINIMAL, "addresses": ["127.0.0.1:9"]}  # loopback, nobody listening
    config = load_config({"listeners": {"default": {"bind": "127.0.0.1:0"}},
                          "bridges": {"cloud": local, "backup": local}})
    broker = Broker(config)
    await broker.start()
    try:
        assert sorted(broker.connections) == ["$bridge/backup", "$bridge/cloud"]
        assert all(not link.stats.connected for link in broker.bridges.links)
    finally:
        await broker.shutdown()
    assert not broker.connections
