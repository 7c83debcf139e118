"""Delayed publish: EMQX's ``$delayed/{seconds}/{topic}`` as a plugin (docs/plugins.md,
"Delayed publish").

```yaml
plugins:
  mqttbroker.plugins.delayed.DelayedPublish:
    max_delay: 4294967        # seconds (EMQX's largest interval)
    max_messages: 100000      # messages waiting at once; over it, new ones are dropped
    path: ""                  # '' : next to the broker's SQLite database, or in memory
```

A message whose topic is ``$delayed/{seconds}/{topic}`` is not delivered; ``seconds`` later the
broker publishes it to ``{topic}`` (:meth:`PluginContext.publish`), with its payload, QoS,
retain flag and properties. A ``$delayed`` topic without a whole number of seconds, over
``max_delay``, or without a topic (or with a ``$`` topic, which is the broker's) is dropped and
logged; so is a message over ``max_messages``.

Waiting messages are in a heap ordered by when they are due, with one event-loop timer armed
for the earliest (the broker's clock, :meth:`PluginContext.now`).

With ``persistence: {backend: sqlite}`` (or a ``path``) they are also kept in a SQLite file of
their own, so they survive a restart: the broker's database ``db/mqttbroker.db`` gets
``db/mqttbroker-delayed.db`` beside it. Rows are written off the event loop, in one transaction
per loop turn; a row is deleted once its message was handed to the broker. At start the rows are
read back: a message whose time passed while the broker was down is published at once (its
deadline is kept as wall-clock time), the others when they are due. Without either, waiting
messages live in memory and a restart loses them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import heapq
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Final

from ..persistence.base import pack_props, unpack_props
from .api import Client, Message, Plugin, PluginContext

__all__ = ["DelayedOptions", "DelayedPublish"]

PREFIX: Final = "$delayed/"
MAX_INTERVAL: Final = 4_294_967  # EMQX's largest delay, seconds
_LOG_EVERY: Final = 1000  # over max_messages: one WARNING for the first drop and every 1000th

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS delayed (
    id INTEGER PRIMARY KEY, due REAL NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
    qos INTEGER NOT NULL, retain INTEGER NOT NULL, props BLOB)
"""

# (id, due as wall-clock time, topic, payload, qos, retain, packed properties)
Row = tuple[int, float, str, bytes, int, int, bytes | None]


@dataclass(frozen=True)
class DelayedOptions:
    """DelayedPublish's options."""

    max_delay: int = MAX_INTERVAL  # seconds; a longer delay is dropped
    max_messages: int = 100_000  # messages waiting at once; more are dropped
    # the SQLite file ('' : beside the broker's database when persistence is sqlite, else
    # memory only); relative: to the folder of the broker's database (persistence.path)
    path: str = ""

    def __post_init__(self) -> None:
        if self.max_delay < 0:
            raise ValueError(f"max_delay must be >= 0 seconds, got {self.max_delay}")
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {self.max_messages}")


def parse(topic: str, max_delay: int) -> tuple[int, str] | str:
    """``(seconds, topic)`` of a ``$delayed/{seconds}/{topic}`` topic, or what is wrong."""
    seconds, sep, target = topic[len(PREFIX):].partition("/")
    if not sep:
        return "expected $delayed/{seconds}/{topic}"
    if not (seconds.isascii() and seconds.isdigit()):
        return f"delay {seconds!r} is not a whole number of seconds"
    delay = int(seconds)
    if delay > max_delay:
        return f"delay {delay}s is over max_delay {max_delay}s"
    if not target:
        return "no topic after the delay"
    if "+" in target or "#" in target:
        return f"topic {target!r} has a wildcard"
    if target.startswith("$"):
        return f"topic {target!r} is a $ topic (the broker's)"
    return delay, target


def default_path(database: str) -> str:
    """The file beside the broker's database ``database``: ``x/db.sqlite`` ->
    ``x/db-delayed.sqlite``."""
    stem, ext = os.path.splitext(database)
    return f"{stem}-delayed{ext}"


