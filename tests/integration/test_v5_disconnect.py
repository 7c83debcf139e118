"""Server-sent DISCONNECT [MQTT 3.14, 4.13]: an MQTT 5 client is told why the broker closes
its connection (takeover, keep-alive, malformed packet, protocol error, too large, receive
maximum, topic alias, shutdown, quota, QoS, retain), and a refused CONNECT gets a v5 CONNACK.

Raw sockets send what a client library would refuse to send.
"""

from __future__ import annotations

import logging
import time

import pytest

from mqttbroker.protocol.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Publish,
    Pubrec,
    Will,
)
from mqttbroker.protocol.primitives import encode_string, encode_varint
from tests.conftest import base_config

from .helpers import ConnectionClosed, unique_id, wait_until
from .v5helpers import Env, P


def frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def assert_server_disconnect(d: Disconnect, code: int) -> None:
    assert d.reason_code == code, f"DISCONNECT 0x{d.reason_code:02X}, expected 0x{code:02X}: {d}"
    # [MQTT-3.14.2-2] the Session Expiry Interval MUST NOT be sent on a DISCONNECT by the server
    assert P.SESSION_EXPIRY_INTERVAL not in d.properties, d.properties


# -- 0x8E session taken over ---------------------------------------------------------------------

def test_takeover_disconnect_0x8e_mqtt_3_1_4_3(env: Env) -> None:
    """[MQTT-3.1.4-3] a second connection with the same client id: the first gets DISCONNECT
    0x8E (Session taken over), then its connection is closed."""
    cid = unique_id("dto")
    first, _ = env.raw_connect(cid)
    second, _ = env.raw_connect(cid)
    assert_server_disconnect(first.expect_disconnect(), 0x8E)
    second.send(Pingreq())
    second.expect(Pingresp)


def test_takeover_paho_sees_0x8e(env: Env) -> None:
    """paho-mqtt v5 reports the server's DISCONNECT 0x8E when another connection takes its
    client id over."""
    cid = unique_id("dtop")
    old = env.paho(cid)
    env.paho(cid)
    assert old.wait_disconnected() == 0x8E
    assert old.disconnect_from_server


def test_takeover_of_v311_client_gets_no_disconnect_packet(env: Env) -> None:
    """A 3.1.1 connection has no server DISCONNECT: it is just closed."""
    cid = unique_id("dto3")
    old = env.raw3()
    old.connect(cid)
    env.raw_connect(cid)
    assert old.wait_closed() == []


# -- 0x8D keep-alive timeout -------------------------------------------------------------------

def test_keepalive_timeout_disconnect_0x8d_mqtt_3_1_2_22(env: Env) -> None:
    """[MQTT-3.1.2-22] keep-alive 1 s and silence: closed after 1.5 s, with DISCONNECT 0x8D
    (Keep Alive timeout) for a v5 client."""
    r, _ = env.raw_connect(unique_id("dka"), keep_alive=1)
    t0 = time.monotonic()
    d = r.expect_disconnect(timeout=4.0)
    elapsed = time.monotonic() - t0
    assert_server_disconnect(d, 0x8D)
    assert 1.3 <= elapsed <= 2.6, f"closed after {elapsed:.2f}s, expected about 1.5s"


# -- 0x81 malformed packet ------------------------------------------------------------------------

@pytest.mark.parametrize("packet", [
    # [MQTT-3.3.1-4] QoS 3: topic "a/b", packet id 1, no properties, payload "x"
    frame(0x36, encode_string("a/b") + b"\x00\x01\x00x"),
    # [MQTT-1.5.4-1] ill-formed UTF-8 in the topic name
    frame(0x30, b"\x00\x02\xff\xfe\x00x"),
    # [MQTT-1.5.4-1] an encoded surrogate (U+D800) in the topic name
    frame(0x30, b"\x00\x03\xed\xa0\x80\x00x"),
    # [MQTT-1.5.4-2] U+0000 in the topic name
    frame(0x30, b"\x00\x03a\x00b\x00x"),
    # [MQTT-2.2.1-2]/[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH
    frame(0x38, encode_string("a/b") + b"\x00x"),
    # PUBLISH property block longer than the packet
    frame(0x30, encode_string("a/b") + b"\x09\x01"),
    # [MQTT-3.8.1-1] SUBSCRIBE with reserved flags 0 instead of 2
    frame(0x80, b"\x00\x01\x00" + encode_string("a") + b"\x00"),
    # [MQTT-3.8.3-5] SUBSCRIBE options reserved bits set
    frame(0x82, b"\x00\x01\x00" + encode_string("a") + b"\xc0"),
    # [MQTT-3.14.1-1] DISCONNECT with reserved flags set
    frame(0xE1, b"\x00"),
], ids=["qos3", "bad-utf8", "surrogate", "nul", "dup-qos0", "props-overrun", "sub-flags",
        "sub-options", "disconnect-flags"])
