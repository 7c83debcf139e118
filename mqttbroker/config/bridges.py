"""The ``bridges`` section: Mosquitto's bridge (``connection``) options under our names.

Each entry under ``bridges`` is one bridge, named by its key; its key names the state topic
``$SYS/broker/connection/<name>/state`` and the bridge in logs, metrics and the admin API, so a
name is 1 to 64 letters, digits, ``.``, ``_`` or ``-``. This module holds the frozen model
(:class:`BridgeConfig` and its parts), the field tables and the checks across keys; the
section is wired into the schema by :mod:`mqttbroker.config.sections`; the bridge
runtime is mqttbroker/bridge/ (docs/bridges.md).

Our key -> Mosquitto's option (mosquitto.conf(5), "Configuring Bridges"):

=================  ===============================================  ========================
key                Mosquitto                                        default
=================  ===============================================  ========================
(the entry's key)  ``connection <name>``                            --
addresses          ``address`` / ``addresses`` (host[:port] ...)    -- (required)
round_robin        ``round_robin``                                  false
protocol           ``bridge_protocol_version`` (mqttv50 -> mqttv5)  mqttv311
client_id          ``remote_clientid`` (was ``clientid``)           ``<hostname>.<name>``
username           ``remote_username`` (was ``username``)           none
password           ``remote_password`` (was ``password``)           none
password_file      (ours: the password, read from a file)           none
clean_session      ``cleansession``                                 false
keepalive          ``keepalive_interval``                           60
max_inflight       ``max_inflight_messages`` (global in Mosquitto)  20 (3.x); 1,000 (5.0)
try_private        ``try_private``                                  true
notifications      ``notifications``                                true
restart_timeout    ``restart_timeout base cap`` (or one value)      [5, 60] (Mosquitto: 5 30)
tls.cafile         ``bridge_cafile``                                none (system CAs)
tls.certfile       ``bridge_certfile``                              none
tls.keyfile        ``bridge_keyfile``                               none
tls.insecure       ``bridge_insecure``                              false
topics[]           ``topic pattern direction qos local remote``     -- (at least one)
queue.max_messages ``max_queued_messages`` (global in Mosquitto)    1,000,000
queue.max_bytes    ``max_queued_bytes`` (global in Mosquitto)       1 GiB
queue.full_policy  (Mosquitto always drops the new message)         drop_oldest
=================  ===============================================  ========================
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import ConfigError, ConfigIssue, read_text_file
from .convert import (
    _DIGITS,
    _Bad,
    _bind,
    _bool,
    _choice,
    _Conv,
    _file,
    _file_issues,
    _float,
    _int,
    _topic_filter_problem,
    _Validator,
)
from .yaml_reader import _INVALID, _canon, _describe, _dotted, _KeyPath

PROTOCOLS: Final = ("mqttv31", "mqttv311", "mqttv5")
DIRECTIONS: Final = ("in", "out", "both")
FULL_POLICIES: Final = ("drop_oldest", "drop_new")
_MAX_STRING: Final = 65_535  # bytes in an MQTT UTF-8 string [MQTT-1.5.3]


@dataclass(frozen=True, slots=True)
class BridgeTopic:
    """One ``topics`` entry: Mosquitto's ``topic pattern [direction [qos [local remote]]]``.

    A local topic ``local_prefix + X`` matching ``local_prefix + pattern`` is sent to the
    remote as ``remote_prefix + X`` (direction out), and the other way for direction in.
    """

    pattern: str  # a topic filter, wildcards allowed
    direction: str = "out"  # in (remote -> us), out (us -> remote) or both
    qos: int = 0  # the QoS of the subscription made for this pattern (Mosquitto's qos-level)
    local_prefix: str = ""  # no wildcards: a prefix only adds topic levels (Mosquitto's rule)
    remote_prefix: str = ""


@dataclass(frozen=True, slots=True)
class BridgeTLS:
    """``tls``: connect to the remote over TLS (given, even as ``{}``); Mosquitto's
    ``bridge_cafile``, ``bridge_certfile``, ``bridge_keyfile`` and ``bridge_insecure``."""

    # the CAs the remote's certificate is checked against; none: the system's CAs
    cafile: str | None = None
    certfile: str | None = None  # our client certificate, with its keyfile
    keyfile: str | None = None
    insecure: bool = False  # true: do not check the remote's host name against its certificate


@dataclass(frozen=True, slots=True)
class BridgeQueue:
    """``queue``: the bridge's backlog of outgoing messages, bounded by count and bytes."""

    max_messages: int = 1_000_000
    max_bytes: int = 1_073_741_824  # 1 GiB of payload
    full_policy: str = "drop_oldest"  # or drop_new (Mosquitto's only behaviour)


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """One entry of the ``bridges`` section (Mosquitto's ``connection`` block)."""

    name: str
    addresses: tuple[tuple[str, int], ...]  # (host, port), tried in order
    topics: tuple[BridgeTopic, ...]
    client_id: str  # given, or "<hostname>.<name>" like Mosquitto
    round_robin: bool = False  # false: back to the first address; true: rotate through them
    protocol: str = "mqttv311"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None  # a file holding the password on one line
    clean_session: bool = False
    keepalive: int = 60
    # QoS 1/2 messages in flight to the remote at most (a 5.0 remote's Receive Maximum lowers
    # it). None: 1,000 for MQTT 5, 20 for a 3.x remote, which cannot announce its limit
    # (Mosquitto's max_inflight_messages: a Mosquitto remote drops what comes beyond it, and a
    # 3.x PUBACK cannot say so)
    max_inflight: int | None = None
    # 3.x: CONNECT with protocol level | 0x80 (the remote knows us for a bridge: no loops);
    # 5.0: subscribe with No Local and Retain As Published
    try_private: bool = True
    notifications: bool = True  # retained 1/0 on state_topic, here and at the remote
    # seconds before reconnecting: jittered back-off from base up to cap (Mosquitto's
    # "decorrelated jitter"); base == cap is Mosquitto's constant restart_timeout
    restart_timeout: tuple[float, float] = (5.0, 60.0)
    tls: BridgeTLS | None = None  # None: plain TCP
    queue: BridgeQueue = BridgeQueue()

    @property
    def state_topic(self) -> str:
        """Where the bridge's state is published (retained ``1`` connected, ``0`` not)."""
        return f"$SYS/broker/connection/{self.name}/state"


