"""The broker: listeners, the session registry, takeover, wills, routing, ``$SYS``, shutdown.

It composes the pure parts (router, sessions, retained store, authorizer) and holds no packet
handling: that is :class:`~mqttbroker.client.ClientConnection`'s.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import __version__
from .abuse import ConnectionRateLimiter, LoginFailures, address_key
from .acl import ClientAcl
from .auth import Authorizer
from .client import ClientConnection, ConnState
from .config import Config, load_config
from .core.deadlines import Deadlines
from .core.hooks import HoldPacket
from .enhanced_auth import EnhancedAuth
from .errors import ConfigError, ProtocolError
from .keepalive import KeepAliveWheel
from .message import Message
from .metrics import Metrics
from .persistence import Snapshot, Storage, StoredSession, StoredWill, open_storage
from .persistence.base import from_wall, to_wall
from .plugins.api import Action
from .plugins.api import Client as PluginClient
from .plugins.api import Message as PluginMessage
from .plugins.host import PluginHost
from .protocol.constants import MAX_PACKET_SIZE, SUBACK_FAILURE, ProtocolLevel, ReasonCode
from .protocol.flows import OutState
from .protocol.packets import Connack, Connect, Suback, Subscribe, Unsuback, Unsubscribe, Will
from .protocol.properties import PropertyId as Prop
from .protocol.topics import malformed_filter, topic_filter_problem, validate_topic_name
from .retained import RetainedStore
from .router import Delivery, Router, parse_share
from .session import Outbound, Queued, Session
from .transports.tcp import serve_tcp
from .transports.tls import ListenerTLS, peer_common_name
from .transports.websocket import serve_websocket

if TYPE_CHECKING:
    from .cluster.node import ClusterNode
    from .web.server import HttpServer

log = logging.getLogger("mqttbroker")

V5 = ProtocolLevel.MQTT_5
KEEPALIVE_TICK = 0.25  # seconds between keep-alive wheel checks
MAX_PENDING_REFUSALS = 64  # sockets over a connection limit kept open to be told why
# what a PUBLISH adds to its payload at most, bar properties: fixed header (5), the longest
# topic (2 + 65535), packet id (2), property length (4)
_PUBLISH_OVERHEAD = 5 + 2 + 65535 + 2 + 4
_WILL_ONLY = (Prop.WILL_DELAY_INTERVAL, Prop.MESSAGE_EXPIRY_INTERVAL)
EXPIRE, WILL = "expire", "will"  # the kinds of deadline


class Broker:
    """An MQTT broker; ``Broker(config)`` then ``await start()`` ... ``await shutdown()``.

    ``config`` is a :class:`Config`, or a dict in the YAML file's shape (hbmqtt/amqtt keys
    included), or None for the built-in defaults.
    """

    def __init__(self, config: Config | Mapping[str, Any] | None = None, *,
                 reuse_port: bool = False) -> None:
        self.config = config if isinstance(config, Config) else load_config(
            dict(config) if config is not None else None)
        self.reuse_port = reuse_port  # share the ports with other workers (serve --workers)
        self.metrics = Metrics()
        self.router = Router()
        cfg = self.config.mqtt
        self.retained = RetainedStore(cfg.max_retained_messages, cfg.max_retained_bytes)
        # persistence: None keeps everything in memory only
        self.storage: Storage | None = open_storage(self.config.persistence)
        self.retained.storage = self.storage
        # a cluster node keeps its sessions and retained messages in the cluster's Redis
        self.cluster: ClusterNode | None = None
        if self.config.cluster is not None:
            from .cluster.node import ClusterNode  # redis is imported only for a cluster

            self.cluster = ClusterNode(self, self.config.cluster)
            self.storage = self.cluster.store
            self.retained.storage = self.storage
            self.router.on_route = self.cluster.on_route
        # reads the password and ACL files: ConfigError naming the file and line
        self.authorizer = Authorizer(self.config.auth, self.config.topic_check,
                                     self.config.listeners)
        self.enhanced_auth = EnhancedAuth.from_config(self.config.auth.scram_users)
        # plugins (plugins/): imported and their options checked now, built in start()
        self.plugins = PluginHost(self.config.plugins, self.metrics,
                                  timeout=cfg.plugin_timeout,
                                  timeout_allows=cfg.plugin_timeout_outcome == "allow")
        self._plugin_clients: dict[str, PluginClient] = {}  # by client id, while its session
        # per-address defences (abuse.py); None when switched off
        self.connection_rate = ConnectionRateLimiter(
            cfg.max_connection_rate_per_address, cfg.connection_burst_per_address,
        ) if cfg.max_connection_rate_per_address else None
        self.login_failures = LoginFailures(
            cfg.auth_failure_threshold, cfg.auth_failure_delay, cfg.auth_failure_max_delay,
        ) if cfg.auth_failure_delay else None
        self.sessions: dict[str, Session] = {}
        self.connections: dict[str, ClientConnection] = {}
        self.addresses: list[tuple[str, str, int]] = []
        self._servers: list[asyncio.Server] = []
        self._tls: dict[str, ListenerTLS] = {}  # listener name -> its reloadable TLS context
        self._open: set[ClientConnection] = set()
        self._per_listener: dict[str, int] = {}
        self._total = 0  # connections open over every listener
        self._refusing = 0  # connections over a limit, waiting for their CONNECT to refuse
        # sessions that outlive their connection and have none now, longest offline first
        self._offline: dict[str, None] = {}
        self._limits: dict[str, int] = {}
        self._sys_timer: asyncio.TimerHandle | None = None
        self.keepalive: KeepAliveWheel[ClientConnection] = KeepAliveWheel()
        self.congested: set[ClientConnection] = set()  # clients whose socket buffer is full
        self._keepalive_timer: asyncio.TimerHandle | None = None
        # session expiry and delayed wills [MQTT 3.1.2.11.2, 3.1.3.2.2]: deadlines keyed
        # (EXPIRE | WILL, client id) on the loop's clock, one armed timer for the earliest
        self._deadlines: Deadlines[tuple[str, str]] = Deadlines()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_timer_at = 0.0
        self._wills: dict[str, Message] = {}  # delayed wills, by client id
        self._started = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.http: HttpServer | None = None  # the HTTP listener (http.enabled)
        self.running = False

    @property
    def port(self) -> int:
        """The bound port of the first listener (handy when it was configured as 0)."""
        return self.addresses[0][2]

    @property
    def http_port(self) -> int:
        """The bound port of the HTTP listener (http.enabled)."""
        assert self.http is not None, "http.enabled is false"
        return self.http.port

    def uptime(self) -> float:
        """Seconds since :meth:`start`."""
        return time.monotonic() - self._started

    def listener_connections(self) -> dict[str, int]:
        """Open connections per listener name."""
        return dict(self._per_listener)

    def now(self) -> float:
        """The event loop's clock, which every expiry in the broker is measured on."""
        assert self._loop is not None
        return self._loop.time()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every listener and start publishing ``$SYS``."""
        self._started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        if self.cluster is not None:
            self._restore(await self.cluster.open())
        elif self.storage is not None:
            self._restore(await self.storage.open(self._loop))
        try:
            if self.plugins:
                await self.plugins.start(self.config, self._plugin_publish, self.now)
            for lc in self.config.listeners:
                name = lc.name
                # TLS: ConfigError naming the listener key if a file does not load or fit
                tls = ListenerTLS(lc) if lc.ssl else None
                if tls is not None:
                    self._tls[name] = tls
                self._per_listener[name] = 0
                self._limits[name] = lc.max_connections

                def factory(name: str = name) -> ClientConnection:
                    return ClientConnection(self, name)

                context = None if tls is None else tls.context
                timeout = self.config.mqtt.connect_timeout
                if lc.type == "ws":
                    server = await serve_websocket(lc.host, lc.port, factory, path=lc.path,
                                                   ssl=context, handshake_timeout=timeout,
                                                   reuse_port=self.reuse_port,
                                                   pack_packets=lc.ws_pack_packets)
                    kind = f"MQTT over WebSocket at {lc.path}"
                else:
                    server = await serve_tcp(lc.host, lc.port, factory, ssl=context,
                                             handshake_timeout=timeout,
                                             reuse_port=self.reuse_port)
                    kind = "tcp"
                self._servers.append(server)
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    self.addresses.append((name, host, port))
                    log.info("listener %s: listening on %s:%d (%s)", name, host, port,
                             kind if tls is None else f"{kind}, tls, {lc.tls_version} minimum")
            if self.config.http.enabled:
                from .web.server import HttpServer  # aiohttp is imported only when it is used
                self.http = HttpServer(self)
                await self.http.start()
            if self.cluster is not None:
                await self.cluster.start()
        except BaseException:
            await self._close_servers()
            await self._close_storage()
            raise
        self.running = True
        self._keepalive_tick()
        if self.config.sys_interval > 0:
            self._publish_sys()

    def _restore(self, snapshot: Snapshot, adopted: bool = False) -> None:
        """Put back what storage kept: retained messages, then sessions (offline until their
        clients come back) with their expiry counting the downtime, then their wills."""
        assert self._loop is not None and self.storage is not None
        for m in snapshot.retained:
            self.retained.load(m)
        wall = time.time()
        due: list[tuple[StoredSession, float]] = []
        for rec in snapshot.sessions:
            session = self._restore_session(rec)
            self.sessions[rec.client_id] = session
            if rec.disconnected_at is None:  # connected when the broker stopped
                rec.disconnected_at = wall
            session.disconnected_at = rec.disconnected_at
            left = float(session.expiry_interval) if session.expiry_interval != Session.NEVER \
                else math.inf
            due.append((rec, left - (wall - rec.disconnected_at)))
        for rec, _ in sorted(due, key=lambda d: d[0].disconnected_at or 0.0):
            self._offline[rec.client_id] = None
        for rec, left in due:
            cid = rec.client_id
            session = self.sessions[cid]
            will = rec.will
            stored: StoredWill | None = None
            if will is not None:
                if will.at is None:  # its connection ended with the broker: now it counts
                    message = self._will_message(
                        Will(will.message.topic, will.message.payload, will.message.qos,
                             will.message.retain, will.message.properties or {}), cid)
                    at = self.now() + will.delay
                else:
                    message, at = will.message, from_wall(will.at, self._loop)
                stored = StoredWill(message, will.delay, to_wall(at, self._loop))
                self._wills[cid] = message
                self._set_deadline(WILL, cid, at)
            if left <= 0:
                log.info("session %r expired while the broker was down", cid)
                self._end_session(session)  # its will, if any, goes now [MQTT-3.1.3-9]
                continue
            self.storage.put_session(cid, session.expiry_interval, rec.disconnected_at, stored)
            if left != math.inf:
                self._set_deadline(EXPIRE, cid, self.now() + left)
        if (snapshot.sessions or snapshot.retained) and not adopted:
            log.info("restored %d sessions and %d retained messages", len(self.sessions),
                     len(self.retained))

    def _restore_session(self, rec: StoredSession) -> Session:
        session = self._new_session(rec.client_id, self.cap_session_expiry(rec.expiry_interval))
        session.store = self.storage
        for sub in rec.subscriptions:
            session.subscriptions[sub.topic_filter] = sub
            self.router.subscribe(rec.client_id, sub)
        queue: list[Queued] = []
        for item in rec.items:
            if item.packet_id and item.packet_id not in session.inflight:
                out = Outbound(item.message, item.qos, item.retain, item.packet_id,
                               item.identifiers, item.share, item.seq)
                out.state = OutState(item.state)
                session.inflight[item.packet_id] = out
            else:
                queue.append(Queued(item.message, item.qos, item.retain, item.identifiers,
                                    item.share, item.seq))
        if queue:
            session.queue = deque(queue)
            session.queued_bytes = sum(len(q.message.payload) for q in queue)
        if rec.inbound_qos2:
            session.inbound_qos2 = set(rec.inbound_qos2)
        return session

    def reload(self) -> bool:
        """SIGHUP: load every TLS listener's certificate, key and CA files again, and the
        password and ACL files (``authorizer.reload()``, when the authorizer has one).

        Handshakes and CONNECTs from now on see the new files; connected clients keep their
        connections. Whatever fails to load is logged and keeps its previous state, so a
        half-copied certificate never takes a listener down. True when everything reloaded.
        """
        ok = True
        for name, tls in self._tls.items():
            try:
                tls.reload()
            except ConfigError as exc:
                ok = False
                log.error("reload: listener %s keeps its previous certificates: %s", name, exc)
            else:
                log.info("reload: listener %s: certificates loaded from %s", name,
                         tls.config.certfile)
        reload_auth = getattr(self.authorizer, "reload", None)
        if callable(reload_auth):
            try:
                loaded = reload_auth()  # False: it logged why and kept the files in use
            except Exception as exc:  # noqa: BLE001 - a bad file: keep the previous ones
                loaded = False
                log.error("reload: keeping the previous password/ACL files: %s", exc)
            if loaded is False:
                ok = False
            else:
                log.info("reload: password and ACL files loaded")
        return ok

    async def shutdown(self) -> None:
        """Stop listening, close every client (MQTT 5: DISCONNECT 0x8B), stop timers."""
        for timer in (self._sys_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._sys_timer = self._keepalive_timer = None
        self.running = False
        for server in self._servers:
            server.close()
        for conn in list(self._open):
            conn.disconnect(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down",
                            publish_will=False)
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._deadlines.clear()
        self._wills.clear()
        if self.plugins:
            await self.plugins.stop()
        await self._close_servers()
        await self._close_storage()
        log.info("broker stopped")

    async def _close_storage(self) -> None:
        if self.cluster is not None:
            await self.cluster.close()
        elif self.storage is not None:
            await self.storage.close()

    async def _close_servers(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        for server in self._servers:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                pass
        self._servers.clear()

    # -- connections ----------------------------------------------------------------------------

    def _keepalive_tick(self) -> None:
        """Four times a second: close the clients whose keep-alive ran out [MQTT-3.1.2-24]."""
        now = self.now()
        for conn in self.keepalive.expire(now):
            conn.keepalive_timeout()
        for conn in list(self.congested):
            conn.check_stalled(now)
        assert self._loop is not None
        self._keepalive_timer = self._loop.call_later(KEEPALIVE_TICK, self._keepalive_tick)

    def admit(self, conn: ClientConnection) -> bool | None:
        """A socket was accepted: count it (True); over a connection limit, leave it uncounted
        to be refused at CONNECT with a CONNACK that says why (False); when shutting down, or
        when too many refusals are pending already, drop it now (None)."""
        if not self.running:
            return None
        if self.connection_rate is not None and self._over_rate(conn):
            return None  # closed at once, before it costs more than the accept
        name = conn.listener
        limit = self._limits.get(name, 0)
        total = self.config.mqtt.max_connections
        if (limit and self._per_listener[name] >= limit) or (total and self._total >= total):
            if self._refusing >= MAX_PENDING_REFUSALS:
                self.metrics.connections_refused += 1  # (refuse() counts the others)
                log.warning("listener %s: dropping connection from %s (over max_connections, "
                            "%d refusals pending)", name, conn.peer, self._refusing)
                return None
            self._refusing += 1
            return False
        self._per_listener[name] += 1
        self._total += 1
        self._open.add(conn)
        self.metrics.connections_total += 1
        return True

    def over_limit(self, conn: ClientConnection) -> str:
        """Why a connection that was not admitted is refused (for its CONNACK and the log)."""
        limit = self._limits.get(conn.listener, 0)
        if limit and self._per_listener[conn.listener] >= limit:
            return f"listener {conn.listener} is at max-connections {limit}"
        return f"the broker is at max_connections {self.config.mqtt.max_connections}"

    # -- abuse: per-address connection rate and failed logins (abuse.py) -------------------------

    @staticmethod
    def address(conn: ClientConnection) -> str:
        """The source address the per-address limits count ``conn`` under (IPv6: its /64)."""
        return address_key(conn.peer.rpartition(":")[0])

    def _over_rate(self, conn: ClientConnection) -> bool:
        """Charge a new connection to its address's rate; True when it is over the rate and
        must be closed now. Logged once per episode (a flood), not per connection."""
        assert self.connection_rate is not None
        address = self.address(conn)
        allowed, refused = self.connection_rate.take(address, self.now())
        if allowed:
            if refused:
                log.warning("address %s is back under max_connection_rate_per_address: %d "
                            "connection(s) from it were closed", address, refused)
            return False
        self.metrics.connections_rate_limited += 1
        if refused == 1:
            rate = self.connection_rate
            log.warning("address %s opens connections faster than "
                        "max_connection_rate_per_address (%g/s, burst %g): closing its new "
                        "connections at accept until it slows down", address, rate.rate,
                        rate.burst)
        return True

    def connect_delay(self, conn: ClientConnection) -> float | None:
        """``conn`` sent CONNECT: how long to delay it before looking at it (0.0: not at all),
        because its address keeps failing to log in; None: refuse it at once, unread
        (its address already has CONNECTs delayed for auth_failure_max_delay)."""
        guard = self.login_failures
        if guard is None:
            return 0.0
        wait = guard.connect_delay(self.address(conn), self.now())
        if wait != 0.0:
            self.metrics.auth_held += 1
        return wait

    def login_failed(self, conn: ClientConnection) -> None:
        """``conn``'s credentials were refused: count it against its address."""
        self.metrics.auth_failures += 1
        guard = self.login_failures
        if guard is None:
            return
        address = self.address(conn)
        failures = guard.failed(address, self.now())
        if failures == max(guard.threshold, 1):
            log.warning("address %s: %d failed logins in a row; its CONNECTs are now answered "
                        "after a delay (%gs, doubling up to %gs) until one succeeds", address,
                        failures, guard.delay_after(failures), guard.max_delay)

    def _login_succeeded(self, conn: ClientConnection) -> None:
        if self.login_failures is not None:
            self.login_failures.succeeded(self.address(conn))

    def cap_session_expiry(self, requested: int) -> int:
        """The Session Expiry Interval granted for ``requested`` (max_session_expiry_interval
        caps it when set)."""
        cap = self.config.mqtt.max_session_expiry_interval
        return min(requested, cap) if cap else requested

    def connect(self, conn: ClientConnection, p: Connect,
                auth_props: dict[int, Any] | None = None,
                plugin_decision: bool | None = None, plugin_asked: bool = False) -> None:
        """Handle a valid CONNECT: identify, authenticate, take over, attach a session.
        (``plugin_decision``: the authenticating plugins' answer, once ``plugin_asked``.)"""
        cfg = self.config.mqtt
        client_id = p.client_id
        level = p.protocol_level
        v5 = level == V5
        props: dict[int, Any] = {}
        if not conn.admitted:
            conn.refuse(ReasonCode.QUOTA_EXCEEDED, self.over_limit(conn))
            return
        if not client_id:
            # [MQTT-3.1.3-8] empty id without clean session: 0x02; 3.1 needs an id
            if (not p.clean_session and not v5) or level == ProtocolLevel.MQTT_3_1 \
                    or not cfg.allow_zero_length_clientid:
                conn.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client identifier")
                return
            client_id = "auto-" + uuid.uuid4().hex  # [MQTT-3.1.3-6]
            props[Prop.ASSIGNED_CLIENT_IDENTIFIER] = client_id
        elif len(client_id) > cfg.max_client_id_length:
            conn.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                        f"client identifier longer than {cfg.max_client_id_length}")
            return
        keep_alive = p.keep_alive
        if cfg.max_keepalive and v5 and (keep_alive > cfg.max_keepalive or keep_alive == 0):
            keep_alive = cfg.max_keepalive  # [MQTT-3.2.2-21] Server Keep Alive
            props[Prop.SERVER_KEEP_ALIVE] = keep_alive
        elif cfg.max_keepalive and keep_alive > cfg.max_keepalive:
            # 3.1/3.1.1 cannot be told a shorter keep-alive: refuse, as Mosquitto does
            conn.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                        f"keep-alive {keep_alive}s over max_keepalive {cfg.max_keepalive}s")
            return
        if p.will is not None:
            validate_topic_name(p.will.topic)  # [MQTT-3.1.3-11] raises: the connection closes
            if cfg.max_topic_levels and p.will.topic.count("/") >= cfg.max_topic_levels:
                raise ProtocolError(ReasonCode.TOPIC_NAME_INVALID,
                                    f"will topic deeper than max_topic_levels "
                                    f"{cfg.max_topic_levels}")
            if cfg.message_size_limit and len(p.will.payload) > cfg.message_size_limit:
                # as Mosquitto: v5 CONNACK 0x95; 3.1/3.1.1 have no such code, 0x05
                conn.refuse(ReasonCode.PACKET_TOO_LARGE if v5 else ReasonCode.NOT_AUTHORIZED,
                            f"will payload {len(p.will.payload)} bytes over message_size_limit "
                            f"{cfg.message_size_limit}")
                return
            if v5 and p.will.qos > cfg.max_qos:
                conn.refuse(ReasonCode.QOS_NOT_SUPPORTED, "will QoS over Maximum QoS")
                return
            if v5 and p.will.retain and not cfg.retain_available:
                conn.refuse(ReasonCode.RETAIN_NOT_SUPPORTED, "will RETAIN not available")
                return
        # TLS use-identity-as-username: the client certificate's CN replaces the user name and
        # stands for the password, as in Mosquitto (False: refused, no usable certificate)
        by_certificate = self._certificate_user(conn, p)
        if by_certificate is False:
            return
        if auth_props is None and by_certificate is None and self.plugins.authenticators \
                and not plugin_asked:
            # plugins first, in order; the first definite answer decides [docs/plugins.md]
            decision = self.plugins.authenticate(
                PluginClient(client_id, p.username, conn.peer, conn.listener, level),
                p.password)
            if isinstance(decision, asyncio.Future):
                # an async plugin: this CONNECT waits (the loop goes on), then starts again
                conn.suspend_connect()
                fallback = self.plugins.timeout_allows

                def decided(fut: asyncio.Future[bool | None]) -> None:
                    answer = fallback if fut.cancelled() else fut.result()
                    conn.resume_connect(lambda: self.connect(conn, p, auth_props, answer, True))

                decision.add_done_callback(decided)
                return
            plugin_decision, plugin_asked = decision, True
        if plugin_decision is False:
            self.login_failed(conn)
            conn.refuse(ReasonCode.NOT_AUTHORIZED, "not authorised (by a plugin)")
            return
        if auth_props is None and by_certificate is None and plugin_decision is None:
            code = self.authorizer.authenticate(client_id, p.username, p.password,
                                                conn.listener)
            if code != ReasonCode.SUCCESS:
                self.login_failed(conn)  # slows its address down (abuse.py)
                conn.refuse(code, "not authorised" if code == ReasonCode.NOT_AUTHORIZED
                            else "bad user name or password")
                return
        elif auth_props is not None:
            props.update(auth_props)
        if p.username is not None:  # real credentials (an anonymous login forgives nothing)
            self._login_succeeded(conn)
        if p.will is not None and self.authorizer.publish_checked and \
                not self.authorizer.may_publish(client_id, p.username, p.will.topic):
            # a will is a PUBLISH like any other: one the client may not make never goes out
            # (Mosquitto checks it when it would be sent, and drops it likewise)
            log.info("client %r: will to %r not authorised; it will not be published",
                     client_id, p.will.topic)
            p.will = None
        # session expiry: 3.1.1 clean session 0 never expires (unless capped)
        if v5:
            requested = p.properties.get(Prop.SESSION_EXPIRY_INTERVAL, 0)
        else:
            requested = 0 if p.clean_session else Session.NEVER
        expiry = self.cap_session_expiry(requested)
        if v5 and expiry != requested:
            props[Prop.SESSION_EXPIRY_INTERVAL] = expiry  # the server's value [MQTT 3.2.2.3.2]
        if v5:
            props.update(self._connack_properties(client_id, p))
            if conn.encode_fitting(Connack(False, 0, dict(props))) is None:
                # no CONNACK fits the client's Maximum Packet Size: close without one
                # [MQTT-3.1.2-24] (before anything of its session is touched)
                log.warning("closing client %r (%s) without CONNACK: it does not fit its "
                            "Maximum Packet Size %d [MQTT-3.1.2-24]", client_id, conn.peer,
                            conn.max_out_packet)
                conn.close(publish_will=False)
                return
        cluster = self.cluster
        if cluster is not None and not cluster.owns(client_id) and client_id == p.client_id:
            # (an id assigned just now is new everywhere: nothing to claim)
            # the client id may be another node's: claim it (and its session) first; the
            # CONNECT goes on when the claim is done [MQTT-3.1.4-3]
            conn.suspend_connect()
            clean = p.clean_session

            def again() -> None:
                conn.resume_connect(lambda: self.connect(conn, p, auth_props, plugin_decision,
                                                         plugin_asked))

            def refuse(why: str) -> None:
                conn.resume_connect(lambda: conn.refuse(ReasonCode.SERVER_UNAVAILABLE, why))

            cluster.claim(client_id, clean, again, refuse)
            return
        old = self.connections.get(client_id)
        if old is not None:
            # [MQTT-3.1.4-3] the existing connection is closed (v5: DISCONNECT 0x8E)
            old.disconnect(ReasonCode.SESSION_TAKEN_OVER,
                           f"session taken over by a new connection from {conn.peer}",
                           publish_will=True)
        self._cancel_expiry(client_id)
        session = self.sessions.get(client_id)
        present = False
        if session is not None and (p.clean_session or not session.persistent):
            self._end_session(session)  # [MQTT-3.1.2-4] clean start discards it
            session = None
        pending = self._wills.pop(client_id, None)
        if pending is not None:
            self._deadlines.cancel((WILL, client_id))
            if session is None:  # the old session ended: its delayed will goes now
                self.publish(pending)
            # else resumed within the Will Delay Interval: no will [MQTT-3.1.3-9]
        self._offline.pop(client_id, None)
        if session is None:
            limit = cfg.max_sessions
            if limit and len(self.sessions) >= limit and not self._evict_offline():
                conn.refuse(ReasonCode.QUOTA_EXCEEDED,
                            f"max_sessions {limit} reached and every session is connected")
                return
            session = self._new_session(client_id, expiry)
            self.sessions[client_id] = session
        else:
            present = True  # [MQTT-3.2.2-2]
            session.expiry_interval = expiry
            if not session.persistent and session.store is not None:
                self._forget_stored(session)  # it ends with this connection now
        storage = self.storage
        if storage is not None and session.persistent:
            if session.store is None:
                session.store = storage
            will = p.will
            storage.put_session(client_id, expiry, None,
                                None if will is None else _pending_will(will, client_id))
        session.max_inflight = cfg.max_inflight_messages
        if v5:
            # the client's Receive Maximum bounds what we send unacknowledged [MQTT-3.3.4-7]
            session.max_inflight = min(cfg.max_inflight_messages,
                                       p.properties.get(Prop.RECEIVE_MAXIMUM, 65535))
        if self.authorizer.acl is not None:
            self._bind_acl(client_id, p.username, session)
        self.connections[client_id] = conn
        conn.keep_alive = keep_alive
        m = self.metrics
        m.clients_connected += 1
        m.clients_maximum = max(m.clients_maximum, m.clients_connected)
        log.info("client %r connected from %s (MQTT %s, clean=%d, keep-alive=%ds%s)", client_id,
                 conn.peer, {3: "3.1", 4: "3.1.1", 5: "5.0"}[level], p.clean_session,
                 keep_alive, ", session resumed" if present else "")
        conn.accept(client_id, session, present, p, props)
        if self.plugins:
            client = PluginClient(client_id, p.username, conn.peer, conn.listener, level)
            self._plugin_clients[client_id] = client
            self.plugins.forget(client_id)  # a new connection is asked again
            if p.will is not None and self.plugins.authorizers:
                # a will is a PUBLISH: asked now, the answer read when it would go out
                self.plugins.authorize(client, Action.PUBLISH, p.will.topic)
            if not conn.closed:
                self.plugins.fire("on_connect", client)

    def _bind_acl(self, client_id: str, username: str | None, session: Session) -> None:
        """ACL file: the client's entries for the user name it connected with (perhaps not
        the one that made the session, or unknown after a restart), and whether its
        subscriptions need each delivery checked. Messages waiting in the session that it
        may not read are dropped, as Mosquitto does on reconnect."""
        filters = [share[1] if (share := parse_share(f)) is not None else f
                   for f in session.subscriptions]
        client = self.authorizer.bind(client_id, username, filters)
        if client is not None and (session.queue or session.inflight):
            dropped = session.discard(lambda m: client.may_read(m.topic))
            if dropped:
                self.metrics.publish_dropped += dropped
                log.info("client %r: %d queued message(s) it may not read dropped", client_id,
                         dropped)

    def _certificate_user(self, conn: ClientConnection, p: Connect) -> bool | None:
        """``use-identity-as-username`` (Mosquitto's): on such a listener the CN of the
        client's verified certificate becomes ``p.username``, whatever the CONNECT said, and
        the certificate authenticates it (no password is checked; ACLs apply to the CN).
        None: not such a listener; True: done; False: no certificate with a CN, refused."""
        tls = self._tls.get(conn.listener)
        if tls is None or not tls.config.use_identity_as_username:
            return None
        cn = peer_common_name(conn.transport)
        if cn is None:
            conn.refuse(ReasonCode.BAD_USER_NAME_OR_PASSWORD,
                        "use-identity-as-username: no client certificate with a CN")
            return False
        p.username, p.password = cn, None
        return True

    def _new_session(self, client_id: str, expiry: int) -> Session:
        cfg = self.config.mqtt
        return Session(client_id, expiry, max_inflight=cfg.max_inflight_messages,
                       max_queued=cfg.max_queued_messages, max_queued_bytes=cfg.max_queued_bytes,
                       drop_oldest=cfg.queue_full_policy == "drop_oldest",
                       queue_qos0=cfg.queue_qos0_messages, metrics=self.metrics)

    def _connack_properties(self, client_id: str, p: Connect) -> dict[int, Any]:
        """What the broker enforces, advertised to an MQTT 5 client [MQTT 3.2.2.3]."""
        cfg = self.config.mqtt
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
            largest = min(largest, cfg.message_size_limit + _PUBLISH_OVERHEAD)
        if largest < MAX_PACKET_SIZE:
            props[Prop.MAXIMUM_PACKET_SIZE] = largest
        if cfg.topic_alias_maximum:
            props[Prop.TOPIC_ALIAS_MAXIMUM] = cfg.topic_alias_maximum
        if p.properties.get(Prop.REQUEST_RESPONSE_INFORMATION) == 1 and cfg.response_information:
            props[Prop.RESPONSE_INFORMATION] = cfg.response_information + client_id
        return props

    def on_connection_closed(self, conn: ClientConnection, publish_will: bool) -> None:
        """A connection ended, for whatever reason: release it, hand shared messages to other
        members, start the session's expiry, publish (or schedule) its will."""
        if conn in self._open:
            self._open.discard(conn)
            self._per_listener[conn.listener] -= 1
            self._total -= 1
        elif conn.admitted is False:
            self._refusing -= 1
            conn.admitted = None
        self.keepalive.discard(conn)
        cid = conn.client_id
        if cid is None or self.connections.get(cid) is not conn:
            return
        del self.connections[cid]
        self.metrics.clients_connected -= 1
        session = conn.session
        assert session is not None
        if self.plugins.events["on_disconnect"]:
            self.plugins.fire("on_disconnect", self._plugin_client(conn))
        if self.running:
            self._redistribute(session)
        will = conn.will
        conn.will = None
        message = None
        delay = 0
        if publish_will and will is not None and self.running:
            message = self._will_message(will, cid)
            delay = will.properties.get(Prop.WILL_DELAY_INTERVAL, 0) if will.properties else 0
            if self.plugins.authorizers and not self._plugin_allows(self.plugins.authorize(
                    self._plugin_client(conn), Action.PUBLISH, will.topic)):
                log.info("client %r: will to %r not authorised by a plugin; not published",
                         cid, will.topic)
                message = None
        if not session.persistent:
            self._end_session(session)
        elif self.running and session.expiry_interval != Session.NEVER:
            self._set_deadline(EXPIRE, cid, self.now() + session.expiry_interval)
        stored: StoredWill | None = None
        if message is not None and delay and session.persistent and self._loop is not None:
            # [MQTT-3.1.3-9] published after the delay, or when the session ends if sooner
            self._wills[cid] = message
            self._set_deadline(WILL, cid, self.now() + delay)
            stored = StoredWill(message, delay, to_wall(self.now() + delay, self._loop))
            log.info("client %r: will to %r delayed %ds", cid, message.topic, delay)
        elif message is not None:
            log.info("client %r: publishing its will to %r", cid, message.topic)
            self.publish(message)
        elif will is not None and not self.running and session.persistent:
            # closed by a shutdown: the will goes out when the broker is back
            stored = _pending_will(will, cid)
        if session.persistent and self.sessions.get(cid) is session:
            self._offline[cid] = None
        if session.store is not None and self.sessions.get(cid) is session:
            session.disconnected_at = time.time()
            session.store.put_session(cid, session.expiry_interval, session.disconnected_at,
                                      stored)

    def _will_message(self, will: Will, cid: str) -> Message:
        props = will.properties
        expires_at = None
        if props:
            mei = props.get(Prop.MESSAGE_EXPIRY_INTERVAL)
            if mei is not None:
                expires_at = self.now() + mei
            props = {k: v for k, v in props.items() if k not in _WILL_ONLY}
        return Message(will.topic, will.payload, will.qos, will.retain, props or None, cid,
                       expires_at)

    # -- deadlines: session expiry and delayed wills (core/deadlines.py) --------------------------

    def _set_deadline(self, kind: str, cid: str, at: float) -> None:
        self._deadlines.set((kind, cid), at)
        self._arm_deadline_timer()

    def _arm_deadline_timer(self) -> None:
        """One timer, for the earliest deadline (a later one is armed when it fires)."""
        at = self._deadlines.next_at()
        timer = self._deadline_timer
        if timer is not None and at is not None and self._deadline_timer_at <= at:
            return  # armed already for this one or an earlier one
        if timer is not None:
            timer.cancel()
            self._deadline_timer = None
        if at is not None and self._loop is not None:
            self._deadline_timer = self._loop.call_at(at, self._deadline_timer_fired)
            self._deadline_timer_at = at

    def _deadline_timer_fired(self) -> None:
        assert self._loop is not None
        self._deadline_timer = None
        # the loop may run a timer a clock tick early: the deadline it was armed for is due
        self.handle_timer(max(self._loop.time(), self._deadline_timer_at))

    def handle_timer(self, now: float) -> None:
        """Act on every deadline due at ``now``: delayed wills go out, sessions expire."""
        for kind, cid in self._deadlines.pop_due(now):
            if kind == WILL:
                self._publish_delayed_will(cid)
            else:
                self._expire_session(cid)
        self._arm_deadline_timer()

    def _publish_delayed_will(self, cid: str) -> None:
        pending = self._wills.pop(cid, None)
        if pending is not None:
            self._deadlines.cancel((WILL, cid))
            log.info("client %r: publishing its delayed will to %r", cid, pending.topic)
            self.publish(pending)
            session = self.sessions.get(cid)
            if session is not None and session.store is not None:
                session.store.put_session(cid, session.expiry_interval,
                                          session.disconnected_at, None)

    def _expire_session(self, cid: str) -> None:
        session = self.sessions.get(cid)
        if session is not None and cid not in self.connections:
            log.info("session %r expired", cid)
            self._end_session(session)

    def _cancel_expiry(self, cid: str) -> None:
        self._deadlines.cancel((EXPIRE, cid))

    def _end_session(self, session: Session) -> None:
        """The session is over: its subscriptions go, and a will still waiting goes out."""
        cid = session.client_id
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(cid, topic_filter)
        if self.sessions.get(cid) is session:
            del self.sessions[cid]
            self._offline.pop(cid, None)
            self.authorizer.forget(cid)
            if self.plugins:
                self._plugin_clients.pop(cid, None)
                self.plugins.forget(cid)
                if session.persistent and cid not in self.connections:
                    self.plugins.fire("on_session_expired", cid)
        if session.store is not None:
            self._forget_stored(session)
        self._cancel_expiry(cid)
        self._publish_delayed_will(cid)

    def admin_disconnect(self, client_id: str, code: ReasonCode,
                         discard_session: bool = False) -> bool:
        """Close a client's connection on an operator's word (MQTT 5: DISCONNECT ``code``);
        its will is published, as on every close that is not its own DISCONNECT
        [MQTT-3.1.2-8]. False when it is not connected."""
        conn = self.connections.get(client_id)
        if conn is None:
            return False
        conn.disconnect(code, "disconnected by an operator (admin API)", publish_will=True)
        if discard_session:
            self.discard_session(client_id)
        return True

    def discard_session(self, client_id: str) -> bool:
        """End a session now, as if it had expired (a connected client is disconnected first,
        its will published). False when there is no such session."""
        if client_id in self.connections:
            self.admin_disconnect(client_id, ReasonCode.ADMINISTRATIVE_ACTION)
        session = self.sessions.get(client_id)
        if session is None:
            return False
        log.info("client %r: session discarded", client_id)
        self._end_session(session)
        return True

    def adopt_session(self, rec: StoredSession) -> None:
        """A session this node took over from another node (cluster), offline until its
        client's CONNECT goes on a moment later."""
        self._restore(Snapshot([rec], []), adopted=True)

    def release_session(self, client_id: str, to_node: str) -> None:
        """Another node took ``client_id`` over (cluster): close its connection here [MQTT-
        3.1.4-3], and drop its session from this node without deleting what is stored (the
        other node reads it). A delayed will is not published: the session goes on there."""
        conn = self.connections.get(client_id)
        if conn is not None:
            conn.disconnect(ReasonCode.SESSION_TAKEN_OVER,
                            f"session taken over by a connection on node {to_node}",
                            publish_will=True)
        if self._wills.pop(client_id, None) is not None:
            self._deadlines.cancel((WILL, client_id))
        self._cancel_expiry(client_id)
        session = self.sessions.pop(client_id, None)
        if session is None:
            return
        self._offline.pop(client_id, None)
        self.authorizer.forget(client_id)
        if self.cluster is not None:
            self.cluster.store.forget_items(client_id)
            # its plain subscriptions stay routed here a while: a forwarding address
            plain = [f for f in session.subscriptions if parse_share(f) is None]
            self.drop_routes(client_id, [f for f in session.subscriptions if f not in plain])
            self.cluster.moved_away(client_id, to_node, plain)
        session.store = None

    def drop_routes(self, client_id: str, filters: list[str]) -> None:
        """Unsubscribe a session that is not here any more from ``filters``."""
        if client_id in self.sessions:
            return  # it came back meanwhile: its subscriptions are its own again
        for topic_filter in filters:
            self.router.unsubscribe(client_id, topic_filter)

    def _evict_offline(self) -> bool:
        """max_sessions is reached: end the session that has been offline longest (as if it
        had expired: its will goes out), to make room. False when every session is online."""
        cid = next(iter(self._offline), None)
        if cid is None:
            return False
        session = self.sessions[cid]
        log.warning("max_sessions %d reached: discarding the session of %r, the one offline "
                    "longest", self.config.mqtt.max_sessions, cid)
        self.metrics.sessions_evicted += 1
        self._end_session(session)
        return True

    def _forget_stored(self, session: Session) -> None:
        """Delete a session's stored records, item by item (message references count)."""
        store = session.store
        assert store is not None
        cid = session.client_id
        for item in session.items():
            if item.seq:
                store.delete_item(item.seq, item.message)
        for topic_filter in session.subscriptions:
            store.delete_subscription(cid, topic_filter)
        for pid in session.inbound_qos2:
            store.delete_inbound(cid, pid)
        store.delete_session(cid)
        session.store = None

    def _redistribute(self, session: Session) -> None:
        """Messages a leaving shared-subscription member had not acknowledged go to another
        member of the same group [MQTT 4.8.2]."""
        if not session.inflight and not session.queue:
            return
        taken = session.take_shared()
        keep: list[Queued] = []
        for item in taken:
            assert item.share is not None
            group = self.router.group(item.share)
            picked = group.pick(self._available, exclude=session.client_id) if group else None
            reader = self.authorizer.readers.get(picked[0]) if picked is not None else None
            if picked is None or (reader is not None and not reader.may_read(item.message.topic)):
                keep.append(item)
                continue
            cid, sub = picked
            self._deliver_to(cid, item.message, min(item.qos, sub.qos), item.retain,
                             (sub.identifier,) if sub.identifier else (), item.share)
        if keep:
            session.requeue(keep)

    # -- routing ----------------------------------------------------------------------------------

    def _available(self, cid: str) -> bool:
        """Can this client take another message now (online, window not full)?"""
        conn = self.connections.get(cid)
        if conn is None:
            return False
        s = conn.session
        return s is not None and len(s.inflight) < s.max_inflight

    def publish_from(self, conn: ClientConnection, message: Message,
                     plugins_allow: bool = True) -> int:
        """A client published: check it may, then route. Returns the MQTT 5 reason code for
        its PUBACK/PUBREC (0x00, 0x10 no matching subscribers, 0x87 not authorised, 0x95
        payload over ``message_size_limit``). ``plugins_allow``: the authorizing plugins'
        answer for its topic, which the connection asked first (:meth:`publish_answer`)."""
        if message.topic.startswith("$"):
            # clients do not publish to $ topics ($SYS belongs to the broker)
            self.metrics.sys_publish_refused += 1
            log.debug("client %s: PUBLISH to %r refused ($ topics are the broker's)",
                      conn.name, message.topic)
            return ReasonCode.NOT_AUTHORIZED
        limit = self.config.mqtt.message_size_limit
        if limit and len(message.payload) > limit:
            # Mosquitto's message_size_limit: neither delivered nor retained; the flow still
            # completes (3.1/3.1.1 cannot say why; v5 PUBACK/PUBREC 0x95)
            self.metrics.publish_dropped += 1
            log.info("client %s: PUBLISH to %r dropped: payload %d bytes over "
                     "message_size_limit %d", conn.name, message.topic, len(message.payload),
                     limit)
            return ReasonCode.PACKET_TOO_LARGE
        auth = self.authorizer
        if auth.publish_checked and not auth.may_publish(conn.client_id or "", conn.username,
                                                         message.topic):
            # dropped; 3.1.1 cannot say so (acknowledged as usual), v5 gets 0x87
            self.metrics.publish_dropped += 1
            log.info("client %s: PUBLISH to %r not authorised", conn.name, message.topic)
            return ReasonCode.NOT_AUTHORIZED
        plugins = self.plugins
        if not plugins_allow:
            self.metrics.publish_dropped += 1
            log.info("client %s: PUBLISH to %r not authorised by a plugin", conn.name,
                     message.topic)
            return ReasonCode.NOT_AUTHORIZED
        if plugins.message_hooks:
            changed = plugins.on_message(self._plugin_client(conn), message)
            if changed is None:
                log.debug("client %s: PUBLISH to %r dropped by a plugin", conn.name,
                          message.topic)
                return ReasonCode.SUCCESS
            message = changed
        if message.retain and message.qos and conn.level == V5 \
                and self.config.mqtt.retain_available and not self.retained.fits(message):
            # refused as a whole: 0x97 tells the publisher it was neither kept nor delivered
            self._retained_full(message, conn, "refused with 0x97")
            return ReasonCode.QUOTA_EXCEEDED
        if not self.publish(message, conn):
            return ReasonCode.NO_MATCHING_SUBSCRIBERS
        return ReasonCode.SUCCESS

    def _retained_full(self, message: Message, conn: ClientConnection | None, what: str) -> None:
        m = self.metrics
        if m.retained_dropped % 1000 == 0:
            log.warning("%s: retained message to %r not kept: %d retained messages, %d bytes "
                        "(max_retained_messages %d, max_retained_bytes %d); %s (%d so far)",
                        f"client {conn.name}" if conn is not None else "broker", message.topic,
                        len(self.retained), self.retained.bytes,
                        self.config.mqtt.max_retained_messages,
                        self.config.mqtt.max_retained_bytes, what, m.retained_dropped + 1)
        m.retained_dropped += 1

    def publish(self, message: Message, source: ClientConnection | None = None) -> int:
        """Retain if asked, then hand ``message`` to every matching session, once each, at
        min(publish QoS, granted QoS) [MQTT-3.8.4-6]. Returns how many sessions it went to."""
        if message.retain and self.config.mqtt.retain_available:
            if self.retained.fits(message):
                self.retained.store(message)
                if self.plugins.events["on_retained"] and not message.topic.startswith("$SYS/"):
                    self.plugins.fire("on_retained", message.topic,
                                      _plugin_message(message) if message.payload else None)
            else:
                self._retained_full(message, source, "delivered, not retained")
        direct, shared = self.router.route(message.topic, message.sender, self._available)
        if self.cluster is not None and not message.topic.startswith("$SYS/"):
            # other nodes' subscribers; each shared group is served by one node. ($SYS is
            # each node's own: its clients, its counters.)
            mine = self.cluster.forward(message, {d.share for _, d in shared if d.share})
            if len(mine) < len(shared):
                shared = [(cid, d) for cid, d in shared if d.share in mine]
            self.cluster.throttle(source)
        return self._deliver_routed(message, direct, shared, source)

    def deliver_forwarded(self, message: Message, direct: bool, groups: set[str]) -> int:
        """A message another node forwarded: to this node's subscribers (``direct``: the
        plain ones; ``groups``: the shared groups this node was picked to serve)."""
        plain, shared = self.router.route(message.topic, message.sender, self._available)
        if not direct:
            plain = {}
        shared = [(cid, d) for cid, d in shared if d.share in groups]
        return self._deliver_routed(message, plain, shared, None)

    def deliver_forwarded_to(self, client_id: str, message: Message) -> bool:
        """A message for one session only, if its plain subscriptions match (the cluster
        replays a dead node's inbox into a session taken over from it)."""
        direct, _ = self.router.route(message.topic, message.sender, self._available)
        d = direct.get(client_id)
        if d is None:
            return False
        return self._deliver_routed(message, {client_id: d}, [], None) > 0

    def _deliver_routed(self, message: Message, direct: dict[str, Delivery],
                        shared: list[tuple[str, Delivery]],
                        source: ClientConnection | None) -> int:
        readers = self.authorizer.readers  # empty unless an ACL file needs deliveries checked
        if readers:
            direct, shared = _readable(message.topic, direct, shared, readers)
        mqos = message.qos
        if self.plugins.authorizers:
            return self._deliver_authorized(message, direct, shared, source)
        for cid, d in direct.items():
            # [MQTT-3.3.1-9] RETAIN is 0 on forwarding, unless Retain As Published [MQTT-3.3.1-13]
            self._deliver_to(cid, message, min(mqos, d.qos),
                             message.retain and d.retain_as_published, d.identifiers, None,
                             source)
        for cid, d in shared:
            self._deliver_to(cid, message, min(mqos, d.qos),
                             message.retain and d.retain_as_published, d.identifiers, d.share,
                             source)
        return len(direct) + len(shared)

    def _deliver_authorized(self, message: Message, direct: dict[str, Delivery],
                            shared: list[tuple[str, Delivery]],
                            source: ClientConnection | None) -> int:
        """As _deliver_routed, each subscriber asked of the authorizing plugins first
        (Action.RECEIVE). One whose answer is on its way gets the message when it comes:
        later messages on the topic wait behind the same answer, so their order holds."""
        n = 0
        mqos = message.qos
        targets: list[tuple[str, Delivery, str | None]] = [
            (cid, d, None) for cid, d in direct.items()]
        targets += [(cid, d, d.share) for cid, d in shared]
        for cid, d, share in targets:
            retain = message.retain and d.retain_as_published
            answer = self._may_receive(cid, message.topic)
            if isinstance(answer, asyncio.Future):
                answer.add_done_callback(functools.partial(
                    self._deliver_when_allowed, cid, message, min(mqos, d.qos), retain,
                    d.identifiers, share))
            elif answer is False:
                continue
            else:
                self._deliver_to(cid, message, min(mqos, d.qos), retain, d.identifiers,
                                 share, source)
            n += 1
        return n

    def _deliver_when_allowed(self, cid: str, message: Message, qos: int, retain: bool,
                              identifiers: tuple[int, ...], share: str | None,
                              answer: asyncio.Future[bool | None]) -> None:
        if self._plugin_allows(answer) and self.running:
            self._deliver_to(cid, message, qos, retain, identifiers, share)

    def _retained_when_allowed(self, conn: ClientConnection,
                               item: tuple[Message, int, bool, tuple[int, ...]],
                               answer: asyncio.Future[bool | None]) -> None:
        if self._plugin_allows(answer) and not conn.closed:
            conn.deliver_retained([item])

    def _may_receive(self, cid: str, topic: str) -> bool | None | asyncio.Future[bool | None]:
        client = self._plugin_clients.get(cid) or PluginClient(cid, None, "", "", 4)
        return self.plugins.authorize(client, Action.RECEIVE, topic)

    def _plugin_allows(self, answer: bool | None | asyncio.Future[bool | None]) -> bool:
        """A plugin decision as allowed or not (no opinion: allowed; the broker's own ACLs
        decide apart). A future still pending here counts as the timeout outcome."""
        if isinstance(answer, asyncio.Future):
            if not answer.done() or answer.cancelled():
                return self.plugins.timeout_allows
            answer = answer.result()
        return answer is not False

    def _plugin_client(self, conn: ClientConnection) -> PluginClient:
        cid = conn.client_id or ""
        client = self._plugin_clients.get(cid)
        if client is None:
            client = PluginClient(cid, conn.username, conn.peer, conn.listener, conn.level)
        return client

    def _plugin_publish(self, pm: PluginMessage) -> None:
        """A plugin publishes (its context's publish): through on_message, then routed."""
        message: Message | None = Message(pm.topic, pm.payload, pm.qos, pm.retain,
                                          dict(pm.properties) or None, None)
        validate_topic_name(pm.topic)
        if self.plugins.message_hooks:
            message = self.plugins.on_message(None, message)  # type: ignore[arg-type]
        if message is not None:
            self.publish(message)

    def publish_answer(self, conn: ClientConnection,
                       topic: str) -> bool | asyncio.Future[bool | None]:
        """A PUBLISH to ``topic`` arrived: whether the authorizing plugins allow it, or their
        answer still on its way (the connection then holds the packet and asks again)."""
        if not self.plugins.authorizers or topic.startswith("$"):
            return True  # ($ topics are refused to clients whatever plugins say)
        answer = self.plugins.authorize(self._plugin_client(conn), Action.PUBLISH, topic)
        if isinstance(answer, asyncio.Future) and not answer.done():
            return answer
        return self._plugin_allows(answer)

    def _deliver_to(self, cid: str, message: Message, qos: int, retain: bool,
                    identifiers: tuple[int, ...], share: str | None = None,
                    source: ClientConnection | None = None) -> None:
        conn = self.connections.get(cid)
        if conn is not None:
            conn.deliver(message, qos, retain, identifiers, share, source)
        else:
            session = self.sessions.get(cid)
            if session is not None:
                session.offer(message, qos, retain, False, identifiers, share)
            elif self.cluster is not None:
                self.cluster.ghost(cid, message)  # its session just moved to another node

    def subscribe(self, conn: ClientConnection, p: Subscribe) -> None:
        """SUBSCRIBE: grant, SUBACK, then the matching retained messages [MQTT-3.8.4-3]."""
        session = conn.session
        assert session is not None and conn.client_id is not None
        cfg = self.config.mqtt
        v5 = conn.level == V5
        identifier = 0
        if v5:
            ids = p.properties.get(Prop.SUBSCRIPTION_IDENTIFIER)
            identifier = ids[0] if ids else 0
        for sub in p.subscriptions:  # the whole packet first: a malformed one changes nothing
            _check_filter(sub.topic_filter, v5, "SUBSCRIBE")
        plugins = self.plugins
        client = self._plugin_client(conn) if plugins else None
        if plugins.authorizers:
            assert client is not None
            pending = [a for sub in p.subscriptions
                       if isinstance(a := plugins.authorize(client, Action.SUBSCRIBE,
                                                            sub.topic_filter), asyncio.Future)
                       and not a.done()]
            if pending:  # an async plugin: the SUBSCRIBE (and what follows) waits for it
                raise HoldPacket(asyncio.ensure_future(asyncio.wait(pending)))
        codes: list[int] = []
        retained: list[tuple[Message, int, bool, tuple[int, ...]]] = []
        now = self.now()
        for sub in p.subscriptions:
            f = sub.topic_filter
            code = self._refusal(conn, session, sub.topic_filter, v5)
            if code is None and client is not None and plugins.authorizers and \
                    not self._plugin_allows(plugins.authorize(client, Action.SUBSCRIBE, f)):
                log.info("client %s: SUBSCRIBE %r refused by a plugin", conn.name, f)
                code = ReasonCode.NOT_AUTHORIZED
            if code is None and sub.no_local and f.startswith("$share/"):
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                    "No Local on a shared subscription [MQTT-3.8.3-4]")
            if code is not None:
                codes.append(code if v5 else SUBACK_FAILURE)
                continue
            granted = min(sub.qos, cfg.max_qos)
            sub.qos = granted
            sub.identifier = identifier
            new = f not in session.subscriptions
            session.subscriptions[f] = sub  # a repeat replaces [MQTT-3.8.4-3]
            self.router.subscribe(conn.client_id, sub)
            if session.store is not None:
                session.store.put_subscription(conn.client_id, sub)
            codes.append(granted)
            if client is not None and plugins.events["on_subscribe"]:
                plugins.fire("on_subscribe", client, f, granted)
            if f.startswith("$share/"):
                continue  # no retained messages on a shared subscription [MQTT 4.8.2]
            # Retain Handling: 0 always, 1 only for a new subscription, 2 never [MQTT-3.3.1-9/10]
            if sub.retain_handling == 0 or (sub.retain_handling == 1 and new):
                ident: tuple[int, ...] = (identifier,) if identifier else ()
                # ACL file: a filter wider than the read grants brings only what may be read
                reader = self.authorizer.readers.get(conn.client_id)
                for m in self.retained.match(f, now):
                    if reader is not None and not reader.may_read(m.topic):
                        continue
                    item = (m, min(m.qos, granted), True, ident)
                    if plugins.authorizers:  # the plugins' RECEIVE answer, as for deliveries
                        answer = self._may_receive(conn.client_id, m.topic)
                        if isinstance(answer, asyncio.Future):
                            answer.add_done_callback(functools.partial(
                                self._retained_when_allowed, conn, item))
                            continue
                        if answer is False:
                            continue
                    retained.append(item)
        # durable: after a crash, a session said to be present must hold this subscription
        # (matching PUBLISH may go first: [MQTT-3.8.4-4] lets them)
        conn.send_packet(Suback(p.packet_id, codes), durable=True)
        if retained:
            conn.deliver_retained(retained)  # [MQTT-3.3.1-8] RETAIN=1 for retained on subscribe

    def _refusal(self, conn: ClientConnection, session: Session, f: str,
                 v5: bool) -> int | None:
        """Why a filter cannot be subscribed to (a SUBACK reason code), or None."""
        problem = topic_filter_problem(f)
        code = ReasonCode.TOPIC_FILTER_INVALID
        inner = f  # what the ACLs judge: a shared subscription's own filter
        if problem is None:
            try:
                share = parse_share(f)
            except ValueError as exc:
                problem = str(exc)
            else:
                if share is not None:
                    inner = share[1]
                    problem = topic_filter_problem(inner)
        levels = self.config.mqtt.max_topic_levels  # each level is a node in the tree
        if problem is None and levels and inner.count("/") >= levels:
            problem = f"more than max_topic_levels ({levels}) levels"
        if problem is None and not self.authorizer.may_subscribe(conn.client_id or "",
                                                                 conn.username, inner):
            # 3.1.1: 0x80 [MQTT-3.9.3]; v5: auth.v5-subscribe-refusal (0x80 or 0x87)
            problem = "not authorised"
            code = ReasonCode(self.config.auth.v5_subscribe_refusal)
        limit = self.config.mqtt.max_subscriptions_per_client
        if problem is None and limit and f not in session.subscriptions \
                and len(session.subscriptions) >= limit:
            problem, code = f"over max_subscriptions_per_client {limit}", \
                ReasonCode.QUOTA_EXCEEDED
        if problem is None:
            return None
        log.info("client %s: SUBSCRIBE %r refused: %s", conn.name, f, problem)
        return int(code)

    def unsubscribe(self, conn: ClientConnection, p: Unsubscribe) -> None:
        """UNSUBSCRIBE: always answered with UNSUBACK [MQTT-3.10.4-5]."""
        session = conn.session
        assert session is not None and conn.client_id is not None
        for f in p.topic_filters:
            _check_filter(f, conn.level == V5, "UNSUBSCRIBE")
        codes: list[int] = []
        for f in p.topic_filters:
            if session.subscriptions.pop(f, None) is not None:
                self.router.unsubscribe(conn.client_id, f)
                if session.store is not None:
                    session.store.delete_subscription(conn.client_id, f)
                codes.append(ReasonCode.SUCCESS)
                if self.plugins.events["on_unsubscribe"]:
                    self.plugins.fire("on_unsubscribe", self._plugin_client(conn), f)
            elif topic_filter_problem(f) is not None:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)
            else:
                codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
        conn.send_packet(Unsuback(p.packet_id, codes if conn.level == V5 else []), durable=True)

    # -- $SYS --------------------------------------------------------------------------------------

    def sys_values(self) -> dict[str, str]:
        """``$SYS/broker/...`` topics and values, with Mosquitto's names."""
        m = self.metrics
        connected = len(self.connections)
        total = len(self.sessions)
        return {
            "$SYS/broker/version": f"mqttbroker version {__version__}",
            "$SYS/broker/uptime": f"{int(self.uptime())} seconds",
            "$SYS/broker/clients/connected": str(connected),
            "$SYS/broker/clients/active": str(connected),
            "$SYS/broker/clients/disconnected": str(total - connected),
            "$SYS/broker/clients/inactive": str(total - connected),
            "$SYS/broker/clients/total": str(total),
            "$SYS/broker/clients/maximum": str(m.clients_maximum),
            "$SYS/broker/messages/received": str(m.messages_received),
            "$SYS/broker/messages/sent": str(m.messages_sent),
            "$SYS/broker/publish/messages/received": str(m.publish_received),
            "$SYS/broker/publish/messages/sent": str(m.publish_sent),
            "$SYS/broker/publish/messages/dropped": str(m.publish_dropped),
            "$SYS/broker/bytes/received": str(m.bytes_received),
            "$SYS/broker/bytes/sent": str(m.bytes_sent),
            "$SYS/broker/subscriptions/count": str(self.router.count),
            "$SYS/broker/retained messages/count": str(len(self.retained)),
            "$SYS/broker/store/messages/count": str(
                sum(len(s.queue) + len(s.inflight) for s in self.sessions.values())),
            "$SYS/broker/plugins/errors": str(m.plugin_errors),
            "$SYS/broker/plugins/timeouts": str(m.plugin_timeouts),
        }

    def _publish_sys(self) -> None:
        for topic, value in self.sys_values().items():
            self.publish(Message(topic, value.encode(), 0, True))
        assert self._loop is not None
        self._sys_timer = self._loop.call_later(self.config.sys_interval, self._publish_sys)


