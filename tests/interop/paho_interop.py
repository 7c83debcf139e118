"""Run the Eclipse Paho interoperability suites against this broker.

The suites (repository eclipse/paho.mqtt.testing, folder ``interoperability``) are not part of
this project: bring a checkout yourself and point ``--suite`` at its ``interoperability`` folder.
Their scripts take host and port only from their own ``__main__`` block, so this driver imports
them, sets the module globals they read, and runs them with unittest.

    python tests/interop/paho_interop.py --suite /path/to/interoperability [--port 18883]

Starts ``mqttbroker serve -c configs/paho-interop.yaml --port N`` (unless ``--no-broker``), runs
``client_test.py`` (MQTT 3.1.1) and ``client_test5.py`` (MQTT 5.0), prints one line per test
and a summary, and exits non-zero when a test failed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
import subprocess
import sys
import time
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"broker did not listen on {port} within {timeout}s")


def run_suite(suite_dir: Path, module_name: str, port: int) -> unittest.TestResult:
    """Import one suite module, set the globals its __main__ would, run its tests."""
    sys.path.insert(0, str(suite_dir))
    try:
        mod = importlib.import_module(module_name)
    finally:
        sys.path.pop(0)
    prefix = "client_test5/" if module_name == "client_test5" else ""
    mod.host = "localhost"  # type: ignore[attr-defined]
    mod.port = port  # type: ignore[attr-defined]
    mod.topic_prefix = prefix  # type: ignore[attr-defined]
    mod.topics = [prefix + t for t in  # type: ignore[attr-defined]
                  ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")]
    mod.wildtopics = [prefix + t for t in  # type: ignore[attr-defined]
                      ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")]
    mod.nosubscribe_topics = ("test/nosubscribe",)  # type: ignore[attr-defined]
    logging.getLogger().setLevel(logging.CRITICAL)
    tests = unittest.defaultTestLoader.loadTestsFromModule(mod)
    with open(os.devnull, "w") as devnull:
        runner = unittest.TextTestRunner(stream=devnull, verbosity=0)
        stdout = sys.stdout
        sys.stdout = devnull  # the suites print a lot
        try:
            result = runner.run(tests)
        finally:
            sys.stdout = stdout
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", required=True, type=Path,
                    help="the 'interoperability' folder of a paho.mqtt.testing checkout")
    ap.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    ap.add_argument("--no-broker", action="store_true",
                    help="do not start a broker; test the one already on --port")
    ap.add_argument("--only", choices=("3", "5"), help="run only the 3.1.1 or the 5.0 suite")
    args = ap.parse_args()
    port = args.port or free_port()
    broker = None
    if not args.no_broker:
        broker = subprocess.Popen(
            [sys.executable, "-m", "mqttbroker", "serve", "-c",
             str(ROOT / "configs" / "paho-interop.yaml"), "--port", str(port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failed = 0
    try:
        wait_port(port)
        suites = [("client_test", "3.1.1"), ("client_test5", "5.0")]
        if args.only:
            suites = [s for s in suites if s[1].startswith(args.only)]
        for module_name, label in suites:
            t0 = time.monotonic()
            print(f"MQTT {label} ({module_name}.py) against 127.0.0.1:{port} ...", flush=True)
            result = run_suite(args.suite, module_name, port)
            bad = {t.id().rsplit(".", 1)[-1]: "FAIL" for t, _ in result.failures}
            bad.update({t.id().rsplit(".", 1)[-1]: "ERROR" for t, _ in result.errors})
            for test, trace in result.failures + result.errors:
                last = trace.strip().splitlines()[-1]
                print(f"  {bad[test.id().rsplit('.', 1)[-1]]:5} "
                      f"{test.id().rsplit('.', 1)[-1]}: {last}")
            ok = result.testsRun - len(bad)
            failed += len(bad)
            print(f"  MQTT {label}: {ok}/{result.testsRun} passed "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(5)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
