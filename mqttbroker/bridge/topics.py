"""Topic mapping of a bridge: Mosquitto's ``topic pattern direction qos local-prefix remote-prefix``.

Pure functions of the configured rules. For a rule with pattern ``P``, local prefix ``L`` and
remote prefix ``R``: a local message on ``L + X`` where ``X`` matches ``P`` goes to the remote
as ``R + X`` (direction ``out``), and a remote message on ``R + X`` comes in as ``L + X``
(direction ``in``); ``both`` does both. The first rule that matches decides, as in Mosquitto.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config.bridges import BridgeTopic
from ..protocol.topics import topic_matches


def local_filters(rules: Sequence[BridgeTopic]) -> list[tuple[str, int]]:
    """The local subscriptions a bridge makes: what goes out (``L + P`` at the rule's QoS)."""
    return [(r.local_prefix + r.pattern, r.qos) for r in rules if r.direction in ("out", "both")]


def remote_filters(rules: Sequence[BridgeTopic]) -> list[tuple[str, int]]:
    """The subscriptions a bridge makes at the remote: what comes in (``R + P``)."""
    return [(r.remote_prefix + r.pattern, r.qos) for r in rules if r.direction in ("in", "both")]


def outbound(rules: Sequence[BridgeTopic], topic: str) -> tuple[str, int] | None:
    """The remote topic and the rule's QoS for local ``topic``, or None: not bridged out."""
    for r in rules:
        if r.direction == "in" or not topic.startswith(r.local_prefix):
            continue
        rest = topic[len(r.local_prefix):]
        if rest and topic_matches(r.pattern, rest):
            return r.remote_prefix + rest, r.qos
    return None


def inbound(rules: Sequence[BridgeTopic], topic: str) -> str | None:
    """The local topic for remote ``topic``, or None: not bridged in."""
    for r in rules:
        if r.direction == "out" or not topic.startswith(r.remote_prefix):
            continue
        rest = topic[len(r.remote_prefix):]
        if rest and topic_matches(r.pattern, rest):
            return r.local_prefix + rest
    return None
