"""The public plugin API: what a plugin may do, and what it sees (docs/plugins.md).

A plugin is a subclass of :class:`Plugin` named in the configuration's ``plugins`` section by
its dotted class path, with its options (amqtt 0.11+'s shape)::

    plugins:
      mycompany.auth.HttpAuth:
        url: http://127.0.0.1:8080/auth
        timeout: 2

The options fill the plugin's ``Config`` dataclass (checked when the configuration loads, with
the file and line of a bad option). A plugin overrides only the hooks it needs; the broker
calls only those, in configuration order, and a broker without plugins pays nothing.

Hooks that decide (:meth:`Plugin.authenticate`, :meth:`Plugin.authorize`) return True
(allow), False (deny) or None (no opinion: ask the next plugin). For authenticate, when no
plugin answers, the broker's own password file and ``allow-anonymous`` decide; authorize's
answers come on top of the broker's ACL files (a plugin can refuse what they allow, not allow
what they refuse). They may be coroutines: the CONNECT or packet waits for the answer
without blocking the broker, at most ``mqtt.plugin_timeout`` seconds, after which
``mqtt.plugin_timeout_outcome`` decides. Authorization answers are remembered per client,
action and topic while its session lasts (asked again when it connects again), so a plugin
is not asked per message.

:meth:`Plugin.on_message` sees every client's PUBLISH as it arrives, and what plugins publish
through their context, and may return it changed (a new :class:`Message`, e.g.
``dataclasses.replace(message, topic=...)``) or None to drop it.
:meth:`Plugin.on_subscribe_filter` may change the topic filter of a SUBSCRIBE (once it was
allowed) and of an UNSUBSCRIBE, so a plugin that moves topics moves subscriptions with them.
The ``on_*`` events observe; a coroutine event runs in the background.

A plugin that raises is logged with its name and counted (``plugin_errors`` in ``/metrics``
and ``$SYS/broker/plugins/errors``); it never takes the broker down: a failing decision
counts as ``plugin_timeout_outcome``, a failing ``on_message`` leaves the message as it was,
a failing ``on_subscribe_filter`` the filter.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..config import Config as BrokerConfig

__all__ = ["Action", "Client", "Decision", "Message", "NoOptions", "Plugin", "PluginContext"]

#: True allow, False deny, None no opinion
Decision = bool | None


class Action(StrEnum):
    """What a client asks to do with a topic (amqtt's ``Action``, same values)."""

    PUBLISH = "publish"  # publish to this topic
    SUBSCRIBE = "subscribe"  # subscribe to this filter
    RECEIVE = "receive"  # be delivered a message published to this topic


@dataclass(frozen=True, slots=True)
class Client:
    """A client as a plugin sees it."""

    client_id: str
    username: str | None
    peer: str  # "host:port" of its socket
    listener: str  # the name of the listener it came in on
    protocol: int  # 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0)


@dataclass(frozen=True, slots=True)
class Message:
    """An application message as a plugin sees it (``dataclasses.replace`` makes a changed
    one). ``properties`` are MQTT 5's (property identifier -> value), empty for 3.x;
    ``sender`` is the publishing client's id (None for the broker's own messages)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Mapping[int, Any] = field(default_factory=dict)
    sender: str | None = None


@dataclass(frozen=True)
class NoOptions:
    """The ``Config`` of a plugin that takes no options."""


class PluginContext:
    """What the broker gives a plugin: its name, a logger of its own, the broker's
    configuration, the broker's clock, and a way to publish."""

    def __init__(self, name: str, broker_config: BrokerConfig,
                 publish: Callable[[Message], None], now: Callable[[], float]) -> None:
        self.name = name
        self.logger = logging.getLogger(f"mqttbroker.plugins.{name}")
        self.broker_config = broker_config
        self._publish = publish
        self._now = now

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                properties: Mapping[int, Any] | None = None) -> None:
        """Publish a message as the broker (it goes through the other plugins' on_message
        and to every matching subscriber; retained if ``retain``)."""
        self._publish(Message(topic, payload, qos, retain, properties or {}, None))

    def now(self) -> float:
        """The broker's clock (seconds; its event loop's time)."""
        return self._now()


class Plugin:
    """Base class of mqttbroker plugins: override the hooks you need.

    Every hook may be a plain method or a coroutine function (``async def``), except
    :meth:`on_message`, :meth:`on_deliver` and :meth:`on_subscribe_filter`, which are called on
    the broker's hot path and must answer at once.
    """

    #: the dataclass the plugin's options fill (unknown or missing options are errors)
    Config: ClassVar[type[Any]] = NoOptions
    #: ``$`` topic prefixes (``"$delayed/"``) whose clients' PUBLISH this plugin takes: the
    #: broker does not refuse them as its own topics; they are authorized and reach on_message
    claimed_topics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: PluginContext, config: Any) -> None:
        self.context = context
        self.config = config

    # -- lifecycle ------------------------------------------------------------------------------

    def on_broker_start(self) -> Awaitable[None] | None:
        """The broker is listening (called once, in configuration order, before any client)."""
        return None

    def on_broker_stop(self) -> Awaitable[None] | None:
        """The broker is stopping (after its clients were closed)."""
        return None

    # -- decisions ------------------------------------------------------------------------------

    def authenticate(self, client: Client,
                     password: bytes | None) -> Decision | Awaitable[Decision]:
        """May ``client`` (with its CONNECT's user name and ``password``) connect?"""
        return None

    def authorize(self, client: Client, action: Action,
                  topic: str) -> Decision | Awaitable[Decision]:
        """May ``client`` publish to / subscribe to / receive from ``topic``?"""
        return None

    # -- messages -------------------------------------------------------------------------------

    def on_message(self, client: Client | None, message: Message) -> Message | None:
        """A message arrived (``client`` None: the broker's own): return it, a changed one,
        or None to drop it (a QoS 1/2 PUBLISH is still acknowledged)."""
        return message

    def on_subscribe_filter(self, client: Client, topic_filter: str) -> str:
        """The filter ``client`` subscribes to (after the broker's checks and
        :meth:`authorize` allowed ``topic_filter``) or unsubscribes from, as the broker is to
        use it: ``topic_filter`` itself, or another well-formed filter (a shared
        subscription's ``$share/{group}/`` prefix kept as it is)."""
        return topic_filter

    def on_deliver(self, client: Client, message: Message) -> Message | None:
        """``message`` is about to be delivered to ``client`` (once per subscriber, retained
        messages on subscribe included): return it, a changed one (its topic, payload or
        properties; the delivery's QoS and retain flag stay the broker's), or None to not
        deliver it to that client. Called on the hot path: answer at once."""
        return message

    # -- events ---------------------------------------------------------------------------------

    def on_connect(self, client: Client) -> Awaitable[None] | None:
        """``client`` is connected (its CONNACK sent)."""
        return None

    def on_disconnect(self, client: Client) -> Awaitable[None] | None:
        """``client``'s connection ended, for whatever reason."""
        return None

    def on_subscribe(self, client: Client, topic_filter: str,
                     qos: int) -> Awaitable[None] | None:
        """``client`` was granted ``topic_filter`` at ``qos``."""
        return None

    def on_unsubscribe(self, client: Client, topic_filter: str) -> Awaitable[None] | None:
        """``client`` unsubscribed from ``topic_filter``."""
        return None

    def on_retained(self, topic: str, message: Message | None) -> Awaitable[None] | None:
        """``topic``'s retained message is now ``message`` (None: cleared)."""
        return None

    def on_session_expired(self, client_id: str) -> Awaitable[None] | None:
        """``client_id``'s session ended without its client (expired or discarded)."""
        return None
