"""The validated configuration: frozen dataclasses, one per section of the config file, with
their defaults and limits (:data:`LOG_LEVELS`, :data:`LOG_FORMATS`, ``_MAX_PACKET``).

Nothing here reads or checks a file; :mod:`mqttbroker.config.sections` builds these from
checked values. The ``bridges`` section keeps its model beside its checks, in
:mod:`mqttbroker.config.bridges`; apart from that and a message helper, this module imports
nothing else of the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from ..errors import ConfigError, ConfigIssue
from .bridges import BridgeConfig
from .yaml_reader import _choices_msg

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
# how records are written to stderr (mqttbroker/logs.py, docs/operations.md): "text" for a
# person (and journald), "json" one object per line for a log shipper
LOG_FORMATS: Final = ("text", "json")
_MAX_PACKET: Final = 268_435_460  # 1 + 4 (max remaining-length varint) + 268,435,455


def _no_acl() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({})


def _no_scram() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One network listener (an entry under ``listeners``)."""

    name: str
    type: str
    host: str
    port: int
    max_connections: int = 0
    ssl: bool = False
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    # TLS (see mqttbroker/tls.py): CA folder and PEM text (hbmqtt/amqtt's keys), Mosquitto's
    # client-certificate options, and the lowest TLS version accepted
    capath: str | None = None
    cadata: str | None = None
    require_certificate: bool = False
    use_identity_as_username: bool = False
    tls_version: str = "tlsv1.2"
    # clients without a user name on this listener (Mosquitto's per-listener allow_anonymous);
    # None: auth.allow-anonymous, and when that is not given either, loopback listeners only
    allow_anonymous: bool | None = None
    # ws listeners: the HTTP path of the WebSocket upgrade (others get 404)
    path: str = "/mqtt"
    # ws listeners: False sends every MQTT packet in a binary frame of its own (as Mosquitto
    # does; Paho C 1.3 reads only the first packet of a frame); True packs the packets of one
    # write into one frame, legal [MQTT-6.0.0-2] and a few bytes smaller
    ws_pack_packets: bool = False
    # mqttsn listeners (UDP; docs/mqttsn.md): the gateway's id in ADVERTISE/GWINFO, seconds
    # between ADVERTISE broadcasts (0: none) and where they go, the predefined topic ids,
    # whether QoS -1 PUBLISH (no connection) is taken, and Tretry / Nretry; client_users:
    # the user name a client id (or shell pattern, in order) stands for (default: the id)
    gateway_id: int = 1
    advertise_interval: float = 900.0
    broadcast: tuple[str, int] | None = None
    predefined_topics: tuple[tuple[int, str], ...] = ()
    client_users: tuple[tuple[str, str], ...] = ()
    qos_minus_one: bool = False
    retry_interval: float = 10.0
    max_retries: int = 5


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The ``auth`` section: who may connect."""

    # clients without a user name: True/False on every listener (hbmqtt's meaning), None (not
    # given): only on loopback listeners, like Mosquitto 2 (a listener may say otherwise)
    allow_anonymous: bool | None = None
    password_file: str | None = None  # mosquitto_passwd or hbmqtt format (passwd.py)
    acl_file: str | None = None  # Mosquitto's ACL file (acl.py)
    # MQTT 5 SUBACK reason code for a filter the ACLs refuse: 0x80 Unspecified error (what the
    # Paho interoperability suite expects) or 0x87 Not authorized. 3.1.1 has only 0x80.
    v5_subscribe_refusal: int = 0x80
    # MQTT 5 enhanced authentication, SCRAM-SHA-256: user -> credential in PostgreSQL's
    # "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" form (never a password)
    scram_users: Mapping[str, str] = field(default_factory=_no_scram)


@dataclass(frozen=True, slots=True)
class TopicCheckConfig:
    """hbmqtt's ``topic-check`` section: per-user topic filters allowed to subscribe/publish."""

    enabled: bool = False
    acl: Mapping[str, tuple[str, ...]] = field(default_factory=_no_acl)
    publish_acl: Mapping[str, tuple[str, ...]] = field(default_factory=_no_acl)


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """Our own ``mqtt`` section: protocol limits and queueing (see configs/default.yaml)."""

    max_qos: int = 2
    max_packet_size: int = _MAX_PACKET
    message_size_limit: int = 0
    max_keepalive: int = 0
    connect_timeout: float = 5.0
    max_inflight_messages: int = 20
    max_queued_messages: int = 10000
    queue_qos0_messages: bool = False
    queue_full_policy: str = "drop_new"
    retain_available: bool = True
    allow_zero_length_clientid: bool = True
    max_client_id_length: int = 65535
    write_buffer_limit: int = 1_048_576
    max_write_buffer: int = 16_777_216
    receive_maximum: int = 100
    topic_alias_maximum: int = 10
    max_session_expiry_interval: int = 604_800  # 7 days; 0 = no cap
    max_subscriptions_per_client: int = 0
    response_information: str = "response/"
    # limits (0 = unlimited)
    max_connections: int = 0  # total over every listener
    max_sessions: int = 100_000  # sessions at once, connected or not
    max_queued_bytes: int = 67_108_864  # payload bytes queued per session
    max_retained_messages: int = 1_000_000
    max_retained_bytes: int = 1_073_741_824  # retained payload bytes
    max_publish_rate: float = 0.0  # PUBLISH packets per second per client
    max_publish_bytes_rate: float = 0.0  # PUBLISH bytes per second per client
    # abuse (mqttbroker/abuse.py): what a peer may do before it has logged in
    max_connect_size: int = 65_536  # bytes a packet may have before CONNACK (CONNECT, AUTH)
    max_connection_rate_per_address: float = 50.0  # new connections/s per source address
    connection_burst_per_address: int = 200  # ... of which this many at once
    auth_failure_threshold: int = 5  # failed logins in a row from an address before delays
    auth_failure_delay: float = 1.0  # first delay (s), doubling per failure; 0 = off
    auth_failure_max_delay: float = 30.0  # the longest delay (s)
    max_topic_levels: int = 200  # levels in a topic name or filter (Mosquitto's limit)
    # plugins: how long a CONNECT or packet waits for an async plugin's decision, and the
    # decision when none comes in time ("deny" or "allow")
    plugin_timeout: float = 5.0
    plugin_timeout_outcome: str = "deny"


