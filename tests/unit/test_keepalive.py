"""The keep-alive wheel, with time as a parameter (no event loop) [MQTT-3.1.2-24]."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from mqttbroker.keepalive import KeepAliveWheel, deadline


@dataclass(eq=False)
class Conn:
    last_received: float
    keep_alive: int


def test_silent_client_expires_at_one_and_a_half_keep_alive() -> None:
    w: KeepAliveWheel[Conn] = KeepAliveWheel()
    c = Conn(100.0, 10)
    w.add(c)
    assert w.expire(114.9) == []
    assert w.expire(115.0) == [c]
    assert len(w) == 0


def test_active_client_is_filed_again_not_expired() -> None:
    w: KeepAliveWheel[Conn] = KeepAliveWheel()
    c = Conn(100.0, 10)
    w.add(c)
    c.last_received = 110.0  # a packet arrived: only the timestamp moves
    assert w.expire(115.5) == []
    assert len(w) == 1 and w.next_due() == 125.0
    assert w.expire(125.0) == [c]


def test_discard_stops_watching() -> None:
    w: KeepAliveWheel[Conn] = KeepAliveWheel()
    c = Conn(0.0, 1)
    w.add(c)
    w.discard(c)
    w.discard(c)  # twice is harmless
    assert w.expire(100.0) == [] and w.next_due() is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1000), st.integers(1, 600)), min_size=1, max_size=50),
       st.floats(0, 2000))
def test_expires_exactly_the_overdue_ones_never_early(conns: list[tuple[float, int]],
                                                      now: float) -> None:
    w: KeepAliveWheel[Conn] = KeepAliveWheel()
    cs = [Conn(t, ka) for t, ka in conns]
    for c in cs:
        w.add(c)
    gone = w.expire(now)
    assert all(deadline(c) <= now for c in gone)  # never early
    # at most a quarter second late
    assert {id(c) for c in gone} >= {id(c) for c in cs if deadline(c) <= now - 0.25}
    assert len(w) + len(gone) == len(cs)
