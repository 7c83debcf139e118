"""The dashboard in a real browser (docs/web.md, "The dashboard").

Headless Chromium driven by Selenium (the Debian ``chromium`` and ``chromium-driver``
packages, never Selenium Manager) loads the page from the broker's HTTP listener. The page
connects back over MQTT/WebSocket and must show:

* ``#mqtt-state`` = ``connected``;
* the device ``sensor-test01`` (retained ``online`` status, a MessagePack telemetry document
  from docs/payload.md) with its reading ``temp_c=21.5 ...``;
* a chart (a ``<canvas>`` in ``[data-chart=TOPIC]``) after a click on the telemetry topic in
  the tree;
* the same number of connected clients as ``$SYS/broker/clients/connected`` and ``/metrics``'
  ``mqttbroker_clients_connected``;
* no "Bridges" card without a bridge; with one (an edge bridged to a second broker), its row
  ``tr[data-bridge=NAME]``: connected to its remote, the messages it sent, then disconnected
  with its backlog once the remote is gone.

The page's screenshot is saved to ``test-results/dashboard.png`` in every run, pass or fail.
Every wait is bounded. Skipped only when Chromium or the built dashboard is missing (``make
test`` provides both).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from devices.payload import encode, make_doc

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[2]
DIST_INDEX = ROOT / "mqttbroker" / "web" / "dashboard" / "dist" / "index.html"
SCREENSHOT = ROOT / "test-results" / "dashboard.png"

DEVICE = "sensor-test01"
STATUS_TOPIC = f"fleet/{DEVICE}/status"
TELEMETRY_TOPIC = f"fleet/{DEVICE}/telemetry"
READING = {"temp_c": 21.5, "rh_pct": 40.1, "battery_v": 3.912}
WAIT = 20.0  # seconds, for each browser wait
SYS_CONNECTED = "$SYS/broker/clients/connected"

pytestmark = pytest.mark.timeout(90)


def _config() -> dict[str, Any]:
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": "127.0.0.1:0"},
            "ws": {"type": "ws", "bind": "127.0.0.1:0", "path": "/mqtt"},
        },
        "http": {"enabled": True, "bind": "127.0.0.1:0", "token": "t0k3n-dashboard-test"},
        "sys_interval": 1,
        "auth": {"allow-anonymous": True},
        "mqtt": {"max_connection_rate_per_address": 0},
    }


def _paho(client_id: str, port: int) -> mqtt.Client:
    """A connected paho client with its network loop in a thread."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    if not connected.wait(5):
        c.loop_stop()
        raise AssertionError(f"{client_id} could not connect to 127.0.0.1:{port}")
    return c


def _close(c: mqtt.Client) -> None:
    with contextlib.suppress(Exception):
        c.disconnect()
    c.loop_stop()


