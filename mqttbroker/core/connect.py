"""The CONNECT decision: steps that return what they decided, and the :class:`Connector` that
runs them for a connection.

Each step function reads the CONNECT and the configuration and returns either what it settled
(the client id, the keep-alive, the session's expiry, CONNACK properties) or a
:class:`Refusal` saying which CONNACK code refuses the CONNECT and why, so every rule can be
tested with a packet and a config. :class:`Connector` runs them in order with what lies beyond
a packet (admission, the password file and plugins, a cluster claim, the registry) and acts on
the first refusal. It reaches the connection through :class:`Connecting` and the cluster
through :class:`Claims`: no transport, connection class or broker is imported.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

from ..config import Config, MqttConfig
from ..errors import ProtocolError
from ..metrics import Metrics
from ..plugins.api import Action
from ..plugins.api import Client as PluginClient
from ..plugins.host import PluginHost
from ..protocol.constants import MAX_PACKET_SIZE, ProtocolLevel, ReasonCode
from ..protocol.packets import Connack, Connect, Packet, Will
from ..protocol.properties import PropertyId as Prop
from ..protocol.topics import is_bridge_state, validate_topic_name
from ..router import parse_share
from ..session import Session
from .admission import Admission
from .hooks import Access
from .registry import Registry

log: Final = logging.getLogger("mqttbroker")

V5: Final[int] = ProtocolLevel.MQTT_5
BRIDGE_IDS: Final = "$bridge/"  # the local client ids of the broker's bridges (bridge/link.py)
_VERSIONS: Final = {3: "3.1", 4: "3.1.1", 5: "5.0"}  # protocol level -> MQTT version (logs)
# what a PUBLISH adds to its payload at most, bar properties: fixed header (5), the longest
# topic (2 + 65535), packet id (2), property length (4)
PUBLISH_OVERHEAD: Final = 5 + 2 + 65535 + 2 + 4


@dataclass(frozen=True, slots=True)
class Refusal:
    """A CONNECT is refused: CONNACK ``code`` (MQTT 5's; 3.x gets the code it maps to)."""

    code: ReasonCode
    why: str


@dataclass(slots=True, init=False)
class Terms:
    """What the first steps settled for a CONNECT: the client id (perhaps assigned), the
    keep-alive granted, and the CONNACK properties that say so. (``__init__`` written out,
    compiled by mypyc, as in protocol/packets.py.)"""

    client_id: str
    keep_alive: int
    props: dict[int, Any] = field(default_factory=dict)

    def __init__(self, client_id: str, keep_alive: int,
                 props: dict[int, Any] | None = None) -> None:
        self.client_id = client_id
        self.keep_alive = keep_alive
        self.props = {} if props is None else props


def negotiate(p: Connect, cfg: MqttConfig, new_id: Callable[[], str]) -> Terms | Refusal:
    """The client id, the keep-alive and the will, in that order; ``new_id`` makes a client
    id for a client that sent none [MQTT-3.1.3-6]. A will topic that is not a valid topic
    name raises :class:`ProtocolError` (the connection closes [MQTT-3.1.3-11])."""
    terms = client_identifier(p, cfg, new_id)
    if isinstance(terms, Refusal):
        return terms
    refusal = keep_alive(p, cfg, terms) or check_will(p, cfg)
    return refusal or terms


def client_identifier(p: Connect, cfg: MqttConfig,
                      new_id: Callable[[], str]) -> Terms | Refusal:
    """The client id: the CONNECT's, or one assigned to an MQTT 5 client (or a 3.1.1 one
    with clean session) that sent none [MQTT-3.1.3-6/8, MQTT 3.2.2.3.7]."""
    client_id = p.client_id
    v5 = p.protocol_level == V5
    if not client_id:
        # [MQTT-3.1.3-8] empty id without clean session: 0x02; 3.1 needs an id
        if (not p.clean_session and not v5) or p.protocol_level == ProtocolLevel.MQTT_3_1 \
                or not cfg.allow_zero_length_clientid:
            return Refusal(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client identifier")
        client_id = new_id()
        return Terms(client_id, p.keep_alive, {Prop.ASSIGNED_CLIENT_IDENTIFIER: client_id})
    if len(client_id) > cfg.max_client_id_length:
        return Refusal(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                       f"client identifier longer than {cfg.max_client_id_length}")
    if client_id.startswith(BRIDGE_IDS):
        return Refusal(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                       f"client identifiers starting {BRIDGE_IDS!r} are the bridges' own")
    return Terms(client_id, p.keep_alive)


def keep_alive(p: Connect, cfg: MqttConfig, terms: Terms) -> Refusal | None:
    """``max_keepalive``: an MQTT 5 client is told a shorter (or a non-zero) keep-alive in
    Server Keep Alive [MQTT-3.2.2-21]; 3.1/3.1.1 cannot be told, so a longer one is refused,
    as Mosquitto does."""
    limit = cfg.max_keepalive
    if not limit:
        return None
    requested = p.keep_alive
    if p.protocol_level == V5 and (requested > limit or requested == 0):
        terms.keep_alive = limit
        terms.props[Prop.SERVER_KEEP_ALIVE] = limit
    elif requested > limit:
        return Refusal(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                       f"keep-alive {requested}s over max_keepalive {limit}s")
    return None


def check_will(p: Connect, cfg: MqttConfig) -> Refusal | None:
    """The will must be a message the broker would accept as a PUBLISH."""
    will = p.will
    if will is None:
        return None
    v5 = p.protocol_level == V5
    validate_topic_name(will.topic)  # [MQTT-3.1.3-11] raises: the connection closes
    if cfg.max_topic_levels and will.topic.count("/") >= cfg.max_topic_levels:
        raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID,
                            f"will topic deeper than max_topic_levels {cfg.max_topic_levels}")
    if cfg.message_size_limit and len(will.payload) > cfg.message_size_limit:
        # as Mosquitto: v5 CONNACK 0x95; 3.1/3.1.1 have no such code, 0x05
        return Refusal(ReasonCode.PACKET_TOO_LARGE if v5 else ReasonCode.NOT_AUTHORIZED,
                       f"will payload {len(will.payload)} bytes over message_size_limit "
                       f"{cfg.message_size_limit}")
    if v5 and will.qos > cfg.max_qos:
        return Refusal(ReasonCode.QOS_NOT_SUPPORTED, "will QoS over Maximum QoS")
    if v5 and will.retain and not cfg.retain_available:
        return Refusal(ReasonCode.RETAIN_NOT_SUPPORTED, "will RETAIN not available")
    return None


def session_expiry(p: Connect, cap: Callable[[int], int], props: dict[int, Any]) -> int:
    """The Session Expiry Interval granted: MQTT 5's as asked (capped; a capped value is told
    in CONNACK [MQTT 3.2.2.3.2]); 3.1.1 clean session 0 never expires (unless capped)."""
    if p.protocol_level == V5:
        requested = p.properties.get(Prop.SESSION_EXPIRY_INTERVAL, 0)
    else:
        requested = 0 if p.clean_session else Session.NEVER
    expiry = cap(requested)
    if p.protocol_level == V5 and expiry != requested:
        props[Prop.SESSION_EXPIRY_INTERVAL] = expiry
    return expiry


def connack_properties(cfg: MqttConfig, client_id: str, p: Connect) -> dict[int, Any]:
    """What the broker enforces, advertised to an MQTT 5 client [MQTT 3.2.2.3]."""
    # a property whose value is the default is left out [MQTT 3.2.2.3]: Wildcard,
    # Subscription Identifier and Shared Subscription Available are 1 when absent, and
    # so is Retain Available; a client with a small Maximum Packet Size must still get its
    # CONNACK [MQTT-3.1.2-24]
    props: dict[int, Any] = {}
    if cfg.receive_maximum != 65535:
        props[Prop.RECEIVE_MAXIMUM] = cfg.receive_maximum
    if not cfg.retain_available:
        props[Prop.RETAIN_AVAILABLE] = 0
    if cfg.max_qos < 2:
        props[Prop.MAXIMUM_QOS] = cfg.max_qos
    largest = cfg.max_packet_size
    if cfg.message_size_limit:
        # the largest PUBLISH whose payload is within the limit [MQTT 3.2.2.3.6]
        largest = min(largest, cfg.message_size_limit + PUBLISH_OVERHEAD)
    if largest < MAX_PACKET_SIZE:
        props[Prop.MAXIMUM_PACKET_SIZE] = largest
    if cfg.topic_alias_maximum:
        props[Prop.TOPIC_ALIAS_MAXIMUM] = cfg.topic_alias_maximum
    if p.properties.get(Prop.REQUEST_RESPONSE_INFORMATION) == 1 and cfg.response_information:
        props[Prop.RESPONSE_INFORMATION] = cfg.response_information + client_id
    return props


def send_window(p: Connect, cfg: MqttConfig) -> int:
    """How many QoS 1/2 messages may be in flight to the client: the configured window,
    within an MQTT 5 client's Receive Maximum [MQTT-3.3.4-9]."""
    if p.protocol_level == V5:
        return min(cfg.max_inflight_messages, int(p.properties.get(Prop.RECEIVE_MAXIMUM, 65535)))
    return cfg.max_inflight_messages


# -- the steps run for a connection ------------------------------------------------------------


class Connecting(Protocol):
    """A connection as its CONNECT is handled: it can be refused, closed, held while an
    answer is on its way, and accepted."""

    admitted: bool | None
    peer: str
    listener: str
    keep_alive: int
    max_out_packet: int

    @property
    def closed(self) -> bool: ...

    def refuse(self, code: ReasonCode, why: str, quiet: bool = False) -> None:
        """CONNACK refusing the CONNECT with ``code``, then close."""

    def close(self, publish_will: bool) -> None:
        """Close without a word (no CONNACK fits)."""

    def disconnect(self, code: ReasonCode, why: str, publish_will: bool) -> None:
        """Close on the broker's initiative (a takeover)."""

    def suspend_connect(self) -> None:
        """Hold the CONNECT (and what follows) until :meth:`resume_connect`."""

    def resume_connect(self, finish: Callable[[], None]) -> None:
        """Finish the held CONNECT with ``finish``, then go on with what followed it."""

    def accept(self, client_id: str, session: Session, present: bool, p: Connect,
               props: dict[int, Any]) -> None:
        """CONNACK 0x00 with ``props``; resend what was in flight."""

    def encode_fitting(self, packet: Packet) -> bytes | None:
        """``packet`` within the client's Maximum Packet Size, or None."""


class Claims(Protocol):
    """A cluster, as a CONNECT sees it: a client id may be another node's (cluster/node.py)."""

    def owns(self, client_id: str) -> bool:
        """Whether a CONNECT with this id may go on here at once."""

    def claim(self, client_id: str, clean: bool, then: Callable[[], None],
              refuse: Callable[[str], None]) -> None:
        """Claim ``client_id`` for this node, then ``then()`` or ``refuse(why)``."""


K = TypeVar("K", bound=Connecting)


def _new_client_id() -> str:
    return "auto-" + uuid.uuid4().hex  # [MQTT-3.1.3-6]


class Connector(Generic[K]):
    """Runs a CONNECT's steps for a connection: admission, the client id, keep-alive and will,
    authentication (a TLS certificate, an enhanced-authentication exchange, the plugins, the
    password file), the CONNACK's size, a cluster claim, then the session. Each step refuses,
    holds the CONNECT, or lets the next one go on."""

    def __init__(self, config: Config, metrics: Metrics, admission: Admission[Any],
                 registry: Registry[Any], access: Access, plugins: PluginHost,
                 plugin_clients: dict[str, PluginClient],
                 certificate: Callable[[K], tuple[bool, str | None]],
                 now: Callable[[], float]) -> None:
        """``certificate(conn)``: whether its listener takes the client certificate's CN as
        the user name (Mosquitto's use-identity-as-username), and that CN if it has one."""
        self.config = config
        self.metrics = metrics
        self.admission = admission
        self.registry = registry
        self.access = access
        self.plugins = plugins
        self.plugin_clients = plugin_clients
        self.certificate = certificate
        self.now = now
        self.claims: Claims | None = None  # a cluster's
        # (read per CONNECT: which listeners take the CN, whether there is an ACL file)
        self._by_certificate = frozenset(lc.name for lc in config.listeners
                                         if lc.ssl and lc.use_identity_as_username)
        self._acl_file = config.auth.acl_file is not None
        # MQTT-SN carries no credentials: on its listeners the client id is the user name
        # (for the ACLs) and the listener's allow_anonymous decides who gets in
        self._sn_listeners = frozenset(lc.name for lc in config.listeners
                                       if lc.type == "mqttsn")

    def connect(self, conn: K, p: Connect, auth_props: dict[int, Any] | None = None,
                plugin_decision: bool | None = None, plugin_asked: bool = False) -> None:
        """Handle a valid CONNECT. (``auth_props``: the properties an enhanced-authentication
        exchange ended with; ``plugin_decision``: the authenticating plugins' answer, once
        ``plugin_asked``.)"""
        cfg = self.config.mqtt
        if not conn.admitted:
            conn.refuse(ReasonCode.QUOTA_EXCEEDED, self.admission.over_limit(conn))
            return
        terms = negotiate(p, cfg, _new_client_id)  # client id, keep-alive, will
        if isinstance(terms, Refusal):
            conn.refuse(terms.code, terms.why)
            return
        if not self._authenticate(conn, p, terms.client_id, auth_props,
                                  plugin_decision, plugin_asked):
            return  # refused, or waiting for a plugin
        if auth_props is not None:
            terms.props.update(auth_props)
        p.will = self.screen_will(terms.client_id, p.username, p.will)
        expiry = session_expiry(p, self.registry.cap_session_expiry, terms.props)
        if p.protocol_level == V5 and not self._connack_fits(conn, p, terms):
            return
        claims = self.claims
        if claims is not None and not claims.owns(terms.client_id) \
                and terms.client_id == p.client_id:
            # (an id assigned just now is new everywhere: nothing to claim)
            # the client id may be another node's: claim it (and its session) first; the
            # CONNECT goes on when the claim is done [MQTT-3.1.4-3]
            conn.suspend_connect()
            claims.claim(terms.client_id, p.clean_session,
                         lambda: conn.resume_connect(lambda: self.connect(
                             conn, p, auth_props, plugin_decision, plugin_asked)),
                         lambda why: conn.resume_connect(lambda: conn.refuse(
                             ReasonCode.SERVER_UNAVAILABLE, why)))
            return
        self._attach(conn, p, terms, expiry)

    def _authenticate(self, conn: K, p: Connect, client_id: str,
                      auth_props: dict[int, Any] | None, plugin_decision: bool | None,
                      plugin_asked: bool) -> bool:
        """Whether the CONNECT's credentials let it in: a TLS certificate
        (use-identity-as-username), an enhanced-authentication exchange that ended well
        (``auth_props``), the plugins in order, then the password file. False: refused, or
        held until an async plugin answers (the CONNECT then starts again with its answer)."""
        by_certificate = self._certificate_user(conn, p)
        if by_certificate is False:
            return False
        if auth_props is None and by_certificate is None and self.plugins.authenticators \
                and not plugin_asked:
            # plugins first, in order; the first definite answer decides [docs/plugins.md]
            decision = self.plugins.authenticate(
                PluginClient(client_id, p.username, conn.peer, conn.listener, p.protocol_level),
                p.password)
            if isinstance(decision, asyncio.Future):
                # an async plugin: this CONNECT waits (the loop goes on), then starts again
                conn.suspend_connect()
                fallback = self.plugins.timeout_allows

                def decided(fut: asyncio.Future[bool | None]) -> None:
                    answer = fallback if fut.cancelled() else fut.result()
                    conn.resume_connect(lambda: self.connect(conn, p, auth_props, answer, True))

                decision.add_done_callback(decided)
                return False
            plugin_decision = decision
        if plugin_decision is False:
            self.admission.login_failed(conn, self.now())
            conn.refuse(ReasonCode.NOT_AUTHORIZED, "not authorised (by a plugin)")
            return False
        if auth_props is None and by_certificate is None and plugin_decision is None:
            asserted = conn.listener in self._sn_listeners  # (an identity, not credentials)
            code = self.access.authenticate(client_id, None if asserted else p.username,
                                            None if asserted else p.password, conn.listener)
            if code != ReasonCode.SUCCESS:
                self.admission.login_failed(conn, self.now())  # slows its address down
                conn.refuse(code, "not authorised" if code == ReasonCode.NOT_AUTHORIZED
                            else "bad user name or password")
                return False
        if p.username is not None:  # real credentials (an anonymous login forgives nothing)
            self.admission.login_succeeded(conn)
        return True

    def _certificate_user(self, conn: K, p: Connect) -> bool | None:
        """``use-identity-as-username`` (Mosquitto's): on such a listener the CN of the
        client's verified certificate becomes ``p.username``, whatever the CONNECT said, and
        the certificate authenticates it (no password is checked; ACLs apply to the CN).
        None: not such a listener; True: done; False: no certificate with a CN, refused."""
        if conn.listener not in self._by_certificate:
            return None
        applies, cn = self.certificate(conn)
        if not applies:
            return None
        if cn is None:
            conn.refuse(ReasonCode.BAD_USER_NAME_OR_PASSWORD,
                        "use-identity-as-username: no client certificate with a CN")
            return False
        p.username, p.password = cn, None
        return True

    def screen_will(self, client_id: str, username: str | None,
                    will: Will | None) -> Will | None:
        """A will is a PUBLISH like any other: one the client may not make never goes out
        (Mosquitto checks it when it would be sent, and drops it likewise). A ``$`` topic
        is the broker's, as for PUBLISH: but for a bridge's state topic, or a plugin's.
        Checked at CONNECT, and when a will is replaced (MQTT-SN's WILLTOPICUPD)."""
        if will is not None and will.topic.startswith("$") and not (
                is_bridge_state(will.topic) or self.plugins.claims(will.topic)):
            log.info("client %r: will to %r refused ($ topics are the broker's); it will not "
                     "be published", client_id, will.topic)
            self.metrics.sys_publish_refused += 1
            return None
        if will is not None and self.access.publish_checked and \
                not self.access.may_publish(client_id, username, will.topic):
            log.info("client %r: will to %r not authorised; it will not be published",
                     client_id, will.topic)
            return None
        return will

    def _connack_fits(self, conn: K, p: Connect, terms: Terms) -> bool:
        """Add what the broker enforces to an MQTT 5 CONNACK; False (closed) when no CONNACK
        fits the client's Maximum Packet Size [MQTT-3.1.2-24]: closed without one, before
        anything of its session is touched."""
        terms.props.update(connack_properties(self.config.mqtt, terms.client_id, p))
        if conn.encode_fitting(Connack(False, 0, dict(terms.props))) is not None:
            return True
        log.warning("closing client %r (%s) without CONNACK: it does not fit its Maximum "
                    "Packet Size %d [MQTT-3.1.2-24]", terms.client_id, conn.peer,
                    conn.max_out_packet)
        conn.close(publish_will=False)
        return False

    def _attach(self, conn: K, p: Connect, terms: Terms, expiry: int) -> None:
        """The CONNECT is accepted: take over the client id, attach its session, CONNACK."""
        cfg = self.config.mqtt
        client_id = terms.client_id
        attached = self.registry.attach(client_id, conn, conn.peer, p.clean_session, expiry,
                                        p.will)
        if attached is None:
            conn.refuse(ReasonCode.QUOTA_EXCEEDED,
                        f"max_sessions {cfg.max_sessions} reached and every session is "
                        "connected")
            return
        session, present = attached
        session.max_inflight = send_window(p, cfg)
        if self._acl_file:
            self._bind_acl(client_id, p.username, session)
        conn.keep_alive = terms.keep_alive
        m = self.metrics
        m.clients_connected += 1
        m.clients_maximum = max(m.clients_maximum, m.clients_connected)
        level = p.protocol_level
        log.info("client %r connected from %s (MQTT %s, clean=%d, keep-alive=%ds%s)", client_id,
                 conn.peer, _VERSIONS[level], p.clean_session, terms.keep_alive,
                 ", session resumed" if present else "")
        conn.accept(client_id, session, present, p, terms.props)
        plugins = self.plugins
        if plugins:
            client = PluginClient(client_id, p.username, conn.peer, conn.listener, level)
            self.plugin_clients[client_id] = client
            plugins.forget(client_id)  # a new connection is asked again
            if p.will is not None and plugins.authorizers:
                # a will is a PUBLISH: asked now, the answer read when it would go out
                plugins.authorize(client, Action.PUBLISH, p.will.topic)
            if not conn.closed:
                plugins.fire("on_connect", client)

    def _bind_acl(self, client_id: str, username: str | None, session: Session) -> None:
        """ACL file: the client's entries for the user name it connected with (perhaps not
        the one that made the session, or unknown after a restart), and whether its
        subscriptions need each delivery checked. Messages waiting in the session that it
        may not read are dropped, as Mosquitto does on reconnect."""
        filters = (share[1] if (share := parse_share(f)) is not None else f
                   for f in session.subscriptions)  # (read only with an ACL file)
        client = self.access.bind(client_id, username, filters)
        if client is not None and (session.queue or session.inflight):
            dropped = session.discard(lambda m: client.may_read(m.topic))
            if dropped:
                self.metrics.publish_dropped += dropped
                log.info("client %r: %d queued message(s) it may not read dropped", client_id,
                         dropped)
