"""One MQTT-SN client at the gateway (``protocol/mqttsn/session.py``), byte for byte, with no
event loop and no socket.

Every scenario is a script: client datagrams in (hex written by hand from the field tables of
MQTT-SN 1.2 section 5, decoded by the codec), broker answers (calls on the session), time
passing (``handle_timer``), and after each input exactly the datagrams the gateway owes the
client (encoded, compared as bytes) and exactly the actions toward the broker. An input not
followed by a ``G``/``A`` line must produce none. Scenario ids cite the spec section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mqttbroker.protocol.mqttsn import Publish, TopicIdType, encode
from mqttbroker.protocol.mqttsn.session import (
    Action,
    Awake,
    GatewaySession,
    MqttAck,
    MqttConnect,
    MqttDisconnect,
    MqttPublish,
    MqttSubscribe,
    MqttUnsubscribe,
    SessionParams,
    Sleep,
    SnState,
    WillSpec,
    WillUpdate,
    connack_code,
    qos_minus_one,
)

PREDEFINED = {0x0101: "cfg/led", 0x0102: "cfg/rate"}
P = SessionParams(gateway_id=1, predefined=PREDEFINED, retry_interval=10.0, max_retries=2,
                  max_buffered=3)


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace("|", " "))


# -- the script language ---------------------------------------------------------------------


@dataclass(frozen=True)
class C:
    """A datagram from the client (hex), at ``at`` (default: the current time)."""

    wire: str
    at: float | None = None


@dataclass(frozen=True)
class B:
    """What the broker said: ``call(session, now)``."""

    call: Callable[[GatewaySession, float], None]
    at: float | None = None


@dataclass(frozen=True)
class T:
    """Time passes to ``at``: handle_timer."""

    at: float


class G:
    """The datagrams to the client, in order, since the last input."""

    def __init__(self, *wires: str) -> None:
        self.wires = wires


class A:
    """The actions toward the broker, in order, since the last input."""

    def __init__(self, *actions: Action) -> None:
        self.actions = actions


@dataclass(frozen=True)
class S:
    """The session's state now."""

    state: SnState


@dataclass(frozen=True)
class Why:
    """A problem was reported whose text contains ``text``."""

    text: str


class Peer:
    """Runs a script against one session."""

    def __init__(self, params: SessionParams = P) -> None:
        self.s = GatewaySession(params)
        self.now = 0.0
        self.out: list[bytes] | None = None
        self.acts: list[Action] | None = None
        self.problems: list[str] = []

    def _settle(self) -> None:
        assert self.out in (None, []), f"unexpected datagrams: {[o.hex(' ') for o in self.out or []]}"
        assert self.acts in (None, []), f"unexpected actions: {self.acts}"

    def _input(self, at: float | None) -> None:
        self._settle()
        if at is not None:
            self.now = at

    def _drain(self) -> None:
        self.out = [encode(m) for m in self.s.datagrams()]
        self.acts = self.s.actions()
        self.problems = self.s.problems()

    def run(self, *steps: Any) -> Peer:
        for step in steps:
            if isinstance(step, C):
                self._input(step.at)
                self.s.receive_datagram(h(step.wire), self.now)
                self._drain()
            elif isinstance(step, B):
                self._input(step.at)
                step.call(self.s, self.now)
                self._drain()
            elif isinstance(step, T):
                self._input(step.at)
                self.s.handle_timer(self.now)
                self._drain()
            elif isinstance(step, G):
                assert self.out == [h(w) for w in step.wires], (
                    [o.hex(" ") for o in self.out or []], self.problems)
                self.out = []
            elif isinstance(step, A):
                assert self.acts == list(step.actions), self.problems
                self.acts = []
            elif isinstance(step, S):
                assert self.s.state is step.state
            elif isinstance(step, Why):
                assert any(step.text in p for p in self.problems), self.problems
            else:  # a list of steps: a shared prefix
                self.run(*step)
        self._settle()
        return self


def connack(code: int) -> B:
    return B(lambda s, now: s.connack(code, now))


def deliver(topic: str, payload: bytes, qos: int, ref: int | None, retain: bool = False) -> B:
    return B(lambda s, now: s.deliver(topic, payload, qos, retain, ref, now))


def published(ref: int, ok: bool = True) -> B:
    return B(lambda s, now: s.published(ref, ok, now))


def subscribed(ref: int, granted: int | None) -> B:
    return B(lambda s, now: s.subscribed(ref, granted, now))


def unsubscribed(ref: int) -> B:
    return B(lambda s, now: s.unsubscribed(ref, now))


# ASCII: "c1" 63 31 · "s/t" 73 2F 74 · "s/x" 73 2F 78 · "s/#" 73 2F 23 · "ab" 61 62 · "21" 32 31
# "v" 76 · "w/c1" 77 2F 63 31 · "bye" 62 79 65 · pre-defined 0x0101 "cfg/led"
CONNECT = "08 04 | 04 | 01 | 00 3C | 63 31"  # CleanSession, Duration 60, "c1"
CONNECT_KEEP = "08 04 | 00 | 01 | 00 3C | 63 31"  # no CleanSession
CONNECT_WILL = "08 04 | 0C | 01 | 00 3C | 63 31"  # Will + CleanSession
CONNACK = "03 05 | 00"
WILLTOPIC = "07 07 | 30 | 77 2F 63 31"  # QoS 1, retain, "w/c1"
WILLMSG = "05 09 | 62 79 65"
PINGREQ_C1 = "04 16 | 63 31"
SLEEP_60 = "04 18 | 00 3C"
DISCONNECT = "02 18"
PINGRESP = "02 17"
REGISTER_ST = "09 0A | 00 00 | 00 01 | 73 2F 74"  # client: "s/t", MsgId 1
REGACK_ST = "07 0B | 00 01 | 00 01 | 00"  # gateway: id 1
# the gateway's REGISTER of "s/x" as id 1 (MsgId 1), the client's REGACK, the PUBLISH after
GW_REGISTER_SX = "09 0A | 00 01 | 00 01 | 73 2F 78"
REGACK_SX = "07 0B | 00 01 | 00 01 | 00"
GW_PUBLISH_SX_Q1 = "08 0C | 20 | 00 01 | 00 02 | 76"
PUBACK_SX = "07 0D | 00 01 | 00 02 | 00"

