"""Retained messages [MQTT 3.3.1.3]: one per topic, replaced by the next, deleted by an empty
payload, handed to every new matching subscription. Bounded in count and payload bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .message import Message
from .protocol.topics import RetainedTree

if TYPE_CHECKING:
    from .persistence.base import Storage


class RetainedStore:
    """Topic -> the last retained message.

    ``max_messages`` and ``max_bytes`` (payload bytes; 0 = unlimited) bound it: a message that
    would add a topic past them, or grow the total past ``max_bytes``, is not kept. ``storage``,
    when set, is told every change.
    """

    __slots__ = ("_tree", "bytes", "max_bytes", "max_messages", "storage")

    def __init__(self, max_messages: int = 0, max_bytes: int = 0) -> None:
        self._tree: RetainedTree[Message] = RetainedTree()
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0  # payload bytes retained
        self.storage: Storage | None = None

    def __len__(self) -> int:
        return self._tree.count

    def fits(self, message: Message) -> bool:
        """Would keeping ``message`` stay within the bounds? (Deleting always fits.)"""
        if not message.payload:
            return True
        old = self._tree.get(message.topic)
        if old is None and self.max_messages and self._tree.count >= self.max_messages:
            return False
        grow = len(message.payload) - (len(old.payload) if old is not None else 0)
        return not (self.max_bytes and grow > 0 and self.bytes + grow > self.max_bytes)

    def store(self, message: Message) -> None:
        """Keep ``message`` as the topic's retained message; an empty payload deletes it
        [MQTT-3.3.1-10] and is itself not kept [MQTT-3.3.1-11]. Check :meth:`fits` first."""
        old = self._tree.get(message.topic)
        if old is not None:
            self.bytes -= len(old.payload)
        if message.payload:
            self._tree.set(message.topic, message)
            self.bytes += len(message.payload)
            if self.storage is not None:
                self.storage.put_retained(message, old)
        elif old is not None:
            self._tree.delete(message.topic)
            if self.storage is not None:
                self.storage.delete_retained(old)

    def load(self, message: Message) -> None:
        """Put back a message read from storage (not stored again)."""
        old = self._tree.get(message.topic)
        if old is not None:
            self.bytes -= len(old.payload)
        self._tree.set(message.topic, message)
        self.bytes += len(message.payload)

    def forget(self, topic: str) -> None:
        """Delete a topic's retained message without telling storage (another node of the
        cluster deleted it from the shared store)."""
        old = self._tree.get(topic)
        if old is not None:
            self._tree.delete(topic)
            self.bytes -= len(old.payload)

    def get(self, topic: str) -> Message | None:
        """The retained message of exactly ``topic``."""
        return self._tree.get(topic)

    def match(self, topic_filter: str, now: float) -> list[Message]:
        """Retained messages whose topic matches ``topic_filter``, depth first, each level in
        the order its topics were first retained. Those expired at ``now`` are deleted
        instead of returned [MQTT-3.3.2-5]."""
        found = self._tree.match(topic_filter)
        live = []
        for m in found:
            if m.expired(now):
                self._tree.delete(m.topic)
                self.bytes -= len(m.payload)
                if self.storage is not None:
                    self.storage.delete_retained(m)
            else:
                live.append(m)
        return live

    def all(self) -> list[Message]:
        """Every retained message."""
        return list(self._tree.values())
