"""The accepting CONNACK, byte for byte, at each protocol level (a raw socket): 3.1.1 sets
Session Present when a stored session is resumed [MQTT-3.2.2-2] and clears it for a new one
[MQTT-3.2.2-3]; 3.1's byte is reserved and stays 0 even when its session was kept; 5.0's
carries properties after the two bytes."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import BrokerThread

from .helpers import HOST, unique_id

pytestmark = pytest.mark.timeout(30)


def _connect(level: int, client_id: str, clean: bool) -> bytes:
    name = b"MQIsdp" if level == 3 else b"MQTT"
    cid = client_id.encode()
    body = (len(name).to_bytes(2, "big") + name + bytes((level, 0x02 if clean else 0x00))
            + (60).to_bytes(2, "big") + (b"\x00" if level == 5 else b"")
            + len(cid).to_bytes(2, "big") + cid)
    return bytes((0x10, len(body))) + body


def _connack(port: int, level: int, client_id: str, clean: bool) -> bytes:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(_connect(level, client_id, clean))
        head = s.recv(2)
        body = b""
        while len(body) < head[1]:
            body += s.recv(head[1] - len(body))
        s.sendall(b"\xe0\x00")  # DISCONNECT
        return head + body


@pytest.mark.parametrize(("level", "new", "resumed"), [
    (3, "20 02 00 00", "20 02 00 00"),  # 3.1: reserved byte, no Session Present
    (4, "20 02 00 00", "20 02 01 00"),
])
def test_accepting_connack_bytes_3x(broker_thread: BrokerThread, level: int, new: str,
                                    resumed: str) -> None:
    cid = unique_id("ack-")
    port = broker_thread.port
    assert _connack(port, level, cid, clean=False).hex(" ") == new
    assert _connack(port, level, cid, clean=False).hex(" ") == resumed
    assert _connack(port, level, cid, clean=True).hex(" ") == new


def test_accepting_connack_5_carries_properties(broker_thread: BrokerThread) -> None:
    data = _connack(broker_thread.port, 5, unique_id("ack5-"), clean=True)
    assert data[0] == 0x20 and data[2:4] == b"\x00\x00" and len(data) > 4