WILL = WillSpec("w/c1", b"bye", 1, True)
MQTT_CONNECT = MqttConnect("c1", True, 60, None)
CONNECTED = [C(CONNECT), A(MQTT_CONNECT), S(SnState.CONNECTING), connack(0), G(CONNACK),
             S(SnState.ACTIVE)]
ASLEEP = [CONNECTED, C(SLEEP_60), G(DISCONNECT), A(Sleep(60)), S(SnState.ASLEEP)]


@dataclass(frozen=True)
class Scenario:
    id: str
    steps: tuple[Any, ...]
    params: SessionParams = P


def sc(id: str, *steps: Any, params: SessionParams = P) -> Scenario:
    return Scenario(id, steps, params)


SCENARIOS = [
    # ---- connection setup [MQTT-SN 6.2] -----------------------------------------------------
    sc("6.2-connect-without-will", CONNECTED),
    sc("6.2-connect-with-will-prompts-then-mqtt-connect",
       C(CONNECT_WILL), G("02 06"), S(SnState.CONNECTING),
       C(WILLTOPIC), G("02 08"),
       C(WILLMSG), A(MqttConnect("c1", True, 60, WILL)),
       connack(0), G(CONNACK), S(SnState.ACTIVE)),
    sc("6.2-empty-willtopic-means-no-will-and-no-willmsgreq",
       C(CONNECT_WILL), G("02 06"), C("02 07"), A(MqttConnect("c1", True, 60, None))),
    sc("6.2-broker-refuses-connect-not-authorized",
       C(CONNECT), A(MQTT_CONNECT), connack(5), G("03 05 | 03"), S(SnState.DISCONNECTED)),
    sc("6.2-broker-unavailable-is-congestion",
       C(CONNECT), A(MQTT_CONNECT), connack(3), G("03 05 | 01"), S(SnState.DISCONNECTED)),
    sc("6.2-repeated-connect-while-waiting-for-the-broker-is-not-forwarded-twice",
       C(CONNECT), A(MQTT_CONNECT), C(CONNECT), Why("repeated"), connack(0), G(CONNACK)),
    sc("5.3.1-client-id-of-24-characters-refused-not-supported",
       C("1E 04 | 04 | 01 | 00 3C | " + "61 " * 24), G("03 05 | 03"), S(SnState.DISCONNECTED)),
    sc("5.3.1-empty-client-id-refused",
       C("06 04 | 04 | 01 | 00 3C"), G("03 05 | 03"), S(SnState.DISCONNECTED)),
    sc("5.3.1-client-id-limit-is-a-parameter",
       C(CONNECT), G("03 05 | 03"),
       params=SessionParams(1, {}, 10.0, 2, 3, max_client_id=1)),
    sc("6.2-deliveries-before-connack-wait-for-it",
       C(CONNECT), A(MQTT_CONNECT), deliver("ab", b"v", 0, None), connack(0),
       G(CONNACK, "08 0C | 02 | 61 62 | 00 00 | 76")),
    # ---- topic registration by the client [MQTT-SN 6.5] --------------------------------------
    sc("6.5-register-gets-a-new-id-then-the-same-id-for-a-known-name",
       CONNECTED, C(REGISTER_ST), G(REGACK_ST),
       C("09 0A | 00 00 | 00 02 | 73 2F 78"), G("07 0B | 00 02 | 00 02 | 00"),
       C("09 0A | 00 00 | 00 03 | 73 2F 74"), G("07 0B | 00 01 | 00 03 | 00")),
    sc("6.5-register-of-a-wildcard-name-refused-invalid-topic",
       CONNECTED, C("09 0A | 00 00 | 00 01 | 73 2F 23"), G("07 0B | 00 00 | 00 01 | 02")),
    # ---- the client's publish [MQTT-SN 6.6, 6.7] ----------------------------------------------
    sc("6.6-publish-qos0-on-a-registered-id",
       CONNECTED, C(REGISTER_ST), G(REGACK_ST),
       C("09 0C | 10 | 00 01 | 00 00 | 32 31"), A(MqttPublish("s/t", b"21", 0, True, None))),
    sc("6.6-publish-on-an-unregistered-normal-id-gets-puback-invalid-topic-id",
       CONNECTED, C("09 0C | 20 | 00 07 | 00 02 | 32 31"), G("07 0D | 00 07 | 00 02 | 02")),
    sc("6.7-publish-on-a-predefined-id",
       CONNECTED, C("09 0C | 01 | 01 01 | 00 00 | 32 31"),
       A(MqttPublish("cfg/led", b"21", 0, False, None))),
    sc("6.7-publish-on-an-unknown-predefined-id-gets-puback-invalid-topic-id",
       CONNECTED, C("09 0C | 21 | 09 99 | 00 04 | 32 31"), G("07 0D | 09 99 | 00 04 | 02")),
    sc("6.7-publish-on-a-short-topic-name",
       CONNECTED, C("09 0C | 02 | 61 62 | 00 00 | 32 31"),
       A(MqttPublish("ab", b"21", 0, False, None))),
    sc("6.7-short-topic-publish-without-data-from-a-connected-client",
       CONNECTED, C("07 0C | 22 | 61 62 | 00 05"), A(MqttPublish("ab", b"", 1, False, 5)),
       published(5), G("07 0D | 61 62 | 00 05 | 00")),
    sc("6.7-short-topic-name-with-a-wildcard-refused",
       CONNECTED, C("07 0C | 02 | 61 23 | 00 00"), G("07 0D | 61 23 | 00 00 | 02")),
    sc("5.2-a-4-octet-publish-is-dropped-by-the-codec-without-a-crash",
       CONNECTED, C("04 0C | 00 01"), Why("PUBLISH truncated"), S(SnState.ACTIVE),
       C("02 16"), G(PINGRESP)),
    sc("6.6-publish-qos1-puback-when-the-broker-has-it",
       CONNECTED, C(REGISTER_ST), G(REGACK_ST),
       C("09 0C | 20 | 00 01 | 00 02 | 32 31"), A(MqttPublish("s/t", b"21", 1, False, 2)),
       C("09 0C | A0 | 00 01 | 00 02 | 32 31"), Why("already with the broker"),
       published(2), G("07 0D | 00 01 | 00 02 | 00")),
    sc("6.6-publish-qos1-refused-by-the-broker-gets-puback-not-supported",
       CONNECTED, C("09 0C | 21 | 01 01 | 00 02 | 32 31"),
       A(MqttPublish("cfg/led", b"21", 1, False, 2)),
       published(2, ok=False), G("07 0D | 01 01 | 00 02 | 03")),
    sc("6.6-publish-qos2-forwarded-once-pubrec-then-pubcomp",
       CONNECTED, C(REGISTER_ST), G(REGACK_ST),
       C("09 0C | 40 | 00 01 | 00 03 | 32 31"), A(MqttPublish("s/t", b"21", 2, False, 3)),
       C("09 0C | C0 | 00 01 | 00 03 | 32 31"),
       published(3), G("04 0F | 00 03"),
       C("09 0C | C0 | 00 01 | 00 03 | 32 31"), G("04 0F | 00 03"),
       C("04 10 | 00 03"), G("04 0E | 00 03"),
       C("04 10 | 00 03"), G("04 0E | 00 03")),
    sc("6.6-pubrel-before-pubrec-is-ignored",
       CONNECTED, C("09 0C | 41 | 01 01 | 00 03 | 32 31"),
       A(MqttPublish("cfg/led", b"21", 2, False, 3)), C("04 10 | 00 03"), Why("before PUBREC")),
    # ---- subscriptions [MQTT-SN 6.9] ---------------------------------------------------------
    sc("6.9-subscribe-by-name-suback-carries-the-registered-id",
       CONNECTED, C("08 12 | 20 | 00 04 | 73 2F 74"), A(MqttSubscribe("s/t", 1, 4)),
       subscribed(4, 1), G("08 13 | 20 | 00 01 | 00 04 | 00"),
       C("09 0C | 00 | 00 01 | 00 00 | 32 31"), A(MqttPublish("s/t", b"21", 0, False, None))),
    sc("6.9-subscribe-with-wildcard-suback-topic-id-0",
       CONNECTED, C("08 12 | 20 | 00 05 | 73 2F 23"), A(MqttSubscribe("s/#", 1, 5)),
       subscribed(5, 1), G("08 13 | 20 | 00 00 | 00 05 | 00")),
    sc("6.9-subscribe-by-predefined-id",
       CONNECTED, C("07 12 | 01 | 00 06 | 01 01"), A(MqttSubscribe("cfg/led", 0, 6)),
       subscribed(6, 0), G("08 13 | 00 | 01 01 | 00 06 | 00")),
    sc("6.9-subscribe-by-unknown-predefined-id-suback-invalid-topic-id",
       CONNECTED, C("07 12 | 01 | 00 07 | 09 99"), G("08 13 | 00 | 00 00 | 00 07 | 02")),
    sc("6.9-subscribe-by-short-name",
       CONNECTED, C("07 12 | 42 | 00 08 | 61 62"), A(MqttSubscribe("ab", 2, 8)),
       subscribed(8, 2), G("08 13 | 40 | 00 00 | 00 08 | 00")),
    sc("6.9-subscribe-malformed-filter-refused-invalid-topic",
       CONNECTED, C("09 12 | 00 | 00 09 | 73 2F 61 23"), G("08 13 | 00 | 00 00 | 00 09 | 02")),
    sc("6.9-subscribe-refused-by-the-broker-suback-not-supported",
       CONNECTED, C("08 12 | 20 | 00 04 | 73 2F 74"), A(MqttSubscribe("s/t", 1, 4)),
       subscribed(4, None), G("08 13 | 00 | 00 00 | 00 04 | 03")),
    sc("6.9-subscribe-resent-with-dup-while-pending-not-forwarded-twice",
       CONNECTED, C("08 12 | 20 | 00 05 | 73 2F 23"), A(MqttSubscribe("s/#", 1, 5)),
       C("08 12 | A0 | 00 05 | 73 2F 23"), Why("already with the broker"),
       subscribed(5, 1), G("08 13 | 20 | 00 00 | 00 05 | 00")),
    sc("6.9-unsubscribe-by-name",
       CONNECTED, C("08 14 | 00 | 00 0A | 73 2F 74"), A(MqttUnsubscribe("s/t", 10)),
       unsubscribed(10), G("04 15 | 00 0A")),
    sc("6.9-unsubscribe-by-predefined-id",
       CONNECTED, C("07 14 | 01 | 00 0B | 01 01"), A(MqttUnsubscribe("cfg/led", 11)),
       unsubscribed(11), G("04 15 | 00 0B")),
    sc("6.9-unsubscribe-by-short-name",
       CONNECTED, C("07 14 | 02 | 00 0C | 61 62"), A(MqttUnsubscribe("ab", 12)),
       unsubscribed(12), G("04 15 | 00 0C")),
    sc("6.9-unsubscribe-unknown-predefined-id-answered-at-once",
       CONNECTED, C("07 14 | 01 | 00 0D | 09 99"), G("04 15 | 00 0D"),
       Why("unknown pre-defined topic id")),
    # ---- the gateway's publish [MQTT-SN 6.10] -------------------------------------------------
    sc("6.10-wildcard-match-register-then-publish-qos1-then-mqtt-ack",
       CONNECTED, deliver("s/x", b"v", 1, 100), G(GW_REGISTER_SX),
       C(REGACK_SX), G(GW_PUBLISH_SX_Q1),
       C(PUBACK_SX), A(MqttAck(100))),
    sc("6.10-a-registered-name-goes-without-register",
       CONNECTED, C(REGISTER_ST), G(REGACK_ST),
       deliver("s/t", b"v", 0, None, retain=True), G("08 0C | 10 | 00 01 | 00 00 | 76")),
    sc("6.10-predefined-name-uses-its-predefined-id",
       CONNECTED, deliver("cfg/rate", b"v", 0, None), G("08 0C | 01 | 01 02 | 00 00 | 76")),
    sc("6.10-two-character-topic-goes-as-a-short-topic-without-register",
       CONNECTED, deliver("ab", b"v", 0, None), G("08 0C | 02 | 61 62 | 00 00 | 76")),
    sc("6.10-qos2-delivery-mqtt-ack-at-pubrec-then-pubrel-pubcomp",
       CONNECTED, deliver("ab", b"v", 2, 101), G("08 0C | 42 | 61 62 | 00 01 | 76"),
       C("04 0F | 00 01"), G("04 10 | 00 01"), A(MqttAck(101)),
       C("04 0F | 00 01"), G("04 10 | 00 01"),
       C("04 0E | 00 01")),
    sc("6.6-one-qos1-delivery-in-flight-at-a-time-in-order",
       CONNECTED, deliver("ab", b"v", 1, 101), G("08 0C | 22 | 61 62 | 00 01 | 76"),
       deliver("ab", b"w", 1, 102), deliver("ab", b"x", 0, None),
       C("07 0D | 61 62 | 00 01 | 00"), A(MqttAck(101)), G("08 0C | 22 | 61 62 | 00 02 | 77"),
       C("07 0D | 61 62 | 00 02 | 00"), A(MqttAck(102)), G("08 0C | 02 | 61 62 | 00 00 | 78")),
    sc("6.10-puback-invalid-topic-id-re-registers-and-resends-once-then-drops",
       CONNECTED, deliver("s/x", b"v", 1, 7), G(GW_REGISTER_SX), C(REGACK_SX),
       G(GW_PUBLISH_SX_Q1),
       C("07 0D | 00 01 | 00 02 | 02"), G("09 0A | 00 02 | 00 03 | 73 2F 78"),
       C("07 0B | 00 02 | 00 03 | 00"), G("08 0C | 20 | 00 02 | 00 04 | 76"),
       C("07 0D | 00 02 | 00 04 | 02"), A(MqttAck(7, delivered=False)), Why("refused PUBLISH")),
    sc("6.10-regack-refusal-drops-the-message-and-the-name-until-a-new-subscribe",
       CONNECTED, deliver("s/x", b"v", 1, 7), G(GW_REGISTER_SX),
       C("07 0B | 00 01 | 00 01 | 03"), A(MqttAck(7, delivered=False)),
       deliver("s/x", b"v", 1, 8), A(MqttAck(8, delivered=False)), Why("refused topic"),
       C("08 12 | 20 | 00 05 | 73 2F 23"), A(MqttSubscribe("s/#", 1, 5)),
       deliver("s/x", b"v", 0, None), G("09 0A | 00 02 | 00 02 | 73 2F 78")),
    sc("6.10-regack-congestion-drops-only-that-message",
       CONNECTED, deliver("s/x", b"v", 1, 7), G(GW_REGISTER_SX),
       C("07 0B | 00 01 | 00 01 | 01"), A(MqttAck(7, delivered=False)),
       deliver("s/x", b"v", 0, None), G("09 0A | 00 02 | 00 02 | 73 2F 78")),
    # ---- retransmission [MQTT-SN 6.13]: Tretry 10 s, Nretry 2 ----------------------------------
    sc("6.13-register-resent-then-client-lost-with-will",
       CONNECTED, deliver("s/x", b"v", 1, 7), G(GW_REGISTER_SX),
       T(9.9), T(10), G(GW_REGISTER_SX), T(20), G(GW_REGISTER_SX),
       T(30), A(MqttDisconnect(publish_will=True)), S(SnState.LOST), Why("retransmissions")),
    sc("6.13-publish-resent-with-dup",
       CONNECTED, deliver("ab", b"v", 1, 7), G("08 0C | 22 | 61 62 | 00 01 | 76"),
       T(10), G("08 0C | A2 | 61 62 | 00 01 | 76"),
       C("07 0D | 61 62 | 00 01 | 00", at=12), A(MqttAck(7)), T(40)),
    sc("6.13-pubrel-resent",
       CONNECTED, deliver("ab", b"v", 2, 7), G("08 0C | 42 | 61 62 | 00 01 | 76"),
       C("04 0F | 00 01", at=5), G("04 10 | 00 01"), A(MqttAck(7)),
       T(15), G("04 10 | 00 01"), C("04 0E | 00 01", at=16), T(40)),
    sc("6.13-willtopicreq-resent-then-abandoned-without-an-mqtt-connection",
       C(CONNECT_WILL), G("02 06"), T(10), G("02 06"), T(20), G("02 06"), T(30),
       S(SnState.LOST)),
    # ---- keep alive [MQTT-SN 6.11] -----------------------------------------------------------
    sc("6.11-pingreq-while-active-gets-pingresp", CONNECTED, C("02 16"), G(PINGRESP)),
    sc("6.11-silent-for-1.5-x-keep-alive-lost-with-will",
       CONNECTED, T(89.9), S(SnState.ACTIVE), T(90), A(MqttDisconnect(publish_will=True)),
       S(SnState.LOST)),
    sc("6.11-any-message-restarts-the-keep-alive",
       CONNECTED, C("02 16", at=80), G(PINGRESP), T(169), S(SnState.ACTIVE),
       T(170), A(MqttDisconnect(publish_will=True))),
    # ---- disconnect, reconnect [MQTT-SN 6.12, 6.3] -------------------------------------------
    sc("6.12-disconnect-no-will", CONNECTED, C(DISCONNECT), G(DISCONNECT),
       A(MqttDisconnect(publish_will=False)), S(SnState.DISCONNECTED)),
    sc("6.12-disconnect-with-duration-0-is-a-plain-disconnect", CONNECTED, C("04 18 | 00 00"),
       G(DISCONNECT), A(MqttDisconnect(publish_will=False)), S(SnState.DISCONNECTED)),
    sc("6.3-clean-reconnect-drops-the-topic-table",
       CONNECTED, C(REGISTER_ST), G(REGACK_ST),
       C(CONNECT), A(MqttDisconnect(publish_will=False), MQTT_CONNECT), connack(0), G(CONNACK),
       C("09 0C | 00 | 00 01 | 00 00 | 32 31"), G("07 0D | 00 01 | 00 00 | 02")),
    sc("6.3-reconnect-without-clean-session-keeps-the-topic-table",
       CONNECTED, C(REGISTER_ST), G(REGACK_ST),
       C(CONNECT_KEEP), A(MqttDisconnect(publish_will=False), MqttConnect("c1", False, 60, None)),
       connack(0), G(CONNACK),
       C("09 0C | 00 | 00 01 | 00 00 | 32 31"), A(MqttPublish("s/t", b"21", 0, False, None))),
    sc("broker-closes-the-mqtt-side-disconnect-to-the-client",
       CONNECTED, B(lambda s, now: s.broker_closed(now)), G(DISCONNECT),
       S(SnState.DISCONNECTED)),
    # ---- will updates [MQTT-SN 6.4] ------------------------------------------------------------
    sc("6.4-willtopicupd-then-willmsgupd-then-delete",
       C(CONNECT_WILL), G("02 06"), C(WILLTOPIC), G("02 08"), C(WILLMSG),
       A(MqttConnect("c1", True, 60, WILL)), connack(0), G(CONNACK),
       C("07 1A | 40 | 77 2F 63 32"), G("03 1B | 00"),
       A(WillUpdate(WillSpec("w/c2", b"bye", 2, False))),
       C("04 1C | 6F 6B"), G("03 1D | 00"), A(WillUpdate(WillSpec("w/c2", b"ok", 2, False))),
       C("02 1A"), G("03 1B | 00"), A(WillUpdate(None))),
    sc("6.4-willtopicupd-with-a-wildcard-refused",
       CONNECTED, C("06 1A | 00 | 77 2F 23"), G("03 1B | 02")),
    # ---- sleeping clients [MQTT-SN 6.14] -------------------------------------------------------
    sc("6.14-disconnect-with-duration-puts-the-client-to-sleep", ASLEEP),
    sc("6.14-deliveries-while-asleep-are-buffered-qos1-not-acknowledged",
       ASLEEP, deliver("s/x", b"v", 1, 100), deliver("ab", b"w", 0, None), S(SnState.ASLEEP)),
    sc("6.14-paho-wildcard-match-while-asleep-delivers-register-and-publish",
       ASLEEP, deliver("s/x", b"v", 1, 100),
       C(PINGREQ_C1), A(Awake()), G(GW_REGISTER_SX), S(SnState.AWAKE),
       C(REGACK_SX), G(GW_PUBLISH_SX_Q1),
       C(PUBACK_SX), A(MqttAck(100), Sleep(60)), G(PINGRESP), S(SnState.ASLEEP)),
    sc("6.14-paho-buffer-not-resent-on-each-pingreq",
       ASLEEP, deliver("s/x", b"v", 1, 100), deliver("ab", b"w", 0, None),
       C(PINGREQ_C1), A(Awake()), G(GW_REGISTER_SX),
       C(PINGREQ_C1),
       C(REGACK_SX), G(GW_PUBLISH_SX_Q1),
       C(PINGREQ_C1),
       C(PUBACK_SX), A(MqttAck(100), Sleep(60)), G("08 0C | 02 | 61 62 | 00 00 | 77", PINGRESP),
       C(PINGREQ_C1), A(Awake(), Sleep(60)), G(PINGRESP)),
    sc("6.14-paho-121-connect-while-asleep-gets-connack-then-the-buffer",
       ASLEEP, deliver("s/x", b"v", 1, 100),
       C(CONNECT), A(Awake()), G(CONNACK, GW_REGISTER_SX), S(SnState.ACTIVE),
       C(REGACK_SX), G(GW_PUBLISH_SX_Q1), C(PUBACK_SX), A(MqttAck(100))),
    sc("6.14-connect-with-will-flag-while-asleep-prompts-then-will-update",
       ASLEEP, deliver("ab", b"w", 0, None),
       C(CONNECT_WILL), A(Awake()), G("02 06"), S(SnState.CONNECTING),
       C(WILLTOPIC), G("02 08"), C(WILLMSG), A(WillUpdate(WILL)),
       G(CONNACK, "08 0C | 02 | 61 62 | 00 00 | 77"), S(SnState.ACTIVE)),
    sc("6.14-sleeping-client-that-never-wakes-is-lost-with-its-will",
       ASLEEP, deliver("s/x", b"v", 1, 100), T(89.9), S(SnState.ASLEEP),
       T(90), A(Awake(), MqttDisconnect(publish_will=True)), S(SnState.LOST)),
    sc("6.14-disconnect-with-duration-while-asleep-refreshes-the-timer",
       ASLEEP, C("04 18 | 00 78", at=50), G(DISCONNECT), T(229),
       S(SnState.ASLEEP), T(230), A(Awake(), MqttDisconnect(publish_will=True))),
    sc("6.14-pingresp-restarts-the-sleep-timer",
       ASLEEP, C(PINGREQ_C1, at=80), A(Awake(), Sleep(60)), G(PINGRESP), T(169),
       S(SnState.ASLEEP), T(170), A(Awake(), MqttDisconnect(publish_will=True))),
    sc("6.14-disconnect-while-awake-goes-back-to-sleep-and-resends-later",
       ASLEEP, deliver("ab", b"v", 1, 100), C(PINGREQ_C1), A(Awake()),
       G("08 0C | 22 | 61 62 | 00 01 | 76"),
       C(SLEEP_60), G(DISCONNECT), A(Sleep(60)), S(SnState.ASLEEP), T(59),
       C(PINGREQ_C1), A(Awake()), G("08 0C | A2 | 61 62 | 00 01 | 76"),
       C("07 0D | 61 62 | 00 01 | 00"), A(MqttAck(100), Sleep(60)), G(PINGRESP)),
    sc("6.14-connect-while-awake-goes-active-and-resends-what-is-in-flight",
       ASLEEP, deliver("ab", b"v", 1, 100), C(PINGREQ_C1), A(Awake()),
       G("08 0C | 22 | 61 62 | 00 01 | 76"),
       C(CONNECT), G(CONNACK, "08 0C | A2 | 61 62 | 00 01 | 76"), S(SnState.ACTIVE),
       C("07 0D | 61 62 | 00 01 | 00"), A(MqttAck(100))),
    sc("6.13-6.14-no-answer-while-awake-lost-with-will",
       ASLEEP, deliver("ab", b"v", 1, 100), C(PINGREQ_C1, at=100), A(Awake()),
       G("08 0C | 22 | 61 62 | 00 01 | 76"),
       T(110), G("08 0C | A2 | 61 62 | 00 01 | 76"), T(120), G("08 0C | A2 | 61 62 | 00 01 | 76"),
       T(130), A(MqttDisconnect(publish_will=True)), S(SnState.LOST)),
    sc("6.14-disconnect-while-asleep-ends-the-session",
       ASLEEP, C(DISCONNECT), G(DISCONNECT), A(Awake(), MqttDisconnect(publish_will=False)),
       S(SnState.DISCONNECTED)),
    sc("6.14-registrations-survive-sleep",
       CONNECTED, C(REGISTER_ST), G(REGACK_ST), C(SLEEP_60), G(DISCONNECT), A(Sleep(60)),
       deliver("s/t", b"v", 0, None), C(PINGREQ_C1), A(Awake(), Sleep(60)),
       G("08 0C | 00 | 00 01 | 00 00 | 76", PINGRESP)),
    sc("6.14-messages-arriving-while-awake-wait-for-the-next-wake-up",
       ASLEEP, deliver("ab", b"v", 1, 100), C(PINGREQ_C1), A(Awake()),
       G("08 0C | 22 | 61 62 | 00 01 | 76"),
       deliver("ab", b"w", 1, 101),
       C("07 0D | 61 62 | 00 01 | 00"), A(MqttAck(100), Sleep(60)), G(PINGRESP),
       C(PINGREQ_C1), A(Awake()), G("08 0C | 22 | 61 62 | 00 02 | 77")),
    sc("6.14-buffer-full-the-newest-is-refused-and-released-to-the-broker",
       ASLEEP, deliver("ab", b"1", 1, 1), deliver("ab", b"2", 1, 2), deliver("ab", b"3", 0, None),
       deliver("ab", b"4", 1, 4), A(MqttAck(4, delivered=False)), Why("3 messages queued")),
    sc("6.14-pingreq-for-another-client-id-ignored",
       ASLEEP, C("04 16 | 63 32"), Why("'c2'"), S(SnState.ASLEEP)),
    sc("6.14-late-puback-while-asleep-releases-the-message",
       CONNECTED, deliver("ab", b"v", 1, 7), G("08 0C | 22 | 61 62 | 00 01 | 76"),
       C(SLEEP_60), G(DISCONNECT), A(Sleep(60)),
       C("07 0D | 61 62 | 00 01 | 00"), A(MqttAck(7)),
       C(PINGREQ_C1), A(Awake(), Sleep(60)), G(PINGRESP)),
    # ---- what makes no sense in the state: ignored, reported, never raised ----------------------
    sc("publish-before-connect", C("09 0C | 00 | 00 01 | 00 00 | 32 31"),
       Why("ignored in state DISCONNECTED"), S(SnState.DISCONNECTED)),
    sc("willtopic-when-not-asked", CONNECTED, C(WILLTOPIC), Why("ignored in state ACTIVE")),
    sc("willtopic-while-waiting-for-the-broker", C(CONNECT), A(MQTT_CONNECT), C(WILLTOPIC),
       Why("not asked for")),
    sc("willmsg-before-willtopic", C(CONNECT_WILL), G("02 06"), C(WILLMSG),
       Why("not asked for")),
    sc("regack-for-an-unknown-msg-id", CONNECTED, C("07 0B | 00 01 | 00 09 | 00"),
       Why("unknown MsgId 9")),
    sc("puback-for-nothing-in-flight", CONNECTED, C(PUBACK_SX), Why("no PUBLISH in flight")),
    sc("pubrec-for-an-unknown-msg-id", CONNECTED, C("04 0F | 00 09"), Why("unknown MsgId 9")),
    sc("pubcomp-for-an-unknown-msg-id", CONNECTED, C("04 0E | 00 09"), Why("unknown MsgId 9")),
    sc("gwinfo-is-not-for-a-session", CONNECTED, C("03 02 | 07"),
       Why("not for a client session")),
    sc("connack-from-the-broker-with-nothing-pending", CONNECTED, connack(0),
       Why("no CONNECT pending")),
    sc("broker-answers-for-unknown-refs", CONNECTED, published(9), Why("unknown PUBLISH 9"),
       subscribed(9, 1), Why("unknown SUBSCRIBE 9"), unsubscribed(9), Why("unknown UNSUBSCRIBE")),
    sc("delivery-with-no-mqtt-connection", deliver("ab", b"v", 1, 1), Why("ignored")),
    sc("sleep-request-before-connack", C(CONNECT), A(MQTT_CONNECT), C(SLEEP_60),
       Why("before CONNACK")),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_scenario(scenario: Scenario) -> None:
    Peer(scenario.params).run(*scenario.steps)


def test_scenario_ids_are_unique() -> None:
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)


