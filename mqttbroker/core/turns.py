"""One callback at the end of an event-loop turn for every connection that wrote in it.

A connection sends the first packet of a turn at once (latency) and gathers the rest into one
write at the end of the turn (client/output.py). That end used to be a ``loop.call_soon`` per
connection per turn: a handle and a bound method each time, for every connection a publish
fanned out to and for every new connection's CONNACK. :class:`EndOfTurn` keeps the list of
those connections and asks the loop for one callback for all of them.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar


class Gathers(Protocol):
    """What writes at the end of a turn."""

    def flush(self) -> None:
        """Write what was gathered during this turn."""


G = TypeVar("G", bound=Gathers)


class EndOfTurn(Generic[G]):
    """The writers to flush once this turn of the loop is over, in the order they asked."""

    __slots__ = ("_held", "_pending", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop  # (a broker's is set when it starts)
        self._pending: list[G] = []
        self._held = False

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, writer: G) -> None:
        """Flush ``writer`` at the end of this turn (one loop callback for all of them)."""
        pending = self._pending
        if not pending and not self._held:
            loop = self.loop
            assert loop is not None, "EndOfTurn used before its loop was set"
            loop.call_soon(self._run)
        pending.append(writer)

    def hold(self) -> None:
        """Until :meth:`release`, writers added wait for it rather than for a loop callback
        (one already asked for still comes, and finds nothing left)."""
        self._held = True

    def release(self) -> None:
        """Flush the writers added so far, now; later ones wait for the end of the turn."""
        self._held = False
        if self._pending:
            self._run()

    def _run(self) -> None:
        pending = self._pending
        self._pending = []  # (a flush that writes makes a new turn's list)
        for writer in pending:
            try:
                writer.flush()
            except Exception as exc:  # noqa: BLE001 - one writer's failure is not the others'
                assert self.loop is not None
                self.loop.call_exception_handler({
                    "message": "a connection's end-of-turn flush failed", "exception": exc})
