"""Broker configuration: YAML (or a dict) in, frozen typed :class:`Config` out.

:func:`load_config` reads a YAML file with line tracking, checks every key against the schema
below and collects *all* problems (unknown keys with a "did you mean" hint, wrong types, bad
values, duplicate keys, YAML syntax errors) into one :class:`~mqttbroker.errors.ConfigError`
whose issues name the dotted key path (``listeners.default.bind``) and the 1-based line.

The file format is a superset of the hbmqtt/amqtt broker config:

* ``listeners``: name -> ``type`` (tcp/ws), ``bind`` ("host:port"), ``max_connections``,
  ``ssl``, ``certfile``, ``keyfile``, ``cafile``, ``capath``, ``cadata``, and Mosquitto's
  ``require-certificate``, ``use-identity-as-username``, ``tls-version`` (the minimum,
  ``tlsv1.2`` or ``tlsv1.3``); ws listeners also ``path`` and ``ws-pack-packets`` (several
  MQTT packets per WebSocket frame; default one per frame). A listener named ``default``
  supplies the values other listeners leave out, and is itself a listener only if it has a
  ``bind``.
* ``sys_interval``, ``auth`` (``allow-anonymous``, ``password-file``, ``acl-file``, our
  ``v5-subscribe-refusal``; a listener may have its own ``allow-anonymous``),
  ``topic-check`` (``enabled``, ``acl``, ``publish-acl``), ``log_level`` and our own ``mqtt``.
* amqtt's ``plugins`` (top level, in ``auth`` and in ``topic-check``) and
  ``timeout-disconnect-delay`` are accepted and **ignored**: our authentication and topic checks
  are configured by the keys above, not by plugin lists.

Hyphen and underscore spellings of a key are the same key everywhere (``max-connections`` ==
``max_connections``); giving both in one mapping is an error. Relative file names in a config
file are resolved against the directory of that file, so a config means the same thing whatever
the working directory.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

import yaml

from .errors import ConfigError, ConfigIssue

__all__ = ["LOG_LEVELS", "AuthConfig", "Config", "ListenerConfig", "MqttConfig",
           "PersistenceConfig", "TopicCheckConfig", "load_config", "parse_config_dict"]

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
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


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated broker configuration; build it with :func:`load_config`."""

    listeners: tuple[ListenerConfig, ...]
    sys_interval: float = 10.0
    auth: AuthConfig = AuthConfig()
    topic_check: TopicCheckConfig = TopicCheckConfig()
    mqtt: MqttConfig = MqttConfig()
    log_level: str = "INFO"
    persistence: PersistenceConfig = PersistenceConfig()
    http: HttpConfig = HttpConfig()
    cluster: ClusterConfig | None = None

    def with_overrides(
        self, host: str | None = None, port: int | None = None, log_level: str | None = None
    ) -> Config:
        """Return a copy with ``host`` applied to every MQTT listener, ``port`` to the first
        one (``port=0``: every listener, the HTTP one included, takes a free port) and a new
        log level.

        These are the CLI's ``--host``/``--port``/``--log-level``. Raises :class:`ConfigError`
        for a port outside 0..65535, an empty host or an unknown log level.
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
        if issues:
            raise ConfigError(issues)
        listeners = tuple(
            replace(lst, host=lst.host if host is None else host,
                    port=lst.port if port is None or (port and i) else port)
            for i, lst in enumerate(self.listeners)
        )
        http = self.http if port != 0 else replace(self.http, port=0)
        return replace(self, listeners=listeners, log_level=level, http=http)


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load and validate a broker configuration.

    ``source`` is a YAML file path, an already-parsed mapping (validated the same way, issues
    carry no line), or ``None`` for the built-in defaults (one tcp listener on 127.0.0.1:1883).
    ``overrides`` is a config-shaped mapping deep-merged over the source before validation
    (mappings merge key by key, any other value replaces), e.g. ``{"mqtt": {"max_qos": 1}}``.

    Raises :class:`ConfigError` listing every problem found.
    """
    filename = base_dir = None
    lines: dict[_KeyPath, int] = {}
    issues: list[ConfigIssue] = []
    raw: Any = source if isinstance(source, Mapping) else {}
    if source is not None and not isinstance(source, Mapping):
        filename = os.fspath(source)
        raw, lines, issues = _read_yaml(filename)
        base_dir = os.path.dirname(os.path.abspath(filename))
    if overrides and isinstance(raw, Mapping | None):
        raw = _merge(raw or {}, overrides, lines, ())
    return _validate(raw, lines, issues, base_dir, filename)