def test_sleep_and_awake_alternate_strictly_so_the_glue_can_count_sleepers() -> None:
    """Sleep on entering ASLEEP, Awake on leaving it, whatever the way in or out."""
    s = GatewaySession(P)
    seen: list[Action] = []

    def feed(wire: str, now: float) -> None:
        s.receive_datagram(h(wire), now)
        seen.extend(a for a in s.actions() if isinstance(a, (Sleep, Awake)))

    feed(CONNECT, 0)
    s.connack(0, 0)
    for wire in (SLEEP_60, "04 18 | 00 78", PINGREQ_C1, PINGREQ_C1, CONNECT, SLEEP_60,
                 CONNECT_WILL, WILLTOPIC, WILLMSG, SLEEP_60, "04 16 | 63 32", DISCONNECT):
        feed(wire, 1)
    # asleep; a new duration (nothing); 2 x PINGREQ: awake, asleep again; CONNECT: awake;
    # asleep; CONNECT with will: awake; asleep; PINGREQ for another client (nothing); DISCONNECT
    assert [type(a) for a in seen] == [Sleep, Awake] * 5
    assert s.state is SnState.DISCONNECTED


# -- timers -------------------------------------------------------------------------------------


def test_next_deadline_follows_the_state_6_11_6_13_6_14() -> None:
    p = Peer()
    assert p.s.next_deadline() is None
    p.run(C(CONNECT_WILL), G("02 06"))
    assert p.s.next_deadline() == 10.0  # WILLTOPICREQ retry
    p.run(C("02 07", at=3), A(MqttConnect("c1", True, 60, None)))
    assert p.s.next_deadline() is None  # the broker's CONNACK is the glue's to wait for
    p.run(connack(0), G(CONNACK))
    assert p.s.next_deadline() == 3 + 90  # keep-alive at 1.5 x 60
    p.run(deliver("ab", b"v", 1, 7), G("08 0C | 22 | 61 62 | 00 01 | 76"))
    assert p.s.next_deadline() == 13.0  # the retry comes first
    p.run(C(SLEEP_60, at=5), G(DISCONNECT), A(Sleep(60)))
    assert p.s.next_deadline() == 5 + 90  # asleep: retries paused, sleep timer
    p.run(C(PINGREQ_C1, at=7), A(Awake()), G("08 0C | A2 | 61 62 | 00 01 | 76"))
    assert p.s.next_deadline() == 17.0


