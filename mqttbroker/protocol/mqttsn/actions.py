"""What a gateway session asks of the broker side: the actions of
:class:`~mqttbroker.protocol.mqttsn.session.GatewaySession` (drained by the gateway glue, which
connects each session to the broker as an in-process MQTT client), plus the two pure
translations the gateway needs without a session: broker CONNACK codes to MQTT-SN return codes,
and a connectionless QoS -1 PUBLISH [MQTT-SN 6.8] to a publication.

``ref`` is how an answer finds its request: the client's MsgId for the client's PUBLISH,
SUBSCRIBE and UNSUBSCRIBE (the glue answers with ``published``/``subscribed``/
``unsubscribed``), the broker's packet id for a delivery (answered by :class:`MqttAck`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .constants import ReturnCode, TopicIdType
from .messages import Publish
from .topics import topic_name_problem

__all__ = [
    "Action", "Awake", "MqttAck", "MqttConnect", "MqttDisconnect", "MqttPublish",
    "MqttSubscribe", "MqttUnsubscribe", "Sleep", "WillSpec", "WillUpdate", "connack_code",
    "qos_minus_one",
]

RC = ReturnCode


@dataclass(frozen=True, slots=True)
class WillSpec:
    """A will: WILLTOPIC's topic, QoS and retain, WILLMSG's payload."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class MqttConnect:
    """Open the client's MQTT connection. ``keep_alive`` is the client's Duration, which this
    session supervises itself."""

    client_id: str
    clean_session: bool
    keep_alive: int
    will: WillSpec | None


@dataclass(frozen=True, slots=True)
class MqttPublish:
    """Publish for the client; ``ref`` (its MsgId, QoS 1/2) comes back in ``published``."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    ref: int | None


@dataclass(frozen=True, slots=True)
class MqttSubscribe:
    """Subscribe for the client; ``ref`` (its MsgId) comes back in ``subscribed``."""

    topic_filter: str
    qos: int
    ref: int


@dataclass(frozen=True, slots=True)
class MqttUnsubscribe:
    """Unsubscribe for the client; ``ref`` (its MsgId) comes back in ``unsubscribed``."""

    topic_filter: str
    ref: int


@dataclass(frozen=True, slots=True)
class MqttAck:
    """Acknowledge delivery ``ref`` to the broker: the client has it (``delivered``), or the
    gateway gave up on it (False: dropped, counted in ``GatewaySession.dropped``)."""

    ref: int
    delivered: bool = True


@dataclass(frozen=True, slots=True)
class WillUpdate:
    """The client changed its will (WILLTOPICUPD/WILLMSGUPD [MQTT-SN 6.4], or the prompts of a
    wake-up CONNECT); None: it has none."""

    will: WillSpec | None


@dataclass(frozen=True, slots=True)
class MqttDisconnect:
    """Close the MQTT connection; ``publish_will``: the client was lost (keep-alive or sleep
    expiry, no answer to retransmissions), not a DISCONNECT."""

    publish_will: bool


@dataclass(frozen=True, slots=True)
class Sleep:
    """The client entered the asleep state for ``duration`` seconds (the MQTT connection stays
    open). Sleep and :class:`Awake` alternate strictly (a new duration while asleep emits
    nothing: see ``GatewaySession.sleep_duration``)."""

    duration: int


@dataclass(frozen=True, slots=True)
class Awake:
    """The client left the asleep state, whatever for: AWAKE (PINGREQ), ACTIVE or CONNECTING
    (CONNECT), DISCONNECTED, LOST."""


Action = (MqttConnect | MqttPublish | MqttSubscribe | MqttUnsubscribe | MqttAck | WillUpdate
          | MqttDisconnect | Sleep | Awake)


def connack_code(code: int) -> ReturnCode:
    """The MQTT-SN CONNACK return code for a broker's CONNACK code (3.1.1 or MQTT 5)."""
    if code == 0:
        return RC.ACCEPTED
    if code in (3, 0x88, 0x89, 0x97, 0x9F):  # unavailable, busy, quota, connection rate
        return RC.REJECTED_CONGESTION
    return RC.REJECTED_NOT_SUPPORTED


def qos_minus_one(msg: Publish, predefined: Mapping[int, str]) -> MqttPublish | str:
    """The QoS 0 publication a connectionless QoS -1 PUBLISH asks for [MQTT-SN 6.8], or why it
    is dropped: only pre-defined ids and short topic names can be used without a connection."""
    if msg.qos != -1:
        return f"QoS {msg.qos} PUBLISH without a connection (only QoS -1 may) [MQTT-SN 6.8]"
    if msg.topic_id_type == TopicIdType.NORMAL:
        return f"QoS -1 PUBLISH with normal topic id {msg.topic!r} (needs a connection) [6.8]"
    if msg.topic_id_type == TopicIdType.PREDEFINED:
        name = predefined.get(msg.topic) if isinstance(msg.topic, int) else None
        if name is None:
            return f"QoS -1 PUBLISH to unknown pre-defined topic id {msg.topic!r} [6.7]"
    else:
        name = str(msg.topic)
        problem = topic_name_problem(name)
        if problem:
            return f"QoS -1 PUBLISH: {problem}"
    return MqttPublish(name, msg.data, 0, msg.retain, None)
