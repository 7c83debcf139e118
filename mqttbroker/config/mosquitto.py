"""``mqttbroker convert-mosquitto``: a mosquitto.conf as our YAML configuration.

Carries over the listeners (with TLS and WebSocket options), ``allow_anonymous``,
``password_file``, ``acl_file``, persistence, the limits that have an equivalent, ``sys_interval``
and every ``connection`` (bridge) block. Every other line is named, with its number, in the
output's opening comments: nothing is left out silently. Pure: text in, a dict and notes out.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["convert"]

_MQTT_LIMITS = {  # Mosquitto option -> mqtt.<key>
    "max_inflight_messages": "max_inflight_messages",
    "max_queued_messages": "max_queued_messages",
    "max_queued_bytes": "max_queued_bytes",
    "message_size_limit": "message_size_limit",
    "max_keepalive": "max_keepalive",
    "max_packet_size": "max_packet_size",
    "max_qos": "max_qos",
}
_LISTENER_KEYS = {  # per-listener Mosquitto option -> listeners.<name>.<key>
    "certfile": "certfile", "keyfile": "keyfile", "cafile": "cafile", "capath": "capath",
    "require_certificate": "require_certificate",
    "use_identity_as_username": "use_identity_as_username",
    "max_connections": "max_connections",
}
_BRIDGE_KEYS = {  # bridge option -> bridges.<name>.<key>
    "remote_clientid": "client_id", "clientid": "client_id",
    "remote_username": "username", "username": "username",
    "remote_password": "password", "password": "password",
    "cleansession": "clean_session", "keepalive_interval": "keepalive",
    "try_private": "try_private", "notifications": "notifications",
    "round_robin": "round_robin",
}
_PROTOCOLS = {"mqttv31": "mqttv31", "mqttv311": "mqttv311", "mqttv50": "mqttv5",
              "mqttv5": "mqttv5"}
_BOOLS = {"true": True, "false": False}


def _value(text: str) -> Any:
    """A Mosquitto value as YAML would have it: booleans and integers typed."""
    low = text.lower()
    if low in _BOOLS:
        return _BOOLS[low]
    try:
        return int(text)
    except ValueError:
        return text


def _address(text: str) -> str:
    """``host[:port]`` with Mosquitto's default port 1883."""
    if text.startswith("["):
        return text if "]:" in text else f"{text}:1883"
    return text if text.count(":") == 1 else f"{text}:1883"


def convert(text: str) -> tuple[dict[str, Any], list[str]]:
    """Our configuration (a dict, YAML's shape) for mosquitto.conf ``text``, and a note per
    line it cannot carry over (``line N: ...``)."""
    config: dict[str, Any] = {}
    notes: list[str] = []
    listeners: dict[str, dict[str, Any]] = {}
    bridges: dict[str, dict[str, Any]] = {}
    listener: dict[str, Any] | None = None
    bridge: dict[str, Any] | None = None
    persistence: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        rest = rest.strip()
        args = rest.split()

        def skip(why: str, number: int = number, line: str = line) -> None:
            notes.append(f"line {number}: {line!r}: {why}")

        if key == "connection":
            bridge = bridges[rest] = {"topics": []}
            listener = None
        elif bridge is not None and key in ("address", "addresses"):
            bridge["addresses"] = [_address(a) for a in args]
        elif bridge is not None and key == "topic":
            _topic(bridge, args, skip)
        elif bridge is not None and key == "bridge_protocol_version":
            if rest in _PROTOCOLS:
                bridge["protocol"] = _PROTOCOLS[rest]
            else:
                skip("unknown protocol version")
        elif bridge is not None and key == "restart_timeout":
            bridge["restart_timeout"] = [float(a) for a in args[:2]]
        elif bridge is not None and key in ("bridge_cafile", "bridge_certfile", "bridge_keyfile",
                                            "bridge_insecure"):
            bridge.setdefault("tls", {})[key.removeprefix("bridge_")] = _value(rest)
        elif bridge is not None and key in _BRIDGE_KEYS:
            bridge[_BRIDGE_KEYS[key]] = _value(rest)
        elif bridge is not None:
            skip("a bridge option with no equivalent here (docs/bridges.md)")
        elif key == "listener":
            name = "default" if not listeners else f"listener{len(listeners) + 1}"
            host = args[1] if len(args) > 1 else "0.0.0.0"
            listener = listeners[name] = {"bind": f"{host}:{args[0]}"}
        elif key == "port" and listener is None:
            listener = listeners.setdefault("default", {})
            listener["bind"] = f"0.0.0.0:{rest}"
        elif key == "protocol" and listener is not None:
            if rest == "websockets":
                listener["type"] = "ws"
            elif rest != "mqtt":
                skip("no such listener protocol here")
        elif listener is not None and key in _LISTENER_KEYS:
            if key in ("certfile", "keyfile"):
                listener["ssl"] = True
            listener[_LISTENER_KEYS[key]] = _value(rest)
        elif key == "allow_anonymous":
            config.setdefault("auth", {})["allow_anonymous"] = _value(rest)
        elif key in ("password_file", "acl_file"):
            config.setdefault("auth", {})[key] = rest
        elif key == "persistence":
            if _value(rest) is True:
                persistence["backend"] = "sqlite"
        elif key in ("persistence_location", "persistence_file"):
            persistence[key] = rest
        elif key in _MQTT_LIMITS:
            config.setdefault("mqtt", {})[_MQTT_LIMITS[key]] = _value(rest)
        elif key == "retain_available":
            config.setdefault("mqtt", {})["retain_available"] = _value(rest)
        elif key == "sys_interval":
            config["sys_interval"] = _value(rest)
        else:
            skip("no equivalent here: left out")
    if listeners:
        config["listeners"] = listeners
    if persistence.get("backend") == "sqlite":
        folder = persistence.get("persistence_location", "")
        name = persistence.get("persistence_file", "mosquitto.db")
        # (a file of our own beside Mosquitto's: its format is not ours)
        config["persistence"] = {"backend": "sqlite", "path": os.path.join(
            folder, os.path.splitext(name)[0] + "-mqttbroker.db")}
    if bridges:
        # Mosquitto's max_inflight_messages bounds its bridges' outgoing window too (0: none)
        inflight = config.get("mqtt", {}).get("max_inflight_messages")
        if isinstance(inflight, int) and inflight >= 0:
            for b in bridges.values():
                b["max_inflight"] = min(inflight, 65535) or 65535
        config["bridges"] = bridges
    return config, notes


def _topic(bridge: dict[str, Any], args: list[str], skip: Any) -> None:
    """``topic pattern [direction [qos [local-prefix [remote-prefix]]]]``."""
    rule: dict[str, Any] = {"pattern": args[0] if args else ""}
    if len(args) > 1:
        rule["direction"] = args[1]
    if len(args) > 2:
        rule["qos"] = int(args[2])
    if len(args) > 3:
        rule["local_prefix"] = "" if args[3] == '""' else args[3]
    if len(args) > 4:
        rule["remote_prefix"] = "" if args[4] == '""' else args[4]
    if rule["pattern"] in ("", '""'):
        skip("an empty pattern (one topic mapped by its prefixes) is not supported")
        return
    bridge["topics"].append(rule)
