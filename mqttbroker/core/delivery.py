"""Delivery: a message to every session it is for, once each, as the ACLs and plugins allow.

Retained messages are kept on the way, other nodes of a cluster get what their subscribers
match (through the :class:`Backplane` the cluster gives), shared subscriptions are served by
one member [MQTT 4.8.2], and a message reaches a connected client through its connection or
waits in its session. What a client publishes is checked here first (``$`` topics,
``message_size_limit``, the ACL file, the plugins). No transport, connection class or broker
is imported: connections are reached through :class:`Recipient`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, Protocol, TypeVar

from ..acl import ClientAcl
from ..config import Config
from ..message import Derived, Message
from ..metrics import Metrics
from ..plugins.api import Action
from ..plugins.api import Client as PluginClient
from ..plugins.api import Message as PluginMessage
from ..plugins.host import PluginHost
from ..protocol.constants import ProtocolLevel, ReasonCode
from ..protocol.packets import Subscription, Will
from ..protocol.topics import SHARE_PREFIX, is_bridge_state, validate_topic_name
from ..retained import RetainedStore
from ..router import Delivery, Router
from ..session import Queued, Session
from .hooks import Access, Blockable
from .registry import Registry

log: Final = logging.getLogger("mqttbroker")

V5: Final[int] = ProtocolLevel.MQTT_5


class Recipient(Blockable, Protocol):
    """A connection as delivery sees it: a publisher (its identity, for checks and logs)
    and a subscriber (a message goes to it through :meth:`deliver`)."""

    client_id: str | None
    username: str | None
    peer: str
    listener: str
    level: int
    session: Session | None
    will: Will | None
    max_out_packet: int  # its Maximum Packet Size, 0 = none [MQTT-3.1.2-25]

    @property
    def name(self) -> str: ...
    @property
    def closed(self) -> bool: ...

    def disconnect(self, code: ReasonCode, why: str, publish_will: bool) -> None:
        """Close it on the broker's initiative."""

    def deliver(self, message: Message, qos: int, retain: bool,
                identifiers: tuple[int, ...] = (), share: str | None = None,
                source: Any = None) -> None:
        """Send ``message`` at ``qos`` (``source``: the publishing connection)."""

    def deliver_retained(self,
                         retained: list[tuple[Message, int, bool, tuple[int, ...]]]) -> None:
        """Retained messages for a new subscription."""


R = TypeVar("R", bound=Recipient)


class Backplane(Protocol):
    """Other nodes of a cluster, as delivery sees them (cluster/node.py)."""

    def forward(self, message: Message, local_groups: set[str]) -> set[str]:
        """Send ``message`` to nodes with matching routes; the shared groups served here."""

    def throttle(self, source: Blockable | None) -> None:
        """Hold ``source`` back while too much waits for the other nodes."""

    def ghost(self, client_id: str, message: Message) -> bool:
        """A delivery to a session that moved to another node a moment ago."""


