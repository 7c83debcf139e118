"""One bridge at run time: a local half the broker delivers to, a remote connection, a backlog.

Locally the bridge is a client of the broker like any other (Mosquitto's model): it holds
subscriptions for what goes out (its ``out``/``both`` rules, with No Local, so what it
published itself never goes back), and what comes in is published under its client id. The
remote side is :class:`~mqttbroker.protocol.client_protocol.ClientProtocol` (sans-I/O) on an
asyncio connection, opened again after every loss with a jittered back-off
(``restart_timeout``), the addresses tried in order (or in turn with ``round_robin``).

Store and forward: every outgoing message waits in the bridge's backlog (bounded by
``queue.max_messages`` / ``queue.max_bytes``, ``full_policy``) until the remote has it
(QoS 0: written; QoS 1/2: PUBACK/PUBCOMP); at most the remote's Receive Maximum are in flight.
A remote message (QoS 1/2) is acknowledged to the remote only after the broker has taken it.
This first cut keeps the backlog in memory (docs/bridges.md says what survives what).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config.bridges import BridgeConfig
from ..core.connect import BRIDGE_IDS
from ..core.hooks import BridgeStats
from ..message import Message
from ..metrics import Metrics
from ..protocol.client_protocol import (
    ClientProtocol,
    Closed,
    Connected,
    Delivered,
    Refused,
    Subscribed,
)
from ..protocol.client_protocol import Message as RemoteMessage
from ..protocol.constants import ProtocolLevel, ReasonCode
from ..session import Session
from . import topics

log = logging.getLogger("mqttbroker.bridge")

LEVELS = {"mqttv31": ProtocolLevel.MQTT_3_1, "mqttv311": ProtocolLevel.MQTT_3_1_1,
          "mqttv5": ProtocolLevel.MQTT_5}


@dataclass(slots=True)
class Outgoing:
    """A message waiting for the remote: its remote topic and QoS (the lower of the message's
    and the rule's)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[int, Any] | None


class BridgeLink(asyncio.Protocol):
    """One configured bridge: its local half (``deliver``) and its remote connection."""

    def __init__(self, config: BridgeConfig, publish: Callable[[Message], object],
                 metrics: Metrics) -> None:
        self.config = config
        self.client_id = BRIDGE_IDS + config.name  # (refused to clients: core/connect.py)
        self._publish = publish
        self.metrics = metrics
        self.stats = BridgeStats(config.name, [f"{h}:{p}" for h, p in config.addresses])
        level = LEVELS[config.protocol]
        password = config.password
        if config.password_file is not None:
            with open(config.password_file, encoding="utf-8") as fh:
                password = fh.readline().rstrip("\r\n")
        self.proto = ClientProtocol(
            config.client_id, level=level, clean_start=config.clean_session,
            keep_alive=config.keepalive, username=config.username,
            password=password.encode() if password is not None else None,
            private=config.try_private,
            session_expiry=0 if config.clean_session else 0xFFFFFFFF)
        self.backlog: deque[Outgoing] = deque()  # not yet sent (in order); what is in
        # flight (sent at QoS 1/2, not yet acknowledged) is the protocol's own outflows
        self.backlog_bytes = 0
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._address = 0
        self._stopping = False
        # as a local client (core/delivery.Recipient): the broker's view of it
        self.session = Session(self.client_id, 0, max_inflight=65535)
        self.username: str | None = None
        self.peer = "bridge"
        self.listener = f"bridge:{config.name}"
        self.level = int(ProtocolLevel.MQTT_5)
        self.keep_alive = 0
        self.connected_at: float | None = None
        self.will = None
        self.closed = False

    # -- the local half: the broker delivers here -------------------------------------------

    @property
    def name(self) -> str:
        """How log lines name this bridge."""
        return f"bridge {self.config.name!r}"

    def deliver(self, message: Message, qos: int, retain: bool,
                identifiers: tuple[int, ...] = (), share: str | None = None,
                source: Any = None) -> None:
        """A local message matched an outgoing rule: queue it for the remote."""
        mapped = topics.outbound(self.config.topics, message.topic)
        if mapped is None:
            return
        remote_topic, rule_qos = mapped
        out = Outgoing(remote_topic, message.payload, min(qos, rule_qos), retain,
                       dict(message.properties) if message.properties else None)
        q = self.config.queue
        size = len(out.payload)
        while self.backlog and (len(self.backlog) >= q.max_messages
                                or self.backlog_bytes + size > q.max_bytes):
            if q.full_policy == "drop_new":
                self._dropped()
                return
            old = self.backlog.popleft()
            self.backlog_bytes -= len(old.payload)
            self._dropped()
        self.backlog.append(out)
        self.backlog_bytes += size
        self._drain()

    def deliver_retained(self, retained: list[tuple[Message, int, bool, tuple[int, ...]]]) -> None:
        """Retained messages matching a local subscription (at start): they go out too."""
        for m, qos, retain, ident in retained:
            self.deliver(m, qos, retain, ident)

    def _dropped(self) -> None:
        self.stats.dropped += 1
        if self.stats.dropped % 1000 == 1:
            log.warning("%s: backlog full (%s): %d message(s) dropped so far", self.name,
                        self.config.queue.full_policy, self.stats.dropped)

    def block(self) -> bool:
        return False

    def unblock(self) -> None:
        pass

    def disconnect(self, code: ReasonCode, why: str, publish_will: bool) -> None:
        """A bridge's local half is not a network client: nothing to close."""

    # -- the remote connection ----------------------------------------------------------------

    def start(self) -> None:
        """Connect, and keep connecting after every loss, until :meth:`stop`."""
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Say DISCONNECT to the remote and stop (the state topic says 0)."""
        self._stopping = True
        self._set_state(False)
        if self._transport is not None and not self.proto.closed:
            self._transport.write(self.proto.disconnect(self._now()))
            self._transport.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._cancel_timer()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _run(self) -> None:
        cfg = self.config
        base, cap = cfg.restart_timeout
        wait = base
        loop = asyncio.get_running_loop()
        while not self._stopping:
            host, port = cfg.addresses[self._address % len(cfg.addresses)]
            self._lost = asyncio.Event()
            try:
                await loop.create_connection(lambda: self, host, port,
                                             ssl=self._tls_context(), server_hostname=host
                                             if cfg.tls is not None else None)
            except OSError as exc:
                log.info("%s: cannot connect to %s:%d: %s", self.name, host, port, exc)
                self._lost.set()
            else:
                await self._lost.wait()
            was_up = self.stats.connected
            if was_up:
                wait = base  # it was up: start the back-off again
            self._set_state(False)
            if self._stopping:
                return
            if cfg.round_robin or not was_up:
                self._address += 1  # the next address: failover (or rotation)
            # decorrelated jitter, as Mosquitto's restart_timeout base cap
            wait = min(cap, random.uniform(base, wait * 3)) if cap > base else base
            await asyncio.sleep(wait)

    def _tls_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if tls is None:
            return None
        ctx = ssl.create_default_context(cafile=tls.cafile)
        if tls.certfile is not None:
            ctx.load_cert_chain(tls.certfile, tls.keyfile)
        if tls.insecure:
            ctx.check_hostname = False
        return ctx

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._write(self.proto.connect(self._now()))
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        now = self._now()
        for ev in self.proto.receive_data(data, now):
            if isinstance(ev, Connected):
                self._on_connected(ev)
            elif isinstance(ev, RemoteMessage):
                self._on_remote_message(ev, now)
            elif isinstance(ev, Delivered):
                self.stats.sent += 1
            elif isinstance(ev, Subscribed):
                if any(c >= 0x80 for c in ev.codes):
                    log.warning("%s: the remote refused a subscription: %s", self.name,
                                ev.codes)
            elif isinstance(ev, Refused):
                log.warning("%s: the remote refused the connection (CONNACK 0x%02X)",
                            self.name, ev.code)
            elif isinstance(ev, Closed):
                log.warning("%s: connection closed: %s (0x%02X)", self.name, ev.why, ev.code)
        self._flush()
        self._drain()
        if self.proto.closed and self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.proto.lost()
        self._transport = None
        self._cancel_timer()
        # what was in flight goes again from the protocol's own table after reconnecting
        if self._lost is not None:
            self._lost.set()

    def _on_connected(self, ev: Connected) -> None:
        cfg = self.config
        self.stats.connects += 1
        self._set_state(True)
        log.info("%s: connected to %s:%d (session %s)", self.name,
                 *cfg.addresses[self._address % len(cfg.addresses)],
                 "present" if ev.session_present else "new")
        remote = topics.remote_filters(cfg.topics)
        if remote:
            v5 = self.proto.level == ProtocolLevel.MQTT_5
            self.proto.subscribe(remote, self._now(), no_local=v5 and cfg.try_private,
                                 retain_as_published=v5 and cfg.try_private)
        if cfg.notifications and self.proto.can_publish():  # at the remote, retained
            self.proto.publish(cfg.state_topic, b"1", 1, True, self._now())

    def _on_remote_message(self, ev: RemoteMessage, now: float) -> None:
        local = topics.inbound(self.config.topics, ev.topic)
        if local is not None:
            self.stats.received += 1
            self._publish(Message(local, ev.payload, ev.qos, ev.retain, ev.properties or None,
                                  self.client_id))
        if ev.packet_id is not None:  # ours now (or not bridged): acknowledge it
            self.proto.acknowledge(ev.packet_id, ev.qos, now)

    def _set_state(self, up: bool) -> None:
        if self.stats.connected == up:
            return
        self.stats.connected = up
        self.connected_at = None
        if self.config.notifications:  # retained, locally [Mosquitto's notifications]
            self._publish(Message(self.config.state_topic, b"1" if up else b"0", 1, True))

    def _drain(self) -> None:
        """Send what waits while the remote's window has room."""
        proto = self.proto
        if proto.closed or self._transport is None or not self.stats.connected:
            return
        now = self._now()
        while self.backlog:
            out = self.backlog[0]
            if out.qos and not proto.can_publish():
                break
            self.backlog.popleft()
            self.backlog_bytes -= len(out.payload)
            if proto.publish(out.topic, out.payload, out.qos, out.retain, now,
                             out.properties) is None:
                self.stats.sent += 1  # (QoS 0: sent is done)
        self.stats.queued = len(self.backlog) + len(proto.outflows)
        self._flush()

    def _flush(self) -> None:
        data = self.proto.data_to_send()
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # -- keep-alive -------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        self._cancel_timer()
        at = self.proto.next_deadline()
        if at is not None:
            self._timer = asyncio.get_running_loop().call_at(at, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        events = self.proto.handle_timer(self._now())
        self._flush()
        if events and self._transport is not None:
            log.warning("%s: %s", self.name, events[0])
            self._transport.close()
            return
        self._arm_timer()
