"""Sample plugins for tests/integration/test_plugins.py and test_plugin_on_deliver.py, named in a
broker's configuration by their dotted path (``tests.integration.sample_plugins.ClassName``: the tests run from the
repository root).

Each plugin keeps what it was asked (``calls``) or told (``events``) on the instance; a test
finds the instance through its broker (``BrokerThread.broker.plugins.plugins``). Options are
comma-separated prefixes of client ids, topics or filters, so that one broker serves several
cases of a test. The hooks run on the broker's event loop (another thread than the test's):
the test only reads these lists (appends and reads of a list are atomic in CPython).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from mqttbroker.plugins import Action, Client, Message, Plugin, PluginContext


def _prefixes(text: str) -> tuple[str, ...]:
    return tuple(p for p in text.split(",") if p)


# -- authenticate -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthOptions:
    allow: str = ""  # client id prefixes answered True
    deny: str = ""  # ... answered False
    fail: str = ""  # ... for which authenticate raises
    hang: str = ""  # ... answered by a coroutine that never finishes
    slow: str = ""  # ... answered (as allow/deny say, else None) by a coroutine after `delay`
    gated: str = ""  # ... answered True by a coroutine once the test opens the gate
    delay: float = 0.3


class Authenticator(Plugin):
    """authenticate by client id prefix; every call kept in ``calls`` as (id, user, password)."""

    Config = AuthOptions

    def __init__(self, context: PluginContext, config: AuthOptions) -> None:
        super().__init__(context, config)
        self.calls: list[tuple[str, str | None, bytes | None]] = []
        self.gate = asyncio.Event()  # (built on the broker's loop) set by the test

    def _rule(self, cid: str) -> bool | None:
        c = self.config
        if cid.startswith(_prefixes(c.deny)):
            return False
        if cid.startswith(_prefixes(c.allow)):
            return True
        return None

    def authenticate(self, client: Client, password: bytes | None) -> Any:
        self.calls.append((client.client_id, client.username, password))
        c = self.config
        cid = client.client_id
        if cid.startswith(_prefixes(c.fail)):
            raise RuntimeError(f"authenticate failed on purpose for {cid}")
        if cid.startswith(_prefixes(c.hang)):
            return self._never()
        if cid.startswith(_prefixes(c.gated)):
            return self._after_gate()
        if cid.startswith(_prefixes(c.slow)):
            return self._later(self._rule(cid))
        return self._rule(cid)

    async def _never(self) -> bool | None:
        await asyncio.Event().wait()
        return True

    async def _after_gate(self) -> bool | None:
        await self.gate.wait()
        return True

    async def _later(self, answer: bool | None) -> bool | None:
        await asyncio.sleep(self.config.delay)
        return answer


class SecondAuthenticator(Authenticator):
    """The same, as a second entry of the chain (a class may be named once)."""


# -- authorize --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthorizeOptions:
    deny_publish: str = ""  # topic prefixes no client may publish to
    deny_subscribe: str = ""  # filter prefixes no client may subscribe to
    deny_receive: str = ""  # "client-id-prefix:topic-prefix" pairs a client may not receive
    slow: str = ""  # actions ("publish", "subscribe", "receive") answered after `delay`
    delay: float = 0.25


class TopicAuthorizer(Plugin):
    """authorize by topic prefix; every call kept in ``calls`` as (id, action, topic), and
    each answer, once given, in ``answered`` as (id, action, topic, monotonic time)."""

    Config = AuthorizeOptions

    def __init__(self, context: PluginContext, config: AuthorizeOptions) -> None:
        super().__init__(context, config)
        self.calls: list[tuple[str, str, str]] = []
        self.answered: list[tuple[str, str, str, float]] = []

    def _rule(self, client: Client, action: Action, topic: str) -> bool | None:
        c = self.config
        if action is Action.PUBLISH and topic.startswith(_prefixes(c.deny_publish)):
            return False
        if action is Action.SUBSCRIBE and topic.startswith(_prefixes(c.deny_subscribe)):
            return False
        if action is Action.RECEIVE:
            for pair in _prefixes(c.deny_receive):
                who, _, what = pair.partition(":")
                if client.client_id.startswith(who) and topic.startswith(what):
                    return False
        return None

    def authorize(self, client: Client, action: Action, topic: str) -> Any:
        self.calls.append((client.client_id, str(action), topic))
        answer = self._rule(client, action, topic)
        if str(action) in _prefixes(self.config.slow):
            return self._later(client, action, topic, answer)
        self.answered.append((client.client_id, str(action), topic, time.monotonic()))
        return answer

    async def _later(self, client: Client, action: Action, topic: str,
                     answer: bool | None) -> bool | None:
        await asyncio.sleep(self.config.delay)
        self.answered.append((client.client_id, str(action), topic, time.monotonic()))
        return answer


# -- on_message -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RewriteOptions:
    rewrite: str = "rw/in/"  # this prefix becomes rw/out/, the payload upper case
    drop: str = "rw/drop/"  # dropped
    fail: str = "rw/fail/"  # on_message raises
    wildcard: str = "rw/wild/"  # on_message returns the topic with a '#' level


class Rewriter(Plugin):
    """on_message: change, drop, fail or spoil messages by topic prefix; sees each message
    (with its client's id, None for the broker's own) in ``seen``."""

    Config = RewriteOptions

    def __init__(self, context: PluginContext, config: RewriteOptions) -> None:
        super().__init__(context, config)
        self.seen: list[tuple[str | None, str, bytes]] = []

    def on_message(self, client: Client | None, message: Message) -> Message | None:
        self.seen.append((client.client_id if client is not None else None, message.topic,
                          message.payload))
        c = self.config
        topic = message.topic
        if topic.startswith(c.rewrite):
            return dataclasses.replace(message, topic="rw/out/" + topic[len(c.rewrite):],
                                       payload=message.payload.upper())
        if topic.startswith(c.drop):
            return None
        if topic.startswith(c.fail):
            raise ValueError(f"on_message failed on purpose for {topic}")
        if topic.startswith(c.wildcard):
            return dataclasses.replace(message, topic=topic + "/#")
        return message


# -- on_deliver -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeliverOptions:
    tag: str = "A"  # what this plugin writes into the payloads it marks
    mark: str = "dl/mark/"  # topic prefixes: payload + b"|<tag>=<receiving client id>"
    move: str = ""  # ... topic + "/<client id>", Content Type "for <client id>"
    withhold: str = ""  # "client-id-prefix:topic-prefix" pairs not delivered (None)
    flags: str = ""  # ... returned with QoS and retain flipped, payload + b"|flags"
    fail: str = ""  # ... on_deliver raises
    spoil: str = ""  # ... returned with a '#' level in the topic (not a valid message)
    bad_props: str = ""  # ... returned with a Content Type that is not a string


class Deliverer(Plugin):
    """on_deliver by topic prefix: mark, move, withhold, re-flag, fail or spoil a message per
    receiving client; every call kept in ``seen`` as (client id, user name, protocol, topic,
    payload, qos, retain) as this plugin was handed it."""

    Config = DeliverOptions

    def __init__(self, context: PluginContext, config: DeliverOptions) -> None:
        super().__init__(context, config)
        self.seen: list[tuple[str, str | None, int, str, bytes, int, bool]] = []

    def on_deliver(self, client: Client, message: Message) -> Message | None:
        cid = client.client_id
        self.seen.append((cid, client.username, client.protocol, message.topic,
                          message.payload, message.qos, message.retain))
        c = self.config
        topic = message.topic
        for pair in _prefixes(c.withhold):
            who, _, what = pair.partition(":")
            if cid.startswith(who) and topic.startswith(what):
                return None
        if topic.startswith(_prefixes(c.fail)):
            raise RuntimeError(f"on_deliver failed on purpose for {topic} to {cid}")
        if topic.startswith(_prefixes(c.spoil)):
            return dataclasses.replace(message, topic=topic + "/#")
        if topic.startswith(_prefixes(c.bad_props)):
            return dataclasses.replace(message, properties={0x03: 5})
        if topic.startswith(_prefixes(c.flags)):
            return dataclasses.replace(message, qos=0 if message.qos else 2,
                                       retain=not message.retain,
                                       payload=message.payload + b"|flags")
        if topic.startswith(_prefixes(c.move)):
            return dataclasses.replace(message, topic=f"{topic}/{cid}",
                                       properties={**message.properties,
                                                   0x03: f"for {cid}"})
        if topic.startswith(_prefixes(c.mark)):
            return dataclasses.replace(
                message, payload=message.payload + f"|{c.tag}={cid}".encode())
        return message

    def seen_on(self, prefix: str) -> list[tuple[str, str | None, int, str, bytes, int, bool]]:
        """The calls for topics starting with ``prefix`` ($SYS and the rest left out)."""
        return [s for s in self.seen if s[3].startswith(prefix)]


class SecondDeliverer(Deliverer):
    """The same, as a second entry of the chain (a class may be named once)."""


# -- events -----------------------------------------------------------------------------------------

class EventLog(Plugin):
    """Every event, in order, in ``events``: (name, details..., broker-thread monotonic time)."""

    def __init__(self, context: PluginContext, config: Any) -> None:
        super().__init__(context, config)
        self.events: list[tuple[Any, ...]] = []

    def _log(self, *event: Any) -> None:
        self.events.append((*event, time.monotonic()))

    def names(self) -> list[tuple[Any, ...]]:
        """The events without their times."""
        return [e[:-1] for e in self.events]

    def on_broker_start(self) -> None:
        self._log("broker_start")

    def on_broker_stop(self) -> None:
        self._log("broker_stop")

    def on_connect(self, client: Client) -> None:
        self._log("connect", client.client_id, client.username, client.listener,
                  client.protocol)

    def on_disconnect(self, client: Client) -> None:
        self._log("disconnect", client.client_id)

    def on_subscribe(self, client: Client, topic_filter: str, qos: int) -> None:
        self._log("subscribe", client.client_id, topic_filter, qos)

    def on_unsubscribe(self, client: Client, topic_filter: str) -> None:
        self._log("unsubscribe", client.client_id, topic_filter)

    def on_retained(self, topic: str, message: Message | None) -> None:
        self._log("retained", topic, None if message is None else message.payload)

    def on_session_expired(self, client_id: str) -> None:
        self._log("session_expired", client_id)


class FailingEvents(Plugin):
    """on_connect is a coroutine that raises; on_subscribe raises at once."""

    def __init__(self, context: PluginContext, config: Any) -> None:
        super().__init__(context, config)
        self.connects: list[str] = []

    async def on_connect(self, client: Client) -> None:
        self.connects.append(client.client_id)
        await asyncio.sleep(0.01)
        raise RuntimeError(f"on_connect failed on purpose for {client.client_id}")

    def on_subscribe(self, client: Client, topic_filter: str, qos: int) -> None:
        raise RuntimeError(f"on_subscribe failed on purpose for {topic_filter}")


# -- PluginContext.publish --------------------------------------------------------------------------

@dataclass(frozen=True)
class GreeterOptions:
    prefix: str = "greet/"
    qos: int = 1


class Greeter(Plugin):
    """Publishes ``hello <client id>`` to ``<prefix><client id>`` when a client connects."""

    Config = GreeterOptions

    def on_connect(self, client: Client) -> None:
        self.context.publish(self.config.prefix + client.client_id,
                             f"hello {client.client_id}".encode(), self.config.qos)


# -- configuration errors ---------------------------------------------------------------------------

class NotAPlugin:
    """A class that does not subclass Plugin."""


@dataclass(frozen=True)
class CountOptions:
    count: int  # required
    label: str = ""


class NeedsCount(Plugin):
    """A plugin with a required int option."""

    Config = CountOptions


class NeedsCountToo(NeedsCount):
    """The same, as another entry of one configuration."""


class NeedsCountThree(NeedsCount):
    """The same, as a third entry."""
