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
* ``bridges``: name -> a bridge to another broker, Mosquitto's ``connection`` options under
  our names (``addresses``, ``protocol``, ``client_id``, ``topics``, ``tls``, ``queue``, ...;
  :mod:`mqttbroker.config.bridges` maps each to its Mosquitto option). Validated; the bridge
  runtime is not built yet (docs/bridges.md).
* amqtt's ``plugins`` (top level, in ``auth`` and in ``topic-check``) and
  ``timeout-disconnect-delay`` are accepted and **ignored**: our authentication and topic checks
  are configured by the keys above, not by plugin lists.

Hyphen and underscore spellings of a key are the same key everywhere (``max-connections`` ==
``max_connections``); giving both in one mapping is an error. Relative file names in a config
file are resolved against the directory of that file, so a config means the same thing whatever
the working directory.

The package: ``model`` (the frozen dataclasses), ``yaml_reader`` (YAML with lines),
``convert`` (the validator and the value converters), ``sections`` (the schema and
the checks across keys), ``bridges`` (the bridges section: its model and checks) and
``extras`` (a part the config asks for whose optional libraries are not installed); this
module holds the entry points.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigIssue
from .bridges import BridgeConfig, BridgeQueue, BridgeTLS, BridgeTopic
from .extras import check_extras
from .model import (
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
from .sections import _validate
from .yaml_reader import _KeyPath, _merge, _read_yaml

__all__ = ["LOG_LEVELS", "AuthConfig", "BridgeConfig", "BridgeQueue", "BridgeTLS", "BridgeTopic",
           "ClusterConfig", "Config", "HttpConfig", "ListenerConfig", "MqttConfig",
           "PersistenceConfig", "PluginSpec", "TopicCheckConfig", "load_config",
           "parse_config_dict"]


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

    Raises :class:`ConfigError` listing every problem found; once the config is valid, one
    naming each part it asks for whose extra is not installed (:mod:`.extras`).
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
    config = _validate(raw, lines, issues, base_dir, filename)
    check_extras(config, lines, filename)  # e.g. an http section without mqttbroker[web]
    return config


def parse_config_dict(d: Mapping[str, Any]) -> Config:
    """Validate an already-parsed config mapping (amqtt's ``Broker(config_dict)`` style)."""
    return load_config(d)
