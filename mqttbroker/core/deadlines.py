"""Deadlines on one clock, without timers: what is due, and when the next one is.

Session expiry and delayed wills [MQTT 3.1.2.11.2, 3.1.3.2.2] are deadlines keyed by what
they are for. The broker arms one event-loop timer for :meth:`Deadlines.next_at` and, when it
fires, hands the clock to :meth:`Deadlines.pop_due` (aioquic's ``handle_timer(now)`` shape):
``now`` is always an argument, so this is tested without an event loop and a million waiting
sessions cost one heap entry each, not one timer handle each.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_COMPACT_MIN: Final = 64  # a heap this small is never rebuilt


class Deadlines(Generic[K]):
    """At most one deadline per key; setting a key again moves it."""

    __slots__ = ("_at", "_heap", "_seq")

    def __init__(self) -> None:
        # (at, seq, key); an entry whose (at, seq) is not _at[key] any more is stale
        self._heap: list[tuple[float, int, K]] = []
        self._at: dict[K, tuple[float, int]] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: K) -> bool:
        return key in self._at

    def when(self, key: K) -> float | None:
        """The deadline of ``key``, or None."""
        entry = self._at.get(key)
        return None if entry is None else entry[0]

    def set(self, key: K, at: float) -> None:
        """``key`` is due at ``at`` (replacing its earlier deadline, if any)."""
        self._seq += 1
        entry = (at, self._seq)
        self._at[key] = entry
        heapq.heappush(self._heap, (at, self._seq, key))
        if len(self._heap) > 2 * len(self._at) + _COMPACT_MIN:
            self._compact()

    def cancel(self, key: K) -> bool:
        """Forget ``key``'s deadline; False when it had none."""
        return self._at.pop(key, None) is not None

    def clear(self) -> None:
        self._heap.clear()
        self._at.clear()

    def next_at(self) -> float | None:
        """The earliest deadline, or None when there is none."""
        heap = self._heap
        while heap:
            at, seq, key = heap[0]
            if self._at.get(key) == (at, seq):
                return at
            heapq.heappop(heap)  # stale: cancelled or moved
        return None

    def pop_due(self, now: float) -> list[K]:
        """The keys due at ``now`` (deadline <= now), earliest first, forgotten here."""
        due: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, seq, key = heapq.heappop(heap)
            if self._at.get(key) == (at, seq):
                del self._at[key]
                due.append(key)
        return due

    def _compact(self) -> None:
        """Drop stale entries (many moves and cancels must not grow the heap for ever)."""
        self._heap = [(at, seq, key) for key, (at, seq) in self._at.items()]
        heapq.heapify(self._heap)
