"""Broker counters, read by ``$SYS`` and by ``/metrics`` (mqttbroker/web/prometheus.py)."""

from __future__ import annotations

import bisect
from typing import Final


class Metrics:
    """Plain counters, incremented on the hot path (no locks: one event loop).

    PUBLISH packets and their bytes are counted per QoS (lists indexed by QoS); the bytes are
    whole packets as they crossed the wire, fixed header included.
    """

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
        "plugin_errors",
        "plugin_timeouts",
        "protocol_errors",
        "publish_dropped",
        "publish_in",
        "publish_in_bytes",
        "publish_out",
        "publish_out_bytes",
        "retained_dropped",
        "sessions_evicted",
        "sys_publish_refused",
    )

    def __init__(self) -> None:
        self.bytes_received = 0
        self.bytes_sent = 0
        self.messages_received = 0  # every control packet received
        self.messages_sent = 0  # every control packet sent
        self.publish_in = [0, 0, 0]  # PUBLISH packets received, per QoS
        self.publish_in_bytes = [0, 0, 0]
        self.publish_out = [0, 0, 0]  # PUBLISH packets sent, per QoS
        self.publish_out_bytes = [0, 0, 0]
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
        self.plugin_errors = 0  # plugin hooks that raised (logged with the plugin's name)
        self.plugin_timeouts = 0  # async plugin decisions that did not come in time

    @property
    def publish_received(self) -> int:
        """PUBLISH packets received, every QoS."""
        return sum(self.publish_in)

    @property
    def publish_sent(self) -> int:
        """PUBLISH packets sent, every QoS."""
        return sum(self.publish_out)

    def snapshot(self) -> dict[str, int]:
        """Every counter by name (per-QoS ones as ``publish_in_qos1`` ...)."""
        out: dict[str, int] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, list):
                out.update({f"{name}_qos{q}": n for q, n in enumerate(value)})
            else:
                out[name] = value
        return out


def packet_size(body_length: int) -> int:
    """The size of a packet on the wire from the length of its body: one fixed-header byte,
    the Remaining Length varint (1 to 4 bytes), the body."""
    n = body_length
    return n + (2 if n < 128 else 3 if n < 16_384 else 4 if n < 2_097_152 else 5)


# seconds: from a fraction of a millisecond (no fsync, tmpfs) to a slow disk's seconds
LATENCY_BUCKETS: Final[tuple[float, ...]] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                      0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Observations counted in fixed buckets (Prometheus's cumulative form is made on export)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] | None = None) -> None:
        # (None, not LATENCY_BUCKETS as the default, and LATENCY_BUCKETS not Final: the mypyc
        # build, `make compiled`, never sets a Final tuple of floats: NameError when read)
        if bounds is None:
            bounds = LATENCY_BUCKETS
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (+inf, count)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out