@contextlib.contextmanager
def _chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1440,1000",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    try:
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1440, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        with contextlib.suppress(Exception):
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _metric(http_port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return family.samples[0].value
    return None


def _wait(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


@pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                    reason="/usr/bin/chromium or /usr/bin/chromedriver is missing "
                           "(make browser installs them)")
@pytest.mark.skipif(not DIST_INDEX.exists(),
                    reason="the dashboard is not built: no mqttbroker/web/dashboard/dist/"
                           "index.html (make dashboard builds it)")
def test_dashboard_in_chromium(make_broker_thread: Callable[[dict[str, Any]], Any]) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    bt = make_broker_thread(_config())
    broker = bt.broker
    http_port = broker.http_port
    tcp_port = next(port for name, _host, port in broker.addresses if name == "default")

    # a device: retained birth message, then telemetry twice a second while the test runs
    device = _paho(DEVICE, tcp_port)
    device.publish(STATUS_TOPIC, b"online", qos=1, retain=True).wait_for_publish(5)
    stop = threading.Event()

    def report() -> None:
        seq = 0
        while not stop.is_set():
            doc = make_doc(DEVICE, "temp_humidity", seq, time.time(), READING)
            device.publish(TELEMETRY_TOPIC, encode(doc, "msgpack"), qos=0)
            seq += 1
            stop.wait(0.5)

    reporter = threading.Thread(target=report, name="telemetry", daemon=True)
    reporter.start()

    # the $SYS reader of the count comparison: connected before the page, so the set of
    # connected clients (device, this reader, the page) stays fixed while comparing
    sys_values: dict[str, str] = {}
    reader = _paho("sys-reader", tcp_port)
    reader.on_message = lambda _c, _u, m: sys_values.__setitem__(m.topic, m.payload.decode())
    reader.subscribe(SYS_CONNECTED, qos=0)

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _chromium() as driver:
            try:
                driver.get(f"http://127.0.0.1:{http_port}/")

                def state() -> str:
                    return str(driver.find_element(By.ID, "mqtt-state").text).strip()

                _wait("#mqtt-state = connected", lambda: state() == "connected")

                def device_row() -> tuple[str, str] | None:
                    rows = driver.find_elements(By.CSS_SELECTOR, f'tr[data-device="{DEVICE}"]')
                    if not rows:
                        return None
                    status = rows[0].find_element(By.CSS_SELECTOR, ".status").text.strip()
                    reading = rows[0].find_element(By.CSS_SELECTOR, ".reading").text.strip()
                    return (status, reading) if status == "online" and "temp_c=21.5" in reading \
                        else None

                _status, reading = _wait(f"the row of {DEVICE}: online with temp_c=21.5",
                                        device_row)
                assert "rh_pct=40.1" in reading and "battery_v=3.912" in reading, reading

                # the topic tree: the telemetry topic with its decoded value; a click charts it
                topic = _wait(f"[data-topic={TELEMETRY_TOPIC!r}] in the tree",
                              lambda: driver.find_elements(
                                  By.CSS_SELECTOR, f'[data-topic="{TELEMETRY_TOPIC}"]'))[0]
                value = topic.find_element(By.CSS_SELECTOR, ".value").text
                assert DEVICE in value and "21.5" in value, value
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", topic)
                topic.click()
                _wait(f"a canvas in [data-chart={TELEMETRY_TOPIC!r}]",
                      lambda: driver.find_elements(
                          By.CSS_SELECTOR, f'[data-chart="{TELEMETRY_TOPIC}"] canvas'))

                # three views of the connected clients agree: $SYS, /metrics, the page
                def counts() -> tuple[str | None, float | None, str]:
                    dom = driver.find_element(
                        By.CSS_SELECTOR, '[data-count="clients-connected"]').text.strip()
                    return (sys_values.get(SYS_CONNECTED),
                            _metric(http_port, "mqttbroker_clients_connected"), dom)

                def agree() -> tuple[str, float, str] | None:
                    sys_v, metric, dom = counts()
                    if sys_v is None or metric is None or not dom.isdigit():
                        return None
                    return (sys_v, metric, dom) if int(sys_v) == int(metric) == int(dom) \
                        else None

                sys_v, metric, dom = _wait("$SYS, /metrics and the page to agree on the "
                                           f"connected clients (now {counts()})", agree,
                                           timeout=10)
                # the device, the $SYS reader and the page itself
                assert int(dom) == 3, (sys_v, metric, dom)
                # and the page's other counters are filled in from $SYS too
                for key in ("clients-total", "subscriptions", "retained",
                            "publish-received", "publish-sent"):
                    text = driver.find_element(By.CSS_SELECTOR, f'[data-count="{key}"]').text
                    assert text.strip().isdigit(), (key, text)
                time.sleep(2.0)  # more points in the charts for the screenshot
                # no bridge configured: no bridges card
                assert not driver.find_element(By.ID, "bridges").is_displayed()
                # no uncaught exception in the page
                errors = [e for e in driver.get_log("browser")
                          if e.get("level") == "SEVERE" and e.get("source") == "javascript"]
                assert not errors, errors
            except BaseException:
                with contextlib.suppress(WebDriverException):
                    for entry in driver.get_log("browser"):
                        print("browser:", entry.get("level"), entry.get("message"))
                raise
            finally:
                with contextlib.suppress(WebDriverException):
                    driver.save_screenshot(str(SCREENSHOT))
    finally:
        stop.set()
        reporter.join(2)
        _close(reader)
        _close(device)


@pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                    reason="/usr/bin/chromium or /usr/bin/chromedriver is missing "
                           "(make browser installs them)")
