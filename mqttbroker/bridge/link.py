"""One bridge at run time: a local half the broker delivers to, a remote connection, a backlog.

Locally the bridge is a client of the broker like any other (Mosquitto's model): it holds
subscriptions for what goes out (its ``out``/``both`` rules, with No Local, so what it
published itself never goes back), and what comes in is published under its client id. The
remote side is :class:`~mqttbroker.protocol.client_protocol.ClientProtocol` (sans-I/O) on an
asyncio connection, opened again after every loss with a jittered back-off
(``restart_timeout``), the addresses tried in order (or in turn with ``round_robin``).

Store and forward: every outgoing message waits in the bridge's backlog (bounded by
``queue.max_messages`` / ``queue.max_bytes``, ``full_policy``) until the remote has it
(QoS 0: written; QoS 1/2: PUBACK/PUBCOMP), and only then is it deleted; at most the remote's
Receive Maximum are in flight. With persistence the backlog's QoS 1/2 messages are items of
the bridge's own session (``$bridge/<name>``) in the broker's store, under its durability
mode: with ``sync: commit`` a device's PUBACK leaves only once the message is on disk, and
after a crash the backlog comes back in order, what was in flight under its old packet
identifier, and a QoS 2 message the remote had answered with PUBREC as a PUBREL (so a remote
that kept the session does not deliver it twice).
A remote message (QoS 1/2) is acknowledged to the remote only after the broker has taken it
(with ``sync: commit``: after that is on disk too).

Draining never holds the event loop: at most :data:`DRAIN_BATCH` messages are written per
turn of the loop, and none while the socket's buffer is full (``pause_writing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from ..config.bridges import BridgeConfig
from ..core.connect import BRIDGE_IDS
from ..core.hooks import BridgeStats
from ..message import Message
from ..metrics import Metrics
from ..persistence.base import Storage, StoredSession
from ..protocol.client_protocol import (
    ClientProtocol,
    Closed,
    Connected,
    Delivered,
    Refused,
    Released,
    Subscribed,
)
from ..protocol.client_protocol import Message as RemoteMessage
from ..protocol.constants import ProtocolLevel, ReasonCode
from ..protocol.packets import Will
from ..protocol.properties import PropertyId as Prop
from ..session import Session
from . import topics

log = logging.getLogger("mqttbroker.bridge")

DRAIN_BATCH = 500  # messages written per turn of the event loop while draining
MAPPED_CACHE = 10_000  # local topics whose remote topic is remembered
# in flight to a 3.x remote, which cannot announce a Receive Maximum: Mosquitto's default
# max_inflight_messages (a Mosquitto remote drops what comes beyond its limit, and a 3.x
# PUBACK cannot say so)
INFLIGHT_3X = 20
# at most in flight to a 5.0 remote (its Receive Maximum lowers it): enough for a long fat
# link (1,000 x 1 KB in flight), while tens of thousands in flight would make each read of
# acknowledgements, and the garbage collector's passes over them, hold the loop for 100s of
# ms (benchmarks/README.md, "Draining a 1,000,000-message backlog")
INFLIGHT_5 = 1000

LEVELS = {"mqttv31": ProtocolLevel.MQTT_3_1, "mqttv311": ProtocolLevel.MQTT_3_1_1,
          "mqttv5": ProtocolLevel.MQTT_5}


@dataclass(slots=True)
class Outgoing:
    """A local message waiting for the remote: its remote topic and QoS (the lower of the
    message's and the rule's); ``seq`` its item key in the store (0: not stored)."""

    message: Message
    topic: str
    qos: int
    retain: bool
    seq: int = 0
    notice: bool = False  # the bridge's own state message (not counted as sent)


class _Gate:
    """One remote connection's bytes as the commit gate holds them (``sync: commit``): given
    back in order once the changes they report are on disk, and dropped if that connection
    has gone meanwhile (what was in flight is resent on the next one)."""

    __slots__ = ("transport",)

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def release_committed(self, data: list[bytes]) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"".join(data))


class BridgeLink(asyncio.Protocol):
    """One configured bridge: its local half (``deliver``) and its remote connection."""

    def __init__(self, config: BridgeConfig, publish: Callable[[Message], object],
                 metrics: Metrics, storage: Storage | None = None) -> None:
        self.config = config
        self.client_id = BRIDGE_IDS + config.name  # (refused to clients: core/connect.py)
        self._publish = publish
        self.metrics = metrics
        self.storage = storage
        self.stats = BridgeStats(config.name, [f"{h}:{p}" for h, p in config.addresses])
        level = LEVELS[config.protocol]
        password = config.password
        if config.password_file is not None:
            with open(config.password_file, encoding="utf-8") as fh:
                password = fh.readline().rstrip("\r\n")
        # notifications: the remote says 0 for us if we vanish (Mosquitto's bridge will)
        will = Will(config.state_topic, b"0", 1, True) if config.notifications else None
        self.proto = ClientProtocol(
            config.client_id, level=level, clean_start=config.clean_session,
            keep_alive=config.keepalive, username=config.username,
            password=password.encode() if password is not None else None, will=will,
            private=config.try_private,
            session_expiry=0 if config.clean_session else 0xFFFFFFFF,
            max_inflight=config.max_inflight or (
                INFLIGHT_5 if level == ProtocolLevel.MQTT_5 else INFLIGHT_3X))
        self.backlog: deque[Outgoing] = deque()  # not yet sent, in order
        self.sent: dict[int, Outgoing] = {}  # QoS 1/2 in flight, by packet identifier
        self._mapped: dict[str, tuple[str, int] | None] = {}  # local topic -> its mapping
        self.backlog_bytes = 0
        self.inflight_bytes = 0
        self._transport: asyncio.Transport | None = None
        self._gate: _Gate | None = None
        self._paused = False  # the socket's buffer is full: draining waits
        self._drain_soon: asyncio.Handle | None = None
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
        """A local message matched an outgoing rule: queue it for the remote (and, at QoS
        1/2 with persistence, store it before anything acknowledges it to its publisher)."""
        try:
            mapped = self._mapped[message.topic]
        except KeyError:
            mapped = topics.outbound(self.config.topics, message.topic)
            if len(self._mapped) >= MAPPED_CACHE:
                self._mapped.clear()
            self._mapped[message.topic] = mapped
        if mapped is None:
            return
        remote_topic, rule_qos = mapped
        out = Outgoing(message, remote_topic, min(qos, rule_qos), retain)
        q = self.config.queue
        size = len(message.payload)
        while self.backlog and (len(self.backlog) >= q.max_messages
                                or self.backlog_bytes + size > q.max_bytes):
            if q.full_policy == "drop_new":
                self._dropped("backlog full (drop_new)")
                return
            old = self.backlog.popleft()
            self.backlog_bytes -= len(old.message.payload)
            self._forget(old)
            self._dropped("backlog full (drop_oldest)")
        storage = self.storage
        if storage is not None and out.qos:
            out.seq = storage.next_seq()
            storage.add_item(self.client_id, out.seq, message, out.qos, retain, (), None, 0, 0)
        self.backlog.append(out)
        self.backlog_bytes += size
        if self._drain_soon is None:  # once per turn of the loop: one write for many
            self._drain_soon = asyncio.get_running_loop().call_soon(self._drain_later)

    def deliver_retained(self, retained: list[tuple[Message, int, bool, tuple[int, ...]]]) -> None:
        """Retained messages matching a local subscription (at start): they go out too."""
        for m, qos, retain, ident in retained:
            self.deliver(m, qos, retain, ident)

    def restore(self, stored: StoredSession) -> None:
        """Put back the backlog a previous run stored (in order; what was in flight keeps
        its packet identifier). Messages no rule maps any more are dropped, and counted."""
        for item in stored.items:
            mapped = topics.outbound(self.config.topics, item.message.topic)
            out = Outgoing(item.message, mapped[0] if mapped else "", item.qos, item.retain,
                           item.seq)
            if mapped is None:
                self._forget(out)
                self._dropped(f"{item.message.topic!r} matches no outgoing rule any more")
                continue
            if item.packet_id and item.packet_id not in self.sent:
                self.proto.restore(item.packet_id, out.topic, item.message.payload, out.qos,
                                   out.retain, self._properties(out, None),
                                   released=item.state == 2)
                self.sent[item.packet_id] = out
                self.inflight_bytes += len(item.message.payload)
            else:
                self.backlog.append(out)
                self.backlog_bytes += len(item.message.payload)
        self._count()
        if stored.items:
            log.info("%s: %d message(s) restored for the remote (%d in flight)", self.name,
                     len(stored.items), len(self.sent))

    def _forget(self, out: Outgoing) -> None:
        """``out`` leaves the backlog for good (sent, acknowledged or dropped)."""
        if out.seq and self.storage is not None:
            self.storage.delete_item(out.seq, out.message)
            out.seq = 0

    def _dropped(self, why: str) -> None:
        self.stats.dropped += 1
        if self.stats.dropped % 1000 == 1:
            log.warning("%s: message dropped: %s (%d dropped so far)", self.name, why,
                        self.stats.dropped)

    def block(self) -> bool:
        return False

    def unblock(self) -> None:
        pass

    def disconnect(self, code: ReasonCode, why: str, publish_will: bool) -> None:
        """A bridge's local half is not a network client: nothing to close."""

    # -- the remote connection ----------------------------------------------------------------

    def start(self) -> None:
        """Connect, and keep connecting after every loss, until :meth:`stop`. The state
        topic says 0 until connected (as Mosquitto's does at start)."""
        if self.config.notifications:
            self._publish(Message(self.config.state_topic, b"0", 1, True))
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Say 0 on the state topic (here and at the remote), DISCONNECT and stop."""
        self._stopping = True
        if (self._transport is not None and not self.proto.closed
                and self.config.notifications):  # (QoS 0: no PUBACK is awaited, no window)
            self.proto.publish(self.config.state_topic, b"0", 0, True, self._now())
            self._write(self.proto.data_to_send())
        self._set_state(False)
        if self._transport is not None and not self.proto.closed:
            self._write(self.proto.disconnect(self._now()))
            self._transport.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._cancel_timer()
        if self._drain_soon is not None:
            self._drain_soon.cancel()

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
                self.stats.last_error = f"cannot connect to {host}:{port}: {exc}"
                log.info("%s: %s", self.name, self.stats.last_error)
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
        self._transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        self._gate = _Gate(self._transport)
        self._paused = False
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
                self._on_delivered(ev)
            elif isinstance(ev, Released):
                self._on_released(ev)
            elif isinstance(ev, Subscribed):
                if any(c >= 0x80 for c in ev.codes):
                    log.warning("%s: the remote refused a subscription: %s", self.name,
                                ev.codes)
            elif isinstance(ev, Refused):
                self.stats.last_error = f"the remote refused the connection (CONNACK " \
                                        f"0x{ev.code:02X})"
                log.warning("%s: %s", self.name, self.stats.last_error)
            elif isinstance(ev, Closed):
                self.stats.last_error = f"connection closed: {ev.why} (0x{ev.code:02X})"
                log.warning("%s: %s", self.name, self.stats.last_error)
        self._flush()
        self._drain()
        if self.proto.closed and self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.proto.lost()
        self._transport = None
        self._gate = None
        self._cancel_timer()
        if exc is not None:  # (a TLS refusal of our certificate comes only here)
            self.stats.last_error = f"connection lost: {exc}"
            log.warning("%s: %s", self.name, self.stats.last_error)
        # what was in flight goes again from the protocol's own table after reconnecting
        if self._lost is not None:
            self._lost.set()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._drain()

    def _on_connected(self, ev: Connected) -> None:
        cfg = self.config
        self.stats.connects += 1
        self._set_state(True)
        log.info("%s: connected to %s (session %s)", self.name, self.stats.remote,
                 "present" if ev.session_present else "new")
        remote = topics.remote_filters(cfg.topics)
        if remote:
            v5 = self.proto.level == ProtocolLevel.MQTT_5
            self.proto.subscribe(remote, self._now(), no_local=v5 and cfg.try_private,
                                 retain_as_published=v5 and cfg.try_private)
        if cfg.notifications:  # at the remote, retained; first out, when the window has room
            if self.backlog and self.backlog[0].notice:  # (one from a connection before)
                self.backlog.popleft()
                self.backlog_bytes -= 1
            self.backlog.appendleft(Outgoing(Message(cfg.state_topic, b"1", 1, True),
                                             cfg.state_topic, 1, True, notice=True))
            self.backlog_bytes += 1

    def _on_delivered(self, ev: Delivered) -> None:
        out = self.sent.pop(ev.packet_id, None)
        if out is None:
            return  # (not one of ours: a late duplicate)
        self.inflight_bytes -= len(out.message.payload)
        self._forget(out)
        if out.notice:
            if ev.code >= 0x80:
                log.info("%s: the remote refused the state topic %r (0x%02X)", self.name,
                         out.topic, ev.code)
        elif ev.code >= 0x80:  # refused by the remote (MQTT 5): it will not take it again
            self._dropped(f"the remote refused {out.topic!r} (0x{ev.code:02X})")
        else:
            self.stats.sent += 1

    def _on_released(self, ev: Released) -> None:
        """PUBREC: the remote has the message; on disk before the PUBREL leaves (the commit
        gate), so that after a crash PUBREL is resent, never the PUBLISH, which a remote
        that has completed the flow would take as a new message."""
        out = self.sent.get(ev.packet_id)
        if out is not None and out.seq and self.storage is not None:
            self.storage.update_item(self.client_id, out.seq, out.message, 2, out.retain, (),
                                     None, ev.packet_id, 2)

    def _on_remote_message(self, ev: RemoteMessage, now: float) -> None:
        local = topics.inbound(self.config.topics, ev.topic)
        if local is not None:
            self.stats.received += 1
            self._publish(Message(local, ev.payload, ev.qos, ev.retain, ev.properties or None,
                                  self.client_id))
        if ev.packet_id is not None:  # ours now (or not bridged): acknowledge it
            self.proto.acknowledge(ev.packet_id, ev.qos, now)  # (gated by _flush)

    def _set_state(self, up: bool) -> None:
        if self.stats.connected == up:
            return
        cfg = self.config
        self.stats.connected = up
        host, port = cfg.addresses[self._address % len(cfg.addresses)]
        self.stats.remote = f"{host}:{port}" if up else None
        self.stats.connected_since = time.time() if up else None
        if cfg.notifications:  # retained, locally [Mosquitto's notifications]
            self._publish(Message(cfg.state_topic, b"1" if up else b"0", 1, True))

    def _properties(self, out: Outgoing, now: float | None) -> dict[int, Any] | None:
        """The PUBLISH properties for ``out``: the message's, with what is left of its
        Message Expiry Interval [MQTT-3.3.2-6]."""
        m = out.message
        props = dict(m.properties) if m.properties else None
        if m.expires_at is not None and now is not None:
            props = props or {}
            props[Prop.MESSAGE_EXPIRY_INTERVAL] = max(1, math.ceil(m.expires_at - now))
        return props

    def _drain(self) -> None:
        """Send what waits while the remote's window has room: at most :data:`DRAIN_BATCH`
        now, the rest on the loop's next turn, so a long backlog never holds the loop."""
        proto = self.proto
        if (proto.closed or self._transport is None or not self.stats.connected
                or self._paused or self._stopping):
            self._count()
            return
        now = self._now()
        budget = DRAIN_BATCH
        backlog = self.backlog
        while backlog and budget:
            out = backlog[0]
            if out.qos and not proto.can_publish():
                break
            backlog.popleft()
            self.backlog_bytes -= len(out.message.payload)
            if out.message.expired(now):
                self._forget(out)
                self._dropped(f"{out.topic!r} expired while queued")
                continue
            budget -= 1
            pid = proto.publish(out.topic, out.message.payload, out.qos, out.retain, now,
                                self._properties(out, now))
            if pid is None:  # QoS 0: written is done
                self._forget(out)
                self.stats.sent += not out.notice
            else:
                self.sent[pid] = out
                self.inflight_bytes += len(out.message.payload)
                if out.qos == 2 and out.seq and self.storage is not None:
                    # its identifier, so that a resend after a crash is recognised
                    self.storage.update_item(self.client_id, out.seq, out.message, 2,
                                             out.retain, (), None, pid, 1)
        self._count()
        self._flush()
        if (not budget and backlog and self._drain_soon is None
                and (not backlog[0].qos or proto.can_publish())):
            self._drain_soon = asyncio.get_running_loop().call_soon(self._drain_later)

    def _drain_later(self) -> None:
        self._drain_soon = None
        self._drain()

    def _count(self) -> None:
        st = self.stats
        st.inflight = len(self.sent)
        st.queued = len(self.backlog) + st.inflight
        st.queued_bytes = self.backlog_bytes + self.inflight_bytes

    def _flush(self) -> None:
        data = self.proto.data_to_send()
        if not data:
            return
        storage = self.storage
        if (storage is not None and storage.gates_output and self._gate is not None
                and storage.keep_until_committed(self._gate, data)):
            return  # sent once what it acknowledges (a message now ours) is on disk
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
            self.stats.last_error = str(events[0])
            log.warning("%s: %s", self.name, events[0])
            self._transport.close()
            return
        self._arm_timer()