def test_keep_alive_0_is_not_supervised_6_11() -> None:
    p = Peer().run(C("08 04 | 04 | 01 | 00 00 | 63 31"), A(MqttConnect("c1", True, 0, None)),
                   connack(0), G(CONNACK), T(1e9), S(SnState.ACTIVE))
    assert p.s.next_deadline() is None


def test_handle_timer_early_does_nothing() -> None:
    Peer().run(CONNECTED, deliver("s/x", b"v", 1, 7), G(GW_REGISTER_SX), T(5), T(9.99))


# -- counters and the topic table ----------------------------------------------------------------


def test_dropped_counts_every_message_given_up() -> None:
    p = Peer().run(ASLEEP, deliver("ab", b"1", 1, 1), deliver("ab", b"2", 1, 2),
                   deliver("ab", b"3", 1, 3), deliver("ab", b"4", 0, None),
                   deliver("ab", b"5", 1, 5), A(MqttAck(5, delivered=False)))
    assert p.s.dropped == 2
    assert len(p.s.outbox) == 3


def test_payload_too_long_for_a_datagram_is_dropped_6_10() -> None:
    p = Peer().run(CONNECTED, deliver("ab", bytes(65535), 1, 9), A(MqttAck(9, delivered=False)),
                   Why("too long"))
    assert p.s.dropped == 1