def _readable(topic: str, direct: dict[str, Delivery], shared: list[tuple[str, Delivery]],
              readers: Mapping[str, ClientAcl]) -> tuple[dict[str, Delivery],
                                                         list[tuple[str, Delivery]]]:
    """The deliveries of a message on ``topic`` that the ACL file lets through: Mosquitto
    checks read access per message, so a subscription wider than the client's read grants
    (``#`` with read on ``a/#``) brings only what it may read. The router's result is cached
    and shared: filtered copies are made, only when something is filtered out."""
    if any((r := readers.get(cid)) is not None and not r.may_read(topic) for cid in direct):
        direct = {cid: d for cid, d in direct.items()
                  if (r := readers.get(cid)) is None or r.may_read(topic)}
    if shared:
        shared = [(cid, d) for cid, d in shared
                  if (r := readers.get(cid)) is None or r.may_read(topic)]
    return direct, shared


def _check_filter(topic_filter: str, v5: bool, what: str) -> None:
    """A malformed topic filter makes its packet malformed: the connection closes
    ([MQTT-4.7.3-1], [MQTT-4.7.1-*]; MQTT 5: DISCONNECT 0x81 first)."""
    problem = malformed_filter(topic_filter, v5)
    if problem is not None:
        raise ProtocolError(ReasonCode.MALFORMED_PACKET,
                            f"{what} with a malformed topic filter {topic_filter[:100]!r}: "
                            f"{problem}")


def _plugin_message(m: Message) -> PluginMessage:
    return PluginMessage(m.topic, m.payload, m.qos, m.retain, m.properties or {}, m.sender)


def _pending_will(will: Will, client_id: str) -> StoredWill:
    """A will as stored while its connection lasts (or after a shutdown ended it): the
    CONNECT's form, turned into the message to publish only when it goes out."""
    delay = will.properties.get(Prop.WILL_DELAY_INTERVAL, 0) if will.properties else 0
    return StoredWill(Message(will.topic, will.payload, will.qos, will.retain,
                              will.properties or None, client_id), delay)


__all__ = ["Broker", "ConnState", "ProtocolError"]