class Dispatcher(Generic[R]):
    """Routes messages to sessions (the broker's hot path)."""

    def __init__(self, config: Config, metrics: Metrics, router: Router,
                 retained: RetainedStore, authorizer: Access, plugins: PluginHost,
                 registry: Registry[R], running: Callable[[], bool]) -> None:
        self.config = config
        self.metrics = metrics
        self.router = router
        self.retained = retained
        self.authorizer = authorizer
        self.plugins = plugins
        self.registry = registry
        self._running = running
        self.backplane: Backplane | None = None
        # what plugins see of each client, by client id, while its session lasts
        self.plugin_clients: dict[str, PluginClient] = {}
        # the per-delivery path reads these (the same objects for the broker's life)
        self._connections = registry.connections
        self._sessions = registry.sessions
        self._deliver_hooks = plugins.deliver_hooks

    def redistribute(self, session: Session) -> None:
        """Messages a leaving shared-subscription member had not acknowledged go to another
        member of the same group [MQTT 4.8.2]."""
        if not session.inflight and not session.queue:
            return
        taken = session.take_shared()
        keep: list[Queued] = []
        for item in taken:
            assert item.share is not None
            # as published (a plugin's on_deliver form was the leaving member's own)
            message = item.message.origin if isinstance(item.message, Derived) else item.message
            group = self.router.group(item.share)
            picked = group.pick(self._available, exclude=session.client_id) if group else None
            reader = self.authorizer.readers.get(picked[0]) if picked is not None else None
            if picked is None or (reader is not None and not reader.may_read(message.topic)):
                keep.append(item)
                continue
            cid, sub = picked
            self._deliver_to(cid, message, min(item.qos, sub.qos), item.retain,
                             (sub.identifier,) if sub.identifier else (), item.share)
        if keep:
            session.requeue(keep)

    def steal(self, conn: R, clock: Callable[[], float]) -> int:
        """Fair dispatch for shared subscriptions (work stealing): ``conn`` has a free
        in-flight slot and nothing of its own queued, so it takes the oldest message queued,
        never sent, at the member of its group that is furthest behind, rather than sit idle
        while that member's backlog waits for it. Shared groups are dealt in turn, and a
        message goes to a member whose window is full only when every member's is
        (SharedGroup.pick): when a member's slot frees first, the work moves to it, as
        RabbitMQ's fair dispatch (prefetch 1) does; [MQTT 4.8.2] leaves the choice to the
        server. Only messages that came through the same ``$share/...`` filter move, never
        one in flight (QoS 2 once sent stays with its member [MQTT-4.8.2-5]), and only what
        ``conn`` may read and can take (its Maximum Packet Size); an expired one is dropped
        on the way [MQTT-3.3.2-5]. Members are this node's sessions: in a cluster a group's
        messages are served by one node, and only its members there share them out.
        ``clock``: the event loop's time (read only when there is something to take).
        Returns how many messages it took."""
        session = conn.session
        cid = conn.client_id
        if session is None or cid is None or session.queue:
            return 0
        free = session.max_inflight - len(session.inflight)
        if free <= 0:
            return 0
        sessions = self._sessions
        taken = 0
        # (runs after each acknowledgement of a member that has nothing queued: the common
        # case, every member keeping up, must cost little, so no work is done until a
        # member with a queue is found)
        for topic_filter, sub in session.subscriptions.items():
            if not topic_filter.startswith(SHARE_PREFIX):
                continue
            group = self.router.group(topic_filter)
            if group is None:
                continue
            victims: list[Session] | None = None
            for member in group.members:
                victim = sessions.get(member)
                if victim is not None and victim.queue and member != cid:
                    if victims is None:
                        victims = [victim]
                    else:
                        victims.append(victim)
            if victims is None:
                continue
            victims.sort(key=_queue_length, reverse=True)  # the furthest behind first
            now = clock()
            while taken < free and not session.queue \
                    and len(session.inflight) < session.max_inflight:
                item = self._take_for(conn, cid, sub, victims, now)
                if item is None:
                    break
                # as published (a plugin's on_deliver form was the other member's own)
                m = item.message.origin if isinstance(item.message, Derived) else item.message
                self._deliver_to(cid, m, min(m.qos, sub.qos),
                                 m.retain and sub.retain_as_published,
                                 (sub.identifier,) if sub.identifier else (), topic_filter)
                taken += 1
                if len(victims) > 1:
                    victims.sort(key=_queue_length, reverse=True)
            if taken >= free:
                break
        return taken

    def _take_for(self, conn: R, cid: str, sub: Subscription, victims: list[Session],
                  now: float) -> Queued | None:
        """The oldest message of ``sub``'s group (its ``$share/...`` filter) that ``conn``
        may have, from the first of ``victims`` (the other members' sessions, longest queue
        first) that holds one."""
        share = sub.topic_filter
        reader = self.authorizer.readers.get(cid)
        plugins = self.plugins.authorizers

        def accept(message: Message) -> bool:
            m = message.origin if isinstance(message, Derived) else message
            if reader is not None and not reader.may_read(m.topic):
                return False  # the ACL file: as on delivery (_readable)
            if plugins:
                answer = self.may_receive(cid, m.topic)
                if isinstance(answer, asyncio.Future) and not answer.done():
                    return False  # no waiting here: the message stays where it is
                if not self.plugin_allows(answer):
                    return False
            return _fits(conn, m, min(m.qos, sub.qos), m.retain and sub.retain_as_published,
                         1 if sub.identifier else 0)

        for victim in victims:
            if victim.queue:
                item = victim.take_queued(share, accept, now)
                if item is not None:
                    return item
        return None

    # -- routing ----------------------------------------------------------------------------------

    def _available(self, cid: str) -> bool:
        """Can this client take another message now (online, window not full)?"""
        conn = self._connections.get(cid)
        if conn is None:
            return False
        s = conn.session
        return s is not None and len(s.inflight) < s.max_inflight

    def publish_from(self, conn: R, message: Message,
                     plugins_allow: bool = True) -> int:
        """A client published: check it may, then route. Returns the MQTT 5 reason code for
        its PUBACK/PUBREC (0x00, 0x10 no matching subscribers, 0x87 not authorised, 0x95
        payload over ``message_size_limit``). ``plugins_allow``: the authorizing plugins'
        answer for its topic, which the connection asked first (:meth:`publish_answer`)."""
        if (message.topic.startswith("$") and not self.plugins.claims(message.topic)
                and not is_bridge_state(message.topic)):
            # clients do not publish to $ topics ($SYS belongs to the broker), but for a
            # remote bridge's state (its notifications, as Mosquitto takes them)
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
            changed = plugins.on_message(self.plugin_client(conn), message)
            if changed is None:
                log.debug("client %s: PUBLISH to %r dropped by a plugin", conn.name,
                          message.topic)
                return ReasonCode.SUCCESS
            message = changed
        if message.retain and message.qos and conn.level == V5 \
                and self.config.mqtt.retain_available and not self.retained.fits(message):
            # refused as a whole: 0x97 tells the publisher it was neither kept nor delivered
            self.retained_full(message, conn, "refused with 0x97")
            return ReasonCode.QUOTA_EXCEEDED
        if not self.publish(message, conn):
            return ReasonCode.NO_MATCHING_SUBSCRIBERS
        return ReasonCode.SUCCESS

    def retained_full(self, message: Message, conn: R | None, what: str) -> None:
        m = self.metrics
        if m.retained_dropped % 1000 == 0:
            log.warning("%s: retained message to %r not kept: %d retained messages, %d bytes "
                        "(max_retained_messages %d, max_retained_bytes %d); %s (%d so far)",
                        f"client {conn.name}" if conn is not None else "broker", message.topic,
                        len(self.retained), self.retained.bytes,
                        self.config.mqtt.max_retained_messages,
                        self.config.mqtt.max_retained_bytes, what, m.retained_dropped + 1)
        m.retained_dropped += 1

    def publish(self, message: Message, source: R | None = None) -> int:
        """Retain if asked, then hand ``message`` to every matching session, once each, at
        min(publish QoS, granted QoS) [MQTT-3.8.4-6]. Returns how many sessions it went to."""
        if message.retain and self.config.mqtt.retain_available:
            if self.retained.fits(message):
                self.retained.store(message)
                if self.plugins.events["on_retained"] and not message.topic.startswith("$SYS/"):
                    self.plugins.fire("on_retained", message.topic,
                                      _plugin_message(message) if message.payload else None)
            else:
                self.retained_full(message, source, "delivered, not retained")
        direct, shared = self.router.route(message.topic, message.sender, self._available)
        if self.backplane is not None and not message.topic.startswith("$SYS/"):
            # other nodes' subscribers; each shared group is served by one node. ($SYS is
            # each node's own: its clients, its counters.)
            mine = self.backplane.forward(message, {d.share for _, d in shared if d.share})
            if len(mine) < len(shared):
                shared = [(cid, d) for cid, d in shared if d.share in mine]
            self.backplane.throttle(source)
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
                        source: R | None) -> int:
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
                            source: R | None) -> int:
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
            answer = self.may_receive(cid, message.topic)
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
        if self.plugin_allows(answer) and self._running():
            self._deliver_to(cid, message, qos, retain, identifiers, share)

    def retained_when_allowed(self, conn: R,
                               item: tuple[Message, int, bool, tuple[int, ...]],
                               answer: asyncio.Future[bool | None]) -> None:
        if self.plugin_allows(answer) and not conn.closed:
            if self.plugins.deliver_hooks and conn.client_id is not None:
                changed = self.delivered_form(conn.client_id, item[0])
                if changed is None:
                    return
                item = (changed, *item[1:])
            conn.deliver_retained([item])

    def may_receive(self, cid: str, topic: str) -> bool | None | asyncio.Future[bool | None]:
        client = self.plugin_clients.get(cid) or PluginClient(cid, None, "", "", 4)
        return self.plugins.authorize(client, Action.RECEIVE, topic)

    def plugin_allows(self, answer: bool | None | asyncio.Future[bool | None]) -> bool:
        """A plugin decision as allowed or not (no opinion: allowed; the broker's own ACLs
        decide apart). A future still pending here counts as the timeout outcome."""
        if isinstance(answer, asyncio.Future):
            if not answer.done() or answer.cancelled():
                return self.plugins.timeout_allows
            answer = answer.result()
        return answer is not False

    def plugin_client(self, conn: R) -> PluginClient:
        cid = conn.client_id or ""
        client = self.plugin_clients.get(cid)
        if client is None:
            client = PluginClient(cid, conn.username, conn.peer, conn.listener, conn.level)
        return client

    def plugin_publish(self, pm: PluginMessage) -> None:
        """A plugin publishes (its context's publish): through on_message, then routed."""
        message: Message | None = Message(pm.topic, pm.payload, pm.qos, pm.retain,
                                          dict(pm.properties) or None, None)
        validate_topic_name(pm.topic)
        if self.plugins.message_hooks:
            message = self.plugins.on_message(None, message)  # type: ignore[arg-type]
        if message is not None:
            self.publish(message)

    def publish_answer(self, conn: R,
                       topic: str) -> bool | asyncio.Future[bool | None]:
        """A PUBLISH to ``topic`` arrived: whether the authorizing plugins allow it, or their
        answer still on its way (the connection then holds the packet and asks again)."""
        if not self.plugins.authorizers or (topic.startswith("$")
                                            and not self.plugins.claims(topic)):
            return True  # ($ topics are refused to clients whatever plugins say)
        answer = self.plugins.authorize(self.plugin_client(conn), Action.PUBLISH, topic)
        if isinstance(answer, asyncio.Future) and not answer.done():
            return answer
        return self.plugin_allows(answer)

    def _deliver_to(self, cid: str, message: Message, qos: int, retain: bool,
                    identifiers: tuple[int, ...], share: str | None = None,
                    source: R | None = None) -> None:
        conn = self._connections.get(cid)
        if conn is not None:
            if self._deliver_hooks:
                changed = self.delivered_form(cid, message)
                if changed is None:
                    return
                message = changed
            conn.deliver(message, qos, retain, identifiers, share, source)
        else:
            session = self._sessions.get(cid)
            if session is not None:
                if self._deliver_hooks:
                    changed = self.delivered_form(cid, message)
                    if changed is None:
                        return
                    message = changed
                session.offer(message, qos, retain, False, identifiers, share)
            elif self.backplane is not None:
                self.backplane.ghost(cid, message)  # its session just moved to another node

    def delivered_form(self, cid: str, message: Message) -> Message | None:
        """``message`` as the delivering plugins (on_deliver) let ``cid`` have it, or None
        when one of them keeps it from that client."""
        client = self.plugin_clients.get(cid) or PluginClient(cid, None, "", "", 4)
        changed = self.plugins.on_deliver(client, message)
        if changed is None:
            log.debug("client %r: delivery of %r withheld by a plugin", cid, message.topic)
            return None
        return changed if changed is message else Derived(changed, message)


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


def _queue_length(session: Session) -> int:
    return len(session.queue)


def _fits(conn: Recipient, message: Message, qos: int, retain: bool, identifiers: int) -> bool:
    """Can ``conn`` take ``message`` within its Maximum Packet Size [MQTT-3.1.2-25]? Its
    shared wire form, plus room for what an MQTT 5 delivery adds (Subscription Identifier,
    Message Expiry Interval, length bytes): an estimate on the safe side (a topic alias
    only shortens it), so a message that might not fit stays with its member."""
    limit = conn.max_out_packet
    if not limit:
        return True
    head, tail = message.wire(conn.level, qos, retain)
    size = len(head) + len(tail) + (2 if qos else 0)
    if conn.level == V5:
        size += 6 * identifiers + (5 if message.expires_at is not None else 0) + 3
    return size <= limit


def _plugin_message(m: Message) -> PluginMessage:
    return PluginMessage(m.topic, m.payload, m.qos, m.retain, m.properties or {}, m.sender)
