"""An MQTT 5 client is told why in 5.0's words: the Reason String of a DISCONNECT or a
refusing CONNACK cites the MQTT 5.0 rule number, not the 3.1.1 number of the same rule
(3.1.1 [MQTT-1.5.3-2] "no U+0000" is 5.0 [MQTT-1.5.4-2]; the keep-alive rule is 3.1.1
[MQTT-3.1.2-24] but 5.0 [MQTT-3.1.2-22], where 5.0's -24 is Maximum Packet Size).

Raw sockets send the bad packets; the Reason String (property 0x1F) is read off the wire.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from mqttbroker.protocol.packets import Connack
from mqttbroker.protocol.primitives import encode_string, encode_varint

from .helpers import unique_id
from .v5helpers import Env

pytestmark = pytest.mark.timeout(30)

REASON_STRING = 0x1F


def _publish(topic: bytes, qos: int, pid: int | None) -> bytes:
    """A v5 PUBLISH written by hand (the codec refuses to encode these), payload "x"."""
    body = len(topic).to_bytes(2, "big") + topic
    if pid is not None:
        body += pid.to_bytes(2, "big")
    body += b"\x00x"  # no properties, payload
    return bytes((0x30 | qos << 1,)) + encode_varint(len(body)) + body


@pytest.mark.parametrize(("packet", "v5_rule", "v311_rule"), [
    (_publish(b"a\x00b", 0, None), "[MQTT-1.5.4-2]", "[MQTT-1.5.3-2]"),
    (_publish(b"a/b", 1, 0), "[MQTT-2.2.1-3]", "[MQTT-2.3.1-1]"),
], ids=["U+0000 in a topic", "packet id 0"])
def test_disconnect_reason_string_cites_the_5_0_rule(env: Env, packet: bytes, v5_rule: str,
                                                     v311_rule: str) -> None:
    r, _ = env.raw_connect(unique_id("rule"))
    r.send_bytes(packet)
    d = r.expect_disconnect()
    assert d.reason_code == 0x81, d
    why = d.properties.get(REASON_STRING, "")
    assert v5_rule in why and v311_rule not in why, why


def test_refused_connect_cites_the_5_0_will_qos_rule(env: Env) -> None:
    """Will QoS 3: 3.1.1 [MQTT-3.1.2-14], 5.0 [MQTT-3.1.2-12] (5.0's -14 is about Will
    Retain). CONNACK 0x81 Malformed Packet, then the connection closes."""
    r = env.raw()
    body = (encode_string("MQTT") + bytes((5, 0x1E)) + b"\x00\x3c" + b"\x00"
            + encode_string(unique_id("wq")) + b"\x00" + encode_string("w") + b"\x00\x01x")
    r.send_bytes(b"\x10" + encode_varint(len(body)) + body)
    got = r.wait_closed()
    acks = [p for p in got if isinstance(p, Connack)]
    assert len(acks) == 1 and acks[0].return_code == 0x81, got
    why = acks[0].properties.get(REASON_STRING, "")
    assert "[MQTT-3.1.2-12]" in why and "-14]" not in why, why


def test_keepalive_timeout_cites_mqtt_3_1_2_22(env: Env) -> None:
    r, _ = env.raw_connect(unique_id("ka"), keep_alive=1)
    d = r.expect_disconnect(timeout=5.0)
    assert d.reason_code == 0x8D, d
    why = d.properties.get(REASON_STRING, "")
    assert "[MQTT-3.1.2-22]" in why and "3.1.2-24" not in why, why


def test_help_names_every_protocol_version() -> None:
    out = subprocess.run([sys.executable, "-m", "mqttbroker", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert "MQTT 3.1, 3.1.1 and 5.0 broker" in out, out
    import mqttbroker
    assert mqttbroker.__doc__ is not None and "5.0" in mqttbroker.__doc__