def test_client_id_and_state_after_connect() -> None:
    p = Peer().run(CONNECTED)
    assert p.s.client_id == "c1"
    assert p.s.keep_alive == 60


def test_a_different_client_at_the_address_starts_afresh() -> None:
    other = "08 04 | 00 | 01 | 00 3C | 63 32"  # "c2", no CleanSession
    Peer().run(CONNECTED, C(REGISTER_ST), G(REGACK_ST),
               C(other), A(MqttDisconnect(publish_will=False), MqttConnect("c2", False, 60, None)),
               connack(0), G(CONNACK),
               C("09 0C | 00 | 00 01 | 00 00 | 32 31"), G("07 0D | 00 01 | 00 00 | 02"))


# -- QoS -1 [MQTT-SN 6.8] -------------------------------------------------------------------------

PREDEF, SHORT, NORMAL = TopicIdType.PREDEFINED, TopicIdType.SHORT, TopicIdType.NORMAL


@pytest.mark.parametrize(("msg", "expected"), [
    (Publish(0x0101, b"21", qos=-1, topic_id_type=PREDEF),
     MqttPublish("cfg/led", b"21", 0, False, None)),
    (Publish("ab", b"21", qos=-1, retain=True, topic_id_type=SHORT),
     MqttPublish("ab", b"21", 0, True, None)),
    (Publish(0x0999, b"21", qos=-1, topic_id_type=PREDEF), "unknown pre-defined topic id"),
    (Publish(5, b"21", qos=-1, topic_id_type=NORMAL), "normal topic id"),
    (Publish("a#", b"21", qos=-1, topic_id_type=SHORT), "wildcard"),
    (Publish(0x0101, b"21", qos=0, topic_id_type=PREDEF), "only QoS -1"),
], ids=["predefined", "short-retained", "unknown-predefined", "normal-id", "short-wildcard",
        "qos0-without-connection"])