@pytest.mark.skipif(not DIST_INDEX.exists(),
                    reason="the dashboard is not built (make dashboard builds it)")
def test_mqttjs_in_chromium_at_every_qos(
        make_broker_thread: Callable[[dict[str, Any]], Any]) -> None:
    """MQTT.js in the browser (the dashboard's client, over MQTT/WebSocket) publishes at QoS
    0, 1 and 2 to a paho subscriber on TCP, and receives paho's QoS 0, 1 and 2 messages at
    the QoS it subscribed with (2): each side gets each message once, at its QoS."""
    bt = make_broker_thread(_config())
    http_port = bt.broker.http_port
    tcp_port = next(port for name, _host, port in bt.broker.addresses if name == "default")
    got_tcp: list[tuple[str, int, bytes]] = []
    paho = _paho("paho-peer", tcp_port)
    paho.on_message = lambda _c, _u, m: got_tcp.append((m.topic, m.qos, m.payload))
    paho.subscribe("from-browser/#", qos=2)
    try:
        with _chromium() as driver:
            driver.get(f"http://127.0.0.1:{http_port}/")
            _wait("the page's MQTT client", lambda: driver.execute_script(
                "return !!(window.dashboard && window.dashboard.client.connected)"))
            # the browser subscribes at QoS 2 and publishes at every QoS; each publish
            # callback fires once its flow is complete (PUBACK, PUBCOMP)
            done = driver.execute_async_script("""
                const finish = arguments[arguments.length - 1];
                const c = window.dashboard.client;
                window.fromPaho = [];
                c.on("message", (t, p, packet) => {
                    if (t.startsWith("to-browser/")) window.fromPaho.push(
                        [t, packet.qos, new TextDecoder().decode(p)]);
                });
                c.subscribe("to-browser/#", {qos: 2}, (err, granted) => {
                    if (err) return finish("subscribe: " + err.message);
                    let left = 3;
                    for (const q of [0, 1, 2]) {
                        c.publish("from-browser/q" + q, "js-" + q, {qos: q}, (e) => {
                            if (e) return finish("publish: " + e.message);
                            if (--left === 0) finish(granted.map((g) => g.qos));
                        });
                    }
                });
            """)
            assert done == [2], done
            for q in (0, 1, 2):
                paho.publish(f"to-browser/q{q}", f"paho-{q}".encode(), qos=q)
            in_browser = _wait("paho's three messages in the browser", lambda: (
                r if len(r := driver.execute_script("return window.fromPaho")) >= 3 else None))
            _wait("the browser's three messages at paho", lambda: len(got_tcp) >= 3)
            time.sleep(0.5)  # nothing more (no duplicates) arrives
            in_browser = driver.execute_script("return window.fromPaho")
            assert sorted(map(tuple, in_browser)) == [
                ("to-browser/q0", 0, "paho-0"), ("to-browser/q1", 1, "paho-1"),
                ("to-browser/q2", 2, "paho-2")]
            assert sorted(got_tcp) == [("from-browser/q0", 0, b"js-0"),
                                       ("from-browser/q1", 1, b"js-1"),
                                       ("from-browser/q2", 2, b"js-2")]
    finally:
        _close(paho)


@pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                    reason="/usr/bin/chromium or /usr/bin/chromedriver is missing "
                           "(make browser installs them)")
