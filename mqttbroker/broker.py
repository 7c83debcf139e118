"""The broker: listeners, the session registry, takeover, wills, routing, ``$SYS``, shutdown.

It composes the pure parts (router, sessions, retained store, authorizer) and holds no protocol
logic: packets are handled by :class:`~mqttbroker.client.ClientConnection`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from . import __version__
from .auth import Authorizer
from .client import ClientConnection, ConnState
from .config import Config, load_config
from .errors import ConfigError, ConfigIssue, ProtocolError
from .message import Message
from .metrics import Metrics
from .protocol.constants import SUBACK_FAILURE, ProtocolLevel, ReasonCode
from .protocol.packets import Connect, Suback, Subscribe, Unsuback, Unsubscribe
from .protocol.topics import topic_filter_problem, validate_topic_name
from .retained import RetainedStore
from .router import Router
from .session import Session
from .transports.tcp import serve_tcp

log = logging.getLogger("mqttbroker")


class Broker:
    """An MQTT broker; ``Broker(config)`` then ``await start()`` ... ``await shutdown()``.

    ``config`` is a :class:`Config`, or a dict in the YAML file's shape (hbmqtt/amqtt keys
    included), or None for the built-in defaults.
    """

    def __init__(self, config: Config | Mapping[str, Any] | None = None) -> None:
        self.config = config if isinstance(config, Config) else load_config(
            dict(config) if config is not None else None)
        if self.config.auth.password_file is not None:
            raise ConfigError([ConfigIssue(
                "auth.password-file", None,
                "password files are not supported yet; remove the key or use allow-anonymous")])
        self.metrics = Metrics()
        self.router = Router()
        self.retained = RetainedStore()
        self.authorizer = Authorizer(self.config.auth, self.config.topic_check)
        self.sessions: dict[str, Session] = {}
        self.connections: dict[str, ClientConnection] = {}
        self.addresses: list[tuple[str, str, int]] = []
        self._servers: list[asyncio.Server] = []
        self._open: set[ClientConnection] = set()
        self._per_listener: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._sys_timer: asyncio.TimerHandle | None = None
        self._started = 0.0
        self.running = False

    @property
    def port(self) -> int:
        """The bound port of the first listener (handy when it was configured as 0)."""
        return self.addresses[0][2]

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every listener and start publishing ``$SYS``."""
        self._started = time.monotonic()
        try:
            for lc in self.config.listeners:
                if lc.type != "tcp":
                    raise ConfigError([ConfigIssue(
                        f"listeners.{lc.name}.type", None,
                        f"listener type {lc.type!r} is not supported yet (only tcp)")])
                if lc.ssl:
                    raise ConfigError([ConfigIssue(
                        f"listeners.{lc.name}.ssl", None, "TLS listeners are not supported yet")])
                name = lc.name
                self._per_listener[name] = 0
                self._limits[name] = lc.max_connections

                def factory(name: str = name) -> ClientConnection:
                    return ClientConnection(self, name)

                server = await serve_tcp(lc.host, lc.port, factory)
                self._servers.append(server)
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    self.addresses.append((name, host, port))
                    log.info("listener %s: listening on %s:%d (tcp)", name, host, port)
        except BaseException:
            await self._close_servers()
            raise
        self.running = True
        if self.config.sys_interval > 0:
            self._publish_sys()

    async def shutdown(self) -> None:
        """Stop listening, close every client, stop timers."""
        if self._sys_timer is not None:
            self._sys_timer.cancel()
            self._sys_timer = None
        self.running = False
        for server in self._servers:
            server.close()
        for conn in list(self._open):
            conn.close(publish_will=False)
        await self._close_servers()
        log.info("broker stopped")

    async def _close_servers(self) -> None:
        for server in self._servers:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 2.0)
            except TimeoutError:
                pass
        self._servers.clear()

    # -- connections ----------------------------------------------------------------------------

    def admit(self, conn: ClientConnection) -> bool:
        """A socket was accepted: count it, or refuse it over the listener's limit."""
        name = conn.listener
        limit = self._limits.get(name, 0)
        if not self.running or (limit and self._per_listener[name] >= limit):
            log.warning("listener %s: refusing connection from %s (max_connections %d)",
                        name, conn.peer, limit)
            self.metrics.connections_refused += 1
            return False
        self._per_listener[name] += 1
        self._open.add(conn)
        self.metrics.connections_total += 1
        return True

    def connect(self, conn: ClientConnection, p: Connect) -> None:
        """Handle a valid CONNECT: identify, authenticate, take over, attach a session."""
        cfg = self.config.mqtt
        client_id = p.client_id
        level = p.protocol_level
        if not client_id:
            # [MQTT-3.1.3-8] empty id without clean session: 0x02; 3.1 needs an id
            if (not p.clean_session or level == ProtocolLevel.MQTT_3_1
                    or not cfg.allow_zero_length_clientid):
                conn.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client identifier")
                return
            client_id = "auto-" + uuid.uuid4().hex  # [MQTT-3.1.3-6]
        elif len(client_id) > cfg.max_client_id_length:
            conn.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                        f"client identifier longer than {cfg.max_client_id_length}")
            return
        if cfg.max_keepalive and (p.keep_alive > cfg.max_keepalive or p.keep_alive == 0):
            # 3.1/3.1.1 cannot be told a shorter keep-alive: refuse, as Mosquitto does
            conn.refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                        f"keep-alive {p.keep_alive}s outside max_keepalive {cfg.max_keepalive}s")
            return
        if p.will is not None:
            validate_topic_name(p.will.topic)  # [MQTT-3.1.3-11] raises: the connection closes
        code = self.authorizer.authenticate(client_id, p.username, p.password)
        if code != ReasonCode.SUCCESS:
            conn.refuse(code, "not authorised" if code == ReasonCode.NOT_AUTHORIZED
                        else "bad user name or password")
            return
        old = self.connections.get(client_id)
        if old is not None:
            # [MQTT-3.1.4-2] the existing connection is closed; its will is published
            log.info("client %r: taken over by a new connection from %s", client_id, conn.peer)
            old.close(publish_will=True)
        session = self.sessions.get(client_id)
        present = False
        if session is not None and (p.clean_session or not session.persistent):
            self._discard_session(session)  # [MQTT-3.1.2-6]
            session = None
        if session is None:
            session = Session(client_id, not p.clean_session,
                              max_inflight=cfg.max_inflight_messages,
                              max_queued=cfg.max_queued_messages,
                              drop_oldest=cfg.queue_full_policy == "drop_oldest",
                              queue_qos0=cfg.queue_qos0_messages, metrics=self.metrics)
            self.sessions[client_id] = session
        else:
            present = True  # [MQTT-3.2.2-2]
        self.connections[client_id] = conn
        m = self.metrics
        m.clients_connected += 1
        m.clients_maximum = max(m.clients_maximum, m.clients_connected)
        log.info("client %r connected from %s (MQTT %s, clean=%d, keep-alive=%ds%s)", client_id,
                 conn.peer, {3: "3.1", 4: "3.1.1", 5: "5.0"}[level], p.clean_session,
                 p.keep_alive, ", session resumed" if present else "")
        conn.accept(client_id, session, present, p)

    def on_connection_closed(self, conn: ClientConnection, publish_will: bool) -> None:
        """A connection ended, for whatever reason: release it, then publish its will."""
        if conn in self._open:
            self._open.discard(conn)
            self._per_listener[conn.listener] -= 1
        cid = conn.client_id
        if cid is None or self.connections.get(cid) is not conn:
            return
        del self.connections[cid]
        self.metrics.clients_connected -= 1
        session = conn.session
        if session is not None and not session.persistent:
            self._discard_session(session)
        will = conn.will
        conn.will = None
        if publish_will and will is not None and self.running:
            log.info("client %r: publishing its will to %r", cid, will.topic)
            self.publish(Message(will.topic, will.payload, will.qos, will.retain,
                                 will.properties or None, cid))

    def _discard_session(self, session: Session) -> None:
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(session.client_id, topic_filter)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    # -- routing ----------------------------------------------------------------------------------

    def publish_from(self, conn: ClientConnection, message: Message) -> None:
        """A client published: check it may, then route."""
        if message.topic.startswith("$"):
            # clients do not publish to $ topics ($SYS belongs to the broker)
            self.metrics.sys_publish_refused += 1
            log.debug("client %s: PUBLISH to %r refused ($ topics are the broker's)",
                      conn.name, message.topic)
            return
        if not self.authorizer.may_publish(conn.username, message.topic):
            self.metrics.publish_dropped += 1
            log.info("client %s: PUBLISH to %r not authorised", conn.name, message.topic)
            return
        self.publish(message)

    def publish(self, message: Message) -> None:
        """Retain if asked, then hand ``message`` to every matching session, once each, at
        min(publish QoS, granted QoS) [MQTT-3.8.4-6]."""
        if message.retain and self.config.mqtt.retain_available:
            self.retained.store(message)
        targets = self.router.route(message.topic)
        if not targets:
            return
        mqos = message.qos
        connections = self.connections
        sessions = self.sessions
        for cid, sub_qos in targets.items():
            qos = min(mqos, sub_qos)
            conn = connections.get(cid)
            if conn is not None:
                # [MQTT-3.3.1-9] RETAIN is 0 on messages forwarded to existing subscriptions
                conn.deliver(message, qos, False)
            else:
                session = sessions.get(cid)
                if session is not None:
                    session.offer(message, qos, False, online=False)

    def subscribe(self, conn: ClientConnection, p: Subscribe) -> None:
        """SUBSCRIBE: grant, SUBACK, then the matching retained messages [MQTT-3.8.4-3]."""
        session = conn.session
        assert session is not None and conn.client_id is not None
        max_qos = self.config.mqtt.max_qos
        codes: list[int] = []
        retained: list[tuple[Message, int]] = []
        for sub in p.subscriptions:
            f = sub.topic_filter
            problem = topic_filter_problem(f)
            if problem is None and not self.authorizer.may_subscribe(conn.username, f):
                problem = "not authorised"
            if problem is not None:
                log.info("client %s: SUBSCRIBE %r refused: %s", conn.name, f, problem)
                codes.append(SUBACK_FAILURE)
                continue
            granted = min(sub.qos, max_qos)
            sub.qos = granted
            session.subscriptions[f] = granted  # a repeat replaces [MQTT-3.8.4-3]
            self.router.subscribe(conn.client_id, sub)
            codes.append(granted)
            for m in self.retained.match(f):
                retained.append((m, min(m.qos, granted)))
        conn.send_packet(Suback(p.packet_id, codes))
        for m, q in retained:
            conn.deliver(m, q, True)  # [MQTT-3.3.1-8] RETAIN=1 for retained on subscribe

    def unsubscribe(self, conn: ClientConnection, p: Unsubscribe) -> None:
        """UNSUBSCRIBE: always answered with UNSUBACK [MQTT-3.10.4-5]."""
        session = conn.session
        assert session is not None and conn.client_id is not None
        for f in p.topic_filters:
            if session.subscriptions.pop(f, None) is not None:
                self.router.unsubscribe(conn.client_id, f)
        conn.send_packet(Unsuback(p.packet_id))

    # -- $SYS --------------------------------------------------------------------------------------

    def sys_values(self) -> dict[str, str]:
        """``$SYS/broker/...`` topics and values, with Mosquitto's names."""
        m = self.metrics
        connected = len(self.connections)
        total = len(self.sessions)
        return {
            "$SYS/broker/version": f"mqttbroker version {__version__}",
            "$SYS/broker/uptime": f"{int(time.monotonic() - self._started)} seconds",
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
        }

    def _publish_sys(self) -> None:
        for topic, value in self.sys_values().items():
            self.publish(Message(topic, value.encode(), 0, True))
        self._sys_timer = asyncio.get_running_loop().call_later(self.config.sys_interval,
                                                                self._publish_sys)


__all__ = ["Broker", "ConnState", "ProtocolError"]
