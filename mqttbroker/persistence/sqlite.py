"""SQLite persistence with group commit.

Changes arrive on the event loop as ``put``/``delete`` calls and are folded into the *pending*
batch: one dict per table, keyed like the table, so a row changed many times before a commit
is written once, and a row created and deleted before it is not written at all. One writer
thread commits batches: while it writes one (one transaction, one fsync), the loop goes on
filling the next, so the cost of a commit is shared by everything that arrived meanwhile.

``sync: commit``: :meth:`GroupCommit.keep_until_committed` (groupcommit.py) keeps every
packet the broker sends while changes are uncommitted, per connection and in order, and
releases it when the batch holding those changes has committed. So a PUBACK (or PUBREC, PUBREL, PUBCOMP, CONNACK, a delivery) never
leaves before the state it reports is on disk.
``sync: periodic``: nothing is kept back; a batch is committed every ``flush_interval`` seconds.

A lock file next to the database stops two brokers from sharing it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import logging
import os
import sqlite3
from typing import Any

import msgpack  # type: ignore[import-untyped]

from ..config import PersistenceConfig
from ..errors import ConfigError, ConfigIssue
from ..message import Message
from ..protocol.packets import Subscription
from .base import (
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
from .groupcommit import GroupCommit

log = logging.getLogger("mqttbroker.persistence")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
    retain INTEGER NOT NULL, props BLOB, sender TEXT, expires REAL);
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY, expiry INTEGER NOT NULL, disconnected_at REAL, will BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL,
    options INTEGER NOT NULL, identifier INTEGER NOT NULL, PRIMARY KEY (client_id, filter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY, client_id TEXT NOT NULL, message INTEGER NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, identifiers BLOB, share TEXT,
    packet_id INTEGER NOT NULL, state INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS inbound (
    client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (client_id, packet_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, message INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    owner TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (owner, key)
) WITHOUT ROWID;
"""

_Row = tuple[Any, ...]


class _Batch:
    """Changes not yet handed to the writer: table key -> row, or None to delete."""

    __slots__ = ("inbound", "items", "messages", "new_items", "records", "retained", "sessions",
                 "subs")

    def __init__(self) -> None:
        self.messages: dict[int, _Row | None] = {}
        self.sessions: dict[str, _Row | None] = {}
        self.subs: dict[tuple[str, str], _Row | None] = {}
        self.items: dict[int, _Row | None] = {}
        self.new_items: set[int] = set()  # items created in this batch (never written yet)
        self.inbound: dict[tuple[str, int], bool] = {}
        self.retained: dict[str, int | None] = {}
        self.records: dict[tuple[str, str], bytes | None] = {}

    def __len__(self) -> int:
        return (len(self.messages) + len(self.sessions) + len(self.subs) + len(self.items)
                + len(self.inbound) + len(self.retained) + len(self.records))

    def merge(self, newer: _Batch) -> None:
        """Fold a newer batch into this one (a failed write is retried with what followed)."""
        self.messages.update(newer.messages)
        self.sessions.update(newer.sessions)
        self.subs.update(newer.subs)
        self.items.update(newer.items)
        self.inbound.update(newer.inbound)
        self.retained.update(newer.retained)
        self.records.update(newer.records)


def _item_row(seq: int, client_id: str, message_id: int, qos: int, retain: bool,
              identifiers: tuple[int, ...], share: str | None, packet_id: int,
              state: int) -> _Row:
    """An ``items`` row."""
    return (seq, client_id, message_id, qos, int(retain),
            msgpack.packb(identifiers) if identifiers else None, share, packet_id, state)


