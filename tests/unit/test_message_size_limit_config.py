"""config.py: ``mqtt.message_size_limit`` (Mosquitto's ``message_size_limit``): bytes of
PUBLISH / will payload, 0 = no limit, at most 268435460; bad values named by key and line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.config import MqttConfig, load_config
from mqttbroker.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
KEY = "mqtt.message_size_limit"


def write(tmp_path: Path, text: str, name: str = "broker.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def only_issue(source: Any) -> tuple[str, int | None, str]:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    found = [(i.key, i.line, i.problem) for i in info.value.issues]
    assert len(found) == 1, found
    return found[0]


def test_default_is_no_limit() -> None:
    assert MqttConfig().message_size_limit == 0
    assert load_config().mqtt.message_size_limit == 0
    assert load_config({"mqtt": {}}).mqtt.message_size_limit == 0


def test_shipped_default_config_sets_no_limit() -> None:
    config = load_config(ROOT / "configs" / "default.yaml")
    assert config.mqtt.message_size_limit == 0


@pytest.mark.parametrize("value", [0, 1, 10, 65536, 268435460])
def test_accepted_values(tmp_path: Path, value: int) -> None:
    path = write(tmp_path, f"# limits\nmqtt:\n  message_size_limit: {value}\n")
    assert load_config(path).mqtt.message_size_limit == value
    assert load_config({"mqtt": {"message_size_limit": value}}).mqtt.message_size_limit == value


@pytest.mark.parametrize(("value", "problem"), [
    (-1, "must be between 0 and 268435460, got -1"),
    (-100, "must be between 0 and 268435460, got -100"),
    (268435461, "must be between 0 and 268435460, got 268435461"),
])
def test_out_of_range_is_refused_with_key_and_line(tmp_path: Path, value: int,
                                                   problem: str) -> None:
    path = write(tmp_path, f"# limits\nmqtt:\n  message_size_limit: {value}\n")
    assert only_issue(path) == (KEY, 3, problem)


@pytest.mark.parametrize(("yaml_value", "problem"), [
    ('"10"', "expected an integer, got a string ('10')"),
    ("10kb", "expected an integer, got a string ('10kb')"),
    ("1.5", "expected an integer, got a number (1.5)"),
    ("yes", "expected an integer, got a boolean (true; YAML reads yes/no/on/off as booleans)"),
    ("", "expected an integer, got nothing (null)"),
    ("[1]", "expected an integer, got a list"),
])
def test_non_integer_is_refused_with_key_and_line(tmp_path: Path, yaml_value: str,
                                                  problem: str) -> None:
    path = write(tmp_path, f"log_level: INFO\nmqtt:\n  message_size_limit: {yaml_value}\n")
    assert only_issue(path) == (KEY, 3, problem)


def test_dict_input_is_validated_without_a_line() -> None:
    assert only_issue({"mqtt": {"message_size_limit": -1}}) == (
        KEY, None, "must be between 0 and 268435460, got -1")


def test_error_message_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, """
        mqtt:
          max_qos: 1
          message_size_limit: -5
        """)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines() == [
        f"{path}:3: {KEY}: must be between 0 and 268435460, got -5"]
    assert (info.value.key, info.value.line) == (KEY, 3)
