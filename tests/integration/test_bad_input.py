"""Bad input never takes the broker down.

Every malformed or forbidden input below goes to a live broker over a real socket. Each must:

* close that one connection within 2 s (MQTT 3.1.1 has no server DISCONNECT: closing the
  network connection is how a server reports a malformed packet or a protocol violation
  [MQTT-4.8.0-1]), sending nothing first unless the spec asks for a CONNACK;
* leave other clients alone: an already-connected client subscribed to ``ok/#`` still receives
  a message published after the bad input, by a client that connects afterwards;
* leave a WARNING on the ``mqttbroker`` logger naming the client (its id, or before CONNECT its
  address) and the reason, and count one protocol error in ``metrics.protocol_errors``.

Each row's id cites the rule it checks.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest

from mqttbroker.broker import Broker
from mqttbroker.protocol.packets import Publish, Will
from mqttbroker.protocol.primitives import encode_varint
from mqttbroker.transports.rawtcp import DEFER_ACCEPT_S
from tests.conftest import base_config
from tests.integration.rawmqtt import RawClient, connect_bytes, frame, mqtt_string

pytestmark = pytest.mark.timeout(30)

MAX_PACKET = 1024  # mqtt.max_packet_size for this module's broker
CLOSE_WITHIN = 2.0


@pytest.fixture
def broker_config() -> dict[str, Any]:
    return base_config(max_packet_size=MAX_PACKET)


# -- byte builders --------------------------------------------------------------------------------

def pid(n: int = 1) -> bytes:
    return n.to_bytes(2, "big")


def publish(topic: bytes | str, payload: bytes = b"x", qos: int = 0, first: int | None = None,
            packet_id: int = 1) -> bytes:
    body = mqtt_string(topic) + (pid(packet_id) if qos else b"") + payload
    return frame(0x30 | (qos << 1) if first is None else first, body)


def connect_raw(flags: int, payload: bytes, name: bytes = b"MQTT", level: int = 4,
                keepalive: int = 60) -> bytes:
    """A CONNECT with the given connect flags and payload, unchecked."""
    body = mqtt_string(name) + bytes((level, flags)) + keepalive.to_bytes(2, "big") + payload
    return frame(0x10, body)


BAD_ID = "bad-client"


@dataclass(frozen=True)
class BadInput:
    data: bytes
    reason: str  # a regex the WARNING line must match (case-insensitive)
    connected: bool = True  # sent after a valid CONNECT (else as the first bytes)
    reply: bytes | None = b""  # what the server may send before closing (None: not checked)


ROWS: dict[str, BadInput] = {
    # -- framing ------------------------------------------------------------------------------
    # [MQTT-1.5.5] / [MQTT-2.2.3] the Remaining Length is at most four bytes
    "remaining_length_5_bytes_mqtt_2_2_3":
        BadInput(b"\x30\xff\xff\xff\xff\x7f", r"remaining length"),
    "remaining_length_5_bytes_before_connect_mqtt_2_2_3":
        BadInput(b"\x10\xff\xff\xff\xff\x01", r"remaining length", connected=False, reply=None),
    # [MQTT-2.2.1] packet types 0 and (in 3.1.1) 15 are reserved
    "packet_type_0_mqtt_2_2_1": BadInput(b"\x00\x00", r"type 0|reserved"),
    "packet_type_15_in_3_1_1_mqtt_2_2_1": BadInput(b"\xf0\x00", r"AUTH|type 15|reserved"),
    # -- fixed-header flags [MQTT-2.2.2-1] [MQTT-2.2.2-2] -----------------------------------------
    "pubrel_flags_0x60_mqtt_3_6_1_1": BadInput(b"\x60\x02" + pid(), r"flags"),
    "subscribe_flags_0x80_mqtt_3_8_1_1":
        BadInput(frame(0x80, pid() + mqtt_string("a") + b"\x00"), r"flags"),
    "unsubscribe_flags_0xa0_mqtt_3_10_1_1":
        BadInput(frame(0xA0, pid() + mqtt_string("a")), r"flags"),
    "pingreq_flags_0xc1_mqtt_2_2_2_2": BadInput(b"\xc1\x00", r"flags"),
    "disconnect_flags_0xe1_mqtt_2_2_2_2": BadInput(b"\xe1\x00", r"flags"),
    "puback_flags_0x41_mqtt_2_2_2_2": BadInput(b"\x41\x02" + pid(), r"flags"),
    # -- PUBLISH -----------------------------------------------------------------------------------
    "publish_qos3_mqtt_3_3_1_4": BadInput(publish("ok/q3", qos=3), r"QoS 3"),
    "publish_dup_with_qos0_mqtt_3_3_1_2": BadInput(publish("ok/d", first=0x38), r"DUP"),
    "publish_truncated_topic_mqtt_1_5_3":
        BadInput(frame(0x30, b"\x00\x10ok/"), r"truncated"),
    "publish_topic_length_only_one_byte_mqtt_1_5_3":
        BadInput(frame(0x30, b"\x00"), r"truncated"),
    "publish_invalid_utf8_topic_mqtt_1_5_3_1": BadInput(publish(b"ok/\xff\xfe"), r"UTF-?8"),
    "publish_surrogate_topic_ed_a0_80_mqtt_1_5_3_1":
        BadInput(publish(b"ok/\xed\xa0\x80"), r"UTF-?8"),
    "publish_overlong_utf8_topic_c0_af_mqtt_1_5_3_1":
        BadInput(publish(b"ok/\xc0\xaf"), r"UTF-?8"),
    "publish_topic_with_u0000_mqtt_1_5_3_2": BadInput(publish(b"ok/a\x00b"), r"U\+0000"),
    "publish_topic_wildcard_plus_mqtt_3_3_2_2": BadInput(publish("ok/+/x"), r"wildcard"),
    "publish_topic_wildcard_hash_mqtt_3_3_2_2": BadInput(publish("ok/#"), r"wildcard"),
    "publish_empty_topic_mqtt_4_7_3_1": BadInput(publish(""), r"empty topic"),
    "publish_qos1_packet_id_0_mqtt_2_3_1_1":
        BadInput(publish("ok/p", qos=1, packet_id=0), r"identifier 0"),
    # announces 2000 bytes against max_packet_size 1024: only the fixed header is sent, so the
    # broker must refuse before the body arrives
    "publish_over_max_packet_size_header_only":
        BadInput(b"\x30" + encode_varint(2000 - 3),
                 r"exceeds|too large|maximum"),
    # -- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------------------
    "subscribe_no_filters_mqtt_3_8_3_3": BadInput(frame(0x82, pid()), r"no topic filter"),
    "subscribe_qos3_mqtt_3_8_3_4":
        BadInput(frame(0x82, pid() + mqtt_string("ok/#") + b"\x03"), r"QoS 3"),
    "subscribe_reserved_option_bits_mqtt_3_8_3_4":
        BadInput(frame(0x82, pid() + mqtt_string("ok/#") + b"\x04"), r"reserved"),
    "subscribe_missing_qos_byte_mqtt_3_8_3_1":
        BadInput(frame(0x82, pid() + mqtt_string("ok/#")), r"truncated"),
    "subscribe_invalid_utf8_filter_mqtt_1_5_3_1":
        BadInput(frame(0x82, pid() + mqtt_string(b"ok/\xed\xa0\x80") + b"\x00"), r"UTF-?8"),
    "unsubscribe_no_filters_mqtt_3_10_3_2": BadInput(frame(0xA2, pid()), r"no topic filter"),
    # -- CONNECT -----------------------------------------------------------------------------------
    "first_packet_not_connect_pingreq_mqtt_3_1_0_1":
        BadInput(b"\xc0\x00", r"not CONNECT", connected=False),
    "first_packet_not_connect_publish_mqtt_3_1_0_1":
        BadInput(publish("ok/early"), r"not CONNECT", connected=False),
    "second_connect_mqtt_3_1_0_2": BadInput(connect_bytes(BAD_ID), r"second CONNECT"),
    "connect_reserved_flag_mqtt_3_1_2_3":
        BadInput(connect_raw(0x03, mqtt_string("r1")), r"reserved", connected=False, reply=None),
    # [MQTT-3.1.2-1] a wrong protocol name: the server may close without CONNACK (we must)
    "connect_bad_protocol_name_mqtt_3_1_2_1":
        BadInput(connect_raw(0x02, mqtt_string("r2"), name=b"MQTX"), r"protocol name",
                 connected=False, reply=b""),
    # [MQTT-3.1.2-2] an unsupported level: CONNACK 0x01, then close
    "connect_protocol_level_6_mqtt_3_1_2_2":
        BadInput(connect_raw(0x02, mqtt_string("r3"), level=6), r"unsupported protocol",
                 connected=False, reply=b"\x20\x02\x00\x01"),
    "connect_will_qos3_mqtt_3_1_2_14":
        BadInput(connect_raw(0x02 | 0x04 | 0x18, mqtt_string("r4") + mqtt_string("w/t")
                             + mqtt_string("bye")), r"QoS 3", connected=False, reply=None),
    "connect_will_retain_without_will_flag_mqtt_3_1_2_15":
        BadInput(connect_raw(0x02 | 0x20, mqtt_string("r5")), r"will flag", connected=False,
                 reply=None),
    "connect_will_qos_without_will_flag_mqtt_3_1_2_13":
        BadInput(connect_raw(0x02 | 0x08, mqtt_string("r6")), r"will flag", connected=False,
                 reply=None),
    "connect_password_without_username_mqtt_3_1_2_22":
        BadInput(connect_raw(0x02 | 0x40, mqtt_string("r7") + mqtt_string("pw")),
                 r"password", connected=False, reply=None),
    "connect_will_topic_wildcard_mqtt_3_3_2_2":
        BadInput(connect_bytes("r8", will=Will("ok/will/#", b"bye")), r"wildcard",
                 connected=False, reply=None),
    "connect_truncated_client_id_mqtt_1_5_3":
        BadInput(connect_raw(0x02, b"\x00\x20r9"), r"truncated", connected=False, reply=None),
    "connect_invalid_utf8_client_id_mqtt_1_5_3_1":
        BadInput(connect_raw(0x02, mqtt_string(b"r\xed\xa0\x80")), r"UTF-?8", connected=False,
                 reply=None),
    # -- packets only a server sends [MQTT-2.2.1] --------------------------------------------------
    # (the reason must at least name the packet that was refused)
    "connack_from_client_mqtt_2_2_1": BadInput(b"\x20\x02\x00\x00", r"\bCONNACK\b"),
    "suback_from_client_mqtt_2_2_1": BadInput(b"\x90\x03" + pid() + b"\x00", r"\bSUBACK\b"),
    "unsuback_from_client_mqtt_2_2_1": BadInput(b"\xb0\x02" + pid(), r"\bUNSUBACK\b"),
    "pingresp_from_client_mqtt_2_2_1": BadInput(b"\xd0\x00", r"\bPINGRESP\b"),
    # -- acknowledgements and empty packets with the wrong length ----------------------------------
    "puback_body_too_short_mqtt_3_4_2": BadInput(b"\x40\x01\x00", r"truncated"),
    "puback_body_too_long_mqtt_3_4_2": BadInput(b"\x40\x03\x00\x01\x00", r"unexpected bytes"),
    "pingreq_with_body_mqtt_3_12": BadInput(b"\xc0\x01\x00", r"body"),
    "disconnect_with_body_mqtt_3_14": BadInput(b"\xe0\x01\x00", r"body"),
}


def warnings_for(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("mqttbroker") and r.levelno >= logging.WARNING]


async def healthy_subscriber(broker: Broker) -> RawClient:
    c = await RawClient.open(broker.port)
    ack = await c.connect("healthy", keepalive=0)
    assert ack.return_code == 0
    suback = await c.subscribe("ok/#", qos=1)
    assert suback.return_codes == [1]
    return c


async def assert_still_served(broker: Broker, healthy: RawClient, tag: str) -> None:
    """A new client can connect and publish; the old subscriber receives it."""
    pub = await RawClient.open(broker.port)
    assert (await pub.connect(f"publisher-{tag}")).return_code == 0
    await pub.publish("ok/after", tag.encode(), qos=1)
    msg = await healthy.next_publish(2.0)
    assert isinstance(msg, Publish)
    assert (msg.topic, msg.payload) == ("ok/after", tag.encode())
    await pub.disconnect()
    assert not healthy.closed


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
async def test_bad_input_closes_only_that_connection(
        broker: Broker, caplog: pytest.LogCaptureFixture, row: BadInput) -> None:
    caplog.set_level(logging.INFO, logger="mqttbroker")
    healthy = await healthy_subscriber(broker)
    bad = await RawClient.open(broker.port)
    if row.connected:
        assert (await bad.connect(BAD_ID)).return_code == 0
        who = BAD_ID
    else:
        who = bad.local_address
    errors_before = broker.metrics.protocol_errors
    seen = len(bad.received)
    caplog.clear()

    await bad.send(row.data)
    started = time.monotonic()
    assert await bad.expect_closed(CLOSE_WITHIN), (
        f"connection still open {CLOSE_WITHIN}s after {row.data!r}")
    took = time.monotonic() - started
    reply = bytes(bad.received[seen:])
    if row.reply is not None:
        assert reply == row.reply, f"server sent {reply!r} before closing, expected {row.reply!r}"

    lines = [m for m in warnings_for(caplog) if who in m]
    assert lines, (f"no WARNING naming {who!r}; mqttbroker warnings: {warnings_for(caplog)}")
    assert any(re.search(row.reason, m, re.IGNORECASE) for m in lines), (
        f"no WARNING for {who!r} matching /{row.reason}/: {lines}")
    assert broker.metrics.protocol_errors > errors_before

    await assert_still_served(broker, healthy, "after")
    assert took < CLOSE_WITHIN
    await healthy.disconnect()
    await bad.close()


WILL_ROWS = ["publish_qos3_mqtt_3_3_1_4", "publish_topic_wildcard_plus_mqtt_3_3_2_2",
             "subscribe_no_filters_mqtt_3_8_3_3", "second_connect_mqtt_3_1_0_2",
             "connack_from_client_mqtt_2_2_1", "remaining_length_5_bytes_mqtt_2_2_3"]


@pytest.mark.parametrize("name", WILL_ROWS)
async def test_bad_input_publishes_the_will_mqtt_3_1_2_8(broker: Broker, name: str) -> None:
    """[MQTT-3.1.2-8] the will is published when the server closes the connection because of a
    protocol error (3.1.2.5 lists it among the situations that publish it)."""
    healthy = await healthy_subscriber(broker)
    bad = await RawClient.open(broker.port)
    will = Will("ok/will", b"gone", 1, False)
    assert (await bad.connect(BAD_ID, will=will)).return_code == 0
    await bad.send(ROWS[name].data)
    assert await bad.expect_closed(CLOSE_WITHIN)
    msg = await healthy.next_publish(2.0)
    assert (msg.topic, msg.payload, msg.qos) == ("ok/will", b"gone", 1)
    await healthy.disconnect()


async def test_over_max_packet_size_refused_before_body(broker: Broker,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A 2000-byte PUBLISH against max_packet_size 1024 is refused once its header is in: the
    broker neither waits for nor buffers the body."""
    caplog.set_level(logging.INFO, logger="mqttbroker")
    healthy = await healthy_subscriber(broker)
    bad = await RawClient.open(broker.port)
    assert (await bad.connect(BAD_ID)).return_code == 0
    body = mqtt_string("ok/big") + b"z" * (2000 - 3 - 8)
    packet = frame(0x30, body)
    assert len(packet) == 2000
    header_len = 3  # 0x30 and a two-byte Remaining Length
    await bad.send(packet[:header_len])
    assert await bad.expect_closed(CLOSE_WITHIN), "broker waited for the body of an oversize packet"
    assert any(BAD_ID in m and "1024" in m for m in warnings_for(caplog)), warnings_for(caplog)
    await assert_still_served(broker, healthy, "big")
    await healthy.disconnect()


