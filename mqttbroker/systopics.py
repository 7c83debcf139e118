"""``$SYS``: the broker's figures as retained messages, with Mosquitto's topic names.

An extension like web/ and cluster/: it reads the running broker through the
:class:`~mqttbroker.core.hooks.BrokerView` Protocol (the HTTP listener's view) and publishes
through the callable it is given, every ``sys_interval`` seconds on one timer. It imports
neither broker.py nor client/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from . import __version__
from .core.hooks import BrokerView
from .message import Message


class SysTopics:
    """Publishes ``$SYS/broker/...`` every ``config.sys_interval`` seconds (0: never)."""

    def __init__(self, view: BrokerView, publish: Callable[[Message], object]) -> None:
        self.view = view
        self._publish = publish
        self._timer: asyncio.TimerHandle | None = None

    def values(self) -> dict[str, str]:
        """``$SYS/broker/...`` topics and values, with Mosquitto's names (and ours for the
        bridges: ``$SYS/broker/bridges/<name>/...``)."""
        view = self.view
        m = view.metrics
        sessions = view.sessions
        connected = len(view.connections)
        total = len(sessions)
        values = {
            "$SYS/broker/version": f"mqttbroker version {__version__}",
            "$SYS/broker/uptime": f"{int(view.uptime())} seconds",
            "$SYS/broker/clients/connected": str(connected),
            "$SYS/broker/clients/active": str(connected),
            "$SYS/broker/clients/disconnected": str(total - connected),
            "$SYS/broker/clients/inactive": str(total - connected),
            "$SYS/broker/clients/total": str(total),
            "$SYS/broker/clients/maximum": str(m.clients_maximum),
            "$SYS/broker/messages/received": str(m.messages_received),
            "$SYS/broker/messages/sent": str(m.messages_sent),
            "$SYS/broker/publish/messages/received": str(m.publish_received),
            "$SYS/broker/publish/messages/sent": str(m.publish_sent),
            "$SYS/broker/publish/messages/dropped": str(m.publish_dropped),
            "$SYS/broker/bytes/received": str(m.bytes_received),
            "$SYS/broker/bytes/sent": str(m.bytes_sent),
            "$SYS/broker/subscriptions/count": str(view.router.count),
            "$SYS/broker/retained messages/count": str(len(view.retained)),
            "$SYS/broker/store/messages/count": str(
                sum(len(s.queue) + len(s.inflight) for s in sessions.values())),
            "$SYS/broker/plugins/errors": str(m.plugin_errors),
            "$SYS/broker/plugins/timeouts": str(m.plugin_timeouts),
        }
        for st in view.bridge_stats():
            # $SYS/broker/connection/<name>/state is the bridge's own (published at each
            # change, bridge/link.py); these follow the interval, as the counters above do
            root = f"$SYS/broker/bridges/{st.name}/"
            values[root + "connected"] = "1" if st.connected else "0"
            values[root + "remote"] = st.remote or ""  # empty: not connected
            values[root + "queued"] = str(st.queued)
            values[root + "inflight"] = str(st.inflight)
            values[root + "sent"] = str(st.sent)
            values[root + "received"] = str(st.received)
            values[root + "dropped"] = str(st.dropped)
        for g in view.gateway_stats():
            root = f"$SYS/broker/mqttsn/{g.listener}/"
            values[root + "clients"] = str(g.clients)
            values[root + "sleeping"] = str(g.sleeping)
            values[root + "datagrams/received"] = str(g.datagrams_received)
            values[root + "datagrams/sent"] = str(g.datagrams_sent)
            values[root + "datagrams/malformed"] = str(g.malformed)
            if g.kernel_drops is not None:
                values[root + "datagrams/kernel_drops"] = str(g.kernel_drops)
        return values

    def start(self) -> None:
        """Publish now and every ``sys_interval`` seconds after (nothing when it is 0)."""
        if self.view.config.sys_interval > 0:
            self._tick()

    def stop(self) -> None:
        """No more ``$SYS`` (the broker stops)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        for topic, value in self.values().items():
            self._publish(Message(topic, value.encode(), 0, True))
        self._timer = asyncio.get_running_loop().call_later(self.view.config.sys_interval,
                                                            self._tick)