class DelayedPublish(Plugin):
    """Holds ``$delayed/{seconds}/{topic}`` messages and publishes them when they are due
    (the module's docstring)."""

    Config = DelayedOptions
    claimed_topics = (PREFIX,)

    def __init__(self, context: PluginContext, config: DelayedOptions) -> None:
        super().__init__(context, config)
        self.pending: dict[int, Message] = {}  # by id: the messages to publish
        self._heap: list[tuple[float, int]] = []  # (due, id), due on the broker's clock
        self._next_id = 1
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.malformed = 0  # $delayed topics dropped as malformed
        self.dropped = 0  # messages dropped over max_messages
        self.published = 0  # messages handed to the broker when due
        persistence = context.broker_config.persistence
        path = config.path
        if path:
            base = os.path.dirname(os.path.abspath(persistence.path))
            path = os.path.join(base, os.path.expanduser(path))
        elif persistence.backend == "sqlite":
            path = default_path(os.path.abspath(persistence.path))
        self.store = _Store(path, persistence.fsync, context.logger) if path else None
        # until the store was read: messages are held here (their ids are not known yet)
        self._early: list[tuple[float, float, Message]] | None = [] if path else None

    # -- lifecycle ------------------------------------------------------------------------------

    async def on_broker_start(self) -> None:
        if self.store is None:
            return
        early, self._early = self._early or [], None
        try:
            rows = await self.store.open()
        except Exception:
            self.store.abandon()
            self.store = None  # memory only; the failure is logged and counted by the host
            for due, wall, message in early:
                self._hold(due, wall, message)
            raise
        now, wall_now = self.context.now(), time.time()
        for id_, due_wall, topic, payload, qos, retain, props in rows:
            message = Message(topic, bytes(payload), qos, bool(retain),
                              unpack_props(props) or {}, None)
            self.pending[id_] = message
            heapq.heappush(self._heap, (now + (due_wall - wall_now), id_))
            self._next_id = max(self._next_id, id_ + 1)
        for due, wall, message in early:
            self._hold(due, wall, message)
        if rows:
            self.context.logger.info("%d delayed message(s) read from %s", len(rows),
                                     self.store.path)
        self._fire()  # those whose time passed while the broker was down go now

    async def on_broker_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.store is not None:
            await self.store.close()
            if self.pending:
                self.context.logger.info("%d delayed message(s) kept in %s",
                                         len(self.pending), self.store.path)
        elif self.pending:
            self.context.logger.warning("%d delayed message(s) lost: no persistence",
                                        len(self.pending))

    # -- messages -------------------------------------------------------------------------------

    def on_message(self, client: Client | None, message: Message) -> Message | None:
        topic = message.topic
        if not topic.startswith(PREFIX) and topic != PREFIX[:-1]:
            return message
        parsed = parse(topic, self.config.max_delay)
        who = f"client {client.client_id}" if client is not None else "broker"
        if isinstance(parsed, str):
            self.malformed += 1
            self.context.logger.info("%s: PUBLISH to %r dropped: %s", who, topic, parsed)
            return None
        if len(self.pending) + len(self._early or ()) >= self.config.max_messages:
            if self.dropped % _LOG_EVERY == 0:
                self.context.logger.warning(
                    "%s: PUBLISH to %r dropped: %d delayed messages wait (max_messages); "
                    "%d dropped so far", who, topic, len(self.pending), self.dropped + 1)
            self.dropped += 1
            return None
        delay, target = parsed
        delayed = dataclasses.replace(message, topic=target, sender=None)
        due, wall = self.context.now() + delay, time.time() + delay
        if self._early is not None:  # the store is not read yet
            self._early.append((due, wall, delayed))
        else:
            self._hold(due, wall, delayed)
        return None

    def _hold(self, due: float, wall: float, message: Message) -> None:
        id_ = self._next_id
        self._next_id += 1
        self.pending[id_] = message
        heapq.heappush(self._heap, (due, id_))
        if self.store is not None:
            self.store.put((id_, wall, message.topic, message.payload, message.qos,
                            int(message.retain), pack_props(dict(message.properties))))
        self._arm()

    # -- the timer ------------------------------------------------------------------------------

    def _arm(self) -> None:
        """One timer, for the earliest deadline."""
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = due
        self._timer = loop.call_later(max(due - self.context.now(), 0.0), self._fire)

    def _fire(self) -> None:
        """Publish every message that is due, then arm the timer for the next."""
        self._timer = None
        now = self.context.now()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, id_ = heapq.heappop(heap)
            message = self.pending.pop(id_)
            try:
                self.context.publish(message.topic, message.payload, message.qos,
                                     message.retain, message.properties)
                self.published += 1
            except Exception:
                self.context.logger.exception("delayed message to %r could not be published; "
                                              "dropped", message.topic)
            if self.store is not None:
                self.store.delete(id_)  # after the broker has it
        self._arm()


class _Store:
    """The waiting messages in a SQLite file, written by one thread of its own: the event loop
    only gathers each loop turn's changes (a row put and deleted within it is never
    written)."""

    def __init__(self, path: str, fsync: bool, logger: logging.Logger) -> None:
        self.path = path
        self.fsync = fsync
        self.logger = logger
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="delayed-store")
        self._db: sqlite3.Connection | None = None  # used by the executor's thread only
        self._changes: dict[int, Row | None] = {}  # id -> row to write, or None: delete
        self._flush: asyncio.Handle | None = None
        self._writes: set[asyncio.Future[None]] = set()

    async def open(self) -> list[Row]:
        """Open (create) the file; every row, earliest first."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def put(self, row: Row) -> None:
        self._changes[row[0]] = row
        self._later()

    def delete(self, id_: int) -> None:
        if self._changes.get(id_) is not None:
            del self._changes[id_]  # not written yet: never will be
        else:
            self._changes[id_] = None
            self._later()

    async def close(self) -> None:
        """Write what is left, then close the file."""
        if self._flush is not None:
            self._flush.cancel()
        self._write_changes()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=False)

    def abandon(self) -> None:
        """The file could not be opened: the thread goes, nothing is written."""
        self._executor.shutdown(wait=False)

    def _later(self) -> None:
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._write_changes)

    def _write_changes(self) -> None:
        self._flush = None
        if not self._changes:
            return
        changes, self._changes = self._changes, {}
        loop = asyncio.get_running_loop()
        write = loop.run_in_executor(self._executor, self._write, changes)
        self._writes.add(write)
        write.add_done_callback(self._written)

    def _written(self, write: asyncio.Future[None]) -> None:
        self._writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            exc = write.exception()
            self.logger.error("writing %s failed: %s", self.path, exc, exc_info=exc)

    # -- in the executor's thread ---------------------------------------------------------------

    def _open(self) -> list[Row]:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        db.execute(_SCHEMA)
        self._db = db
        rows: list[Any] = db.execute(
            "SELECT id, due, topic, payload, qos, retain, props FROM delayed "
            "ORDER BY due, id").fetchall()
        return rows

    def _write(self, changes: dict[int, Row | None]) -> None:
        db = self._db
        assert db is not None
        rows = [row for row in changes.values() if row is not None]
        gone = [(id_,) for id_, row in changes.items() if row is None]
        db.execute("BEGIN")
        try:
            if rows:
                db.executemany("INSERT OR REPLACE INTO delayed VALUES (?, ?, ?, ?, ?, ?, ?)",
                               rows)
            if gone:
                db.executemany("DELETE FROM delayed WHERE id = ?", gone)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
