"""One MQTT-SN 1.2 client at the gateway, as data: client datagrams and broker events in,
datagrams to the client and actions toward the broker out. No socket, clock or event loop.

The gateway glue keeps one :class:`GatewaySession` per client address and connects it to the
broker as an in-process MQTT client (a transparent gateway: one MQTT connection per client)::

    s = GatewaySession(SessionParams(gateway_id=1, predefined={1: "cfg/a"}, retry_interval=10,
                                     max_retries=3, max_buffered=100))
    s.receive(decode(datagram), now)        # or s.receive_datagram(datagram, now)
    # what the broker said, when it says it:
    s.connack(code, now); s.deliver(topic, payload, qos, retain, ref, now)
    s.published(ref, ok, now); s.subscribed(ref, granted_qos, now); s.unsubscribed(ref, now)
    s.broker_closed(now)
    # then drain, in order:
    s.datagrams() -> list[Message]          # to the client (the glue encodes them)
    s.actions()   -> list[Action]           # toward the broker
    s.problems()  -> list[str]              # what was ignored and why (for the log)
    s.next_deadline() -> float | None;  s.handle_timer(now)

**States** (:class:`SnState`, [MQTT-SN 6.14 Fig. 4]): DISCONNECTED, CONNECTING (will prompts,
then waiting for the broker's CONNACK), ACTIVE, ASLEEP, AWAKE, LOST. Which client messages each
state accepts is one table (``_ACCEPTS``); anything else is ignored and reported by
:meth:`GatewaySession.problems`. Nothing here raises on what a client sends.

**Actions** toward the broker (:mod:`.actions`, re-exported here): ``MqttConnect`` (after the
will exchange), ``MqttPublish``, ``MqttSubscribe``, ``MqttUnsubscribe``, ``MqttAck``,
``WillUpdate``, ``MqttDisconnect``, ``Sleep``, ``Awake``. ``ref`` is how a broker answer finds
its request: the client's MsgId for its PUBLISH/SUBSCRIBE/UNSUBSCRIBE, the broker's packet id
for a delivery.

Decisions where the specification leaves room:

* Client QoS 1/2 PUBLISH: forwarded to the broker at once (``ref`` = MsgId); ``published(ref,
  ok)`` answers PUBACK 0x00 (QoS 1) or PUBREC (QoS 2, then PUBCOMP on the client's PUBREL);
  a refusal answers PUBACK 0x03 (not supported). A PUBLISH whose MsgId is still with the broker
  (a DUP resend) is not forwarded again; a QoS 2 resend after PUBREC gets PUBREC again. The
  glue calls ``published`` once the broker has the message (QoS 1 PUBACK, QoS 2 PUBREC).
* Deliveries go one at a time in order (the one-outstanding rule of [MQTT-SN 6.6], applied
  to the gateway as MQTT-SN 2.0 does): REGISTER first when the client holds no id for the
  name (REGACK awaited), then PUBLISH at the delivery's QoS; the next starts when PUBACK
  (QoS 1) / PUBCOMP (QoS 2) came; QoS 0 ones go back to back. ``MqttAck(ref)`` is emitted at
  PUBACK (QoS 1) and at PUBREC (QoS 2: the client owns the message from then on, PUBREL/
  PUBCOMP are between gateway and client). Until then the broker keeps QoS 1/2 messages in the
  session, also while the client sleeps.
* PUBACK 0x02 (invalid topic id) for a delivery on a normal id: the id is forgotten, REGISTERed
  anew and the PUBLISH resent, once; a second refusal (or any other refusal) drops it with
  ``MqttAck(ref, delivered=False)``, counted in ``dropped``. A REGACK refusal drops that
  message the same way and, unless the code is 0x01 (congestion), the name is not offered
  again (the spec: "corresponds to an unsubscribe" [MQTT-SN 6.10]) until the client
  subscribes to a filter matching it or starts a clean session.
* The queue toward the client holds at most ``max_buffered`` messages (asleep or not); a
  message beyond that is refused (the newest goes, like Mosquitto's max_queued_messages),
  counted in ``dropped``, and released to the broker with ``MqttAck(ref, delivered=False)``.
* Retransmission [MQTT-SN 6.13]: REGISTER, PUBLISH (DUP set), PUBREL, WILLTOPICREQ and
  WILLMSGREQ are resent every ``retry_interval``; with no answer after ``max_retries`` resends
  the client is LOST (``MqttDisconnect(publish_will=True)`` when an MQTT connection is open).
* Keep-alive [MQTT-SN 6.11] and sleep [MQTT-SN 6.14] are supervised at 1.5 x the Duration (the
  MQTT rule [MQTT-3.1.2-24]); Duration 0 turns keep-alive off. DISCONNECT with Duration 0 is a
  plain DISCONNECT. Expiry: LOST, will published.
* AWAKE: a PINGREQ sends the messages queued at that moment (later arrivals wait for the next
  wake-up, so a busy topic cannot keep a client awake), each once (a repeated PINGREQ sends
  nothing again), and PINGRESP when the last is acknowledged: ASLEEP, sleep timer restarted.
  Something left in flight when the client fell asleep is resent (DUP) when it wakes.
* A connected persistent session (CleanSession 0), asleep or not, outlives a broker restart
  with its registrations, Duration, will and sleep: :meth:`GatewaySession.durable` is what
  the glue stores, :meth:`GatewaySession.restore` puts it back (its MQTT session resumed, so
  what the broker kept for a sleeper is buffered again for its wake-up). Registrations
  are not kept for a client that is gone: a CONNECT with CleanSession 1, or from an address
  with no session, starts without them, as before.
* A CONNECT while ASLEEP/AWAKE (same client id) wakes the client to ACTIVE on the same MQTT
  connection: CONNACK, then the buffer (Bisquitt's reading of Fig. 4; Paho gateway issue
  #121). Its CleanSession flag is not acted on; its Will flag runs the will prompts and ends in
  :class:`WillUpdate`. A CONNECT from ACTIVE is a new connection: ``MqttDisconnect(False)``,
  then ``MqttConnect`` (messages queued for the old one are dropped: the broker resends QoS 1/2
  of a kept session); CleanSession empties the topic table.
* Client ids of 0 or more than ``max_client_id`` characters: CONNACK 0x03 [MQTT-SN 5.3.1].
* Broker CONNACK refusals map to 0x01 (congestion) when they mean "later" (3.1.1 code 3,
  MQTT 5 0x88/0x89/0x97/0x9F) and to 0x03 (not supported) otherwise.
* SUBSCRIBE/PUBLISH/REGISTER with a topic that cannot be used (unknown pre-defined or normal
  id, malformed filter, wildcard in a name) -> rc 0x02 (invalid topic id); a subscription the
  broker refused -> SUBACK 0x03. UNSUBACK has no return code: an unknown pre-defined id is
  answered at once. A wildcard WILLTOPIC/WILLTOPICUPD -> 0x02.
* QoS -1 [MQTT-SN 6.8] is the gateway's, not a session's: :func:`qos_minus_one`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ...errors import MqttsnError
from ..topics import topic_matches
from .actions import (
    Action,
    Awake,
    MqttAck,
    MqttConnect,
    MqttDisconnect,
    MqttPublish,
    MqttSubscribe,
    MqttUnsubscribe,
    Sleep,
    WillSpec,
    WillUpdate,
    connack_code,
    qos_minus_one,
)
from .codec import decode, describe
from .constants import MAX_CLIENT_ID_LENGTH, MAX_LENGTH, MsgType, ReturnCode, TopicIdType
from .messages import (
    Connack,
    Connect,
    Disconnect,
    Message,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Regack,
    Register,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    WillMsg,
    WillMsgReq,
    WillMsgResp,
    WillMsgUpd,
    WillTopic,
    WillTopicReq,
    WillTopicResp,
    WillTopicUpd,
)
from .topics import TopicTable, has_wildcard, short_topic_value, topic_name_problem

__all__ = [
    "Action", "Awake", "GatewaySession", "MqttAck", "MqttConnect", "MqttDisconnect",
    "MqttPublish", "MqttSubscribe", "MqttUnsubscribe", "SessionParams", "Sleep", "SnState",
    "WillSpec", "WillUpdate", "connack_code", "qos_minus_one",
]

RC = ReturnCode
_MAX_FIELD = MAX_LENGTH - 9  # the most a PUBLISH's Data (or a REGISTER's name) can hold


class SnState(IntEnum):
    """Where the client stands, seen from the gateway [MQTT-SN 6.14, Fig. 4]."""

    DISCONNECTED = 0
    CONNECTING = 1  # will prompts [6.2], then waiting for the broker's CONNACK
    ACTIVE = 2
    ASLEEP = 3
    AWAKE = 4
    LOST = 5


@dataclass(frozen=True, slots=True)
class SessionParams:
    """The gateway's settings for its sessions. ``predefined``: pre-defined topic id -> name
    [MQTT-SN 6.7]; ``retry_interval``, ``max_retries``: Tretry (s) and Nretry [MQTT-SN 6.13];
    ``max_buffered`` (at least 1): messages held toward the client, asleep or not."""

    gateway_id: int
    predefined: Mapping[int, str]
    retry_interval: float
    max_retries: int
    max_buffered: int
    max_client_id: int = MAX_CLIENT_ID_LENGTH


# -- QoS state, as data -------------------------------------------------------------------------


class Phase(IntEnum):
    """Where a delivery toward the client stands."""

    QUEUED = 0  # nothing outstanding (not started, or its REGISTER was just acknowledged)
    REGISTERING = 1  # REGISTER sent, REGACK awaited
    PUBLISHED = 2  # QoS 1/2 PUBLISH sent, PUBACK / PUBREC awaited
    RELEASING = 3  # PUBREL sent, PUBCOMP awaited


@dataclass(slots=True)
class Delivery:
    """One message toward the client. ``msg_id`` is that of the outstanding REGISTER or
    PUBLISH/PUBREL; ``topic_id``, ``kind`` how the PUBLISH names the topic."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    ref: int | None
    phase: Phase = Phase.QUEUED
    msg_id: int = 0
    topic_id: int | str = 0
    kind: TopicIdType = TopicIdType.NORMAL
    reregistered: bool = False


