"""Bridges to other brokers (docs/bridges.md): an extension, not code inside broker.py.

:class:`Bridges` starts one :class:`~mqttbroker.bridge.link.BridgeLink` per configured bridge
and joins each to the broker as a local client through the
:class:`~mqttbroker.core.hooks.LocalClients` Protocol; it imports neither broker.py nor
client/.
"""

from __future__ import annotations

import logging

from ..config.bridges import BridgeConfig
from ..core.hooks import LocalClients
from . import topics
from .link import BridgeLink

__all__ = ["BridgeLink", "Bridges"]

log = logging.getLogger("mqttbroker.bridge")


class Bridges:
    """The configured bridges of one broker."""

    def __init__(self, configs: tuple[BridgeConfig, ...], host: LocalClients) -> None:
        self.host = host
        self.links = [BridgeLink(c, host.publish, host.metrics) for c in configs]

    def start(self) -> None:
        """Join every bridge to the broker (its outgoing subscriptions), then connect."""
        for link in self.links:
            self.host.attach_local(link, topics.local_filters(link.config.topics))
            link.start()
            log.info("bridge %r: %d address(es), %d topic rule(s)", link.config.name,
                     len(link.config.addresses), len(link.config.topics))

    async def stop(self) -> None:
        """Disconnect every bridge from its remote and from the broker."""
        for link in self.links:
            await link.stop()
            self.host.detach_local(link.client_id)
