"""``mqttbroker convert-mosquitto``: a mosquitto.conf becomes a configuration that loads
(check-config passes on it), with every line it cannot carry over named with its number."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mqttbroker.cli import cli
from mqttbroker.config import load_config
from mqttbroker.config.mosquitto import convert

CONF = """\
# an edge gateway
per_listener_settings false
listener 1883 127.0.0.1
max_connections 500
listener 9001
protocol websockets
allow_anonymous false
password_file {passwd}
persistence true
persistence_location {data}/
max_inflight_messages 40
max_queued_messages 5000
message_size_limit 65536
sys_interval 30
log_dest file /var/log/mosquitto.log

connection cloud
address cloud.example:8883 backup.example
bridge_protocol_version mqttv50
remote_clientid edge-7
remote_username edge-7
remote_password secret
cleansession false
keepalive_interval 30
try_private true
restart_timeout 5 60
topic sensors/# out 1 "" site-7/
topic commands/# in 1 "" site-7/
topic "" out 0 a/b c/d
bridge_max_packet_size 1000
"""


def conf(tmp_path: Path) -> str:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    return CONF.format(passwd=passwd, data=tmp_path)


def test_everything_with_an_equivalent_is_carried_over(tmp_path: Path) -> None:
    config, _ = convert(conf(tmp_path))
    assert config["listeners"] == {
        "default": {"bind": "127.0.0.1:1883", "max_connections": 500},
        "listener2": {"bind": "0.0.0.0:9001", "type": "ws"}}
    assert config["auth"]["allow_anonymous"] is False
    assert config["mqtt"] == {"max_inflight_messages": 40, "max_queued_messages": 5000,
                              "message_size_limit": 65536}
    assert config["sys_interval"] == 30
    assert config["persistence"] == {"backend": "sqlite",
                                     "path": f"{tmp_path}/mosquitto-mqttbroker.db"}
    cloud = config["bridges"]["cloud"]
    assert cloud["addresses"] == ["cloud.example:8883", "backup.example:1883"]
    assert (cloud["protocol"], cloud["client_id"], cloud["clean_session"],
            cloud["keepalive"], cloud["restart_timeout"]) == ("mqttv5", "edge-7", False, 30,
                                                             [5.0, 60.0])
    assert cloud["max_inflight"] == 40  # (Mosquitto's bound applies to its bridges too)
    assert cloud["topics"] == [
        {"pattern": "sensors/#", "direction": "out", "qos": 1, "local_prefix": "",
         "remote_prefix": "site-7/"},
        {"pattern": "commands/#", "direction": "in", "qos": 1, "local_prefix": "",
         "remote_prefix": "site-7/"}]


def test_lines_it_cannot_carry_are_named_with_their_numbers(tmp_path: Path) -> None:
    _, notes = convert(conf(tmp_path))
    assert [n.split(":")[0] for n in notes] == ["line 2", "line 15", "line 29", "line 30"]
    assert "log_dest" in notes[1] and "empty pattern" in notes[2]
    assert "bridge_max_packet_size" in notes[3]


def test_the_output_loads_and_passes_check_config(tmp_path: Path) -> None:
    source = tmp_path / "mosquitto.conf"
    source.write_text(conf(tmp_path))
    result = CliRunner().invoke(cli, ["convert-mosquitto", str(source)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"# converted from {source}")
    assert "# not carried over: line 15: 'log_dest file /var/log/mosquitto.log'" in \
        result.output
    out = tmp_path / "broker.yaml"
    out.write_text(result.output)
    config = load_config(str(out))
    [bridge] = config.bridges
    assert bridge.name == "cloud" and len(bridge.topics) == 2 and bridge.max_inflight == 40
    assert CliRunner().invoke(cli, ["check-config", str(out)]).output == f"{out}: OK\n"
