"""``/metrics``: the broker's counters and gauges in Prometheus text format.

A custom collector reads :class:`~mqttbroker.metrics.Metrics` and the broker's state at scrape
time (nothing is kept twice, the hot path only bumps plain integers); prometheus_client writes
the format. Gauges that mirror ``$SYS`` are computed from the same state as ``$SYS``, so the
two agree at any instant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .. import __version__

if TYPE_CHECKING:
    from ..core.hooks import BridgeStats, BrokerView, GatewayStats

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_QOS: Final = ("0", "1", "2")


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"mqttbroker_{name}", doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"mqttbroker_{name}", doc, value=value)


def _per_qos(name: str, doc: str, values: list[int]) -> CounterMetricFamily:
    family = CounterMetricFamily(f"mqttbroker_{name}", doc, labels=["qos"])
    for qos, n in zip(_QOS, values, strict=True):
        family.add_metric([qos], n)
    return family


class BrokerCollector:
    """Everything under ``mqttbroker_`` (the table in docs/web.md)."""

    def __init__(self, broker: BrokerView) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        b = self.broker
        m = b.metrics
        info = GaugeMetricFamily("mqttbroker_info", "The broker's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield _gauge("uptime_seconds", "Seconds since the broker started", b.uptime())
        yield _gauge("clients_connected", "Clients connected now ($SYS clients/connected)",
                     len(b.connections))
        yield _gauge("clients_maximum", "Most clients connected at once", m.clients_maximum)
        per_listener = GaugeMetricFamily("mqttbroker_listener_connections",
                                         "Open connections per listener", labels=["listener"])
        for name, n in b.listener_connections().items():
            per_listener.add_metric([name], n)
        yield per_listener
        yield _counter("connections", "Connections accepted", m.connections_total)
        yield _counter("connections_refused", "CONNECTs refused", m.connections_refused)
        yield _counter("connections_rate_limited", "Connections closed at accept: over the "
                       "per-address rate", m.connections_rate_limited)
        online = len(b.connections)
        sessions = GaugeMetricFamily("mqttbroker_sessions", "Sessions held, by whether their "
                                     "client is connected", labels=["state"])
        sessions.add_metric(["online"], online)
        sessions.add_metric(["offline"], len(b.sessions) - online)
        yield sessions
        yield _counter("sessions_evicted", "Offline sessions discarded to stay under "
                       "max_sessions", m.sessions_evicted)
        yield _gauge("subscriptions", "Subscriptions held ($SYS subscriptions/count)",
                     b.router.count)
        yield _counter("packets_received", "Control packets received", m.messages_received)
        yield _counter("packets_sent", "Control packets sent", m.messages_sent)
        yield _counter("bytes_received", "Bytes received", m.bytes_received)
        yield _counter("bytes_sent", "Bytes sent", m.bytes_sent)
        yield _per_qos("publish_received", "PUBLISH packets received", m.publish_in)
        yield _per_qos("publish_received_bytes", "Bytes of the PUBLISH packets received",
                       m.publish_in_bytes)
        yield _per_qos("publish_sent", "PUBLISH packets sent", m.publish_out)
        yield _per_qos("publish_sent_bytes", "Bytes of the PUBLISH packets sent",
                       m.publish_out_bytes)
        yield _counter("publish_dropped", "Messages dropped by a bound or a slow reader",
                       m.publish_dropped)
        yield _gauge("retained_messages", "Retained messages ($SYS retained messages/count)",
                     len(b.retained))
        yield _gauge("retained_bytes", "Payload bytes of the retained messages",
                     b.retained.bytes)
        yield _counter("retained_dropped", "Retained messages not kept: over a retained limit",
                       m.retained_dropped)
        queued = queued_bytes = inflight = 0
        for s in b.sessions.values():
            queued += len(s.queue)
            queued_bytes += s.queued_bytes
            inflight += len(s.inflight)
        yield _gauge("queued_messages", "Messages in session queues", queued)
        yield _gauge("queued_bytes", "Payload bytes in session queues", queued_bytes)
        yield _gauge("inflight_messages", "QoS 1/2 messages sent, not yet acknowledged",
                     inflight)
        yield _counter("protocol_errors", "Connections closed for bad input", m.protocol_errors)
        yield _counter("auth_failures", "CONNECTs refused for their credentials",
                       m.auth_failures)
        yield _counter("plugin_errors", "Plugin hooks that raised (logged with the plugin's name)",
                       m.plugin_errors)
        yield _counter("plugin_timeouts", "Async plugin decisions that did not come in time",
                       m.plugin_timeouts)
        cluster = b.cluster
        if cluster is not None:
            st = cluster.stats()
            yield _gauge("cluster_redis_up", "1 while the cluster's Redis answers",
                         st["redis_up"])
            yield _gauge("cluster_nodes_alive", "Nodes whose heart beats, this one included",
                         st["nodes_alive"])
            yield _counter("cluster_forwarded", "Messages sent to other nodes' inboxes",
                           st["forwarded"])
            yield _counter("cluster_received", "Messages read from this node's inbox",
                           st["received"])
            yield _counter("cluster_redis_failures", "Redis operations that failed",
                           st["redis_failures"])
            yield _counter("cluster_dropped", "QoS 0 messages for other nodes dropped: Redis "
                           "did not keep up", st["dropped"])
            yield _gauge("cluster_backlog", "Messages for other nodes waiting for Redis",
                         st["backlog"])
        yield from _bridges(b)
        yield from _gateways(b)
        storage = b.storage
        if storage is not None:
            h = storage.commit_latency
            family = HistogramMetricFamily(
                "mqttbroker_storage_commit_seconds",
                "Storage commits: from hand-off to the writer to committed")
            family.add_metric([], [(_bound(le), n) for le, n in h.cumulative()],
                              sum_value=h.total)
            yield family
            yield _gauge("storage_pending_changes", "Changes waiting for the next commit",
                         storage.pending_changes())


def _bridges(b: BrokerView) -> Iterator[Metric]:
    """The ``mqttbroker_bridge_*`` families, labelled ``bridge="<name>"``, one sample per
    configured bridge (none without bridges, as the cluster's and the storage's families
    appear only with them)."""
    stats = b.bridge_stats()
    if not stats:
        return

    def family(kind: type[GaugeMetricFamily | CounterMetricFamily], name: str, doc: str,
               value: Callable[[BridgeStats], float]) -> Metric:
        f = kind(f"mqttbroker_bridge_{name}", doc, labels=["bridge"])
        for st in stats:
            f.add_metric([st.name], value(st))
        return f

    gauge, counter = GaugeMetricFamily, CounterMetricFamily
    yield family(gauge, "connected", "1 while the bridge is connected to its remote",
                 lambda s: int(s.connected))
    yield family(gauge, "queued_messages", "Messages waiting for the remote, in flight "
                 "included", lambda s: s.queued)
    yield family(gauge, "queued_bytes", "Payload bytes of the messages waiting for the remote",
                 lambda s: s.queued_bytes)
    yield family(gauge, "inflight_messages", "Messages sent to the remote at QoS 1/2, not yet "
                 "acknowledged", lambda s: s.inflight)
    yield family(counter, "sent", "Messages the remote has (QoS 0: written; QoS 1/2: "
                 "acknowledged)", lambda s: s.sent)
    yield family(counter, "received", "Messages taken in from the remote",
                 lambda s: s.received)
    yield family(counter, "dropped", "Messages for the remote dropped: the queue full (its "
                 "full_policy), expired while queued, or refused by the remote",
                 lambda s: s.dropped)
    yield family(counter, "connects", "Successful connections to the remote",
                 lambda s: s.connects)


def _gateways(b: BrokerView) -> Iterator[Metric]:
    """The ``mqttbroker_mqttsn_*`` families, labelled ``listener="<name>"``, one sample per
    MQTT-SN listener (none without one)."""
    stats = b.gateway_stats()
    if not stats:
        return

    def family(kind: type[GaugeMetricFamily | CounterMetricFamily], name: str, doc: str,
               value: Callable[[GatewayStats], float | None]) -> Metric:
        f = kind(f"mqttbroker_mqttsn_{name}", doc, labels=["listener"])
        for st in stats:
            v = value(st)
            if v is not None:
                f.add_metric([st.listener], v)
        return f

    gauge, counter = GaugeMetricFamily, CounterMetricFamily
    yield family(gauge, "clients", "MQTT-SN clients the gateway holds (connected, asleep or "
                 "connecting)", lambda s: s.clients)
    yield family(gauge, "sleeping", "MQTT-SN clients asleep", lambda s: s.sleeping)
    yield family(counter, "datagrams_received", "Datagrams received", lambda s:
                 s.datagrams_received)
    yield family(counter, "datagrams_sent", "Datagrams sent", lambda s: s.datagrams_sent)
    yield family(counter, "datagrams_malformed", "Datagrams dropped as malformed",
                 lambda s: s.malformed)
    yield family(counter, "kernel_drops", "Datagrams the kernel dropped: the socket's "
                 "receive buffer was full (Linux /proc/net/udp)", lambda s: s.kernel_drops)


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


class MetricsPage:
    """Renders ``/metrics`` for one broker (a registry of its own: tests run many brokers)."""

    def __init__(self, broker: BrokerView) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(BrokerCollector(broker))
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...:
        # the names every Prometheus exporter gives them, read from /proc at each scrape
        # (Linux; nothing elsewhere), for the CPU and memory panels of contrib/grafana
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