@pytest.mark.parametrize("size, allowed", [(MAX_PACKET, True), (MAX_PACKET + 1, False)],
                         ids=["exactly_max_packet_size_accepted", "one_byte_over_refused"])
async def test_max_packet_size_boundary(broker: Broker, size: int, allowed: bool) -> None:
    healthy = await healthy_subscriber(broker)
    c = await RawClient.open(broker.port)
    assert (await c.connect("sizer")).return_code == 0
    topic = mqtt_string("ok/size")
    payload = b"p" * (size - 3 - len(topic))  # 0x30 + two-byte Remaining Length + body
    packet = frame(0x30, topic + payload)
    assert len(packet) == size
    await c.send(packet)
    if allowed:
        msg = await healthy.next_publish(2.0)
        assert msg.topic == "ok/size" and len(msg.payload) == len(payload)
        await c.disconnect()
    else:
        assert await c.expect_closed(CLOSE_WITHIN)
        await assert_still_served(broker, healthy, "boundary")
    await healthy.disconnect()


@pytest.mark.parametrize("broker_config", [base_config(connect_timeout=0.5)],
                         ids=["connect_timeout_0.5"])
async def test_silent_socket_closed_after_connect_timeout(
        broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqttbroker")
    healthy = await healthy_subscriber(broker)
    silent = await RawClient.open(broker.port)
    started = time.monotonic()
    # the kernel hands a socket that says nothing to the broker after the listener's
    # deferral (TCP_DEFER_ACCEPT, transports/rawtcp.py); connect_timeout runs from there
    limit = DEFER_ACCEPT_S + 0.5 + 1.0
    assert await silent.expect_closed(limit + 1.0), "a socket that never sent CONNECT stayed open"
    took = time.monotonic() - started
    assert 0.4 <= took < limit, f"closed after {took:.2f}s, connect_timeout is 0.5s"
    assert silent.received == b""
    assert any(silent.local_address in m for m in warnings_for(caplog)), warnings_for(caplog)
    await assert_still_served(broker, healthy, "silent")
    await healthy.disconnect()


@pytest.mark.parametrize("broker_config", [base_config(connect_timeout=0.5)],
                         ids=["connect_timeout_0.5"])
async def test_half_sent_connect_then_silence(broker: Broker,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Half a CONNECT, then nothing: still closed at connect_timeout, never waited on forever."""
    caplog.set_level(logging.INFO, logger="mqttbroker")
    healthy = await healthy_subscriber(broker)
    c = await RawClient.open(broker.port)
    packet = connect_bytes("half")
    started = time.monotonic()
    await c.send(packet[: len(packet) // 2])
    assert await c.expect_closed(3.0), "half a CONNECT kept the connection open"
    took = time.monotonic() - started
    assert took < 2.0, f"closed after {took:.2f}s, connect_timeout is 0.5s"
    assert c.received == b""
    assert any(c.local_address in m for m in warnings_for(caplog)), warnings_for(caplog)
    await assert_still_served(broker, healthy, "half-connect")
    await healthy.disconnect()


async def test_half_sent_packet_after_connect_then_silence(
        broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    """Half a PUBLISH, then nothing, from a client with keep-alive 1 s: the broker closes it
    after one and a half keep-alive periods [MQTT-3.1.2-24] and the partial packet is never
    delivered."""
    caplog.set_level(logging.INFO, logger="mqttbroker")
    healthy = await healthy_subscriber(broker)
    c = await RawClient.open(broker.port)
    assert (await c.connect("half-publish", keepalive=1)).return_code == 0
    packet = publish("ok/half", b"0123456789", qos=1)
    seen = len(c.received)  # the CONNACK
    started = time.monotonic()
    await c.send(packet[:7])
    assert await c.expect_closed(4.0), "half a PUBLISH kept the connection open past keep-alive"
    took = time.monotonic() - started
    assert 1.0 <= took < 3.0, f"closed after {took:.2f}s; keep-alive 1s x 1.5"
    assert c.received[seen:] == b"", "the broker answered half a packet"
    assert any("half-publish" in m and "keep-alive" in m for m in warnings_for(caplog)), (
        warnings_for(caplog))
    await assert_still_served(broker, healthy, "half-publish")  # ok/half was never delivered
    await healthy.disconnect()


async def test_slow_drip_is_not_a_control_packet_mqtt_3_1_2_24(broker: Broker) -> None:
    """[MQTT-3.1.2-24] with keep-alive 1 s, a client that sends no complete Control Packet for
    1.5 s must be disconnected. Dripping one byte of a PUBLISH every 0.3 s completes no packet,
    so it must not keep the connection (and its half-read packet) alive: slowloris."""
    healthy = await healthy_subscriber(broker)
    c = await RawClient.open(broker.port)
    assert (await c.connect("dripper", keepalive=1)).return_code == 0
    started = time.monotonic()  # the CONNECT was the last complete Control Packet
    packet = publish("ok/drip", b"d" * 60)
    closed = False
    for i in range(len(packet) - 1):  # never the last byte
        await c.send(packet[i:i + 1])
        if await c.expect_closed(0.3):
            closed = True
            break
        if time.monotonic() - started > 4.0:
            break
    took = time.monotonic() - started
    assert closed, (f"still connected {took:.1f}s after its last complete packet "
                    f"(keep-alive 1s): partial bytes count as keep-alive traffic")
    assert took < 3.0, f"closed after {took:.1f}s, keep-alive 1s x 1.5"
    await assert_still_served(broker, healthy, "drip")
    await healthy.disconnect()


async def test_protocol_errors_metric_counts_each_bad_connection(broker: Broker) -> None:
    before = broker.metrics.protocol_errors
    bad = [await RawClient.open(broker.port) for _ in range(3)]
    for c in bad:
        await c.send(b"\xc0\x00")  # [MQTT-3.1.0-1] PINGREQ before CONNECT
    assert all(await asyncio.gather(*(c.expect_closed(CLOSE_WITHIN) for c in bad)))
    assert broker.metrics.protocol_errors == before + 3


async def test_bad_inputs_in_one_burst_leave_no_connection_behind(broker: Broker) -> None:
    """Every row at once, each on its own socket: all closed, the broker's books balanced."""
    healthy = await healthy_subscriber(broker)
    clients: list[RawClient] = []
    for i, row in enumerate(ROWS.values()):
        c = await RawClient.open(broker.port)
        if row.connected:
            assert (await c.connect(f"burst-{i}")).return_code == 0
        clients.append(c)
    await asyncio.gather(*(c.send(row.data) for c, row in zip(clients, ROWS.values())))
    closed = await asyncio.gather(*(c.expect_closed(CLOSE_WITHIN) for c in clients))
    still_open = [name for name, ok in zip(ROWS, closed) if not ok]
    assert not still_open, f"connections left open: {still_open}"
    await assert_still_served(broker, healthy, "burst")
    await asyncio.sleep(0.05)
    assert set(broker.connections) == {"healthy"}
    sockets = getattr(broker, "_open", None)  # the broker's set of open connections
    if sockets is not None:
        assert len(sockets) == 1, sockets  # only the healthy client's
    await healthy.disconnect()


async def test_first_packet_not_connect_refused_on_its_first_byte(broker: Broker) -> None:
    """[MQTT-3.1.0-1] the fixed header's first byte already says the packet is not CONNECT: the
    broker has no reason to wait for (and buffer) the body."""
    c = await RawClient.open(broker.port)
    await c.send(b"\x30\x64")  # a PUBLISH announcing 100 bytes, body never sent
    assert await c.expect_closed(CLOSE_WITHIN), "broker waited for the body of a non-CONNECT"


async def test_huge_frame_before_connect_is_refused_from_its_header(broker: Broker) -> None:
    """Before CONNECT only a CONNECT-sized packet is read: a header announcing 200 MB closes
    the socket at once instead of making the broker buffer it."""
    c = await RawClient.open(broker.port)
    await c.send(b"\x10\x80\x80\x80\x64")  # CONNECT announcing 200 MiB
    assert await c.expect_closed(CLOSE_WITHIN), "broker accepted a 200 MiB CONNECT header"
