"""Every node's subscriptions, as the other nodes see them: the cluster's routing table.

Pure and synchronous (no Redis here): :mod:`mqttbroker.cluster.node` feeds it from the
``routes`` hashes and the change channel. A route is (node, filter) with a count of local
sessions; a ``$share/GROUP/FILTER`` route counts group members on that node.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..protocol.topics import SubscriptionTree
from ..router import parse_share

_Key = tuple[str, str]  # (node, "" for plain filters, or the whole $share/... filter)


class RouteReplica:
    """Filters by node, matched against topics with a trie (like local routing)."""

    __slots__ = ("_by_node", "_rr", "_tree")

    def __init__(self) -> None:
        self._tree: SubscriptionTree[_Key, int] = SubscriptionTree()
        self._by_node: dict[str, dict[str, int]] = {}
        self._rr: dict[str, int] = {}  # shared group -> round-robin position

    def nodes(self) -> list[str]:
        """Nodes with at least one route."""
        return [n for n, routes in self._by_node.items() if routes]

    def routes(self, node: str) -> dict[str, int]:
        """A node's filters and their counts (a copy)."""
        return dict(self._by_node.get(node, {}))

    def put(self, node: str, topic_filter: str, count: int) -> None:
        """The node's count for the filter (0 removes the route)."""
        routes = self._by_node.setdefault(node, {})
        share = parse_share(topic_filter)
        inner, key = (topic_filter, (node, "")) if share is None else (share[1],
                                                                        (node, topic_filter))
        if count > 0:
            routes[topic_filter] = count
            self._tree.add(inner, key, count)
        elif routes.pop(topic_filter, None) is not None:
            self._tree.remove(inner, key)

    def replace(self, node: str, routes: Iterable[tuple[str, int]]) -> None:
        """Forget the node's routes and take these instead (a full reload)."""
        self.drop(node)
        for topic_filter, count in routes:
            self.put(node, topic_filter, count)

    def drop(self, node: str) -> None:
        """Forget every route of a node (it is dead, or about to be reloaded)."""
        for topic_filter in list(self._by_node.get(node, {})):
            self.put(node, topic_filter, 0)
        self._by_node.pop(node, None)

    def match(self, topic: str) -> tuple[set[str], dict[str, list[str]]]:
        """``(nodes with a plain subscription matching topic, {shared filter: its nodes})``."""
        direct: set[str] = set()
        groups: dict[str, list[str]] = {}
        for found in self._tree.match(topic):
            for node, share in found:
                if not share:
                    direct.add(node)
                else:
                    groups.setdefault(share, []).append(node)
        return direct, groups

    def pick(self, share: str, nodes: list[str]) -> str:
        """One node of a shared group's nodes, round robin [MQTT-4.8.2-3]: a group spreads
        its messages over its members on every node."""
        nodes.sort()
        i = self._rr.get(share, 0)
        self._rr[share] = i + 1
        return nodes[i % len(nodes)]