def parse_config_dict(d: Mapping[str, Any]) -> Config:
    """Validate an already-parsed config mapping (amqtt's ``Broker(config_dict)`` style)."""
    return load_config(d)


# --------------------------------------------------------------------------- YAML reading

_KeyPath = tuple[str | int, ...]
_INVALID: Final[Any] = object()  # stands for a value whose problem is already reported
_MAX_NODES: Final = 100_000  # guards against alias expansion ("billion laughs")


def _dotted(path: _KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _read_yaml(filename: str) -> tuple[Any, dict[_KeyPath, int], list[ConfigIssue]]:
    """Parse ``filename`` into plain values, a map key path -> 1-based line, and issues.

    Syntax errors are fatal (there is no tree to check); duplicate and non-string keys are
    reported and checking goes on.
    """
    try:
        with open(filename, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8-sig")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except OSError as exc:
        issue = ConfigIssue("", None, f"cannot read config file: {exc.strerror or exc}")
        raise ConfigError([issue], filename) from None
    except UnicodeDecodeError as exc:
        at = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue("", at, "not valid UTF-8 text")], filename) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot parse"
        if exc.problem and exc.context:
            problem += f" ({exc.context})"
        line = None if mark is None else mark.line + 1
        raise ConfigError([ConfigIssue("", line, f"invalid YAML: {problem}")], filename) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", None, f"invalid YAML: {exc}")], filename) from None
    reader = _YamlReader(filename)
    value = None if root is None else reader.convert(root, ())
    return value, reader.lines, reader.issues


class _YamlReader:
    """Turns composed YAML nodes into Python values, recording lines and duplicate keys."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[_KeyPath, int] = {}
        self.issues: list[ConfigIssue] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()
        self._count = 0

    def _issue(self, path: _KeyPath, node: yaml.Node, problem: str) -> None:
        self.issues.append(ConfigIssue(_dotted(path), node.start_mark.line + 1, problem))

    def convert(self, node: yaml.Node, path: _KeyPath) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            issue = ConfigIssue(_dotted(path), None, "YAML expands to too many values (aliases?)")
            raise ConfigError([issue], self.filename)
        if isinstance(node, yaml.ScalarNode):
            try:
                return self._constructor.construct_object(node, deep=True)
            except yaml.MarkedYAMLError as exc:  # e.g. an unknown !tag
                self._issue(path, node, str(exc.problem))
                return _INVALID
        if id(node) in self._active:
            self._issue(path, node, "recursive YAML alias")
            return _INVALID
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for i, child in enumerate(node.value):
                    self.lines[(*path, i)] = child.start_mark.line + 1
                    items.append(self.convert(child, (*path, i)))
                return items
            return self._mapping(node, path)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.Node, path: _KeyPath) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        explicit: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor"; explicit keys win
                for src in vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]:
                    value = self.convert(src, path)
                    if isinstance(value, dict):
                        merged = {**value, **merged}
                    elif value is not _INVALID:
                        self._issue((*path, "<<"), knode, "a merge key needs a mapping")
                continue
            key, text = self.convert(knode, path), getattr(knode, "value", "?")
            if not isinstance(key, str):
                if key is not _INVALID:
                    self._issue((*path, str(text)), knode, f"key must be a string; YAML reads "
                                f"{text!r} as {_describe(key)} (quote it: '{text}')")
                continue
            if key in first_line:
                self._issue((*path, key), knode,
                            f"duplicate key (first given on line {first_line[key]})")
                continue
            first_line[key] = knode.start_mark.line + 1
            explicit[key] = self.convert(vnode, (*path, key))
        for key, line in first_line.items():
            self.lines[(*path, key)] = line
        return {**merged, **explicit}


def _merge(
    base: Mapping[str, Any], over: Mapping[str, Any], lines: dict[_KeyPath, int], path: _KeyPath
) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``; replaced values lose their line."""
    out = dict(base)
    for key, value in over.items():
        target = key
        if key not in out and isinstance(key, str):
            target = next((k for k in out if isinstance(k, str) and _canon(k) == _canon(key)), key)
        current = out.get(target)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[target] = _merge(current, value, lines, (*path, target))
            continue
        prefix = (*path, target)
        for known in [p for p in lines if p[: len(prefix)] == prefix]:
            del lines[known]
        out.pop(target, None)
        out[key] = value
    return out


