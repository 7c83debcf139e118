"""Session state [MQTT 4.1]: subscriptions, outbound QoS 1/2 in flight, the queue of messages
waiting for a slot or for the client to come back, and inbound QoS 2 identifiers.

Pure and synchronous: methods return what must be sent, the connection sends it.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from .message import Message
from .metrics import Metrics
from .protocol.constants import PacketType
from .protocol.flows import OutState, PacketIdAllocator, initial_state, next_state
from .protocol.packets import Subscription

_NO_IDS: frozenset[int] = frozenset()


class Outbound:
    """One outbound QoS 1/2 PUBLISH in flight."""

    __slots__ = ("identifiers", "message", "packet_id", "qos", "retain", "share", "state")

    def __init__(self, message: Message, qos: int, retain: bool, packet_id: int,
                 identifiers: tuple[int, ...] = (), share: str | None = None) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.packet_id = packet_id
        self.state = initial_state(qos)
        self.identifiers = identifiers  # MQTT 5 subscription identifiers it carries
        self.share = share  # the $share/... filter it came through, if any


class Queued(NamedTuple):
    """A message waiting for an in-flight slot or for the client to reconnect."""

    message: Message
    qos: int
    retain: bool
    identifiers: tuple[int, ...] = ()
    share: str | None = None


_new_queued = tuple.__new__


class AckResult(NamedTuple):
    """What an acknowledgement did to an outbound flow."""

    known: bool  # the packet id was in flight in a state that expects this packet
    send_pubrel: bool  # answer with PUBREL (after PUBREC)
    freed: bool  # the flow is complete and its slot is free


class Session:
    """The server side of one client's session.

    ``max_inflight`` bounds outbound QoS 1/2 messages awaiting acknowledgement;
    ``max_queued`` bounds the messages waiting behind them (``drop_oldest`` chooses which one
    goes when full). ``dropped`` counts what the bound threw away.
    """

    __slots__ = ("client_id", "drop_oldest", "dropped", "expiry_interval", "ids",
                 "inbound_qos2", "inflight", "max_inflight", "max_queued", "metrics", "queue",
                 "queue_qos0", "subscriptions")

    NEVER = 0xFFFFFFFF  # the Session Expiry Interval that never expires [MQTT 3.1.2.11.2]

    def __init__(self, client_id: str, expiry_interval: int, *, max_inflight: int = 20,
                 max_queued: int = 1000, drop_oldest: bool = False,
                 queue_qos0: bool = False, metrics: Metrics | None = None) -> None:
        self.client_id = client_id
        # seconds the session outlives its connection (3.1.1 clean session 0: NEVER)
        self.expiry_interval = expiry_interval
        self.subscriptions: dict[str, Subscription] = {}
        self.inflight: dict[int, Outbound] = {}
        # made on first use: an idle session should cost little (an empty deque is 600 bytes)
        self.queue: deque[Queued] | tuple[()] = ()
        self.inbound_qos2: set[int] | frozenset[int] = _NO_IDS
        self.ids = PacketIdAllocator()
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.drop_oldest = drop_oldest
        self.queue_qos0 = queue_qos0
        self.dropped = 0
        self.metrics = metrics

    @property
    def persistent(self) -> bool:
        """Does the session outlive its connection?"""
        return self.expiry_interval > 0

    # -- outbound ------------------------------------------------------------------------------

    def offer(self, message: Message, qos: int, retain: bool, online: bool,
              identifiers: tuple[int, ...] = (), share: str | None = None) -> Outbound | None:
        """Take a message for this session.

        Returns the :class:`Outbound` to send now (QoS 1/2 with a free slot), or None when the
        message was queued, dropped, or (QoS 0 online, nothing queued) is for the caller to
        send directly.
        """
        if online:
            if not self.queue:
                if qos == 0:
                    return None
                if len(self.inflight) < self.max_inflight:
                    return self._start(message, qos, retain, identifiers, share)
            # else: behind queued messages, to keep order [MQTT-4.6.0-5]
        elif qos == 0 and not self.queue_qos0:
            return None
        # tuple.__new__ skips the named tuple's Python-level constructor (hot when a
        # subscriber's window is full and every message queues)
        self._enqueue(_new_queued(Queued, (message, qos, retain, identifiers, share)))
        return None

    def _start(self, message: Message, qos: int, retain: bool,
               identifiers: tuple[int, ...] = (), share: str | None = None) -> Outbound:
        pid = self.ids.allocate(self.inflight)
        out = Outbound(message, qos, retain, pid, identifiers, share)
        self.inflight[pid] = out
        return out

    def _enqueue(self, item: Queued) -> None:
        if not isinstance(self.queue, deque):
            self.queue = deque()
        if len(self.queue) >= self.max_queued:
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.publish_dropped += 1
            if not self.drop_oldest or not self.queue:
                return
            self.queue.popleft()
        self.queue.append(item)

    def requeue(self, items: list[Queued]) -> None:
        """Put messages taken back (see :meth:`take_shared`) at the head of the queue."""
        if not isinstance(self.queue, deque):
            self.queue = deque()
        self.queue.extendleft(reversed(items))

    def pump(self, now: float = 0.0) -> list[Outbound | Queued]:
        """Move queued messages, in order, into free in-flight slots; QoS 0 ones need no slot
        and come back as Queued (to be sent once, with no state). Messages past their expiry
        are dropped on the way [MQTT-3.3.2-5]."""
        out: list[Outbound | Queued] = []
        q = self.queue
        if not q:
            return out
        assert isinstance(q, deque)
        while q:
            item = q[0]
            if item.message.expires_at is not None and item.message.expired(now):
                q.popleft()
            elif item.qos == 0:
                out.append(q.popleft())
            elif len(self.inflight) < self.max_inflight:
                q.popleft()
                out.append(self._start(item.message, item.qos, item.retain, item.identifiers,
                                       item.share))
            else:
                break
        return out

    def take_shared(self) -> list[Queued]:
        """Remove and return what came through shared subscriptions and is not acknowledged
        yet, to hand to another member [MQTT 4.8.2]: QoS 1 in flight, and anything queued
        (never sent). A QoS 2 message once sent stays with this member [MQTT-4.8.2-5]."""
        taken: list[Queued] = []
        for pid, out in list(self.inflight.items()):
            if out.share is not None and out.qos == 1:
                del self.inflight[pid]
                taken.append(Queued(out.message, out.qos, out.retain, out.identifiers,
                                    out.share))
        if any(item.share is not None for item in self.queue):
            kept: deque[Queued] = deque()
            for item in self.queue:
                (taken if item.share is not None else kept).append(item)
            self.queue = kept
        return taken

    def ack(self, packet_id: int, packet: PacketType) -> AckResult:
        """Apply PUBACK / PUBREC / PUBCOMP for ``packet_id``."""
        out = self.inflight.get(packet_id)
        if out is None:
            return AckResult(False, False, False)
        state = next_state(out.state, packet)
        if state is None:
            return AckResult(False, False, False)
        if state is OutState.DONE:
            del self.inflight[packet_id]
            return AckResult(True, False, True)
        out.state = state
        return AckResult(True, state is OutState.AWAIT_PUBCOMP, False)

    def complete(self, packet_id: int) -> None:
        """Forget an outbound flow as if it had completed (a message too big to send)."""
        self.inflight.pop(packet_id, None)

    def resend(self) -> list[Outbound]:
        """In-flight flows to resend on reconnect [MQTT-4.4.0-1], in their original order."""
        return list(self.inflight.values())

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
        return True

    def release_qos2(self, packet_id: int) -> bool:
        """PUBREL arrived: forget the identifier; False when it was not known."""
        ids = self.inbound_qos2
        if packet_id not in ids:
            return False
        assert isinstance(ids, set)
        ids.remove(packet_id)
        return True
