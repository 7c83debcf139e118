"""core/turns.py: one loop callback per turn flushes every connection that wrote in it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mqttbroker.core.turns import EndOfTurn


class Writer:
    def __init__(self, name: str, log: list[str], fail: bool = False,
                 then: Any = None) -> None:
        self.name, self.log, self.fail, self.then = name, log, fail, then

    def flush(self) -> None:
        self.log.append(self.name)
        if self.then is not None:
            self.then()
        if self.fail:
            raise RuntimeError(f"{self.name} failed")

    def __hash__(self) -> int:
        return id(self)


class CountingLoop:
    """The parts of a loop EndOfTurn uses: call_soon is counted and run by hand."""

    def __init__(self) -> None:
        self.soon: list[Any] = []
        self.errors: list[dict[str, Any]] = []

    def call_soon(self, cb: Any) -> None:
        self.soon.append(cb)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)

    def turn(self) -> None:
        soon, self.soon = self.soon, []
        for cb in soon:
            cb()


def test_one_callback_per_turn_for_every_writer_in_order() -> None:
    loop = CountingLoop()
    turns: EndOfTurn[Writer] = EndOfTurn(loop)  # type: ignore[arg-type]
    log: list[str] = []
    a, b, c = Writer("a", log), Writer("b", log), Writer("c", log)
    for w in (a, b, c, a):  # (a twice: it flushed and wrote again in the turn)
        turns.add(w)
    assert len(loop.soon) == 1 and len(turns) == 4
    assert log == []  # nothing before the turn ends
    loop.turn()
    assert log == ["a", "b", "c", "a"] and len(turns) == 0
    turns.add(b)  # the next turn asks for a callback of its own
    assert len(loop.soon) == 1
    loop.turn()
    assert log[-1] == "b"


def test_a_writer_that_fails_does_not_stop_the_others() -> None:
    loop = CountingLoop()
    turns: EndOfTurn[Writer] = EndOfTurn(loop)  # type: ignore[arg-type]
    log: list[str] = []
    turns.add(Writer("a", log, fail=True))
    turns.add(Writer("b", log))
    loop.turn()
    assert log == ["a", "b"]
    assert [str(e["exception"]) for e in loop.errors] == ["a failed"]


def test_a_flush_that_makes_another_connection_write_goes_to_the_next_turn() -> None:
    loop = CountingLoop()
    turns: EndOfTurn[Writer] = EndOfTurn(loop)  # type: ignore[arg-type]
    log: list[str] = []
    late = Writer("late", log)
    turns.add(Writer("a", log, then=lambda: turns.add(late)))
    loop.turn()
    assert log == ["a"] and len(turns) == 1 and len(loop.soon) == 1
    loop.turn()
    assert log == ["a", "late"]


def test_without_a_loop_it_says_so() -> None:
    turns: EndOfTurn[Writer] = EndOfTurn()
    with pytest.raises(AssertionError, match="before its loop was set"):
        turns.add(Writer("a", []))


def test_held_writers_go_at_release_without_a_loop_callback() -> None:
    """hold(): what is added waits for release() (the rawtcp hub's poll), which flushes it
    at once, in order; no callback of the loop is asked for meanwhile. After release, a
    writer waits for the end of the turn again."""
    loop = CountingLoop()
    turns: EndOfTurn[Writer] = EndOfTurn(loop)  # type: ignore[arg-type]
    log: list[str] = []
    a, b = Writer("a", log), Writer("b", log)
    turns.hold()
    turns.add(a)
    turns.add(b)
    assert loop.soon == [] and log == []
    turns.release()
    assert log == ["a", "b"] and len(turns) == 0 and loop.soon == []
    turns.add(a)
    assert len(loop.soon) == 1  # released: back to the loop's callback
    loop.turn()
    assert log == ["a", "b", "a"]
    turns.hold()
    turns.release()  # nothing added: nothing flushed
    assert log == ["a", "b", "a"]


def test_a_callback_asked_before_hold_finds_nothing_left() -> None:
    """A writer added before hold() asked the loop for a callback; release() flushes it with
    the held ones, and that callback, when it comes, flushes nothing twice."""
    loop = CountingLoop()
    turns: EndOfTurn[Writer] = EndOfTurn(loop)  # type: ignore[arg-type]
    log: list[str] = []
    turns.add(Writer("early", log))
    turns.hold()
    turns.add(Writer("held", log))
    turns.release()
    assert log == ["early", "held"] and len(loop.soon) == 1
    loop.turn()
    assert log == ["early", "held"]


async def test_on_a_real_loop_the_flush_comes_after_the_current_callback() -> None:
    turns: EndOfTurn[Writer] = EndOfTurn(asyncio.get_running_loop())
    log: list[str] = []
    turns.add(Writer("a", log))
    log.append("same turn")
    await asyncio.sleep(0)
    assert log == ["same turn", "a"]