@dataclass(frozen=True, slots=True)
class _Inbound:
    """A client QoS 1/2 PUBLISH with the broker: how to name it in PUBACK, its QoS."""

    topic_id: int
    qos: int


@dataclass(slots=True)
class _Connecting:
    """The CONNECT in progress; ``resume``: a wake-up CONNECT (the MQTT connection stays)."""

    connect: Connect
    resume: bool
    asking: MsgType | None = None  # WILLTOPICREQ / WILLMSGREQ outstanding
    will_topic: WillTopic | None = None


_ACK_TYPES = frozenset({MsgType.REGACK, MsgType.PUBACK, MsgType.PUBREC, MsgType.PUBCOMP})
_CONNECTED = frozenset({
    MsgType.CONNECT, MsgType.REGISTER, MsgType.PUBLISH, MsgType.PUBREL, MsgType.SUBSCRIBE,
    MsgType.UNSUBSCRIBE, MsgType.PINGREQ, MsgType.DISCONNECT, MsgType.WILLTOPICUPD,
    MsgType.WILLMSGUPD}) | _ACK_TYPES
# The transition table: which client messages each state accepts [MQTT-SN 6.14 Fig. 4].
_ACCEPTS: dict[SnState, frozenset[MsgType]] = {
    SnState.DISCONNECTED: frozenset({MsgType.CONNECT}),
    SnState.LOST: frozenset({MsgType.CONNECT}),
    SnState.CONNECTING: frozenset({MsgType.CONNECT, MsgType.WILLTOPIC, MsgType.WILLMSG,
                                   MsgType.DISCONNECT}),
    SnState.ACTIVE: _CONNECTED,
    SnState.AWAKE: _CONNECTED,
    # late acknowledgements are taken; what they release waits for the wake-up
    SnState.ASLEEP: frozenset({MsgType.CONNECT, MsgType.PINGREQ, MsgType.DISCONNECT})
    | _ACK_TYPES,
}
_SENDING = (SnState.ACTIVE, SnState.AWAKE)


