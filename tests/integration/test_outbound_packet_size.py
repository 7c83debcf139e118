"""The client's Maximum Packet Size bounds every packet the broker sends it.

[MQTT-3.1.2-24] / [MQTT-3.2.2-19]: "The Server MUST NOT send packets exceeding Maximum Packet
Size to the Client." A v5 CONNECT may set Maximum Packet Size (0x27); from then on:

* the CONNACK leaves out the properties whose value is the protocol default (Retain Available,
  Wildcard / Subscription Identifier / Shared Subscription Available = 1) and keeps the ones
  that say something (Receive Maximum 100, Topic Alias Maximum 10); a CONNACK that cannot fit
  even so is not sent at all: the connection closes without a byte;
* any other packet drops its Reason String and User Properties to fit (a refusing CONNACK, a
  DISCONNECT after a protocol error) [MQTT-3.2.2-19] [MQTT-3.14.2-3]; one that still does not
  fit (a SUBACK or UNSUBACK with many codes, an AUTH with its data) is not sent: the connection
  closes instead;
* a PUBLISH too big for the client is not delivered to it [MQTT-3.1.2-25].

The CONNECT packets are written byte for byte; what comes back is read off the socket as it
is (every byte the broker sent is kept, so "nothing at all" can be asserted).
"""

from __future__ import annotations

from typing import Any

import pytest

from mqttbroker.protocol.packets import (
    Auth,
    Connack,
    Connect,
    Pingresp,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from tests.conftest import base_config

from .helpers import RawClient, tapped, unique_id
from .v5helpers import Env, P, ScramClient, make_credential

pytestmark = pytest.mark.timeout(30)

CLOSE_WITHIN = 2.0



def connect_with_max_packet_size(size: int, client_id: bytes = b"test") -> bytes:
    """MQTT 5 CONNECT, clean start, keep-alive 5, Maximum Packet Size ``size`` (the only
    property), client id ``client_id`` ("test" unless told)."""
    body = (bytes.fromhex("00 04 4d 51 54 54 05 02 00 05 05 27") + size.to_bytes(4, "big")
            + len(client_id).to_bytes(2, "big") + client_id)
    return bytes((0x10, len(body))) + body


CONNECT_MPS_12 = bytes.fromhex(
    "10 16 00 04 4d 51 54 54 05 02 00 05 05 27 00 00 00 0c 00 04 74 65 73 74")
CONNECT_MPS_2 = bytes.fromhex(
    "10 16 00 04 4d 51 54 54 05 02 00 05 05 27 00 00 00 02 00 04 74 65 73 74")
CONNECT_MPS_5 = bytes.fromhex(
    "10 16 00 04 4d 51 54 54 05 02 00 05 05 27 00 00 00 05 00 04 74 65 73 74")
# the CONNACK for Maximum Packet Size 12 with the default config: Receive Maximum 100
# (21 00 64) and Topic Alias Maximum 10 (22 00 0a), nothing else
CONNACK_FOR_MPS_12 = bytes.fromhex("20 09 00 00 06 21 00 64 22 00 0a")


def test_connect_bytes_are_what_the_builder_makes() -> None:
    """(self-check) the literal CONNECTs are the builder's."""
    assert connect_with_max_packet_size(12) == CONNECT_MPS_12
    assert connect_with_max_packet_size(2) == CONNECT_MPS_2
    assert connect_with_max_packet_size(5) == CONNECT_MPS_5


def assert_stays_open(r: RawClient) -> None:
    """PINGREQ c0 00 is answered with PINGRESP d0 00."""
    r.send_bytes(b"\xc0\x00")
    r.expect(Pingresp)


# -- CONNACK --------------------------------------------------------------------------------------

def test_connack_fits_max_packet_size_12_mqtt_3_1_2_24(env: Env) -> None:
    """[MQTT-3.1.2-24] [MQTT-3.2.2-19] Maximum Packet Size 12 with the default config: a
    success CONNACK of at most 12 bytes. Properties at their default value are left out
    (Retain Available, Wildcard / Subscription Identifier / Shared Subscription Available, all
    1); Receive Maximum 100 and Topic Alias Maximum 10 differ from the defaults (65535, 0) and
    stay. The connection is accepted."""
    r = env.raw()
    tap = tapped(r)
    r.send_bytes(CONNECT_MPS_12)
    ack = r.expect(Connack)
    frame = r.frames[0]
    assert len(frame) <= 12, f"{len(frame)}-byte CONNACK over Maximum Packet Size 12: {frame.hex()}"
    assert frame == CONNACK_FOR_MPS_12, frame.hex(" ")
    assert ack.return_code == 0x00, ack
    assert ack.session_present is False
    assert ack.properties == {P.RECEIVE_MAXIMUM: 100, P.TOPIC_ALIAS_MAXIMUM: 10}, ack.properties
    assert bytes(tap.data) == CONNACK_FOR_MPS_12, "bytes beside the CONNACK"
    assert_stays_open(r)
    assert env.connected("test")


def test_connack_default_valued_properties_absent_mqtt_3_2_2_19(env: Env) -> None:
    """The four availability properties are 1 by default [MQTT 3.2.2.3.5, 3.2.2.3.11-13]:
    at 1 they are absent from the (size-limited) CONNACK, so a client reads "available"."""
    r = env.raw()
    r.send_bytes(CONNECT_MPS_12)
    ack = r.expect(Connack)
    absent = (P.RETAIN_AVAILABLE, P.WILDCARD_SUBSCRIPTION_AVAILABLE,
              P.SUBSCRIPTION_IDENTIFIER_AVAILABLE, P.SHARED_SUBSCRIPTION_AVAILABLE)
    present = [P(k).name for k in absent if k in ack.properties]
    assert present == [], f"CONNACK carries default-valued {present}: {ack.properties}"


def test_connack_keeps_non_default_retain_available(env: Env) -> None:
    """retain_available false: Retain Available 0 is not the default and is sent (within a
    Maximum Packet Size of 40, which it fits), beside Receive Maximum and Topic Alias Maximum;
    the three availability properties still at their default 1 are left out."""
    env.start(retain_available=False)
    r = env.raw()
    r.send_bytes(connect_with_max_packet_size(40))
    ack = r.expect(Connack)
    assert len(r.frames[0]) <= 40
    assert ack.return_code == 0x00
    assert ack.properties == {P.RECEIVE_MAXIMUM: 100, P.RETAIN_AVAILABLE: 0,
                              P.TOPIC_ALIAS_MAXIMUM: 10}, ack.properties
    assert_stays_open(r)


def test_no_connack_fits_when_retain_available_0_needs_room_mqtt_3_1_2_24(env: Env) -> None:
    """retain_available false adds Retain Available 0 (2 bytes): the smallest CONNACK is then
    13 bytes, over Maximum Packet Size 12; closed without a byte."""
    env.start(retain_available=False)
    r = env.raw()
    tap = tapped(r)
    r.send_bytes(CONNECT_MPS_12)
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data) == b"", bytes(tap.data).hex(" ")
    assert not env.connected("test")


