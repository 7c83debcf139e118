"""The broker: the composition root. It builds the parts, opens the listeners, runs the
CONNECT steps, arms the one timer of the deadlines, publishes ``$SYS`` and shuts down.

The rules live below it: the per-connection protocol in ``protocol/connection.py`` (driven by
:class:`~mqttbroker.client.ClientConnection`), and the broker's in ``core/``: admission and
limits (admission.py), the CONNECT decision (connect.py), the session registry with takeover,
expiry and wills (registry.py), routing and fan-out (delivery.py), SUBSCRIBE/UNSUBSCRIBE
(subscriptions.py). Extensions (web/, cluster/, plugins/, persistence/) see it through the
Protocols of ``core/hooks.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from .auth import Authorizer
from .bridge import Bridges
from .client import ClientConnection
from .config import Config, ListenerConfig, load_config
from .core.admission import Admission
from .core.connect import Connector
from .core.deadlines import Deadlines
from .core.delivery import Dispatcher
from .core.hooks import Access, BridgeStats, GatewayStats
from .core.registry import Registry, will_message
from .core.subscriptions import Subscriptions
from .core.turns import EndOfTurn
from .enhanced_auth import EnhancedAuth
from .errors import ConfigError, ProtocolError
from .keepalive import KeepAliveWheel
from .message import Message
from .metrics import Metrics
from .mqttsn import Gateway
from .persistence import OwnerRecords, Snapshot, Storage, StoredSession, open_storage
from .plugins.api import Action
from .plugins.host import PluginHost
from .protocol.connection import ConnState, Limits
from .protocol.constants import ProtocolLevel, ReasonCode
from .protocol.packets import Connect, Subscribe, Subscription, Unsubscribe, Will
from .protocol.properties import PropertyId as Prop
from .retained import RetainedStore
from .router import Router, parse_share
from .session import Session
from .systopics import SysTopics
from .transports.rawtcp import RawServer
from .transports.tcp import serve_tcp
from .transports.tls import ListenerTLS, peer_common_name
from .transports.websocket import serve_websocket

if TYPE_CHECKING:
    from .cluster.node import ClusterNode
    from .web.server import HttpServer

log: Final = logging.getLogger("mqttbroker")

V5: Final[int] = ProtocolLevel.MQTT_5
KEEPALIVE_TICK: Final = 0.25  # seconds between keep-alive wheel checks


class Gatekeeper(Access, Protocol):
    """The broker's access control as the broker holds it (auth.py's Authorizer): what the
    core asks (:class:`~mqttbroker.core.hooks.Access`), and a client's grants forgotten when
    it goes. ``reload()`` (SIGHUP), when it has one, is looked up as it is called."""

    def forget(self, client_id: str) -> None:
        """``client_id`` is gone: drop what was bound to it."""


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
        # what the configuration allows every connection (protocol/connection.py)
        self.limits = Limits(cfg.max_packet_size, cfg.max_connect_size, cfg.topic_alias_maximum,
                             cfg.receive_maximum, cfg.max_topic_levels, cfg.max_qos,
                             cfg.retain_available)
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
        self.authorizer: Gatekeeper = Authorizer(self.config.auth, self.config.topic_check,
                                                 self.config.listeners)
        self.enhanced_auth = EnhancedAuth.from_config(self.config.auth.scram_users)
        # plugins (plugins/): imported and their options checked now, built in start()
        self.plugins = PluginHost(self.config.plugins, self.metrics,
                                  timeout=cfg.plugin_timeout,
                                  timeout_allows=cfg.plugin_timeout_outcome == "allow")
        # connection limits and the per-address defences (core/admission.py)
        self.admission: Admission[ClientConnection] = Admission(self.config, self.metrics)
        self.connection_rate = self.admission.connection_rate  # None when switched off
        self.login_failures = self.admission.login_failures
        self.running = False
        # sessions, their connections, expiry and wills (core/registry.py)
        self.registry: Registry[ClientConnection] = Registry(
            self.config, self.metrics, self.router, self.publish, self._session_ended,
            self._arm_deadline_timer)
        self.registry.storage = self.storage
        self.sessions = self.registry.sessions
        self.connections = self.registry.connections
        # routing, fan-out, the publish checks (core/delivery.py)
        self.dispatch: Dispatcher[ClientConnection] = Dispatcher(
            self.config, self.metrics, self.router, self.retained, self.authorizer,
            self.plugins, self.registry, lambda: self.running)
        self.dispatch.backplane = self.cluster
        self._plugin_clients = self.dispatch.plugin_clients
        # a client published (its PUBACK/PUBREC reason code): the connections call the
        # dispatcher's method itself, one call less per message
        self.publish_from = self.dispatch.publish_from
        self.connector: Connector[ClientConnection] = Connector(
            self.config, self.metrics, self.admission, self.registry, self.authorizer,
            self.plugins, self.dispatch.plugin_clients, self._certificate, self.now)
        self.connector.claims = self.cluster
        self.subscriptions: Subscriptions[ClientConnection] = Subscriptions(
            self.config, self.router, self.retained, self.authorizer, self.plugins,
            self.dispatch, self.now)
        self.addresses: list[tuple[str, str, int]] = []
        self.gateways: list[Gateway] = []  # MQTT-SN listeners (mqttsn/)
        self._records: dict[str, dict[str, bytes]] = {}  # extensions' records, as loaded
        self._servers: list[asyncio.Server | RawServer] = []
        self._tls: dict[str, ListenerTLS] = {}  # listener name -> its reloadable TLS context
        self.sys_topics = SysTopics(self, self.publish)  # $SYS (systopics.py)
        # bridges to other brokers (bridge/); their backlogs in the store (not a cluster's:
        # every node would share one bridge's backlog)
        self.bridges = Bridges(self.config.bridges, self,
                               self.storage if self.cluster is None else None)
        self.keepalive: KeepAliveWheel[ClientConnection] = KeepAliveWheel()
        # connect_timeout: when each connection not yet past CONNECT is closed (checked with
        # the keep-alive wheel; a timer handle made and cancelled per connection cost 4 us)
        self.connect_deadlines: Deadlines[ClientConnection] = Deadlines()
        self.end_of_turn: EndOfTurn[ClientConnection] = EndOfTurn()  # (its loop: at start)
        self.congested: set[ClientConnection] = set()  # clients whose socket buffer is full
        self._keepalive_timer: asyncio.TimerHandle | None = None
        # session expiry and delayed wills [MQTT 3.1.2.11.2, 3.1.3.2.2] are the registry's
        # deadlines, on the loop's clock: one armed timer for the earliest
        self._deadlines = self.registry.deadlines
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_timer_at = 0.0
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
        return dict(self.admission.per_listener)

    def now(self) -> float:
        """The event loop's clock, which every expiry in the broker is measured on."""
        assert self._loop is not None
        return self._loop.time()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every listener and start publishing ``$SYS``. Connections are taken once
        everything is up (sessions restored, plugins, cluster): "the port accepts" means
        "the broker is ready"."""
        self._started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self.end_of_turn.loop = self._loop
        if self.cluster is not None:
            self._restore(await self.cluster.open())
        elif self.storage is not None:
            self._restore(await self.storage.open(self._loop))
        try:
            if self.plugins:
                await self.plugins.start(self.config, self.dispatch.plugin_publish, self.now)
            for lc in self.config.listeners:
                name = lc.name
                if lc.type == "mqttsn":  # UDP: the MQTT-SN gateway (mqttsn/)
                    await self._start_gateway(lc)
                    continue
                # TLS: ConfigError naming the listener key if a file does not load or fit
                tls = ListenerTLS(lc) if lc.ssl else None
                if tls is not None:
                    self._tls[name] = tls

                def factory(name: str = name) -> ClientConnection:
                    return ClientConnection(self, name, self._loop)

                context = None if tls is None else tls.context
                timeout = self.config.mqtt.connect_timeout
                if lc.type == "ws":
                    server = await serve_websocket(lc.host, lc.port, factory, path=lc.path,
                                                   ssl=context, handshake_timeout=timeout,
                                                   reuse_port=self.reuse_port,
                                                   pack_packets=lc.ws_pack_packets,
                                                   start_serving=False, turn=self.end_of_turn)
                    kind = f"MQTT over WebSocket at {lc.path}"
                else:
                    # (an MQTT client speaks first: accepted once its CONNECT is in)
                    server = await serve_tcp(lc.host, lc.port, factory, ssl=context,
                                             handshake_timeout=timeout,
                                             reuse_port=self.reuse_port, start_serving=False,
                                             defer_accept=True, turn=self.end_of_turn)
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
        for gateway in self.gateways:  # (their stored sessions need a running broker)
            gateway.resume()
        # the ports are bound above but accept connections only now: a client that comes
        # while the broker starts is refused (and tries again), never accepted and dropped
        for server in self._servers:
            await server.start_serving()
        self._keepalive_tick()
        self.sys_topics.start()
        self.bridges.start()

    async def _start_gateway(self, lc: ListenerConfig) -> None:
        """An MQTT-SN listener: its clients join as connections of this broker."""

        def factory(name: str = lc.name) -> ClientConnection:
            return ClientConnection(self, name)

        owner = f"mqttsn:{lc.name}"  # (its persistent sessions: registrations, sleep)
        records = OwnerRecords(self.storage, owner, self._records.pop(owner, None))
        gateway = Gateway(lc, factory, self.publish, self.metrics, records,
                          self.config.mqtt.max_queued_messages or 1000)
        host, port = await gateway.start(self.reuse_port)
        self.gateways.append(gateway)
        self.addresses.append((lc.name, host, port))
        log.info("listener %s: listening on %s:%d (mqttsn, udp, gateway id %d)", lc.name,
                 host, port, lc.gateway_id)

    def _restore(self, snapshot: Snapshot, adopted: bool = False) -> None:
        """Put back what storage kept: retained messages, then sessions (offline until their
        clients come back) with their expiry counting the downtime, then their wills."""
        assert self._loop is not None and self.storage is not None
        if not adopted:
            self._records = snapshot.records
        for m in snapshot.retained:
            self.retained.load(m)
        sessions = [s for s in snapshot.sessions if not self.bridges.owns(s.client_id)]
        if len(sessions) < len(snapshot.sessions):  # bridges' backlogs (bridge/)
            self.bridges.restore([s for s in snapshot.sessions
                                  if self.bridges.owns(s.client_id)])
        self.registry.restore(sessions, self.now(), time.time())
        if (snapshot.sessions or snapshot.retained) and not adopted:
            log.info("restored %d sessions and %d retained messages", len(self.sessions),
                     len(self.retained))

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
        self.sys_topics.stop()
        await self.bridges.stop()
        for gateway in self.gateways:
            await gateway.stop()
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None
        self.running = False
        for server in self._servers:
            server.close()
        for conn in list(self.admission.open):
            conn.disconnect(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down",
                            publish_will=False)
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self.registry.clear_deadlines()
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
        """Four times a second: close the clients whose keep-alive ran out [MQTT-3.1.2-24],
        and the connections that did not complete CONNECT within connect_timeout."""
        now = self.now()
        for conn in self.keepalive.expire(now):
            conn.keepalive_timeout()
        for conn in self.connect_deadlines.pop_due(now):
            conn.connect_timeout()
        for conn in list(self.congested):
            conn.check_stalled(now)
        assert self._loop is not None
        self._keepalive_timer = self._loop.call_later(KEEPALIVE_TICK, self._keepalive_tick)

    def admit(self, conn: ClientConnection) -> bool | None:
        """A socket was accepted: True counted, False refuse at CONNECT, None drop now
        (shutting down, or core/admission.py says so)."""
        if not self.running:
            return None
        return self.admission.admit(conn, conn.last_received)  # (when it was accepted)

    def connect_delay(self, conn: ClientConnection) -> float | None:
        """How long to delay ``conn``'s CONNECT (failed logins from its address), None:
        refuse it at once."""
        return self.admission.connect_delay(conn, self.now())

    def login_failed(self, conn: ClientConnection) -> None:
        """``conn``'s credentials were refused: count it against its address."""
        self.admission.login_failed(conn, self.now())

    def cap_session_expiry(self, requested: int) -> int:
        """The Session Expiry Interval granted for ``requested``."""
        return self.registry.cap_session_expiry(requested)

    def connect(self, conn: ClientConnection, p: Connect,
                auth_props: dict[int, Any] | None = None) -> None:
        """A valid CONNECT (authenticated, if enhanced authentication ran): decide it
        (core/connect.py)."""
        self.connector.connect(conn, p, auth_props)

    def replace_will(self, conn: ClientConnection, will: Will | None) -> None:
        """``conn``'s will changes mid-connection (MQTT-SN's WILLTOPICUPD/WILLMSGUPD): the
        same checks as at CONNECT, and a persistent session stores it."""
        conn.will = self.connector.screen_will(conn.client_id or "", conn.username, will)
        if conn.session is not None:
            self.registry.store_will(conn.session, conn.will)

    def _certificate(self, conn: ClientConnection) -> tuple[bool, str | None]:
        """Whether ``conn``'s listener takes the client certificate's CN as the user name
        (use-identity-as-username), and the CN of its verified certificate, if any."""
        tls = self._tls.get(conn.listener)
        if tls is None or not tls.config.use_identity_as_username:
            return False, None
        return True, peer_common_name(conn.transport)

    def on_connection_closed(self, conn: ClientConnection, publish_will: bool) -> None:
        """A connection ended, for whatever reason: release it, hand shared messages to other
        members, start the session's expiry, publish (or schedule) its will."""
        self.admission.released(conn)
        self.keepalive.discard(conn)
        cid = conn.client_id
        if cid is None or self.connections.get(cid) is not conn:
            return
        del self.connections[cid]
        self.metrics.clients_connected -= 1
        session = conn.session
        assert session is not None
        if self.plugins.events["on_disconnect"]:
            self.plugins.fire("on_disconnect", self.dispatch.plugin_client(conn))
        if self.running:
            self.dispatch.redistribute(session)
        will = conn.will
        conn.will = None
        message = None
        delay = 0
        if publish_will and will is not None and self.running:
            message = will_message(will, cid, self.now())
            delay = will.properties.get(Prop.WILL_DELAY_INTERVAL, 0) if will.properties else 0
            if self.plugins.authorizers and not self.dispatch.plugin_allows(self.plugins.authorize(
                    self.dispatch.plugin_client(conn), Action.PUBLISH, will.topic)):
                log.info("client %r: will to %r not authorised by a plugin; not published",
                         cid, will.topic)
                message = None
        self.registry.detach(session, message, delay, will, self.running,
                             self.now() if self._loop is not None else 0.0, time.time())

    # -- deadlines: session expiry and delayed wills (core/deadlines.py) --------------------------

    def _arm_deadline_timer(self) -> None:
        """One timer, for the earliest deadline (a later one is armed when it fires)."""
        at = self.registry.next_deadline()
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
        """Act on every deadline due at ``now`` (delayed wills, session expiry), then arm the
        timer for the next one."""
        self.registry.handle_timer(now)
        self._arm_deadline_timer()

    def _session_ended(self, session: Session, expired: bool) -> None:
        """The registry ended a session: it is forgotten by the ACLs and the plugins."""
        cid = session.client_id
        self.authorizer.forget(cid)
        if self.plugins:
            self._plugin_clients.pop(cid, None)
            self.plugins.forget(cid)
            if expired:
                self.plugins.fire("on_session_expired", cid)

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
        return self.registry.discard(client_id)

    def bridge_stats(self) -> list[BridgeStats]:
        """Every configured bridge's state and counters (bridge/link.py keeps them)."""
        return [link.stats for link in self.bridges.links]

    def gateway_stats(self) -> list[GatewayStats]:
        """Every MQTT-SN listener's counters (mqttsn/gateway.py)."""
        return [gateway.stats() for gateway in self.gateways]

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
        session = self.registry.release(client_id)
        if session is None:
            return
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

    # -- delivery (core/delivery.py) ----------------------------------------------------------

    def publish(self, message: Message, source: ClientConnection | None = None) -> int:
        """Retain if asked, then hand ``message`` to every matching session."""
        return self.dispatch.publish(message, source)

    def publish_answer(self, conn: ClientConnection,
                       topic: str) -> bool | asyncio.Future[bool | None]:
        """The plugins' answer for a PUBLISH to ``topic``, or that answer on its way."""
        return self.dispatch.publish_answer(conn, topic)

    def slot_free(self, conn: ClientConnection) -> None:
        """``conn`` may take work queued at other members of its shared groups."""
        if self.running:
            self.dispatch.steal(conn, self.now)

    def deliver_forwarded(self, message: Message, direct: bool, groups: set[str]) -> int:
        """A message another node forwarded, to this node's subscribers."""
        return self.dispatch.deliver_forwarded(message, direct, groups)

    def deliver_forwarded_to(self, client_id: str, message: Message) -> bool:
        """A message for one session only, if its plain subscriptions match."""
        return self.dispatch.deliver_forwarded_to(client_id, message)

    def subscribe(self, conn: ClientConnection, p: Subscribe) -> None:
        """SUBSCRIBE: grant, SUBACK, retained messages (core/subscriptions.py)."""
        self.subscriptions.subscribe(conn, p)

    def unsubscribe(self, conn: ClientConnection, p: Unsubscribe) -> None:
        """UNSUBSCRIBE: UNSUBACK (core/subscriptions.py)."""
        self.subscriptions.unsubscribe(conn, p)

    # -- $SYS --------------------------------------------------------------------------------------

    # -- local clients of extensions (bridges: core/hooks.LocalClients) --------------------------

    def attach_local(self, client: Any, filters: list[tuple[str, int]]) -> None:
        """Register an extension's local client and subscribe it (No Local) to ``filters``;
        the retained messages they match go to it as to any new subscriber."""
        cid = client.client_id
        self.sessions[cid] = client.session
        self.connections[cid] = client
        now = self.now()
        for topic_filter, qos in filters:
            sub = Subscription(topic_filter, qos, no_local=True, retain_as_published=True)
            client.session.own_subscriptions()[topic_filter] = sub
            self.router.subscribe(cid, sub)
            client.deliver_retained([(m, min(m.qos, qos), True, ())
                                     for m in self.retained.match(topic_filter, now)])

    def detach_local(self, client_id: str) -> None:
        """Unregister an extension's local client and its subscriptions."""
        session = self.sessions.pop(client_id, None)
        self.connections.pop(client_id, None)
        if session is not None:
            for topic_filter in session.subscriptions:
                self.router.unsubscribe(client_id, topic_filter)

    def sys_values(self) -> dict[str, str]:
        """``$SYS/broker/...`` topics and values, with Mosquitto's names (systopics.py)."""
        return self.sys_topics.values()


__all__ = ["Broker", "ConnState", "ProtocolError"]
