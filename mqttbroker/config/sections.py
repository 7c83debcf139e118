"""The schema: one field table per section (``_LISTENER_FIELDS``, ``_MQTT_FIELDS``, ...,
``_TOP_FIELDS``), the checks that span several keys of a section (listeners, http, cluster),
and :func:`_validate`, which turns the plain values of a whole config into a :class:`Config`.
The ``bridges`` section has its own module, :mod:`mqttbroker.config.bridges`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from ..errors import ConfigError, ConfigIssue
from .bridges import _BRIDGE_FIELDS, _bridges
from .convert import (
    _acl,
    _acl_file,
    _Bad,
    _bind,
    _bool,
    _choice,
    _Conv,
    _file,
    _float,
    _folder,
    _int,
    _max_connections,
    _node_name,
    _password_file,
    _path,
    _redis_url,
    _refusal_code,
    _scram_users,
    _str,
    _tls_version,
    _token,
    _url_path,
    _Validator,
)
from .model import (
    _MAX_PACKET,
    LOG_FORMATS,
    LOG_LEVELS,
    AuthConfig,
    ClusterConfig,
    Config,
    HttpConfig,
    ListenerConfig,
    MqttConfig,
    PersistenceConfig,
    PluginSpec,
    TopicCheckConfig,
)
from .yaml_reader import _INVALID, _canon, _KeyPath


def _predefined_topics(v: _Validator, value: Any, path: _KeyPath
                       ) -> tuple[tuple[int, str], ...]:
    """MQTT-SN predefined topic ids: ``{id: topic name}``, ids 1..65534, names without
    wildcards, each name once."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise _Bad("expected a mapping of topic ids to topic names, e.g. {1: 'alerts/all'}")
    out: list[tuple[int, str]] = []
    names: set[str] = set()
    for raw, name in value.items():
        key = int(raw) if isinstance(raw, str) and raw.isdigit() else raw
        if isinstance(key, bool) or not isinstance(key, int) or not 0 < key < 0xFFFF:
            raise _Bad(f"topic ids are integers 1..65534, got {key!r}")
        if not isinstance(name, str) or not name or "\0" in name or "+" in name \
                or "#" in name:
            raise _Bad(f"id {key}: expected a topic name without wildcards, got {name!r}")
        if name in names:
            raise _Bad(f"{name!r} has two ids")
        names.add(name)
        out.append((key, name))
    return tuple(sorted(out))


