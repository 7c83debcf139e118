"""amqtt's plugins, unchanged, in this broker (issue 15): the adapter that hosts them.

A class named in ``plugins`` that subclasses amqtt's ``amqtt.plugins.base.BasePlugin``
(``BaseAuthPlugin``, ``BaseTopicPlugin``) instead of :class:`~mqttbroker.plugins.Plugin` is
wrapped by :func:`adapter_for` in a generated subclass of :class:`AmqttPlugin`, and loaded the
way amqtt 0.11+'s ``PluginManager._load_str_plugin`` loads it::

    plugins:
      amqtt.plugins.authentication.AnonymousAuthPlugin:
        allow_anonymous: false
      amqtt.plugins.authentication.FileAuthPlugin:
        password_file: /etc/mqtt/passwd

* Options: ``dacite.from_dict(PluginClass.Config, options, Config(strict=True))`` when the
  configuration loads, as amqtt does: an unknown option (amqtt's options are spelled with
  underscores: ``allow-anonymous`` is unknown), a missing one or a wrong type is a
  :class:`~mqttbroker.errors.ConfigError` naming ``plugins.<class path>`` and its line. So is an
  ``on_*`` event, ``authenticate`` or ``topic_filtering`` that is not a coroutine function
  (amqtt's ``PluginImportError`` / ``PluginCoroError``). Enum options (the HTTP plugins'
  ``request_method``, ``params_mode``, ``response_mode``) cannot be set from a file, in amqtt
  0.12.1 either: dacite gets no ``cast``.
* Construction: in the broker's event loop (``PluginHost.start``), with an amqtt
  ``BrokerContext`` of its own whose ``config`` is that Config, ``logger`` amqtt's
  ``amqtt.broker.plugins.<ClassName>`` and ``loop`` the running loop. A constructor that raises
  (``FileAuthPlugin`` without its password file) stops the broker's start with a ConfigError
  naming the plugin.
* Authentication: the amqtt ``BaseAuthPlugin`` instances together answer as amqtt's
  ``Broker._authenticate``: every one is asked at once (``asyncio.gather``) with a ``Session``;
  an answer of None is ignored; the client is refused when one of the others is false, and
  when none answered (amqtt refuses a client no auth plugin vouches for); otherwise
  accepted. This answer is given at the place of the first amqtt plugin of the configuration
  that takes part (an auth or topic plugin) among the native plugins (the others answer
  None); a definite amqtt answer decides, as in amqtt, so the broker's own password file is not
  asked. Without amqtt auth plugins there is no amqtt answer (None). ``mqtt.plugin_timeout``
  bounds the whole answer, and a plugin that raises counts as ``plugin_timeout_outcome``
  (amqtt would drop the connection), as for any plugin.
* Topics: the ``BaseTopicPlugin`` instances together answer as amqtt's ``_topic_filtering``:
  allowed only when every one returns a true value (None refuses, as ``all()`` has it), at the
  place of the first topic plugin. Publish, subscribe (the filter) and receive are asked, with
  amqtt's ``Action``; answers are remembered per client while it is connected (as for every
  plugin). A refusal is what the broker answers for any plugin: MQTT 5 PUBACK/SUBACK 0x87,
  3.1.1 SUBACK 0x80 (a 3.1.1 PUBLISH is acknowledged and dropped, as amqtt does).
* Events (coroutines, in the background, kwargs as amqtt passes them):
  ``on_broker_pre_start`` and ``on_broker_post_start`` when the broker starts, one after the
  other (our plugins start before the listeners open: post_start comes before them too);
  ``on_broker_pre_shutdown``, ``on_broker_post_shutdown`` then ``close()`` when it stops (after
  its clients were closed); ``on_broker_client_connected`` / ``_disconnected(client_id,
  client_session)``; ``on_broker_client_subscribed(client_id, topic, qos)`` (qos: the granted
  one; amqtt passes the requested one); ``on_broker_client_unsubscribed(client_id, topic)``;
  ``on_broker_retained_message(client_id=None, retained_message)`` when a topic's retained
  message is set or cleared (empty ``data``); ``on_broker_message_received`` and
  ``on_broker_message_broadcast(client_id, message)`` for every PUBLISH a client may make (an
  ``IncomingApplicationMessage``: topic, data, qos, retain).
* Sessions: a plugin sees an ``amqtt.session.Session`` per client: ``client_id``,
  ``username``, ``password`` (the CONNECT's, as str), ``remote_address``, ``remote_port``,
  ``is_anonymous`` and ``attributes`` as plugins set them, ``last_connect_time`` /
  ``last_disconnect_time`` and ``transitions.state`` ("new", "connected", "disconnected"). The
  same Session goes to every amqtt plugin from the CONNECT on, and stays while the session
  may be resumed (at most :data:`MAX_OFFLINE_SESSIONS` disconnected ones are kept).

What an amqtt plugin cannot have here (it gets an empty value or an error, never a crash of
the broker):

* ``on_mqtt_packet_received`` / ``on_mqtt_packet_sent`` never fire: the broker has no
  per-packet hook (amqtt's ``PacketLoggerPlugin`` logs nothing; ``BrokerSysPlugin``'s byte and
  message counters stay 0; its other ``$SYS/broker/...`` topics are published).
* ``on_broker_message_received`` is not fired for a PUBLISH that the ACL file or a plugin
  refused (amqtt fires it for those too), nor for a message the broker itself publishes.
  ``IncomingApplicationMessage.publish_packet`` and ``packet_id`` are None.
* The context: ``broadcast_message(topic, data, qos)`` publishes as the broker (QoS None: each
  subscriber at its granted QoS, as in amqtt); ``retain_message(topic, data, qos)`` publishes a
  retained message, so it also goes to the current subscribers (amqtt only stores it; empty
  ``data`` clears the topic in both); ``sessions`` and ``get_session`` know the amqtt Sessions
  above; ``retained_messages`` and ``subscriptions`` are empty dicts (the broker's retained
  store and subscription tree are not plugin API); ``add_subscription`` raises
  NotImplementedError; the ``Broker`` behind amqtt's context is not there.
* Session fields the broker does not hand to plugins stay at amqtt's defaults:
  ``clean_session`` (None), ``keep_alive`` (0), ``will_*``, ``ssl_object``, the in-flight and
  retained queues (empty). A Session is made at the CONNECT, so what a plugin stored in it does
  not survive a reconnection; the password is known only when the amqtt plugins were asked
  to authenticate (not when a native plugin before them decided, nor for MQTT 5 enhanced or
  certificate authentication).
* Relative file names in options (``password_file``) are read against the working directory,
  as amqtt does, not against the configuration file's directory.
* A failing amqtt event handler is logged with the plugin's name; one fired by the broker
  counts in ``plugin_errors``, the message events (fired from the hot path) are only logged.

amqtt stays optional: nothing of it is imported until a configured class is an amqtt plugin
(its module has then imported amqtt already).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import inspect
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any, ClassVar, Final, cast

from ..errors import ConfigError, ConfigIssue
from .api import Action, Client, Decision, Message, Plugin, PluginContext

__all__ = ["MAX_OFFLINE_SESSIONS", "AmqttPlugin", "adapter_for", "link"]

log = logging.getLogger("mqttbroker.plugins.amqtt")

#: disconnected clients whose amqtt Session is kept, oldest forgotten first (~7 KB each)
MAX_OFFLINE_SESSIONS: Final = 4096
#: Sessions made at CONNECT and not (yet) connected: refused clients' are forgotten past this
MAX_PENDING_SESSIONS: Final = 1024
#: seconds the message events still running get when the broker stops
STOP_WAIT: Final = 1.0

# amqtt's events (amqtt.events.BrokerEvents / MQTTEvents), by the hook of ours that fires them
_CONNECTED: Final = "broker_client_connected"
_DISCONNECTED: Final = "broker_client_disconnected"
_SUBSCRIBED: Final = "broker_client_subscribed"
_UNSUBSCRIBED: Final = "broker_client_unsubscribed"
_RETAINED: Final = "broker_retained_message"
_RECEIVED: Final = "broker_message_received"
_BROADCAST: Final = "broker_message_broadcast"
_START: Final = ("broker_pre_start", "broker_post_start")
_STOP: Final = ("broker_pre_shutdown", "broker_post_shutdown")


# -- amqtt, imported on first use ------------------------------------------------------------------

@functools.cache
def _amqtt(name: str) -> ModuleType:
    """An amqtt module (amqtt has no type information: what it gives is Any)."""
    return importlib.import_module(name)


def _events() -> tuple[str, ...]:
    """Every amqtt event name a plugin may handle as ``on_<name>`` (broker and MQTT events)."""
    events = _amqtt("amqtt.events")
    return tuple(str(e.value) for e in (*events.BrokerEvents, *events.MQTTEvents))


class _Transitions:
    """What a Session's state machine offers plugins (``state``, ``is_connected()``...),
    without building a ``transitions.Machine`` per client (1.5 ms and 23 KB each)."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = "new"

    def connect(self) -> None:
        self.state = "connected"

    def disconnect(self) -> None:
        self.state = "disconnected"

    def is_new(self) -> bool:
        return self.state == "new"

    def is_connected(self) -> bool:
        return self.state == "connected"

    def is_disconnected(self) -> bool:
        return self.state == "disconnected"


