"""The narrow, typed interfaces through which the layers above the core reach it.

A layer never imports one above it (the import contract in pyproject.toml): when a
connection needs its broker, it is handed an object that satisfies a Protocol defined here,
and ``broker.py`` (the composition root) is the one that satisfies it. The Protocols are
generic in the connection type, so that this module knows no connection class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..abuse import LoginFailures
from ..acl import ClientAcl
from ..config import Config
from ..enhanced_auth import EnhancedAuth
from ..keepalive import KeepAliveWheel, Watched
from ..message import Message
from ..metrics import Metrics
from ..persistence.base import Storage, StoredSession
from ..protocol.connection import Limits
from ..protocol.constants import ReasonCode
from ..protocol.packets import Connect, Subscribe, Unsubscribe, Will
from ..retained import RetainedStore
from ..router import Router
from ..session import Session
from .deadlines import Deadlines
from .turns import EndOfTurn, Gathers


class Held(Watched, Gathers, Hashable, Protocol):
    """A connection as the broker holds it: on the keep-alive wheel, in its deadlines, and
    flushed at the end of a turn in which it wrote."""


C = TypeVar("C", bound=Held)


@dataclass
class BridgeStats:
    """One bridge as ``/metrics``, ``$SYS``, the admin API and the dashboard show it (kept up
    to date by bridge/link.py; read on the event loop)."""

    name: str
    addresses: list[str]  # host:port, in the order tried
    remote: str | None = None  # host:port while connected
    connected: bool = False
    connected_since: float | None = None  # wall clock
    queued: int = 0  # waiting to be sent, in flight included
    queued_bytes: int = 0
    inflight: int = 0  # sent at QoS 1/2, not yet acknowledged
    sent: int = 0  # acknowledged by the remote (QoS 0: written)
    received: int = 0  # taken in from the remote
    dropped: int = 0  # dropped by the queue's full_policy
    connects: int = 0  # successful connections so far
    last_error: str | None = None


@dataclass
class GatewayStats:
    """One MQTT-SN listener as ``/metrics`` and ``$SYS`` show it (mqttsn/gateway.py)."""

    listener: str
    clients: int  # MQTT-SN clients it knows (connected, asleep or connecting)
    sleeping: int
    datagrams_received: int
    datagrams_sent: int
    malformed: int  # datagrams dropped as malformed (and held beyond the start-up limit)
    kernel_drops: int | None  # datagrams the kernel dropped (socket buffer full); None: unknown


class ConnectionHost(Protocol[C]):
    """What one client connection needs of the broker that owns it (``C``: the connection).

    The connection reads the configuration and the shared counters, files itself on the
    keep-alive wheel and the congested set, and hands every decision that is not its own
    (admission, CONNECT, SUBSCRIBE, PUBLISH routing, the end of a connection) to the broker.
    """

    config: Config
    limits: Limits  # what the configuration allows each connection
    metrics: Metrics
    storage: Storage | None
    running: bool
    keepalive: KeepAliveWheel[C]
    connect_deadlines: Deadlines[C]  # when each connection still without CONNACK is closed
    end_of_turn: EndOfTurn[C]  # the connections that wrote in this turn of the loop
    congested: set[C]
    enhanced_auth: EnhancedAuth
    login_failures: LoginFailures | None

    def admit(self, conn: C) -> bool | None:
        """A socket was accepted: True counted, False refuse at CONNECT, None drop now."""

    def connect_delay(self, conn: C) -> float | None:
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

    def publish_from(self, conn: C, message: Message, plugins_allow: bool = True) -> int:
        """A client published: the MQTT 5 reason code for its PUBACK/PUBREC."""

    def replace_will(self, conn: C, will: Will | None) -> None:
        """``conn``'s will changes while connected (screened as at CONNECT, and stored)."""

    def on_connection_closed(self, conn: C, publish_will: bool) -> None:
        """The connection ended, for whatever reason."""

    def publish_answer(self, conn: C, topic: str) -> bool | asyncio.Future[bool | None]:
        """The plugins' answer for a PUBLISH to ``topic``, or that answer on its way."""

    def slot_free(self, conn: C) -> None:
        """``conn``'s session has shared subscriptions, room in its in-flight window and
        nothing of its own queued: it may take messages queued at other members of its
        groups (work stealing, core/delivery.py Dispatcher.steal)."""


class Access(Protocol):
    """The broker's own access control as the core asks it (``auth.py``'s Authorizer: the
    password file, the ACL file and amqtt's topic-check), synchronously. Plugins answer
    beside it, through the plugin API."""

    @property
    def publish_checked(self) -> bool:
        """Anything to check on PUBLISH? (the core skips the call when not)"""

    @property
    def readers(self) -> Mapping[str, ClientAcl]:
        """Client id -> read grants to check per delivery (an ACL file's subscriptions that
        reach past what the client may read); empty unless there is an ACL file."""

    def may_publish(self, client_id: str, username: str | None, topic: str) -> bool:
        """May this client publish to ``topic``?"""

    def may_subscribe(self, client_id: str, username: str | None, topic_filter: str) -> bool:
        """May this client subscribe to ``topic_filter``?"""

    def authenticate(self, client_id: str, username: str | None, password: bytes | None,
                     listener: str | None = None) -> ReasonCode:
        """SUCCESS, or the reason code that refuses this CONNECT's credentials."""

    def bind(self, client_id: str, username: str | None,
             filters: Iterable[str] = ()) -> ClientAcl | None:
        """A client connected: its ACL entries (None without an ACL file)."""