def default_client_id(name: str) -> str:
    """Mosquitto's default ``remote_clientid``: ``<hostname>.<connection name>``."""
    return f"{socket.gethostname()}.{name}"


# ---- converters for the bridge keys: (validator, value, key path) -> value, or raise _Bad

_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _address(_v: _Validator, value: Any, path: _KeyPath) -> tuple[str, int]:
    """``host:port`` or ``[v6addr]:port`` of a remote broker (a host and a port are needed)."""
    if not isinstance(value, str):
        raise _Bad(f"expected 'host:port' as a string, got {_describe(value)}")
    text = value.strip()
    if _DIGITS.fullmatch(text) or (":" in text and not text.rpartition(":")[0]):
        raise _Bad(f"missing host in {value!r}: expected 'host:port', e.g. 'cloud.example:8883'")
    port_text = text.rpartition(":")[2]
    if _DIGITS.fullmatch(port_text) and not 1 <= int(port_text) <= 65535:
        raise _Bad(f"port {int(port_text)} is out of range 1..65535")
    return _bind(_v, value, path)


def _addresses(v: _Validator, value: Any, path: _KeyPath) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list):
        hint = f" (write [{value!r}])" if isinstance(value, str) else ""
        raise _Bad(f"expected a list of 'host:port', got {_describe(value)}{hint}")
    if not value:
        raise _Bad("expected at least one 'host:port'")
    out: list[tuple[str, int]] = []
    seen: dict[tuple[str, int], int] = {}
    bad = False
    for i, item in enumerate(value):
        ipath = (*path, i)
        try:
            addr = _address(v, item, ipath) if item is not _INVALID else None
        except _Bad as exc:
            v.issue(ipath, str(exc))
            addr = None
        if addr is not None and addr in seen:
            v.issue(ipath, f"{item!r} is already given as item {seen[addr]}")
            addr = None
        if addr is None:
            bad = True
            continue
        seen[addr] = i
        out.append(addr)
    return _INVALID if bad else tuple(out)


