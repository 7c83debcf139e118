"""Keep-alive deadlines for many connections in one timer: a wheel of quarter-second buckets.

A connection is filed under the quarter second its keep-alive would run out [MQTT-3.1.2-24]; activity
only moves its ``last_received`` and never touches the wheel. When a bucket comes due, each
connection in it is checked against its real deadline and either expires or is filed again.
So one timer serves every connection, each is looked at about once per 1.5 x keep-alive, and
no per-connection timer object exists. Pure: the caller passes ``now``.
"""

from __future__ import annotations

import math
from typing import Final, Generic, Protocol, TypeVar


class Watched(Protocol):
    """What the wheel needs to know of a connection."""

    last_received: float
    keep_alive: int


W = TypeVar("W", bound=Watched)

SLOTS_PER_SECOND: Final = 4  # bucket width 0.25 s: a timeout is noticed at most that late (+ a tick)


def deadline(conn: Watched) -> float:
    """When ``conn`` is gone unless it sends a packet: 1.5 x keep-alive after the last one."""
    return conn.last_received + 1.5 * conn.keep_alive


class KeepAliveWheel(Generic[W]):
    """Connections filed by the quarter second of their keep-alive deadline."""

    __slots__ = ("_buckets", "_where")

    def __init__(self) -> None:
        self._buckets: dict[int, set[W]] = {}
        self._where: dict[W, int] = {}

    def __len__(self) -> int:
        return len(self._where)

    def add(self, conn: W) -> None:
        """Watch ``conn`` (again), filed at its current deadline."""
        self.discard(conn)
        slot = math.ceil(deadline(conn) * SLOTS_PER_SECOND)
        self._buckets.setdefault(slot, set()).add(conn)
        self._where[conn] = slot

    def discard(self, conn: W) -> None:
        """Stop watching ``conn``."""
        slot = self._where.pop(conn, None)
        if slot is not None:
            bucket = self._buckets[slot]
            bucket.discard(conn)
            if not bucket:
                del self._buckets[slot]

    def next_due(self) -> float | None:
        """When the earliest bucket comes due, or None when nothing is watched."""
        return min(self._buckets) / SLOTS_PER_SECOND if self._buckets else None

    def expire(self, now: float) -> list[W]:
        """Connections whose deadline has passed; they are no longer watched. Connections
        in due buckets that were active since are filed again at their new deadline."""
        gone: list[W] = []
        due = now * SLOTS_PER_SECOND
        for slot in sorted(s for s in self._buckets if s <= due):
            for conn in self._buckets.pop(slot):
                del self._where[conn]
                if deadline(conn) <= now:
                    gone.append(conn)
                else:
                    self.add(conn)
        return gone