def test_no_connack_fits_max_packet_size_2_closed_silently_mqtt_3_1_2_24(env: Env) -> None:
    """Maximum Packet Size 2: the smallest v5 CONNACK is 5 bytes, none fits
    [MQTT-3.1.2-24]; the broker closes the connection without sending a single byte."""
    r = env.raw()
    tap = tapped(r)
    r.send_bytes(CONNECT_MPS_2)
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data) == b"", (
        f"the broker sent {bytes(tap.data).hex()} to a client with Maximum Packet Size 2")
    assert not env.connected("test")


def test_no_connack_fits_max_packet_size_5_with_required_properties_mqtt_3_1_2_24(
        env: Env) -> None:
    """Maximum Packet Size 5 with the default config: Receive Maximum (100) and Topic Alias
    Maximum (10) must be told, so no CONNACK fits in 5 bytes: closed without a byte."""
    r = env.raw()
    tap = tapped(r)
    r.send_bytes(CONNECT_MPS_5)
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data) == b"", (
        f"the broker sent {bytes(tap.data).hex()} to a client with Maximum Packet Size 5")
    assert not env.connected("test")


def test_no_connack_fits_with_assigned_client_identifier_mqtt_3_2_2_16(env: Env) -> None:
    """An empty client id with Maximum Packet Size 12: the CONNACK must carry the Assigned
    Client Identifier [MQTT-3.2.2-16] (40 bytes of it), so none fits: closed without a byte,
    and no session is left behind."""
    r = env.raw()
    tap = tapped(r)
    r.send_bytes(connect_with_max_packet_size(12, b""))
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data) == b"", bytes(tap.data).hex(" ")
    broker = env.bt.broker
    assert broker is not None
    assert env.bt.call(lambda: len(broker.connections) + len(broker.sessions)) == 0