def test_malformed_packet_disconnect_0x81_mqtt_4_13_1_1(env: Env, packet: bytes) -> None:
    """[MQTT-4.13.1-1] a malformed packet closes the connection; a v5 client is first sent
    DISCONNECT 0x81 (Malformed Packet)."""
    r, _ = env.raw_connect(unique_id("dmal"))
    r.send_bytes(packet)
    assert_server_disconnect(r.expect_disconnect(), 0x81)


# -- 0x82 protocol error ---------------------------------------------------------------------------

def _two_payload_format_indicators() -> bytes:
    props = b"\x01\x00\x01\x01"  # Payload Format Indicator 0, then 1: twice
    return frame(0x30, encode_string("a/b") + encode_varint(len(props)) + props + b"x")


@pytest.mark.parametrize("what", ["second-connect", "publish-subscription-id",
                                  "duplicate-property", "auth-without-method",
                                  "empty-topic-no-alias", "subscription-id-zero"])
def test_protocol_error_disconnect_0x82(env: Env, what: str) -> None:
    """DISCONNECT 0x82 (Protocol Error), then close, for: a second CONNECT [MQTT-3.1.0-2];
    a PUBLISH from the client with a Subscription Identifier [MQTT-3.3.4-6]; a property other
    than User Property twice [MQTT 2.2.2.2]; AUTH when CONNECT had no Authentication Method
    [MQTT-4.12.0-7]; a zero-length topic without a Topic Alias [MQTT 3.3.2.1]; a SUBSCRIBE with
    Subscription Identifier 0 [MQTT 3.8.2.1.2]."""
    cid = unique_id("dpe")
    r, _ = env.raw_connect(cid)
    if what == "second-connect":
        r.send(Connect("MQTT", 5, cid, True, 60))
    elif what == "publish-subscription-id":
        r.send(Publish("a/b", b"x", 1, False, False, 1, {P.SUBSCRIPTION_IDENTIFIER: [3]}))
    elif what == "duplicate-property":
        r.send_bytes(_two_payload_format_indicators())
    elif what == "auth-without-method":
        r.send(Auth(0x19, {P.AUTHENTICATION_METHOD: "SCRAM-SHA-256"}))
    elif what == "empty-topic-no-alias":
        r.send(Publish("", b"x", 0))
    else:
        body = b"\x00\x01" + b"\x02\x0b\x00" + encode_string("a") + b"\x00"
        r.send_bytes(frame(0x82, body))
    assert_server_disconnect(r.expect_disconnect(), 0x82)


def test_first_packet_not_connect_gets_no_disconnect_mqtt_3_14_0_1(env: Env) -> None:
    """[MQTT-3.1.0-1] the first packet must be CONNECT; [MQTT-3.14.0-1] no DISCONNECT before a
    successful CONNACK: the connection is just closed."""
    r = env.raw()
    r.send(Pingreq())
    assert r.wait_closed() == []


# -- 0x95 packet too large -------------------------------------------------------------------------

def test_packet_too_large_disconnect_0x95(env: Env) -> None:
    """A PUBLISH bigger than the Maximum Packet Size the CONNACK announced [MQTT-3.2.2-15]:
    DISCONNECT 0x95 (Packet too large) [MQTT 3.2.2.3.6]."""
    env.start(max_packet_size=1000)
    r, ack = env.raw_connect(unique_id("dbig"))
    assert ack.properties.get(P.MAXIMUM_PACKET_SIZE) == 1000
    r.send(Publish("big/x", b"x" * 2000, 0))
    assert_server_disconnect(r.expect_disconnect(), 0x95)


def test_packet_at_maximum_size_is_accepted(env: Env) -> None:
    """A packet of exactly max_packet_size bytes is allowed."""
    env.start(max_packet_size=1000)
    r, _ = env.raw_connect(unique_id("dfit"))
    head = 1 + 2 + 2 + len("fit/x") + 2 + 1  # type, 2-byte length, topic, packet id, props
    ack = r.publish5("fit/x", b"x" * (1000 - head), qos=1)
    assert ack is not None and ack.reason_code < 0x80


