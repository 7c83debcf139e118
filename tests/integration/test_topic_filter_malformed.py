"""A malformed topic filter in SUBSCRIBE or UNSUBSCRIBE closes the connection.

A topic filter is at least one character long [MQTT-4.7.3-1]; '#' is a whole level and the
last one, '+' a whole level ([MQTT-4.7.1-2/3] in 3.1.1, [MQTT-4.7.1-1/2] in 5.0). A filter that
breaks those rules makes its packet malformed: an MQTT 5 client gets DISCONNECT 0x81
(Malformed Packet) and the close [MQTT-4.13.1-1]; a 3.1.1 client sees the close [MQTT-4.8.0-1]
and no SUBACK / UNSUBACK. The whole packet is judged first: a well-formed filter beside a
malformed one changes nothing in the session.

A well-formed filter the broker refuses (deeper than max_topic_levels, not allowed by the ACL,
a bad ``$share/{ShareName}/`` prefix [MQTT-4.8.2-1/2]) is not malformed: it keeps its own
code in the SUBACK (3.1.1 0x80; 5.0 0x8F Topic Filter invalid or 0x80 Not authorised) and the
connection stays open.

The malformed packets are written as bytes (the issue's where it gives them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.protocol.packets import Pingresp, Publish
from tests.conftest import BrokerThread, base_config

from .helpers import ByteTap, RawClient, tapped, unique_id
from .v5helpers import Env, P, RawV5

pytestmark = pytest.mark.timeout(30)

CLOSE_WITHIN = 2.0
MALFORMED = 0x81
TOPIC_FILTER_INVALID = 0x8F
SUBACK_FAILURE = 0x80

#: parametrize over MQTT 3.1.1 (level 4) and 5.0 (level 5)
levels = pytest.mark.parametrize("level", [4, 5], ids=["3.1.1", "5.0"])



def _string(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def subscribe_bytes(level: int, *filters: str, pid: int = 1, qos: int = 1) -> bytes:
    """SUBSCRIBE ``filters`` at ``qos`` (MQTT 5: an empty property block)."""
    body = pid.to_bytes(2, "big") + (b"\x00" if level == 5 else b"")
    body += b"".join(_string(f) + bytes((qos,)) for f in filters)
    assert len(body) < 128
    return bytes((0x82, len(body))) + body


def unsubscribe_bytes(level: int, *filters: str, pid: int = 1) -> bytes:
    body = pid.to_bytes(2, "big") + (b"\x00" if level == 5 else b"")
    body += b"".join(_string(f) for f in filters)
    assert len(body) < 128
    return bytes((0xA2, len(body))) + body


# the issue's bytes
SUBSCRIBE_EMPTY = {5: bytes.fromhex("82 06 00 01 00 00 00 01"),
                   4: bytes.fromhex("82 05 00 01 00 00 00")}
UNSUBSCRIBE_EMPTY = {5: bytes.fromhex("a2 05 00 01 00 00 00"),
                     4: bytes.fromhex("a2 04 00 01 00 00")}


def test_issue_bytes_are_what_the_builders_make() -> None:
    """(self-check) the builders make the issue's packets for the empty filter (QoS 1 in 5.0,
    QoS 0 in 3.1.1, as the issue writes them)."""
    assert subscribe_bytes(5, "") == SUBSCRIBE_EMPTY[5]
    assert subscribe_bytes(4, "", qos=0) == SUBSCRIBE_EMPTY[4]
    assert unsubscribe_bytes(5, "") == UNSUBSCRIBE_EMPTY[5]
    assert unsubscribe_bytes(4, "") == UNSUBSCRIBE_EMPTY[4]


def connect(env: Env, level: int, prefix: str = "tf", clean: bool = True,
            cid: str | None = None) -> RawClient:
    """A raw client at ``level`` (4 or 5), connected. The v5 one asks for no Reason Strings
    (Request Problem Information 0), so its DISCONNECT is exactly e0 01 81."""
    cid = cid or unique_id(prefix)
    r: RawClient
    if level == 5:
        props: dict[int, Any] = {P.REQUEST_PROBLEM_INFORMATION: 0}
        if not clean:
            props[P.SESSION_EXPIRY_INTERVAL] = 300
        r, ack = env.raw_connect(cid, clean_start=clean, properties=props)
    else:
        r = env.raw3()
        ack = r.connect(cid, clean=clean)
    assert ack.return_code == 0
    return r


def assert_closed_as_malformed(r: RawClient, level: int, tap: ByteTap) -> None:
    """5.0: DISCONNECT 0x81 (e0 01 81) and nothing else, then the close; 3.1.1: the close with
    no byte sent (no SUBACK / UNSUBACK)."""
    if level == 5:
        assert isinstance(r, RawV5)
        d = r.expect_disconnect(CLOSE_WITHIN)
        assert d.reason_code == MALFORMED, d
        assert bytes(tap.data) == bytes.fromhex("e0 01 81"), bytes(tap.data).hex(" ")
    else:
        got = r.wait_closed(CLOSE_WITHIN)
        assert got == [] and bytes(tap.data) == b"", (
            f"the broker answered {bytes(tap.data).hex(' ')} instead of closing")


def assert_open(r: RawClient) -> None:
    """PINGREQ c0 00 gets PINGRESP d0 00 (and nothing else comes first)."""
    assert not r.pending, r.pending
    tap = tapped(r)
    r.send_bytes(b"\xc0\x00")
    p = r.recv()
    assert isinstance(p, Pingresp), p
    assert bytes(tap.data) == b"\xd0\x00", bytes(tap.data).hex(" ")


def suback_codes(r: RawClient, *filters: tuple[str, int]) -> list[int]:
    if isinstance(r, RawV5):
        return list(r.subscribe5(*filters).return_codes)
    return r.subscribe(*filters)


# -- malformed filters close the connection -----------------------------------------------------

@levels
def test_subscribe_empty_filter_closes_mqtt_4_7_3_1(env: Env, level: int) -> None:
    """[MQTT-4.7.3-1] SUBSCRIBE with a zero-length filter (the issue's bytes)."""
    r = connect(env, level)
    tap = tapped(r)
    r.send_bytes(SUBSCRIBE_EMPTY[level])
    assert_closed_as_malformed(r, level, tap)


@levels
def test_unsubscribe_empty_filter_closes_mqtt_4_7_3_1(env: Env, level: int) -> None:
    """[MQTT-4.7.3-1] UNSUBSCRIBE with a zero-length filter (the issue's bytes): no UNSUBACK."""
    r = connect(env, level)
    tap = tapped(r)
    r.send_bytes(UNSUBSCRIBE_EMPTY[level])
    assert_closed_as_malformed(r, level, tap)


BAD_WILDCARDS = ["#/test/topic", "a/b#", "a+/b", "a/#/b", "+a", "#a", "$share/g/a/#/b",
                 "$share/g/a+"]


@levels
@pytest.mark.parametrize("topic_filter", BAD_WILDCARDS)
def test_subscribe_misplaced_wildcard_closes_mqtt_4_7_1(env: Env, level: int,
                                                        topic_filter: str) -> None:
    """'#' only as the whole last level, '+' only as a whole level [MQTT-4.7.1-*]; a shared
    subscription's own filter is judged the same way."""
    r = connect(env, level)
    tap = tapped(r)
    r.send_bytes(subscribe_bytes(level, topic_filter))
    assert_closed_as_malformed(r, level, tap)


@levels
@pytest.mark.parametrize("topic_filter", ["#/test/topic", "a/b#", "a+/b"])
def test_unsubscribe_misplaced_wildcard_closes_mqtt_4_7_1(env: Env, level: int,
                                                          topic_filter: str) -> None:
    r = connect(env, level)
    tap = tapped(r)
    r.send_bytes(unsubscribe_bytes(level, topic_filter))
    assert_closed_as_malformed(r, level, tap)


@levels
def test_malformed_filter_after_good_ones_subscribes_nothing(env: Env, level: int) -> None:
    """SUBSCRIBE [tf/ok/<id>, a+/b] from a client with a session that outlives the connection:
    closed as malformed, and the good filter was not subscribed either: after reconnecting
    (session present) a message on it does not arrive."""
    cid = unique_id("tfs")
    topic = f"tf/ok/{cid}"
    r = connect(env, level, clean=False, cid=cid)
    tap = tapped(r)
    r.send_bytes(subscribe_bytes(level, topic, "a+/b"))
    assert_closed_as_malformed(r, level, tap)
    r2 = connect(env, level, clean=False, cid=cid)
    pub, _ = env.raw_connect(unique_id("tfp"))
    puback = pub.publish5(topic, b"must not arrive", 1)
    assert puback is not None and puback.reason_code == 0x10, puback  # No matching subscribers
    assert_open(r2)


@levels
def test_malformed_filter_in_unsubscribe_unsubscribes_nothing(env: Env, level: int) -> None:
    """UNSUBSCRIBE [tf/keep/<id>, ""] closes the connection and leaves the subscription to the
    good filter in place: after reconnecting, a message on it still arrives."""
    cid = unique_id("tfu")
    topic = f"tf/keep/{cid}"
    r = connect(env, level, clean=False, cid=cid)
    assert suback_codes(r, (topic, 1)) == [1]
    tap = tapped(r)
    r.send_bytes(unsubscribe_bytes(level, topic, "", pid=7))
    assert_closed_as_malformed(r, level, tap)
    r2 = connect(env, level, clean=False, cid=cid)
    pub, _ = env.raw_connect(unique_id("tfp"))
    pub.publish5(topic, b"still here", 1)
    p = r2.expect(Publish)
    assert (p.topic, p.payload) == (topic, b"still here")
    r2.ack(p)
    assert_open(r2)


# -- well-formed filters the broker refuses keep their per-filter code ----------------------------

@levels
def test_too_many_levels_refused_per_filter_connection_stays(env: Env, level: int) -> None:
    """max_topic_levels 3: a/b/c/d is well-formed but too deep: SUBACK 0x8F (5.0) / 0x80
    (3.1.1) in its slot, the other filter is granted, the connection stays."""
    env.start(max_topic_levels=3)
    r = connect(env, level)
    refused = TOPIC_FILTER_INVALID if level == 5 else SUBACK_FAILURE
    assert suback_codes(r, ("a/b/c/d", 1), ("a/b", 1)) == [refused, 1]
    assert_open(r)


@levels
@pytest.mark.parametrize("topic_filter", ["$share/g+/b", "$share/g#/b", "$share/g", "$share//b"])
def test_bad_share_prefix_refused_per_filter_connection_stays_mqtt_4_8_2(
        env: Env, level: int, topic_filter: str) -> None:
    """A bad ``$share/{ShareName}/{filter}`` (a wildcard in the share name [MQTT-4.8.2-2], no
    filter or an empty share name [MQTT-4.8.2-1]) is refused in its SUBACK slot (5.0: 0x8F),
    not taken for a malformed packet; the connection stays."""
    r = connect(env, level)
    refused = TOPIC_FILTER_INVALID if level == 5 else SUBACK_FAILURE
    assert suback_codes(r, (topic_filter, 1), ("tf/fine", 1)) == [refused, 1]
    assert_open(r)


@levels
def test_acl_refusal_per_filter_connection_stays(
        make_broker_thread: Callable[[dict[str, Any]], BrokerThread], tmp_path: Path,
        level: int) -> None:
    """An ACL that lets anonymous clients read only public/#: SUBSCRIBE secret/# gets 0x80 in
    its slot (5.0's default refusal code too), public/# is granted, the connection stays."""
    acl = tmp_path / "acl"
    acl.write_text("topic read public/#\n")
    cfg = base_config()
    cfg["auth"] = {"allow-anonymous": True, "acl-file": str(acl)}
    env = Env(make_broker_thread)
    try:
        env.start(cfg)
        r = connect(env, level)
        assert suback_codes(r, ("secret/#", 1), ("public/#", 1)) == [SUBACK_FAILURE, 1]
        assert_open(r)
    finally:
        env.close()


@levels
@pytest.mark.parametrize("topic_filter", ["#", "+", "+/+/#", "a/+/b/#", "/", "a//b", "$share/g/#",
                                          "$share/g/+/x"])
def test_well_formed_wildcards_granted(env: Env, level: int, topic_filter: str) -> None:
    """Filters the rules allow (wildcards as whole levels, empty levels) are granted and the
    connection stays; unsubscribing them is answered too."""
    r = connect(env, level)
    assert suback_codes(r, (topic_filter, 1)) == [1]
    if isinstance(r, RawV5):
        assert r.unsubscribe5(topic_filter).reason_codes == [0x00]
    else:
        r.unsubscribe(topic_filter)
    assert_open(r)