class _SessionMixin:
    """Mixed before amqtt's ``Session``: the same object, without its state machine."""

    def _init_states(self) -> None:
        self.transitions = _Transitions()


@functools.cache
def _session_class() -> type[Any]:
    return type("Session", (_SessionMixin, _amqtt("amqtt.session").Session), {})


def _peer(client: Client) -> tuple[str | None, int | None]:
    """``client``'s address and port (its ``peer`` is "host:port")."""
    host, _, port = client.peer.rpartition(":")
    return host or None, int(port) if port.isdigit() else None


def _new_session(client: Client, password: str | None) -> Any:
    session = _session_class()()
    session.client_id = client.client_id
    session.username = client.username
    session.password = password
    session.remote_address, session.remote_port = _peer(client)
    return session


def _same_peer(session: Any, client: Client) -> bool:
    return (session.remote_address, session.remote_port) == _peer(client)


class _ContextMixin:
    """Mixed before amqtt's ``BrokerContext``: its broker-facing methods on our
    :class:`PluginContext` (see the module's docstring for what is not there)."""

    _adapter: AmqttPlugin
    _plugin_context: PluginContext

    def _setup(self, adapter: AmqttPlugin, context: PluginContext, config: Any) -> None:
        self._adapter = adapter
        self._plugin_context = context
        self.config = config
        self.logger = logging.getLogger("amqtt.broker.plugins").getChild(
            adapter.amqtt_class.__name__)
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    async def broadcast_message(self, topic: str, data: bytes | bytearray,
                                qos: int | None = None) -> None:
        # QoS None: amqtt delivers at each subscription's QoS; 2 is capped to it the same way
        self._plugin_context.publish(topic, bytes(data), 2 if qos is None else qos)

    async def retain_message(self, topic_name: str, data: bytes | bytearray,
                             qos: int | None = None) -> None:
        self._plugin_context.publish(topic_name, bytes(data or b""),
                                     2 if qos is None else qos, retain=True)

    @property
    def sessions(self) -> Iterator[Any]:
        yield from list(self._adapter._group.sessions.values())

    def get_session(self, client_id: str) -> Any:
        return self._adapter._group.sessions.get(client_id)

    @property
    def retained_messages(self) -> dict[str, Any]:
        return {}

    @property
    def subscriptions(self) -> dict[str, list[tuple[Any, int]]]:
        return {}

    async def add_subscription(self, client_id: str, topic: str | None,
                               qos: int | None) -> None:
        raise NotImplementedError("add_subscription: this broker does not let plugins "
                                  "subscribe clients")


