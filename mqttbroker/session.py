"""Session state [MQTT 4.1]: subscriptions, outbound QoS 1/2 in flight, the queue of messages
waiting for a slot or for the client to come back, and inbound QoS 2 identifiers.

Pure and synchronous: methods return what must be sent, the connection sends it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, NoReturn

from .errors import ProtocolError
from .message import Message
from .metrics import Metrics
from .protocol.constants import PacketType, ReasonCode
from .protocol.flows import OutState, PacketIdAllocator, initial_state, next_state
from .protocol.packets import Subscription
from .protocol.topics import SHARE_PREFIX

if TYPE_CHECKING:
    from .persistence.base import Storage

log: Final = logging.getLogger("mqttbroker.session")

_NO_IDS: Final[frozenset[int]] = frozenset()
# how far into another member's queue :meth:`Session.take_queued` looks for a message of the
# group (a queue of 100,000 messages of other subscriptions is not scanned after every PUBACK)
STEAL_SCAN: Final = 1000


class Subscriptions(dict[str, Subscription]):
    """A session's subscriptions by filter, counting the shared ones (``$share/...``) in
    :attr:`shared` as they come and go: the connection asks it after each acknowledgement
    whether the session may take work queued at other members of its groups, so the count
    must cost one attribute read, not a scan (work stealing, core/delivery.py)."""

    __slots__ = ("shared",)

    def __init__(self) -> None:
        super().__init__()
        self.shared = 0

    def __setitem__(self, topic_filter: str, sub: Subscription) -> None:
        if topic_filter.startswith(SHARE_PREFIX) and topic_filter not in self:
            self.shared += 1
        super().__setitem__(topic_filter, sub)

    def __delitem__(self, topic_filter: str) -> None:
        super().__delitem__(topic_filter)
        if topic_filter.startswith(SHARE_PREFIX):
            self.shared -= 1

    def pop(self, topic_filter: str, *default: Any) -> Any:
        had = topic_filter in self
        value = super().pop(topic_filter, *default)
        if had and topic_filter.startswith(SHARE_PREFIX):
            self.shared -= 1
        return value


class _Unused(dict[Any, Any]):
    """The empty dict every new session shares until it holds something (its
    ``subscriptions`` or ``inflight``: an empty dict is 64 bytes, and most devices are idle
    connections). Reading it is reading an empty dict; filling it is a bug, refused."""

    __slots__ = ("shared",)

    def __init__(self) -> None:
        super().__init__()
        self.shared = 0  # (as Subscriptions)

    # (each its own method, not aliases of one: the mypyc build, `make compiled`, makes no
    # slot for an alias, so the refusal would be lost there and the shared dict filled)
    def __setitem__(self, key: Any, value: Any) -> None:
        _refuse()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        _refuse()

    def update(self, *args: Any, **kw: Any) -> None:
        _refuse()


def _refuse() -> NoReturn:
    raise TypeError("a session's shared empty dict cannot be filled: use "
                    "Session.own_subscriptions() or Session.own_inflight()")


_UNUSED: Final[Any] = _Unused()


class Outbound:
    """One outbound QoS 1/2 PUBLISH in flight."""

    __slots__ = ("identifiers", "message", "packet_id", "qos", "retain", "seq", "share", "state")

    def __init__(self, message: Message, qos: int, retain: bool, packet_id: int,
                 identifiers: tuple[int, ...] = (), share: str | None = None,
                 seq: int = 0) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.packet_id = packet_id
        self.state = initial_state(qos)
        self.identifiers = identifiers  # MQTT 5 subscription identifiers it carries
        self.share = share  # the $share/... filter it came through, if any
        self.seq = seq  # its row in the session's stored order (0 when not stored)


class Queued(NamedTuple):
    """A message waiting for an in-flight slot or for the client to reconnect."""

    message: Message
    qos: int
    retain: bool
    identifiers: tuple[int, ...] = ()
    share: str | None = None
    seq: int = 0  # its row in the session's stored order (0 when not stored)


_new_queued = tuple.__new__


class AckResult(NamedTuple):
    """What an acknowledgement did to an outbound flow."""

    known: bool  # the packet id was in flight in a state that expects this packet
    send_pubrel: bool  # answer with PUBREL (after PUBREC)
    freed: bool  # the flow is complete and its slot is free


# the four possible answers, made once (ack() runs for every acknowledgement)
_UNKNOWN: Final = AckResult(False, False, False)
_FREED: Final = AckResult(True, False, True)
_PUBREL: Final = AckResult(True, True, False)
_KEPT: Final = AckResult(True, False, False)

# what an outbound flow waits for, for the error that names a wrong acknowledgement
_AWAITS: Final = {OutState.AWAIT_PUBACK: "PUBACK", OutState.AWAIT_PUBREC: "PUBREC",
           OutState.AWAIT_PUBCOMP: "PUBCOMP"}


class Session:
    """The server side of one client's session.

    ``max_inflight`` bounds outbound QoS 1/2 messages awaiting acknowledgement;
    ``max_queued`` (messages) and ``max_queued_bytes`` (payload bytes, 0 = unbounded) bound the
    messages waiting behind them (``drop_oldest`` chooses which one goes when full).
    ``dropped`` counts what the bounds threw away.

    ``store``, when set, is told every change (the session outlives its connection and the
    broker persists): items in flight or queued are stored rows, ordered by ``seq``.
    """

    __slots__ = ("client_id", "disconnected_at", "drop_oldest", "dropped", "dropping",
                 "expiry_interval", "ids",
                 "inbound_qos2", "inflight", "max_inflight", "max_queued", "max_queued_bytes",
                 "metrics", "queue", "queue_qos0", "queued_bytes", "store", "subscriptions")

    # the Session Expiry Interval that never expires [MQTT 3.1.2.11.2]
    NEVER: ClassVar[int] = 0xFFFFFFFF

    def __init__(self, client_id: str, expiry_interval: int, *, max_inflight: int = 20,
                 max_queued: int = 1000, max_queued_bytes: int = 0, drop_oldest: bool = False,
                 queue_qos0: bool = False, metrics: Metrics | None = None) -> None:
        self.client_id = client_id
        # seconds the session outlives its connection (3.1.1 clean session 0: NEVER)
        self.expiry_interval = expiry_interval
        # the shared empty one until the first (own_subscriptions, own_inflight)
        self.subscriptions: Subscriptions = _UNUSED
        self.inflight: dict[int, Outbound] = _UNUSED
        # made on first use: an idle session should cost little (an empty deque is 600 bytes)
        self.queue: deque[Queued] | tuple[()] = ()
        self.queued_bytes = 0  # payload bytes in ``queue``
        self.inbound_qos2: set[int] | frozenset[int] = _NO_IDS
        self.ids: PacketIdAllocator | None = None  # made on the first packet identifier
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.drop_oldest = drop_oldest
        self.queue_qos0 = queue_qos0
        self.dropped = 0
        self.dropping = False  # in a queue-full episode (logged once, when it starts)
        self.metrics = metrics
        self.store: Storage | None = None
        self.disconnected_at: float | None = None  # wall clock, for the store

    def own_subscriptions(self) -> Subscriptions:
        """The subscriptions, to add to (the shared empty one is replaced on first use)."""
        subs = self.subscriptions
        if subs is _UNUSED:
            subs = self.subscriptions = Subscriptions()
        return subs

    def own_inflight(self) -> dict[int, Outbound]:
        """The messages in flight, to add to (as :meth:`own_subscriptions`)."""
        inflight = self.inflight
        if inflight is _UNUSED:
            inflight = self.inflight = {}
        return inflight

    @property
    def persistent(self) -> bool:
        """Does the session outlive its connection?"""
        return self.expiry_interval > 0

    # -- outbound ------------------------------------------------------------------------------

    def offer(self, message: Message, qos: int, retain: bool, online: bool,
              identifiers: tuple[int, ...] = (), share: str | None = None,
              force: bool = False) -> Outbound | None:
        """Take a message for this session.

        Returns the :class:`Outbound` to send now (QoS 1/2 with a free slot), or None when the
        message was queued, dropped, or (QoS 0 online, nothing queued) is for the caller to
        send directly. ``force`` queues it even past the queue bounds and QoS 0 included
        (retained messages on SUBSCRIBE: they are all owed, paced by flow control).
        """
        if online:
            if not self.queue:
                if qos == 0 and not force:
                    return None
                if qos and len(self.inflight) < self.max_inflight:
                    return self._start(message, qos, retain, identifiers, share, 0)
            # else: behind queued messages, to keep order [MQTT-4.6.0-5]
        elif qos == 0 and not self.queue_qos0 and not force:
            return None
        # the hot path when a subscriber's window is full and every message queues: the
        # common case inline, tuple.__new__ skipping the named tuple's Python constructor
        q = self.queue
        size = len(message.payload)
        store = self.store
        if store is None and not force and q and len(q) < self.max_queued \
                and not self.dropping and (not self.max_queued_bytes
                                           or self.queued_bytes + size <= self.max_queued_bytes):
            q.append(_new_queued(Queued, (message, qos, retain, identifiers, share, 0)))
            self.queued_bytes += size
            return None
        seq = store.next_seq() if store is not None else 0
        self._enqueue(_new_queued(Queued, (message, qos, retain, identifiers, share, seq)),
                      size, force)
        return None

    def _start(self, message: Message, qos: int, retain: bool,
               identifiers: tuple[int, ...], share: str | None, seq: int) -> Outbound:
        inflight = self.inflight
        if inflight is _UNUSED:
            inflight = self.inflight = {}
        ids = self.ids
        if ids is None:
            ids = self.ids = PacketIdAllocator()
        pid = ids.allocate(inflight)
        out = Outbound(message, qos, retain, pid, identifiers, share, seq)
        inflight[pid] = out
        store = self.store
        if store is not None:
            if seq:
                store.update_item(self.client_id, seq, message, qos, retain, identifiers,
                                  share, pid, out.state)
            else:
                out.seq = store.next_seq()
                store.add_item(self.client_id, out.seq, message, qos, retain, identifiers,
                               share, pid, out.state)
        return out

    def _full(self, size: int) -> bool:
        q = self.queue
        return len(q) >= self.max_queued or bool(
            self.max_queued_bytes and q and self.queued_bytes + size > self.max_queued_bytes)

    def _enqueue(self, item: Queued, size: int, force: bool = False) -> None:
        if not isinstance(self.queue, deque):
            self.queue = deque()
        if not force and self._full(size):
            if self.drop_oldest:
                while self.queue and self._full(size):
                    self._drop(self.queue.popleft(), stored=True)
            if self._full(size):
                self._drop(item)
                return
        elif self.dropping:
            self.dropping = False  # there was room: the episode is over
            log.info("session %r: queue has room again (%d dropped in all)", self.client_id,
                     self.dropped)
        self.queue.append(item)
        self.queued_bytes += size
        store = self.store
        if store is not None:
            store.add_item(self.client_id, item.seq, item.message, item.qos, item.retain,
                           item.identifiers, item.share, 0, 0)

    def _drop(self, item: Queued, stored: bool = False) -> None:
        """A queue bound threw ``item`` away."""
        if not self.dropping:
            self.dropping = True
            log.warning("session %r: queue full (%d messages, %d bytes): dropping %s "
                        "(%d dropped so far)", self.client_id, len(self.queue),
                        self.queued_bytes, "the oldest" if self.drop_oldest else "new messages",
                        self.dropped + 1)
        self.dropped += 1
        if self.metrics is not None:
            self.metrics.publish_dropped += 1
        if stored:
            self._unqueued(item)

    def _unqueued(self, item: Queued) -> None:
        """``item`` left the queue."""
        self.queued_bytes -= len(item.message.payload)
        if self.store is not None and item.seq:
            self.store.delete_item(item.seq, item.message)

    def requeue(self, items: list[Queued]) -> None:
        """Put messages taken back (see :meth:`take_shared`) at the head of the queue."""
        if not isinstance(self.queue, deque):
            self.queue = deque()
        self.queue.extendleft(reversed(items))
        store = self.store
        for item in items:
            self.queued_bytes += len(item.message.payload)
            if store is not None and item.seq:
                store.add_item(self.client_id, item.seq, item.message, item.qos, item.retain,
                               item.identifiers, item.share, 0, 0)

    def discard(self, keep: Callable[[Message], bool]) -> int:
        """Drop the queued messages, and those in flight whose PUBLISH is not acknowledged
        yet, that ``keep`` refuses (e.g. ones the client may no longer read); how many."""
        n = 0
        for pid, out in list(self.inflight.items()):
            if out.state is not OutState.AWAIT_PUBCOMP and not keep(out.message):
                self.complete(pid)
                n += 1
        if self.queue and not all(keep(item.message) for item in self.queue):
            kept: deque[Queued] = deque()
            for item in self.queue:
                if keep(item.message):
                    kept.append(item)
                else:
                    self._unqueued(item)
                    n += 1
            self.queue = kept
        return n

    def pump(self, now: float, limit: int = 0) -> list[Outbound | Queued]:
        """Move queued messages, in order, into free in-flight slots; QoS 0 ones need no slot
        and come back as Queued (to be sent once, with no state). Messages past their expiry
        at ``now`` (the clock their ``expires_at`` is on) are dropped on the way
        [MQTT-3.3.2-5]. ``limit`` > 0 returns at most that many."""
        out: list[Outbound | Queued] = []
        q = self.queue
        if not q:
            return out
        assert isinstance(q, deque)
        inflight = self.own_inflight()  # (_start fills it: not the shared empty one)
        while q:
            item = q[0]
            message, qos, retain, identifiers, share, seq = item
            if message.expires_at is not None and message.expired(now):
                self._unqueued(q.popleft())
            elif qos == 0:
                self._unqueued(q.popleft())
                out.append(item)
            elif len(inflight) < self.max_inflight:
                q.popleft()
                self.queued_bytes -= len(message.payload)
                out.append(self._start(message, qos, retain, identifiers, share, seq))
            else:
                break
            if limit and len(out) >= limit:
                break
        return out

    def start_head(self) -> Outbound | None:
        """The head of the queue into the window, when that is all there is to do: a QoS 1/2
        message without an expiry and a free slot (the common case after an acknowledgement).
        None when :meth:`pump` must decide."""
        q = self.queue
        if not q or len(self.inflight) >= self.max_inflight:
            return None
        message, qos, retain, identifiers, share, seq = q[0]
        if not qos or message.expires_at is not None:
            return None
        q.popleft()
        self.queued_bytes -= len(message.payload)
        return self._start(message, qos, retain, identifiers, share, seq)

    def take_shared(self) -> list[Queued]:
        """Remove and return what came through shared subscriptions and is not acknowledged
        yet, to hand to another member [MQTT 4.8.2]: QoS 1 in flight, and anything queued
        (never sent). A QoS 2 message once sent stays with this member [MQTT-4.8.2-5]."""
        taken: list[Queued] = []
        store = self.store
        for pid, out in list(self.inflight.items()):
            if out.share is not None and out.qos == 1:
                del self.inflight[pid]
                taken.append(Queued(out.message, out.qos, out.retain, out.identifiers,
                                    out.share, out.seq))
                if store is not None and out.seq:
                    store.delete_item(out.seq, out.message)
        if any(item.share is not None for item in self.queue):
            kept: deque[Queued] = deque()
            for item in self.queue:
                if item.share is not None:
                    taken.append(item)
                    self._unqueued(item)
                else:
                    kept.append(item)
            self.queue = kept
        return taken

    def take_queued(self, share: str, accept: Callable[[Message], bool],
                    now: float) -> Queued | None:
        """Remove and return the oldest queued (never sent) message that came through the
        shared subscription ``share`` and that ``accept`` takes, for another member of the
        group whose window has room (work stealing, core/delivery.py). Messages of ``share``
        past their expiry at ``now`` met on the way are dropped [MQTT-3.3.2-5]. What is in
        flight is never taken: a QoS 2 message once sent stays with its member
        [MQTT-4.8.2-5]. The stored row goes: the taker stores the message as its own, so a
        restart finds it in one session."""
        q = self.queue
        if not q:
            return None
        gone: list[int] = []
        found = -1
        for i, item in enumerate(q):
            if i >= STEAL_SCAN:
                break  # deeper ones stay with this member: an acknowledgement costs bounded work
            if item.share != share:
                continue
            message = item.message
            if message.expires_at is not None and message.expired(now):
                gone.append(i)
            elif accept(message):
                found = i
                break
        if found >= 0:
            gone.append(found)
        taken = None
        for i in reversed(gone):  # (ascending indexes: delete from the back)
            item = q[i]
            del q[i]
            self._unqueued(item)
            taken = item if i == found else taken
        return taken

    def ack(self, packet_id: int, packet: PacketType, refused: bool = False) -> AckResult:
        """Apply PUBACK / PUBREC / PUBCOMP for ``packet_id`` (``refused``: a PUBREC with a
        failure reason code, which ends the flow [MQTT-4.3.3]).

        An id that is not in flight is harmless (a late or repeated acknowledgement). An id in
        flight whose acknowledgement is of the wrong kind (PUBREC or PUBCOMP for a QoS 1
        PUBLISH, PUBACK for a QoS 2 one, PUBCOMP before PUBREC) is a protocol violation: raises
        ProtocolError, which closes the connection ([MQTT-4.8.0-1] in 3.1.1; a Protocol Error,
        DISCONNECT 0x82, in 5.0) instead of leaving the flow stuck in its slot."""
        out = self.inflight.get(packet_id)
        if out is None:
            return _UNKNOWN
        state = next_state(out.state, packet)
        if state is None:
            raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                f"{packet.name} for packet identifier {packet_id}, whose QoS "
                                f"{out.qos} PUBLISH awaits {_AWAITS[out.state]} [MQTT 4.3]")
        if refused:
            state = OutState.DONE
        store = self.store
        if state is OutState.DONE:
            del self.inflight[packet_id]
            if store is not None and out.seq:
                store.delete_item(out.seq, out.message)
            return _FREED
        out.state = state
        if store is not None:
            store.update_item(self.client_id, out.seq, out.message, out.qos, out.retain,
                              out.identifiers, out.share, packet_id, state)
        return _PUBREL if state is OutState.AWAIT_PUBCOMP else _KEPT

    def complete(self, packet_id: int) -> None:
        """Forget an outbound flow as if it had completed (a message too big to send)."""
        out = self.inflight.pop(packet_id, None)
        if out is not None and self.store is not None and out.seq:
            self.store.delete_item(out.seq, out.message)

    def resend(self) -> list[Outbound]:
        """In-flight flows to resend on reconnect [MQTT-4.4.0-1], in their original order."""
        return list(self.inflight.values())

    def items(self) -> list[Outbound | Queued]:
        """Everything in flight and queued (to forget it all when the session ends)."""
        return [*self.inflight.values(), *self.queue]

    # -- inbound QoS 2 ---------------------------------------------------------------------------

    def receive_qos2(self, packet_id: int) -> bool:
        """Record an inbound QoS 2 PUBLISH; False when it is a resend of one already
        delivered (exactly once: deliver only when True)."""
        ids = self.inbound_qos2
        if packet_id in ids:
            return False
        if not isinstance(ids, set):
            ids = self.inbound_qos2 = set()
        ids.add(packet_id)
        if self.store is not None:
            self.store.put_inbound(self.client_id, packet_id)
        return True

    def release_qos2(self, packet_id: int) -> bool:
        """PUBREL arrived: forget the identifier; False when it was not known."""
        ids = self.inbound_qos2
        if packet_id not in ids:
            return False
        assert isinstance(ids, set)
        ids.remove(packet_id)
        if self.store is not None:
            self.store.delete_inbound(self.client_id, packet_id)
        return True
