"""config.py: YAML/dict -> frozen Config, with every problem named by key path and line."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.config import (
    AuthConfig,
    Config,
    HttpConfig,
    ListenerConfig,
    MqttConfig,
    PersistenceConfig,
    TopicCheckConfig,
    load_config,
    parse_config_dict,
)
from mqttbroker.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "broker.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def issues_of(source: Any) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return [(i.key, i.line, i.problem) for i in info.value.issues]


def only_issue(source: Any) -> tuple[str, int | None, str]:
    found = issues_of(source)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- defaults


def test_no_source_gives_one_localhost_tcp_listener_and_defaults() -> None:
    config = load_config()
    assert config == Config(listeners=(ListenerConfig("default", "tcp", "127.0.0.1", 1883),))
    assert config.sys_interval == 10.0
    # allow-anonymous not given: anonymous clients on loopback listeners only (auth.py)
    assert config.auth == AuthConfig(allow_anonymous=None, password_file=None, acl_file=None)
    assert config.topic_check.enabled is False
    assert dict(config.topic_check.acl) == {} and dict(config.topic_check.publish_acl) == {}
    assert config.mqtt == MqttConfig()
    assert config.mqtt.max_qos == 2
    assert config.mqtt.max_packet_size == 268435460
    assert config.mqtt.queue_full_policy == "drop_new"
    assert config.log_level == "INFO"


@pytest.mark.parametrize("source", [{}, {"listeners": {}}, {"listeners": None}])
def test_missing_or_empty_listeners_mean_localhost_1883(source: dict[str, Any]) -> None:
    assert load_config(source).listeners == (ListenerConfig("default", "tcp", "127.0.0.1", 1883),)


def test_empty_yaml_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "# nothing but a comment\n")) == load_config()


def test_config_is_frozen() -> None:
    config = load_config({"topic-check": {"acl": {"alice": ["a/#"]}}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.log_level = "DEBUG"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.topic_check.acl["bob"] = ("b",)  # type: ignore[index]
    assert config.topic_check.acl["alice"] == ("a/#",)


@pytest.mark.parametrize("field", dataclasses.fields(MqttConfig), ids=lambda f: f.name)
def test_every_mqtt_field_is_a_config_key(field: dataclasses.Field[Any]) -> None:
    value = field.default
    assert load_config({"mqtt": {field.name: value}}).mqtt == MqttConfig()
    assert load_config({"mqtt": {field.name.replace("_", "-"): value}}).mqtt == MqttConfig()


def test_shipped_default_yaml_equals_the_built_in_defaults() -> None:
    """Except persistence (built in it is memory; the shipped file keeps data/ in SQLite), the
    ws listener and the http section (built in: none)."""
    shipped = load_config(ROOT / "configs" / "default.yaml")
    builtin = load_config()
    assert shipped.listeners[:1] == builtin.listeners
    assert [(lc.name, lc.type, lc.host, lc.port, lc.path) for lc in shipped.listeners[1:]] == [
        ("ws", "ws", "127.0.0.1", 9001, "/mqtt")]
    assert builtin.http == HttpConfig() and not builtin.http.enabled
    assert shipped.http == HttpConfig(enabled=True, host="127.0.0.1", port=8080,
                                      token_file=str(ROOT / "data" / "api-token"))
    assert dataclasses.replace(shipped, persistence=PersistenceConfig(), http=HttpConfig(),
                               listeners=builtin.listeners) == builtin
    assert shipped.persistence == PersistenceConfig(
        backend="sqlite", path=str(ROOT / "data" / "mqttbroker.db"), sync="periodic",
        flush_interval=1.0, fsync=False)


def test_shipped_durable_yaml_commits_and_fsyncs() -> None:
    durable = load_config(ROOT / "configs" / "durable.yaml")
    assert durable.persistence == PersistenceConfig(
        backend="sqlite", path=str(ROOT / "data" / "durable.db"), sync="commit", fsync=True)


def test_shipped_hbmqtt_example_loads() -> None:
    config = load_config(ROOT / "configs" / "example-hbmqtt.yaml")
    assert [(lst.name, lst.host, lst.port, lst.max_connections) for lst in config.listeners] == [
        ("my-tcp-1", "127.0.0.1", 1883, 50000),
        ("my-tcp-2", "127.0.0.1", 1884, 1000),
    ]
    assert config.sys_interval == 20.0
    assert config.topic_check.enabled is True
    assert config.topic_check.acl["sensor-01"] == ("devices/sensor-01/#", "config/+/sensor-01")
    assert config.topic_check.publish_acl["anonymous"] == ("public/#",)


# --------------------------------------------------------------------------- listeners


def test_default_listener_supplies_missing_keys_and_is_not_a_listener_without_bind() -> None:
    config = load_config({"listeners": {
        "default": {"type": "tcp", "max-connections": 50},
        "one": {"bind": "127.0.0.1:1883"},
        "two": {"bind": "127.0.0.1:1884", "max_connections": 7, "type": "ws"},
    }})
    assert config.listeners == (
        ListenerConfig("one", "tcp", "127.0.0.1", 1883, max_connections=50),
        ListenerConfig("two", "ws", "127.0.0.1", 1884, max_connections=7),
    )


def test_default_listener_with_bind_is_a_listener_too() -> None:
    config = load_config({"listeners": {
        "default": {"bind": "127.0.0.1:1883", "max_connections": 3},
        "other": {"bind": "127.0.0.1:1884"},
    }})
    assert [(lst.name, lst.port, lst.max_connections) for lst in config.listeners] == [
        ("default", 1883, 3), ("other", 1884, 3)]


def test_listener_with_null_body_inherits_everything_so_binds_clash() -> None:
    key, line, problem = only_issue({"listeners": {
        "default": {"bind": "127.0.0.1:1883"}, "copy": None}})
    assert key == "listeners.copy" and line is None
    assert "both bind 127.0.0.1:1883" in problem


def test_port_zero_listeners_may_share_an_address() -> None:
    config = load_config({"listeners": {"a": {"bind": "127.0.0.1:0"}, "b": {"bind": "127.0.0.1:0"}}})
    assert [lst.port for lst in config.listeners] == [0, 0]


@pytest.mark.parametrize(("bind", "host", "port"), [
    ("127.0.0.1:1883", "127.0.0.1", 1883),
    ("0.0.0.0:1883", "0.0.0.0", 1883),
    (":1883", "0.0.0.0", 1883),
    ("1883", "0.0.0.0", 1883),  # amqtt's port-only form
    ("localhost:0", "localhost", 0),
    ("[::1]:1883", "::1", 1883),
    ("[::]:65535", "::", 65535),
])
def test_bind_forms(bind: str, host: str, port: int) -> None:
    (listener,) = load_config({"listeners": {"default": {"bind": bind}}}).listeners
    assert (listener.host, listener.port) == (host, port)


@pytest.mark.parametrize(("value", "expected"), [(-1, 0), (0, 0), (10, 10)])
def test_max_connections_zero_or_negative_means_unlimited(value: int, expected: int) -> None:
    config = load_config({"listeners": {"default": {"bind": ":1", "max-connections": value}}})
    assert config.listeners[0].max_connections == expected


def test_listener_without_bind_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, """
        listeners:
          default:
            type: tcp
          lonely:
            max-connections: 5
        """)
    assert only_issue(path) == ("listeners.lonely", 4, ("listener has no 'bind' "
                                "(expected 'host:port', e.g. '127.0.0.1:1883')"))


def test_default_alone_without_bind_is_an_error() -> None:
    key, line, problem = only_issue({"listeners": {"default": {"type": "tcp"}}})
    assert (key, line) == ("listeners", None)
    assert "no listener to start" in problem


def test_ssl_needs_certfile_and_keyfile(tmp_path: Path) -> None:
    path = write(tmp_path, """
        listeners:
          secure:
            bind: 127.0.0.1:8883
            ssl: true
        """)
    assert only_issue(path) == (
        "listeners.secure.ssl", 4, "ssl requires certfile and keyfile; missing certfile and keyfile")


def test_ssl_files_resolve_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    for name in ("server.crt", "server.key", "ca.crt"):
        (tmp_path / "certs" / name).write_text("PEM")
    path = write(tmp_path, """
        listeners:
          secure:
            bind: 127.0.0.1:8883
            ssl: true
            certfile: certs/server.crt
            keyfile: certs/server.key
            cafile: certs/ca.crt
        """)
    (listener,) = load_config(path).listeners
    assert listener.ssl is True
    assert listener.certfile == str(tmp_path / "certs" / "server.crt")
    assert listener.keyfile == str(tmp_path / "certs" / "server.key")
    assert listener.cafile == str(tmp_path / "certs" / "ca.crt")


def test_missing_files_are_named(tmp_path: Path) -> None:
    path = write(tmp_path, """
        auth:
          password-file: nowhere/passwd
        listeners:
          default:
            bind: :8883
            ssl: yes
            certfile: missing.crt
            keyfile: missing.key
        """)
    assert issues_of(path) == [
        ("auth.password-file", 2, f"file not found: {tmp_path / 'nowhere' / 'passwd'}"),
        ("listeners.default.certfile", 7, f"file not found: {tmp_path / 'missing.crt'}"),
        ("listeners.default.keyfile", 8, f"file not found: {tmp_path / 'missing.key'}"),
    ]


# --------------------------------------------------------------------------- spellings


@pytest.mark.parametrize(("section", "hyphen", "underscore", "value", "attr"), [
    ("auth", "allow-anonymous", "allow_anonymous", False, "allow_anonymous"),
    ("mqtt", "max-qos", "max_qos", 1, "max_qos"),
    ("mqtt", "queue-qos0-messages", "queue_qos0_messages", True, "queue_qos0_messages"),
])
def test_hyphen_and_underscore_spellings_are_the_same_key(
    section: str, hyphen: str, underscore: str, value: Any, attr: str
) -> None:
    a = load_config({section: {hyphen: value}})
    b = load_config({section: {underscore: value}})
    assert a == b
    assert getattr(getattr(a, section), attr) == value


@pytest.mark.parametrize("key", ["max-connections", "max_connections"])
def test_max_connections_both_spellings(key: str) -> None:
    config = load_config({"listeners": {"default": {"bind": ":1883", key: 99}}})
    assert config.listeners[0].max_connections == 99


@pytest.mark.parametrize("key", ["topic-check", "topic_check"])
def test_topic_check_both_spellings(key: str) -> None:
    config = load_config({key: {"enabled": True, "acl": {"u": ["#"]},
                                "publish-acl": {"u": ["a/+/b"]}}})
    assert config.topic_check == TopicCheckConfig(
        enabled=True, acl={"u": ("#",)}, publish_acl={"u": ("a/+/b",)})


def test_password_file_both_spellings(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text(  # made by mosquitto_passwd (password "secret")
        "alice:$7$101$WhrfaIBjuVKX7MU2$RPNTYOppYPlE2w4mvOUS55nTZ88FXCb/lMA05FkFUbpTFDwmZi3oBhJoeJ"
        "eKwSsqMXxeaQMiZU50TeTeAlOtcw==\n")
    for key in ("password-file", "password_file"):
        path = write(tmp_path, f"auth:\n  {key}: passwd\n")
        assert load_config(path).auth.password_file == str(tmp_path / "passwd")


def test_both_spellings_in_one_mapping_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, """
        listeners:
          default:
            bind: 127.0.0.1:1883
            max_connections: 10
            max-connections: 20
        """)
    assert only_issue(path) == ("listeners.default.max-connections", 5,
                                "same setting as 'max_connections' on line 4; give it once")


def test_amqtt_only_keys_are_accepted_and_ignored() -> None:
    config = load_config({
        "timeout-disconnect-delay": 2,
        "plugins": {"amqtt.plugins.sys.broker.BrokerSysPlugin": {"sys_interval": 20}},
        "auth": {"plugins": ["auth_anonymous"], "allow-anonymous": False},
        "topic-check": {"plugins": ["topic_acl"], "enabled": False},
    })
    assert config.auth.allow_anonymous is False
    assert config.sys_interval == 10.0


def test_log_level_is_case_insensitive_and_stored_upper() -> None:
    assert load_config({"log_level": "debug"}).log_level == "DEBUG"
    assert load_config({"log_level": "Warning"}).log_level == "WARNING"


def test_ints_are_accepted_for_float_fields() -> None:
    config = load_config({"sys_interval": 0, "mqtt": {"connect_timeout": 3}})
    assert config.sys_interval == 0.0 and isinstance(config.sys_interval, float)
    assert config.mqtt.connect_timeout == 3.0


def test_queue_full_policy_values() -> None:
    assert load_config({"mqtt": {"queue_full_policy": "drop-oldest"}}).mqtt.queue_full_policy \
        == "drop_oldest"


# --------------------------------------------------------------------------- errors, with lines


def test_unknown_key_with_did_you_mean_hint(tmp_path: Path) -> None:
    path = write(tmp_path, """
        mqtt:
          max_qos: 1
          max_qoss: 1
        auth:
          allow-anonymus: true
        """)
    assert issues_of(path) == [
        ("mqtt.max_qoss", 3, "unknown key; did you mean 'max_qos'?"),
        ("auth.allow-anonymus", 5, "unknown key; did you mean 'allow-anonymous'?"),
    ]


def test_unknown_key_without_close_match_lists_the_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "auth:\n  zzz: 1\n")
    assert only_issue(path) == (
        "auth.zzz", 2,
        ("unknown key (expected one of: acl_file, allow_anonymous, password_file, "
         "scram_users, v5_subscribe_refusal)"))


def test_section_key_at_top_level_says_where_it_belongs(tmp_path: Path) -> None:
    path = write(tmp_path, "log_level: INFO\nmax_qos: 1\n")
    assert only_issue(path) == ("max_qos", 2, "unknown key here; it belongs in the 'mqtt' section")


@pytest.mark.parametrize(("yaml_value", "problem"), [
    ('"2"', "expected an integer, got a string ('2')"),
    ("yes", "expected an integer, got a boolean (true; YAML reads yes/no/on/off as booleans)"),
    ("1.5", "expected an integer, got a number (1.5)"),
    ("", "expected an integer, got nothing (null)"),
    ("[1]", "expected an integer, got a list"),
])
def test_wrong_type_for_int(tmp_path: Path, yaml_value: str, problem: str) -> None:
    path = write(tmp_path, f"log_level: INFO\nmqtt:\n  max_qos: {yaml_value}\n")
    assert only_issue(path) == ("mqtt.max_qos", 3, problem)


@pytest.mark.parametrize(("yaml_value", "problem"), [
    ('"true"', "expected true or false, got a string ('true')"),
    ("1", "expected true or false, got an integer (1)"),
])
def test_booleans_must_be_yaml_booleans(tmp_path: Path, yaml_value: str, problem: str) -> None:
    path = write(tmp_path, f"auth:\n  allow-anonymous: {yaml_value}\n")
    assert only_issue(path) == ("auth.allow-anonymous", 2, problem)


def test_bool_is_not_a_number_for_float_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "sys_interval: on\n")
    assert only_issue(path) == (
        "sys_interval", 1,
        "expected a number, got a boolean (true; YAML reads yes/no/on/off as booleans)")


@pytest.mark.parametrize(("bind", "problem"), [
    ("127.0.0.1:70000", "port 70000 is out of range 0..65535"),
    ("127.0.0.1", "missing port in '127.0.0.1': expected 'host:port', e.g. '127.0.0.1:1883'"),
    ("localhost:", "missing port in 'localhost:': expected 'host:port', e.g. '127.0.0.1:1883'"),
    ("127.0.0.1:http", "port 'http' is not a number"),
    ("::1:1883", "write IPv6 addresses in brackets, e.g. '[::1]:1883'"),
    ("[::1:1883", "missing ']' after the IPv6 address in '[::1:1883' (e.g. '[::1]:1883')"),
    ("[nothost]:1883", "'nothost' is not an IPv6 address"),
    ("bad host:1883", "invalid host 'bad host'"),
])
def test_bad_bind_values(tmp_path: Path, bind: str, problem: str) -> None:
    path = write(tmp_path, f"""
        listeners:
          default:
            type: tcp
            bind: "{bind}"
        """)
    assert only_issue(path) == ("listeners.default.bind", 4, problem)


def test_bind_as_yaml_integer_suggests_quoting(tmp_path: Path) -> None:
    path = write(tmp_path, "listeners:\n  default:\n    bind: 1883\n")
    assert only_issue(path) == (
        "listeners.default.bind", 3,
        "expected 'host:port' as a string, got an integer (1883) (quote it: ':1883')")


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("max_qos", 3, "must be between 0 and 2, got 3"),
    ("max_qos", -1, "must be between 0 and 2, got -1"),
    ("max_packet_size", 1, "must be between 2 and 268435460, got 1"),
    ("max_packet_size", 268435461, "must be between 2 and 268435460, got 268435461"),
    ("max_keepalive", 65536, "must be between 0 and 65535, got 65536"),
    ("connect_timeout", 0, "must be greater than 0, got 0"),
    ("connect_timeout", ".inf", "must be a finite number, got inf"),
    ("max_inflight_messages", 0, "must be between 1 and 65535, got 0"),
    ("max_queued_messages", -1, "must be at least 0, got -1"),
    ("queue_full_policy", "drop_all",
     "must be one of drop_new, drop_oldest; got 'drop_all'"),
    ("max_client_id_length", 0, "must be between 1 and 65535, got 0"),
    ("write_buffer_limit", 1023, "must be at least 1024, got 1023"),
])
def test_bad_mqtt_values(tmp_path: Path, key: str, value: Any, problem: str) -> None:
    path = write(tmp_path, f"# limits\nmqtt:\n  {key}: {value}\n")
    assert only_issue(path) == (f"mqtt.{key}", 3, problem)


def test_bad_top_level_values(tmp_path: Path) -> None:
    path = write(tmp_path, """
        sys_interval: -5
        log_level: verbose
        listeners:
          default:
            bind: :1883
            type: udp
        """)
    assert issues_of(path) == [
        ("sys_interval", 1, "must be at least 0, got -5"),
        ("log_level", 2, "must be one of DEBUG, INFO, WARNING, ERROR; got 'verbose'"),
        ("listeners.default.type", 6, "must be one of tcp, ws, mqttsn; got 'udp'"),
    ]


def test_duplicate_key_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, """
        mqtt:
          max_qos: 1
          retain_available: false
          max_qos: 2
        """)
    assert only_issue(path) == ("mqtt.max_qos", 4, "duplicate key (first given on line 2)")


def test_duplicate_listener_name(tmp_path: Path) -> None:
    path = write(tmp_path, """
        listeners:
          a:
            bind: :1883
          a:
            bind: :1884
        """)
    assert only_issue(path) == ("listeners.a", 4, "duplicate key (first given on line 2)")


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("listeners:\n  default:\n    bind: :1883\n   type: tcp\n", 4,
     ("invalid YAML: expected <block end>, but found '<block mapping start>' "
     "(while parsing a block mapping)")),
    ("log_level: INFO\nmqtt: [1, 2\nauth: {}\n", 3,
     "invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence)"),
    ("mqtt:\n\tmax_qos: 1\n", 2,
     ("invalid YAML: found character '\\t' that cannot start any token "
     "(while scanning for the next token)")),
])
def test_yaml_syntax_error_reports_its_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    assert only_issue(path) == ("", line, problem)


def test_non_string_key(tmp_path: Path) -> None:
    path = write(tmp_path, """
        topic-check:
          acl:
            1234: ["a/#"]
        """)
    assert only_issue(path) == (
        "topic-check.acl.1234", 3,
        "key must be a string; YAML reads '1234' as an integer (1234) (quote it: '1234')")


def test_bad_topic_filter_in_acl_names_the_list_item(tmp_path: Path) -> None:
    path = write(tmp_path, """
        topic-check:
          enabled: true
          acl:
            alice:
              - sensors/#
              - sensors/#/temp
            bob: sensors/#
          publish-acl:
            alice: ["a/b+"]
        """)
    assert issues_of(path) == [
        ("topic-check.acl.alice[1]", 6, "'sensors/#/temp': '#' must be a whole level and the last one"),
        ("topic-check.acl.bob", 7, "expected a list of topic filters, got a string ('sensors/#')"),
        ("topic-check.publish-acl.alice[0]", 9, "'a/b+': '+' must be a whole level"),
    ]


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "mqtt: 5\nauth: [1]\n")
    assert issues_of(path) == [
        ("mqtt", 1, "expected a mapping, got an integer (5)"),
        ("auth", 2, "expected a mapping, got a list"),
    ]


def test_root_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    assert only_issue(path) == ("", None, "expected a mapping, got a list")


def test_all_problems_are_collected_and_sorted_by_line(tmp_path: Path) -> None:
    path = write(tmp_path, """
        listeners:
          default:
            bind: 127.0.0.1:70000
        sys_interval: x
        mqtt:
          max_qos: 3
          max_qos: 1
          bogus: 1
        """)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == [
        f"{path}:3: listeners.default.bind: port 70000 is out of range 0..65535",
        f"{path}:4: sys_interval: expected a number, got a string ('x')",
        f"{path}:6: mqtt.max_qos: must be between 0 and 2, got 3",
        f"{path}:7: mqtt.max_qos: duplicate key (first given on line 6)",
        (f"{path}:8: mqtt.bogus: unknown key (expected one of: allow_zero_length_clientid, "
        "auth_failure_delay, auth_failure_max_delay, auth_failure_threshold, "
        "connect_timeout, connection_burst_per_address, max_client_id_length, "
        "max_connect_size, max_connection_rate_per_address, max_connections, "
        "max_inflight_messages, "
        "max_keepalive, max_packet_size, max_publish_bytes_rate, max_publish_rate, max_qos, "
        "max_queued_bytes, max_queued_messages, max_retained_bytes, max_retained_messages, "
        "max_session_expiry_interval, max_sessions, max_subscriptions_per_client, "
        "max_topic_levels, max_write_buffer, message_size_limit, plugin_timeout, "
        "plugin_timeout_outcome, "
        "queue_full_policy, queue_qos0_messages, receive_maximum, response_information, "
        "retain_available, topic_alias_maximum, write_buffer_limit)"),
    ]
    assert info.value.filename == str(path)
    assert (info.value.key, info.value.line) == ("listeners.default.bind", 3)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert str(info.value) == f"{tmp_path / 'absent.yaml'}: <root>: cannot read config file: " \
                              "No such file or directory"


def test_yaml_anchors_and_merge_keys(tmp_path: Path) -> None:
    path = write(tmp_path, """
        listeners:
          base: &base
            bind: 127.0.0.1:1883
            max-connections: 5
          second:
            <<: *base
            bind: 127.0.0.1:1884
        """)
    config = load_config(path)
    assert [(lst.name, lst.port, lst.max_connections) for lst in config.listeners] == [
        ("base", 1883, 5), ("second", 1884, 5)]


# --------------------------------------------------------------------------- dict input


def test_dict_input_is_validated_the_same_way_without_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"mqtt": {"max_qos": 3}, "listeners": {"default": {"bind": "x"}}})
    assert info.value.filename is None
    assert [(i.key, i.line) for i in info.value.issues] == [
        ("mqtt.max_qos", None), ("listeners.default.bind", None)]
    assert str(info.value).splitlines()[0] == "mqtt.max_qos: must be between 0 and 2, got 3"


def test_parse_config_dict_matches_load_config() -> None:
    d = {"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}}, "sys_interval": 0,
         "auth": {"allow-anonymous": True}}
    assert parse_config_dict(d) == load_config(d)
    assert parse_config_dict(d).listeners[0].port == 0


def test_dict_input_is_not_mutated() -> None:
    d: dict[str, Any] = {"mqtt": {"max_qos": 1}}
    load_config(d, overrides={"mqtt": {"max_qos": 0}})
    assert d == {"mqtt": {"max_qos": 1}}


# --------------------------------------------------------------------------- overrides


def test_with_overrides_applies_host_and_port_to_every_listener() -> None:
    config = load_config({"listeners": {"a": {"bind": "127.0.0.1:1883"},
                                        "b": {"bind": "127.0.0.1:1884"}}})
    changed = config.with_overrides(host="0.0.0.0", port=0, log_level="debug")
    assert [(lst.name, lst.host, lst.port) for lst in changed.listeners] == [
        ("a", "0.0.0.0", 0), ("b", "0.0.0.0", 0)]
    assert changed.log_level == "DEBUG"
    assert config.listeners[0].port == 1883  # the original is unchanged
    assert config.with_overrides() == config
    assert config.with_overrides(host="[::1]").listeners[0].host == "::1"


def test_with_overrides_rejects_bad_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_config().with_overrides(port=70000, log_level="loud")
    assert [(i.key, i.problem) for i in info.value.issues] == [
        ("port", "must be between 0 and 65535, got 70000"),
        ("log_level", "must be one of DEBUG, INFO, WARNING, ERROR; got 'loud'"),
    ]


def test_overrides_argument_deep_merges_before_validation(tmp_path: Path) -> None:
    path = write(tmp_path, """
        mqtt:
          max-qos: 2
          retain_available: false
        """)
    config = load_config(path, overrides={"mqtt": {"max_qos": 1}, "log_level": "error"})
    assert config.mqtt.max_qos == 1
    assert config.mqtt.retain_available is False
    assert config.log_level == "ERROR"
    # a bad override is reported without a line: it is not in the file
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides={"mqtt": {"max_qos": 5}})
    assert [(i.key, i.line) for i in info.value.issues] == [("mqtt.max_qos", None)]


# --------------------------------------------------------------------------- http, cluster


def test_http_section_bind_token_and_errors_name_the_key_and_line(tmp_path: Path) -> None:
    cfg = load_config({"http": {"enabled": True, "bind": "127.0.0.1:0", "token": "12345678"}})
    assert (cfg.http.enabled, cfg.http.host, cfg.http.port, cfg.http.token) == (
        True, "127.0.0.1", 0, "12345678")
    path = write(tmp_path, """
        http:
          enabled: true
          token: short
          token-file: t.txt
        """)
    found = issues_of(path)
    assert ("http.token", 3, found[0][2]) == found[0] and "at least 8" in found[0][2]
    assert ("http.token_file", 4, "give token or token-file, not both") in [
        (k.replace("-", "_"), line, p) for k, line, p in found]


def test_ws_listener_path_must_be_an_http_path() -> None:
    assert load_config({"listeners": {"w": {"type": "ws", "bind": ":9001"}}}
                       ).listeners[0].path == "/mqtt"
    key, _line, problem = only_issue({"listeners": {"w": {"type": "ws", "bind": ":9001",
                                                          "path": "mqtt"}}})
    assert key == "listeners.w.path" and "starting with '/'" in problem


def test_cluster_section_needs_redis_and_node_and_excludes_persistence(tmp_path: Path) -> None:
    cfg = load_config({"cluster": {"redis": "redis://127.0.0.1:6379/0", "node": "n-1"}})
    assert cfg.cluster is not None and (cfg.cluster.node, cfg.cluster.prefix) == (
        "n-1", "mqttbroker")
    assert load_config().cluster is None
    key, _, problem = only_issue({"cluster": {"node": "n"}})
    assert key == "cluster" and "needs redis" in problem
    key, _, problem = only_issue({"cluster": {"redis": "http://x", "node": "n"}})
    assert key == "cluster.redis" and "Redis URL" in problem
    path = write(tmp_path, """
        cluster:
          redis: redis://127.0.0.1:6379/0
          node: a
        persistence:
          backend: sqlite
        """)
    key, line, problem = only_issue(path)
    assert (key, line) == ("persistence", 4) and "cluster's Redis" in problem


def test_ws_pack_packets_is_a_listener_boolean_default_one_packet_per_frame(
        tmp_path: Path) -> None:
    path = write(tmp_path, """
        listeners:
          default:
            ws-pack-packets: true
          ws:
            type: ws
            bind: 127.0.0.1:9001
          ws-one:
            type: ws
            bind: 127.0.0.1:9002
            ws_pack_packets: false
        """)
    packs = {lst.name: lst.ws_pack_packets for lst in load_config(path).listeners}
    # 'default' supplies it to the listeners that leave it out, like any listener key
    assert packs == {"ws": True, "ws-one": False}
    # not given anywhere: one MQTT packet per WebSocket frame (what Paho C 1.3 needs)
    assert load_config({"listeners": {"w": {"type": "ws", "bind": ":9001"}}}
                       ).listeners[0].ws_pack_packets is False
    assert ListenerConfig("w", "ws", "", 9001).ws_pack_packets is False
    bad = write(tmp_path, """
        listeners:
          ws:
            type: ws
            bind: 127.0.0.1:9001
            ws-pack-packets: many
        """, "bad.yaml")
    key, line, problem = only_issue(bad)
    assert (key, line) == ("listeners.ws.ws-pack-packets", 5)  # as spelled in the file
    assert problem == "expected true or false, got a string ('many')", problem


def test_mqttsn_listener_keys_and_defaults() -> None:
    (tcp, snl) = load_config({"listeners": {
        "default": {"bind": "127.0.0.1:1883"},
        "sn": {"type": "MQTTSN", "bind": "127.0.0.1:1883",  # UDP: may share TCP's port
               "predefined_topics": {1: "sensors/predefined/1", "2": "alerts/all"},
               "qos_minus_one": True, "gateway_id": 7, "advertise_interval": 0,
               "broadcast": "255.255.255.255:1885", "retry_interval": 2.5,
               "max_retries": 3, "client_users": {"sensor-*": "sensors", "gw": "g"}}}}
    ).listeners
    assert snl.client_users == (("sensor-*", "sensors"), ("gw", "g"))  # (in order)
    assert (tcp.type, snl.type) == ("tcp", "mqttsn")
    assert (snl.gateway_id, snl.advertise_interval, snl.broadcast, snl.predefined_topics,
            snl.qos_minus_one, snl.retry_interval, snl.max_retries) == (
        7, 0.0, ("255.255.255.255", 1885), ((1, "sensors/predefined/1"), (2, "alerts/all")),
        True, 2.5, 3)
    (dflt,) = load_config({"listeners": {"sn": {"type": "mqttsn", "bind": ":1885"}}}).listeners
    assert (dflt.gateway_id, dflt.advertise_interval, dflt.qos_minus_one, dflt.retry_interval,
            dflt.max_retries, dflt.predefined_topics, dflt.client_users) == (
        1, 900.0, False, 10.0, 5, (), ())


@pytest.mark.parametrize(("listener", "problem"), [
    ({"type": "mqttsn", "ssl": True}, "listeners.x.ssl: ssl is for tcp and ws listeners"),
    ({"type": "mqttsn", "path": "/mqtt"}, "listeners.x.path: path is for tcp and ws"),
    ({"type": "tcp", "gateway_id": 3}, "listeners.x.gateway_id: gateway-id is for mqttsn"),
    ({"type": "mqttsn", "gateway_id": 256}, "must be between 0 and 255, got 256"),
    ({"type": "mqttsn", "predefined_topics": {0: "x"}}, "topic ids are integers 1..65534"),
    ({"type": "mqttsn", "predefined_topics": {1: "a/#"}}, "without wildcards, got 'a/#'"),
    ({"type": "mqttsn", "predefined_topics": {1: "a", 2: "a"}}, "'a' has two ids"),
    ({"type": "mqttsn", "predefined_topics": ["a"]}, "expected a mapping of topic ids"),
    ({"type": "mqttsn", "retry_interval": 0}, "must be greater than 0"),
    ({"type": "mqttsn", "client_users": ["a"]}, "expected a mapping of client ids"),
    ({"type": "mqttsn", "client_users": {"s-*": ""}}, "'s-*': expected a user name, got ''"),
    ({"type": "tcp", "client_users": {"a": "b"}}, "listeners.x.client_users: client-users is"),
])
def test_mqttsn_listener_problems_name_the_key(listener: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"listeners": {"x": {"bind": "127.0.0.1:1885", **listener}}})
    assert problem in str(err.value)
