"""The wheel, installed where nothing of the project is: a lean broker, and the extras it names.

The wheel is built from the working tree (a copy of what goes into it, so the build leaves
nothing behind in the checkout; ``--no-build-isolation``: the test venv has the backend) and
installed with pip into a fresh ``python -m venv`` (not ``--system-site-packages``), whose
dependencies come from the package index (pip's cache makes reruns quick). That venv must
hold the broker's own dependencies and none of the extras'; its ``mqttbroker serve`` (with a
small config, and with none: the built-in defaults) carries a QoS 1 message between two paho
clients (paho from the test's own venv, not the fresh one), also from a paho WebSocket client;
a config with an ``http`` section is refused naming the line and ``mqttbroker[web]``, by
``check-config`` and by ``serve`` before it listens. In another fresh venv, with
``mqttbroker[web]``, the HTTP listener serves the dashboard the wheel carries, with neither
node nor npm on the broker's PATH.

The dashboard must be built before (``make test`` does it, ``make dashboard`` alone): without
it this test fails, it does not skip, since a wheel without the dashboard is the bug it
guards against.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from .brokerproc import HOST, free_port, port_open
from .helpers import TIMEOUT, Clients, unique_id

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "mqttbroker" / "web" / "dashboard" / "dist"
EXTRAS = ("aiohttp", "prometheus_client", "paho", "matplotlib", "redis")  # not in a lean install
PIP_TIMEOUT = 180.0  # pip resolving from the index (its cache makes a rerun take seconds)
START_TIMEOUT = 15.0

pytestmark = pytest.mark.timeout(300)


def _outside(**over: str) -> dict[str, str]:
    """The environment for the fresh venv's programs: without PYTHONPATH/PYTHONHOME, which
    could let them import the checkout instead of what the wheel installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, **over}


def _run(*cmd: str | Path, timeout: float = PIP_TIMEOUT, **kw: Any) -> str:
    """Run ``cmd``; its output, or a failure showing it."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, check=False, **kw)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def _pip(venv: Path, *args: str | Path) -> str:
    # the test venv's pip, installing into the fresh one: ``--without-pip`` venvs are made
    # in a fraction of the time ensurepip takes
    return _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python",
                "--disable-pip-version-check", "install", "--quiet", *args, env=_outside())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the working tree, with its dashboard."""
    assert (DIST / "index.html").is_file() and (DIST / "app.js").is_file(), (
        f"the dashboard is not built ({DIST} has no index.html and app.js): run `make dashboard` "
        "(`make test` does) before this test; the wheel must carry it")
    src = tmp_path_factory.mktemp("src")
    skip = shutil.ignore_patterns("node_modules", "__pycache__", "*.pyc")
    for name in ("mqttbroker", "devices"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", out, src)
    wheels = list(out.glob("mqttbroker-*.whl"))
    assert len(wheels) == 1, f"expected one wheel, got {wheels}"
    return wheels[0]


def _fresh_venv(tmp_path_factory: pytest.TempPathFactory, requirement: str | Path) -> Path:
    path = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--without-pip", path, timeout=60)
    _pip(path, requirement)
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed: ``pip install mqttbroker``, no extra."""
    return _fresh_venv(tmp_path_factory, wheel)


@pytest.fixture(scope="module")
def web_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another fresh venv, with ``pip install 'mqttbroker[web]'`` (its own: the lean one
    stays lean whatever order the tests run in)."""
    return _fresh_venv(tmp_path_factory, f"mqttbroker[web] @ {wheel.as_uri()}")


def _config(folder: Path, port: int, **sections: Any) -> Path:
    config = {"listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
              "sys_interval": 0, "auth": {"allow-anonymous": True}, **sections}
    path = folder / f"broker-{port}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _no_node_path(venv: Path) -> str:
    """PATH with the venv's bin and only the folders holding neither node nor npm."""
    keep = [str(venv / "bin")]
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if folder and not any(os.path.exists(os.path.join(folder, exe))
                              for exe in ("node", "npm", "nodejs")):
            keep.append(folder)
    path = os.pathsep.join(keep)
    for exe in ("node", "npm", "nodejs"):
        assert shutil.which(exe, path=path) is None, f"{exe} still on PATH {path}"
    return path


class _Served:
    """``mqttbroker serve`` of the venv (its console script, run outside the checkout, so
    nothing of the working tree can be imported); killed at the end."""

    def __init__(self, venv: Path, args: list[str], folder: Path, port: int,
                 env: dict[str, str]) -> None:
        self.log = folder / f"broker-{port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(venv / "bin" / "mqttbroker"), "serve", *args],
                cwd=folder, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env)

    def wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(port):
            assert self.proc.poll() is None, f"the broker exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, (
                f"the broker did not listen on {port} within {START_TIMEOUT}s:\n"
                f"{self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[_Served] = []

    def start(venv: Path, port: int, env: dict[str, str] | None = None, *,
              config: bool = True, **sections: Any) -> _Served:
        """``serve -c`` a small config (one listener on ``port``, ``sections``), or with
        ``config=False`` the built-in defaults with ``--port``."""
        args = (["-c", str(_config(tmp_path, port, **sections))] if config
                else ["--port", str(port)])
        started.append(_Served(venv, args, tmp_path, port, env or _outside()))
        started[-1].wait_listening(port)  # (stopped at the end even if it never listens)
        return started[-1]

    yield start
    for s in started:
        s.stop()


