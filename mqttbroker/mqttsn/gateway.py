"""One ``type: mqttsn`` listener: a UDP socket, its clients, ADVERTISE and GWINFO.

Datagrams in: decoded (a malformed one is dropped with a log line naming the address and
what is wrong, and disturbs nobody), then handed to the client of that address, a new one
for a CONNECT. Each :class:`SnClient` drives its
:class:`~mqttbroker.protocol.mqttsn.session.GatewaySession` and, for the broker side, an
in-process MQTT client: a connection the broker made (``connection_factory``) over an
:class:`SnTransport`, spoken to with a sans-I/O
:class:`~mqttbroker.protocol.client_protocol.ClientProtocol` (MQTT 3.1.1, keep-alive off:
the MQTT-SN session keeps its own). What the broker writes is read back on the next turn of
the loop, never inside the broker's own call.

A connected persistent session (CleanSession 0) is kept in the listener's :class:`Records`
(with the broker's storage, committed with everything else), keyed by client id: its
registrations, Duration, will and whether it sleeps. After a restart each is put back at
start, asleep or active, its MQTT session resumed: a sleeper's wake-up (PINGREQ) delivers what
the broker kept for it, and an active client goes on with the topic ids it had.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]

from ..config import ListenerConfig
from ..core.hooks import CarriedConnection, GatewayStats, Records
from ..errors import MqttsnError
from ..message import Message
from ..metrics import Metrics
from ..protocol import client_protocol as cp
from ..protocol.constants import ProtocolLevel
from ..protocol.mqttsn import codec
from ..protocol.mqttsn import messages as sn
from ..protocol.mqttsn import session as ss
from ..protocol.packets import Will
from ..transports.udp import Address, UdpEndpoint, serve_udp

log = logging.getLogger("mqttbroker.mqttsn")

ConnectionFactory = Callable[[], CarriedConnection]
Peer = tuple[Address, bytes | None]  # a client: its address, and its node behind a forwarder
_PATTERN_CHARS = frozenset("*?[")  # a client_users key with one of them is a pattern
EARLY_DATAGRAMS = 10_000  # held while the broker starts (beyond: dropped, counted)


def _where(address: Address, node: bytes | None) -> str:
    """How log lines name a client's address."""
    via = f"node {node.hex()} via " if node is not None else ""
    return f"{via}{address[0]}:{address[1]}"


