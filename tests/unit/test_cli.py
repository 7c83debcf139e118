"""The command line, run as a real process: ``python -m mqttbroker ...``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import mqttbroker

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqttbroker", *args],
        check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"broker exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"broker did not listen on {port} within {timeout} s:\n{log.read_text()}")


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"mqttbroker {mqttbroker.__version__}\n"


def test_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("listeners:\n  default:\n    bind: 127.0.0.1:1883\nsys_interval: 5\n")
    result = run_cli("check-config", str(path))
    assert (result.returncode, result.stdout) == (0, f"{path}: OK\n")


@pytest.mark.parametrize("name", ["default.yaml", "example-hbmqtt.yaml", "paho-interop.yaml",
                                  "cluster.yaml", "durable.yaml", "bridge-example.yaml"])
def test_check_config_on_shipped_configs(name: str) -> None:
    result = run_cli("check-config", f"configs/{name}")
    assert (result.returncode, result.stdout) == (0, f"configs/{name}: OK\n")


def test_check_config_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "listeners:\n"
        "  default:\n"
        "    bind: 127.0.0.1:70000\n"
        "mqtt:\n"
        "  max_qos: 3\n"
        "  max_inflight: 5\n"
        "log_level: INFO\n"
        "log_level: DEBUG\n"
    )
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:3: listeners.default.bind: port 70000 is out of range 0..65535",
        f"{path}:5: mqtt.max_qos: must be between 0 and 2, got 3",
        f"{path}:6: mqtt.max_inflight: unknown key; did you mean 'max_inflight_messages'?",
        f"{path}:8: log_level: duplicate key (first given on line 7)",
    ]


def test_check_config_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("mqtt:\n  max_qos: [1\n")
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{path}:3: <root>: invalid YAML: ")


def test_serve_with_bad_config_exits_2_and_prints_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mqtt:\n  max_qos: 7\n")
    result = run_cli("serve", "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{path}:2: mqtt.max_qos: must be between 0 and 2, got 7"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_serve_runs_until_signal_then_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    log = tmp_path / "broker.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mqttbroker", "serve", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_port(proc, port, log)
        connected, disconnected = threading.Event(), threading.Event()
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=f"cli-test-{sig.name}")
        client.on_connect = lambda *args: connected.set()
        client.on_disconnect = lambda *args: disconnected.set()
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        try:
            assert connected.wait(5), "paho-mqtt got no CONNACK"
            proc.send_signal(sig)
            assert proc.wait(timeout=2) == 0, log.read_text()
            assert disconnected.wait(5), "paho-mqtt did not see the broker go away"
        finally:
            client.loop_stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"received {sig.name}, shutting down" in log.read_text()


def test_serve_on_a_port_in_use_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last == (f"mqttbroker: error: cannot listen on 127.0.0.1:{port}: address already in use"
                    " (is another broker running? try --port)")
    assert "Traceback" not in result.stderr
