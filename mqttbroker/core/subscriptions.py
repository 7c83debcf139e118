"""SUBSCRIBE and UNSUBSCRIBE: checks, grants, the router, and retained messages on subscribe.

A malformed filter makes its packet malformed (the connection closes [MQTT-4.7.3-1]); a
well-formed one that may not be had is refused in the SUBACK with its reason code (the ACL
file, the plugins, limits). A granted filter is routed, stored with a persistent session,
and brings the retained messages that match it [MQTT-3.8.4-3], within Retain Handling
[MQTT-3.3.1-9/10] and what the client may read.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, Final, Generic, Protocol, TypeVar

from ..config import Config
from ..errors import ProtocolError
from ..message import Message
from ..plugins.api import Action
from ..plugins.host import PluginHost
from ..protocol.constants import SUBACK_FAILURE, ProtocolLevel, ReasonCode
from ..protocol.packets import Packet, Suback, Subscribe, Unsuback, Unsubscribe
from ..protocol.properties import PropertyId as Prop
from ..protocol.topics import malformed_filter, topic_filter_problem
from ..retained import RetainedStore
from ..router import Router, parse_share
from ..session import Session
from .delivery import Dispatcher, Recipient
from .hooks import Access, HoldPacket

log: Final = logging.getLogger("mqttbroker")

V5: Final[int] = ProtocolLevel.MQTT_5


class Subscriber(Recipient, Protocol):
    """A connection as SUBSCRIBE sees it: it is answered with a packet."""

    bridge: bool  # a bridge (try_private): No Local and Retain As Published, always

    def send_packet(self, packet: Packet, durable: bool = False) -> None:
        """Encode and send ``packet`` (``durable``: after what it reports is stored)."""


S = TypeVar("S", bound=Subscriber)


class Subscriptions(Generic[S]):
    """Handles SUBSCRIBE and UNSUBSCRIBE for the broker's connections."""

    def __init__(self, config: Config, router: Router, retained: RetainedStore,
                 authorizer: Access, plugins: PluginHost, dispatch: Dispatcher[Any],
                 now: Callable[[], float]) -> None:
        self.config = config
        self.router = router
        self.retained = retained
        self.authorizer = authorizer
        self.plugins = plugins
        self.dispatch = dispatch
        self._now = now

    def subscribe(self, conn: S, p: Subscribe) -> None:
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
        client = self.dispatch.plugin_client(conn) if plugins else None
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
        now = self._now()
        for sub in p.subscriptions:
            f = sub.topic_filter
            code = self._refusal(conn, session, sub.topic_filter, v5)
            if code is None and client is not None and plugins.authorizers and \
                    not self.dispatch.plugin_allows(
                        plugins.authorize(client, Action.SUBSCRIBE, f)):
                log.info("client %s: SUBSCRIBE %r refused by a plugin", conn.name, f)
                code = ReasonCode.NOT_AUTHORIZED
            if code is None and sub.no_local and f.startswith("$share/"):
                raise ProtocolError(ReasonCode.PROTOCOL_ERROR,
                                    "No Local on a shared subscription [MQTT-3.8.3-4]")
            if code is not None:
                codes.append(code if v5 else SUBACK_FAILURE)
                continue
            if client is not None and plugins.filter_hooks:  # allowed: a plugin may change it
                f = sub.topic_filter = plugins.on_subscribe_filter(client, f)
            if conn.bridge and not f.startswith("$share/"):
                # Mosquitto's bridges: what a bridge publishes is not sent back to it (no
                # loop), and retained flags reach it as published
                sub.no_local = sub.retain_as_published = True
            granted = min(sub.qos, cfg.max_qos)
            sub.qos = granted
            sub.identifier = identifier
            new = f not in session.subscriptions
            session.own_subscriptions()[f] = sub  # a repeat replaces [MQTT-3.8.4-3]
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
                        answer = self.dispatch.may_receive(conn.client_id, m.topic)
                        if isinstance(answer, asyncio.Future):
                            answer.add_done_callback(functools.partial(
                                self.dispatch.retained_when_allowed, conn, item))
                            continue
                        if answer is False:
                            continue
                    if plugins.deliver_hooks:  # a delivery like any other (on_deliver)
                        changed = self.dispatch.delivered_form(conn.client_id, m)
                        if changed is None:
                            continue
                        item = (changed, item[1], True, ident)
                    retained.append(item)
        # durable: after a crash, a session said to be present must hold this subscription
        # (matching PUBLISH may go first: [MQTT-3.8.4-4] lets them)
        conn.send_packet(Suback(p.packet_id, codes), durable=True)
        if retained:
            conn.deliver_retained(retained)  # [MQTT-3.3.1-8] RETAIN=1 for retained on subscribe

    def _refusal(self, conn: S, session: Session, f: str,
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

    def unsubscribe(self, conn: S, p: Unsubscribe) -> None:
        """UNSUBSCRIBE: always answered with UNSUBACK [MQTT-3.10.4-5]."""
        session = conn.session
        assert session is not None and conn.client_id is not None
        for f in p.topic_filters:
            _check_filter(f, conn.level == V5, "UNSUBSCRIBE")
        codes: list[int] = []
        for f in p.topic_filters:
            if self.plugins.filter_hooks:  # as on SUBSCRIBE, a plugin may change the filter
                f = self.plugins.on_subscribe_filter(self.dispatch.plugin_client(conn), f)
            if session.subscriptions.pop(f, None) is not None:
                self.router.unsubscribe(conn.client_id, f)
                if session.store is not None:
                    session.store.delete_subscription(conn.client_id, f)
                codes.append(ReasonCode.SUCCESS)
                if self.plugins.events["on_unsubscribe"]:
                    self.plugins.fire("on_unsubscribe", self.dispatch.plugin_client(conn), f)
            elif topic_filter_problem(f) is not None:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)
            else:
                codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
        conn.send_packet(Unsuback(p.packet_id, codes if conn.level == V5 else []), durable=True)


def _check_filter(topic_filter: str, v5: bool, what: str) -> None:
    """A malformed topic filter makes its packet malformed: the connection closes
    ([MQTT-4.7.3-1], [MQTT-4.7.1-*]; MQTT 5: DISCONNECT 0x81 first)."""
    problem = malformed_filter(topic_filter, v5)
    if problem is not None:
        raise ProtocolError(ReasonCode.MALFORMED_PACKET,
                            f"{what} with a malformed topic filter {topic_filter[:100]!r}: "
                            f"{problem}")
