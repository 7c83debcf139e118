"""Bridges to other brokers (docs/bridges.md): an extension, not code inside broker.py.

:class:`Bridges` starts one :class:`~mqttbroker.bridge.link.BridgeLink` per configured bridge
and joins each to the broker as a local client through the
:class:`~mqttbroker.core.hooks.LocalClients` Protocol; it imports neither broker.py nor
client/.
"""

from __future__ import annotations

import logging

from ..config.bridges import BridgeConfig
from ..core.connect import BRIDGE_IDS
from ..core.hooks import LocalClients
from ..persistence.base import Storage, StoredSession
from . import topics
from .link import BridgeLink

__all__ = ["BridgeLink", "Bridges"]

log = logging.getLogger("mqttbroker.bridge")


class Bridges:
    """The configured bridges of one broker."""

    def __init__(self, configs: tuple[BridgeConfig, ...], host: LocalClients,
                 storage: Storage | None = None) -> None:
        """``storage``: where backlogs are kept (each bridge's as the items of a session of
        its own, ``$bridge/<name>``); None keeps them in memory."""
        self.host = host
        self.storage = storage
        self.links = [BridgeLink(c, host.publish, host.metrics, storage) for c in configs]

    @staticmethod
    def owns(client_id: str) -> bool:
        """Whether a stored session is a bridge's backlog (not a client's session)."""
        return client_id.startswith(BRIDGE_IDS)

    def restore(self, stored: list[StoredSession]) -> None:
        """Give each bridge the backlog a previous run stored; the backlog of a bridge no
        longer configured is deleted, and logged with its size."""
        links = {link.client_id: link for link in self.links}
        for rec in stored:
            link = links.get(rec.client_id)
            if link is not None:
                link.restore(rec)
                continue
            log.warning("%s is no longer configured: its %d stored message(s) are deleted",
                        rec.client_id, len(rec.items))
            if self.storage is not None:
                for item in rec.items:
                    self.storage.delete_item(item.seq, item.message)
                self.storage.delete_session(rec.client_id)

    def start(self) -> None:
        """Join every bridge to the broker (its outgoing subscriptions), then connect."""
        for link in self.links:
            if self.storage is not None:  # the record its stored backlog hangs on
                self.storage.put_session(link.client_id, 0xFFFFFFFF, None, None)
            self.host.attach_local(link, topics.local_filters(link.config.topics))
            link.start()
            log.info("bridge %r: %d address(es), %d topic rule(s)", link.config.name,
                     len(link.config.addresses), len(link.config.topics))

    async def stop(self) -> None:
        """Disconnect every bridge from its remote and from the broker."""
        for link in self.links:
            await link.stop()
            self.host.detach_local(link.client_id)
