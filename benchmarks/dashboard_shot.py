"""A screenshot of the dashboard watching a live fleet, for the docs.

    python -m benchmarks.dashboard_shot [--devices 200] [--seconds 20]
                                        [--out docs/img/dashboard.png]

Starts ``mqttbroker serve`` as a subprocess with a temporary config (a TCP, a WebSocket and
the HTTP listener on free 127.0.0.1 ports, ``$SYS`` every 2 s, memory persistence), runs the
simulated fleet (``python -m devices run``, the ``steady`` profile with the sensors' intervals
scaled by ``--interval-scale`` so the charts move within the run) against it, opens the
dashboard in headless Chromium (1440x1000), charts the telemetry of one GPS tracker (through
the topic filter), opens that device in the tree, waits, and saves the screenshot. Then it
stops everything it started. Loopback only; every wait is bounded.

Needs the built dashboard (``make dashboard``) and ``/usr/bin/chromium`` with
``/usr/bin/chromedriver`` (``make browser``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from benchmarks import brokers
from devices.profile import load_profile
from devices.sensors import pick_kind

ROOT = Path(__file__).resolve().parent.parent
DIST_INDEX = ROOT / "mqttbroker" / "web" / "dashboard" / "dist" / "index.html"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HOST = "127.0.0.1"
T0 = time.monotonic()


# the page's long tasks (> 50 ms on the main thread): how much the fleet's traffic costs it
LONG_TASKS_JS = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) window.__longTasks.push(e.duration);
}).observe({type: "longtask"});
"""


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:5.1f} s] {msg}", flush=True)


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            result = check()
            if result:
                return result
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def http_ok(port: int, path: str) -> bool:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as r:
        return bool(r.status == 200)