# -- 0x93 receive maximum exceeded -----------------------------------------------------------------

def test_receive_maximum_exceeded_disconnect_0x93(env: Env) -> None:
    """receive_maximum 2: a third QoS 2 PUBLISH while two wait for PUBREL exceeds the window
    the server announced [MQTT-3.3.4-7]: DISCONNECT 0x93 (Receive Maximum exceeded)."""
    env.start(receive_maximum=2)
    r, ack = env.raw_connect(unique_id("drm"))
    assert ack.properties.get(P.RECEIVE_MAXIMUM) == 2
    for pid in (1, 2):
        r.send(Publish("rm/x", b"%d" % pid, 2, False, False, pid))
        assert r.expect(Pubrec).packet_id == pid
    r.send(Publish("rm/x", b"3", 2, False, False, 3))
    got = r.wait_closed()
    discs = [p for p in got if isinstance(p, Disconnect)]
    assert discs and discs[-1].reason_code == 0x93, got


# -- 0x94 topic alias invalid --------------------------------------------------------------------

@pytest.mark.parametrize("alias", [0, 11], ids=["alias-0", "above-maximum"])
def test_topic_alias_invalid_disconnect_0x94(env: Env, alias: int) -> None:
    """Topic Alias 0 [MQTT-3.3.2-8] or one above the Topic Alias Maximum the CONNACK gave (10)
    [MQTT-3.3.2-9]: DISCONNECT 0x94 (Topic Alias invalid) [MQTT 3.3.4, step 1]."""
    r, _ = env.raw_connect(unique_id("dta"))
    r.send(Publish("ta/x", b"x", 0, properties={P.TOPIC_ALIAS: alias}))
    assert_server_disconnect(r.expect_disconnect(), 0x94)


def test_unknown_topic_alias_with_empty_topic_disconnect_0x82(env: Env) -> None:
    """An empty topic with an alias never mapped on this connection. MQTT 5.0 section 3.3.4,
    step 3a: "If the packet has a zero length Topic Name field it is a Protocol Error and the
    receiver uses DISCONNECT with Reason Code of 0x82" (not 0x94, which is for an alias of 0
    or above the maximum)."""
    r, _ = env.raw_connect(unique_id("dtu"))
    r.send(Publish("", b"x", 0, properties={P.TOPIC_ALIAS: 3}))
    assert_server_disconnect(r.expect_disconnect(), 0x82)


# -- 0x8B server shutting down ---------------------------------------------------------------------

def test_shutdown_disconnect_0x8b(env: Env) -> None:
    """Broker shutdown: each v5 client gets DISCONNECT 0x8B (Server shutting down), paho sees
    it too; a 3.1.1 client is simply closed."""
    bt = env.start()
    raw, _ = env.raw_connect(unique_id("dsd"))
    pc = env.paho(unique_id("dsdp"))
    old = env.raw3()
    old.connect(unique_id("dsd3"))
    bt.stop()
    assert_server_disconnect(raw.expect_disconnect(), 0x8B)
    assert pc.wait_disconnected() == 0x8B
    assert old.wait_closed() == []


# -- 0x97 quota exceeded --------------------------------------------------------------------------

