"""The per-client publish rate limiter (mqttbroker/ratelimit.py): two token buckets holding one
second's worth, starting full, refilling continuously, going negative for a packet already read.

Exact cases use rates and times that are exact in binary floating point, so every expected
pause is compared with ``==``. The hypothesis properties check the promise the limit makes
(docs/durability.md, "Limits"): a client that obeys the pauses gets, over any window of T
seconds, at most ``rate * T + capacity`` admitted without a pause (plus the one packet that
overdrew the bucket), and a greedy client is not held to less than the rate.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttbroker.ratelimit import PublishLimiter

# -- construction -----------------------------------------------------------------------------


def test_zero_rates_mean_unlimited() -> None:
    """0 and 0: disabled, and take() never asks for a pause, whatever is charged."""
    lim = PublishLimiter(0, 0, now=0.0)
    assert not lim.enabled
    assert all(lim.take(1_000_000, 0.0) == 0.0 for _ in range(10_000))


@pytest.mark.parametrize(("rate", "bytes_rate"), [(1, 0), (0, 1), (0.5, 100.0)])
def test_enabled_when_either_limit_is_set(rate: float, bytes_rate: float) -> None:
    lim = PublishLimiter(rate, bytes_rate, now=0.0)
    assert lim.enabled
    assert (lim.rate, lim.bytes_rate) == (rate, bytes_rate)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf])
def test_bad_rates_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        PublishLimiter(bad, 0, now=0.0)
    with pytest.raises(ValueError, match="bytes_rate"):
        PublishLimiter(0, bad, now=0.0)


def test_slotted() -> None:
    """No per-instance __dict__: one limiter per connection should cost little."""
    lim = PublishLimiter(10, 0, now=0.0)
    assert not hasattr(lim, "__dict__")
    with pytest.raises(AttributeError):
        lim.extra = 1  # type: ignore[attr-defined]


# -- the packet bucket ------------------------------------------------------------------------


def test_starts_full_one_seconds_worth_then_pauses() -> None:
    """rate 8/s: 8 packets at once pass (the bucket starts full, holds one second's worth);
    the 9th, already read, is charged: the bucket is at -1, a pause of 1/8 s pays it off."""
    lim = PublishLimiter(8, 0, now=100.0)
    assert [lim.take(10, 100.0) for _ in range(8)] == [0.0] * 8
    assert lim.take(10, 100.0) == 0.125
    # a client that does not wait digs deeper: each packet adds 1/8 s
    assert lim.take(10, 100.0) == 0.25
    assert lim.take(10, 100.0) == 0.375


def test_refills_continuously() -> None:
    """rate 4/s, emptied at t=0: after 0.25 s one token is back, after 0.5 s two."""
    lim = PublishLimiter(4, 0, now=0.0)
    for _ in range(4):
        assert lim.take(1, 0.0) == 0.0
    assert lim.take(1, 0.25) == 0.0  # refilled 1, spent 1: at 0
    assert lim.take(1, 0.25) == 0.25  # at -1
    assert lim.take(1, 0.5) == 0.25  # -1 + 1 - 1 = -1 (it paid its pause, then overdrew again)
    assert lim.take(1, 1.0) == 0.0  # -1 + 2 - 1 = 0


def test_obeying_the_pause_gives_exactly_the_rate() -> None:
    """A client that comes back exactly when told gets one packet per 1/rate seconds."""
    lim = PublishLimiter(4, 0, now=0.0)
    t = 0.0
    for _ in range(4):
        assert lim.take(1, t) == 0.0
    wait = lim.take(1, t)
    assert wait == 0.25
    for _ in range(40):
        t += wait
        wait = lim.take(1, t)
        assert wait == 0.25
    assert t == 10.0  # 4 + 1 + 40 packets by t = 10 s: 4 per second after the initial burst


def test_bucket_does_not_grow_past_one_second() -> None:
    """A long silence refills to the capacity, no more: after an hour, 4 pass and the 5th
    pauses as if the client had waited only one second."""
    lim = PublishLimiter(4, 0, now=0.0)
    for _ in range(4):
        lim.take(1, 0.0)
    assert [lim.take(1, 3600.0) for _ in range(4)] == [0.0] * 4
    assert lim.take(1, 3600.0) == 0.25


def test_rate_under_one_still_holds_one_packet() -> None:
    """rate 0.5/s: capacity is one packet (not half of one): the first passes at once, the
    second pays 2 s; a packet every 2 s after that."""
    lim = PublishLimiter(0.5, 0, now=0.0)
    assert lim.take(1, 0.0) == 0.0
    assert lim.take(1, 0.0) == 2.0
    assert lim.take(1, 2.0) == 2.0
    assert lim.take(1, 10.0) == 0.0  # idle: back to one packet, not more
    assert lim.take(1, 10.0) == 2.0


def test_clock_going_backwards_refills_nothing() -> None:
    lim = PublishLimiter(4, 0, now=10.0)
    for _ in range(4):
        lim.take(1, 10.0)
    assert lim.take(1, 5.0) == 0.25  # no refill for the negative interval, no error
    assert lim.take(1, 10.25) == 0.25  # measured from 10.0, the latest time seen


# -- the byte bucket --------------------------------------------------------------------------


def test_bytes_bucket() -> None:
    """bytes_rate 1024/s: 768 + 256 bytes pass; the next 512 leave it at -512: 0.5 s."""
    lim = PublishLimiter(0, 1024, now=0.0)
    assert lim.take(768, 0.0) == 0.0
    assert lim.take(256, 0.0) == 0.0
    assert lim.take(512, 0.0) == 0.5
    assert lim.take(512, 0.5) == 0.5  # -512 + 512 - 512
    assert lim.take(0, 1.0) == 0.0  # an empty PUBLISH costs no bytes (-512 + 512 - 0 = 0)


def test_message_bigger_than_a_seconds_worth() -> None:
    """bytes_rate 1024/s, 4096-byte messages. Right after the start the bucket holds 1024: the
    message is charged (-3072), 3 s pause; the next one, sent when told, pays 4 s. A client
    quiet for 4 s or more has earned a whole message: it passes without a pause (the
    capacity is at least the message's size)."""
    lim = PublishLimiter(0, 1024, now=0.0)
    assert lim.take(4096, 0.0) == 3.0
    assert lim.take(4096, 3.0) == 4.0
    assert lim.take(4096, 107.0) == 0.0  # quiet 100 s: the bucket held 4096, not more
    assert lim.take(1024, 107.0) == 1.0
    # after that a second's worth is the capacity again for small messages
    assert lim.take(512, 200.0) == 0.0
    assert lim.take(512, 200.0) == 0.0
    assert lim.take(512, 200.0) == 0.5


def test_both_buckets_the_longer_pause_wins() -> None:
    """rate 4/s and 1024 bytes/s: small packets hit the packet limit, big ones the byte limit;
    the pause is whichever bucket needs longer."""
    lim = PublishLimiter(4, 1024, now=0.0)
    for _ in range(4):
        assert lim.take(16, 0.0) == 0.0  # 64 bytes: only the packet bucket is empty
    assert lim.take(16, 0.0) == 0.25  # packets -1 -> 0.25 s; bytes 1024-80 >= 0
    lim = PublishLimiter(4, 1024, now=0.0)
    assert lim.take(1024, 0.0) == 0.0
    assert lim.take(512, 0.0) == 0.5  # bytes -512 -> 0.5 s; packets 2 left -> 0
    assert lim.take(512, 0.5) == 0.5  # bytes -512 + 512 - 512; packets 2 + 2 - 1 = 3


# -- properties -------------------------------------------------------------------------------

_rates = st.sampled_from([0.5, 1.0, 3.0, 10.0, 50.0, 333.3, 1000.0])
_byte_rates = st.sampled_from([100.0, 1024.0, 20_000.0, 1_000_000.0])
_steps = st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(0, 50_000)), min_size=1,
                  max_size=120)


