"""The session registry: sessions and their connections, takeover, expiry and wills.

One session per client id; at most one connection attached to it [MQTT-3.1.4-3]. Session
expiry [MQTT 3.1.2.11.2] and delayed wills [MQTT 3.1.3.2.2] are deadlines on one clock
(core/deadlines.py): the registry never starts a timer. The broker arms one timer for
:meth:`Registry.next_deadline` and calls :meth:`Registry.handle_timer` with ``now`` when it
fires. What happens when a session ends or a will goes out beyond the registry (routing, the
authorizer, plugins) is reached through the callables it is given.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar

from ..config import Config
from ..message import Message
from ..metrics import Metrics
from ..persistence import Storage, StoredSession, StoredWill
from ..protocol.constants import ReasonCode
from ..protocol.flows import OutState
from ..protocol.packets import Will
from ..protocol.properties import PropertyId as Prop
from ..router import Router
from ..session import Outbound, Queued, Session
from .deadlines import Deadlines

log: Final = logging.getLogger("mqttbroker")

EXPIRE, WILL = "expire", "will"  # the kinds of deadline
_WILL_ONLY: Final = (Prop.WILL_DELAY_INTERVAL, Prop.MESSAGE_EXPIRY_INTERVAL)


class Attached(Protocol):
    """A connection as the registry sees it: it can be told to go (takeover)."""

    def disconnect(self, code: ReasonCode, why: str, publish_will: bool) -> None:
        """Close it on the broker's initiative, telling an MQTT 5 client why."""


C = TypeVar("C", bound=Attached)