def test_qos_minus_one_6_8(msg: Publish, expected: MqttPublish | str) -> None:
    got = qos_minus_one(msg, PREDEFINED)
    if isinstance(expected, str):
        assert isinstance(got, str) and expected in got
    else:
        assert got == expected


def test_qos_minus_one_from_a_connected_client_is_qos_0() -> None:
    Peer().run(CONNECTED, C("09 0C | 61 | 01 01 | 00 00 | 32 31"),
               A(MqttPublish("cfg/led", b"21", 0, False, None)))


# -- broker CONNACK codes -> MQTT-SN return codes --------------------------------------------------


@pytest.mark.parametrize(("code", "sn"), [
    (0, 0x00), (1, 0x03), (2, 0x03), (3, 0x01), (4, 0x03), (5, 0x03),
    (0x80, 0x03), (0x86, 0x03), (0x87, 0x03), (0x88, 0x01), (0x89, 0x01), (0x97, 0x01),
    (0x9F, 0x01),
])
def test_connack_code_mapping(code: int, sn: int) -> None:
    assert connack_code(code) == sn


# -- a persistent session across a broker restart ------------------------------------------------

SLEPT_WITH_TWO_IDS = [
    C(CONNECT_KEEP), A(MqttConnect("c1", False, 60, None)), connack(0), G(CONNACK),
    C(REGISTER_ST), G(REGACK_ST),  # the client's "s/t": id 1
    deliver("s/x", b"v", 0, None), G("09 0A | 00 02 | 00 01 | 73 2F 78"),  # ours: id 2
    C("07 0B | 00 02 | 00 01 | 00"), G("08 0C | 00 | 00 02 | 00 00 | 76"),
    C(SLEEP_60), G(DISCONNECT), A(Sleep(60))]