def _obedient(lim: PublishLimiter, steps: list[tuple[float, int]]
              ) -> list[tuple[float, int, float]]:
    """A client that never comes back before its pause is over: ``(time, nbytes, pause)`` per
    take. ``gap`` is how long it would have waited anyway."""
    t = 0.0
    ready = 0.0
    out = []
    for gap, nbytes in steps:
        t = max(t + gap, ready)
        wait = lim.take(nbytes, t)
        out.append((t, nbytes, wait))
        ready = t + wait
    return out


def _eps(x: float) -> float:
    return 1e-9 * (1.0 + abs(x))


@settings(max_examples=300, deadline=None)
@given(rate=_rates, steps=_steps)
def test_packets_over_any_window_bounded_by_rate_times_t_plus_capacity(
        rate: float, steps: list[tuple[float, int]]) -> None:
    """For every window [t_i, t_j] of an obedient client: packets admitted without a pause
    <= rate * T + capacity; every packet read, the overdrawing one included, <= that + 1."""
    takes = _obedient(PublishLimiter(rate, 0, now=0.0), steps)
    cap = max(rate, 1.0)
    for i in range(len(takes)):
        admitted = 0
        for read, (t_j, _, wait) in enumerate(takes[i:], start=1):
            admitted += wait == 0.0
            bound = rate * (t_j - takes[i][0]) + cap
            assert admitted <= bound + _eps(bound), (i, read, admitted, bound)
            assert read <= bound + 1 + _eps(bound), (i, read, bound)


