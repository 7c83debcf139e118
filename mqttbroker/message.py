"""An application message on its way through the broker, encoded at most once per wire form."""

from __future__ import annotations

from typing import Any, Final

from .protocol.codec import encode_publish_parts
from .protocol.constants import ProtocolLevel
from .protocol.primitives import encode_varint

V5: Final[int] = ProtocolLevel.MQTT_5
# a PUBLISH's first byte at QoS 0, 1, 2 (no DUP, no RETAIN)
_FIRST: Final = (b"\x30", b"\x32", b"\x34")


def _form_key(level: int, qos: int, retain: bool) -> int:
    """The wire form a (level, qos, retain) delivery takes, as a small int: MQTT 3.1 and
    3.1.1 encode a PUBLISH alike, so they share one."""
    return qos | (4 if retain else 0) | (8 if level == V5 else 0)


class Message:
    """One published message: routed to many sessions, encoded once per (level, qos, retain)."""

    __slots__ = ("_form", "_more", "_parts", "expires_at", "payload", "properties", "qos",
                 "retain", "sender", "topic")

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
        # wire forms (see wire()): the first one made in two slots (a message routed to
        # one kind of subscriber, the usual case, has no dict of its own), others in _more
        self._form = -1
        self._parts: tuple[bytes, bytes] | None = None
        self._more: dict[int, tuple[bytes, bytes]] | None = None

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
            parts = (_FIRST[qos] + encode_varint(len(body)) + body[:end], body[end + 2:])
        self._form = qos  # (_form_key(3 or 4, qos, False))
        self._parts = parts

    def wire(self, level: int, qos: int, retain: bool) -> tuple[bytes, bytes]:
        """``(head, tail)`` of this message as a PUBLISH, without DUP (see
        :func:`encode_publish_parts`); cached, since fan-out sends the same bytes to many.
        Only for messages without an expiry (their remaining time differs per send)."""
        key = _form_key(level, qos, retain)
        if key == self._form:
            parts = self._parts
            assert parts is not None
            return parts
        more = self._more
        if more is not None:
            found = more.get(key)
            if found is not None:
                return found
        parts = encode_publish_parts(self.topic, self.payload, qos, retain, False, level,
                                     self.properties)
        if self._parts is None:
            self._form = key
            self._parts = parts
        else:
            if more is None:
                more = self._more = {}
            more[key] = parts
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