@functools.cache
def _context_class() -> type[Any]:
    return type("BrokerContext", (_ContextMixin, _amqtt("amqtt.broker").BrokerContext), {})


# -- the amqtt plugins of one broker ---------------------------------------------------------------

class _Group:
    """The amqtt plugins of one broker: they decide together and share the Sessions, as under
    amqtt's PluginManager."""

    def __init__(self, adapters: list[AmqttPlugin]) -> None:
        self.auth = [a for a in adapters if a.is_auth]
        self.topic = [a for a in adapters if a.is_topic]
        # the adapter that answers for them all (the first in the configuration)
        self.auth_leader = next((a for a in adapters if a.is_auth or a.is_topic), None)
        self.topic_leader = self.topic[0] if self.topic else None
        self.sessions: dict[str, Any] = {}  # client id -> its amqtt Session
        self.pending: dict[str, Any] = {}  # made at CONNECT, until on_connect
        self.offline: dict[str, None] = {}  # disconnected client ids, oldest first

    def session_for(self, client: Client) -> Any:
        """The Session of ``client``; one made now (not kept) when it has none."""
        session = self.sessions.get(client.client_id)
        if session is None:
            session = self.pending.get(client.client_id)
            if session is None:
                session = _new_session(client, None)
        return session

    def connected(self, client: Client) -> Any:
        """``client`` connected: its Session from the CONNECT becomes the one (each adapter
        asks; the first makes it so)."""
        cid = client.client_id
        session = self.pending.pop(cid, None)
        if session is None or not _same_peer(session, client):
            session = self.sessions.get(cid)
            if session is not None and session.transitions.state == "connected" and \
                    _same_peer(session, client):
                return session  # another adapter saw this on_connect first
            session = _new_session(client, None)  # the amqtt plugins did not see the CONNECT
        self.offline.pop(cid, None)
        self.sessions[cid] = session
        session.transitions.connect()
        session.last_connect_time = int(time.time())
        session.last_disconnect_time = None
        return session

    def disconnected(self, client: Client) -> Any:
        cid = client.client_id
        session = self.sessions.get(cid)
        if session is None:
            return _new_session(client, None)
        if session.transitions.state == "connected":
            session.transitions.disconnect()
            session.last_disconnect_time = int(time.time())
            self.offline[cid] = None
            while len(self.offline) > MAX_OFFLINE_SESSIONS:
                oldest = next(iter(self.offline))
                del self.offline[oldest]
                self.sessions.pop(oldest, None)
        return session

    def expired(self, client_id: str) -> None:
        """``client_id``'s session ended while it was disconnected."""
        if client_id in self.offline:
            del self.offline[client_id]
            self.sessions.pop(client_id, None)

    async def authenticate(self, session: Any) -> Decision:
        """amqtt's ``Broker._authenticate`` over the auth plugins."""
        cid = session.client_id
        results = await asyncio.gather(*(a.plugin.authenticate(session=session)
                                         for a in self.auth))
        answers = [r for r in results if r is not None]
        allowed = bool(answers) and all(answers)
        if not allowed and self.pending.get(cid) is session:
            del self.pending[cid]
        return allowed

    async def topic_filtering(self, session: Any, topic: str, action: Action) -> Decision:
        """amqtt's ``Broker._topic_filtering`` over the topic plugins."""
        amqtt_action = _amqtt("amqtt.contexts").Action(action.value)
        results = await asyncio.gather(*(
            a.plugin.topic_filtering(session=session, topic=topic, action=amqtt_action)
            for a in self.topic))
        return all(results)