def test_what_a_persistent_session_keeps_follows_its_state() -> None:
    """Nothing for a clean session; a connected persistent one keeps its id, Duration, will,
    registrations, and whether and how long it sleeps; nothing once its connection ended."""
    clean = Peer().run(CONNECTED)
    assert clean.s.durable() is None
    p = Peer().run(C(CONNECT_KEEP), A(MqttConnect("c1", False, 60, None)))
    assert p.s.durable() is None  # (not connected yet)
    p.run(connack(0), G(CONNACK))
    assert p.s.durable() == {"id": "c1", "state": "active", "keep_alive": 60, "will": None,
                             "sleep": 0, "topics": [1, []]}
    key = p.s.durable_key()
    p.run(C(REGISTER_ST), G(REGACK_ST))
    assert p.s.durable_key() != key
    assert p.s.durable()["topics"] == [2, [[1, "s/t", True]]]  # type: ignore[index]
    p.run(C(SLEEP_60), G(DISCONNECT), A(Sleep(60)))
    assert p.s.durable()["state"] == "asleep"  # type: ignore[index]
    assert p.s.durable()["sleep"] == 60  # type: ignore[index]
    p.run(C(PINGREQ_C1), A(Awake(), Sleep(60)), G(PINGRESP))
    assert p.s.durable()["state"] == "asleep"  # type: ignore[index]
    p.run(C(DISCONNECT), G(DISCONNECT), A(Awake(), MqttDisconnect(publish_will=False)))
    assert p.s.durable() is None