def test_closed_without_connack_publishes_no_will_mqtt_3_1_2_24(env: Env) -> None:
    """A CONNECT with a will and Maximum Packet Size 2 is closed without CONNACK: the
    connection was never accepted, so its will is not published. (A message published to the
    will topic afterwards is the first thing a watcher gets.)"""
    watcher, _ = env.raw_connect(unique_id("mpsw"))
    assert watcher.subscribe5(("mps/will", 1)).return_codes == [1]
    cid = unique_id("mpsx")
    r = env.raw()
    tap = tapped(r)
    r.send(Connect("MQTT", 5, cid, True, 5, None, None, Will("mps/will", b"will", 1),
                   {P.MAXIMUM_PACKET_SIZE: 2}))
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data) == b"", bytes(tap.data).hex(" ")
    pub, _ = env.raw_connect(unique_id("mpsy"))
    pub.publish5("mps/will", b"marker", 1)
    p = watcher.next_publish()
    assert p.payload == b"marker", f"the will of a client never accepted was published: {p!r}"
    assert_stays_open(watcher)


def test_five_byte_connack_when_nothing_to_tell_mqtt_3_2_2_19(env: Env) -> None:
    """receive_maximum 65535 and topic_alias_maximum 0 are the protocol defaults: no property
    is needed, and Maximum Packet Size 5 gets exactly CONNACK 20 03 00 00 00; accepted."""
    env.start(receive_maximum=65535, topic_alias_maximum=0)
    r = env.raw()
    tap = tapped(r)
    r.send_bytes(CONNECT_MPS_5)
    ack = r.expect(Connack)
    assert r.frames[0] == bytes.fromhex("20 03 00 00 00"), r.frames[0].hex()
    assert ack.return_code == 0 and ack.properties == {}
    assert bytes(tap.data) == bytes.fromhex("20 03 00 00 00")
    assert_stays_open(r)
    assert env.connected("test")


def test_refused_connack_drops_reason_string_to_fit_mqtt_3_2_2_19(env: Env) -> None:
    """[MQTT-3.2.2-19] a refusing CONNACK (anonymous not allowed: 0x87) leaves its Reason
    String out rather than exceed Maximum Packet Size 12; then the connection closes."""
    cfg = base_config()
    cfg["auth"] = {"allow-anonymous": False}
    env.start(cfg)
    # without a limit the refusal says why (so the limit below has something to drop)
    r0 = env.raw()
    r0.send_bytes(connect_with_max_packet_size(0xFFFF))
    ack0 = r0.expect(Connack)
    assert ack0.return_code == 0x87 and P.REASON_STRING in ack0.properties, ack0
    r0.wait_closed(CLOSE_WITHIN)
    r = env.raw()
    r.send_bytes(CONNECT_MPS_12)
    got = r.wait_closed(CLOSE_WITHIN)
    assert len(got) == 1 and isinstance(got[0], Connack), got
    assert len(r.frames[0]) <= 12, r.frames[0].hex()
    assert got[0].return_code == 0x87
    assert P.REASON_STRING not in got[0].properties


# -- other packets ---------------------------------------------------------------------------

BAD_PACKETS = {
    # PINGREQ with flags 1: Malformed Packet [MQTT-2.1.3-1]
    "malformed_pingreq_flags_0x81": (b"\xc1\x00", 0x81),
    # a second CONNECT: Protocol Error [MQTT-3.1.0-2]
    "second_connect_0x82": (connect_with_max_packet_size(0xFFFF, b"again"), 0x82),
}