def _mqtt_string(what: str) -> Callable[[_Validator, Any, _KeyPath], str]:
    """A string that fits an MQTT UTF-8 string field: no U+0000 [MQTT-1.5.3-2], at most
    65,535 bytes [MQTT-1.5.3]."""

    def conv(_v: _Validator, value: Any, _p: _KeyPath) -> str:
        if not isinstance(value, str):
            hint = f" (quote it: '{value}')" if isinstance(value, int | float) else ""
            raise _Bad(f"expected {what} as a string, got {_describe(value)}{hint}")
        if "\0" in value:
            raise _Bad(f"{what} contains a NUL character")  # [MQTT-1.5.3-2]
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise _Bad(f"{what} is not valid UTF-8 text") from None
        if size > _MAX_STRING:
            raise _Bad(f"{what} is {size} bytes long; MQTT allows at most {_MAX_STRING}")
        return value

    return conv


_client_id_string = _mqtt_string("a client id")


def _client_id(v: _Validator, value: Any, path: _KeyPath) -> str:
    text = _client_id_string(v, value, path)
    if not text:
        # [MQTT-3.1.3-7]: an empty id needs a clean session; a bridge needs a stable id
        raise _Bad("must not be empty: the remote keeps the bridge's session under it "
                   "(leave client_id out for '<hostname>.<bridge name>')")
    return text


def _password_file(v: _Validator, value: Any, path: _KeyPath) -> str:
    """A file holding the password on one line (a trailing line end is not part of it).
    Read now, so that an unreadable or empty file is reported with the config."""
    name = _file(v, value, path)
    try:
        text = read_text_file(name, _dotted(path))
    except ConfigError as exc:
        _file_issues(v, path, exc)
        return _INVALID  # type: ignore[no-any-return]
    secret = text.rstrip("\r\n")
    if not secret:
        raise _Bad(f"{name} is empty; it must hold the bridge's password on one line")
    if "\n" in secret or "\r" in secret:
        raise _Bad(f"{name} has more than one line; it must hold the password on one line")
    return name


_positive = _float(0, exclusive=True)


def _restart_timeout(v: _Validator, value: Any, path: _KeyPath) -> tuple[float, float]:
    """``[base, cap]`` seconds (jittered back-off) or one number (Mosquitto's constant delay,
    kept as ``(n, n)``)."""
    items = value if isinstance(value, list) else [value]
    if not 1 <= len(items) <= 2:
        raise _Bad("expected [base, cap] in seconds, e.g. [5, 60], or one number for a "
                   f"constant delay; got a list of {len(items)}")
    base, cap = (_positive(v, item, path) for item in (items[0], items[-1]))
    if cap < base:
        raise _Bad(f"the cap ({cap:g} s) must not be lower than the base ({base:g} s)")
    return base, cap


