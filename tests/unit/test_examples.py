"""The runnable examples keep running: examples/plugins loads as its README says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_plugin_example_config_loads_with_its_plugin() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples" / "plugins")}
    done = subprocess.run([sys.executable, "-m", "mqttbroker", "check-config",
                           "examples/plugins/config.yaml"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "examples/plugins/config.yaml: OK"


def test_plugin_example_without_its_module_names_the_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "mqttbroker", "check-config",
                           "examples/plugins/config.yaml"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "examples/plugins/config.yaml:14: plugins.audit_log.AuditLog: cannot import module " \
           "'audit_log'" in done.stdout + done.stderr