@pytest.mark.parametrize("bad,reason", list(BAD_PACKETS.values()), ids=list(BAD_PACKETS))
def test_disconnect_drops_reason_string_to_fit_mqtt_3_14_2_3(env: Env, bad: bytes,
                                                             reason: int) -> None:
    """[MQTT-3.1.2-24] [MQTT-3.14.2-3] after a protocol error the broker's DISCONNECT carries
    a Reason String (checked without a limit first); with Maximum Packet Size 10 the
    DISCONNECT leaves it out to fit in 10 bytes, then the connection closes. (The broker has
    receive_maximum 65535 and topic_alias_maximum 0, so its CONNACK fits in 10 bytes too.)"""
    env.start(receive_maximum=65535, topic_alias_maximum=0)
    ref = env.raw()
    ref.send_bytes(connect_with_max_packet_size(0xFFFF, b"ref"))
    assert ref.expect(Connack).return_code == 0
    ref.send_bytes(bad)
    d0 = ref.expect_disconnect(CLOSE_WITHIN)
    assert d0.reason_code == reason
    assert P.REASON_STRING in d0.properties, (
        f"no Reason String on DISCONNECT 0x{reason:02X} without a limit: {ref.frames[-1].hex()}")
    assert len(ref.frames[-1]) > 10, "the reference DISCONNECT fits anyway: nothing to check"

    r = env.raw()
    tap = tapped(r)
    r.send_bytes(connect_with_max_packet_size(10))
    ack = r.expect(Connack)
    assert ack.return_code == 0 and len(r.frames[0]) <= 10, r.frames[0].hex()
    r.send_bytes(bad)
    d = r.expect_disconnect(CLOSE_WITHIN)
    frame = r.frames[-1]
    assert len(frame) <= 10, f"{len(frame)}-byte DISCONNECT over Maximum Packet Size 10"
    assert d.reason_code == reason
    assert P.REASON_STRING not in d.properties and P.USER_PROPERTY not in d.properties
    assert bytes(tap.data) == b"".join(r.frames), "bytes beside the CONNACK and DISCONNECT"


def test_disconnect_fits_when_connack_had_room_mqtt_3_1_2_24(env: Env) -> None:
    """Maximum Packet Size 12 with the default config: the 11-byte CONNACK goes out; a
    malformed packet then gets a DISCONNECT 0x81 of at most 12 bytes (no Reason String)."""
    r = env.raw()
    r.send_bytes(CONNECT_MPS_12)
    assert r.expect(Connack).return_code == 0
    assert r.frames[0] == CONNACK_FOR_MPS_12, r.frames[0].hex(" ")
    r.send_bytes(b"\xc1\x00")
    d = r.expect_disconnect(CLOSE_WITHIN)
    assert len(r.frames[-1]) <= 12, r.frames[-1].hex()
    assert d.reason_code == 0x81
    assert P.REASON_STRING not in d.properties


def test_refused_suback_fits_max_packet_size_mqtt_3_1_2_24(env: Env) -> None:
    """A SUBSCRIBE refused per filter (deeper than max_topic_levels 3: 0x8F) from a client
    with Maximum Packet Size 12: SUBACK 90 05 00 01 00 8f 01 (7 bytes; the broker gives SUBACK
    no Reason String), and the connection stays."""
    env.start(max_topic_levels=3)
    r = env.raw()
    r.send_bytes(CONNECT_MPS_12)
    assert r.expect(Connack).return_code == 0
    assert r.frames[0] == CONNACK_FOR_MPS_12, r.frames[0].hex(" ")
    suback = r.subscribe5(("a/b/c/d", 1), ("a/b", 1))
    assert suback.return_codes == [0x8F, 1]
    assert r.frames[-1] == bytes.fromhex("90 05 00 01 00 8f 01"), r.frames[-1].hex(" ")
    assert_stays_open(r)


def _filters(n: int) -> list[Subscription]:
    return [Subscription(f"mpsub/{i}", 1) for i in range(n)]