class ConnectionInfo(Protocol):
    """What an operator sees of one open connection (the admin API)."""

    @property
    def listener(self) -> str: ...
    @property
    def peer(self) -> str: ...
    @property
    def username(self) -> str | None: ...
    @property
    def level(self) -> int: ...
    @property
    def keep_alive(self) -> int: ...
    @property
    def connected_at(self) -> float | None:
        """Wall clock at its CONNACK (None before)."""


class ClusterStats(Protocol):
    """A cluster node's figures for ``/metrics``."""

    def stats(self) -> dict[str, float]: ...


class BrokerView(Protocol):
    """What the HTTP listener (admin API, ``/metrics``, dashboard) reads of a running broker,
    and the two things an operator may do through it. Read on the broker's event loop, so
    without locks."""

    config: Config
    metrics: Metrics
    running: bool
    addresses: list[tuple[str, str, int]]

    @property
    def sessions(self) -> Mapping[str, Session]: ...
    @property
    def connections(self) -> Mapping[str, ConnectionInfo]: ...
    @property
    def retained(self) -> RetainedStore: ...
    @property
    def router(self) -> Router: ...
    @property
    def storage(self) -> Storage | None: ...
    @property
    def cluster(self) -> ClusterStats | None: ...

    def uptime(self) -> float:
        """Seconds since the broker started."""

    def now(self) -> float:
        """The broker's clock (its event loop's time)."""

    def listener_connections(self) -> dict[str, int]:
        """Open connections per listener name."""

    def admin_disconnect(self, client_id: str, code: ReasonCode,
                         discard_session: bool = False) -> bool:
        """Close a client's connection on an operator's word; False when not connected."""

    def discard_session(self, client_id: str) -> bool:
        """End a session now, as if it had expired; False when there is none."""

    def bridge_stats(self) -> list[BridgeStats]:
        """Every configured bridge, in configuration order."""

    def gateway_stats(self) -> list[GatewayStats]:
        """Every MQTT-SN listener, in configuration order."""


class Blockable(Protocol):
    """A publishing connection something downstream may stop reading for a while."""

    def block(self) -> bool:
        """Stop reading it (True), or say it is stopped already / cannot be (False)."""

    def unblock(self) -> None:
        """One holder is drained; read again when none is left."""


class ClusterHost(Protocol):
    """What a cluster node needs of the broker on its own node: the local sessions and
    retained store, and the calls that apply what other nodes did (a forwarded message, a
    session taken over, routes to drop)."""

    metrics: Metrics

    @property
    def sessions(self) -> Mapping[str, Session]: ...
    @property
    def retained(self) -> RetainedStore: ...

    def deliver_forwarded(self, message: Message, direct: bool, groups: set[str]) -> int:
        """A message another node forwarded, to this node's subscribers."""

    def deliver_forwarded_to(self, client_id: str, message: Message) -> bool:
        """A message for one session only, if its plain subscriptions match."""

    def adopt_session(self, rec: StoredSession) -> None:
        """A session this node took over from another node."""

    def release_session(self, client_id: str, to_node: str) -> None:
        """Another node took ``client_id`` over: close it here, keep what is stored."""

    def drop_routes(self, client_id: str, filters: list[str]) -> None:
        """Unsubscribe a session that is not here any more from ``filters``."""


class LocalClients(Protocol):
    """How an extension joins the broker as a client of its own (a bridge: Mosquitto's model):
    ``client`` gets every message its subscriptions match through ``client.deliver`` (its
    subscriptions are No Local: what it publishes under its client id never comes back)."""

    metrics: Metrics

    def attach_local(self, client: Any, filters: list[tuple[str, int]]) -> None:
        """Register ``client`` (a core.delivery.Recipient with a ``client_id``) and subscribe
        it to ``filters`` (filter, QoS); the retained messages they match go to it too."""

    def detach_local(self, client_id: str) -> None:
        """Unregister the local client ``client_id`` and its subscriptions."""

    def publish(self, message: Message, source: Any = None) -> int:
        """Publish ``message`` (its ``sender`` names the local client) to local subscribers."""


class CarriedConnection(Protocol):
    """A broker connection that another protocol carries in process (the MQTT-SN gateway's
    MQTT side): the asyncio protocol calls, and what MQTT-SN needs beyond MQTT."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def replace_will(self, will: Will | None) -> None:
        """A new will (or none) for the rest of the connection (WILLTOPICUPD/WILLMSGUPD)."""

    def queued_messages(self) -> int:
        """Messages its session holds back beyond the in-flight window."""


class Records(Protocol):
    """An extension's durable records, key -> bytes (an MQTT-SN listener's persistent
    sessions): written with the broker's other changes, in the same commits; read back at
    start as :attr:`loaded`. Without persistence they last as long as the process."""

    @property
    def loaded(self) -> Mapping[str, bytes]:
        """What the store held for this extension when the broker started."""

    def put(self, key: str, value: bytes) -> None: ...

    def delete(self, key: str) -> None: ...


class HoldPacket(Exception):
    """Raised by the broker while it handles a packet whose decision is on its way (an
    async plugin's answer): the connection keeps that packet and those after it, reads no
    more, and handles them again, in order, once ``until`` is done."""

    def __init__(self, until: asyncio.Future[Any]) -> None:
        super().__init__("packet held for a decision")
        self.until = until
