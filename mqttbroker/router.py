"""Who receives a message: the subscription tree, overlapping subscriptions merged into one
delivery per client, and shared subscriptions ``$share/group/filter`` served round-robin (a
member that frees up later takes what waits at the others: core/delivery.py steal)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .protocol.packets import Subscription
from .protocol.topics import SHARE_PREFIX, SubscriptionTree


class Delivery:
    """How one client receives one message: the highest granted QoS of its matching
    subscriptions, whether any keeps the RETAIN flag, and every subscription identifier."""

    __slots__ = ("identifiers", "qos", "retain_as_published", "share")

    def __init__(self, qos: int, retain_as_published: bool, identifiers: tuple[int, ...],
                 share: str | None = None) -> None:
        self.qos = qos
        self.retain_as_published = retain_as_published
        self.identifiers = identifiers
        self.share = share  # the $share/... filter it came through, for redistribution


def parse_share(topic_filter: str) -> tuple[str, str] | None:
    """``(group, filter)`` of ``$share/group/filter``; None for a plain filter.
    Raises ValueError for a malformed shared subscription [MQTT-4.8.2-1/2]."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    rest = topic_filter[len(SHARE_PREFIX):]
    group, sep, inner = rest.partition("/")
    if not sep or not group or not inner:
        raise ValueError("a shared subscription is $share/{ShareName}/{filter} [MQTT-4.8.2-1]")
    if "+" in group or "#" in group:
        raise ValueError("ShareName must not contain '+' or '#' [MQTT-4.8.2-2]")
    return group, inner


class SharedGroup:
    """The members of one ``$share/group/filter``, served in turn."""

    __slots__ = ("_next", "members", "name")

    def __init__(self, name: str) -> None:
        self.name = name  # the whole $share/group/filter string
        self.members: dict[str, Subscription] = {}
        self._next = 0

    def pick(self, available: Callable[[str], bool],
             exclude: str | None = None) -> tuple[str, Subscription] | None:
        """The next member in turn that ``available`` accepts; if none is, the next member
        anyway (its session queues the message). None only when there is no member."""
        ids = [cid for cid in self.members if cid != exclude]
        if not ids:
            return None
        n = len(ids)
        start = self._next % n
        chosen = None
        for k in range(n):
            cid = ids[(start + k) % n]
            if available(cid):
                chosen = (start + k) % n
                break
        if chosen is None:
            chosen = start
        self._next = chosen + 1
        cid = ids[chosen]
        return cid, self.members[cid]


CACHE_SIZE: Final = 10_000  # topics remembered between subscription changes
# longer topics are matched every time: the cache holds at most CACHE_SIZE x this many
# characters of topic names (10 MB), not 10,000 topics of 64 KiB a publisher chose (640 MB)
CACHE_TOPIC_MAX: Final = 1024

_Key = str | tuple[str, str]
_Value = Subscription | SharedGroup


class Router:
    """Maps topic filters to the sessions subscribed to them."""

    __slots__ = ("_cache", "_groups", "_tree", "on_route")

    def __init__(self) -> None:
        self._tree: SubscriptionTree[_Key, _Value] = SubscriptionTree()
        # told (filter, +1 / -1) when a (client, filter) subscription appears or goes; the
        # cluster keeps its shared routing table with it (None on a single node)
        self.on_route: Callable[[str, int], None] | None = None
        self._groups: dict[str, SharedGroup] = {}
        # topic -> (direct deliveries, shared groups): valid until the next (un)subscribe.
        # Topics whose match involves a no-local subscription are not cached (the result
        # depends on the sender).
        self._cache: dict[str, tuple[dict[str, Delivery], list[SharedGroup]]] = {}

    @property
    def count(self) -> int:
        """Number of (client, filter) subscriptions, shared memberships included."""
        return self._tree.count - len(self._groups) + sum(
            len(g.members) for g in self._groups.values())

    def subscribe(self, client_id: str, sub: Subscription) -> bool:
        """Add or replace ``client_id``'s subscription; True when it did not exist."""
        self._cache.clear()
        share = parse_share(sub.topic_filter)
        if share is None:
            new = self._tree.add(sub.topic_filter, client_id, sub)
        else:
            group = self._groups.get(sub.topic_filter)
            if group is None:
                group = self._groups[sub.topic_filter] = SharedGroup(sub.topic_filter)
                self._tree.add(share[1], ("$share", share[0]), group)
            new = client_id not in group.members
            group.members[client_id] = sub
        if new and self.on_route is not None:
            self.on_route(sub.topic_filter, 1)
        return new

    def unsubscribe(self, client_id: str, topic_filter: str) -> bool:
        """Remove one subscription; True when it existed."""
        self._cache.clear()
        share = parse_share(topic_filter)
        if share is None:
            if not self._tree.remove(topic_filter, client_id):
                return False
        else:
            group = self._groups.get(topic_filter)
            if group is None or group.members.pop(client_id, None) is None:
                return False
            if not group.members:
                del self._groups[topic_filter]
                self._tree.remove(share[1], ("$share", share[0]))
        if self.on_route is not None:
            self.on_route(topic_filter, -1)
        return True

    def group(self, share_filter: str) -> SharedGroup | None:
        """The shared group of a ``$share/...`` filter."""
        return self._groups.get(share_filter)

    def route(self, topic: str, sender: str | None,
              available: Callable[[str], bool]) -> tuple[dict[str, Delivery],
                                                         list[tuple[str, Delivery]]]:
        """Who gets a message on ``topic`` published by ``sender``.

        Returns ``(direct, shared)``: ``direct`` has one :class:`Delivery` per client over all
        its matching plain subscriptions, at the highest QoS and with every identifier
        [MQTT-3.3.4-3/4/5]; ``shared`` has one chosen member per matching shared group
        [MQTT-4.8.2-3]. No-local subscriptions skip the sender [MQTT-3.8.3-3].
        """
        cached = self._cache.get(topic)
        if cached is not None:
            direct, groups = cached
        else:
            direct, groups, cacheable = self._match(topic, sender)
            if cacheable and len(topic) <= CACHE_TOPIC_MAX:
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
                self._cache[topic] = (direct, groups)
        shared: list[tuple[str, Delivery]] = []
        for g in groups:
            picked = g.pick(available)
            if picked is not None:
                sub = picked[1]
                shared.append((picked[0], Delivery(
                    sub.qos, sub.retain_as_published,
                    (sub.identifier,) if sub.identifier else (), g.name)))
        return direct, shared

    def _match(self, topic: str, sender: str | None) -> tuple[dict[str, Delivery],
                                                             list[SharedGroup], bool]:
        direct: dict[str, Delivery] = {}
        groups: list[SharedGroup] = []
        cacheable = True
        for group in self._tree.match(topic):
            for key, value in group.items():
                if isinstance(value, SharedGroup):
                    groups.append(value)
                    continue
                sub = value
                if sub.no_local:
                    cacheable = False
                    if key == sender:
                        continue
                cid = key
                assert isinstance(cid, str)
                d = direct.get(cid)
                if d is None:
                    direct[cid] = Delivery(sub.qos, sub.retain_as_published,
                                           (sub.identifier,) if sub.identifier else ())
                else:
                    d.qos = max(d.qos, sub.qos)
                    if sub.retain_as_published:
                        d.retain_as_published = True
                    if sub.identifier:
                        d.identifiers = d.identifiers + (sub.identifier,)
        return direct, groups, cacheable
