"""The storage interface: what the broker tells a backend, and what a backend gives back at start.

The broker keeps all of its state in memory and runs on it; a backend is a journal of changes
(``put_*`` / ``delete_*``, called synchronously on the event loop, never blocking) that it makes
durable in its own time, and the :class:`Snapshot` it reads back when the broker starts.

Keys: sessions by client id, subscriptions by (client id, filter), session items (outbound
messages in flight or queued) by ``seq`` (one counter for the whole store, so a session's items
load back in order), inbound QoS 2 ids by (client id, packet id), retained messages by topic,
and extensions' records (opaque bytes) by (owner, key): :class:`OwnerRecords`.
A message stored for several sessions (and as retained) is stored once: ``add_item`` and
``put_retained`` take a reference, ``delete_item`` and ``delete_retained`` drop one.

Times in records are wall-clock (``time.time()``): the event loop's clock restarts with the
process. :func:`to_wall` and :func:`from_wall` convert.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack  # type: ignore[import-untyped]

from ..message import Message
from ..metrics import Histogram
from ..protocol.packets import Subscription
from ..protocol.properties import PropertyId


class GatedOutput(Protocol):
    """Where the commit gate hands back what it kept (a client connection, in practice): the
    packets kept for it, in order, once the changes they acknowledge are committed."""

    def release_committed(self, data: list[bytes]) -> None: ...


@dataclass(slots=True)
class StoredWill:
    """A will waiting for its connection to end (``at`` None) or for its delay (``at``)."""

    message: Message
    delay: int = 0  # Will Delay Interval, seconds
    at: float | None = None  # wall-clock time to publish it, once scheduled


@dataclass(slots=True)
class StoredItem:
    """An outbound message of a session: in flight (``packet_id`` > 0) or queued."""

    seq: int
    message: Message
    qos: int
    retain: bool
    identifiers: tuple[int, ...] = ()
    share: str | None = None
    packet_id: int = 0
    state: int = 0  # an OutState while in flight


@dataclass(slots=True)
class StoredSession:
    """A session that outlives its connection, as stored."""

    client_id: str
    expiry_interval: int
    disconnected_at: float | None  # wall clock; None: its client was connected
    will: StoredWill | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    items: list[StoredItem] = field(default_factory=list)  # in seq order
    inbound_qos2: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Snapshot:
    """Everything a backend gives back when the broker starts."""

    sessions: list[StoredSession] = field(default_factory=list)
    retained: list[Message] = field(default_factory=list)
    #: extensions' records: owner -> key -> value (:class:`OwnerRecords`)
    records: dict[str, dict[str, bytes]] = field(default_factory=dict)


class Storage(Protocol):
    """A persistence backend. ``put``/``delete`` calls are cheap and never block."""

    #: True when acknowledgements must wait for :meth:`keep_until_committed` (sync: commit).
    gates_output: bool
    #: how long commits take, hand-off to durable (``/metrics``)
    commit_latency: Histogram

    def pending_changes(self) -> int:
        """Changes waiting for the next commit (``/metrics``)."""

    async def open(self, loop: asyncio.AbstractEventLoop) -> Snapshot:
        """Open (create) the store and read back what it holds."""

    async def close(self) -> None:
        """Make every change so far durable and release the store."""

    def next_seq(self) -> int:
        """A new item key, greater than every one before."""

    def put_session(self, client_id: str, expiry_interval: int, disconnected_at: float | None,
                    will: StoredWill | None) -> None:
        """Create or replace a session's record."""

    def delete_session(self, client_id: str) -> None:
        """Forget a session's record (its items, subscriptions and ids are deleted one by
        one by the caller, so message references stay counted)."""

    def put_subscription(self, client_id: str, sub: Subscription) -> None: ...

    def delete_subscription(self, client_id: str, topic_filter: str) -> None: ...

    def add_item(self, client_id: str, seq: int, message: Message, qos: int, retain: bool,
                 identifiers: tuple[int, ...], share: str | None, packet_id: int,
                 state: int) -> None:
        """A new outbound item (queued: ``packet_id`` 0); takes a reference on ``message``."""

    def update_item(self, client_id: str, seq: int, message: Message, qos: int, retain: bool,
                    identifiers: tuple[int, ...], share: str | None, packet_id: int,
                    state: int) -> None:
        """An item moved in flight or changed state."""

    def delete_item(self, seq: int, message: Message) -> None: ...

    def put_inbound(self, client_id: str, packet_id: int) -> None: ...

    def delete_inbound(self, client_id: str, packet_id: int) -> None: ...

    def put_record(self, owner: str, key: str, value: bytes) -> None:
        """Create or replace an extension's record (:class:`OwnerRecords`)."""

    def delete_record(self, owner: str, key: str) -> None: ...

    def put_retained(self, message: Message, old: Message | None) -> None:
        """``message`` is now its topic's retained message (``old`` the one it replaces)."""

    def delete_retained(self, message: Message) -> None:
        """``message`` is no longer retained."""

    def keep_until_committed(self, conn: GatedOutput, data: bytes) -> bool:
        """With ``gates_output``: keep ``data`` for ``conn`` until every change made so far is
        committed, and return True; False when nothing is waiting (send it now)."""


class OwnerRecords:
    """The durable records of one extension (``owner``, e.g. an MQTT-SN listener), key ->
    bytes: journaled with the broker's other changes and committed with them (a record put
    before a PUBACK is on disk when the PUBACK leaves), read back at start (:attr:`loaded`).
    Without a backend (``memory``) they last as long as the process. Implements
    :class:`mqttbroker.core.hooks.Records`."""

    __slots__ = ("_storage", "loaded", "owner")

    def __init__(self, storage: Storage | None, owner: str,
                 loaded: dict[str, bytes] | None = None) -> None:
        self._storage = storage
        self.owner = owner
        self.loaded: dict[str, bytes] = loaded or {}  # what the store held at start

    def put(self, key: str, value: bytes) -> None:
        if self._storage is not None:
            self._storage.put_record(self.owner, key, value)

    def delete(self, key: str) -> None:
        if self._storage is not None:
            self._storage.delete_record(self.owner, key)


def to_wall(loop_time: float, loop: asyncio.AbstractEventLoop) -> float:
    """An event-loop time as wall-clock time."""
    return loop_time - loop.time() + time.time()


def from_wall(wall: float, loop: asyncio.AbstractEventLoop) -> float:
    """A wall-clock time as event-loop time."""
    return wall - time.time() + loop.time()


def sub_options(sub: Subscription) -> int:
    """A subscription's options in one integer (no local, retain as published, handling)."""
    return (int(sub.no_local) | (int(sub.retain_as_published) << 1)
            | (sub.retain_handling << 2))


def sub_from_options(topic_filter: str, qos: int, options: int,
                     identifier: int) -> Subscription:
    """The subscription :func:`sub_options` packed."""
    return Subscription(topic_filter, qos, bool(options & 1), bool(options & 2), options >> 2,
                        identifier)


def pack_props(props: dict[int, Any] | None) -> bytes | None:
    """MQTT 5 properties as msgpack (None for none)."""
    return msgpack.packb(props) if props else None


def unpack_props(blob: bytes | None) -> dict[int, Any] | None:
    """Properties :func:`pack_props` packed (user properties back as tuples)."""
    if not blob:
        return None
    props: dict[int, Any] = msgpack.unpackb(blob, strict_map_key=False)
    users = props.get(PropertyId.USER_PROPERTY)
    if users is not None:
        props[PropertyId.USER_PROPERTY] = [tuple(pair) for pair in users]
    return props