class SqliteStorage(GroupCommit[_Batch]):
    """The SQLite backend (see the module docstring)."""

    def __init__(self, config: PersistenceConfig) -> None:
        super().__init__(config.sync == "commit", config.flush_interval)
        self.config = config
        self.path = self.what = config.path
        self._db: sqlite3.Connection | None = None
        self._lock_fd = -1
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "mqttbroker-sqlite")
        self._seq = 0
        self._msg_id = 0
        # stored message -> [its row id, how many items and retained entries refer to it]
        # (kept here, not on Message: an in-memory broker should not pay for it)
        self._stored: dict[Message, list[int]] = {}
        self.rows_written = 0

    def _new_batch(self) -> _Batch:
        return _Batch()

    def _submit(self, batch: _Batch) -> asyncio.Future[None]:
        assert self._loop is not None
        return self._loop.run_in_executor(self._executor, self._write, batch)

    # -- opening, loading, closing ---------------------------------------------------------------

    async def open(self, loop: asyncio.AbstractEventLoop) -> Snapshot:
        self._loop = loop
        snapshot = await loop.run_in_executor(self._executor, self._open_sync)
        self._start(loop)
        log.info("persistence: %s (sync %s%s): %d sessions, %d retained messages", self.path,
                 self.config.sync, ", fsync" if self.config.fsync else "",
                 len(snapshot.sessions), len(snapshot.retained))
        return snapshot

    def _open_sync(self) -> Snapshot:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError([ConfigIssue(
                "persistence.path", None,
                f"{self.path} is in use by another running broker")]) from None
        self._lock_fd = fd
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self.config.fsync else 'NORMAL'}")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise ConfigError([ConfigIssue(
                "persistence.path", None,
                f"{self.path} has schema version {row[0]}, this broker reads {SCHEMA_VERSION}")])
        return self._load(db)

    def _load(self, db: sqlite3.Connection) -> Snapshot:
        assert self._loop is not None
        loop = self._loop
        messages: dict[int, Message] = {}
        stored = self._stored
        for mid, topic, payload, qos, retain, props, sender, expires in db.execute(
                "SELECT id, topic, payload, qos, retain, props, sender, expires FROM messages"):
            m = Message(topic, bytes(payload), qos, bool(retain), unpack_props(props), sender,
                        None if expires is None else from_wall(expires, loop))
            stored[m] = [mid, 0]
            messages[mid] = m
            self._msg_id = max(self._msg_id, mid)
        sessions: dict[str, StoredSession] = {}
        for cid, expiry, disconnected_at, will in db.execute(
                "SELECT client_id, expiry, disconnected_at, will FROM sessions"):
            sessions[cid] = StoredSession(cid, expiry, disconnected_at,
                                          self._unpack_will(will) if will else None)
        for cid, flt, qos, options, identifier in db.execute(
                "SELECT client_id, filter, qos, options, identifier FROM subscriptions"):
            s = sessions.get(cid)
            if s is not None:
                s.subscriptions.append(sub_from_options(flt, qos, options, identifier))
        orphans: list[int] = []
        for seq, cid, mid, qos, retain, ids, share, pid, state in db.execute(
                "SELECT seq, client_id, message, qos, retain, identifiers, share, packet_id, "
                "state FROM items ORDER BY seq"):
            self._seq = max(self._seq, seq)
            s = sessions.get(cid)
            item_msg = messages.get(mid)
            if s is None or item_msg is None:
                orphans.append(seq)
                continue
            stored[item_msg][1] += 1
            s.items.append(StoredItem(seq, item_msg, qos, bool(retain),
                                      tuple(msgpack.unpackb(ids)) if ids else (), share, pid,
                                      state))
        for cid, pid in db.execute("SELECT client_id, packet_id FROM inbound"):
            s = sessions.get(cid)
            if s is not None:
                s.inbound_qos2.append(pid)
        retained: list[Message] = []
        for _topic, mid in db.execute("SELECT topic, message FROM retained"):
            kept = messages.get(mid)
            if kept is not None:
                stored[kept][1] += 1
                retained.append(kept)
        records: dict[str, dict[str, bytes]] = {}
        for owner, key, value in db.execute("SELECT owner, key, value FROM records"):
            records.setdefault(owner, {})[key] = bytes(value)
        # rows nothing refers to any more (an interrupted clean-up): gone now
        if orphans:
            db.executemany("DELETE FROM items WHERE seq=?", [(s,) for s in orphans])
        unused = [m for m in messages.values() if stored[m][1] == 0]
        if unused:
            db.executemany("DELETE FROM messages WHERE id=?", [(stored[m][0],) for m in unused])
        for m in unused:
            del stored[m]
        return Snapshot(list(sessions.values()), retained, records)

    def _unpack_will(self, blob: bytes) -> StoredWill:
        assert self._loop is not None
        topic, payload, qos, retain, props, sender, expires, delay, at = msgpack.unpackb(
            blob, strict_map_key=False)
        m = Message(topic, payload, qos, retain, unpack_props(props), sender,
                    None if expires is None else from_wall(expires, self._loop))
        return StoredWill(m, delay, at)

    def _pack_will(self, will: StoredWill) -> bytes:
        assert self._loop is not None
        m = will.message
        expires = None if m.expires_at is None else to_wall(m.expires_at, self._loop)
        packed: bytes = msgpack.packb((m.topic, m.payload, m.qos, m.retain,
                                       pack_props(m.properties), m.sender, expires,
                                       will.delay, will.at))
        return packed

    async def close(self) -> None:
        """Commit what is pending, wait for the writer, close the database."""
        if not await self._flush_all():
            log.error("persistence: could not commit the last changes to %s", self.path)
        assert self._loop is not None
        await self._loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)
        log.info("persistence: %s closed (%d commits)", self.path, self.commits)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- changes (event loop) -------------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def refs(self, m: Message) -> tuple[int, int]:
        """``(row id, references)`` of a message; ``(0, 0)`` when it is not stored."""
        ref = self._stored.get(m)
        return (ref[0], ref[1]) if ref is not None else (0, 0)

    def _ref(self, m: Message) -> int:
        ref = self._stored.get(m)
        if ref is None:
            assert self._loop is not None
            self._msg_id += 1
            ref = self._stored[m] = [self._msg_id, 0]
            expires = None if m.expires_at is None else to_wall(m.expires_at, self._loop)
            self._pending.messages[ref[0]] = (
                ref[0], m.topic, m.payload, m.qos, int(m.retain),
                pack_props(m.properties), m.sender, expires)
        ref[1] += 1
        return ref[0]

    def _unref(self, m: Message) -> None:
        ref = self._stored[m]
        ref[1] -= 1
        if ref[1] == 0:
            sid = ref[0]
            del self._stored[m]
            msgs = self._pending.messages
            if msgs.get(sid) is not None:
                del msgs[sid]  # inserted in this same batch: never written
            else:
                msgs[sid] = None

    def put_session(self, client_id: str, expiry_interval: int, disconnected_at: float | None,
                    will: StoredWill | None) -> None:
        self._pending.sessions[client_id] = (
            client_id, expiry_interval, disconnected_at,
            self._pack_will(will) if will is not None else None)
        self._touch()

    def delete_session(self, client_id: str) -> None:
        self._pending.sessions[client_id] = None
        self._touch()

    def put_subscription(self, client_id: str, sub: Subscription) -> None:
        self._pending.subs[client_id, sub.topic_filter] = (
            client_id, sub.topic_filter, sub.qos, sub_options(sub), sub.identifier)
        self._touch()

    def delete_subscription(self, client_id: str, topic_filter: str) -> None:
        self._pending.subs[client_id, topic_filter] = None
        self._touch()

    def add_item(self, client_id: str, seq: int, message: Message, qos: int, retain: bool,
                 identifiers: tuple[int, ...], share: str | None, packet_id: int,
                 state: int) -> None:
        p = self._pending
        p.items[seq] = _item_row(seq, client_id, self._ref(message), qos, retain, identifiers,
                                 share, packet_id, state)
        p.new_items.add(seq)
        self._touch()

    def update_item(self, client_id: str, seq: int, message: Message, qos: int, retain: bool,
                    identifiers: tuple[int, ...], share: str | None, packet_id: int,
                    state: int) -> None:
        self._pending.items[seq] = _item_row(seq, client_id, self._stored[message][0], qos,
                                             retain, identifiers, share, packet_id, state)
        self._touch()

    def delete_item(self, seq: int, message: Message) -> None:
        p = self._pending
        if seq in p.new_items:
            p.new_items.discard(seq)
            del p.items[seq]
        else:
            p.items[seq] = None
        self._unref(message)
        self._touch()

    def put_retained(self, message: Message, old: Message | None) -> None:
        self._pending.retained[message.topic] = self._ref(message)
        if old is not None:
            self._unref(old)
        self._touch()

    def delete_retained(self, message: Message) -> None:
        self._pending.retained[message.topic] = None
        self._unref(message)
        self._touch()

    # -- committing (writer thread) ---------------------------------------------------------------

    def _write(self, b: _Batch) -> None:
        db = self._db
        assert db is not None
        rows = 0
        db.execute("BEGIN")
        try:
            for table, key, data, width in (
                    ("messages", ("id",), b.messages, 8),
                    ("sessions", ("client_id",), b.sessions, 4),
                    ("subscriptions", ("client_id", "filter"), b.subs, 5),
                    ("items", ("seq",), b.items, 9)):
                puts = [r for r in data.values() if r is not None]
                dels = [(k if isinstance(k, tuple) else (k,)) for k, r in data.items()
                        if r is None]
                if dels:
                    where = " AND ".join(f"{c}=?" for c in key)
                    db.executemany(f"DELETE FROM {table} WHERE {where}", dels)
                if puts:
                    marks = ",".join("?" * width)
                    db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", puts)
                rows += len(puts) + len(dels)
            if b.inbound:
                db.executemany("INSERT OR REPLACE INTO inbound VALUES (?,?)",
                               [k for k, put in b.inbound.items() if put])
                db.executemany("DELETE FROM inbound WHERE client_id=? AND packet_id=?",
                               [k for k, put in b.inbound.items() if not put])
            if b.records:
                db.executemany("INSERT OR REPLACE INTO records VALUES (?,?,?)",
                               [(o, k, v) for (o, k), v in b.records.items() if v is not None])
                db.executemany("DELETE FROM records WHERE owner=? AND key=?",
                               [k for k, v in b.records.items() if v is None])
            if b.retained:
                db.executemany("INSERT OR REPLACE INTO retained VALUES (?,?)",
                               [(t, m) for t, m in b.retained.items() if m is not None])
                db.executemany("DELETE FROM retained WHERE topic=?",
                               [(t,) for t, m in b.retained.items() if m is None])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.rows_written += rows + len(b.inbound) + len(b.retained) + len(b.records)