# -- the adapter -----------------------------------------------------------------------------------

class AmqttPlugin(Plugin):
    """One amqtt plugin instance as a plugin of ours (see the module's docstring).

    Not named in a configuration itself: :func:`adapter_for` makes a subclass per amqtt class,
    overriding only the hooks that class can use (so the broker calls no more than needed).
    """

    #: the wrapped amqtt plugin class (set on the generated subclasses)
    amqtt_class: ClassVar[type[Any]]
    is_auth: ClassVar[bool] = False  # a BaseAuthPlugin: asked to authenticate
    is_topic: ClassVar[bool] = False  # a BaseTopicPlugin: asked topic_filtering

    def __init__(self, context: PluginContext, config: Any) -> None:
        super().__init__(context, config)
        cls = self.amqtt_class
        self._group = _Group([self])  # alone until link() groups the broker's amqtt plugins
        self._tasks: set[asyncio.Future[Any]] = set()
        amqtt_context = _context_class()(None)
        amqtt_context._setup(self, context, config)
        self.amqtt_context = amqtt_context
        try:
            #: the amqtt plugin itself
            self.plugin: Any = cls(amqtt_context)
        except Exception as exc:  # amqtt's PluginInitError: a config problem
            raise self._problem(f"the amqtt plugin failed to start: {type(exc).__name__}: "
                                f"{exc}") from exc
        # amqtt's PluginManager: every on_<event> the instance has (EventLoggerPlugin's come
        # from __getattr__) must be a coroutine function
        self._handlers: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {}
        for event in _events():
            handler = getattr(self.plugin, f"on_{event}", None)
            if handler is None:
                continue
            if not inspect.iscoroutinefunction(handler):
                raise self._problem(f"'on_{event}' for '{cls.__name__}' is not a coroutine")
            self._handlers[event] = handler
        self._message_handlers = tuple(h for e, h in self._handlers.items()
                                       if e in (_RECEIVED, _BROADCAST))

    def _problem(self, what: str) -> ConfigError:
        name = self.context.name
        line = next((s.line for s in self.context.broker_config.plugins if s.path == name), None)
        return ConfigError([ConfigIssue(f"plugins.{name}", line, what)])

    @classmethod
    def options(cls, given: Mapping[str, Any]) -> tuple[Any, str]:
        """amqtt's option check: ``dacite.from_dict(Config, given, strict)``; (the Config
        object, "") or (None, the problem)."""
        if not hasattr(cls, "amqtt_class"):
            return None, ("AmqttPlugin hosts amqtt plugins: name the amqtt plugin class "
                          "itself in 'plugins'")
        plugin_cls = cls.amqtt_class
        problem = _not_coroutines(plugin_cls)
        if problem:
            return None, problem
        from dacite import Config as DaciteConfig
        from dacite import DaciteError, UnexpectedDataError, from_dict

        config_cls: Any = getattr(plugin_cls, "Config", None)
        try:
            return from_dict(data_class=config_cls, data=dict(given),
                             config=DaciteConfig(strict=True)), ""
        except DaciteError as exc:
            fields = [f.name for f in dataclasses.fields(config_cls)]
            hint = ""
            if isinstance(exc, UnexpectedDataError):
                fixed = [k.replace("-", "_") for k in exc.keys if "-" in k]
                if fixed and all(k in fields for k in fixed):
                    hint = f"; amqtt spells it {fixed[0]!r}"
            return None, (f"{exc} (amqtt checks a plugin's options strictly with dacite{hint};"
                          f" the plugin's options: {', '.join(fields) or 'none'})")
        except TypeError:
            return None, (f"could not marshall 'Config' of {plugin_cls.__qualname__}; "
                          "should be a dataclass")
        except ValueError as exc:  # the Config's own checks (__post_init__)
            return None, f"bad options: {exc}"

    # -- lifecycle ------------------------------------------------------------------------------

    async def on_broker_start(self) -> None:
        await self._fire_all(_START)

    async def on_broker_stop(self) -> None:
        """pre/post shutdown, then ``close()`` (whatever the events did). The message events
        still running get :data:`STOP_WAIT` seconds first, as amqtt waits for its fired
        events; then they are cancelled."""
        try:
            if self._tasks:
                _, late = await asyncio.wait(list(self._tasks), timeout=STOP_WAIT)
                for task in late:
                    task.cancel()
            await self._fire_all(_STOP)
        finally:
            closed = self.plugin.close()
            if inspect.isawaitable(closed):
                await closed

    async def _fire_all(self, events: Iterable[str]) -> None:
        """Each event in turn (amqtt waits for them); all are fired, then a failure raises."""
        failure: BaseException | None = None
        for event in events:
            handler = self._handlers.get(event)
            if handler is not None:
                try:
                    await handler()
                except Exception as exc:  # noqa: BLE001 - raised below, once all were fired
                    failure = failure or exc
        if failure is not None:
            raise failure

    # -- decisions (the group's leader answers for the group) ------------------------------------

    def _authenticate(self, client: Client,
                      password: bytes | None) -> Decision | Awaitable[Decision]:
        group = self._group
        if group.auth_leader is not self:
            return None
        try:
            text = None if password is None else password.decode("utf-8")
        except UnicodeDecodeError:  # amqtt could not even read such a CONNECT
            return False if group.auth else None
        session = _new_session(client, text)
        pending = group.pending
        pending.pop(client.client_id, None)
        pending[client.client_id] = session
        while len(pending) > MAX_PENDING_SESSIONS:
            del pending[next(iter(pending))]
        if not group.auth:
            return None  # only topic plugins: the Session (with its password) is for them
        return group.authenticate(session)

    def _authorize(self, client: Client, action: Action,
                   topic: str) -> Decision | Awaitable[Decision]:
        group = self._group
        if group.topic_leader is not self:
            return None
        return group.topic_filtering(group.session_for(client), topic, action)

    # -- events ---------------------------------------------------------------------------------

    def on_connect(self, client: Client) -> Awaitable[None] | None:
        session = self._group.connected(client)
        handler = self._handlers.get(_CONNECTED)
        if handler is None:
            return None
        return handler(client_id=client.client_id, client_session=session)

    def on_disconnect(self, client: Client) -> Awaitable[None] | None:
        session = self._group.disconnected(client)
        handler = self._handlers.get(_DISCONNECTED)
        if handler is None:
            return None
        return handler(client_id=client.client_id, client_session=session)

    def on_session_expired(self, client_id: str) -> Awaitable[None] | None:
        self._group.expired(client_id)
        return None

    def _on_subscribe(self, client: Client, topic_filter: str,
                      qos: int) -> Awaitable[None] | None:
        return self._handlers[_SUBSCRIBED](client_id=client.client_id, topic=topic_filter,
                                           qos=qos)

    def _on_unsubscribe(self, client: Client, topic_filter: str) -> Awaitable[None] | None:
        return self._handlers[_UNSUBSCRIBED](client_id=client.client_id, topic=topic_filter)

    def _on_retained(self, topic: str, message: Message | None) -> Awaitable[None] | None:
        source = None
        if message is not None and message.sender is not None:
            source = self._group.sessions.get(message.sender)
        retained = _amqtt("amqtt.broker").RetainedApplicationMessage(
            source, topic, message.payload if message is not None else b"",
            message.qos if message is not None else None)
        return self._handlers[_RETAINED](client_id=None, retained_message=retained)

    def _on_message(self, client: Client | None, message: Message) -> Message | None:
        if client is not None and self._message_handlers:
            app = _amqtt("amqtt.session").IncomingApplicationMessage(
                None, message.topic, message.qos, message.payload, message.retain)
            for handler in self._message_handlers:
                self._spawn(handler(client_id=client.client_id, message=app))
        return message  # unchanged: amqtt's message events only observe

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("plugin %s failed in a message event: %s", self.context.name, exc,
                      exc_info=exc)


