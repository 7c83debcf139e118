"""CONNECT edge cases this session's code answers, over real sockets (byte for byte):
an oversized MQTT 5 CONNECT whose first byte comes alone still gets MQTT 5's CONNACK 0x95; a
client id reserved for the broker's bridges is refused; a bridge bit on an MQTT 5 level is not
a level."""

from __future__ import annotations

import socket
import time

import pytest

from .v5helpers import Env

pytestmark = pytest.mark.timeout(30)


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace("|", " "))


def exchange(port: int, *parts: bytes) -> bytes:
    """Send ``parts`` one write each (a pause between), return what comes back until close."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        for part in parts:
            s.sendall(part)
            time.sleep(0.05)
        s.settimeout(5)
        got = b""
        while True:
            try:
                data = s.recv(4096)
            except (TimeoutError, ConnectionResetError):
                break
            if not data:
                break
            got += data
        return got


def test_oversized_v5_connect_split_across_reads_gets_connack_0x95(env: Env) -> None:
    """The CONNECT announces 16383 bytes, over max_connect_size 1024: refused from its header,
    in MQTT 5 (its level is read from every byte held, not only the last read's)."""
    env.start(max_connect_size=1024)
    got = exchange(env.port, b"\x10", h("FF 7F | 00 04 4D 51 54 54 | 05"))
    assert got[0] == 0x20 and got[2:4] == h("00 95"), got.hex()  # CONNACK, reason 0x95


@pytest.mark.parametrize(("level", "connack"), [(4, h("20 02 00 02")), (5, None)])
def test_bridge_client_ids_are_refused(env: Env, level: int, connack: bytes | None) -> None:
    """``$bridge/<name>`` is a bridge's own local id: 3.1.1 CONNACK 0x02, MQTT 5 0x85."""
    env.start()
    cid = b"$bridge/cloud"
    props = b"\x00" if level == 5 else b""
    body = b"\x00\x04MQTT" + bytes((level, 0x02)) + b"\x00\x3c" + props + \
        len(cid).to_bytes(2, "big") + cid
    got = exchange(env.port, bytes((0x10, len(body))) + body)
    if connack is not None:
        assert got == connack
    else:
        assert got[0] == 0x20 and got[3] == 0x85, got.hex()


def test_bridge_bit_on_an_mqtt5_level_is_unsupported_mqtt_3_1_2_2(env: Env) -> None:
    """Level 0x85 is no protocol level (try_private is for 3.x): CONNACK 0x01, closed."""
    env.start()
    body = b"\x00\x04MQTT\x85\x02\x00\x3c\x00\x00\x01c"
    assert exchange(env.port, bytes((0x10, len(body))) + body) == h("20 02 00 01")
