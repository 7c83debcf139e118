"""Group commit, shared by the backends (SQLite, the cluster's Redis).

Changes arrive on the event loop and are folded into the *pending* batch (a backend's own
type). One write is in progress at a time: while it runs, the loop goes on filling the next
batch, so the cost of a commit is shared by everything that arrived meanwhile. A failed write is
retried (merged with what came after it) every second.

With ``gates_output`` (``sync: commit``, and always in a cluster),
:meth:`GroupCommit.keep_until_committed` keeps every packet the broker sends while changes are
uncommitted, per connection and in order, and releases it when the batch holding those changes is written: a PUBACK never leaves before the
state it reports is safe. Without it a batch is written every ``flush_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Generic, Protocol, Self, TypeVar

from ..metrics import Histogram
from .base import GatedOutput

log = logging.getLogger("mqttbroker.persistence")


class Batch(Protocol):
    """What a backend folds its changes into."""

    #: (client id, packet id) -> True: a QoS 2 packet id received, False: released
    inbound: dict[tuple[str, int], bool]
    #: (owner, key) -> an extension's record, None: deleted
    records: dict[tuple[str, str], bytes | None]

    def merge(self, newer: Self) -> None:
        """Fold a newer batch into this one (a failed write is retried with what followed)."""

    def __len__(self) -> int:
        """Rows changed (``/metrics``)."""


B = TypeVar("B", bound=Batch)


class GroupCommit(Generic[B]):
    """The batching, writing and commit-gate machinery; a backend provides :meth:`_new_batch`,
    :meth:`_submit` (start writing a batch) and ``what`` (how log lines name the store)."""

    what = "storage"

    def __init__(self, gates_output: bool, flush_interval: float) -> None:
        self.gates_output = gates_output
        self.flush_interval = flush_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: B = self._new_batch()
        self._dirty = False
        self._writing: asyncio.Future[None] | None = None
        self._retry: B | None = None
        self._gen = 1  # the batch now filling
        self._kept: dict[int, dict[GatedOutput, list[bytes]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self.commits = 0
        self.commit_latency = Histogram()  # hand-off to the writer -> committed, seconds

    def _new_batch(self) -> B:
        raise NotImplementedError

    def _submit(self, batch: B) -> Awaitable[None]:
        """Start writing ``batch``; the awaitable completes when it is durable (or fails)."""
        raise NotImplementedError

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin on ``loop`` (after the backend opened its store)."""
        self._loop = loop
        if not self.gates_output:
            self._timer = loop.call_later(self.flush_interval, self._periodic)

    async def _flush_all(self) -> bool:
        """Stop the timer; write what is in progress and pending. False if some change could
        not be written."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _ in range(3):  # what is being written, then what is pending (a failure retries)
            if self._writing is not None:
                await asyncio.gather(self._writing, return_exceptions=True)  # _done logs
            if not self._dirty and self._retry is None:
                break
            self._kick()
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        self._kept.clear()
        return not (self._dirty or self._retry is not None)

    # -- changes (event loop) -------------------------------------------------------------------

    def _touch(self) -> None:
        if not self._dirty:
            self._dirty = True
            if self.gates_output and self._writing is None and self._loop is not None:
                self._loop.call_soon(self._kick)

    def put_inbound(self, client_id: str, packet_id: int) -> None:
        """A QoS 2 packet id received from the client, awaiting its PUBREL."""
        self._pending.inbound[client_id, packet_id] = True
        self._touch()

    def delete_inbound(self, client_id: str, packet_id: int) -> None:
        """The PUBREL came: the packet id is free again."""
        self._pending.inbound[client_id, packet_id] = False
        self._touch()

    def put_record(self, owner: str, key: str, value: bytes) -> None:
        """An extension's record (persistence/base.py, OwnerRecords)."""
        self._pending.records[owner, key] = value
        self._touch()

    def delete_record(self, owner: str, key: str) -> None:
        self._pending.records[owner, key] = None
        self._touch()

    def pending_changes(self) -> int:
        """Rows changed since the last hand-off to the writer (what the next commit holds)."""
        return len(self._pending)

    # -- the commit gate: output kept until its changes are committed ---------------------

    def keep_until_committed(self, conn: GatedOutput, data: bytes) -> bool:
        """Keep ``data`` for ``conn`` until the changes made so far are written (True), or
        say that nothing is waiting to be written (False: send it now)."""
        if self._dirty:
            gen = self._gen
        elif self._writing is not None or self._retry is not None:
            gen = self._gen - 1
        else:
            return False
        holds = self._kept.get(gen)
        if holds is None:
            holds = self._kept[gen] = {}
        waiting = holds.get(conn)
        if waiting is None:
            holds[conn] = [data]
        else:
            waiting.append(data)
        return True

    def _release(self, upto: int) -> None:
        for gen in sorted(g for g in self._kept if g <= upto):
            for conn, data in self._kept.pop(gen).items():
                conn.release_committed(data)

    # -- committing -------------------------------------------------------------------------------

    def _periodic(self) -> None:
        assert self._loop is not None
        self._kick()
        if not self._closing:
            self._timer = self._loop.call_later(self.flush_interval, self._periodic)

    def _kick(self) -> None:
        """Hand the pending batch (or a failed one, with it) to the writer, if it is idle."""
        if self._writing is not None or self._loop is None:
            return
        batch = self._retry
        if batch is None and not self._dirty:
            return
        self._retry = None
        if self._dirty:
            if batch is None:
                batch = self._pending
            else:
                batch.merge(self._pending)
            self._pending = self._new_batch()
            self._dirty = False
            self._gen += 1
        assert batch is not None
        gen = self._gen - 1
        started = self._loop.time()
        fut = asyncio.ensure_future(self._submit(batch), loop=self._loop)
        self._writing = fut
        fut.add_done_callback(lambda f: self._done(f, gen, batch, started))

    def _done(self, fut: asyncio.Future[None], gen: int, batch: B, started: float) -> None:
        self._writing = None
        assert self._loop is not None
        self.commit_latency.observe(self._loop.time() - started)
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is not None:
            log.error("persistence: writing to %s failed (%s); retrying in 1s, "
                      "acknowledgements wait", self.what, exc)
            self._retry = batch
            if not self._closing and self._loop is not None:
                self._loop.call_later(1.0, self._kick)
            return
        self.commits += 1
        self._release(gen)
        if self.gates_output and self._dirty:
            self._kick()