class SnTransport(asyncio.Transport):
    """What the broker's connection for one MQTT-SN client writes to and closes."""

    def __init__(self, client: SnClient) -> None:
        super().__init__()
        self._client = client
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._client.from_broker(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False  # (nothing to linger over: close() is immediate)

    def write_eof(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return not self._closing

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """The broker ends this client's MQTT side (a takeover, a refusal, an operator)."""
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._client.broker_closed, self)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._client.address
        return default


class SnClient:
    """One MQTT-SN client: its session (data) and its MQTT side in the broker."""

    def __init__(self, gateway: Gateway, address: Address, node: bytes | None = None) -> None:
        self.gateway = gateway
        self.address = address
        self.node = node  # the wireless node id behind a forwarder (None: direct)
        self.session = ss.GatewaySession(gateway.params)
        self.session.broker_backlog = self._broker_backlog
        self.proto: cp.ClientProtocol | None = None
        self.conn: CarriedConnection | None = None
        self.transport: SnTransport | None = None
        self._refs: dict[int, tuple[str, int]] = {}  # our MQTT packet id -> (kind, SN ref)
        self._qos: dict[int, int] = {}  # the broker's packet id -> the delivery's QoS
        self._inbox: list[bytes] = []  # what the broker wrote, read on the next turn
        self._reading: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._saved: tuple[Any, ...] | None = None  # what the stored record reflects
        self._deferred: sn.Pingreq | None = None  # a wake-up before the restored session is

    @property
    def name(self) -> str:
        via = f" node {self.node.hex()} via" if self.node is not None else ""
        return f"{self.session.client_id or '-'} ({via}{self.address[0]}:{self.address[1]})"

    @property
    def key(self) -> Peer:
        """Where its datagrams come from: the address, and the node behind a forwarder."""
        return self.address, self.node

    # -- from the client ---------------------------------------------------------------------

    def receive(self, msg: sn.Message, now: float) -> None:
        if self._inbox:  # what the broker wrote before this datagram comes first
            if self._reading is not None:
                self._reading.cancel()
            self._read_broker()
        s = self.session
        if isinstance(msg, sn.Pingreq) and s.restoring and s.state is ss.SnState.ASLEEP:
            self._deferred = msg  # (a wake-up: once the broker has given the session back)
            return
        s.receive(msg, now)
        self.pump(now)

    def pump(self, now: float) -> None:
        """Carry out what the session decided: toward the broker, then to the client."""
        for action in self.session.actions():
            self._apply(action, now)
        self._to_broker()
        for out in self.session.datagrams():
            self.gateway.send(out, self.address, self.node)
        for why in self.session.problems():
            log.info("mqttsn client %s: %s", self.name, why)
        saved = (self.session.durable_key(), self.address, self.node)
        if saved != self._saved:
            self._saved = saved
            self.gateway.save(self)
        self._arm(now)

    def _apply(self, a: ss.Action, now: float) -> None:
        if isinstance(a, ss.MqttConnect):
            self._open(a, now)
            return
        proto = self.proto
        if isinstance(a, ss.MqttDisconnect):
            self._close_mqtt(a.publish_will, now)
        elif isinstance(a, (ss.Sleep, ss.Awake)):
            self.gateway.asleep(self, isinstance(a, ss.Sleep))
        elif proto is None:
            return
        elif isinstance(a, ss.MqttPublish):
            pid = proto.publish(a.topic, a.payload, a.qos, a.retain, now)
            if pid is not None and a.ref is not None:
                self._refs[pid] = ("pub", a.ref)
        elif isinstance(a, ss.MqttSubscribe):
            self._refs[proto.subscribe([(a.topic_filter, a.qos)], now)] = ("sub", a.ref)
        elif isinstance(a, ss.MqttUnsubscribe):
            self._refs[proto.unsubscribe([a.topic_filter], now)] = ("unsub", a.ref)
        elif isinstance(a, ss.MqttAck):
            qos = self._qos.pop(a.ref, 0)
            if qos:
                proto.acknowledge(a.ref, qos, now)
        elif isinstance(a, ss.WillUpdate) and self.conn is not None:
            w = a.will
            self.conn.replace_will(None if w is None else
                                   Will(w.topic, w.payload, w.qos, w.retain))

    def _broker_backlog(self) -> int:
        """Messages the broker holds for this client beyond its in-flight window."""
        return self.conn.queued_messages() if self.conn is not None else 0

    def _open(self, a: ss.MqttConnect, now: float) -> None:
        """The client's CONNECT (its will exchanged): a new MQTT client in the broker."""
        if self.conn is not None:
            self._close_mqtt(False, now)
        w = a.will
        will = None if w is None else Will(w.topic, w.payload, w.qos, w.retain)
        username = self.gateway.username_for(a.client_id)
        # MQTT 5: a refused PUBLISH says so (PUBACK >= 0x80, the sensor gets "rejected");
        # a kept session (CleanSession 0) lasts until the client's next clean CONNECT
        self.proto = cp.ClientProtocol(
            a.client_id, level=ProtocolLevel.MQTT_5, clean_start=a.clean_session,
            keep_alive=0, username=username, will=will,
            session_expiry=0 if a.clean_session else 0xFFFFFFFF)
        self._refs.clear()
        self._qos.clear()
        self.transport = SnTransport(self)
        conn = self.conn = self.gateway.connection_factory()
        conn.connection_made(self.transport)
        conn.data_received(self.proto.connect(now))

    def _to_broker(self) -> None:
        if self.proto is not None and self.conn is not None and self.transport is not None \
                and not self.transport.is_closing():
            data = self.proto.data_to_send()
            if data:
                self.conn.data_received(data)

    def _close_mqtt(self, publish_will: bool, now: float) -> None:
        conn, proto, transport = self.conn, self.proto, self.transport
        self.conn = self.proto = self.transport = None
        if conn is None or transport is None or transport.is_closing():
            return
        if publish_will or proto is None:
            transport._closing = True  # (gone: the broker publishes the will)
            conn.connection_lost(ConnectionError("MQTT-SN client lost"))
        else:
            conn.data_received(proto.disconnect(now))  # (clean: no will [MQTT-3.14.4-3])
            if not transport.is_closing():
                transport.close()
            transport._closing = True
            conn.connection_lost(None)

    # -- from the broker ---------------------------------------------------------------------

    def from_broker(self, data: bytes) -> None:
        """The broker wrote to this client: read on the next turn (not inside its call)."""
        self._inbox.append(data)
        if self._reading is None:
            self._reading = asyncio.get_running_loop().call_soon(self._read_broker)

    def _read_broker(self) -> None:
        self._reading = None
        proto, data = self.proto, b"".join(self._inbox)
        self._inbox.clear()
        if proto is None:
            return
        now = asyncio.get_running_loop().time()
        s = self.session
        for ev in proto.receive_data(data, now):
            if isinstance(ev, cp.Connected):
                s.connack(0, now)
            elif isinstance(ev, cp.Refused):
                s.connack(ev.code, now)
            elif isinstance(ev, cp.Message):
                if ev.packet_id is not None:
                    self._qos[ev.packet_id] = ev.qos
                s.deliver(ev.topic, ev.payload, ev.qos, ev.retain, ev.packet_id, now)
            elif isinstance(ev, cp.Delivered):
                kind, ref = self._refs.pop(ev.packet_id, ("", 0))
                if kind == "pub":
                    s.published(ref, ev.code < 0x80, now)
            elif isinstance(ev, cp.Subscribed):
                kind, ref = self._refs.pop(ev.packet_id, ("", 0))
                if kind == "sub":
                    code = ev.codes[0] if ev.codes else 0x80
                    s.subscribed(ref, code if code < 0x80 else None, now)
            elif isinstance(ev, cp.Unsubscribed):
                kind, ref = self._refs.pop(ev.packet_id, ("", 0))
                if kind == "unsub":
                    s.unsubscribed(ref, now)
            elif isinstance(ev, cp.Closed):
                s.broker_closed(now)
        if self._deferred is not None and not s.restoring:
            msg, self._deferred = self._deferred, None
            s.receive(msg, now)
        self.pump(now)

    def broker_closed(self, transport: SnTransport) -> None:
        """The broker closed this client's MQTT side (``transport``: the one it closed; a
        connection the client has replaced since is not this one's business)."""
        if transport is not self.transport:
            return
        conn = self.conn
        self.conn = self.proto = self.transport = None
        if conn is not None:
            conn.connection_lost(None)
        now = asyncio.get_running_loop().time()
        self.session.broker_closed(now)
        self.pump(now)

    # -- time --------------------------------------------------------------------------------

    def _arm(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        at = self.session.next_deadline()
        # (the broker may impose a keep-alive on the MQTT side: max_keepalive)
        ping = self.proto.next_deadline() if self.proto is not None else None
        if ping is not None and (at is None or ping < at):
            at = ping
        if at is not None:
            self._timer = asyncio.get_running_loop().call_at(max(at, now), self._on_timer)
        elif self.session.state in (ss.SnState.DISCONNECTED, ss.SnState.LOST) \
                and self.conn is None:
            self.gateway.forget(self)

    def _on_timer(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        if self.proto is not None:
            self.proto.handle_timer(now)  # (PINGREQ to the broker when it asked for one)
        self.session.handle_timer(now)
        self.pump(now)


class Gateway:
    """One ``type: mqttsn`` listener."""

    def __init__(self, listener: ListenerConfig, connection_factory: ConnectionFactory,
                 publish: Callable[[Message], object], metrics: Metrics, records: Records,
                 max_buffered: int = 1000) -> None:
        self.listener = listener
        self.connection_factory = connection_factory
        self._publish = publish
        self.metrics = metrics
        self.params = ss.SessionParams(
            gateway_id=listener.gateway_id, predefined=dict(listener.predefined_topics),
            retry_interval=listener.retry_interval, max_retries=listener.max_retries,
            max_buffered=max_buffered)
        self.endpoint: UdpEndpoint | None = None
        self.clients: dict[Peer, SnClient] = {}
        self.sleepers: dict[str, SnClient] = {}  # sleeping clients by client id
        self.sleeping = 0
        self.dropped_datagrams = 0
        self._advertise: asyncio.TimerHandle | None = None
        self.records = records
        # connected persistent sessions, by client id (what the records hold), and the client
        # that stored each (a client id taken over from another address ends the old
        # client's session, which must not delete the new one's record)
        self._kept: dict[str, bytes] = dict(records.loaded)
        self._keeper: dict[str, SnClient] = {}
        self._users = {cid: user for cid, user in listener.client_users
                       if not _PATTERN_CHARS.intersection(cid)}
        self._user_patterns = [(re.compile(fnmatch.translate(p)), user)
                               for p, user in listener.client_users
                               if _PATTERN_CHARS.intersection(p)]
        self._running = False  # until resume(): datagrams are held in _early
        self._early: list[tuple[bytes, Address]] = []

    @property
    def name(self) -> str:
        return f"listener {self.listener.name}"

    def stats(self) -> GatewayStats:
        """Its counters (``/metrics``, ``$SYS``)."""
        e = self.endpoint
        return GatewayStats(
            self.listener.name, len(self.clients), self.sleeping,
            e.received if e is not None else 0, e.sent if e is not None else 0,
            self.dropped_datagrams, e.kernel_drops() if e is not None else None)

    def username_for(self, client_id: str) -> str:
        """MQTT-SN has no user name: the listener's ``client_users`` says which one a client
        id stands for (an exact id first, then the patterns in order), else the id itself
        (docs/mqttsn.md, "Who a client is")."""
        user = self._users.get(client_id)
        if user is not None:
            return user
        for pattern, user in self._user_patterns:
            if pattern.fullmatch(client_id):
                return user
        return client_id

    async def start(self, reuse_port: bool = False) -> Address:
        lc = self.listener
        self.endpoint = await serve_udp(lc.host, lc.port, self.datagram, reuse_port=reuse_port)
        if lc.advertise_interval and lc.broadcast is not None:
            self._send_advertise()
        return self.endpoint.address

    def resume(self) -> None:
        """The broker is running (it takes connections): put the stored sessions back, then
        handle the datagrams that came before (held, not dropped)."""
        self._running = True
        now = asyncio.get_running_loop().time()
        self._restore(now)
        early, self._early = self._early, []
        for data, address in early:
            self.datagram(data, address, now)

    # -- persistent sessions -------------------------------------------------------------------

    def kept(self, client_id: str) -> dict[str, Any] | None:
        """The stored persistent session of ``client_id`` (None: none, or unreadable)."""
        blob = self._kept.get(client_id)
        if blob is None:
            return None
        try:
            record = msgpack.unpackb(blob)
            if not isinstance(record, dict):
                raise TypeError("not a map")
            return record
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            log.warning("mqttsn %s: the stored session of %r cannot be read (%s): dropped",
                        self.listener.name, client_id, exc)
            del self._kept[client_id]
            self.records.delete(client_id)
            return None

    def save(self, client: SnClient) -> None:
        """Store ``client``'s session if it is persistent (or forget the stored one)."""
        s = client.session
        cid = s.client_id
        if cid is None:
            return
        record = s.durable()
        if record is not None:
            record["address"] = list(client.address)
            record["node"] = client.node
            blob = msgpack.packb(record)
            self._keeper[cid] = client
            if self._kept.get(cid) != blob:
                self._kept[cid] = blob
                self.records.put(cid, blob)
        elif self._keeper.get(cid) is client:  # (not one a newer connection of the id made)
            del self._keeper[cid]
            if self._kept.pop(cid, None) is not None:
                self.records.delete(cid)

    def _restore(self, now: float) -> None:
        """After a restart: every persistent session that was connected is back, asleep or
        active, resumed with the broker (a sleeper's wake-up finds it by its client id, from
        any address)."""
        restored = 0
        for cid in list(self._kept):
            record = self.kept(cid)
            if record is None:
                continue
            try:
                host, port = record["address"]
                node = record.get("node")
                client = SnClient(self, (str(host), int(port)),
                                  None if node is None else bytes(node))
                client.session.restore(record, now)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("mqttsn %s: the stored session of %r cannot be restored (%s): "
                            "dropped", self.listener.name, cid, exc)
                del self._kept[cid]
                self.records.delete(cid)
                continue
            self.clients.setdefault(client.key, client)
            client.pump(now)
            restored += 1
        if restored:
            log.info("mqttsn %s: %d client session(s) restored (%d asleep)", self.listener.name,
                     restored, self.sleeping)

    async def stop(self) -> None:
        if self._advertise is not None:
            self._advertise.cancel()
        now = asyncio.get_running_loop().time()
        for client in list(self.clients.values()):
            client._close_mqtt(False, now)
        self.clients.clear()
        if self.endpoint is not None:
            self.endpoint.close()

    def send(self, msg: sn.Message, address: Address, node: bytes | None = None) -> None:
        """``msg`` to ``address``; to a node behind a forwarder, encapsulated [MQTT-SN 5.5]."""
        if self.endpoint is not None:
            if node is not None:
                msg = sn.Encapsulated(node, msg)
            self.endpoint.send(codec.encode(msg), address)

    def forget(self, client: SnClient) -> None:
        if self.clients.get(client.key) is client:
            del self.clients[client.key]
        self.asleep(client, False)

    def asleep(self, client: SnClient, sleeping: bool) -> None:
        """``client`` fell asleep (True) or is awake again, lost or gone (False)."""
        cid = client.session.client_id
        if cid is None:
            return
        if sleeping:
            self.sleepers[cid] = client
        elif self.sleepers.get(cid) is client:
            del self.sleepers[cid]
        self.sleeping = len(self.sleepers)

    def _send_advertise(self) -> None:
        lc = self.listener
        assert self.endpoint is not None and lc.broadcast is not None
        duration = min(int(lc.advertise_interval), 0xFFFF)
        self.endpoint.broadcast(codec.encode(sn.Advertise(lc.gateway_id, duration)),
                                lc.broadcast)
        self._advertise = asyncio.get_running_loop().call_later(lc.advertise_interval,
                                                                self._send_advertise)

    def datagram(self, data: bytes, address: Address, now: float) -> None:
        """One datagram from ``address`` (a client, or a forwarder carrying one's message in
        an Encapsulated frame [MQTT-SN 5.5]: the client is then that wireless node, and what
        goes back to it goes encapsulated to the forwarder)."""
        if not self._running:  # (the broker is still starting: see resume())
            if len(self._early) < EARLY_DATAGRAMS:
                self._early.append((data, address))
            else:
                self.dropped_datagrams += 1
            return
        try:
            msg = codec.decode(data)
        except MqttsnError as exc:  # (the codec's only error, hypothesis-tested)
            self.dropped_datagrams += 1
            log.info("mqttsn %s: datagram from %s:%d dropped: %s", self.listener.name,
                     address[0], address[1], exc)
            return
        node: bytes | None = None
        if isinstance(msg, sn.Encapsulated):
            node, msg = msg.node_id, msg.message
        if isinstance(msg, sn.SearchGw):
            self.send(sn.GwInfo(self.listener.gateway_id), address, node)
            return
        if isinstance(msg, sn.Publish) and msg.qos == -1:
            self._qos_minus_one(msg, address)
            return
        client = self.clients.get((address, node))
        if client is None:
            if not isinstance(msg, (sn.Connect, sn.Pingreq)):
                log.info("mqttsn %s: %s from %s, which is not connected: ignored",
                         self.listener.name, codec.describe(msg), _where(address, node))
                if isinstance(msg, (sn.Publish, sn.Register, sn.Subscribe)):
                    self.send(sn.Disconnect(None), address, node)
                return
            client = self._find_sleeper(msg, address, node)
            if client is None:
                if not isinstance(msg, sn.Connect):
                    return
                client = self.clients[address, node] = SnClient(self, address, node)
        client.receive(msg, now)

    def _find_sleeper(self, msg: sn.Message, address: Address,
                      node: bytes | None) -> SnClient | None:
        """A sleeping client waking up from another address (its PINGREQ names it)."""
        cid = msg.client_id if isinstance(msg, (sn.Pingreq, sn.Connect)) else None
        client = self.sleepers.get(cid) if cid else None
        if client is None or client.session.state not in (ss.SnState.ASLEEP,
                                                          ss.SnState.AWAKE):
            return None
        if self.clients.get(client.key) is client:
            del self.clients[client.key]
        client.address, client.node = address, node
        self.clients[address, node] = client
        return client

    def _qos_minus_one(self, msg: sn.Publish, address: Address) -> None:
        if not self.listener.qos_minus_one:
            log.info("mqttsn %s: QoS -1 PUBLISH from %s:%d dropped: qos_minus_one is off",
                     self.listener.name, *address)
            return
        action = ss.qos_minus_one(msg, self.params.predefined)
        if isinstance(action, str):
            log.info("mqttsn %s: QoS -1 PUBLISH from %s:%d dropped: %s", self.listener.name,
                     address[0], address[1], action)
            return
        self._publish(Message(action.topic, action.payload, 0, action.retain))
