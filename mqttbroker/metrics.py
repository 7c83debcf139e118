"""Broker counters, read by ``$SYS`` (and later by ``/metrics``)."""

from __future__ import annotations


class Metrics:
    """Plain counters, incremented on the hot path (no locks: one event loop)."""

    __slots__ = (
        "auth_failures",
        "auth_held",
        "bytes_received",
        "bytes_sent",
        "clients_connected",
        "clients_maximum",
        "connections_rate_limited",
        "connections_refused",
        "connections_total",
        "messages_received",
        "messages_sent",
        "protocol_errors",
        "publish_dropped",
        "publish_received",
        "publish_sent",
        "retained_dropped",
        "sessions_evicted",
        "sys_publish_refused",
    )

    def __init__(self) -> None:
        self.bytes_received = 0
        self.bytes_sent = 0
        self.messages_received = 0  # every control packet received
        self.messages_sent = 0  # every control packet sent
        self.publish_received = 0  # PUBLISH packets received
        self.publish_sent = 0  # PUBLISH packets sent
        self.publish_dropped = 0  # messages a bound or a slow reader made the broker drop
        self.clients_connected = 0
        self.clients_maximum = 0
        self.connections_total = 0
        self.connections_refused = 0
        self.connections_rate_limited = 0  # closed at accept: over the per-address rate
        self.auth_failures = 0  # CONNECTs refused for their credentials
        self.auth_held = 0  # CONNECTs held back (or refused unread): their address kept failing
        self.protocol_errors = 0
        self.sys_publish_refused = 0
        self.sessions_evicted = 0  # offline sessions discarded to stay under max_sessions
        self.retained_dropped = 0  # retained messages not kept: over a retained limit

    def snapshot(self) -> dict[str, int]:
        """Every counter by name."""
        return {name: getattr(self, name) for name in self.__slots__}
