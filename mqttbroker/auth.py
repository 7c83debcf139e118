"""Who may connect, publish and subscribe.

Today: ``auth.allow-anonymous`` and hbmqtt's ``topic-check`` ACLs (``acl`` for subscribe,
``publish-acl`` for publish, keyed by user name, ``anonymous`` for clients without one).
Password and ACL files in Mosquitto's formats come with the security work.
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import AuthConfig, TopicCheckConfig
from .protocol.constants import ReasonCode
from .protocol.topics import topic_matches

ANONYMOUS = "anonymous"


class Authorizer:
    """Answers the three questions the broker asks, synchronously."""

    __slots__ = ("auth", "topic_check")

    def __init__(self, auth: AuthConfig, topic_check: TopicCheckConfig) -> None:
        self.auth = auth
        self.topic_check = topic_check

    def authenticate(self, client_id: str, username: str | None,
                     password: bytes | None) -> ReasonCode:
        """SUCCESS, or why the CONNECT is refused."""
        if username is None and not self.auth.allow_anonymous:
            return ReasonCode.NOT_AUTHORIZED
        if username is not None and self.auth.password_file is None \
                and not self.auth.allow_anonymous:
            return ReasonCode.BAD_USER_NAME_OR_PASSWORD
        return ReasonCode.SUCCESS

    def _allowed(self, table: Mapping[str, tuple[str, ...]], username: str | None,
                 topic: str) -> bool:
        if not self.topic_check.enabled:
            return True
        filters = table.get(username or ANONYMOUS)
        if filters is None:
            return False
        return any(topic_matches(f, topic) or f == topic for f in filters)

    def may_subscribe(self, username: str | None, topic_filter: str) -> bool:
        """hbmqtt's ``topic-check.acl``: the filter must be covered by one of the user's."""
        return self._allowed(self.topic_check.acl, username, topic_filter)

    def may_publish(self, username: str | None, topic: str) -> bool:
        """hbmqtt's ``topic-check.publish-acl``."""
        if not self.topic_check.enabled or not self.topic_check.publish_acl:
            return True
        return self._allowed(self.topic_check.publish_acl, username, topic)