class Registry(Generic[C]):
    """Sessions by client id, the connection attached to each, the order offline sessions
    went offline in, and the deadlines of session expiry and delayed wills."""

    def __init__(self, config: Config, metrics: Metrics, router: Router,
                 publish: Callable[[Message], object],
                 ended: Callable[[Session, bool], None],
                 deadlines_moved: Callable[[], None]) -> None:
        """``publish`` sends a will; ``ended(session, expired)`` is told when a session ends
        (``expired``: without its client, by expiry or an operator); ``deadlines_moved``
        when the earliest deadline may have changed (the broker re-arms its timer)."""
        self.config = config
        self.metrics = metrics
        self.router = router
        self.storage: Storage | None = None
        self._publish = publish
        self._ended = ended
        self._moved = deadlines_moved
        self.sessions: dict[str, Session] = {}
        self.connections: dict[str, C] = {}
        # sessions that outlive their connection and have none now, longest offline first
        self.offline: dict[str, None] = {}
        # (EXPIRE | WILL, client id) -> when, on the broker's clock
        self.deadlines: Deadlines[tuple[str, str]] = Deadlines()
        self.wills: dict[str, Message] = {}  # delayed wills, by client id

    # -- sessions -------------------------------------------------------------------------------

    def cap_session_expiry(self, requested: int) -> int:
        """The Session Expiry Interval granted for ``requested`` (max_session_expiry_interval
        caps it when set)."""
        cap = self.config.mqtt.max_session_expiry_interval
        return min(requested, cap) if cap else requested

    def new_session(self, client_id: str, expiry: int) -> Session:
        """A fresh session with the configured bounds (not registered)."""
        cfg = self.config.mqtt
        return Session(client_id, expiry, max_inflight=cfg.max_inflight_messages,
                       max_queued=cfg.max_queued_messages, max_queued_bytes=cfg.max_queued_bytes,
                       drop_oldest=cfg.queue_full_policy == "drop_oldest",
                       queue_qos0=cfg.queue_qos0_messages, metrics=self.metrics)

    def attach(self, client_id: str, conn: C, peer: str, clean_start: bool, expiry: int,
               will: Will | None) -> tuple[Session, bool] | None:
        """A CONNECT for ``client_id`` was accepted: take the client id over from a connection
        that has it [MQTT-3.1.4-3], discard or resume its session [MQTT-3.1.2-4], settle a
        delayed will [MQTT-3.1.3-9], and attach ``conn``. The session and whether it was
        present [MQTT-3.2.2-2]; None when a new session has no room (max_sessions, every
        session connected): nothing was changed then but the takeover."""
        old = self.connections.get(client_id)
        if old is not None:
            # [MQTT-3.1.4-3] the existing connection is closed (v5: DISCONNECT 0x8E)
            old.disconnect(ReasonCode.SESSION_TAKEN_OVER,
                           f"session taken over by a new connection from {peer}",
                           publish_will=True)
        self.cancel_expiry(client_id)
        session = self.sessions.get(client_id)
        present = False
        if session is not None and (clean_start or not session.persistent):
            self.end_session(session)  # [MQTT-3.1.2-4] clean start discards it
            session = None
        pending = self.wills.pop(client_id, None)
        if pending is not None:
            self.deadlines.cancel((WILL, client_id))
            if session is None:  # the old session ended: its delayed will goes now
                self._publish(pending)
            # else resumed within the Will Delay Interval: no will [MQTT-3.1.3-9]
        self.offline.pop(client_id, None)
        if session is None:
            limit = self.config.mqtt.max_sessions
            if limit and len(self.sessions) >= limit and not self.evict_offline():
                return None
            session = self.new_session(client_id, expiry)
            self.sessions[client_id] = session
        else:
            present = True
            session.expiry_interval = expiry
            if not session.persistent and session.store is not None:
                self.forget_stored(session)  # it ends with this connection now
        storage = self.storage
        if storage is not None and session.persistent:
            if session.store is None:
                session.store = storage
            storage.put_session(client_id, expiry, None,
                                None if will is None else pending_will(will, client_id))
        self.connections[client_id] = conn
        return session, present

    def store_will(self, session: Session, will: Will | None) -> None:
        """A connected client's will was replaced: a persistent session stores the new one
        (what goes out if the broker dies under it)."""
        if session.store is not None and session.persistent:
            cid = session.client_id
            session.store.put_session(cid, session.expiry_interval, None,
                                      None if will is None else pending_will(will, cid))

    def detach(self, session: Session, will: Message | None, delay: int,
               unsent_will: Will | None, running: bool, now: float, wall: float) -> None:
        """``session``'s connection ended: its expiry starts counting, and its will (``will``,
        allowed to go out) is published now or after ``delay`` seconds [MQTT-3.1.3-9]; a
        ``unsent_will`` left by a shutdown is stored to go out when the broker is back."""
        cid = session.client_id
        if not session.persistent:
            self.end_session(session)
        elif running and session.expiry_interval != Session.NEVER:
            self.set_deadline(EXPIRE, cid, now + session.expiry_interval)
        stored: StoredWill | None = None
        if will is not None and delay and session.persistent:
            # [MQTT-3.1.3-9] published after the delay, or when the session ends if sooner;
            # its Message Expiry counts from its publication [MQTT 3.1.3.2.4]
            if will.expires_at is not None:
                will.expires_at += delay
            self.wills[cid] = will
            self.set_deadline(WILL, cid, now + delay)
            stored = StoredWill(will, delay, wall + delay)
            log.info("client %r: will to %r delayed %ds", cid, will.topic, delay)
        elif will is not None:
            log.info("client %r: publishing its will to %r", cid, will.topic)
            self._publish(will)
        elif unsent_will is not None and not running and session.persistent:
            # closed by a shutdown: the will goes out when the broker is back
            stored = pending_will(unsent_will, cid)
        if session.persistent and self.sessions.get(cid) is session:
            self.offline[cid] = None
        if session.store is not None and self.sessions.get(cid) is session:
            session.disconnected_at = wall
            session.store.put_session(cid, session.expiry_interval, session.disconnected_at,
                                      stored)

    def end_session(self, session: Session) -> None:
        """The session is over: its subscriptions go, and a will still waiting goes out."""
        cid = session.client_id
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(cid, topic_filter)
        if self.sessions.get(cid) is session:
            del self.sessions[cid]
            self.offline.pop(cid, None)
            self._ended(session, session.persistent and cid not in self.connections)
        if session.store is not None:
            self.forget_stored(session)
        self.cancel_expiry(cid)
        self.publish_delayed_will(cid)

    def discard(self, client_id: str) -> bool:
        """End an offline session now, as if it had expired. False when there is none."""
        session = self.sessions.get(client_id)
        if session is None:
            return False
        log.info("client %r: session discarded", client_id)
        self.end_session(session)
        return True

    def evict_offline(self) -> bool:
        """max_sessions is reached: end the session that has been offline longest (as if it
        had expired: its will goes out), to make room. False when every session is online."""
        cid = next(iter(self.offline), None)
        if cid is None:
            return False
        session = self.sessions[cid]
        log.warning("max_sessions %d reached: discarding the session of %r, the one offline "
                    "longest", self.config.mqtt.max_sessions, cid)
        self.metrics.sessions_evicted += 1
        self.end_session(session)
        return True

    def forget_stored(self, session: Session) -> None:
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

    def release(self, client_id: str) -> Session | None:
        """``client_id``'s session moves to another node (cluster): drop it here without
        deleting what is stored and without its delayed will (the session goes on there)."""
        if self.wills.pop(client_id, None) is not None:
            self.deadlines.cancel((WILL, client_id))
        self.cancel_expiry(client_id)
        session = self.sessions.pop(client_id, None)
        if session is not None:
            self.offline.pop(client_id, None)
        return session

    # -- restoring what storage kept --------------------------------------------------------------

    def restore(self, records: list[StoredSession], now: float, wall: float) -> None:
        """Put back stored sessions (offline until their clients come back) with their expiry
        counting the downtime, then their wills. ``now`` is the broker's clock, ``wall`` the
        wall clock at the same instant (storage keeps wall-clock times)."""
        assert self.storage is not None
        due: list[tuple[StoredSession, float]] = []
        for rec in records:
            session = self._restore_session(rec)
            self.sessions[rec.client_id] = session
            if rec.disconnected_at is None:  # connected when the broker stopped
                rec.disconnected_at = wall
            session.disconnected_at = rec.disconnected_at
            left = float(session.expiry_interval) if session.expiry_interval != Session.NEVER \
                else math.inf
            due.append((rec, left - (wall - rec.disconnected_at)))
        for rec, _ in sorted(due, key=lambda d: d[0].disconnected_at or 0.0):
            self.offline[rec.client_id] = None
        for rec, left in due:
            cid = rec.client_id
            session = self.sessions[cid]
            will = rec.will
            stored: StoredWill | None = None
            if will is not None:
                if will.at is None:  # its connection ended with the broker: now it counts
                    at = now + will.delay
                    # (its Message Expiry counts from its publication [MQTT 3.1.3.2.4])
                    message = will_message(
                        Will(will.message.topic, will.message.payload, will.message.qos,
                             will.message.retain, will.message.properties or {}), cid, at)
                else:
                    message, at = will.message, will.at - wall + now
                stored = StoredWill(message, will.delay, at - now + wall)
                self.wills[cid] = message
                self.set_deadline(WILL, cid, at)
            if left <= 0:
                log.info("session %r expired while the broker was down", cid)
                self.end_session(session)  # its will, if any, goes now [MQTT-3.1.3-9]
                continue
            self.storage.put_session(cid, session.expiry_interval, rec.disconnected_at, stored)
            if left != math.inf:
                self.set_deadline(EXPIRE, cid, now + left)

    def _restore_session(self, rec: StoredSession) -> Session:
        session = self.new_session(rec.client_id, self.cap_session_expiry(rec.expiry_interval))
        session.store = self.storage
        for sub in rec.subscriptions:
            session.own_subscriptions()[sub.topic_filter] = sub
            self.router.subscribe(rec.client_id, sub)
        queue: list[Queued] = []
        for item in rec.items:
            if item.packet_id and item.packet_id not in session.inflight:
                out = Outbound(item.message, item.qos, item.retain, item.packet_id,
                               item.identifiers, item.share, item.seq)
                out.state = OutState(item.state)
                session.own_inflight()[item.packet_id] = out
            else:
                queue.append(Queued(item.message, item.qos, item.retain, item.identifiers,
                                    item.share, item.seq))
        if queue:
            session.queue = deque(queue)
            session.queued_bytes = sum(len(q.message.payload) for q in queue)
        if rec.inbound_qos2:
            session.inbound_qos2 = set(rec.inbound_qos2)
        return session

    # -- deadlines: session expiry and delayed wills (core/deadlines.py) --------------------------

    def set_deadline(self, kind: str, cid: str, at: float) -> None:
        """``cid``'s session expires (EXPIRE) or its delayed will goes out (WILL) at ``at``."""
        self.deadlines.set((kind, cid), at)
        self._moved()

    def cancel_expiry(self, cid: str) -> None:
        """``cid``'s session does not expire (its client is back, or it ended)."""
        self.deadlines.cancel((EXPIRE, cid))

    def next_deadline(self) -> float | None:
        """When the earliest deadline is due (None: there is none)."""
        return self.deadlines.next_at()

    def handle_timer(self, now: float) -> None:
        """Act on every deadline due at ``now``: delayed wills go out, sessions expire."""
        for kind, cid in self.deadlines.pop_due(now):
            if kind == WILL:
                self.publish_delayed_will(cid)
            else:
                self._expire_session(cid)

    def publish_delayed_will(self, cid: str) -> None:
        """``cid``'s delayed will, if one waits, goes out now."""
        pending = self.wills.pop(cid, None)
        if pending is not None:
            self.deadlines.cancel((WILL, cid))
            log.info("client %r: publishing its delayed will to %r", cid, pending.topic)
            self._publish(pending)
            session = self.sessions.get(cid)
            if session is not None and session.store is not None:
                session.store.put_session(cid, session.expiry_interval,
                                          session.disconnected_at, None)

    def _expire_session(self, cid: str) -> None:
        session = self.sessions.get(cid)
        if session is not None and cid not in self.connections:
            log.info("session %r expired", cid)
            self.end_session(session)

    def clear_deadlines(self) -> None:
        """Forget every deadline and waiting will (the broker stops; storage keeps them)."""
        self.deadlines.clear()
        self.wills.clear()


def will_message(will: Will, client_id: str, now: float) -> Message:
    """The message a CONNECT's will becomes when it goes out: its Message Expiry Interval
    counts from ``now``, and the properties that belong to the will only are left out."""
    props = will.properties
    expires_at = None
    if props:
        mei = props.get(Prop.MESSAGE_EXPIRY_INTERVAL)
        if mei is not None:
            expires_at = now + mei
        props = {k: v for k, v in props.items() if k not in _WILL_ONLY}
    return Message(will.topic, will.payload, will.qos, will.retain, props or None, client_id,
                   expires_at)


def pending_will(will: Will, client_id: str) -> StoredWill:
    """A will as stored while its connection lasts (or after a shutdown ended it): the
    CONNECT's form, turned into the message to publish only when it goes out."""
    delay = will.properties.get(Prop.WILL_DELAY_INTERVAL, 0) if will.properties else 0
    return StoredWill(Message(will.topic, will.payload, will.qos, will.retain,
                              will.properties or None, client_id), delay)