def test_the_wheel_carries_the_built_dashboard(wheel: Path) -> None:
    built = {p.relative_to(DIST).as_posix() for p in DIST.rglob("*")
             if p.is_file() and not p.name.startswith(".")}
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    prefix = "mqttbroker/web/dashboard/dist/"
    carried = {n.removeprefix(prefix) for n in names if n.startswith(prefix)}
    assert {"index.html", "app.js", "app.css"} <= carried
    assert carried == built, f"missing: {sorted(built - carried)}, extra: {carried - built}"
    assert not any("node_modules" in n or "/dashboard/src/" in n for n in names)
    assert {"devices/cli.py", "mqttbroker/config/extras.py"} <= names


def test_a_lean_install_brings_no_extra(venv: Path) -> None:
    probe = ("import importlib.util, sys; "
             "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))")
    python = venv / "bin" / "python"
    present = _run(python, "-c", probe, "mqttbroker", "yaml", "click", "msgpack", "websockets",
                   *EXTRAS, timeout=30, cwd=venv, env=_outside()).split()
    assert present == ["mqttbroker", "yaml", "click", "msgpack", "websockets"]
    where = _run(python, "-c", "import mqttbroker; print(mqttbroker.__file__)", timeout=30,
                 cwd=venv, env=_outside())
    assert where.startswith(str(venv)), f"mqttbroker imported from {where}"
    # the devices command says what to install, in one line, instead of a traceback
    proc = subprocess.run([str(venv / "bin" / "devices"), "run"], capture_output=True,
                          text=True, timeout=30, cwd=venv, env=_outside(), check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        ("devices: error: the device fleet needs paho-mqtt and matplotlib, which are not "
         "installed: pip install 'mqttbroker[devices]'")]


@pytest.mark.parametrize("config", [True, False], ids=["a small config", "built-in defaults"])
def test_the_lean_broker_carries_a_qos1_message(venv: Path, serve: Any, config: bool) -> None:
    port = free_port()
    serve(venv, port, config=config)
    with Clients(port) as clients:
        sub = clients.paho(unique_id("sub"))
        assert sub.subscribe(("lean/+", 1)) == [1]
        pub = clients.paho(unique_id("pub"))
        pub.publish("lean/wheel", b"from the wheel", qos=1)  # waits for the PUBACK
        got = sub.messages.wait_topic("lean/wheel")
        assert (got.payload, got.qos) == (b"from the wheel", 1)


def test_the_lean_broker_speaks_mqtt_over_websocket(venv: Path, serve: Any) -> None:
    """The websockets the lean install resolved (the test venv's may differ: amqtt pins
    one) carries a paho WebSocket client's QoS 1 PUBLISH to a TCP subscriber."""
    port, ws_port = free_port(), free_port()
    serve(venv, port, listeners={"default": {"type": "tcp", "bind": f"{HOST}:{port}"},
                                 "ws": {"type": "ws", "bind": f"{HOST}:{ws_port}",
                                        "path": "/mqtt"}})
    with Clients(port) as clients:
        sub = clients.paho(unique_id("sub"))
        assert sub.subscribe(("lean/ws", 1)) == [1]
        ws = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique_id("ws"),
                         transport="websockets", reconnect_on_failure=False)
        ws.ws_set_options(path="/mqtt")
        connected = threading.Event()
        ws.on_connect = lambda *args: connected.set()
        ws.connect(HOST, ws_port)
        ws.loop_start()
        try:
            assert connected.wait(TIMEOUT), "no CONNACK over WebSocket"
            info = ws.publish("lean/ws", b"over websocket", qos=1)
            info.wait_for_publish(TIMEOUT)
            assert info.is_published(), "no PUBACK over WebSocket"
        finally:
            ws.disconnect()
            ws.loop_stop()
        got = sub.messages.wait_topic("lean/ws")
        assert (got.payload, got.qos) == (b"over websocket", 1)


def test_an_http_section_names_the_web_extra(venv: Path, tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    config = _config(tmp_path, port, http={"enabled": True, "bind": f"{HOST}:{http_port}"})
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1)
                if text.strip() == "enabled: true")
    expected = (f"{config}:{line}: http.enabled: the HTTP listener (dashboard, /metrics, "
                "admin API) needs aiohttp and prometheus_client, which are not installed: "
                "pip install 'mqttbroker[web]'")
    mqttbroker = str(venv / "bin" / "mqttbroker")
    check = subprocess.run([mqttbroker, "check-config", str(config)], capture_output=True,
                           text=True, timeout=30, cwd=tmp_path, env=_outside(), check=False)
    assert (check.returncode, check.stdout.strip()) == (1, expected), check
    served = subprocess.run([mqttbroker, "serve", "-c", str(config)], capture_output=True,
                            text=True, timeout=30, cwd=tmp_path, env=_outside(),
                            check=False)
    assert (served.returncode, served.stderr.strip()) == (2, expected), served
    assert "Traceback" not in served.stderr + served.stdout
    assert not port_open(port) and not port_open(http_port)


def test_the_web_extra_serves_the_dashboard_without_node(web_venv: Path, serve: Any) -> None:
    port, http_port = free_port(), free_port()
    env = _outside(PATH=_no_node_path(web_venv))
    serve(web_venv, port, env, http={"enabled": True, "bind": f"{HOST}:{http_port}"})
    # (the MQTT port accepts only once everything started, the HTTP listener included)
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/", timeout=5) as resp:
        page = resp.read().decode()
        assert resp.status == 200
    assert 'src="/assets/app.js"' in page
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/assets/app.js", timeout=5) as resp:
        script = resp.read()
        assert resp.status == 200
    assert script == (DIST / "app.js").read_bytes()
