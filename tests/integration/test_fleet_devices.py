"""Device behaviour seen from outside, with real paho clients: birth and will on the status
topic, the command topic (MQTT 5 request/response, 3.1.1 acknowledgement)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices.fleet import run_fleet
from devices.profile import Profile
from tests.conftest import BrokerThread


def start_fleet(port: int, devices: int, duration: float, profile: Profile) -> tuple[
        threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        result["report"], _ = run_fleet(f"mqtt://127.0.0.1:{port}", devices, duration, profile,
                                        processes=1, progress=False)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def watcher(port: int, topics: list[str]) -> tuple[mqtt.Client, list[mqtt.MQTTMessage]]:
    got: list[mqtt.MQTTMessage] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{time.monotonic_ns()}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    c.on_message = lambda cl, u, m: got.append(m)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for t in topics:
        c.subscribe(t, qos=1)
    return c, got


def wait_for(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
def test_devices_obey_commands_and_report_status(broker_thread: BrokerThread, v5: bool) -> None:
    """Each device announces itself online (retained), obeys {"interval": s} on its command
    topic, answers an MQTT 5 request on the response topic with the correlation data (3.1.1
    devices acknowledge on cmd/ack), and says offline when it stops."""
    port = broker_thread.port
    prof = Profile(name="cmd", v5_fraction=1.0 if v5 else 0.0, ramp_up=0.2, drain=1.0)
    c, got = watcher(port, ["fleet/+/status", "replies/#", "fleet/+/cmd/ack",
                            "fleet/sensor-000000/telemetry"])
    t, _result = start_fleet(port, 4, 6, prof)
    try:
        assert wait_for(lambda: {m.topic for m in got if m.payload == b"online"} >= {
            f"fleet/sensor-00000{i}/status" for i in range(4)}, 10), [m.topic for m in got]
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = "replies/test"
        props.CorrelationData = b"req-42"
        c.publish("fleet/sensor-000000/cmd", json.dumps({"interval": 0.2}).encode(), qos=1,
                  properties=props)
        reply_topic = "replies/test" if v5 else "fleet/sensor-000000/cmd/ack"
        assert wait_for(lambda: any(m.topic == reply_topic for m in got), 5)
        reply = next(m for m in got if m.topic == reply_topic)
        assert json.loads(reply.payload) == {"ok": True, "interval": 0.2}
        if v5:
            assert reply.properties.CorrelationData == b"req-42"
        # it now reports every 0.2 s: count telemetry over a second
        before = sum(1 for m in got if m.topic.endswith("/telemetry"))
        time.sleep(1.0)
        after = sum(1 for m in got if m.topic.endswith("/telemetry"))
        assert after - before >= 3, (before, after)
        t.join(30)
        assert not t.is_alive()
        assert wait_for(lambda: any(m.topic == "fleet/sensor-000000/status"
                                    and m.payload == b"offline" for m in got), 5)
    finally:
        c.loop_stop()
        c.disconnect()


def test_reconnect_storm_fires_wills(broker_thread: BrokerThread) -> None:
    """Devices that lose their link without DISCONNECT get their will published by the broker
    (status "offline"), then announce themselves "online" again after reconnecting."""
    port = broker_thread.port
    prof = Profile(name="storm", storm_at=0.4, ramp_up=0.2, backoff_initial=0.2,
                   backoff_max=1.0, drain=1.0)
    c, got = watcher(port, ["fleet/+/status"])
    t, result = start_fleet(port, 10, 5, prof)
    try:
        t.join(40)
        assert not t.is_alive()
        per_device: dict[str, list[bytes]] = {}
        for m in got:
            per_device.setdefault(m.topic, []).append(m.payload)
        assert len(per_device) == 10
        for topic, seq in per_device.items():
            # online, will "offline" at the drop, online again, offline at the end
            assert seq[:1] == [b"online"] and seq[-1] == b"offline", (topic, seq)
            assert seq.count(b"online") >= 2, (topic, seq)
        assert result["report"]["reconnects"] >= 10
    finally:
        c.loop_stop()
        c.disconnect()