# --------------------------------------------------------------------------- validation


class _Bad(Exception):
    """A value is wrong; the message is the problem text."""


_Conv = Callable[["_Validator", Any, _KeyPath], Any]


def _canon(key: str) -> str:
    return key.replace("-", "_")


_KINDS: Final = ((int, "an integer"), (float, "a number"), (str, "a string"),
                  (Mapping, "a mapping"), (list, "a list"))


def _describe(value: Any) -> str:
    """How a wrong value reads in a message: ``a string ('yes')``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()}; YAML reads yes/no/on/off as booleans)"
    kind = next((name for t, name in _KINDS if isinstance(value, t)), type(value).__name__)
    return f"{kind} ({value!r})" if isinstance(value, int | float | str) else kind


def _choices_msg(choices: tuple[str, ...], value: object) -> str:
    return f"must be one of {', '.join(choices)}; got {value!r}"


class _Validator:
    """Walks plain values against the schema, collecting issues with their lines."""

    def __init__(self, lines: Mapping[_KeyPath, int], base_dir: str | None) -> None:
        self.lines = lines
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []

    def issue(self, path: _KeyPath, problem: str) -> None:
        self.issues.append(ConfigIssue(_dotted(path), self.lines.get(path), problem))

    def mapping(self, value: Any, path: _KeyPath) -> dict[str, Any]:
        """``value`` as a str-keyed dict (null is empty); raises :class:`_Bad` otherwise."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _Bad(f"expected a mapping, got {_describe(value)}")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                out[key] = item
            else:
                self.issue((*path, str(key)), f"key must be a string, got {_describe(key)}")
        return out

    def section(
        self,
        value: Any,
        path: _KeyPath,
        fields: Mapping[str, _Conv],
        ignored: frozenset[str] = frozenset(),
        elsewhere: Mapping[str, str] | None = None,
    ) -> dict[str, tuple[Any, _KeyPath]]:
        """Check a mapping's keys; return canonical name -> (converted value or _INVALID, path)."""
        try:
            body = self.mapping(value, path)
        except _Bad as exc:
            self.issue(path, str(exc))
            return {"": (_INVALID, path)}
        out: dict[str, tuple[Any, _KeyPath]] = {}
        seen: dict[str, str] = {}
        for key, item in body.items():
            kpath, canon = (*path, key), _canon(key)
            if canon in seen:
                other = seen[canon]
                where = self.lines.get((*path, other))
                self.issue(kpath, f"same setting as {other!r}"
                           + (f" on line {where}" if where else "") + "; give it once")
                continue
            seen[canon] = key
            if canon in ignored:
                continue
            conv = fields.get(canon)
            if conv is None:
                self.issue(kpath, self._unknown(key, fields, elsewhere or {}))
                out[canon] = (_INVALID, kpath)
                continue
            if item is _INVALID:
                out[canon] = (_INVALID, kpath)
                continue
            try:
                out[canon] = (conv(self, item, kpath), kpath)
            except _Bad as exc:
                self.issue(kpath, str(exc))
                out[canon] = (_INVALID, kpath)
        return out

    @staticmethod
    def _unknown(key: str, fields: Mapping[str, _Conv], elsewhere: Mapping[str, str]) -> str:
        canon = _canon(key)
        if canon in elsewhere:
            return f"unknown key here; it belongs in the {elsewhere[canon]!r} section"
        names = sorted(fields)
        match = difflib.get_close_matches(canon, names, n=1, cutoff=0.6)
        if match:
            hint = match[0].replace("_", "-") if "-" in key else match[0]
            return f"unknown key; did you mean {hint!r}?"
        return f"unknown key (expected one of: {', '.join(names)})"

    def built(self, cls: Callable[..., Any], values: dict[str, tuple[Any, _KeyPath]]) -> Any:
        """``cls(**values)`` unless some value is already reported as invalid."""
        if any(v is _INVALID for v, _ in values.values()):
            return _INVALID
        return cls(**{k: v for k, (v, _) in values.items()})


