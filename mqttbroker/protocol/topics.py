"""Topic names, topic filters, and the two trees that match them [MQTT 4.7].

* :class:`SubscriptionTree` stores filters and answers "who wants this topic?" by walking the
  topic's levels once: cost grows with the topic's depth and the wildcards present, never with
  the number of filters, and nothing recurses (no ReDoS, no deep recursion).
* :class:`RetainedTree` stores topic names and answers "which retained topics match this
  filter?" for a new subscription.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Generic, TypeVar

from ..errors import ProtocolError
from .constants import ReasonCode

V = TypeVar("V")
K = TypeVar("K")

SHARE_PREFIX: Final = "$share/"


def validate_topic_name(topic: str, max_levels: int = 0) -> None:
    """Raise :class:`ProtocolError` unless ``topic`` may be published to.

    [MQTT-4.7.3-1] at least one character; [MQTT-3.3.2-2] no wildcard characters; at most
    ``max_levels`` levels when that is set (the broker's max_topic_levels).
    (UTF-8 validity and U+0000 are checked by the decoder [MQTT-1.5.3-1/2].)
    """
    if not topic:
        raise ProtocolError(ReasonCode.PROTOCOL_ERROR, "empty topic name [MQTT-4.7.3-1]")
    if "+" in topic or "#" in topic:
        raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID,
                            f"wildcard in topic name {topic!r} [MQTT-3.3.2-2]")
    # (n levels take n - 1 "/": a shorter topic cannot have them)
    if max_levels and len(topic) >= max_levels and topic.count("/") >= max_levels:
        raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID,
                            f"topic name deeper than max_topic_levels {max_levels}")


def topic_filter_problem(topic_filter: str, v5: bool = False) -> str | None:
    """Say what is wrong with a topic filter, or None when it is valid (``v5``: cite the
    MQTT 5.0 rule numbers, which differ from 3.1.1's for the wildcards)."""
    if not topic_filter:
        return "empty topic filter [MQTT-4.7.3-1]"
    if "+" not in topic_filter and "#" not in topic_filter:
        return None
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            # 3.1.1 [MQTT-4.7.1-2], 5.0 [MQTT-4.7.1-1]
            return f"'#' must be the whole last level [MQTT-4.7.1-{1 if v5 else 2}]"
        if "+" in level and level != "+":
            # 3.1.1 [MQTT-4.7.1-3], 5.0 [MQTT-4.7.1-2]
            return f"'+' must be a whole level [MQTT-4.7.1-{2 if v5 else 3}]"
    return None


def malformed_filter(topic_filter: str, v5: bool = False) -> str | None:
    """What makes a SUBSCRIBE or UNSUBSCRIBE topic filter malformed, or None.

    A malformed filter (empty [MQTT-4.7.3-1], a wildcard that is not a whole level
    [MQTT-4.7.1-*]) makes the whole packet malformed: the connection closes (MQTT 5:
    DISCONNECT 0x81). A shared subscription's own filter is judged the same way; a bad
    ``$share/{ShareName}/`` prefix is not a malformed filter but one the server refuses, in
    its SUBACK/UNSUBACK slot (0x8F) [MQTT-4.8.2-1/2], as are well-formed filters a limit or an
    ACL refuses."""
    if topic_filter.startswith("$share/"):
        group, sep, inner = topic_filter[7:].partition("/")
        if not sep or not group or not inner or "+" in group or "#" in group:
            return None
        topic_filter = inner
    return topic_filter_problem(topic_filter, v5)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Does ``topic_filter`` match ``topic``? (Reference matcher, used by tests and ACLs.)"""
    f = topic_filter.split("/")
    t = topic.split("/")
    if topic.startswith("$") and f[0] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


class _SubNode(Generic[K, V]):
    __slots__ = ("children", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _SubNode[K, V]] = {}
        self.subs: dict[K, V] = {}


class SubscriptionTree(Generic[K, V]):
    """Topic filters -> ``{key: value}`` (key: a client id; value: its subscription)."""

    __slots__ = ("_root", "count")

    def __init__(self) -> None:
        self._root: _SubNode[K, V] = _SubNode()
        self.count = 0

    def add(self, topic_filter: str, key: K, value: V) -> bool:
        """Store ``value`` for ``key`` under ``topic_filter``; True when it is new."""
        node = self._root
        for level in topic_filter.split("/"):
            nxt = node.children.get(level)
            if nxt is None:
                nxt = node.children[level] = _SubNode()
            node = nxt
        new = key not in node.subs
        node.subs[key] = value
        if new:
            self.count += 1
        return new

    def remove(self, topic_filter: str, key: K) -> bool:
        """Forget ``key`` under ``topic_filter``, pruning empty branches; True when found."""
        path: list[tuple[_SubNode[K, V], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            nxt = node.children.get(level)
            if nxt is None:
                return False
            path.append((node, level))
            node = nxt
        if key not in node.subs:
            return False
        del node.subs[key]
        self.count -= 1
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.subs or child.children:
                break
            del parent.children[level]
        return True

    def get(self, topic_filter: str, key: K) -> V | None:
        """The value stored for ``key`` under exactly ``topic_filter``."""
        node = self._root
        for level in topic_filter.split("/"):
            nxt = node.children.get(level)
            if nxt is None:
                return None
            node = nxt
        return node.subs.get(key)

    def match(self, topic: str) -> list[dict[K, V]]:
        """Every ``{key: value}`` group whose filter matches ``topic`` (a key may repeat
        across groups when its filters overlap)."""
        levels = topic.split("/")
        depth = len(levels)
        out: list[dict[K, V]] = []
        stack: list[tuple[_SubNode[K, V], int]] = [(self._root, 0)]
        # [MQTT-4.7.2-1] filters starting with a wildcard do not match topics starting with $
        dollar = topic.startswith("$")
        while stack:
            node, i = stack.pop()
            children = node.children
            if i == depth:
                if node.subs:
                    out.append(node.subs)
                h = children.get("#")  # "a/#" also matches "a" [MQTT-4.7.1-2]
                if h is not None and h.subs:
                    out.append(h.subs)
                continue
            if not (dollar and i == 0):
                h = children.get("#")
                if h is not None and h.subs:
                    out.append(h.subs)
                p = children.get("+")
                if p is not None:
                    stack.append((p, i + 1))
            c = children.get(levels[i])
            if c is not None:
                stack.append((c, i + 1))
        return out

    def items(self) -> Iterator[tuple[str, K, V]]:
        """Every (filter, key, value) stored."""
        stack: list[tuple[_SubNode[K, V], str]] = [(self._root, "")]
        while stack:
            node, prefix = stack.pop()
            for key, value in node.subs.items():
                yield prefix, key, value
            for level, child in node.children.items():
                stack.append((child, level if node is self._root else prefix + "/" + level))


class _RetNode(Generic[V]):
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _RetNode[V]] = {}
        self.value: V | None = None


class RetainedTree(Generic[V]):
    """Topic names -> one value each; queried with a topic filter."""

    __slots__ = ("_root", "count")

    def __init__(self) -> None:
        self._root: _RetNode[V] = _RetNode()
        self.count = 0

    def set(self, topic: str, value: V) -> None:
        """Store or replace the value for ``topic``."""
        node = self._root
        for level in topic.split("/"):
            nxt = node.children.get(level)
            if nxt is None:
                nxt = node.children[level] = _RetNode()
            node = nxt
        if node.value is None:
            self.count += 1
        node.value = value

    def get(self, topic: str) -> V | None:
        """The value stored for exactly ``topic``."""
        node = self._root
        for level in topic.split("/"):
            nxt = node.children.get(level)
            if nxt is None:
                return None
            node = nxt
        return node.value

    def delete(self, topic: str) -> bool:
        """Remove ``topic``, pruning empty branches; True when it was there."""
        path: list[tuple[_RetNode[V], str]] = []
        node = self._root
        for level in topic.split("/"):
            nxt = node.children.get(level)
            if nxt is None:
                return False
            path.append((node, level))
            node = nxt
        if node.value is None:
            return False
        node.value = None
        self.count -= 1
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.value is not None or child.children:
                break
            del parent.children[level]
        return True

    def match(self, topic_filter: str) -> list[V]:
        """Every value whose topic matches ``topic_filter``."""
        levels = topic_filter.split("/")
        depth = len(levels)
        out: list[V] = []
        stack: list[tuple[_RetNode[V], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i == depth:
                if node.value is not None:
                    out.append(node.value)
                continue
            level = levels[i]
            if level == "#":
                # the parent level itself ("a/#" matches "a"), then every descendant
                if i > 0 and node.value is not None:
                    out.append(node.value)
                # depth first, in insertion order (hence the reversed pushes)
                sub = [c for k, c in reversed(node.children.items())
                       if not (i == 0 and k.startswith("$"))]
                while sub:
                    n = sub.pop()
                    if n.value is not None:
                        out.append(n.value)
                    sub.extend(reversed(n.children.values()))
            elif level == "+":
                for k, c in reversed(node.children.items()):
                    if not (i == 0 and k.startswith("$")):
                        stack.append((c, i + 1))
            else:
                exact = node.children.get(level)
                if exact is not None:
                    stack.append((exact, i + 1))
        return out

    def values(self) -> Iterator[V]:
        """Every stored value."""
        stack: list[_RetNode[V]] = [self._root]
        while stack:
            n = stack.pop()
            if n.value is not None:
                yield n.value
            stack.extend(n.children.values())


def is_bridge_state(topic: str) -> bool:
    """``$SYS/broker/connection/<name>/state``: where a bridge (another broker's, connected
    here as a client) says 1 or 0 (its will), retained; Mosquitto's bridge notifications."""
    parts = topic.split("/")
    return (len(parts) == 5 and parts[0] == "$SYS" and parts[1] == "broker"
            and parts[2] == "connection" and parts[3] != "" and parts[4] == "state")