@settings(max_examples=300, deadline=None)
@given(bytes_rate=_byte_rates, steps=_steps)
def test_bytes_over_any_window_bounded_by_rate_times_t_plus_capacity(
        bytes_rate: float, steps: list[tuple[float, int]]) -> None:
    """Bytes admitted without a pause in any window starting at take i <= bytes_rate * T +
    capacity, where the capacity is a second's worth or that first message's size if bigger;
    bytes read <= that + the last message (the one that overdrew)."""
    takes = _obedient(PublishLimiter(0, bytes_rate, now=0.0), steps)
    for i in range(len(takes)):
        t_i, n_i, _ = takes[i]
        cap = max(bytes_rate, n_i)
        admitted = read = 0
        for j in range(i, len(takes)):
            t_j, n_j, wait = takes[j]
            read += n_j
            admitted += n_j if wait == 0.0 else 0
            bound = bytes_rate * (t_j - t_i) + cap
            assert admitted <= bound + _eps(bound), (i, j, admitted, bound)
            assert read <= bound + n_j + _eps(bound), (i, j, read, bound)


@settings(max_examples=200, deadline=None)
@given(rate=_rates, bytes_rate=_byte_rates, steps=_steps)
def test_both_limits_hold_at_once(rate: float, bytes_rate: float,
                                  steps: list[tuple[float, int]]) -> None:
    """With both buckets on, each bound holds on its own (the longer pause is taken)."""
    takes = _obedient(PublishLimiter(rate, bytes_rate, now=0.0), steps)
    for i in range(len(takes)):
        t_i, n_i, _ = takes[i]
        packets = nbytes = 0
        for j in range(i, len(takes)):
            t_j, n_j, wait = takes[j]
            if wait == 0.0:
                packets += 1
                nbytes += n_j
            span = t_j - t_i
            pbound = rate * span + max(rate, 1.0)
            bbound = bytes_rate * span + max(bytes_rate, n_i)
            assert packets <= pbound + _eps(pbound)
            assert nbytes <= bbound + _eps(bbound)


@settings(max_examples=200, deadline=None)
@given(rate=_rates, n=st.integers(1, 400))
def test_greedy_client_gets_the_full_rate(rate: float, n: int) -> None:
    """Not stricter than needed: a client that comes back the moment each pause ends has
    been allowed, by the time its n-th pause ends, exactly rate * t + capacity packets (the
    first capacity of them at once)."""
    lim = PublishLimiter(rate, 0, now=0.0)
    t = 0.0
    for _ in range(n):
        t += lim.take(0, t)
    cap = max(rate, 1.0)
    if n > cap:
        assert math.isclose(n, rate * t + cap, rel_tol=1e-9)
    else:
        assert t == 0.0  # still within the initial burst


@settings(max_examples=200, deadline=None)
@given(rate=_rates, k=st.integers(0, 500))
def test_disobedient_client_pays_every_packet(rate: float, k: int) -> None:
    """A client read regardless of the pauses (the worst case: everything already in the
    socket) is told to pause for exactly its excess: (k - capacity) / rate after k packets."""
    lim = PublishLimiter(rate, 0, now=0.0)
    wait = 0.0
    for _ in range(k):
        wait = lim.take(0, 0.0)
    expected = max(k - max(rate, 1.0), 0.0) / rate
    assert math.isclose(wait, expected, rel_tol=1e-12, abs_tol=1e-12)