def test_suback_that_cannot_fit_closes_the_connection_mqtt_3_1_2_24(env: Env) -> None:
    """[MQTT-3.1.2-24] SUBSCRIBE with 10 filters from a client with Maximum Packet Size 12: the
    SUBACK (5 + 10 bytes, nothing optional to drop) cannot fit; it is not sent and the
    connection closes without another byte. (Without the limit the same SUBSCRIBE gets its
    15-byte SUBACK.)"""
    ref, _ = env.raw_connect(unique_id("mpsr"))
    ref.send(Subscribe(1, _filters(10)))
    assert ref.expect(Suback).return_codes == [1] * 10
    assert len(ref.frames[-1]) == 15, ref.frames[-1].hex(" ")
    r = env.raw()
    tap = tapped(r)
    r.send_bytes(CONNECT_MPS_12)
    assert r.expect(Connack).return_code == 0
    seen = len(tap.data)
    r.send(Subscribe(1, _filters(10)))
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data[seen:]) == b"", (
        f"the broker sent {bytes(tap.data[seen:]).hex(' ')} to a client with Maximum Packet "
        "Size 12")
    assert not env.connected("test")
def test_unsuback_that_cannot_fit_closes_the_connection_mqtt_3_1_2_24(env: Env) -> None:
    """The same for UNSUBACK: 10 filters give a 15-byte UNSUBACK (one code each); a client
    with Maximum Packet Size 12 is not sent it and the connection closes."""
    ref, _ = env.raw_connect(unique_id("mpsr"))
    ref.send(Unsubscribe(1, [f"mpsub/{i}" for i in range(10)]))
    assert ref.expect(Unsuback).reason_codes == [0x11] * 10  # No subscription existed
    assert len(ref.frames[-1]) == 15, ref.frames[-1].hex(" ")
    r = env.raw()
    tap = tapped(r)
    r.send_bytes(CONNECT_MPS_12)
    assert r.expect(Connack).return_code == 0
    seen = len(tap.data)
    r.send(Unsubscribe(1, [f"mpsub/{i}" for i in range(10)]))
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data[seen:]) == b"", bytes(tap.data[seen:]).hex(" ")
    assert not env.connected("test")


def test_auth_that_cannot_fit_closes_without_a_byte_mqtt_3_1_2_24(env: Env) -> None:
    """Enhanced authentication (SCRAM-SHA-256): the broker's AUTH 0x18 carries the method and
    the server-first message (well over 40 bytes). A client with Maximum Packet Size 40 is not
    sent it: the connection closes without a byte (and nobody is connected)."""
    cfg = base_config()
    cfg["auth"] = {"allow-anonymous": True,
                   "scram-users": {"alice": make_credential("correct horse")}}
    env.start(cfg)
    cid = unique_id("mpsa")
    props: dict[int, Any] = {
        P.AUTHENTICATION_METHOD: "SCRAM-SHA-256",
        P.AUTHENTICATION_DATA: ScramClient("alice", "correct horse").client_first(),
    }
    # without a limit the AUTH comes, and it is bigger than 40 bytes
    ref = env.raw()
    ref.send(Connect("MQTT", 5, cid + "r", True, 60, None, None, None, dict(props)))
    first = ref.expect(Auth)
    assert first.reason_code == 0x18 and len(ref.frames[0]) > 40, ref.frames[0].hex(" ")
    r = env.raw()
    tap = tapped(r)
    r.send(Connect("MQTT", 5, cid, True, 60, None, None, None,
                   {**props, P.MAXIMUM_PACKET_SIZE: 40}))
    got = r.wait_closed(CLOSE_WITHIN)
    assert got == [] and bytes(tap.data) == b"", (
        f"the broker sent {bytes(tap.data).hex(' ')} to a client with Maximum Packet Size 40")
    assert not env.connected(cid)


# -- PUBLISH -----------------------------------------------------------------------------------

def test_publish_over_client_max_packet_size_not_delivered_mqtt_3_1_2_25(env: Env) -> None:
    """[MQTT-3.1.2-25] a PUBLISH bigger than the subscriber's Maximum Packet Size 40 is not
    sent to it (as if delivered); a small one that follows is."""
    s, _ = env.raw_connect(unique_id("mpsp"), properties={P.MAXIMUM_PACKET_SIZE: 40})
    assert s.subscribe5(("mps/#", 1)).return_codes == [1]
    pub, _ = env.raw_connect(unique_id("mpsq"))
    pub.publish5("mps/big", b"x" * 100, 1)
    pub.publish5("mps/small", b"ok", 1)
    p = s.next_publish()
    assert isinstance(p, Publish)
    assert (p.topic, p.payload) == ("mps/small", b"ok")
    assert all(len(f) <= 40 for f in s.frames), [f.hex() for f in s.frames]
    assert_stays_open(s)
