"""The narrow, typed interfaces through which the layers above the core reach it.

A layer never imports one above it (the import contract in pyproject.toml): when a
connection needs its broker, it is handed an object that satisfies a Protocol defined here,
and ``broker.py`` (the composition root) is the one that satisfies it. The Protocols are
generic in the connection type, so that this module knows no connection class.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from ..abuse import LoginFailures
from ..config import Config
from ..enhanced_auth import EnhancedAuth
from ..keepalive import KeepAliveWheel, Watched
from ..message import Message
from ..metrics import Metrics
from ..persistence.base import Storage
from ..protocol.packets import Connect, Subscribe, Unsubscribe

C = TypeVar("C", bound=Watched)


class ConnectionHost(Protocol[C]):
    """What one client connection needs of the broker that owns it (``C``: the connection).

    The connection reads the configuration and the shared counters, files itself on the
    keep-alive wheel and the congested set, and hands every decision that is not its own
    (admission, CONNECT, SUBSCRIBE, PUBLISH routing, the end of a connection) to the broker.
    """

    config: Config
    metrics: Metrics
    storage: Storage | None
    running: bool
    keepalive: KeepAliveWheel[C]
    congested: set[C]
    enhanced_auth: EnhancedAuth
    login_failures: LoginFailures | None

    def admit(self, conn: C) -> bool | None:
        """A socket was accepted: True counted, False refuse at CONNECT, None drop now."""

    def connect_hold(self, conn: C) -> float | None:
        """How long to hold ``conn``'s CONNECT (failed logins from its address), None: refuse."""

    def login_failed(self, conn: C) -> None:
        """``conn``'s credentials were refused."""

    def cap_session_expiry(self, requested: int) -> int:
        """The Session Expiry Interval granted for ``requested``."""

    def connect(self, conn: C, p: Connect, auth_props: dict[int, Any] | None = None) -> None:
        """A valid CONNECT (authenticated, if enhanced authentication ran): decide it."""

    def subscribe(self, conn: C, p: Subscribe) -> None:
        """SUBSCRIBE: grant, SUBACK, retained messages."""

    def unsubscribe(self, conn: C, p: Unsubscribe) -> None:
        """UNSUBSCRIBE: UNSUBACK."""

    def publish_from(self, conn: C, message: Message) -> int:
        """A client published: the MQTT 5 reason code for its PUBACK/PUBREC."""

    def on_connection_closed(self, conn: C, publish_will: bool) -> None:
        """The connection ended, for whatever reason."""
