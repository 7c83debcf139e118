"""Retained messages [MQTT 3.3.1.3]: one per topic, replaced by the next, deleted by an empty
payload, handed to every new matching subscription."""

from __future__ import annotations

from .message import Message
from .protocol.topics import RetainedTree


class RetainedStore:
    """Topic -> the last retained message."""

    __slots__ = ("_tree",)

    def __init__(self) -> None:
        self._tree: RetainedTree[Message] = RetainedTree()

    def __len__(self) -> int:
        return self._tree.count

    def store(self, message: Message) -> None:
        """Keep ``message`` as the topic's retained message; an empty payload deletes it
        [MQTT-3.3.1-10] and is itself not kept [MQTT-3.3.1-11]."""
        if message.payload:
            self._tree.set(message.topic, message)
        else:
            self._tree.delete(message.topic)

    def get(self, topic: str) -> Message | None:
        """The retained message of exactly ``topic``."""
        return self._tree.get(topic)

    def match(self, topic_filter: str, now: float | None = None) -> list[Message]:
        """Retained messages whose topic matches ``topic_filter``, depth first, each level in
        the order its topics were first retained. With ``now``, expired ones are deleted
        instead of returned [MQTT-3.3.2-5]."""
        found = self._tree.match(topic_filter)
        if now is None:
            return found
        live = []
        for m in found:
            if m.expired(now):
                self._tree.delete(m.topic)
            else:
                live.append(m)
        return live

    def all(self) -> list[Message]:
        """Every retained message."""
        return list(self._tree.values())
