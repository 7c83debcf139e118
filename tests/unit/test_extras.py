"""A config that asks for a part whose extra is not installed is refused, naming the key, its
line and the ``pip install`` (mqttbroker/config/extras.py); ``devices`` without its extra says
what to install in one line.

Each case is a real process of this venv in which the extra's libraries are made unimportable
the import system's own way, ``sys.modules[name] = None`` (then ``import name`` raises
ModuleNotFoundError and ``importlib.util.find_spec(name)`` answers None), before anything is
imported: what a lean install looks like to the broker. tests/integration/test_wheel_install.py
does the same against a real lean install of the wheel.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mqttbroker.config import load_config
from mqttbroker.config.extras import EXTRAS

ROOT = Path(__file__).resolve().parents[2]

# argv[1]: the modules to hide (comma-separated); argv[2]: the entry point's module; the rest
# are its arguments
RUN_HIDDEN = """
import importlib, sys
for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None
module, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]
importlib.import_module(module).main()
"""
WEB = "aiohttp,prometheus_client"
ALL = f"{WEB},redis,amqtt,dacite"

CONFIG = """\
listeners:
  default:
    bind: 127.0.0.1:{port}
http:
  enabled: true
  bind: 127.0.0.1:0
cluster:
  redis: redis://127.0.0.1:6379/0
  node: node-1
plugins:
  amqtt.plugins.sys.broker.BrokerSysPlugin:
    sys_interval: 10
"""


def run_hidden(hidden: str, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUN_HIDDEN, hidden, module, *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)


def expected_lines(path: Path) -> list[str]:
    web = ("the HTTP listener (dashboard, /metrics, admin API) needs aiohttp and "
           "prometheus_client, which are not installed: pip install 'mqttbroker[web]'")
    amqtt = ("an amqtt plugin needs amqtt and dacite, which are not installed: "
             "pip install 'mqttbroker[amqtt]'")
    cluster = "a cluster needs redis, which is not installed: pip install 'mqttbroker[cluster]'"
    return [
        f"{path}:5: http.enabled: {web}",
        f"{path}:7: cluster: {cluster}",
        f"{path}:11: plugins.amqtt.plugins.sys.broker.BrokerSysPlugin: {amqtt}",
    ]


def test_check_config_names_each_missing_extra_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broker.yaml"
    path.write_text(CONFIG.format(port=1883))
    out = run_hidden(ALL, "mqttbroker.cli", "check-config", str(path))
    assert (out.returncode, out.stdout.splitlines(), out.stderr) == (
        1, expected_lines(path), "")


def test_serve_refuses_before_anything_starts(tmp_path: Path) -> None:
    path = tmp_path / "broker.yaml"
    path.write_text(CONFIG.format(port=0))
    out = run_hidden(ALL, "mqttbroker.cli", "serve", "-c", str(path))
    # nothing else on stderr: not even the "starting" line logged before the broker is made
    assert (out.returncode, out.stderr.splitlines(), out.stdout) == (2, expected_lines(path), "")


def test_only_what_is_missing_is_named_and_a_disabled_part_needs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "broker.yaml"
    path.write_text("http:\n  enabled: false\n  bind: 127.0.0.1:0\n"
                    "cluster:\n  redis: redis://127.0.0.1:6379/0\n  node: node-1\n")
    out = run_hidden("aiohttp,prometheus_client", "mqttbroker.cli", "check-config", str(path))
    assert (out.returncode, out.stdout) == (0, f"{path}: OK\n")
    path.write_text("http:\n  enabled: yes\n")  # the web extra half there: the rest is named
    out = run_hidden("prometheus_client", "mqttbroker.cli", "check-config", str(path))
    assert (out.returncode, out.stdout) == (1, (
        f"{path}:2: http.enabled: the HTTP listener (dashboard, /metrics, admin API) needs "
        "prometheus_client, which is not installed: pip install 'mqttbroker[web]'\n"))


def test_a_config_without_a_file_names_the_key() -> None:
    script = """
import sys
sys.modules["aiohttp"] = None
from mqttbroker.config import load_config
from mqttbroker.errors import ConfigError
try:
    load_config(None, overrides={"http": {"enabled": True}})
except ConfigError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, check=False)
    assert (out.returncode, out.stdout) == (0, (
        "http.enabled: the HTTP listener (dashboard, /metrics, admin API) needs aiohttp, "
        "which is not installed: pip install 'mqttbroker[web]'\n")), out.stderr


def test_with_every_extra_installed_the_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "broker.yaml"
    path.write_text(CONFIG.format(port=1883))
    config = load_config(path)
    assert config.http.enabled and config.cluster is not None and len(config.plugins) == 1


def test_devices_without_its_extra_says_what_to_install() -> None:
    out = run_hidden("paho,matplotlib", "devices.cli", "run", "--devices", "1")
    assert (out.returncode, out.stdout, out.stderr) == (1, "", (
        "devices: error: the device fleet needs paho-mqtt and matplotlib, which are not "
        "installed: pip install 'mqttbroker[devices]'\n"))
    out = run_hidden("matplotlib", "devices.cli", "--help")
    assert (out.returncode, out.stderr) == (1, (
        "devices: error: the device fleet needs matplotlib, which is not installed: "
        "pip install 'mqttbroker[devices]'\n"))


def _names(requirements: list[str], extra: str | None) -> set[str]:
    """The distributions ``requirements`` (a distribution's Requires-Dist) name for ``extra``,
    through ``mqttbroker[...]`` ones (``all``); ``None``: those needed without any extra."""
    out: set[str] = set()
    for text in requirements:
        req = Requirement(text)
        of_an_extra = req.marker is not None and "extra" in str(req.marker)
        if extra is None:
            if not of_an_extra and (req.marker is None or req.marker.evaluate()):
                out.add(canonicalize_name(req.name))
        elif of_an_extra and req.marker is not None and req.marker.evaluate({"extra": extra}):
            out.add(canonicalize_name(req.name))
            if canonicalize_name(req.name) == "mqttbroker":
                for sub in req.extras:
                    out |= _names(requirements, sub)
    return out


def test_each_module_checked_is_brought_by_its_extra() -> None:
    """extras.EXTRAS names the modules; pyproject.toml the distributions: they agree (through
    one dependency: dacite comes with amqtt), and none of them is a base dependency."""
    mine = metadata.requires("mqttbroker") or []
    base = _names(mine, None)
    owners = metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        brought = _names(mine, extra)
        for dist in list(brought):
            brought |= {canonicalize_name(Requirement(r).name)
                        for r in metadata.requires(dist) or [] if Requirement(r).marker is None}
        for module in modules:
            dists = {canonicalize_name(d) for d in owners[module]}
            assert dists & brought, f"{module} ({dists}) is not brought by [{extra}]"
            assert not dists & base, f"{module} is a base dependency, not [{extra}]'s"
    assert _names(mine, "all") >= _names(mine, "web") | _names(mine, "cluster") | _names(
        mine, "devices")
