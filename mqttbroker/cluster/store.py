"""The cluster's store in Redis: sessions, retained messages, routes and forwarded messages.

One :class:`RedisStore` per node, with the same journal calls as the SQLite backend
(:class:`~mqttbroker.persistence.base.Storage`) plus the cluster's own: a forwarded message
(``XADD`` to another node's inbox), an inbox entry handled (``XACK``), a route count. Every
change of an event-loop turn goes to Redis in one ``MULTI``/``EXEC`` (group commit,
:mod:`~mqttbroker.persistence.groupcommit`), and what the broker sends while changes wait is
held until they are written: a PUBACK leaves only once the message is in the other nodes'
inboxes and in the stored queues of this node's sessions. A delivery and the ``XACK`` of the
inbox entry it came from commit together, or neither does.

Keys are in docs/cluster.md ("State in Redis").
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

import msgpack  # type: ignore[import-untyped]

from ..message import Message
from ..persistence.base import (
    Snapshot,
    StoredItem,
    StoredSession,
    StoredWill,
    from_wall,
    pack_props,
    sub_from_options,
    sub_options,
    to_wall,
    unpack_props,
)
from ..persistence.groupcommit import GroupCommit
from ..protocol.packets import Subscription

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("mqttbroker.cluster")

INBOX_MAXLEN: Final = 100_000  # entries kept in a node's inbox while it is away (approx.)
FORWARD_BATCH: Final = 256  # messages for one node in one inbox entry (one XADD)
# a write that changes routes or retained messages is reported done this much later: the
# other nodes apply such changes from a channel, a moment after Redis has them, and a client
# told SUBACK (or PUBACK for a retained message) may at once make another node use them
PROPAGATION: Final = 0.05
CHUNK: Final = 512  # commands per MULTI/EXEC: a long write lets the event loop (and Redis) go on
GROUP: Final = "deliver"


class Keys:
    """The Redis key names of one cluster (``prefix``)."""

    __slots__ = ("p",)

    def __init__(self, prefix: str) -> None:
        self.p = prefix

    def node(self, node: str) -> str:
        return f"{self.p}:node:{node}"

    def routes(self, node: str) -> str:
        return f"{self.p}:routes:{node}"

    @property
    def routes_channel(self) -> str:
        return f"{self.p}:routes"

    def inbox(self, node: str) -> str:
        return f"{self.p}:inbox:{node}"

    @property
    def retained(self) -> str:
        return f"{self.p}:retained"

    def client(self, cid: str) -> str:
        return f"{self.p}:client:{cid}"

    def subs(self, cid: str) -> str:
        return f"{self.p}:subs:{cid}"

    def items(self, cid: str) -> str:
        return f"{self.p}:items:{cid}"

    def inbound(self, cid: str) -> str:
        return f"{self.p}:inbound:{cid}"

    def owned(self, node: str) -> str:
        return f"{self.p}:owned:{node}"

    def control(self, node: str) -> str:
        return f"{self.p}:control:{node}"

    def records(self, node: str) -> str:
        """Extensions' records of one node (an MQTT-SN listener's sessions), field
        ``owner NUL key``: node-local, like the listeners that keep them."""
        return f"{self.p}:records:{node}"


def pack_message(m: Message, loop: asyncio.AbstractEventLoop) -> list[Any]:
    """A message as msgpack-able values (its expiry as wall-clock time)."""
    expires = None if m.expires_at is None else to_wall(m.expires_at, loop)
    return [m.topic, m.payload, m.qos, m.retain, pack_props(m.properties), m.sender, expires]


def unpack_message(v: list[Any], loop: asyncio.AbstractEventLoop) -> Message:
    topic, payload, qos, retain, props, sender, expires = v
    return Message(topic, payload, qos, retain, unpack_props(props), sender,
                   None if expires is None else from_wall(expires, loop))


class _Batch:
    """Changes not yet sent to Redis, folded per key (see the SQLite backend's ``_Batch``)."""

    __slots__ = ("acks", "forwards", "inbound", "items", "records", "retained", "routes",
                 "sessions", "subs")

    def __init__(self) -> None:
        self.sessions: dict[str, bytes | None] = {}
        self.subs: dict[tuple[str, str], bytes | None] = {}
        self.items: dict[tuple[str, int], bytes | None] = {}
        self.inbound: dict[tuple[str, int], bool] = {}
        self.retained: dict[str, bytes | None] = {}
        self.routes: dict[str, int] = {}  # filter -> this node's count now (0: gone)
        self.forwards: list[tuple[str, bytes]] = []  # (node, envelope), in order
        self.acks: list[bytes] = []  # inbox entries handled
        self.records: dict[tuple[str, str], bytes | None] = {}

    def __len__(self) -> int:
        return (len(self.sessions) + len(self.subs) + len(self.items) + len(self.inbound)
                + len(self.retained) + len(self.routes) + len(self.forwards) + len(self.acks)
                + len(self.records))

    def merge(self, newer: _Batch) -> None:
        self.sessions.update(newer.sessions)
        self.subs.update(newer.subs)
        self.items.update(newer.items)
        self.inbound.update(newer.inbound)
        self.retained.update(newer.retained)
        self.routes.update(newer.routes)
        self.forwards.extend(newer.forwards)
        self.acks.extend(newer.acks)
        self.records.update(newer.records)


class RedisStore(GroupCommit[_Batch]):
    """One node's journal to Redis (see the module docstring)."""

    def __init__(self, redis: Redis, keys: Keys, node: str) -> None:
        super().__init__(gates_output=True, flush_interval=1.0)
        self.redis = redis
        self.keys = keys
        self.node = node
        self.what = f"Redis (node {node})"
        self._seq = 0
        self._item_owner: dict[int, str] = {}  # item seq -> client id (deletes name only seq)
        self.backlog = 0  # messages for other nodes not yet written to Redis
        self.on_error: Any = None  # called with the exception when a write fails
        self.on_written: Any = None  # called after a write succeeds

    def _new_batch(self) -> _Batch:
        return _Batch()

    # -- opening ------------------------------------------------------------------------------

    async def open(self, loop: asyncio.AbstractEventLoop) -> Snapshot:
        """Read the sessions this node owns and the cluster's retained messages."""
        self._loop = loop
        k = self.keys
        owned = [text(c) for c in await self.redis.smembers(k.owned(self.node))]
        sessions = []
        for cid in owned:
            rec = await self.load_session(cid, only_if_owner=True)
            if rec is not None:
                sessions.append(rec)
        retained = await self.load_retained()
        records: dict[str, dict[str, bytes]] = {}
        for field_, value in (await self.redis.hgetall(k.records(self.node))).items():
            owner, _, key = text(field_).partition("\0")
            records.setdefault(owner, {})[key] = value if isinstance(value, bytes) \
                else value.encode()
        self._start(loop)
        return Snapshot(sessions, retained, records)

    async def load_retained(self) -> list[Message]:
        assert self._loop is not None
        out = []
        async for _topic, packed in self.redis.hscan_iter(self.keys.retained, count=1000):
            out.append(unpack_message(msgpack.unpackb(packed), self._loop))
        return out

    async def load_session(self, cid: str, only_if_owner: bool = False) -> StoredSession | None:
        """A stored session, or None (none stored, or owned by another node when
        ``only_if_owner``)."""
        assert self._loop is not None
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(k.client(cid), ["node", "meta"])
            pipe.hgetall(k.subs(cid))
            pipe.hgetall(k.items(cid))
            pipe.smembers(k.inbound(cid))
            (node, meta), subs, items, inbound = await pipe.execute()
        if meta is None or (only_if_owner and text(node or b"") != self.node):
            return None
        expiry, disconnected_at, will = msgpack.unpackb(meta)
        rec = StoredSession(cid, expiry, disconnected_at,
                            None if will is None else self._unpack_will(will))
        for flt, packed in subs.items():
            qos, options, identifier = msgpack.unpackb(packed)
            rec.subscriptions.append(sub_from_options(text(flt), qos, options, identifier))
        for _seq, packed in sorted(items.items(), key=lambda kv: int(kv[0])):
            seq, qos, retain, ids, share, pid, state, msg = msgpack.unpackb(packed)
            self._seq = max(self._seq, seq)
            self._item_owner[seq] = cid
            rec.items.append(StoredItem(seq, unpack_message(msg, self._loop), qos, retain,
                                        tuple(ids), share, pid, state))
        rec.inbound_qos2.extend(int(p) for p in inbound)
        return rec

    def _unpack_will(self, v: list[Any]) -> StoredWill:
        assert self._loop is not None
        msg, delay, at = v
        return StoredWill(unpack_message(msg, self._loop), delay, at)

    async def close(self) -> None:
        if not await self._flush_all():
            log.error("cluster: could not write the last changes to Redis")

    async def flush(self) -> None:
        """Wait until every change made so far is written (or has failed once)."""
        self._kick()
        for _ in range(2):
            if self._writing is not None:
                await asyncio.gather(self._writing, return_exceptions=True)
            self._kick()

    # -- journal calls (Storage) ------------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def put_session(self, client_id: str, expiry_interval: int, disconnected_at: float | None,
                    will: StoredWill | None) -> None:
        assert self._loop is not None
        packed_will = None if will is None else [pack_message(will.message, self._loop),
                                                 will.delay, will.at]
        self._pending.sessions[client_id] = msgpack.packb(
            [expiry_interval, disconnected_at, packed_will])
        self._touch()

    def delete_session(self, client_id: str) -> None:
        self._pending.sessions[client_id] = None
        self._touch()

    def put_subscription(self, client_id: str, sub: Subscription) -> None:
        self._pending.subs[client_id, sub.topic_filter] = msgpack.packb(
            [sub.qos, sub_options(sub), sub.identifier])
        self._touch()

    def delete_subscription(self, client_id: str, topic_filter: str) -> None:
        self._pending.subs[client_id, topic_filter] = None
        self._touch()

    def _item(self, client_id: str, seq: int, message: Message, qos: int, retain: bool,
              identifiers: tuple[int, ...], share: str | None, packet_id: int,
              state: int) -> None:
        assert self._loop is not None
        self._item_owner[seq] = client_id
        self._pending.items[client_id, seq] = msgpack.packb(
            [seq, qos, retain, list(identifiers), share, packet_id, state,
             pack_message(message, self._loop)])
        self._touch()

    add_item = update_item = _item

    def delete_item(self, seq: int, message: Message) -> None:
        cid = self._item_owner.pop(seq, None)
        if cid is not None:
            self._pending.items[cid, seq] = None
            self._touch()

    def put_retained(self, message: Message, old: Message | None) -> None:
        if message.topic.startswith("$SYS/"):
            return  # each node's own, not the cluster's
        assert self._loop is not None
        self._pending.retained[message.topic] = msgpack.packb(pack_message(message, self._loop))
        self._touch()

    def delete_retained(self, message: Message) -> None:
        if message.topic.startswith("$SYS/"):
            return
        self._pending.retained[message.topic] = None
        self._touch()

    # -- the cluster's own --------------------------------------------------------------------------

    def forward(self, node: str, envelope: bytes) -> None:
        """Send a message to another node's inbox (in order, with the next write)."""
        self._pending.forwards.append((node, envelope))
        self.backlog += 1
        self._touch()

    def ack(self, entry_id: bytes) -> None:
        """An entry of this node's inbox is handled (acknowledged with the deliveries it made)."""
        self._pending.acks.append(entry_id)
        self._touch()

    def route(self, topic_filter: str, count: int) -> None:
        """This node's count of local subscriptions to a filter is now ``count``."""
        self._pending.routes[topic_filter] = count
        self._touch()

    def forget_items(self, client_id: str) -> None:
        """A session moved to another node: stop naming its items here."""
        for seq in [s for s, c in self._item_owner.items() if c == client_id]:
            del self._item_owner[seq]

    # -- writing --------------------------------------------------------------------------------

    async def _submit(self, b: _Batch) -> None:
        """Write a batch: session changes, then the forwarded messages (one XADD per node and
        FORWARD_BATCH messages, in order), routes and retained changes, and last the inbox
        acknowledgements, in transactions of CHUNK commands. A batch cut short by a failure
        is written again whole (at least once); the acknowledgements, last, are never
        written before the deliveries they stand for."""
        k, me = self.keys, self.node
        ops: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        add = ops.append
        for cid, meta in b.sessions.items():
            if meta is None:  # (the claim, "node", stays: it says who has the client id)
                add(("hdel", (k.client(cid), "meta"), {}))
                add(("delete", (k.subs(cid), k.items(cid), k.inbound(cid)), {}))
                add(("srem", (k.owned(me), cid), {}))
            else:
                add(("hset", (k.client(cid), "meta", meta), {}))  # ("node": set by the claim)
                add(("sadd", (k.owned(me), cid), {}))
        for (cid, flt), packed in b.subs.items():
            add(("hdel", (k.subs(cid), flt), {}) if packed is None
                else ("hset", (k.subs(cid), flt, packed), {}))
        for (cid, seq), packed in b.items.items():
            add(("hdel", (k.items(cid), str(seq)), {}) if packed is None
                else ("hset", (k.items(cid), str(seq), packed), {}))
        for (cid, pid), put in b.inbound.items():
            add(("sadd" if put else "srem", (k.inbound(cid), pid), {}))
        for (owner, key), value in b.records.items():
            add(("hdel", (k.records(me), f"{owner}\0{key}"), {}) if value is None
                else ("hset", (k.records(me), f"{owner}\0{key}", value), {}))
        for topic, packed in b.retained.items():
            add(("hdel", (k.retained, topic), {}) if packed is None
                else ("hset", (k.retained, topic, packed), {}))
            add(("publish", (k.retained, msgpack.packb([me, topic, packed])), {}))
        for flt, count in b.routes.items():
            add(("hset", (k.routes(me), flt, count), {}) if count > 0
                else ("hdel", (k.routes(me), flt), {}))
            add(("publish", (k.routes_channel, msgpack.packb([me, flt, count])), {}))
        per_node: dict[str, list[bytes]] = {}
        for node, envelope in b.forwards:
            per_node.setdefault(node, []).append(envelope)
        for node, envelopes in per_node.items():
            for i in range(0, len(envelopes), FORWARD_BATCH):
                add(("xadd", (k.inbox(node), {b"m": msgpack.packb(
                    envelopes[i:i + FORWARD_BATCH])}),
                     {"maxlen": INBOX_MAXLEN, "approximate": True}))
        for i in range(0, len(b.acks), CHUNK):
            acks = b.acks[i:i + CHUNK]
            add(("xack", (k.inbox(me), GROUP, *acks), {}))
            add(("xdel", (k.inbox(me), *acks), {}))
        try:
            for i in range(0, len(ops), CHUNK):
                async with self.redis.pipeline(transaction=True) as pipe:
                    for name, args, kwargs in ops[i:i + CHUNK]:
                        getattr(pipe, name)(*args, **kwargs)
                    await pipe.execute()
        except Exception as exc:
            if self.on_error is not None:
                self.on_error(exc)
            raise
        self.backlog -= len(b.forwards)
        if self.on_written is not None:
            self.on_written()
        if b.routes or b.retained:
            await asyncio.sleep(PROPAGATION)


def text(v: bytes | str) -> str:
    """A Redis reply as text (replies are bytes: the clients do not decode)."""
    return v.decode() if isinstance(v, bytes) else v