# ---- value converters: (validator, value, key path) -> converted value, or raise _Bad


def _int(lo: int, hi: int | None = None) -> _Conv:
    def conv(_v: _Validator, value: Any, _p: _KeyPath) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, got {_describe(value)}")
        if value < lo or (hi is not None and value > hi):
            raise _Bad(f"must be at least {lo}, got {value}" if hi is None
                       else f"must be between {lo} and {hi}, got {value}")
        return value

    return conv


def _float(lo: float, *, exclusive: bool = False) -> _Conv:
    def conv(_v: _Validator, value: Any, _p: _KeyPath) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"expected a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise _Bad(f"must be a finite number, got {value}")
        if value < lo or (exclusive and value == lo):
            raise _Bad(f"must be {'greater than' if exclusive else 'at least'} {lo}, got {value}")
        return float(value)

    return conv


def _bool(_v: _Validator, value: Any, _p: _KeyPath) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_describe(value)}")
    return value


def _str(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_describe(value)}")
    return value


_SCRAM_RE = re.compile(r"^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$")


def _scram_users(v: _Validator, value: Any, path: _KeyPath) -> Mapping[str, str]:
    body = v.mapping(value, path)
    out: dict[str, str] = {}
    for user, cred in body.items():
        if not isinstance(cred, str) or not _SCRAM_RE.match(cred):
            v.issue((*path, str(user)), "expected a SCRAM credential "
                    "'SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>' "
                    "(make one with: mqttbroker scram-credential USER)")
            continue
        out[str(user)] = cred
    return MappingProxyType(out)


def _choice(choices: tuple[str, ...], normalize: Callable[[str], str]) -> _Conv:
    def conv(_v: _Validator, value: Any, _p: _KeyPath) -> str:
        if not isinstance(value, str):
            raise _Bad(f"expected a string, got {_describe(value)}")
        norm = normalize(value.strip())
        if norm not in choices:
            raise _Bad(_choices_msg(choices, value))
        return norm

    return conv


def _resolve(v: _Validator, value: Any, kind: str) -> str:
    """A file or folder name; relative names are resolved against the config file's folder."""
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"expected a {kind} name, got {_describe(value)}")
    path = os.path.expanduser(value)
    if v.base_dir is not None and not os.path.isabs(path):
        path = os.path.join(v.base_dir, path)
    return path


def _file(v: _Validator, value: Any, _p: _KeyPath) -> str:
    """A file that must exist (:func:`_resolve`)."""
    path = _resolve(v, value, "file")
    if not os.path.exists(path):
        raise _Bad(f"file not found: {path}")
    if not os.path.isfile(path):
        raise _Bad(f"not a regular file: {path}")
    return path


def _folder(v: _Validator, value: Any, _p: _KeyPath) -> str:
    """A folder that must exist (``capath``)."""
    path = _resolve(v, value, "folder")
    if not os.path.isdir(path):
        raise _Bad(f"folder not found: {path}")
    return path