def stop_process(proc: subprocess.Popen[bytes], name: str, group: bool = False) -> None:
    """SIGTERM (to its process group when it leads one), then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    say(f"stopping {name} (pid {proc.pid})")

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    send(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def chromium(width: int, height: int) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dashboard-shot-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--hide-scrollbars", f"--window-size={width},{height}",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(20)
        # the window size includes the (invisible) browser frame: make the page itself
        # exactly width x height
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        with contextlib.suppress(Exception):
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def pick_device(count: int, mix: dict[str, float] | None) -> tuple[str, str]:
    """The first GPS tracker of the fleet (else the first temperature sensor): (id, kind)."""
    for wanted in ("gps_tracker", "temp_humidity"):
        for i in range(count):
            if pick_kind(i, mix) == wanted:
                return f"sensor-{i:06d}", wanted
    return "sensor-000000", pick_kind(0, mix)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dashboard_shot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=200, help="simulated devices (default 200)")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="how long the page watches the fleet before the shot (default 20)")
    p.add_argument("--out", default="docs/img/dashboard.png", help="the PNG to write")
    p.add_argument("--profile", default="steady", help="fleet profile (default steady)")
    p.add_argument("--interval-scale", type=float, default=0.2,
                   help="multiplies the sensors' reporting intervals (default 0.2: lively charts)")
    p.add_argument("--processes", type=int, default=min(os.cpu_count() or 1, 4),
                   help="fleet worker processes")
    p.add_argument("--width", type=int, default=1440)
    p.add_argument("--height", type=int, default=1000)
    args = p.parse_args(argv)

    if not DIST_INDEX.exists():
        print(f"the dashboard is not built ({DIST_INDEX} is missing): run `make dashboard`",
              file=sys.stderr)
        return 2
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        print("needs /usr/bin/chromium and /usr/bin/chromedriver: run `make browser`",
              file=sys.stderr)
        return 2
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    out.parent.mkdir(parents=True, exist_ok=True)
    tcp, ws, http = brokers.free_port(), brokers.free_port(), brokers.free_port()
    work = Path(tempfile.mkdtemp(prefix="dashboard-shot-"))
    config = {
        "listeners": {
            "default": {"type": "tcp", "bind": f"{HOST}:{tcp}"},
            "ws": {"type": "ws", "bind": f"{HOST}:{ws}", "path": "/mqtt"},
        },
        "http": {"enabled": True, "bind": f"{HOST}:{http}", "token": "dashboard-shot-token",
                 "dashboard": True},
        "sys_interval": 2,
        "persistence": {"backend": "memory"},
        "auth": {"allow-anonymous": True},
        "mqtt": {"max_connection_rate_per_address": 0},
        "log_level": "WARNING",
    }
    (work / "broker.yaml").write_text(yaml.safe_dump(config))
    base = load_profile(args.profile).as_dict()
    base["interval_scale"] = base["interval_scale"] * args.interval_scale
    base.pop("name", None)
    (work / "fleet.yaml").write_text(yaml.safe_dump(base))
    device, kind = pick_device(args.devices, base.get("mix") or None)
    topic = f"fleet/{device}/telemetry"

    broker: subprocess.Popen[bytes] | None = None
    fleet: subprocess.Popen[bytes] | None = None
    try:
        say(f"broker: mqtt://{HOST}:{tcp}, ws://{HOST}:{ws}/mqtt, http://{HOST}:{http}/")
        with open(work / "broker.log", "wb") as log:
            broker = subprocess.Popen(
                [sys.executable, "-m", "mqttbroker", "serve", "-c", str(work / "broker.yaml")],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_for("the broker's /healthz", lambda: broker is not None and broker.poll() is None
                 and http_ok(http, "/healthz"), 15)
        if not http_ok(http, "/"):
            raise RuntimeError("the broker does not serve the dashboard at /")
        say(f"fleet: {args.devices} devices, profile {args.profile} x{args.interval_scale:g} "
            f"intervals, {args.processes} processes")
        with open(work / "fleet.log", "wb") as log:
            fleet = subprocess.Popen(
                [sys.executable, "-m", "devices", "run", "--broker", f"mqtt://{HOST}:{tcp}",
                 "--devices", str(args.devices), "--duration", str(args.seconds + 30),
                 "--profile", str(work / "fleet.yaml"), "--processes", str(args.processes),
                 "--quiet"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(2)  # let the devices start connecting
        with chromium(args.width, args.height) as driver:
            say("chromium: loading the dashboard")
            driver.get(f"http://{HOST}:{http}/")
            wait_for("the page's MQTT connection", lambda: driver.find_element(
                By.ID, "mqtt-state").text.strip() == "connected", 20)
            shown = time.monotonic()
            say("dashboard connected")
            driver.execute_script(LONG_TASKS_JS)
            wait_for(f"{args.devices} devices in the table", lambda: len(driver.find_elements(
                By.CSS_SELECTOR, "tr[data-device]")) >= args.devices, 30)
            say(f"{args.devices} devices listed; charting {topic} ({kind})")
            search = driver.find_element(By.ID, "topic-filter")
            search.send_keys(topic)
            row = wait_for(f"{topic} in the topic filter", lambda: driver.find_elements(
                By.CSS_SELECTOR, f'[data-topic="{topic}"]'), 20)[0]
            row.click()
            wait_for("the chart", lambda: driver.find_elements(
                By.CSS_SELECTOR, f'[data-chart="{topic}"] canvas'), 10)
            search.send_keys(Keys.CONTROL, "a")
            search.send_keys(Keys.DELETE)
            # open fleet/ and the charted device in the tree
            for node in ("fleet", f"fleet/{device}"):
                selector = f'[data-topic="{node}"]'
                el = wait_for(f"{node} in the tree", functools.partial(
                    driver.find_elements, By.CSS_SELECTOR, selector), 10)[0]
                caret = el.find_element(By.CSS_SELECTOR, ".caret").get_attribute("class")
                if "open" not in (caret or ""):
                    el.click()
            rest = args.seconds - (time.monotonic() - shown)
            if rest > 0:
                say(f"watching for {rest:.0f} s more")
                time.sleep(rest)
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(out))
            online = driver.find_element(By.CSS_SELECTOR, '[data-count="devices-online"]').text
            clients = driver.find_element(
                By.CSS_SELECTOR, '[data-count="clients-connected"]').text
            say(f"screenshot: {out} ({online} devices online, {clients} clients connected)")
            n, total, worst = driver.execute_script(
                "const l = window.__longTasks || []; "
                "return [l.length, l.reduce((a, b) => a + b, 0), Math.max(0, ...l)];")
            say(f"page main thread: {n} long tasks (> 50 ms), {total:.0f} ms in all, "
                f"the longest {worst:.0f} ms, over {time.monotonic() - shown:.0f} s")
    except BaseException:
        for name in ("broker.log", "fleet.log"):
            with contextlib.suppress(OSError):
                tail = (work / name).read_text(errors="replace").splitlines()[-20:]
                print(f"--- the end of {name}:", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        if fleet is not None:
            stop_process(fleet, "the fleet", group=True)
        if broker is not None:
            stop_process(broker, "the broker")
        shutil.rmtree(work, ignore_errors=True)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