def test_a_sleeper_restored_after_a_restart_sleeps_then_wakes_with_its_ids_6_14() -> None:
    """restore(): asleep again at once (Sleep for the glue), its MQTT session resumed with
    CleanSession 0; the broker's CONNACK goes to no one; what the broker resends waits for
    the PINGREQ and goes on the topic id registered before the restart (no REGISTER)."""
    before = Peer().run(*SLEPT_WITH_TWO_IDS)
    record = before.s.durable()
    assert record is not None
    p = Peer()
    p.now = 100.0
    p.s.restore(record, p.now)
    p.run(B(lambda s, now: None), A(MqttConnect("c1", False, 60, None), Sleep(60)),
          S(SnState.ASLEEP))
    assert p.s.restoring
    assert p.s.next_deadline() == 100 + 90  # the sleep timer counts from the restart
    p.run(connack(0), S(SnState.ASLEEP))
    assert not p.s.restoring
    p.run(deliver("s/x", b"w", 1, 7),  # (a resend of what it had not acknowledged)
          C(PINGREQ_C1), A(Awake()), G("08 0C | 20 | 00 02 | 00 01 | 77"),
          C("07 0D | 00 02 | 00 01 | 00"), A(MqttAck(7), Sleep(60)), G(PINGRESP))
    p.run(C(CONNECT_KEEP), A(Awake()), G(CONNACK),  # awake: its own id 1 still stands
          C("09 0C | 10 | 00 01 | 00 00 | 32 31"), A(MqttPublish("s/t", b"21", 0, True, None)))


def test_an_active_session_restored_goes_on_with_its_ids() -> None:
    before = Peer().run(C(CONNECT_KEEP), A(MqttConnect("c1", False, 60, None)), connack(0),
                        G(CONNACK), C(REGISTER_ST), G(REGACK_ST))
    record = before.s.durable()
    assert record is not None and record["state"] == "active"
    p = Peer()
    p.s.restore(record, 5.0)
    p.run(B(lambda s, now: None), A(MqttConnect("c1", False, 60, None)), S(SnState.ACTIVE),
          connack(0), C("09 0C | 10 | 00 01 | 00 00 | 32 31", at=6),
          A(MqttPublish("s/t", b"21", 0, True, None)))
    assert p.s.next_deadline() == 6 + 90


def test_a_restored_session_the_broker_refuses_ends_and_tells_the_client() -> None:
    record = Peer().run(*SLEPT_WITH_TWO_IDS).s.durable()
    assert record is not None
    p = Peer()
    p.s.restore(record, 0.0)
    p.run(B(lambda s, now: None), A(MqttConnect("c1", False, 60, None), Sleep(60)),
          connack(5), G(DISCONNECT), A(Awake()), S(SnState.LOST), Why("refused the restored"))
    assert p.s.durable() is None


def test_topic_table_export_and_load_round_trip() -> None:
    p = Peer().run(*SLEPT_WITH_TWO_IDS)
    data = p.s.topics.export()
    assert data == [3, [[1, "s/t", True], [2, "s/x", True]]]
    q = GatewaySession(P)
    version = q.topics.version
    q.topics.load(data)
    assert q.topics.version != version
    assert q.topics.export() == data
    assert q.topics.register("s/new") == 3  # the next id goes on from where it was
    q.topics.load([0, [[0, "bad id", True], [70000, "too big", False], ["1", "s/t", True]]])
    assert q.topics.export() == [1, []]  # what is not a valid registration is left out
