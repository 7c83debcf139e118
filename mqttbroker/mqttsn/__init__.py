"""The MQTT-SN 1.2 gateway (docs/mqttsn.md): an extension, not code inside broker.py.

A ``type: mqttsn`` listener is a UDP socket (transports/udp.py) and a :class:`Gateway`. Each
MQTT-SN client is a :class:`~mqttbroker.protocol.mqttsn.session.GatewaySession` (the state
machine, without I/O) joined to the broker as an MQTT client of its own, in process: the
broker makes it an ordinary client connection (``connection_factory``) whose transport is the
gateway's, and the gateway speaks MQTT to it through the sans-I/O
:class:`~mqttbroker.protocol.client_protocol.ClientProtocol`. So authentication, ACLs,
sessions and their persistence, wills, limits, ``$SYS``, ``/metrics`` and the admin API treat
MQTT-SN clients as they treat every other client, and this package imports neither broker.py
nor client/.
"""

from __future__ import annotations

from .gateway import Gateway

__all__ = ["Gateway"]