def _tls_version(text: str) -> str:
    """Mosquitto's ``tlsv1.2`` spelling; ``1.2``, ``TLSv1.2`` and ``tls1.2`` mean the same."""
    text = text.lower().replace(" ", "")
    if text.startswith("tls1"):
        text = "tlsv" + text[3:]
    return text if text.startswith("tlsv") else "tlsv" + text


def _path(v: _Validator, value: Any, _p: _KeyPath) -> str:
    """A file to create or open; relative names are resolved against the config file's
    folder. Its folder is made when the broker starts."""
    path = _resolve(v, value, "file")
    if os.path.isdir(path):
        raise _Bad(f"is a directory, expected a file name: {path}")
    return os.path.normpath(path)


def _url_path(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(
            c in value for c in " ?#"):
        raise _Bad(f"expected an HTTP path starting with '/', e.g. '/mqtt', got {value!r}")
    return value


def _token(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str) or len(value.strip()) < 8:
        raise _Bad("expected a token of at least 8 characters (e.g. the output of "
                   "`python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return value.strip()


_DIGITS: Final = re.compile(r"[0-9]+")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9._-]+")


def _bind(_v: _Validator, value: Any, _p: _KeyPath) -> tuple[str, int]:
    """``host:port``, ``[v6addr]:port``, ``:port`` or amqtt's bare ``port`` (all interfaces)."""
    if not isinstance(value, str):
        hint = f" (quote it: ':{value}')" if isinstance(value, int) else ""
        raise _Bad(f"expected 'host:port' as a string, got {_describe(value)}{hint}")
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _Bad(f"missing ']' after the IPv6 address in {value!r} (e.g. '[::1]:1883')")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Bad(f"{host!r} is not an IPv6 address") from None
        if not rest.startswith(":") or not rest[1:]:
            raise _Bad(f"missing port in {value!r}: expected '[host]:port', e.g. '[::1]:1883'")
        port_text = rest[1:]
    elif _DIGITS.fullmatch(text):
        host, port_text = "0.0.0.0", text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text:
            raise _Bad(f"missing port in {value!r}: expected 'host:port', e.g. '127.0.0.1:1883'")
        if ":" in host:
            raise _Bad(f"write IPv6 addresses in brackets, e.g. '[{host}]:{port_text}'")
        if not host:
            host = "0.0.0.0"  # ":1883" listens on every IPv4 interface
        elif not _HOSTNAME.fullmatch(host):
            raise _Bad(f"invalid host {host!r}")
    if not _DIGITS.fullmatch(port_text):
        raise _Bad(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise _Bad(f"port {port} is out of range 0..65535")
    return host, port


def _max_connections(_v: _Validator, value: Any, _p: _KeyPath) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected an integer, got {_describe(value)}")
    return max(value, 0)  # hbmqtt uses -1 for "unlimited"


def _topic_filter_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a topic filter string, got {_describe(value)}"
    if not value:
        return "empty topic filter"  # [MQTT-4.7.3-1]
    if "\0" in value:
        return "topic filter contains a NUL character"  # [MQTT-4.7.3-2]
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return f"{value!r}: '#' must be a whole level and the last one"  # [MQTT-4.7.1-2]
        if "+" in level and level != "+":
            return f"{value!r}: '+' must be a whole level"  # [MQTT-4.7.1-3]
    return None


def _acl(v: _Validator, value: Any, path: _KeyPath) -> Mapping[str, tuple[str, ...]]:
    """username -> list of topic filters (a username with no value is allowed nothing)."""
    out: dict[str, tuple[str, ...]] = {}
    bad = False
    for user, filters in v.mapping(value, path).items():
        upath = (*path, user)
        if filters is None:
            out[user] = ()
            continue
        if not isinstance(filters, list):
            v.issue(upath, f"expected a list of topic filters, got {_describe(filters)}")
            bad = True
            continue
        for i, item in enumerate(filters):
            problem = None if item is _INVALID else _topic_filter_problem(item)
            if problem:
                v.issue((*upath, i), problem)
            bad = bad or item is _INVALID or problem is not None
        out[user] = tuple(filters)
    return _INVALID if bad else MappingProxyType(out)


def _password_file(v: _Validator, value: Any, path: _KeyPath) -> str:
    """A password file (Mosquitto's or hbmqtt's format), read now so that a bad line is
    reported with the config (FILE:LINE of the password file in the problem)."""
    from .passwd import load_password_file

    return _parsed_file(v, value, path, load_password_file)


def _acl_file(v: _Validator, value: Any, path: _KeyPath) -> str:
    """A Mosquitto ACL file, parsed now like :func:`_password_file`."""
    from .acl import load_acl_file

    return _parsed_file(v, value, path, load_acl_file)


def _parsed_file(v: _Validator, value: Any, path: _KeyPath,
                 load: Callable[[str], object]) -> str:
    name = _file(v, value, path)
    try:
        load(name)
    except ConfigError as exc:
        _file_issues(v, path, exc)
        return _INVALID  # type: ignore[no-any-return]
    return name


def _file_issues(v: _Validator, path: _KeyPath, exc: ConfigError) -> None:
    for issue in exc.issues:
        where = f"{exc.filename}:{issue.line}" if issue.line else f"{exc.filename}"
        v.issue(path, f"{where}: {issue.problem}")


def _refusal_code(_v: _Validator, value: Any, _p: _KeyPath) -> int:
    """0x80 or 0x87 (YAML reads 0x80 as the number 128; "0x80" as a string works too)."""
    if isinstance(value, str) and value.strip().lower() in ("0x80", "0x87"):
        return int(value.strip(), 16)
    if isinstance(value, int) and not isinstance(value, bool) and value in (0x80, 0x87):
        return value
    raise _Bad(f"must be 0x80 (Unspecified error) or 0x87 (Not authorized), got {value!r}")


_LISTENER_FIELDS: Final[Mapping[str, _Conv]] = {
    "type": _choice(("tcp", "ws"), str.lower),
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
}
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
_NODE_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _redis_url(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise _Bad(f"expected a Redis URL like 'redis://127.0.0.1:6379/0', got {value!r}")
    return value


def _node_name(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    if not isinstance(value, str) or not _NODE_NAME.fullmatch(value):
        raise _Bad("expected a node name of 1 to 64 letters, digits, '.', '_' or '-', "
                   f"got {value!r}")
    return value


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
    seen: dict[tuple[str, int], str] = {}
    for lst in result:
        addr = (lst.host, lst.port)
        if lst.port and addr in seen:
            where = (*path, lst.name, "bind") if "bind" in parsed[lst.name] else (*path, lst.name)
            v.issue(where, f"listeners {seen[addr]!r} and {lst.name!r} both bind "
                    f"{lst.host}:{lst.port}; give each listener its own bind")
        seen.setdefault(addr, lst.name)
    if not result and not failed:
        v.issue(path, "no listener to start: 'default' has no bind and no other listener is given")
    return tuple(result)


_TOP_FIELDS: Final[Mapping[str, _Conv]] = {
    "listeners": _listeners,
    "sys_interval": _float(0),
    "auth": _subsection(AuthConfig, _AUTH_FIELDS),
    "topic_check": _subsection(TopicCheckConfig, _TOPIC_CHECK_FIELDS),
    "mqtt": _subsection(MqttConfig, _MQTT_FIELDS),
    "log_level": _choice(LOG_LEVELS, str.upper),
    "persistence": _subsection(PersistenceConfig, _PERSISTENCE_FIELDS),
    "http": _http,
    "cluster": _cluster,
}
_TOP_IGNORED: Final = frozenset({"plugins", "timeout_disconnect_delay"})
_ELSEWHERE: Final[Mapping[str, str]] = {
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
