"""Packets a client sends right behind its CONNECT, before the CONNACK, in the same write.

MQTT 3.1.1 and 5.0 section 3.1.4: "Clients are allowed to send further Control Packets
immediately after sending a CONNECT Packet; Clients need not wait for a CONNACK Packet to
arrive from the Server." paho does exactly this when ``subscribe()`` follows ``connect()``.
A regression: with the failed-login defence on (the default), the packets read together with
the CONNECT were dropped, so such a client's SUBSCRIBE silently never happened.
"""

from __future__ import annotations

from typing import Any

import pytest

from mqttbroker.broker import Broker
from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.packets import Connack, Publish, Suback, Subscribe, Subscription
from tests.conftest import base_config
from tests.integration.rawmqtt import RawClient, connect_bytes


@pytest.fixture(params=[1.0, 0.0], ids=["login-defence-on", "login-defence-off"])
def broker_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    return base_config(auth_failure_delay=request.param)


@pytest.mark.parametrize("level", [4, 5])
async def test_packets_behind_connect_in_one_write_are_handled_mqtt_3_1_4(
        broker: Broker, level: int) -> None:
    """CONNECT + SUBSCRIBE + SUBSCRIBE + PUBLISH (QoS 1) in one write: CONNACK, both SUBACKs,
    and the message comes back through the subscription."""
    c = await RawClient.open(broker.port, level=level)
    try:
        data = connect_bytes(f"pipe-{level}", level=level)
        data += encode(Subscribe(1, [Subscription("pipe/a", 1)]), level)
        data += encode(Subscribe(2, [Subscription("pipe/b", 1)]), level)
        data += encode(Publish("pipe/a", b"hello", 1, False, False, 3), level)
        assert await c.send(data)
        assert isinstance(await c.read_packet(), Connack)
        acks = [await c._expect(Suback, 2.0), await c._expect(Suback, 2.0)]
        assert [a.packet_id for a in acks] == [1, 2]
        got = await c.next_publish()
        assert (got.topic, got.payload) == ("pipe/a", b"hello")
    finally:
        await c.close()