class GatewaySession:
    """One MQTT-SN client at the gateway, as data (see the module docstring)."""

    def __init__(self, params: SessionParams) -> None:
        self.params = params
        self.state = SnState.DISCONNECTED
        self.client_id: str | None = None
        self.keep_alive = 0  # CONNECT's Duration (s)
        self.sleep_duration = 0  # DISCONNECT's Duration (s)
        self.topics = TopicTable(params.predefined)
        self.will: WillSpec | None = None
        self.outbox: deque[Delivery] = deque()  # toward the client; the head is in flight
        self.inbound: dict[int, _Inbound] = {}  # client MsgId -> its QoS 1/2 PUBLISH
        self.released: set[int] = set()  # client QoS 2 MsgIds answered PUBREC, PUBREL due
        self.subscribing: dict[int, tuple[int, bool]] = {}  # MsgId -> (topic id, confirm it)
        self.unsubscribing: set[int] = set()
        self.dropped = 0  # deliveries given up (queue full, refused by the client)
        self.persistent = False  # its last CONNECT had CleanSession 0: kept (see durable())
        self.restoring = False  # restored asleep, the broker's CONNACK not yet in
        self.last_heard = 0.0
        self._sleep_from = 0.0
        self._connecting: _Connecting | None = None
        self._will_payload = b""  # WILLMSGUPD before any will topic is kept for it
        self._mqtt_open = False
        self._retry_at: float | None = None
        self._retries = 0
        self._awake_left = 0
        # how many messages for this client the broker still holds back (its in-flight window
        # full): a wake-up waits for them too. The glue sets it; 0 when it cannot tell
        self.broker_backlog: Callable[[], int] = lambda: 0
        self._next_msg_id = 1
        self._out: list[Message] = []
        self._actions: list[Action] = []
        self._problems: list[str] = []

    # -- outputs ------------------------------------------------------------------------------

    def datagrams(self) -> list[Message]:
        """The messages to send to the client, in order (then cleared)."""
        out, self._out = self._out, []
        return out

    def actions(self) -> list[Action]:
        """The actions toward the broker, in order (then cleared)."""
        out, self._actions = self._actions, []
        return out

    def problems(self) -> list[str]:
        """Why things were ignored or dropped since the last call (for the log)."""
        out, self._problems = self._problems, []
        return out

    def _problem(self, text: str) -> None:
        self._problems.append(text)

    # -- what outlives the gateway (a persistent session) -------------------------------------

    def kept_as(self) -> str | None:
        """How a restart should find this client: ``"asleep"`` or ``"active"`` while a
        persistent session (CleanSession 0) is connected, else None (nothing to keep)."""
        if not self.persistent or not self._mqtt_open:
            return None
        if self.state in (SnState.ASLEEP, SnState.AWAKE) or (
                self.state is SnState.CONNECTING and self._connecting is not None
                and self._connecting.resume):
            return "asleep"
        return "active" if self.state is SnState.ACTIVE else None

    def durable_key(self) -> tuple[Any, ...]:
        """Changes whenever :meth:`durable` would (cheap: compared after every datagram)."""
        return (self.client_id, self.kept_as(), self.keep_alive, self.will,
                self.sleep_duration, self.topics.version)

    def durable(self) -> dict[str, Any] | None:
        """What a connected persistent session keeps across a broker restart, as plain data
        (None: nothing to keep): client id, Duration, will, registrations, and whether it
        sleeps and for how long. The glue stores it; :meth:`restore` puts it back."""
        kept = self.kept_as()
        if kept is None:
            return None
        w = self.will
        return {"id": self.client_id, "state": kept, "keep_alive": self.keep_alive,
                "will": None if w is None else [w.topic, w.payload, w.qos, w.retain],
                "sleep": self.sleep_duration, "topics": self.topics.export()}

    def restore(self, record: Mapping[str, Any], now: float) -> None:
        """A client whose persistent session was connected when the broker stopped: asleep
        or active again, with its registrations, Duration and will; its MQTT session resumed
        (:class:`MqttConnect`, CleanSession 0), the broker's CONNACK answered to no one. Its
        timers start now: the downtime is not counted against it."""
        w = record["will"]
        asleep = record["state"] == "asleep"
        self.client_id = str(record["id"])
        self.keep_alive = int(record["keep_alive"])
        self.will = None if w is None else WillSpec(str(w[0]), bytes(w[1]), int(w[2]),
                                                    bool(w[3]))
        self._will_payload = b"" if w is None else bytes(w[1])
        self.sleep_duration = int(record["sleep"])
        self.topics.load(record["topics"])
        self.persistent = True
        self.last_heard = self._sleep_from = now
        self._actions.append(MqttConnect(self.client_id, False, self.keep_alive, self.will))
        self._mqtt_open = True
        self.restoring = True
        self._to(SnState.ASLEEP if asleep else SnState.ACTIVE)

    # -- client datagrams in ------------------------------------------------------------------

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """Decode ``datagram`` and :meth:`receive` it; one that cannot be decoded is reported
        by :meth:`problems` and dropped."""
        try:
            msg = decode(datagram)
        except MqttsnError as exc:
            self._problem(f"datagram dropped: {exc.message}")
            return
        self.receive(msg, now)

    def receive(self, msg: Message, now: float) -> None:
        """A message from the client."""
        handler = _HANDLERS.get(msg.msg_type)
        if handler is None:
            self._problem(f"{describe(msg)} ignored: not for a client session")
            return
        if msg.msg_type not in _ACCEPTS[self.state]:
            self._problem(f"{describe(msg)} ignored in state {self.state.name}")
            return
        self.last_heard = now
        handler(self, msg, now)

    def _on_connect(self, m: Connect, now: float) -> None:
        if not 1 <= len(m.client_id) <= self.params.max_client_id:
            self._problem(f"CONNECT client id of {len(m.client_id)} characters (1-"
                          f"{self.params.max_client_id}) [MQTT-SN 5.3.1]")
            self._out.append(Connack(RC.REJECTED_NOT_SUPPORTED))
            return
        c = self._connecting
        if self.state is SnState.CONNECTING and c is not None and c.connect == m:
            self._problem("CONNECT repeated while connecting: ignored")
            return
        if self.state in (SnState.ASLEEP, SnState.AWAKE) and m.client_id == self.client_id:
            self.keep_alive = m.keep_alive  # a wake-up [6.14]: same MQTT connection
            self._connecting = _Connecting(m, resume=True)
            self._to(SnState.CONNECTING)
            self._retry_at = None
            if m.will:
                self._ask(MsgType.WILLTOPICREQ, now)
            else:
                self._connected(now)
            return
        if self._mqtt_open:  # a reconnect: the old MQTT connection ends, without its will
            self._actions.append(MqttDisconnect(publish_will=False))
            self._mqtt_open = False
        self._reset()
        if m.clean_session or m.client_id != self.client_id:
            self.topics.clear()  # [MQTT-SN 6.3]
        self.client_id = m.client_id
        self.persistent = not m.clean_session
        self.keep_alive = m.keep_alive
        self.will = None
        self._will_payload = b""
        self._connecting = _Connecting(m, resume=False)
        self._to(SnState.CONNECTING)
        if m.will:
            self._ask(MsgType.WILLTOPICREQ, now)  # [MQTT-SN 6.2]
        else:
            self._open_mqtt()

    def _ask(self, what: MsgType, now: float) -> None:
        assert self._connecting is not None
        self._connecting.asking = what
        self._out.append(WillTopicReq() if what == MsgType.WILLTOPICREQ else WillMsgReq())
        self._arm(now)

    def _on_will_topic(self, m: WillTopic, now: float) -> None:
        c = self._connecting
        if c is None or c.asking != MsgType.WILLTOPICREQ:
            self._problem("WILLTOPIC not asked for: ignored")
            return
        self._retry_at = None
        c.asking = None
        if not m.deletes_will and has_wildcard(m.topic):
            self._problem(f"will topic {m.topic!r} has a wildcard: CONNECT refused")
            self._out.append(Connack(RC.REJECTED_INVALID_TOPIC_ID))
            if c.resume:
                self._fall_asleep(now, answer=None)
            else:
                self._to(SnState.DISCONNECTED)
                self._connecting = None
            return
        if m.deletes_will:  # the empty WILLTOPIC: no will, no WILLMSGREQ
            self.will = None
            self._will_payload = b""
            self._will_done(now)
            return
        c.will_topic = m
        self._ask(MsgType.WILLMSGREQ, now)

    def _on_will_msg(self, m: WillMsg, now: float) -> None:
        c = self._connecting
        if c is None or c.asking != MsgType.WILLMSGREQ or c.will_topic is None:
            self._problem("WILLMSG not asked for: ignored")
            return
        self._retry_at = None
        c.asking = None
        t = c.will_topic
        self.will = WillSpec(t.topic, m.payload, t.qos, t.retain)
        self._will_payload = m.payload
        self._will_done(now)

    def _will_done(self, now: float) -> None:
        assert self._connecting is not None
        if self._connecting.resume:
            self._actions.append(WillUpdate(self.will))
            self._connected(now)
        else:
            self._open_mqtt()

    def _open_mqtt(self) -> None:
        assert self._connecting is not None and self.client_id is not None
        m = self._connecting.connect
        self._actions.append(MqttConnect(self.client_id, m.clean_session, m.keep_alive,
                                         self.will))
        self._mqtt_open = True

    def _connected(self, now: float) -> None:
        """CONNACK 0x00 to the client, ACTIVE, and the queue (with what was in flight)."""
        self._connecting = None
        self._out.append(Connack(RC.ACCEPTED))
        self._to(SnState.ACTIVE)
        self.last_heard = now
        self._resume_head(now)
        self._pump(now)

    def _on_register(self, m: Register, now: float) -> None:
        problem = topic_name_problem(m.topic_name)
        if problem:
            self._problem(f"REGISTER refused: {problem}")
            self._out.append(Regack(0, m.msg_id, RC.REJECTED_INVALID_TOPIC_ID))
            return
        tid = self.topics.register(m.topic_name)  # [MQTT-SN 6.5]
        if tid is None:
            self._problem("REGISTER refused: no topic id left")
            self._out.append(Regack(0, m.msg_id, RC.REJECTED_NOT_SUPPORTED))
            return
        self.topics.confirm(tid)
        self._out.append(Regack(tid, m.msg_id, RC.ACCEPTED))

    def _on_publish(self, m: Publish, now: float) -> None:
        kind = TopicIdType(m.topic_id_type)
        topic_id = short_topic_value(m.topic) if isinstance(m.topic, str) else m.topic
        name = self.topics.name_of(kind, m.topic)
        problem = None if name is None else topic_name_problem(name)
        if name is None or problem:
            self._problem(f"{describe(m)} refused: {problem or 'unknown topic id'} "
                          "[MQTT-SN 6.6]")
            self._out.append(Puback(topic_id, m.msg_id, RC.REJECTED_INVALID_TOPIC_ID))
            return
        qos = max(m.qos, 0)  # QoS -1 from a connected client is QoS 0
        if qos == 0:
            self._actions.append(MqttPublish(name, m.data, 0, m.retain, None))
            return
        if m.msg_id in self.inbound:  # a resend while the broker has it: forward once
            self._problem(f"PUBLISH MsgId {m.msg_id} already with the broker: not forwarded")
            return
        if qos == 2 and m.msg_id in self.released:  # PUBREC was lost [MQTT 4.3.3]
            self._out.append(Pubrec(m.msg_id))
            return
        self.inbound[m.msg_id] = _Inbound(topic_id, qos)
        self._actions.append(MqttPublish(name, m.data, qos, m.retain, m.msg_id))

    def _on_pubrel(self, m: Pubrel, now: float) -> None:
        if m.msg_id in self.inbound:
            self._problem(f"PUBREL {m.msg_id} before PUBREC: ignored")
            return
        self.released.discard(m.msg_id)
        self._out.append(Pubcomp(m.msg_id))  # also for an unknown id: a resent PUBREL

    def _on_subscribe(self, m: Subscribe, now: float) -> None:
        if m.msg_id in self.subscribing:
            self._problem(f"SUBSCRIBE MsgId {m.msg_id} already with the broker: not forwarded")
            return
        kind = TopicIdType(m.topic_id_type)
        name, problem = self.topics.filter_of(kind, m.topic)
        topic_id, confirm = 0, False  # 0x0000 for wildcards and short names [MQTT-SN 6.9]
        if kind == TopicIdType.PREDEFINED and isinstance(m.topic, int):
            topic_id = m.topic
        elif problem is None and kind == TopicIdType.NORMAL and not has_wildcard(name):
            tid = self.topics.register(name)
            problem = None if tid is not None else "no topic id left"
            topic_id, confirm = tid or 0, True
        if problem:
            self._problem(f"SUBSCRIBE refused: {problem}")
            self._out.append(Suback(0, m.msg_id, RC.REJECTED_INVALID_TOPIC_ID, 0))
            return
        self.topics.refused -= {n for n in self.topics.refused if topic_matches(name, n)}
        self.subscribing[m.msg_id] = (topic_id, confirm)
        self._actions.append(MqttSubscribe(name, m.qos, m.msg_id))

    def _on_unsubscribe(self, m: Unsubscribe, now: float) -> None:
        if m.msg_id in self.unsubscribing:
            self._problem(f"UNSUBSCRIBE MsgId {m.msg_id} already with the broker")
            return
        name, problem = self.topics.filter_of(TopicIdType(m.topic_id_type), m.topic)
        if problem:  # UNSUBACK has no return code: nothing to undo
            self._problem(f"UNSUBSCRIBE answered without the broker: {problem}")
            self._out.append(Unsuback(m.msg_id))
            return
        self.unsubscribing.add(m.msg_id)
        self._actions.append(MqttUnsubscribe(name, m.msg_id))

    def _on_pingreq(self, m: Pingreq, now: float) -> None:
        if m.client_id is not None and m.client_id != self.client_id:
            self._problem(f"PINGREQ for client {m.client_id!r}, not {self.client_id!r}")
            return
        if self.state is SnState.ACTIVE:
            self._out.append(Pingresp())  # [MQTT-SN 6.11]
        elif self.state is SnState.ASLEEP:  # [MQTT-SN 6.14] awake for what is buffered
            self._to(SnState.AWAKE)
            self._awake_left = len(self.outbox) + self.broker_backlog()
            self._resume_head(now)
            self._pump(now)
        # AWAKE: a repeated PINGREQ; what is under way goes on, nothing is sent again

    def _on_disconnect(self, m: Disconnect, now: float) -> None:
        if not m.duration:  # [MQTT-SN 6.12]
            self._out.append(Disconnect())
            self._end(SnState.DISCONNECTED, publish_will=False)
            return
        if self.state is SnState.CONNECTING:
            self._problem("DISCONNECT with a sleep duration before CONNACK: ignored")
            return
        self.sleep_duration = m.duration  # [MQTT-SN 6.14] (also a new duration when asleep)
        self._fall_asleep(now, answer=Disconnect())

    def _on_willtopicupd(self, m: WillTopicUpd, now: float) -> None:
        if m.deletes_will:  # [MQTT-SN 6.4]
            self.will, self._will_payload = None, b""
        elif has_wildcard(m.topic):
            self._problem(f"WILLTOPICUPD {m.topic!r} has a wildcard: refused")
            self._out.append(WillTopicResp(RC.REJECTED_INVALID_TOPIC_ID))
            return
        else:
            self.will = WillSpec(m.topic, self._will_payload, m.qos, m.retain)
        self._actions.append(WillUpdate(self.will))
        self._out.append(WillTopicResp(RC.ACCEPTED))

    def _on_willmsgupd(self, m: WillMsgUpd, now: float) -> None:
        self._will_payload = m.payload
        if self.will is None:
            self._problem("WILLMSGUPD without a will topic: kept for the next WILLTOPICUPD")
        else:
            self.will = WillSpec(self.will.topic, m.payload, self.will.qos, self.will.retain)
            self._actions.append(WillUpdate(self.will))
        self._out.append(WillMsgResp(RC.ACCEPTED))

    # -- acknowledgements of deliveries -------------------------------------------------------

    def _head(self, phase: Phase, msg_id: int) -> Delivery | None:
        head = self.outbox[0] if self.outbox else None
        if head is None or head.phase is not phase or head.msg_id != msg_id:
            return None
        return head

    def _on_regack(self, m: Regack, now: float) -> None:
        head = self._head(Phase.REGISTERING, m.msg_id)
        if head is None:
            self._problem(f"REGACK for unknown MsgId {m.msg_id}: ignored")
            return
        self._retry_at = None
        assert isinstance(head.topic_id, int)
        if m.return_code == RC.ACCEPTED:
            self.topics.confirm(head.topic_id)
            head.phase = Phase.QUEUED
        else:  # [MQTT-SN 6.10] "corresponds to an unsubscribe to the topic name"
            self.topics.forget(head.topic_id)
            if m.return_code != RC.REJECTED_CONGESTION:
                self.topics.refused.add(head.topic)
            self._give_up(f"client refused REGISTER {head.topic!r} ({m.return_code.name})")
        self._pump(now)

    def _on_puback(self, m: Puback, now: float) -> None:
        head = self._head(Phase.PUBLISHED, m.msg_id)
        if head is None:
            if m.return_code == RC.REJECTED_INVALID_TOPIC_ID:  # after a QoS 0 PUBLISH
                self.topics.forget(m.topic_id)
            self._problem(f"{describe(m)} for no PUBLISH in flight")
            return
        self._retry_at = None
        if m.return_code == RC.ACCEPTED:
            self._done(MqttAck(head.ref) if head.ref is not None else None)
        elif (m.return_code == RC.REJECTED_INVALID_TOPIC_ID and head.kind == TopicIdType.NORMAL
              and not head.reregistered and isinstance(head.topic_id, int)):
            self.topics.forget(head.topic_id)  # [MQTT-SN 6.10]: correct the id, once
            head.reregistered = True
            head.phase = Phase.QUEUED
        else:
            self._give_up(f"client refused PUBLISH on {head.topic!r} ({m.return_code.name})")
        self._pump(now)

    def _on_pubrec(self, m: Pubrec, now: float) -> None:
        head = self._head(Phase.PUBLISHED, m.msg_id) or self._head(Phase.RELEASING, m.msg_id)
        if head is None or head.qos != 2:
            self._problem(f"PUBREC for unknown MsgId {m.msg_id}: ignored")
            return
        if head.phase is Phase.PUBLISHED:
            head.phase = Phase.RELEASING
            if head.ref is not None:  # the client owns the message now
                self._actions.append(MqttAck(head.ref))
        self._send(Pubrel(m.msg_id), now)  # (again, for a repeated PUBREC)

    def _on_pubcomp(self, m: Pubcomp, now: float) -> None:
        if self._head(Phase.RELEASING, m.msg_id) is None:
            self._problem(f"PUBCOMP for unknown MsgId {m.msg_id}: ignored")
            return
        self._retry_at = None
        self._done(None)
        self._pump(now)

    # -- what the broker said -----------------------------------------------------------------

    def connack(self, code: int, now: float) -> None:
        """The broker answered our :class:`MqttConnect` with ``code`` (0: accepted)."""
        if self.restoring:  # (a sleeper put back after a restart: it stays asleep)
            self.restoring = False
            if code:
                self._problem(f"broker refused the restored session with code {code}")
                self._mqtt_open = False
                self._out.append(Disconnect())  # (the client starts over with a CONNECT)
                self._end(SnState.LOST, publish_will=False)
            return
        c = self._connecting
        if self.state is not SnState.CONNECTING or c is None or c.resume or c.asking:
            self._problem(f"broker CONNACK {code} with no CONNECT pending: ignored")
            return
        if code == 0:
            self._connected(now)
            return
        self._problem(f"broker refused CONNECT with code {code}")
        self._out.append(Connack(connack_code(code)))
        self._mqtt_open = False
        self._end(SnState.DISCONNECTED, publish_will=False)

    def deliver(self, topic: str, payload: bytes, qos: int, retain: bool, ref: int | None,
                now: float) -> None:
        """A message for the client; ``ref`` (QoS 1/2): the broker's packet id, answered by
        :class:`MqttAck` once the client has it."""
        if not self._mqtt_open or qos not in (0, 1, 2):
            self._problem(f"delivery on {topic!r} at QoS {qos} in state {self.state.name}: "
                          "ignored")
            return
        item = Delivery(topic, payload, qos, retain, ref if qos else None)
        if len(payload) > _MAX_FIELD or len(topic.encode("utf-8")) > _MAX_FIELD:
            self._drop(item, "too long for a datagram [MQTT-SN 6.10]")
        elif len(self.outbox) >= self.params.max_buffered:
            self._drop(item, f"{len(self.outbox)} messages queued already")
        else:
            self.outbox.append(item)
            self._pump(now)

    def published(self, ref: int, ok: bool, now: float) -> None:
        """The broker took (``ok``) or refused the client's QoS 1/2 PUBLISH ``ref``."""
        entry = self.inbound.pop(ref, None)
        if entry is None:
            self._problem(f"broker answer for unknown PUBLISH {ref}: ignored")
            return
        if not ok:
            self._out.append(Puback(entry.topic_id, ref, RC.REJECTED_NOT_SUPPORTED))
        elif entry.qos == 1:
            self._out.append(Puback(entry.topic_id, ref, RC.ACCEPTED))
        else:
            self.released.add(ref)
            self._out.append(Pubrec(ref))

    def subscribed(self, ref: int, granted_qos: int | None, now: float) -> None:
        """The broker granted ``granted_qos`` to SUBSCRIBE ``ref``, or refused it (None)."""
        pending = self.subscribing.pop(ref, None)
        if pending is None:
            self._problem(f"broker SUBACK for unknown SUBSCRIBE {ref}: ignored")
            return
        if granted_qos not in (0, 1, 2):
            self._out.append(Suback(0, ref, RC.REJECTED_NOT_SUPPORTED, 0))
            return
        topic_id, confirm = pending
        if confirm:
            self.topics.confirm(topic_id)
        self._out.append(Suback(topic_id, ref, RC.ACCEPTED, granted_qos))

    def unsubscribed(self, ref: int, now: float) -> None:
        """The broker answered UNSUBSCRIBE ``ref``."""
        if ref not in self.unsubscribing:
            self._problem(f"broker UNSUBACK for unknown UNSUBSCRIBE {ref}: ignored")
            return
        self.unsubscribing.discard(ref)
        self._out.append(Unsuback(ref))

    def broker_closed(self, now: float) -> None:
        """The broker ended the MQTT connection: DISCONNECT to the client."""
        if not self._mqtt_open:
            return
        self._mqtt_open = False
        self._out.append(Disconnect())
        self._end(SnState.DISCONNECTED, publish_will=False)

    # -- the queue toward the client ----------------------------------------------------------

    def _pump(self, now: float) -> None:
        """Start the next deliveries while nothing is outstanding; AWAKE ends with PINGRESP
        once what was buffered at the PINGREQ is through."""
        while self.state in _SENDING and self.outbox:
            if self.state is SnState.AWAKE and self._awake_left <= 0:
                break
            if self.outbox[0].phase is not Phase.QUEUED or self._start(self.outbox[0], now):
                return  # an answer from the client is awaited
        if self.state is SnState.AWAKE and not (
                self._awake_left > 0 and not self.outbox and self.broker_backlog() > 0):
            self._fall_asleep(now, answer=Pingresp())
        # (else: what the broker held back comes as the acknowledgements free its window)

    def _start(self, item: Delivery, now: float) -> bool:
        """Send the head's REGISTER or PUBLISH; True if an answer is now awaited."""
        if item.topic in self.topics.refused:
            self._give_up(f"client refused topic {item.topic!r} earlier [MQTT-SN 6.10]")
            return False
        where = self.topics.for_delivery(item.topic)
        if where is None:  # [MQTT-SN 6.10] REGISTER first, PUBLISH after REGACK
            tid = self.topics.register(item.topic)
            if tid is None:
                self._give_up("no topic id left")
                return False
            item.phase, item.topic_id, item.msg_id = Phase.REGISTERING, tid, self._msg_id()
            self._send(Register(tid, item.msg_id, item.topic), now)
            return True
        item.kind, item.topic_id = where
        item.msg_id = self._msg_id() if item.qos else 0
        publish = Publish(item.topic_id, item.payload, item.qos, item.retain, False,
                          item.msg_id, item.kind)
        if item.qos == 0:
            self._out.append(publish)
            self._done(None)
            return False
        item.phase = Phase.PUBLISHED
        self._send(publish, now)
        return True

    def _in_flight(self, item: Delivery) -> Message:
        """What is outstanding for the head, as it is resent."""
        if item.phase is Phase.REGISTERING:
            assert isinstance(item.topic_id, int)
            return Register(item.topic_id, item.msg_id, item.topic)
        if item.phase is Phase.RELEASING:
            return Pubrel(item.msg_id)
        return Publish(item.topic_id, item.payload, item.qos, item.retain, True, item.msg_id,
                       item.kind)

    def _resume_head(self, now: float) -> None:
        """Resend what was in flight when the client fell asleep (DUP for a PUBLISH)."""
        if self.outbox and self.outbox[0].phase is not Phase.QUEUED:
            self._send(self._in_flight(self.outbox[0]), now)

    def _send(self, msg: Message, now: float) -> None:
        """Send ``msg``, which awaits an answer: retransmission restarts [MQTT-SN 6.13]. While
        asleep nothing goes: it is resent at the wake-up."""
        if self.state in _SENDING or self.state is SnState.CONNECTING:
            self._out.append(msg)
            self._arm(now)

    def _arm(self, now: float) -> None:
        self._retries = 0
        self._retry_at = now + self.params.retry_interval

    def _done(self, ack: MqttAck | None) -> None:
        self.outbox.popleft()
        self._awake_left -= 1
        if ack is not None:
            self._actions.append(ack)

    def _give_up(self, why: str) -> None:
        self._drop(self.outbox[0], why)
        self._done(None)

    def _drop(self, item: Delivery, why: str) -> None:
        self.dropped += 1
        self._problem(f"delivery on {item.topic!r} dropped: {why}")
        if item.ref is not None:
            self._actions.append(MqttAck(item.ref, delivered=False))

    def _msg_id(self) -> int:
        mid = self._next_msg_id
        self._next_msg_id = mid % 0xFFFF + 1
        return mid

    # -- state changes ------------------------------------------------------------------------

    def _fall_asleep(self, now: float, answer: Message | None) -> None:
        if answer is not None:
            self._out.append(answer)
        self._connecting = None
        self._to(SnState.ASLEEP)
        self._sleep_from = now
        self._retry_at = None  # paused: what is in flight is resent at the wake-up

    def _to(self, state: SnState) -> None:
        """Change state. Sleep on entering ASLEEP, Awake on leaving it (for any state): the
        two alternate strictly, so Sleep count - Awake count = clients asleep now."""
        if self.state is SnState.ASLEEP and state is not SnState.ASLEEP:
            self._actions.append(Awake())
        elif state is SnState.ASLEEP and self.state is not SnState.ASLEEP:
            self._actions.append(Sleep(self.sleep_duration))
        self.state = state

    def _reset(self) -> None:
        """Forget every flow of the connection (the broker keeps its QoS 1/2 side)."""
        self.outbox.clear()
        self.inbound.clear()
        self.released.clear()
        self.subscribing.clear()
        self.unsubscribing.clear()
        self._connecting = None
        self._retry_at = None
        self._awake_left = 0

    def _end(self, state: SnState, publish_will: bool) -> None:
        self._to(state)
        if self._mqtt_open:
            self._actions.append(MqttDisconnect(publish_will))
            self._mqtt_open = False
        self._reset()

    def _lose(self, why: str) -> None:
        self._problem(f"client {self.client_id!r} lost: {why}")
        self._end(SnState.LOST, publish_will=True)

    # -- time ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has something to do: a retransmission, keep-alive expiry
        (ACTIVE) or sleep expiry (ASLEEP), at 1.5 x the client's Duration."""
        deadlines = []
        if self._retry_at is not None and self.state is not SnState.ASLEEP:
            deadlines.append(self._retry_at)
        if self.state is SnState.ACTIVE and self.keep_alive:
            deadlines.append(self.last_heard + 1.5 * self.keep_alive)
        elif self.state is SnState.ASLEEP:
            since = max(self.last_heard, self._sleep_from)
            deadlines.append(since + 1.5 * self.sleep_duration)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Retransmit what is due [MQTT-SN 6.13], or declare the client lost."""
        if self.state is SnState.ACTIVE and self.keep_alive \
                and now >= self.last_heard + 1.5 * self.keep_alive:
            self._lose(f"nothing heard for 1.5 x keep-alive {self.keep_alive}s [MQTT-SN 6.11]")
            return
        if self.state is SnState.ASLEEP \
                and now >= max(self.last_heard, self._sleep_from) + 1.5 * self.sleep_duration:
            self._lose(f"not awake within 1.5 x sleep duration {self.sleep_duration}s "
                       "[MQTT-SN 6.14]")
            return
        if self._retry_at is None or now < self._retry_at or self.state is SnState.ASLEEP:
            return
        if self._retries >= self.params.max_retries:
            if self.state is SnState.CONNECTING and not self._mqtt_open:
                self._problem("no answer to the will prompts: connection abandoned")
                self._reset()
                self._to(SnState.LOST)
                return
            self._lose(f"no answer after {self._retries} retransmissions [MQTT-SN 6.13]")
            return
        c = self._connecting
        if self.state is SnState.CONNECTING and c is not None and c.asking is not None:
            msg: Message = WillTopicReq() if c.asking == MsgType.WILLTOPICREQ else WillMsgReq()
        elif self.state in _SENDING and self.outbox and self.outbox[0].phase is not Phase.QUEUED:
            msg = self._in_flight(self.outbox[0])
        else:
            self._retry_at = None
            return
        self._out.append(msg)
        self._retries += 1
        self._retry_at = now + self.params.retry_interval


_HANDLERS: dict[MsgType, Callable[[GatewaySession, Any, float], None]] = {
    MsgType.CONNECT: GatewaySession._on_connect,
    MsgType.WILLTOPIC: GatewaySession._on_will_topic,
    MsgType.WILLMSG: GatewaySession._on_will_msg,
    MsgType.REGISTER: GatewaySession._on_register,
    MsgType.REGACK: GatewaySession._on_regack,
    MsgType.PUBLISH: GatewaySession._on_publish,
    MsgType.PUBACK: GatewaySession._on_puback,
    MsgType.PUBREC: GatewaySession._on_pubrec,
    MsgType.PUBREL: GatewaySession._on_pubrel,
    MsgType.PUBCOMP: GatewaySession._on_pubcomp,
    MsgType.SUBSCRIBE: GatewaySession._on_subscribe,
    MsgType.UNSUBSCRIBE: GatewaySession._on_unsubscribe,
    MsgType.PINGREQ: GatewaySession._on_pingreq,
    MsgType.DISCONNECT: GatewaySession._on_disconnect,
    MsgType.WILLTOPICUPD: GatewaySession._on_willtopicupd,
    MsgType.WILLMSGUPD: GatewaySession._on_willmsgupd,
}