# the hooks a generated subclass overrides, and the amqtt events (or kind) that need them
_EVENT_HOOKS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("on_subscribe", "_on_subscribe", (_SUBSCRIBED,)),
    ("on_unsubscribe", "_on_unsubscribe", (_UNSUBSCRIBED,)),
    ("on_retained", "_on_retained", (_RETAINED,)),
    ("on_message", "_on_message", (_RECEIVED, _BROADCAST)),
)

_ADAPTERS: dict[type[Any], type[AmqttPlugin]] = {}


def adapter_for(cls: object) -> type[AmqttPlugin] | None:
    """The adapter class hosting amqtt plugin class ``cls``; None when ``cls`` is not one
    (or amqtt is not imported: a subclass of its BasePlugin would have imported it)."""
    base = sys.modules.get("amqtt.plugins.base")
    if base is None or not isinstance(cls, type) or not issubclass(cls, base.BasePlugin):
        return None
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        is_auth = issubclass(cls, base.BaseAuthPlugin)
        is_topic = issubclass(cls, base.BaseTopicPlugin)
        namespace: dict[str, Any] = {
            "amqtt_class": cls, "Config": getattr(cls, "Config", None),
            "is_auth": is_auth, "is_topic": is_topic,
            "__doc__": f"amqtt's {cls.__module__}.{cls.__qualname__}, hosted.",
            "__module__": __name__,
        }
        if is_auth or is_topic:  # a topic plugin reads the CONNECT's password too (JWT)
            namespace["authenticate"] = AmqttPlugin._authenticate
        if is_topic:
            namespace["authorize"] = AmqttPlugin._authorize
        # a class with __getattr__ (EventLoggerPlugin) may handle any event
        dynamic = any("__getattr__" in vars(k) for k in cls.__mro__[:-1])
        for hook, method, events in _EVENT_HOOKS:
            if dynamic or any(callable(getattr(cls, f"on_{e}", None)) for e in events):
                namespace[hook] = getattr(AmqttPlugin, method)
        adapter = cast("type[AmqttPlugin]",
                       type(f"AmqttPlugin[{cls.__qualname__}]", (AmqttPlugin,), namespace))
        _ADAPTERS[cls] = adapter
    return adapter


def _not_coroutines(cls: type[Any]) -> str:
    """amqtt's load-time checks on a plugin class ('' when it passes)."""
    base = _amqtt("amqtt.plugins.base")
    if issubclass(cls, base.BaseAuthPlugin) and \
            not inspect.iscoroutinefunction(cls.authenticate):
        return f"auth plugin {cls.__qualname__} has a non-async authenticate method"
    if issubclass(cls, base.BaseTopicPlugin) and \
            not inspect.iscoroutinefunction(cls.topic_filtering):
        return f"topic plugin {cls.__qualname__} has a non-async topic_filtering method"
    for event in _events():
        handler = inspect.getattr_static(cls, f"on_{event}", None)
        if handler is not None and callable(handler) and \
                not inspect.iscoroutinefunction(handler):
            return f"'on_{event}' for '{cls.__qualname__}' is not a coroutine"
    return ""


def link(plugins: Iterable[Plugin]) -> None:
    """The amqtt plugins among a broker's ``plugins`` (built, in configuration order) decide
    together and share their Sessions, as under one amqtt PluginManager."""
    adapters = [p for p in plugins if isinstance(p, AmqttPlugin)]
    if adapters:
        group = _Group(adapters)
        for adapter in adapters:
            adapter._group = group