def _client_users(v: _Validator, value: Any, path: _KeyPath) -> tuple[tuple[str, str], ...]:
    """MQTT-SN client id -> user name: ``{client id or pattern: user name}``; a pattern has
    ``*``, ``?`` or ``[...]`` (shell style, matched in the order given)."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise _Bad("expected a mapping of client ids (or patterns like 'sensor-*') to user "
                   "names, e.g. {'sensor-*': sensors}")
    out: list[tuple[str, str]] = []
    for key, user in value.items():
        if not isinstance(key, str) or not key or "\0" in key:
            raise _Bad(f"expected a client id or pattern, got {key!r}")
        if not isinstance(user, str) or not user or "\0" in user:
            raise _Bad(f"{key!r}: expected a user name, got {user!r}")
        out.append((key, user))
    return tuple(out)


_LISTENER_FIELDS: Final[Mapping[str, _Conv]] = {
    "type": _choice(("tcp", "ws", "mqttsn"), str.lower),
    "bind": _bind,
    "max_connections": _max_connections,
    "ssl": _bool,
    "certfile": _file,
    "keyfile": _file,
    "cafile": _file,
    "capath": _folder,
    "cadata": _str,
    "require_certificate": _bool,
    "use_identity_as_username": _bool,
    "tls_version": _choice(("tlsv1.2", "tlsv1.3"), _tls_version),
    "allow_anonymous": _bool,
    "path": _url_path,
    "ws_pack_packets": _bool,
    # type: mqttsn only
    "gateway_id": _int(0, 255),
    "advertise_interval": _float(0),
    "broadcast": _bind,
    "predefined_topics": _predefined_topics,
    "client_users": _client_users,
    "qos_minus_one": _bool,
    "retry_interval": _float(0, exclusive=True),
    "max_retries": _int(0, 100),
}
_MQTTSN_ONLY: Final = ("gateway_id", "advertise_interval", "broadcast", "predefined_topics",
                       "client_users", "qos_minus_one", "retry_interval", "max_retries")
_STREAM_ONLY: Final = ("ssl", "certfile", "keyfile", "cafile", "capath", "cadata",
                       "require_certificate", "use_identity_as_username", "tls_version", "path",
                       "ws_pack_packets")
_AUTH_FIELDS: Final[Mapping[str, _Conv]] = {
    "allow_anonymous": _bool, "password_file": _password_file, "acl_file": _acl_file,
    "scram_users": _scram_users, "v5_subscribe_refusal": _refusal_code}
_TOPIC_CHECK_FIELDS: Final[Mapping[str, _Conv]] = {
    "enabled": _bool, "acl": _acl, "publish_acl": _acl}
_MQTT_FIELDS: Final[Mapping[str, _Conv]] = {
    "max_qos": _int(0, 2),
    "max_packet_size": _int(2, _MAX_PACKET),
    "message_size_limit": _int(0, _MAX_PACKET),
    "max_keepalive": _int(0, 65535),
    "connect_timeout": _float(0, exclusive=True),
    "max_inflight_messages": _int(1, 65535),  # packet identifiers are 16-bit, non-zero
    "max_queued_messages": _int(0),
    "queue_qos0_messages": _bool,
    "queue_full_policy": _choice(("drop_new", "drop_oldest"), lambda s: _canon(s.lower())),
    "retain_available": _bool,
    "allow_zero_length_clientid": _bool,
    "max_client_id_length": _int(1, 65535),
    "write_buffer_limit": _int(1024),
    "max_write_buffer": _int(1024),
    "receive_maximum": _int(1, 65535),
    "topic_alias_maximum": _int(0, 65535),
    "max_session_expiry_interval": _int(0, 0xFFFFFFFF),
    "max_subscriptions_per_client": _int(0),
    "response_information": _str,
    "max_connections": _max_connections,
    "max_sessions": _int(0),
    "max_queued_bytes": _int(0),
    "max_retained_messages": _int(0),
    "max_retained_bytes": _int(0),
    "max_publish_rate": _float(0),
    "max_publish_bytes_rate": _float(0),
    "max_connect_size": _int(256, _MAX_PACKET),
    "max_connection_rate_per_address": _float(0),
    "connection_burst_per_address": _int(1),
    "auth_failure_threshold": _int(0),
    "auth_failure_delay": _float(0),
    "auth_failure_max_delay": _float(0),
    "max_topic_levels": _int(0),
    "plugin_timeout": _float(0, exclusive=True),
    "plugin_timeout_outcome": _choice(("deny", "allow"), str.lower),
}
_PERSISTENCE_FIELDS: Final[Mapping[str, _Conv]] = {
    "backend": _choice(("memory", "sqlite"), str.lower),
    "path": _path,
    "sync": _choice(("commit", "periodic"), str.lower),
    "flush_interval": _float(0, exclusive=True),
    "fsync": _bool,
}
_HTTP_FIELDS: Final[Mapping[str, _Conv]] = {
    "enabled": _bool,
    "bind": _bind,
    "token": _token,
    "token_file": _path,
    "dashboard": _bool,
}
_CLUSTER_FIELDS: Final[Mapping[str, _Conv]] = {
    "redis": _redis_url,
    "node": _node_name,
    "prefix": _node_name,
    "heartbeat": _float(0, exclusive=True),
    "node_timeout": _float(0, exclusive=True),
    "takeover_timeout": _float(0, exclusive=True),
}
_PLUGINS: Final = frozenset({"plugins"})  # amqtt plugin lists: accepted, ignored


def _subsection(cls: Callable[..., Any], fields: Mapping[str, _Conv]) -> _Conv:
    def conv(v: _Validator, value: Any, path: _KeyPath) -> Any:
        return v.built(cls, v.section(value, path, fields, _PLUGINS))

    return conv


def _http(v: _Validator, value: Any, path: _KeyPath) -> HttpConfig:
    got = v.section(value, path, _HTTP_FIELDS)
    if "token" in got and "token_file" in got:
        v.issue(got["token_file"][1], "give token or token-file, not both")
    values = {k: val for k, (val, _) in got.items()}
    if any(val is _INVALID for val in values.values()):
        return _INVALID  # type: ignore[no-any-return]
    if "bind" in values:
        values["host"], values["port"] = values.pop("bind")
    return HttpConfig(**values)


def _cluster(v: _Validator, value: Any, path: _KeyPath) -> ClusterConfig | None:
    got = v.section(value, path, _CLUSTER_FIELDS)
    values = {k: val for k, (val, _) in got.items()}
    if any(val is _INVALID for val in values.values()):
        return _INVALID  # type: ignore[no-any-return]
    missing = [k for k in ("redis", "node") if k not in values]
    if missing:
        v.issue(path, f"cluster needs {' and '.join(missing)} (e.g. redis: "
                "redis://127.0.0.1:6379/0, node: node-1)")
        return _INVALID  # type: ignore[no-any-return]
    if values.get("node_timeout", 5.0) <= values.get("heartbeat", 1.0):
        v.issue(got.get("node_timeout", got.get("heartbeat", (None, path)))[1],
                "node_timeout must be longer than heartbeat")
        return _INVALID  # type: ignore[no-any-return]
    return ClusterConfig(**values)


def _listeners(v: _Validator, value: Any, path: _KeyPath) -> tuple[ListenerConfig, ...]:
    """hbmqtt semantics: ``default`` fills in what other listeners leave out."""
    body = v.mapping(value, path)
    if not body:
        return (ListenerConfig("default", "tcp", "127.0.0.1", 1883),)
    parsed = {name: v.section(item, (*path, name), _LISTENER_FIELDS) for name, item in body.items()}
    defaults = parsed.get("default", {})
    result: list[ListenerConfig] = []
    failed = False
    for name, own in parsed.items():
        if name == "default" and "bind" not in own:
            continue  # only supplies defaults
        eff = own if name == "default" else {**defaults, **own}
        if any(val is _INVALID for val, _ in eff.values()):
            failed = True
            continue
        lpath = (*path, name)
        if "bind" not in eff:
            v.issue(lpath, "listener has no 'bind' (expected 'host:port', e.g. '127.0.0.1:1883')")
            failed = True
            continue
        values = {k: val for k, (val, _) in eff.items()}
        kind = values.get("type", "tcp")
        wrong = [k for k in (_STREAM_ONLY if kind == "mqttsn" else _MQTTSN_ONLY)
                 if k in own and (k != "ssl" or values[k])]
        if wrong:
            v.issue(own[wrong[0]][1], f"{wrong[0].replace('_', '-')} is for "
                    + ("tcp and ws listeners; an mqttsn listener is UDP, without TLS"
                       if kind == "mqttsn" else "mqttsn listeners (type: mqttsn)"))
            failed = True
            continue
        if kind == "mqttsn":
            values = {k: val for k, val in values.items() if k not in _STREAM_ONLY}
        if values.get("ssl"):
            missing = [k for k in ("certfile", "keyfile") if not values.get(k)]
            if missing:
                ssl_path = eff["ssl"][1]
                inherited = ssl_path[: len(lpath)] != lpath
                v.issue(lpath if inherited else ssl_path,
                        ("ssl (inherited from listeners.default)" if inherited else "ssl")
                        + f" requires certfile and keyfile; missing {' and '.join(missing)}")
                failed = True
                continue
        elif bool(values.get("certfile")) != bool(values.get("keyfile")):
            v.issue(lpath, "certfile and keyfile must be given together")
            failed = True
            continue
        # client certificates need TLS, and a CA to check them against
        wants_cert = [k for k in ("require_certificate", "use_identity_as_username")
                      if values.get(k)]
        has_ca = any(values.get(k) for k in ("cafile", "capath", "cadata"))
        if wants_cert and (not values.get("ssl") or not has_ca):
            v.issue(eff[wants_cert[0]][1], f"{wants_cert[0].replace('_', '-')} needs "
                    + ("ssl: true" if not values.get("ssl") else
                       "cafile (or capath): the CA that signs the client certificates"))
            failed = True
            continue
        host, port = values.pop("bind")
        result.append(ListenerConfig(name=name, host=host, port=port,
                                     type=values.pop("type", "tcp"), **values))
    seen: dict[tuple[str, str, int], str] = {}
    for lst in result:
        addr = ("udp" if lst.type == "mqttsn" else "tcp", lst.host, lst.port)
        if lst.port and addr in seen:
            where = (*path, lst.name, "bind") if "bind" in parsed[lst.name] else (*path, lst.name)
            v.issue(where, f"listeners {seen[addr]!r} and {lst.name!r} both bind "
                    f"{lst.host}:{lst.port}; give each listener its own bind")
        seen.setdefault(addr, lst.name)
    if not result and not failed:
        v.issue(path, "no listener to start: 'default' has no bind and no other listener is given")
    return tuple(result)


def _plugins(v: _Validator, value: Any, path: _KeyPath) -> tuple[PluginSpec, ...]:
    """amqtt 0.11+'s ``plugins``: a mapping of dotted class path -> options (or nothing).
    amqtt 0.10's list of entry-point names is accepted and ignored, as before. The classes
    are imported and their options checked by ``mqttbroker.plugins``, with these lines."""
    if value is None or isinstance(value, list):
        return ()
    specs = []
    for name, options in v.mapping(value, path).items():
        kpath = (*path, name)
        module, _, cls = name.rpartition(".")
        if not module or not cls or not all(part.isidentifier() for part in name.split(".")):
            v.issue(kpath, "a plugin is named by its dotted class path, "
                    "e.g. package.module.ClassName")
            continue
        try:
            opts = v.mapping(options, kpath)
        except _Bad as exc:
            v.issue(kpath, f"a plugin's options: {exc}")
            continue
        specs.append(PluginSpec(name, MappingProxyType(opts), v.lines.get(kpath)))
    return tuple(specs)


_TOP_FIELDS: Final[Mapping[str, _Conv]] = {
    "listeners": _listeners,
    "sys_interval": _float(0),
    "auth": _subsection(AuthConfig, _AUTH_FIELDS),
    "topic_check": _subsection(TopicCheckConfig, _TOPIC_CHECK_FIELDS),
    "mqtt": _subsection(MqttConfig, _MQTT_FIELDS),
    "log_level": _choice(LOG_LEVELS, str.upper),
    "log_format": _choice(LOG_FORMATS, str.lower),
    "persistence": _subsection(PersistenceConfig, _PERSISTENCE_FIELDS),
    "http": _http,
    "cluster": _cluster,
    "plugins": _plugins,
    "bridges": _bridges,
}
_TOP_IGNORED: Final = frozenset({"timeout_disconnect_delay"})
_ELSEWHERE: Final[Mapping[str, str]] = {
    **{k: "bridges.<name>" for k in _BRIDGE_FIELDS},  # first: auth's password_file wins
    **{k: "listeners.<name>" for k in _LISTENER_FIELDS},
    **{k: "auth" for k in _AUTH_FIELDS},
    **{k: "topic-check" for k in _TOPIC_CHECK_FIELDS},
    **{k: "mqtt" for k in _MQTT_FIELDS},
    **{k: "persistence" for k in _PERSISTENCE_FIELDS},
    **{k: "http" for k in _HTTP_FIELDS if k not in ("bind", "enabled")},
    **{k: "cluster" for k in _CLUSTER_FIELDS},
}


def _validate(
    raw: Any,
    lines: Mapping[_KeyPath, int],
    issues: list[ConfigIssue],
    base_dir: str | None,
    filename: str | None,
) -> Config:
    v = _Validator(lines, base_dir)
    v.issues.extend(issues)
    top = v.section(raw, (), _TOP_FIELDS, _TOP_IGNORED, _ELSEWHERE)
    if "listeners" not in top:
        top["listeners"] = (_listeners(v, None, ("listeners",)), ("listeners",))
    cluster, persistence = top.get("cluster"), top.get("persistence")
    if cluster is not None and cluster[0] not in (None, _INVALID) and persistence is not None \
            and isinstance(persistence[0], PersistenceConfig) \
            and persistence[0].backend != "memory":
        v.issue(persistence[1], "with a cluster section, sessions and retained messages are "
                "kept in the cluster's Redis: leave persistence out (or backend: memory)")
    config = v.built(Config, top)
    if v.issues or config is _INVALID:
        unique = list(dict.fromkeys((i.key, i.line, i.problem) for i in v.issues))
        unique.sort(key=lambda t: (t[1] is None, t[1] or 0))
        raise ConfigError([ConfigIssue(*t) for t in unique], filename)
    assert isinstance(config, Config)
    return config
