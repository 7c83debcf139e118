"""Seed corpora, generated with the codec so they follow it: valid packets of every type at every
protocol level (decoder), and valid client conversations (live connection).

``python -m tests.fuzz.seeds DIR decoder|live`` writes one file per seed (named by content).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mqttbroker.protocol.codec import encode
from mqttbroker.protocol.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from mqttbroker.protocol.properties import PropertyId as P
from tests.fuzz.live import CLIENT_IDS, make_live_input, make_two_client_input

LEVELS = (3, 4, 5)
CLIENT_A = CLIENT_IDS[0]
PUBLISH_PROPS: dict[int, Any] = {
    P.PAYLOAD_FORMAT_INDICATOR: 1, P.MESSAGE_EXPIRY_INTERVAL: 30, P.CONTENT_TYPE: "text/plain",
    P.RESPONSE_TOPIC: "fuzz/reply", P.CORRELATION_DATA: b"\x01\x02", P.TOPIC_ALIAS: 1,
    P.USER_PROPERTY: [("k", "v"), ("k", "w")]}
WILL_PROPS: dict[int, Any] = {
    P.WILL_DELAY_INTERVAL: 1, P.MESSAGE_EXPIRY_INTERVAL: 10, P.CONTENT_TYPE: "c",
    P.USER_PROPERTY: [("w", "1")]}
CONNECT_PROPS: dict[int, Any] = {
    P.SESSION_EXPIRY_INTERVAL: 30, P.RECEIVE_MAXIMUM: 2, P.MAXIMUM_PACKET_SIZE: 512,
    P.TOPIC_ALIAS_MAXIMUM: 2, P.REQUEST_RESPONSE_INFORMATION: 1,
    P.REQUEST_PROBLEM_INFORMATION: 0, P.USER_PROPERTY: [("a", "b")]}
CONNACK_PROPS: dict[int, Any] = {
    P.SESSION_EXPIRY_INTERVAL: 5, P.ASSIGNED_CLIENT_IDENTIFIER: "auto-1",
    P.SERVER_KEEP_ALIVE: 30, P.RECEIVE_MAXIMUM: 10, P.TOPIC_ALIAS_MAXIMUM: 4, P.MAXIMUM_QOS: 1,
    P.RETAIN_AVAILABLE: 1, P.MAXIMUM_PACKET_SIZE: 1024, P.WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
    P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 1, P.SHARED_SUBSCRIPTION_AVAILABLE: 1,
    P.RESPONSE_INFORMATION: "r/", P.SERVER_REFERENCE: "other", P.REASON_STRING: "ok",
    P.AUTHENTICATION_METHOD: "SCRAM-SHA-256", P.AUTHENTICATION_DATA: b"d"}


def _v5(level: int, props: dict[int, Any]) -> dict[int, Any]:
    return props if level == 5 else {}


def connects(level: int) -> list[Connect]:
    """CONNECTs with every optional part: will, user name, password, properties."""
    name = "MQIsdp" if level == 3 else "MQTT"
    will = Will("fuzz/will", b"gone", 1, True, _v5(level, WILL_PROPS))
    out = [
        Connect(name, level, "seed", True, 60),
        Connect(name, level, "seed-full", False, 10, "user", b"secret", will,
                _v5(level, CONNECT_PROPS)),
        Connect(name, level, "", True, 0, "user", None, Will("w", b"", 0, False)),
    ]
    if level == 5:
        out.append(Connect(name, level, "seed-auth", True, 30, properties={
            P.AUTHENTICATION_METHOD: "SCRAM-SHA-256", P.AUTHENTICATION_DATA: b"n,,n=fuzz,r=abc"}))
    return out


def packets(level: int) -> list[Packet]:
    """Every packet type (client's and server's), with and without optional parts."""
    v5 = level == 5
    ps: list[Packet] = [*connects(level)]
    ps += [Connack(level >= 4, 0, _v5(level, CONNACK_PROPS)), Connack(False, 0x87 if v5 else 5)]
    ps += [Publish("fuzz/t", b"", 0), Publish("fuzz/t", b"hello", 1, True, False, 1),
           Publish("fuzz/t/\u00e9", b"x" * 40, 2, False, True, 0xFFFF, _v5(level, PUBLISH_PROPS))]
    if v5:
        ps += [Publish("", b"aliased", 1, False, False, 2, {P.TOPIC_ALIAS: 1}),
               Publish("fuzz/t", b"", 0, False, False, None,
                       {P.SUBSCRIPTION_IDENTIFIER: [1, 300]})]
    reason: dict[int, Any] = {P.REASON_STRING: "why", P.USER_PROPERTY: [("x", "y")]}
    for cls in (Puback, Pubrec, Pubrel, Pubcomp):
        ps.append(cls(7))
        if v5:
            ps += [cls(8, 0x10 if cls is Puback else 0x92), cls(9, 0x80, reason)]
    subs = [Subscription("fuzz/#", 2), Subscription("fuzz/+/x", 0),
            Subscription("$share/g/fuzz/s", 1)]
    if v5:
        subs = [Subscription("fuzz/#", 2, True, True, 2), Subscription("fuzz/+/x", 1, False,
                                                                        False, 1)]
    ps += [Subscribe(10, subs, _v5(level, {P.SUBSCRIPTION_IDENTIFIER: [5],
                                           P.USER_PROPERTY: [("s", "1")]})),
           Suback(10, [0, 1, 2, 0x80], _v5(level, {P.REASON_STRING: "r"})),
           Unsubscribe(11, ["fuzz/#", "fuzz/+/x"], _v5(level, {P.USER_PROPERTY: [("u", "1")]})),
           Unsuback(11, [0, 0x11] if v5 else [], _v5(level, {P.REASON_STRING: "r"})),
           Pingreq(), Pingresp(), Disconnect()]
    if v5:
        ps += [Disconnect(0x04, {P.SESSION_EXPIRY_INTERVAL: 0, P.REASON_STRING: "bye"}),
               Auth(0x18, {P.AUTHENTICATION_METHOD: "SCRAM-SHA-256",
                           P.AUTHENTICATION_DATA: b"c=biws,r=abc,p=xyz"}),
               Auth()]
    return ps


def decoder_seeds() -> list[bytes]:
    """One file per packet, per level; plus a few multi-packet streams."""
    out: list[bytes] = []
    for level in LEVELS:
        encoded = [encode(p, level) for p in packets(level)]
        out += encoded
        out.append(b"".join(encoded[:6]))
    out += [b"", b"\xc0\x00", b"\x30\xff\xff\xff\x7f", b"\x10\x80\x80\x80\x80\x01"]
    return out


def _topic_alias_stream() -> bytes:
    stream: list[Packet] = [
        Subscribe(1, [Subscription("fuzz/#", 2)]),
        Publish("fuzz/a", b"1", 1, False, False, 2, {P.TOPIC_ALIAS: 1}),
        Publish("", b"2", 1, False, False, 3, {P.TOPIC_ALIAS: 1}),
        Puback(1), Puback(2)]
    return b"".join(encode(p, 5) for p in stream)


def live_seeds() -> list[bytes]:
    """Client conversations after a valid CONNECT, and some that bring their own CONNECT."""
    out: list[bytes] = []
    for level in LEVELS:
        v5 = level == 5
        conversation: list[Packet] = [
            Subscribe(1, [Subscription("fuzz/#", 2)]),
            Publish("fuzz/a", b"q0", 0, True),
            Publish("fuzz/a", b"q1", 1, False, False, 2, _v5(level, PUBLISH_PROPS)),
            Publish("fuzz/b", b"q2", 2, True, False, 3),
            Pubrel(3), Puback(1), Pubrec(2), Pubcomp(2),
            Unsubscribe(4, ["fuzz/#"]),
            Subscribe(5, [Subscription("$share/g/fuzz/#", 1)]),
            Publish("fuzz/c", b"shared", 1, False, False, 6),
            Pingreq()]
        enc = [encode(p, level) for p in conversation]
        out += [make_live_input(level, e) for e in enc]
        out.append(make_live_input(level, b"".join(enc)))
        out.append(make_live_input(level, b"".join(enc[:4]), half_close=True))
        out.append(make_live_input(level, encode(Disconnect(4 if v5 else 0), level)))
        for c in connects(level):
            out.append(make_live_input(level, encode(c, level) + b"".join(enc[:3]),
                                       own_connect=True))
    scram = connects(5)[-1]
    out.append(make_live_input(5, encode(scram, 5) + encode(Auth(0x18, {
        P.AUTHENTICATION_METHOD: "SCRAM-SHA-256",
        P.AUTHENTICATION_DATA: b"c=biws,r=abc,p=dGhpcyBpcyBub3QgaXQ="}), 5), own_connect=True))
    out.append(make_live_input(5, _topic_alias_stream()))
    out.append(make_live_input(5, encode(Auth(0x19, {P.AUTHENTICATION_METHOD: "x"}), 5)))
    out.append(make_live_input(5, encode(
        Subscribe(7, [Subscription("fuzz/#", 1, True, True, 1)],
                  {P.SUBSCRIPTION_IDENTIFIER: [9]}), 5)
        + encode(Publish("fuzz/x", b"", 1, True, False, 8, {P.MESSAGE_EXPIRY_INTERVAL: 1}), 5)))
    return out


def two_client_seeds() -> list[bytes]:
    """Conversations between two clients (A = "fa", B = "fb"): deliveries at every QoS, shared
    subscriptions, a takeover, a session resumed with its queue, a will, topic aliases."""
    def e(level: int, *ps: Packet) -> bytes:
        return b"".join(encode(p, level) for p in ps)

    out: list[bytes] = []
    for la, lb in ((4, 4), (5, 5), (3, 5), (5, 4)):
        sub = e(la, Subscribe(1, [Subscription("fuzz/#", 2)]))
        out.append(make_two_client_input((la, lb), [
            (0, sub),
            (1, e(lb, Publish("fuzz/q0", b"0", 0), Publish("fuzz/q1", b"1", 1, False, False, 1),
                  Publish("fuzz/q2", b"2", 2, True, False, 2), Pubrel(2))),
            (0, e(la, Puback(1), Pubrec(2))),
            (0, e(la, Pubcomp(2), Unsubscribe(3, ["fuzz/#"]))),
            (1, e(lb, Publish("fuzz/after", b"", 1, False, False, 3)))]))
        out.append(make_two_client_input((la, lb), [
            (0, e(la, Subscribe(1, [Subscription("$share/g/fuzz/+", 1)]))),
            (1, e(lb, Subscribe(1, [Subscription("$share/g/fuzz/+", 1)]))),
            (0, e(la, *[Publish("fuzz/s", bytes([i]), 1, False, False, i + 1)
                        for i in range(4)])),
            (1, e(lb, Disconnect()))]))
    # B takes over A's client id; A had a will
    will_a = Connect("MQTT", 5, CLIENT_A, False, 30, will=Will("fuzz/will", b"a", 1, False),
                     properties={P.SESSION_EXPIRY_INTERVAL: 10})
    out.append(make_two_client_input((5, 4), [
        (0, encode(will_a, 5) + encode(Subscribe(1, [Subscription("fuzz/#", 1)]), 5)),
        (1, encode(Connect("MQTT", 4, CLIENT_A, False, 30), 4)),
        (1, encode(Publish("fuzz/x", b"", 1, False, False, 4), 4))],
        own_connect=(True, True)))
    # A leaves a persistent session with a subscription; B publishes to it; B resumes it
    out.append(make_two_client_input((4, 4), [
        (0, encode(Connect("MQTT", 4, "fuzz-p", False, 0), 4)
         + e(4, Subscribe(1, [Subscription("fuzz/p", 1)]), Disconnect())),
        (1, e(4, Publish("fuzz/p", b"queued", 1, True, False, 1))),
        (1, e(4, Publish("fuzz/p", b"queued", 2, False, False, 2)))],
        own_connect=(True, False)))
    # MQTT 5: no-local, retain handling, subscription identifiers, aliases both ways
    out.append(make_two_client_input((5, 5), [
        (0, e(5, Subscribe(1, [Subscription("fuzz/#", 2, True, True, 1)],
                           {P.SUBSCRIPTION_IDENTIFIER: [7]}))),
        (1, e(5, Publish("fuzz/a", b"1", 1, True, False, 1, {P.TOPIC_ALIAS: 1,
                                                            P.MESSAGE_EXPIRY_INTERVAL: 5}),
              Publish("", b"2", 2, False, False, 2, {P.TOPIC_ALIAS: 1}))),
        (0, e(5, Publish("fuzz/b", b"self", 0, False, False, None),
              Puback(1, 0x10), Pubrec(2, 0x80))),
        (1, e(5, Disconnect(4)))]))
    return out


def all_live_seeds() -> list[bytes]:
    """Every seed of the live target: one client, then two."""
    return live_seeds() + two_client_seeds()


SEEDS: dict[str, Callable[[], list[bytes]]] = {"decoder": decoder_seeds, "live": all_live_seeds}


def write_seeds(target: str, directory: Path) -> int:
    """Write the target's seeds into ``directory`` (one file each, named by its SHA-1)."""
    directory.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[target]()
    for data in seeds:
        (directory / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
    return len(seeds)


if __name__ == "__main__":
    print(write_seeds(sys.argv[2], Path(sys.argv[1])), "seeds")
