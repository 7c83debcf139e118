"""The topic ids of one MQTT-SN client at the gateway [MQTT-SN 6.5, 6.7, 6.9, 6.10].

Three kinds of topic id travel in the TopicId field [MQTT-SN 5.3.11, 5.3.4]:

* **normal** ids, assigned by the gateway per client: when the client sends REGISTER, when it
  subscribes to a topic name without wildcards (the SUBACK carries the id), or when the gateway
  REGISTERs a name itself before a PUBLISH the client could not otherwise place;
* **pre-defined** ids, the same for every client, from the gateway's configuration;
* **short topic names**, two octets carried in place of an id (no table needed).

The table is plain data: name <-> id maps, which ids the client is known to hold, the names
whose REGISTER the client refused. It survives sleep [MQTT-SN 6.14]; a clean CONNECT empties
it [MQTT-SN 6.3]. 0x0000 and 0xFFFF are reserved [MQTT-SN 5.3.11] and never assigned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..topics import topic_filter_problem
from .constants import TopicIdType

__all__ = ["TopicTable", "has_wildcard", "is_short", "short_topic_value", "topic_name_problem"]

_FIRST_ID = 0x0001
_LAST_ID = 0xFFFE  # 0xFFFF is reserved [MQTT-SN 5.3.11]


def has_wildcard(topic: str) -> bool:
    """A topic filter with ``+`` or ``#`` (never a topic name) [MQTT 4.7.1]."""
    return "+" in topic or "#" in topic


def topic_name_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to, or None (UTF-8 validity, U+0000 and emptiness
    are the codec's)."""
    if has_wildcard(topic):
        return f"wildcard in topic name {topic!r} [MQTT-3.3.2-2]"
    return None


def filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` cannot be subscribed to, or None."""
    return topic_filter_problem(topic_filter)


def is_short(topic: str) -> bool:
    """Does ``topic`` fit in the TopicId field as a short topic name (exactly 2 octets)?"""
    return len(topic.encode("utf-8")) == 2


def short_topic_value(topic: str) -> int:
    """A short topic name as the 16-bit TopicId value it travels as (for PUBACK's TopicId)."""
    return int.from_bytes(topic.encode("utf-8")[:2].rjust(2, b"\0"), "big")


class TopicTable:
    """One client's topic ids. ``predefined`` is the gateway's id -> topic name map."""

    __slots__ = ("_next", "_predefined_ids", "ids", "known", "names", "predefined", "refused",
                 "version")

    def __init__(self, predefined: Mapping[int, str]) -> None:
        self.predefined: dict[int, str] = dict(predefined)
        # a name configured under two ids is delivered under the lowest
        self._predefined_ids: dict[str, int] = {}
        for tid in sorted(self.predefined):
            self._predefined_ids.setdefault(self.predefined[tid], tid)
        self.ids: dict[str, int] = {}  # normal topic name -> id
        self.names: dict[int, str] = {}  # normal id -> topic name
        self.known: set[int] = set()  # normal ids the client is known to hold
        self.refused: set[str] = set()  # names whose REGISTER the client rejected [6.10]
        self._next = _FIRST_ID
        self.version = 0  # counts the changes to the registrations (to store them when changed)

    def __len__(self) -> int:
        return len(self.names)

    def register(self, name: str) -> int | None:
        """The normal id of ``name``: the one it has, or a new one (None: all 65534 ids are
        in use)."""
        tid = self.ids.get(name)
        if tid is not None:
            return tid
        for _ in range(_LAST_ID):
            tid = self._next
            self._next = tid + 1 if tid < _LAST_ID else _FIRST_ID
            if tid not in self.names:
                self.ids[name] = tid
                self.names[tid] = name
                self.version += 1
                return tid
        return None

    def confirm(self, tid: int) -> None:
        """The client holds ``tid`` (its REGISTER was answered, a SUBACK carried the id, or it
        acknowledged the gateway's REGISTER)."""
        if tid in self.names and tid not in self.known:
            self.known.add(tid)
            self.version += 1

    def forget(self, tid: int) -> None:
        """Drop normal id ``tid``: the client said it does not know it [MQTT-SN 6.10]. The
        name gets a new id at its next REGISTER."""
        name = self.names.pop(tid, None)
        if name is not None:
            del self.ids[name]
            self.version += 1
        self.known.discard(tid)

    def name_of(self, kind: TopicIdType, topic: int | str) -> str | None:
        """The topic name a client's PUBLISH means, or None for an id it may not use."""
        if kind == TopicIdType.SHORT:
            return topic if isinstance(topic, str) else None
        if not isinstance(topic, int):
            return None
        if kind == TopicIdType.PREDEFINED:
            return self.predefined.get(topic)
        return self.names.get(topic)

    def filter_of(self, kind: TopicIdType, topic: int | str) -> tuple[str, str | None]:
        """The topic filter a SUBSCRIBE/UNSUBSCRIBE means [MQTT-SN 6.9], and what makes it
        unusable (None: nothing)."""
        if kind == TopicIdType.PREDEFINED:
            name = self.predefined.get(topic) if isinstance(topic, int) else None
            if name is None:
                return "", f"unknown pre-defined topic id {topic!r}"
            return name, None
        return str(topic), filter_problem(str(topic))

    def for_delivery(self, name: str) -> tuple[TopicIdType, int | str] | None:
        """How to name ``name`` in a PUBLISH to the client: a normal id the client holds (a
        SUBACK or REGACK gave it one: SUBACK says no id type, so that id is the one used
        [MQTT-SN 5.4.16]), else its pre-defined id, else itself as a short topic name; None
        when it needs a REGISTER first [MQTT-SN 6.10]."""
        tid = self.ids.get(name)
        if tid is not None and tid in self.known:
            return TopicIdType.NORMAL, tid
        tid = self._predefined_ids.get(name)
        if tid is not None:
            return TopicIdType.PREDEFINED, tid
        if is_short(name):
            return TopicIdType.SHORT, name
        return None

    def clear(self) -> None:
        """Forget every normal id (a clean session [MQTT-SN 6.3]); pre-defined ones stay."""
        self.ids.clear()
        self.names.clear()
        self.known.clear()
        self.refused.clear()
        self._next = _FIRST_ID
        self.version += 1

    def export(self) -> list[Any]:
        """The normal registrations as plain data (kept with a persistent session, to
        survive sleep and a broker restart): ``[next id, [[id, name, known], ...]]``."""
        return [self._next, [[tid, name, tid in self.known] for tid, name in self.names.items()]]

    def load(self, data: list[Any]) -> None:
        """Put back what :meth:`export` gave (replacing every normal registration)."""
        nxt, rows = data
        self.ids.clear()
        self.names.clear()
        self.known.clear()
        for tid, name, known in rows:
            if isinstance(tid, int) and _FIRST_ID <= tid <= _LAST_ID and isinstance(name, str):
                self.names[tid] = name
                self.ids[name] = tid
                if known:
                    self.known.add(tid)
        self._next = nxt if isinstance(nxt, int) and _FIRST_ID <= nxt <= _LAST_ID else _FIRST_ID
        self.version += 1
