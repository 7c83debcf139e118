"""core.deadlines: keyed deadlines on a clock passed in, no event loop."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mqttbroker.core.deadlines import Deadlines


def test_due_in_order_and_only_when_due() -> None:
    d: Deadlines[str] = Deadlines()
    d.set("b", 20.0)
    d.set("a", 10.0)
    d.set("c", 30.0)
    assert d.next_at() == 10.0 and len(d) == 3
    assert d.pop_due(9.999) == []
    assert d.pop_due(20.0) == ["a", "b"]  # a deadline equal to now is due
    assert d.next_at() == 30.0 and "a" not in d and "c" in d
    assert d.pop_due(100.0) == ["c"] and d.next_at() is None and len(d) == 0


def test_set_again_moves_and_cancel_forgets() -> None:
    d: Deadlines[tuple[str, str]] = Deadlines()
    d.set(("will", "x"), 5.0)
    d.set(("expire", "x"), 7.0)
    d.set(("will", "x"), 50.0)  # moved later: not due at 5 any more
    assert d.when(("will", "x")) == 50.0
    assert d.pop_due(10.0) == [("expire", "x")]
    assert d.cancel(("will", "x")) is True and d.cancel(("will", "x")) is False
    assert d.next_at() is None and d.pop_due(1e9) == []


def test_churn_does_not_grow_the_heap() -> None:
    """A client that reconnects all day moves its session's expiry each time."""
    d: Deadlines[str] = Deadlines()
    for i in range(100_000):
        d.set("s", float(i))
        if i % 3 == 1:
            d.cancel("s")
    assert len(d._heap) <= 2 * len(d) + 64 + 1
    assert d.when("s") == 99_999.0 and d.pop_due(1e9) == ["s"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "cancel", "pop"]),
                          st.integers(0, 9), st.integers(0, 100)), max_size=60))
def test_matches_a_plain_dict_model(ops: list[tuple[str, int, int]]) -> None:
    d: Deadlines[int] = Deadlines()
    model: dict[int, float] = {}
    order: dict[int, int] = {}
    for n, (op, key, t) in enumerate(ops):
        if op == "set":
            d.set(key, float(t))
            model[key] = float(t)
            order[key] = n
        elif op == "cancel":
            assert d.cancel(key) == (key in model)
            model.pop(key, None)
        else:
            due = sorted((at, order[k], k) for k, at in model.items() if at <= t)
            assert d.pop_due(float(t)) == [k for _, _, k in due]
            for _, _, k in due:
                del model[k]
        assert len(d) == len(model)
        assert d.next_at() == (min(model.values()) if model else None)
