"""An application message on its way through the broker, encoded at most once per wire form."""

from __future__ import annotations

from typing import Any

from .protocol.codec import encode_publish_parts
from .protocol.primitives import encode_varint


class Message:
    """One published message: routed to many sessions, encoded once per (level, qos, retain)."""

    __slots__ = ("_wire", "expires_at", "payload", "properties", "qos", "retain", "sender",
                 "topic")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 properties: dict[int, Any] | None = None, sender: str | None = None,
                 expires_at: float | None = None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        # MQTT 5 properties forwarded as they came; never the per-hop ones (Topic Alias,
        # Subscription Identifier) nor Message Expiry Interval, which ``expires_at`` replaces
        self.properties = properties
        self.sender = sender
        self.expires_at = expires_at  # event-loop time after which it is not delivered
        self._wire: dict[tuple[int, int, bool], tuple[bytes, bytes]] | None = None

    def expired(self, now: float) -> bool:
        """[MQTT-3.3.2-5] past its Message Expiry Interval: never delivered."""
        return self.expires_at is not None and now >= self.expires_at

    def preset_wire(self, body: bytes, qos: int) -> None:
        """Reuse the body of the PUBLISH this message arrived in (MQTT 3.1/3.1.1): at its
        own QoS without RETAIN it is the forwarded form byte for byte, for 3.1 and 3.1.1
        alike (at QoS 1/2 only the packet identifier changes, hence head and tail)."""
        if qos == 0:
            parts = (b"\x30" + encode_varint(len(body)) + body, b"")
        else:
            end = 2 + ((body[0] << 8) | body[1])  # after the topic name
            parts = (bytes((0x30 | (qos << 1),)) + encode_varint(len(body)) + body[:end],
                     body[end + 2:])
        self._wire = {(3, qos, False): parts, (4, qos, False): parts}

    def wire(self, level: int, qos: int, retain: bool) -> tuple[bytes, bytes]:
        """``(head, tail)`` of this message as a PUBLISH, without DUP (see
        :func:`encode_publish_parts`); cached, since fan-out sends the same bytes to many.
        Only for messages without an expiry (their remaining time differs per send)."""
        key = (level, qos, retain)
        cache = self._wire
        if cache is None:
            cache = self._wire = {}
        parts = cache.get(key)
        if parts is None:
            parts = cache[key] = encode_publish_parts(
                self.topic, self.payload, qos, retain, False, level, self.properties)
        return parts

    def __repr__(self) -> str:
        return (f"Message({self.topic!r}, {len(self.payload)} bytes, qos={self.qos}, "
                f"retain={self.retain})")


class Derived(Message):
    """A message as a plugin changed it for one subscriber (``on_deliver``): ``origin`` is the
    message as published, which another subscriber gets its own form of (a shared
    subscription's message handed on when its member leaves)."""

    __slots__ = ("origin",)

    def __init__(self, changed: Message, origin: Message) -> None:
        super().__init__(changed.topic, changed.payload, changed.qos, changed.retain,
                         changed.properties, changed.sender, changed.expires_at)
        self.origin = origin
