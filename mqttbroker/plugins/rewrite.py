"""Topic rewrite: EMQX's ``rewrite`` rules as a plugin (docs/plugins.md, "Topic rewrite").

```yaml
plugins:
  mqttbroker.plugins.rewrite.TopicRewrite:
    rules:
      - action: publish            # publish | subscribe | all
        source_topic: "x/#"        # a topic filter the topic must match
        re: "^x/y/(.+)$"           # a regular expression it must match (re.search)
        dest_topic: "z/y/$1"       # the new topic: $1..$N are re's groups
```

A topic is matched against the rules in configuration order; the first rule whose
``source_topic`` filter matches the topic and whose ``re`` matches it gives the new topic, by
``dest_topic`` with ``$N`` replaced by the expression's N-th group (an unmatched group: empty)
and ``${clientid}`` / ``${username}`` by the client's (left as written when there is none, as
EMQX does). No rule: the topic is left as it is.

* ``publish`` rules rewrite the topic of every message that reaches :meth:`Plugin.on_message`
  (clients' PUBLISH after the broker and the plugins authorized its original topic, and what
  plugins publish);
* ``subscribe`` rules rewrite the filters of SUBSCRIBE (once the filter was allowed) and
  UNSUBSCRIBE (:meth:`Plugin.on_subscribe_filter`); of a shared subscription
  ``$share/{group}/{filter}`` only ``{filter}`` is matched and rewritten;
* ``all`` rules do both.

Every rule is checked when the configuration loads: an unknown or missing key, an action
that is not one of the three, a ``source_topic`` that is not a well-formed filter, an ``re``
that does not compile, a ``dest_topic`` naming a group ``re`` does not have, or a publish
rule whose ``dest_topic`` has a wildcard are errors that name the rule.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ..protocol.topics import SHARE_PREFIX, topic_filter_problem, topic_matches
from .api import Client, Message, Plugin, PluginContext

__all__ = ["RewriteOptions", "RewriteRule", "TopicRewrite"]

ACTIONS: Final = ("publish", "subscribe", "all")
_KEYS: Final = ("action", "source_topic", "re", "dest_topic")
# $N (a group of re) and ${clientid} / ${username} in dest_topic
_VARIABLE: Final = re.compile(r"\$(\d+)|\$\{(clientid|username)\}")


@dataclass(frozen=True, slots=True)
class RewriteRule:
    """One checked rule: a topic matching ``source_topic`` and ``pattern`` becomes
    ``dest_topic`` with its variables filled in."""

    action: str
    source_topic: str
    pattern: re.Pattern[str]
    dest_topic: str

    def rewrite(self, topic: str, client: Client | None) -> str | None:
        """The new topic, or None when this rule does not apply to ``topic``."""
        if not topic_matches(self.source_topic, topic):
            return None
        found = self.pattern.search(topic)
        if found is None:
            return None

        def fill(var: re.Match[str]) -> str:
            group, name = var.group(1), var.group(2)
            if group is not None:
                return found.group(int(group)) or ""
            value = None
            if client is not None:
                value = client.client_id if name == "clientid" else client.username
            return value or var.group(0)  # unknown or empty: left as written (EMQX)

        return _VARIABLE.sub(fill, self.dest_topic)


def _rule(index: int, given: Any) -> RewriteRule:
    """``given`` (one entry of ``rules``) checked; TypeError / ValueError saying what is
    wrong."""
    where = f"rules[{index}]"
    if not isinstance(given, Mapping):
        raise TypeError(f"{where}: expected a mapping with keys {', '.join(_KEYS)}, "
                         f"got {type(given).__name__}")
    unknown = sorted(str(k) for k in given if k not in _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (a rule has {', '.join(_KEYS)})")
    missing = [k for k in _KEYS if k not in given]
    if missing:
        raise ValueError(f"{where}: missing {missing[0]!r}")
    for key in _KEYS:
        if not isinstance(given[key], str):
            raise TypeError(f"{where}: {key} must be a string, got "
                             f"{type(given[key]).__name__} {given[key]!r}")
    action, source, expression, dest = (given[k] for k in _KEYS)
    if action not in ACTIONS:
        raise ValueError(f"{where}: action must be one of {', '.join(ACTIONS)}, got {action!r}")
    problem = topic_filter_problem(source)
    if problem is not None:
        raise ValueError(f"{where}: source_topic {source!r} is not a topic filter: {problem}")
    try:
        pattern = re.compile(expression)
    except re.error as exc:
        raise ValueError(f"{where}: re {expression!r} is not a regular expression: "
                         f"{exc}") from None
    if not dest:
        raise ValueError(f"{where}: dest_topic is empty")
    for var in _VARIABLE.finditer(dest):
        if var.group(1) is not None and not 1 <= int(var.group(1)) <= pattern.groups:
            have = f"$1..${pattern.groups}" if pattern.groups else "no group"
            raise ValueError(f"{where}: dest_topic {dest!r} uses ${var.group(1)} but re "
                             f"{expression!r} has {have}")
    if action != "subscribe" and ("+" in dest or "#" in dest):
        raise ValueError(f"{where}: dest_topic {dest!r} has a wildcard, but {action} rules "
                         "make topic names")
    problem = topic_filter_problem(_VARIABLE.sub("v", dest))
    if problem is not None:
        raise ValueError(f"{where}: dest_topic {dest!r} is not a topic filter: {problem}")
    return RewriteRule(action, source, pattern, dest)


def checked_rules(rules: object) -> list[RewriteRule]:
    """The ``rules`` option checked and compiled, in order; a TypeError or ValueError
    naming the rule."""
    if not isinstance(rules, list):
        raise TypeError(f"rules must be a list of rules, got {type(rules).__name__}")
    return [_rule(i, given) for i, given in enumerate(rules)]


@dataclass(frozen=True)
class RewriteOptions:
    """TopicRewrite's options: ``rules``, a list of mappings (``action``, ``source_topic``,
    ``re``, ``dest_topic``), checked as the configuration loads."""

    rules: list[Any]

    def __post_init__(self) -> None:
        checked_rules(self.rules)


class TopicRewrite(Plugin):
    """Rewrites the topics of messages and the filters of subscriptions by EMQX-style rules
    (the module's docstring)."""

    Config = RewriteOptions

    def __init__(self, context: PluginContext, config: RewriteOptions) -> None:
        super().__init__(context, config)
        rules = checked_rules(config.rules)
        self.publish_rules = [r for r in rules if r.action != "subscribe"]
        self.subscribe_rules = [r for r in rules if r.action != "publish"]

    def on_message(self, client: Client | None, message: Message) -> Message | None:
        topic = _first(self.publish_rules, message.topic, client)
        if topic is None or topic == message.topic:
            return message
        self.context.logger.debug("PUBLISH to %r rewritten to %r", message.topic, topic)
        return dataclasses.replace(message, topic=topic)

    def on_subscribe_filter(self, client: Client, topic_filter: str) -> str:
        prefix = ""
        inner = topic_filter
        if topic_filter.startswith(SHARE_PREFIX):  # only the shared subscription's filter
            group, sep, rest = topic_filter[len(SHARE_PREFIX):].partition("/")
            if sep and group and rest:
                prefix, inner = f"{SHARE_PREFIX}{group}/", rest
        new = _first(self.subscribe_rules, inner, client)
        if new is None or new == inner:
            return topic_filter
        self.context.logger.debug("client %s: filter %r rewritten to %r", client.client_id,
                                  topic_filter, prefix + new)
        return prefix + new


def _first(rules: list[RewriteRule], topic: str, client: Client | None) -> str | None:
    """The topic the first applicable rule makes of ``topic``, or None."""
    for rule in rules:
        new = rule.rewrite(topic, client)
        if new is not None:
            return new
    return None
