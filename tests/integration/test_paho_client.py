"""devices.paho_client.Client: paho-mqtt with its QoS 2 reconnect fix. A raw socket plays the
broker: it takes a QoS 2 PUBLISH, answers PUBREC, reads the PUBREL and dies before PUBCOMP.
While nothing listens, the client's reconnect attempts fail (counted); then the broker is back
with the session. The client must resend the PUBREL, never the PUBLISH [MQTT-4.3.3-6], or the
broker, which released the packet identifier on the PUBREL, takes a new message
[MQTT-4.3.3-12]. (paho-mqtt 2.2.0's own Client fails this: it resends the PUBLISH with DUP
clear once two attempts have failed; that was the rare duplicate in test_bridge_faults.)"""

from __future__ import annotations

import socket
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.paho_client import Client

from .brokerproc import free_port

pytestmark = pytest.mark.timeout(30)


def _listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1)
    s.settimeout(10)
    return s


def _read(conn: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            assert chunk, "the client closed the connection"
            data += chunk
        return data
    first = exactly(1)[0]
    length, mult = 0, 1
    while True:
        b = exactly(1)[0]
        length += (b & 127) * mult
        mult *= 128
        if not b & 128:
            break
    return first, exactly(length)


@pytest.mark.parametrize("v5", [False, True], ids=["3.1.1", "5.0"])
def test_a_pubrel_owed_stays_a_pubrel_however_many_reconnects_fail(v5: bool) -> None:
    port = free_port()
    server = _listen(port)
    attempts: list[float] = []
    if v5:
        c = Client(CallbackAPIVersion.VERSION2, "pubrel-owed", protocol=mqtt.MQTTv5)
    else:
        c = Client(CallbackAPIVersion.VERSION2, "pubrel-owed", clean_session=False)
    c.reconnect_delay_set(0.05, 0.05)
    c.on_pre_connect = lambda *_a: attempts.append(time.monotonic())
    connack = bytes((0x20, 3, 0, 0, 0)) if v5 else bytes((0x20, 2, 0, 0))
    try:
        if v5:
            c.connect("127.0.0.1", port, clean_start=False)
        else:
            c.connect("127.0.0.1", port)
        c.loop_start()
        conn, _ = server.accept()
        with conn:
            assert _read(conn)[0] == 0x10  # CONNECT
            conn.sendall(connack)
            c.publish("t", b"once", 2)
            first, body = _read(conn)
            assert first == 0x34, f"QoS 2 PUBLISH expected, got {first:#x}"
            pid = body[3:5]  # (after the 1-byte topic "t")
            conn.sendall(bytes((0x50, 2)) + pid)  # PUBREC
            first, body = _read(conn)
            assert (first, body[:2]) == (0x62, pid), "PUBREL expected"
            before = len(attempts)
            server.close()  # the broker dies before its PUBCOMP: nothing listens
        deadline = time.monotonic() + 10
        while len(attempts) < before + 3:  # (three failed attempts, three resets)
            assert time.monotonic() < deadline, "the client did not try to reconnect"
            time.sleep(0.01)
        server = _listen(port)
        conn, _ = server.accept()
        with conn:
            assert _read(conn)[0] == 0x10
            conn.sendall(bytes((0x20, 3, 1, 0, 0)) if v5 else bytes((0x20, 2, 1, 0)))
            first, body = _read(conn)  # the session is present: what was owed comes again
            assert first != 0x34 and first != 0x3C, \
                "the PUBLISH was resent after its PUBREL [MQTT-4.3.3-6]"
            assert (first, body[:2]) == (0x62, pid), f"PUBREL expected, got {first:#x}"
    finally:
        c.loop_stop()
        server.close()

