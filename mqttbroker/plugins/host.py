"""Hosting plugins: load and check them, call their hooks in order, contain their failures.

The broker holds one :class:`PluginHost`. Its hook lists hold only the plugins that override
each hook, so the broker asks ``if host.authorizers:`` and a broker without plugins (or
without a plugin for that hook) does no more work than before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import logging
import typing
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from ..config import Config, PluginSpec
from ..errors import ConfigError, ConfigIssue
from ..message import Message as Internal
from ..metrics import Metrics
from ..protocol.codec import encode_publish_parts
from ..protocol.topics import SHARE_PREFIX, topic_filter_problem, validate_topic_name
from .amqtt import AmqttPlugin, adapter_for, link
from .api import Action, Client, Decision, Message, Plugin, PluginContext

log: Final = logging.getLogger("mqttbroker.plugins")

CACHE_PER_CLIENT: Final = 1024  # authorization answers kept per connected client
_MISS: Final = object()


class _Fallback:
    """A decision no plugin made (one failed, or did not answer in time): the configured
    outcome, used once and never remembered (the next packet asks again)."""

    __slots__ = ("decision",)

    def __init__(self, decision: Decision) -> None:
        self.decision = decision

# hook name -> the base method it overrides
_EVENTS: Final = ("on_connect", "on_disconnect", "on_subscribe", "on_unsubscribe",
                  "on_retained", "on_session_expired")


def _overrides(plugin: Plugin, hook: str) -> bool:
    return getattr(type(plugin), hook) is not getattr(Plugin, hook)


# -- loading ---------------------------------------------------------------------------------------

def load_classes(specs: tuple[PluginSpec, ...],
                 filename: str | None = None) -> list[tuple[PluginSpec, type[Plugin], Any]]:
    """Import every configured plugin class and build its options; a :class:`ConfigError`
    naming the key and line of each problem (import error, not a plugin, bad option)."""
    issues: list[ConfigIssue] = []
    loaded: list[tuple[PluginSpec, type[Plugin], Any]] = []
    for spec in specs:
        key = f"plugins.{spec.path}"
        problem, cls = _import(spec.path)
        if cls is None:
            issues.append(ConfigIssue(key, spec.line, problem))
            continue
        options, problem = _options(cls, spec.options)
        if problem:
            issues.append(ConfigIssue(key, spec.line, problem))
            continue
        loaded.append((spec, cls, options))
    if issues:
        raise ConfigError(issues, filename)
    return loaded


def _import(path: str) -> tuple[str, type[Plugin] | None]:
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import error, or whatever the module raised
        return f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}", None
    cls = getattr(module, name, None)
    if cls is None:
        return f"module {module_name!r} has no {name!r}", None
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        adapter = adapter_for(cls)  # an amqtt plugin class: hosted by plugins/amqtt.py
        if adapter is None:
            return (f"{path} is not a plugin: a plugin subclasses "
                    "mqttbroker.plugins.Plugin"), None
        return "", adapter
    return "", cls


_SIMPLE: Final[dict[Any, tuple[type, ...]]] = {
    int: (int,), float: (int, float), str: (str,), bool: (bool,),
}


def _options(cls: type[Plugin], given: Mapping[str, Any]) -> tuple[Any, str]:
    """``cls.Config`` filled with ``given`` (hyphens read as underscores), or a problem."""
    if issubclass(cls, AmqttPlugin):
        return cls.options(given)  # amqtt's own check (dacite, strict)
    config_cls = cls.Config
    if not dataclasses.is_dataclass(config_cls):
        return None, f"{cls.__name__}.Config must be a dataclass"
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    options = {k.replace("-", "_"): v for k, v in given.items()}
    if len(options) < len(given):
        return None, "an option is given twice (with '-' and with '_')"
    unknown = sorted(set(options) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        return None, f"unknown option {unknown[0]!r} (the plugin's options: {known})"
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # unresolvable annotations: no type check
        hints = {}
    for name, value in options.items():
        expected = _SIMPLE.get(hints.get(name))
        if expected is not None and (not isinstance(value, expected)
                                     or (bool not in expected and isinstance(value, bool))):
            return None, (f"option {name!r} must be {hints[name].__name__}, "
                          f"got {type(value).__name__} {value!r}")
    try:
        return config_cls(**options), ""
    except (TypeError, ValueError) as exc:
        return None, f"bad options: {exc}"


# -- the host --------------------------------------------------------------------------------------

class PluginHost:
    """The loaded plugins of one broker, and the calls into them."""

    def __init__(self, specs: tuple[PluginSpec, ...], metrics: Metrics, *,
                 timeout: float = 5.0, timeout_allows: bool = False,
                 filename: str | None = None) -> None:
        self._classes = load_classes(specs, filename)
        self.metrics = metrics
        self.timeout = timeout
        self.timeout_allows = timeout_allows
        self.plugins: list[Plugin] = []
        self.names: dict[Plugin, str] = {}
        # the plugins that override each hook, in configuration order (empty: not called)
        self.authenticators: list[Plugin] = []
        self.authorizers: list[Plugin] = []
        self.message_hooks: list[Plugin] = []
        self.deliver_hooks: list[Plugin] = []
        self.filter_hooks: list[Plugin] = []
        self.claimed: tuple[str, ...] = ()  # $ topic prefixes plugins take from clients
        self.events: dict[str, list[Plugin]] = {e: [] for e in _EVENTS}
        self._cache: dict[str, dict[tuple[Action, str], Any]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()  # events and decisions under way
        # decisions that took the configured outcome (weak: an authentication's is dropped
        # with its task; an authorization's is read once, by the cache)
        self._fallbacks: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()

    def __bool__(self) -> bool:
        return bool(self._classes)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, config: Config, publish: Callable[[Message], None],
                    now: Callable[[], float]) -> None:
        """Build the plugins inside the running loop (a plugin may open a client session in
        its constructor), then call their on_broker_start in order."""
        for spec, cls, options in self._classes:
            try:
                plugin = cls(PluginContext(spec.path, config, publish, now), options)
            except ConfigError:
                raise
            except Exception as exc:  # the broker does not start with a plugin missing
                raise ConfigError([ConfigIssue(
                    f"plugins.{spec.path}", spec.line,
                    f"could not be built: {type(exc).__name__}: {exc}")]) from exc
            self.plugins.append(plugin)
            self.names[plugin] = spec.path
            self.claimed += tuple(plugin.claimed_topics)
            for hook, hooks in (("authenticate", self.authenticators),
                                ("authorize", self.authorizers),
                                ("on_message", self.message_hooks),
                                ("on_deliver", self.deliver_hooks),
                                ("on_subscribe_filter", self.filter_hooks)):
                if _overrides(plugin, hook):
                    hooks.append(plugin)
            for event, listeners in self.events.items():
                if _overrides(plugin, event):
                    listeners.append(plugin)
        link(self.plugins)  # amqtt plugins decide together, as under amqtt
        for plugin in self.plugins:
            if _overrides(plugin, "on_broker_start"):
                await self._lifecycle(plugin, "on_broker_start")

    async def stop(self) -> None:
        """on_broker_stop in order; what events are still running is cancelled."""
        for plugin in self.plugins:
            if _overrides(plugin, "on_broker_stop"):
                await self._lifecycle(plugin, "on_broker_stop")
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()

    async def _lifecycle(self, plugin: Plugin, hook: str) -> None:
        try:
            result = getattr(plugin, hook)()
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, self.timeout)
        except Exception:
            self.failed(plugin, hook)

    def failed(self, plugin: Plugin, hook: str) -> None:
        """``plugin`` raised in ``hook``: log it with its name, count it, go on."""
        self.metrics.plugin_errors += 1
        log.exception("plugin %s failed in %s", self.names.get(plugin, type(plugin).__name__),
                      hook)

    # -- decisions ------------------------------------------------------------------------------

    def authenticate(self, client: Client,
                     password: bytes | None) -> Decision | asyncio.Future[Decision]:
        """The first definite answer of the authenticators, in order; None when none has
        one; a future when one of them is a coroutine."""
        answer = self._decide(self.authenticators, "authenticate", (client, password))
        return answer.decision if isinstance(answer, _Fallback) else answer

    def authorize(self, client: Client, action: Action,
                  topic: str) -> Decision | asyncio.Future[Decision]:
        """As :meth:`authenticate`, remembered per client, action and topic until
        :meth:`forget` (a pending future is shared by the packets that wait for it)."""
        cache = self._cache.get(client.client_id)
        key = (action, topic)
        if cache is not None:
            hit = cache.get(key, _MISS)
            if hit is not _MISS:
                return typing.cast("Decision | asyncio.Future[Decision]", hit)
        else:
            cache = self._cache[client.client_id] = {}
        answer = self._decide(self.authorizers, "authorize", (client, action, topic))
        if isinstance(answer, _Fallback):
            return answer.decision  # not remembered: asked again next time
        if len(cache) >= CACHE_PER_CLIENT:
            # settled answers make room; one still on its way stays (a held packet waits
            # for it: dropping it would make that packet ask again, and again)
            for stale in [k for k, v in cache.items() if not isinstance(v, asyncio.Future)]:
                del cache[stale]
        cache[key] = answer
        if isinstance(answer, asyncio.Future):
            def settle(fut: asyncio.Future[Decision]) -> None:
                if cache.get(key) is not fut:
                    return
                if fut.cancelled() or fut in self._fallbacks:
                    self._fallbacks.discard(fut)
                    del cache[key]  # a timeout or a failure: asked again next time
                else:
                    cache[key] = fut.result()
            answer.add_done_callback(settle)
        return answer

    def forget(self, client_id: str) -> None:
        """``client_id``'s remembered answers go (it connected again, or its session
        ended): they were given for that connection's identity."""
        self._cache.pop(client_id, None)

    def _decide(self, plugins: list[Plugin], hook: str,
                args: tuple[Any, ...]) -> Decision | _Fallback | asyncio.Future[Decision]:
        for i, plugin in enumerate(plugins):
            try:
                answer = getattr(plugin, hook)(*args)
            except Exception:
                self.failed(plugin, hook)
                return _Fallback(self.timeout_allows)
            if inspect.isawaitable(answer):
                task = asyncio.ensure_future(self._decide_async(
                    plugin, answer, plugins[i + 1:], hook, args))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return task
            if answer is not None:
                return bool(answer)
        return None

    async def _decide_async(self, plugin: Plugin, pending: Awaitable[Decision],
                            rest: list[Plugin], hook: str, args: tuple[Any, ...]) -> Decision:
        """The rest of a decision chain, once one answer is a coroutine: the whole chain has
        ``timeout`` seconds; then (or when a plugin fails) ``timeout_allows`` decides."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        current: Plugin = plugin
        try:
            answer = await asyncio.wait_for(pending, max(deadline - loop.time(), 0.0))
            if answer is not None:
                return bool(answer)
            for current in rest:
                result = getattr(current, hook)(*args)
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, max(deadline - loop.time(), 0.0))
                if result is not None:
                    return bool(result)
            return None
        except TimeoutError:
            self.metrics.plugin_timeouts += 1
            log.warning("plugin %s: no %s answer within %gs: %s", self.names.get(current),
                        hook, self.timeout, "allowed" if self.timeout_allows else "denied")
        except Exception:
            self.failed(current, hook)
        task = asyncio.current_task()
        if task is not None:
            self._fallbacks.add(task)
        return self.timeout_allows

    # -- messages -------------------------------------------------------------------------------

    def claims(self, topic: str) -> bool:
        """Does a plugin take clients' PUBLISH to ``topic`` (a ``$`` topic)?"""
        return bool(self.claimed) and topic.startswith(self.claimed)

    def on_message(self, client: Client | None, message: Internal) -> Internal | None:
        """``message`` through every on_message in order: itself, a changed one, or None
        (dropped). A plugin that fails or returns an invalid message is skipped."""
        return self._chain(self.message_hooks, "on_message", client, message)

    def on_deliver(self, client: Client, message: Internal) -> Internal | None:
        """``message``, about to be delivered to ``client``, through every on_deliver in
        order: itself, a changed one, or None (not delivered to that client). A plugin that
        fails or returns an invalid message is skipped."""
        return self._chain(self.deliver_hooks, "on_deliver", client, message)

    def _chain(self, hooks: list[Plugin], hook: str, client: Client | None,
               message: Internal) -> Internal | None:
        view = Message(message.topic, message.payload, message.qos, message.retain,
                       message.properties or {}, message.sender)
        current = view
        for plugin in hooks:
            try:
                result = getattr(plugin, hook)(client, current)
                if result is None:
                    return None
                if result is not current:
                    validate_topic_name(result.topic)
                    if result.qos not in (0, 1, 2) or not isinstance(result.payload, bytes) \
                            or not isinstance(result.properties, Mapping):
                        raise ValueError(f"not a valid message: {result!r}")
                    if result.properties:
                        # a property MQTT cannot carry (a Content Type that is not a string,
                        # an unknown identifier) fails here, as this plugin's error, not
                        # later while the message is encoded for a subscriber
                        encode_publish_parts(result.topic, b"", 0, False, False, 5,
                                             dict(result.properties))
            except Exception:
                self.failed(plugin, hook)
                continue
            current = result
        if current is view:
            return message
        return Internal(current.topic, current.payload, current.qos, current.retain,
                        dict(current.properties) or None, current.sender, message.expires_at)

    def on_subscribe_filter(self, client: Client, topic_filter: str) -> str:
        """``topic_filter`` (of a SUBSCRIBE or an UNSUBSCRIBE) through every
        on_subscribe_filter in order: itself or a changed one. A plugin that fails or returns
        a filter that is not well-formed, or that adds, drops or changes a ``$share/{group}/``
        prefix, is skipped."""
        current = topic_filter
        for plugin in self.filter_hooks:
            try:
                result = plugin.on_subscribe_filter(client, current)
                if result != current:
                    problem = _filter_change_problem(current, result)
                    if problem:
                        raise ValueError(f"not a valid filter for {current!r}: {problem}")
            except Exception:
                self.failed(plugin, "on_subscribe_filter")
                continue
            current = result
        return current

    # -- events ---------------------------------------------------------------------------------

    def fire(self, event: str, *args: Any) -> None:
        """Tell every plugin that listens to ``event``; a coroutine runs in the background."""
        for plugin in self.events[event]:
            try:
                result = getattr(plugin, event)(*args)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._event_done(plugin, event))
            except Exception:
                self.failed(plugin, event)

    def _event_done(self, plugin: Plugin, event: str) -> Callable[[asyncio.Future[Any]], None]:
        def done(task: asyncio.Future[Any]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                self.metrics.plugin_errors += 1
                log.error("plugin %s failed in %s: %s", self.names.get(plugin), event, exc,
                          exc_info=exc)
        return done


def _share_prefix(topic_filter: str) -> str:
    """``$share/{group}/`` of a shared subscription's filter ('' for a plain filter)."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return ""
    group, sep, _ = topic_filter[len(SHARE_PREFIX):].partition("/")
    return f"{SHARE_PREFIX}{group}{sep}"


def _filter_change_problem(old: str, new: object) -> str | None:
    """What is wrong with a plugin's ``new`` filter for ``old``, or None."""
    if not isinstance(new, str):
        return f"not a str: {new!r}"
    prefix = _share_prefix(old)
    if _share_prefix(new) != prefix:
        return f"{new!r} does not keep the shared subscription prefix {prefix!r}"
    return topic_filter_problem(new[len(prefix):])