def _pattern(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    problem = _topic_filter_problem(value)
    if problem == "empty topic filter":
        problem += (" (Mosquitto's '\"\"' pattern, which maps one topic to another by the "
                    "prefixes alone, is not supported)")
    if problem:
        raise _Bad(problem)
    pattern = str(value)
    if len(pattern.encode("utf-8")) > _MAX_STRING:
        raise _Bad(f"topic filter is longer than {_MAX_STRING} bytes")
    return pattern


def _prefix(_v: _Validator, value: Any, _p: _KeyPath) -> str:
    """Mosquitto checks a prefix as a topic *name*: no wildcards."""
    if not isinstance(value, str):
        raise _Bad(f"expected a topic prefix string ('' for none), got {_describe(value)}")
    if "+" in value or "#" in value:
        raise _Bad(f"{value!r}: a prefix must not contain the wildcards '+' or '#'")
    if "\0" in value:
        raise _Bad("prefix contains a NUL character")  # [MQTT-4.7.3-2]
    return value


def _lower_canon(text: str) -> str:
    return _canon(text.lower())


_TOPIC_FIELDS: Final[Mapping[str, _Conv]] = {
    "pattern": _pattern,
    "direction": _choice(DIRECTIONS, str.lower),
    "qos": _int(0, 2),
    "local_prefix": _prefix,
    "remote_prefix": _prefix,
}
_TLS_FIELDS: Final[Mapping[str, _Conv]] = {
    "cafile": _file, "certfile": _file, "keyfile": _file, "insecure": _bool}
_QUEUE_FIELDS: Final[Mapping[str, _Conv]] = {
    "max_messages": _int(1),
    "max_bytes": _int(1),
    "full_policy": _choice(FULL_POLICIES, _lower_canon),
}


def _missing(v: _Validator, where: _KeyPath, key: str, problem: str) -> None:
    """A required key that is not there: named by its would-be path, on the line of the
    mapping that lacks it."""
    v.issues.append(ConfigIssue(_dotted((*where, key)), v.lines.get(where), problem))


def _topic(v: _Validator, value: Any, path: _KeyPath) -> BridgeTopic:
    got = v.section(value, path, _TOPIC_FIELDS)
    if "pattern" not in got and "" not in got:
        _missing(v, path, "pattern", "missing: each topic needs a pattern, e.g. 'sensors/#'")
        return _INVALID  # type: ignore[no-any-return]
    pattern = got["pattern"][0] if "pattern" in got else _INVALID
    ok = True
    for key in ("local_prefix", "remote_prefix"):  # Mosquitto: prefix + pattern is a filter
        prefix, kpath = got.get(key, ("", path))
        if not prefix or prefix is _INVALID or pattern is _INVALID:
            continue
        full = prefix + pattern
        problem = _topic_filter_problem(full)
        if problem is None and len(full.encode("utf-8")) > _MAX_STRING:
            problem = f"longer than {_MAX_STRING} bytes"
        if problem:
            hint = "" if prefix.endswith("/") else " (end the prefix with '/')"
            v.issue(kpath, f"prefix + pattern is not a valid topic filter: {problem}{hint}")
            ok = False
    topic = v.built(BridgeTopic, got) if ok else _INVALID
    return topic  # type: ignore[no-any-return]


def _topics(v: _Validator, value: Any, path: _KeyPath) -> tuple[BridgeTopic, ...]:
    if not isinstance(value, list):
        raise _Bad(f"expected a list of topics ({{pattern: ..., direction: ..., qos: ...}}), "
                   f"got {_describe(value)}")
    if not value:
        raise _Bad("expected at least one topic, e.g. {pattern: 'sensors/#', direction: out}")
    topics = [_topic(v, item, (*path, i)) for i, item in enumerate(value)]
    if any(t is _INVALID for t in topics):
        return _INVALID  # type: ignore[no-any-return]
    return tuple(topics)


def _tls(v: _Validator, value: Any, path: _KeyPath) -> BridgeTLS:
    if not isinstance(value, Mapping):
        raise _Bad(f"expected a mapping, e.g. {{cafile: ca.pem}} ({{}}: the system's CA "
                   f"certificates), got {_describe(value)}; leave tls out for plain TCP")
    got = v.section(value, path, _TLS_FIELDS)
    tls = v.built(BridgeTLS, got)
    if tls is not _INVALID and bool(tls.certfile) != bool(tls.keyfile):
        given, lacking = ("certfile", "keyfile") if tls.certfile else ("keyfile", "certfile")
        v.issue(got[given][1], f"{given} needs {lacking}: give the client certificate and "
                "its private key together")
        return _INVALID  # type: ignore[no-any-return]
    return tls  # type: ignore[no-any-return]


def _queue(v: _Validator, value: Any, path: _KeyPath) -> BridgeQueue:
    queue = v.built(BridgeQueue, v.section(value, path, _QUEUE_FIELDS))
    return queue  # type: ignore[no-any-return]


_BRIDGE_FIELDS: Final[Mapping[str, _Conv]] = {
    "addresses": _addresses,
    "round_robin": _bool,
    "protocol": _choice(PROTOCOLS, lambda s: "mqttv5" if s.lower() == "mqttv50" else s.lower()),
    "client_id": _client_id,
    "username": _mqtt_string("a user name"),
    "password": _mqtt_string("a password"),
    "password_file": _password_file,
    "clean_session": _bool,
    "keepalive": _int(5, 65535),  # Mosquitto raises a value under 5 to 5; we say so
    "max_inflight": _int(1, 65535),
    "try_private": _bool,
    "notifications": _bool,
    "restart_timeout": _restart_timeout,
    "tls": _tls,
    "topics": _topics,
    "queue": _queue,
}


def _bridge(v: _Validator, name: str, value: Any, path: _KeyPath) -> BridgeConfig | None:
    """One bridge, or None when something is reported."""
    got = v.section(value, path, _BRIDGE_FIELDS)
    if "" in got:  # not a mapping: already reported
        return None
    ok = True
    for key, example in (("addresses", "addresses: ['cloud.example:8883']"),
                         ("topics", "topics: [{pattern: 'sensors/#', direction: out}]")):
        if key not in got:
            _missing(v, path, key, f"missing: a bridge needs {key}, e.g. {example}")
            ok = False
    values = {k: val for k, (val, _) in got.items()}
    if any(val is _INVALID for val in values.values()) or not ok:
        return None
    secret = next((k for k in ("password_file", "password") if k in values), None)
    if "password" in values and "password_file" in values:
        v.issue(got["password_file"][1], "give password or password_file, not both")
        return None
    if secret and "username" not in values and values.get("protocol") != "mqttv5":
        v.issue(got[secret][1], "a password needs a username in MQTT 3.1 and 3.1.1 "
                "[MQTT-3.1.2-22]; give username (or protocol: mqttv5)")
        return None
    values.setdefault("client_id", default_client_id(name))
    return BridgeConfig(name=name, **values)


def _bridges(v: _Validator, value: Any, path: _KeyPath) -> tuple[BridgeConfig, ...]:
    """``bridges``: name -> bridge. Names are unique (YAML reports a repeated key) and each
    one is safe as a topic level; two bridges must not meet at one remote under one client
    id (the remote would keep disconnecting one for the other)."""
    result: list[BridgeConfig] = []
    for name, item in v.mapping(value, path).items():
        bpath = (*path, name)
        if not _NAME.fullmatch(name):
            v.issue(bpath, "a bridge name is 1 to 64 letters, digits, '.', '_' or '-' (it is a "
                    f"level of $SYS/broker/connection/<name>/state); got {name!r}")
        bridge = _bridge(v, name, item, bpath)
        if bridge is not None and _NAME.fullmatch(name):
            result.append(bridge)
    seen: dict[tuple[str, tuple[str, int]], str] = {}
    for bridge in result:
        for addr in bridge.addresses:
            other = seen.setdefault((bridge.client_id, addr), bridge.name)
            if other != bridge.name:
                bpath = (*path, bridge.name)
                key = next((k for k in v.mapping(value, path)[bridge.name]
                            if _canon(k) == "client_id"), None)
                host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
                v.issue(bpath if key is None else (*bpath, key),
                        f"bridges {other!r} and {bridge.name!r} both connect to "
                        f"{host}:{addr[1]} as client id {bridge.client_id!r}; the remote "
                        "would disconnect one for the other: give each its own client_id")
                break
    return tuple(result)
