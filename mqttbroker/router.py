"""Who receives a message: the subscription tree, and the merge of overlapping subscriptions."""

from __future__ import annotations

from .protocol.packets import Subscription
from .protocol.topics import SubscriptionTree


class Router:
    """Maps topic filters to the sessions subscribed to them."""

    __slots__ = ("_tree",)

    def __init__(self) -> None:
        self._tree: SubscriptionTree[str, Subscription] = SubscriptionTree()

    @property
    def count(self) -> int:
        """Number of (client, filter) subscriptions."""
        return self._tree.count

    def subscribe(self, client_id: str, sub: Subscription) -> bool:
        """Add or replace ``client_id``'s subscription; True when it did not exist."""
        return self._tree.add(sub.topic_filter, client_id, sub)

    def unsubscribe(self, client_id: str, topic_filter: str) -> bool:
        """Remove one subscription; True when it existed."""
        return self._tree.remove(topic_filter, client_id)

    def route(self, topic: str) -> dict[str, int]:
        """``{client_id: max granted QoS}`` over every matching filter: a client whose
        subscriptions overlap receives the message once, at the highest QoS [MQTT-3.3.5-1]."""
        groups = self._tree.match(topic)
        if not groups:
            return {}
        if len(groups) == 1:
            return {cid: sub.qos for cid, sub in groups[0].items()}
        out: dict[str, int] = {}
        for group in groups:
            for cid, sub in group.items():
                q = out.get(cid)
                if q is None or sub.qos > q:
                    out[cid] = sub.qos
        return out
