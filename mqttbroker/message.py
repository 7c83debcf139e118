"""An application message on its way through the broker, encoded at most once per wire form."""

from __future__ import annotations

from typing import Any

from .protocol.codec import encode_publish_parts


class Message:
    """One published message: routed to many sessions, encoded once per (level, qos, retain)."""

    __slots__ = ("_wire", "payload", "properties", "qos", "retain", "sender", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 properties: dict[int, Any] | None = None, sender: str | None = None) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.sender = sender
        self._wire: dict[tuple[int, int, bool], tuple[bytes, bytes]] | None = None

    def wire(self, level: int, qos: int, retain: bool) -> tuple[bytes, bytes]:
        """``(head, tail)`` of this message as a PUBLISH, without DUP (see
        :func:`encode_publish_parts`); cached, since fan-out sends the same bytes to many."""
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
