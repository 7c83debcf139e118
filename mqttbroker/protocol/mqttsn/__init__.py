"""Sans-I/O MQTT-SN 1.2 (MQTT For Sensor Networks Protocol Specification Version 1.2,
Stanford-Clark & Truong): a datagram in, a message out, a message in, a datagram out. No
sockets, event loop or clock here; the gateway (issue 17) drives it.

``decode(datagram) -> Message`` raises :class:`mqttbroker.errors.MqttsnError` naming the
faulty field; ``encode(message) -> bytes`` raises :class:`mqttbroker.errors.EncodeError`;
``describe(message)`` is a one-line summary for logs.
"""

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

__all__ = [
    "Advertise", "Connack", "Connect", "Disconnect", "Encapsulated", "GwInfo", "Message",
    "MsgType", "Pingreq", "Pingresp", "Puback", "Pubcomp", "Publish", "Pubrec", "Pubrel",
    "Regack", "Register", "ReturnCode", "SearchGw", "Suback", "Subscribe", "TopicIdType",
    "Unsuback", "Unsubscribe", "WillMsg", "WillMsgReq", "WillMsgResp", "WillMsgUpd",
    "WillTopic", "WillTopicReq", "WillTopicResp", "WillTopicUpd", "decode", "describe",
    "encode",
]