@dataclass(frozen=True, slots=True)
class PersistenceConfig:
    """The ``persistence`` section: where sessions and retained messages survive a restart."""

    backend: str = "memory"  # memory (nothing survives) or sqlite
    path: str = "mqttbroker.db"  # the SQLite database (relative: to the config file's folder)
    # commit: acknowledge a QoS 1/2 PUBLISH only once it is committed (nothing acknowledged is
    # lost); periodic: acknowledge at once, commit every flush_interval (a crash loses at
    # most that window)
    sync: str = "commit"
    flush_interval: float = 1.0
    # fsync each commit (survives power loss too); false: a killed process loses nothing,
    # a power cut may lose the last commits
    fsync: bool = True


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The ``http`` section: /metrics, the admin API and the dashboard (docs/web.md)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    # the admin API's bearer token, given or read from token_file (created when missing);
    # neither: the admin API answers 403
    token: str | None = None
    token_file: str | None = None
    dashboard: bool = True


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """The ``cluster`` section: several nodes acting as one broker over Redis
    (docs/cluster.md). Absent: a single node, and nothing about Redis is imported."""

    redis: str  # redis://HOST:PORT/DB (rediss:// for TLS, redis://:PASSWORD@HOST:PORT/DB)
    node: str  # this node's name, unique in the cluster
    prefix: str = "mqttbroker"  # Redis key prefix: several clusters can share one Redis
    heartbeat: float = 1.0  # seconds between liveness beats
    node_timeout: float = 5.0  # a node silent this long is taken for dead
    takeover_timeout: float = 3.0  # how long a session's old node has to hand it over


@dataclass(frozen=True)
class PluginSpec:
    """One entry of the ``plugins`` section: a plugin class by its dotted path, with its
    options (amqtt 0.11+'s shape). Imported and checked against the class's ``Config`` by
    ``mqttbroker.plugins``, which names ``line`` when something is wrong."""

    path: str
    options: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated broker configuration; build it with :func:`load_config`."""

    listeners: tuple[ListenerConfig, ...]
    sys_interval: float = 10.0
    auth: AuthConfig = AuthConfig()
    topic_check: TopicCheckConfig = TopicCheckConfig()
    mqtt: MqttConfig = MqttConfig()
    log_level: str = "INFO"
    log_format: str = "text"
    persistence: PersistenceConfig = PersistenceConfig()
    http: HttpConfig = HttpConfig()
    cluster: ClusterConfig | None = None
    plugins: tuple[PluginSpec, ...] = ()
    # bridges to other brokers, in the order given (config/bridges.py; no runtime yet)
    bridges: tuple[BridgeConfig, ...] = ()

    def with_overrides(
        self, host: str | None = None, port: int | None = None, log_level: str | None = None,
        log_format: str | None = None,
    ) -> Config:
        """Return a copy with ``host`` applied to every MQTT listener, ``port`` to the first
        one (``port=0``: every listener, the HTTP one included, takes a free port) and a new
        log level and log format.

        These are the CLI's ``--host``/``--port``/``--log-level``/``--log-format``. Raises
        :class:`ConfigError` for a port outside 0..65535, an empty host or an unknown log
        level or format.
        """
        issues: list[ConfigIssue] = []
        if host is not None:
            host = host.strip().removeprefix("[").removesuffix("]")
            if not host:
                issues.append(ConfigIssue("host", None, "must not be empty"))
        if port is not None and (isinstance(port, bool) or not 0 <= port <= 65535):
            issues.append(ConfigIssue("port", None, f"must be between 0 and 65535, got {port!r}"))
        level = self.log_level if log_level is None else log_level.upper()
        if level not in LOG_LEVELS:
            issues.append(ConfigIssue("log_level", None, _choices_msg(LOG_LEVELS, log_level)))
        form = self.log_format if log_format is None else log_format.lower()
        if form not in LOG_FORMATS:
            issues.append(ConfigIssue("log_format", None, _choices_msg(LOG_FORMATS, log_format)))
        if issues:
            raise ConfigError(issues)
        listeners = tuple(
            replace(lst, host=lst.host if host is None else host,
                    port=lst.port if port is None or (port and i) else port)
            for i, lst in enumerate(self.listeners)
        )
        http = self.http if port != 0 else replace(self.http, port=0)
        return replace(self, listeners=listeners, log_level=level, log_format=form, http=http)
