"""An example mqttbroker plugin: an audit log and a per-user publish allow-list.

- logs every connect and disconnect (with how long the client stayed) on its own logger,
  ``mqttbroker.plugins.audit_log.AuditLog``;
- refuses the user names in ``refused_users`` (CONNACK "not authorised");
- lets each user named in ``publish_prefixes`` publish only to topics starting with one of
  its prefixes; users not named there are left to the broker's own ACLs.

Load it with ``PYTHONPATH=examples/plugins`` and ``examples/plugins/config.yaml``
(examples/plugins/README.md). The API: docs/plugins.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mqttbroker.plugins import Action, Client, Decision, Plugin, PluginContext


@dataclass(frozen=True)
class AuditLogConfig:
    """The plugin's options, from its entry in the ``plugins`` section (``refused-users``
    and ``refused_users`` are the same option)."""

    refused_users: list[str] = field(default_factory=list)
    # user name -> the topic prefixes it may publish to (an empty list: nothing)
    publish_prefixes: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the broker checks int/float/str/bool options itself; lists and mappings are ours
        # to check (a TypeError or ValueError here is reported as FILE:LINE by check-config)
        if not isinstance(self.refused_users, list) or \
                not all(isinstance(u, str) for u in self.refused_users):
            raise TypeError("refused_users must be a list of user names")
        if not isinstance(self.publish_prefixes, dict):
            raise TypeError("publish_prefixes must map user names to lists of topic prefixes")
        for user, prefixes in self.publish_prefixes.items():
            if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
                raise TypeError(f"publish_prefixes.{user} must be a list of topic prefixes")


class AuditLog(Plugin):
    Config = AuditLogConfig

    def __init__(self, context: PluginContext, config: AuditLogConfig) -> None:
        super().__init__(context, config)
        self.refused = frozenset(config.refused_users)
        self.prefixes = {user: tuple(p) for user, p in config.publish_prefixes.items()}
        self.connected_at: dict[str, float] = {}  # client id -> the broker's clock at connect

    def on_broker_start(self) -> None:
        self.context.logger.info("audit log on: %d refused user(s), allow-lists for %s",
                                 len(self.refused), ", ".join(sorted(self.prefixes)) or "nobody")

    def authenticate(self, client: Client, password: bytes | None) -> Decision:
        if client.username in self.refused:
            self.context.logger.warning("refused %r (user %r) from %s", client.client_id,
                                        client.username, client.peer)
            return False
        return None  # no opinion: the broker's password file / allow-anonymous decide

    def authorize(self, client: Client, action: Action, topic: str) -> Decision:
        if action is not Action.PUBLISH:
            return None  # subscribing and receiving: the broker's own ACLs decide
        prefixes = self.prefixes.get(client.username or "")
        if prefixes is None:
            return None  # a user without an allow-list here
        if topic.startswith(prefixes):
            return True
        # (answers are remembered per client, action and topic: this logs once per topic)
        self.context.logger.warning("%r (user %r) may not publish to %r", client.client_id,
                                    client.username, topic)
        return False

    def on_connect(self, client: Client) -> None:
        self.connected_at[client.client_id] = self.context.now()
        self.context.logger.info("connect %r user=%r from %s on %s (protocol level %d)",
                                 client.client_id, client.username, client.peer,
                                 client.listener, client.protocol)

    def on_disconnect(self, client: Client) -> None:
        since = self.connected_at.pop(client.client_id, None)
        stayed = "" if since is None else f" after {self.context.now() - since:.1f}s"
        self.context.logger.info("disconnect %r user=%r%s", client.client_id,
                                 client.username, stayed)