@pytest.mark.skipif(not DIST_INDEX.exists(),
                    reason="the dashboard is not built (make dashboard builds it)")
def test_dashboard_shows_a_bridge(make_broker_thread: Callable[[dict[str, Any]], Any]) -> None:
    """An edge bridged to a cloud broker: the page's bridges card shows the bridge by name,
    connected to the cloud's address, with the QoS 1 messages it carried counted as sent;
    once the cloud is stopped, disconnected, with what was published since queued.
    (``$SYS`` every second: each change shows within about a second.)"""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    cloud = make_broker_thread({"listeners": {"default": {"type": "tcp",
                                                          "bind": "127.0.0.1:0"}},
                                "sys_interval": 0, "auth": {"allow-anonymous": True},
                                "mqtt": {"max_connection_rate_per_address": 0}})
    remote = f"127.0.0.1:{cloud.port}"
    cfg = _config()
    cfg["bridges"] = {"uplink": {
        "addresses": [remote], "protocol": "mqttv5", "client_id": "edge-dashboard-test",
        "topics": [{"pattern": "up/#", "direction": "out", "qos": 1}],
        # no state message to the cloud: ``sent`` counts only the messages published here
        "restart_timeout": [0.2, 0.5], "notifications": False}}
    edge = make_broker_thread(cfg)
    tcp_port = next(port for name, _host, port in edge.broker.addresses if name == "default")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    with _chromium() as driver:
        def row() -> dict[str, str] | None:
            rows = driver.find_elements(By.CSS_SELECTOR, 'tr[data-bridge="uplink"]')
            if not rows:
                return None
            cells = {k: rows[0].find_element(By.CSS_SELECTOR, f".{k}").text.strip()
                     for k in ("name", "state", "remote", "queued", "inflight", "sent",
                               "received", "dropped")}
            remote_cell = rows[0].find_element(By.CSS_SELECTOR, ".remote")
            cells["remote_live"] = str("configured" not in remote_cell.get_attribute("class"))
            return cells

        def row_with(**want: str) -> Callable[[], dict[str, str] | None]:
            return lambda: (r if (r := row()) and all(r[k] == v for k, v in want.items())
                            else None)

        try:
            driver.get(f"http://127.0.0.1:{edge.broker.http_port}/")
            _wait("the bridges card", lambda: driver.find_element(By.ID, "bridges")
                  .is_displayed())
            got = _wait("the bridge row: connected to the cloud",
                        row_with(state="connected", remote=remote, remote_live="True"))
            assert got["name"] == "uplink", got

            publisher = _paho("bridge-publisher", tcp_port)
            try:
                for i in range(3):
                    publisher.publish(f"up/{i}", b"x", qos=1).wait_for_publish(5)
            finally:
                _close(publisher)
            _wait("sent = 3 in the bridge row",
                  row_with(state="connected", sent="3", queued="0", inflight="0",
                           dropped="0"))

            cloud.stop()
            _wait("the bridge row: disconnected", row_with(state="disconnected"))
            publisher = _paho("bridge-publisher-2", tcp_port)
            try:
                for i in range(2):
                    publisher.publish(f"up/later/{i}", b"y", qos=1).wait_for_publish(5)
            finally:
                _close(publisher)
            got = _wait("queued = 2 in the bridge row while the cloud is down",
                        row_with(state="disconnected", queued="2", sent="3"))
            # not connected: the configured address, marked as such
            assert got["remote"] == remote and got["remote_live"] == "False", got
            errors = [e for e in driver.get_log("browser")
                      if e.get("level") == "SEVERE" and e.get("source") == "javascript"]
            assert not errors, errors
        except BaseException:
            with contextlib.suppress(WebDriverException):
                for entry in driver.get_log("browser"):
                    print("browser:", entry.get("level"), entry.get("message"))
            raise
        finally:
            with contextlib.suppress(WebDriverException):
                driver.save_screenshot(str(SCREENSHOT.with_name("dashboard-bridges.png")))