def test_slow_reader_quota_exceeded_0x97(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """A v5 subscriber that never reads while a QoS 1 flood is published to it: once its
    write buffer passes mqtt.max_write_buffer the broker drops it with reason 0x97 (Quota
    exceeded). The client cannot read that DISCONNECT behind megabytes of PUBLISH, so the test
    checks the broker side: the connection leaves ``broker.connections`` and the log names
    0x97; the socket then reaches EOF."""
    caplog.set_level(logging.INFO, logger="mqttbroker")
    env.start(max_write_buffer=1024 * 1024, write_buffer_limit=1024,
              max_inflight_messages=65535, receive_maximum=100)
    sid = unique_id("dqs")
    slow = env.raw(rcvbuf=4096)
    ack = slow.connect5(sid, properties={P.RECEIVE_MAXIMUM: 65535})
    assert ack.return_code == 0
    assert slow.subscribe5(("flood/#", 1)).return_codes == [1]
    pub, _ = env.raw_connect(unique_id("dqp"))
    payload = b"q" * 65536
    sent = 0
    deadline = time.monotonic() + 20
    while env.connected(sid) and sent < 640 and time.monotonic() < deadline:
        pids = []
        for _ in range(50):  # stay inside the broker's receive maximum of 100
            pid = pub.next_packet_id()
            pids.append(pid)
            pub.send(Publish("flood/x", payload, 1, False, False, pid))
        for _ in pids:
            pub.recv(timeout=10)
        sent += len(pids)
    wait_until(lambda: not env.connected(sid), timeout=5,
               what=f"the broker to drop the slow reader (published {sent} x 64 KiB)")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "0x97" in text or "QUOTA_EXCEEDED" in text.upper(), (
        "the broker dropped the slow reader without logging reason 0x97:\n" + text[-2000:])
    # the socket is closed once what was already buffered has been read (or discarded)
    try:
        got = slow.wait_closed(timeout=10)
    except ConnectionClosed:
        got = []
    discs = [p for p in got if isinstance(p, Disconnect)]
    assert not discs or discs[-1].reason_code == 0x97, discs


# -- 0x9B QoS not supported, 0x9A retain not supported ---------------------------------------------

@pytest.mark.parametrize("max_qos,qos", [(1, 2), (0, 1)])
def test_publish_above_maximum_qos_disconnect_0x9b(env: Env, max_qos: int, qos: int) -> None:
    """[MQTT-3.2.2-11] a client must respect Maximum QoS; a PUBLISH above it gets
    DISCONNECT 0x9B (QoS not supported) [MQTT 3.2.2.3.4]."""
    env.start(max_qos=max_qos)
    r, _ = env.raw_connect(unique_id("dqos"))
    r.send(Publish("q/x", b"x", qos, False, False, 1))
    assert_server_disconnect(r.expect_disconnect(), 0x9B)


def test_will_qos_above_maximum_connack_0x9b_mqtt_3_2_2_12(env: Env) -> None:
    """[MQTT-3.2.2-12] a will QoS the server does not support: CONNACK 0x9B, then close."""
    env.start(max_qos=1)
    r = env.raw()
    ack = r.connect5(unique_id("dwq"), will=Will("w/x", b"bye", 2, False))
    assert ack.return_code == 0x9B and not ack.session_present
    assert r.wait_closed() == []


def test_publish_retain_unsupported_disconnect_0x9a(env: Env) -> None:
    """retain_available false: CONNACK says Retain Available 0 and a PUBLISH with RETAIN 1
    gets DISCONNECT 0x9A (Retain not supported) [MQTT-3.2.2-14, 3.2.2.3.5]."""
    env.start(retain_available=False)
    r, ack = env.raw_connect(unique_id("dret"))
    assert ack.properties.get(P.RETAIN_AVAILABLE) == 0
    r.send(Publish("r/x", b"x", 0, True))
    assert_server_disconnect(r.expect_disconnect(), 0x9A)


def test_will_retain_unsupported_connack_0x9a_mqtt_3_2_2_13(env: Env) -> None:
    """[MQTT-3.2.2-13] a will with Will Retain 1 when retain is unavailable: CONNACK 0x9A."""
    env.start(retain_available=False)
    r = env.raw()
    ack = r.connect5(unique_id("dwr"), will=Will("w/x", b"bye", 0, True))
    assert ack.return_code == 0x9A
    assert r.wait_closed() == []


# -- refused CONNECT -------------------------------------------------------------------------------

def _connect_bytes(props: bytes, flags: int = 0x02, client_id: str = "dmc") -> bytes:
    body = encode_string("MQTT") + bytes((5, flags)) + b"\x00\x3c"
    body += encode_varint(len(props)) + props + encode_string(client_id)
    return frame(0x10, body)


@pytest.mark.parametrize("packet,code", [
    # [MQTT-3.1.2-3] reserved CONNECT flag set
    (_connect_bytes(b"", flags=0x03), 0x81),
    # [MQTT 2.2.2.2] Session Expiry Interval twice
    (_connect_bytes(b"\x11\x00\x00\x00\x05" * 2), 0x82),
    # [MQTT 3.1.2.11.3] Receive Maximum 0
    (_connect_bytes(b"\x21\x00\x00"), 0x82),
    # [MQTT 3.1.2.11.4] Maximum Packet Size 0
    (_connect_bytes(b"\x27\x00\x00\x00\x00"), 0x82),
    # [MQTT 3.1.2.11.7] Request Response Information 2
    (_connect_bytes(b"\x19\x02"), 0x82),
    # a property CONNECT may not carry (Topic Alias)
    (_connect_bytes(b"\x23\x00\x01"), 0x81),
], ids=["reserved-flag", "dup-property", "receive-max-0", "max-packet-0", "rri-2",
        "wrong-property"])
def test_malformed_connect_gets_v5_connack_mqtt_3_1_4_1(env: Env, packet: bytes,
                                                        code: int) -> None:
    """[MQTT-3.1.4-1] a v5 CONNECT that does not conform: CONNACK with 0x81 (Malformed) or
    0x82 (Protocol Error) and Session Present 0 [MQTT-3.2.2-6], then close [MQTT-3.2.2-7]."""
    r = env.raw()
    r.send_bytes(packet)
    got = r.wait_closed()
    assert got and isinstance(got[0], Connack), f"expected a CONNACK before close, got {got!r}"
    assert got[0].return_code == code, f"CONNACK 0x{got[0].return_code:02X}, expected 0x{code:02X}"
    assert got[0].session_present is False
    assert len(got) == 1, got


def test_unsupported_protocol_version_connack_then_close_mqtt_3_1_2_2(env: Env) -> None:
    """[MQTT-3.1.2-2] protocol level 6: a CONNACK refusal (0x84 in the v5 form, or 0x01 in
    the 3.1.1 form the client may understand), then the connection is closed."""
    r = env.raw()
    body = encode_string("MQTT") + bytes((6, 0x02)) + b"\x00\x3c" + b"\x00" + encode_string("x")
    r.send_bytes(frame(0x10, body))
    r.sock.settimeout(5)
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            chunk = r.sock.recv(100)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError(f"the broker kept the connection open; sent {data.hex()}")
    assert data in (b"\x20\x02\x00\x01", b"\x20\x03\x00\x84\x00"), data.hex()


def test_refused_credentials_use_v5_reason_codes(env: Env) -> None:
    """A v5 client refused for its credentials gets a v5 reason code (0x86 Bad User Name or
    Password, or 0x87 Not authorized), never the 3.1.1 return codes 4/5."""
    cfg = base_config()
    cfg["auth"] = {"allow-anonymous": False}
    env.start(cfg)
    r = env.raw()
    ack = r.connect5(unique_id("dauth"))
    assert ack.return_code in (0x86, 0x87), f"CONNACK 0x{ack.return_code:02X}"
    assert r.wait_closed() == []


def test_client_id_rejected_uses_0x85_mqtt_3_1_3_8(env: Env) -> None:
    """[MQTT-3.1.3-8] a client id the server refuses (longer than max_client_id_length):
    CONNACK 0x85 (Client Identifier not valid), then close."""
    env.start(max_client_id_length=5)
    r = env.raw()
    ack = r.connect5("much-too-long-id")
    assert ack.return_code == 0x85
    assert r.wait_closed() == []


def test_broker_keeps_working_after_errors(env: Env) -> None:
    """Each protocol error costs one connection, never the broker."""
    bad, _ = env.raw_connect(unique_id("dok"))
    bad.send_bytes(frame(0x36, encode_string("a/b") + b"\x00\x01\x00x"))
    bad.expect_disconnect()
    good, _ = env.raw_connect(unique_id("dok"))
    good.send(Pingreq())
    good.expect(Pingresp)


def test_disconnect_fits_client_maximum_packet_size_mqtt_3_14_2_3(env: Env) -> None:
    """[MQTT-3.14.2-3] [MQTT-3.1.2-24] a client with Maximum Packet Size 24 still learns why it
    is disconnected, but the DISCONNECT must not exceed 24 bytes: a Reason String that does
    not fit is left out."""
    r, _ = env.raw_connect(unique_id("dmps"), properties={P.MAXIMUM_PACKET_SIZE: 24})
    r.send(Publish("a/b", b"x", 1, False, False, 1, {P.SUBSCRIPTION_IDENTIFIER: [3]}))
    d = r.expect_disconnect()
    assert d.reason_code == 0x82
    assert all(len(f) <= 24 for f in r.frames), [f.hex() for f in r.frames]


def test_connack_refusal_fits_client_maximum_packet_size_mqtt_3_2_2_19(env: Env) -> None:
    """[MQTT-3.2.2-19] a refusing CONNACK drops its Reason String rather than exceed the
    Maximum Packet Size the client's CONNECT gave (here 16 bytes)."""
    env.start(max_client_id_length=5)
    r = env.raw()
    ack = r.connect5("much-too-long-id", properties={P.MAXIMUM_PACKET_SIZE: 16})
    assert ack.return_code == 0x85
    assert all(len(f) <= 16 for f in r.frames), [f.hex() for f in r.frames]
