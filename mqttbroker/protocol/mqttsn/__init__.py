"""Sans-I/O MQTT-SN 1.2 (MQTT For Sensor Networks Protocol Specification Version 1.2,
Stanford-Clark & Truong): a datagram in, a message out, a message in, a datagram out. No
sockets, event loop or clock here; the gateway (issue 17) drives it.

``decode(datagram) -> Message`` raises :class:`mqttbroker.errors.MqttsnError` naming the
faulty field; ``encode(message) -> bytes`` raises :class:`mqttbroker.errors.EncodeError`;
``describe(message)`` is a one-line summary for logs.

:class:`GatewaySession` (``session.py``) is one client at the gateway as a state machine:
decoded messages and broker answers in, datagrams and :mod:`.actions` toward the broker out;
``topics.py`` is its topic id table.
"""

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
from .codec import decode, describe, encode
from .constants import MsgType, ReturnCode, TopicIdType
from .messages import (
    Advertise,
    Connack,
    Connect,
    Disconnect,
    Encapsulated,
    GwInfo,
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
    SearchGw,
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
from .session import GatewaySession, SessionParams, SnState

__all__ = [
    "Action", "Advertise", "Awake", "Connack", "Connect", "Disconnect", "Encapsulated",
    "GatewaySession", "GwInfo", "Message", "MqttAck", "MqttConnect", "MqttDisconnect",
    "MqttPublish", "MqttSubscribe", "MqttUnsubscribe", "MsgType", "Pingreq", "Pingresp", "Puback",
    "Pubcomp", "Publish", "Pubrec", "Pubrel", "Regack", "Register", "ReturnCode", "SearchGw",
    "SessionParams", "Sleep", "SnState", "Suback", "Subscribe", "TopicIdType", "Unsuback",
    "Unsubscribe", "WillMsg", "WillMsgReq", "WillMsgResp", "WillMsgUpd", "WillSpec", "WillTopic",
    "WillTopicReq", "WillTopicResp", "WillTopicUpd", "WillUpdate", "connack_code", "decode",
    "describe", "encode", "qos_minus_one",
]
