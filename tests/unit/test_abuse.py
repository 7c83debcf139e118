"""Per-address defences (mqttbroker/abuse.py) and hostile topics against the topic trees.

* :class:`ConnectionRateLimiter`: a token bucket per address, episodes (a flood is logged
  once, not per connection), bounded memory.
* :class:`LoginFailures`: delays that double per failed login, capped, queued one after
  another for parallel CONNECTs, forgotten on success or after a while, bounded memory.
* Topic matching stays linear however hostile the filters and topics: 32k levels, '+' at
  every level, every combination of '+' and a literal, 64 KiB levels; nothing recurses (it runs
  under a recursion limit a few frames above the caller's). Costs are measured at growing sizes
  and must grow like the input, not faster; the numbers are printed (``pytest -s``).

Times are exact binary fractions where results are compared with ``==``.
"""

from __future__ import annotations

import gc
import ipaddress
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttbroker.abuse import ConnectionRateLimiter, LoginFailures, address_key
from mqttbroker.broker import Broker
from mqttbroker.config import load_config
from mqttbroker.errors import ConfigError
from mqttbroker.protocol.packets import Subscription
from mqttbroker.protocol.topics import (
    RetainedTree,
    SubscriptionTree,
    topic_filter_problem,
    topic_matches,
)
from mqttbroker.router import CACHE_TOPIC_MAX, Router

# -- address_key ------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "key"), [
    ("127.0.0.1", "127.0.0.1"),
    ("10.1.2.3", "10.1.2.3"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # an IPv4 client on a dual-stack socket
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # same /64, same key
    ("::1", "::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("", ""),  # no peer name (not an IP address): its own key
    ("?", "?"),
])
def test_address_key(host: str, key: str) -> None:
    assert address_key(host) == key


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.ip_addresses(v=4).map(str),
                 st.text(alphabet="0123456789.x -", max_size=20)))
def test_address_key_without_a_colon_is_what_parsing_gives(host: str) -> None:
    """address_key() takes a host without ':' as is, unparsed: that must be what parsing it
    would give (the canonical IPv4 address, or the string itself when it is not one)."""
    try:
        parsed = str(ipaddress.ip_address(host))
    except ValueError:
        parsed = host
    assert address_key(host) == parsed


# -- ConnectionRateLimiter ----------------------------------------------------------------------


def test_burst_then_the_rate() -> None:
    lim = ConnectionRateLimiter(rate=4, burst=8)
    assert [lim.take("a", 0.0)[0] for _ in range(10)] == [True] * 8 + [False] * 2
    # 4/s: one more every 0.25 s
    assert lim.take("a", 0.25) == (True, 0)
    assert lim.take("a", 0.25)[0] is False
    assert [lim.take("a", 1.25)[0] for _ in range(5)] == [True] * 4 + [False]


def test_addresses_are_independent() -> None:
    lim = ConnectionRateLimiter(rate=1, burst=2)
    assert [lim.take("a", 0.0)[0] for _ in range(3)] == [True, True, False]
    assert [lim.take("b", 0.0)[0] for _ in range(3)] == [True, True, False]


def test_an_episode_is_reported_once_at_each_end() -> None:
    """(False, 1) begins an episode, the refusals count up, and the first connection
    accepted once the address has earned back its whole burst reports how many were
    refused. A flood hovering at the rate stays one episode."""
    lim = ConnectionRateLimiter(rate=2, burst=4)
    for _ in range(4):
        assert lim.take("a", 0.0) == (True, 0)
    assert lim.take("a", 0.0) == (False, 1)
    assert lim.take("a", 0.0) == (False, 2)
    # hovering: one accepted every 0.5 s, one refused in between; never full again
    t = 0.0
    refused = 2
    for _ in range(20):
        t += 0.5
        assert lim.take("a", t) == (True, 0)  # not ended: the bucket is not full
        refused += 1
        assert lim.take("a", t) == (False, refused)
    # quiet for 2 s (the burst's worth at 2/s): the episode ends with its count
    t += 2.0
    assert lim.take("a", t) == (True, refused)
    assert lim.take("a", t) == (True, 0)


def test_rate_limiter_memory_is_bounded() -> None:
    """More addresses than the table holds: the least recently seen are forgotten."""
    lim = ConnectionRateLimiter(rate=1, burst=1, max_addresses=100)
    for i in range(10_000):
        lim.take(f"10.0.{i // 256}.{i % 256}", 0.0)  # all at once: nothing expires
        assert len(lim) <= 100
    assert len(lim) == 100


def test_rate_limiter_entries_expire_once_full_again() -> None:
    """An address whose bucket has refilled says nothing an unknown one would not: dropped."""
    lim = ConnectionRateLimiter(rate=10, burst=10, max_addresses=100_000)
    for i in range(1000):
        lim.take(f"a{i}", i * 0.01)  # 100 new addresses/s, each connecting once
    # each entry is full again 0.1 s after its connection: only the last ~10 are left
    assert len(lim) <= 20


def test_clock_going_backwards_refills_nothing() -> None:
    lim = ConnectionRateLimiter(rate=1, burst=1)
    assert lim.take("a", 10.0)[0] and not lim.take("a", 5.0)[0] and not lim.take("a", 10.0)[0]


@pytest.mark.parametrize("bad", [-1.0, 0.0, math.nan, math.inf])
def test_rate_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        ConnectionRateLimiter(bad, 10)


@settings(max_examples=200, deadline=None)
@given(rate=st.integers(1, 50), burst=st.integers(1, 50),
       gaps=st.lists(st.integers(0, 1000), min_size=1, max_size=300))
def test_accepted_in_any_window_is_at_most_rate_times_t_plus_burst(
        rate: int, burst: int, gaps: list[int]) -> None:
    """The promise: over any window of T seconds at most ``rate * T + burst`` connections
    from one address get through, however they are timed. (Times in ms, exact.)"""
    lim = ConnectionRateLimiter(rate, burst)
    t = 0.0
    accepted: list[float] = []
    for g in gaps:
        t += g / 1024
        if lim.take("x", t)[0]:
            accepted.append(t)
    for i, start in enumerate(accepted):
        for j in range(i, len(accepted)):
            assert j - i + 1 <= rate * (accepted[j] - start) + burst + 1e-9


# -- LoginFailures ------------------------------------------------------------------------------


def test_no_delay_before_the_threshold_then_doubling_to_the_cap() -> None:
    g = LoginFailures(threshold=3, delay=0.25, max_delay=2.0)
    assert [g.delay_after(n) for n in range(10)] == [
        0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert g.delay_after(10_000) == 2.0  # no overflow


def test_sequential_guessing_waits_longer_each_time() -> None:
    """An attacker that reconnects as soon as it is refused: each CONNECT is held until the
    previous failure's delay has passed, and the delays double."""
    g = LoginFailures(threshold=2, delay=0.25, max_delay=4.0)
    t = 0.0
    waits = []
    for _ in range(9):
        wait = g.connect_delay("a", t)
        assert wait is not None
        waits.append(wait)
        t += wait
        g.failed("a", t)
    assert waits == [0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert g.failures("a") == 9


def test_parallel_connects_queue_one_delay_apart_and_overflow_is_refused() -> None:
    """Opening many connections at once buys no more guesses: each held CONNECT takes the
    next turn; one whose turn is further than max_delay away is refused (None)."""
    g = LoginFailures(threshold=1, delay=1.0, max_delay=4.0)
    g.failed("a", 0.0)  # next CONNECT from a: not before 1.0
    holds = [g.connect_delay("a", 0.0) for _ in range(7)]
    assert holds == [1.0, 2.0, 3.0, 4.0, None, None, None]
    assert g.connect_delay("b", 0.0) == 0.0  # another address is not affected


def test_success_forgets_the_address() -> None:
    g = LoginFailures(threshold=1, delay=1.0, max_delay=8.0)
    for t in range(5):
        g.failed("a", float(t))
    assert g.connect_delay("a", 5.0) == 7.0  # the 5th failure (at 4.0) was worth 8 s (the cap)
    g.succeeded("a")
    assert g.failures("a") == 0 and g.connect_delay("a", 5.0) == 0.0


def test_failures_are_forgotten_after_a_quiet_while() -> None:
    g = LoginFailures(threshold=1, delay=1.0, max_delay=2.0, memory=60.0)
    for _ in range(5):
        g.failed("a", 0.0)
    assert g.connect_delay("a", 30.0) == 0.0  # its delay has passed, but it is remembered:
    assert g.failures("a") == 5
    assert g.connect_delay("a", 100.0) == 0.0  # 60 s without a failure: forgotten
    assert g.failures("a") == 0
    g.failed("b", 0.0)
    g.failed("b", 61.0)  # forgiven meanwhile: counts from 1 again
    assert g.failures("b") == 1


def test_login_failures_memory_is_bounded() -> None:
    g = LoginFailures(threshold=1, delay=1.0, max_delay=2.0, max_addresses=50)
    for i in range(5000):
        g.failed(f"a{i}", 0.0)
        assert len(g) <= 50
    assert g.failures("a4999") == 1 and g.failures("a0") == 0  # the oldest went first


@pytest.mark.parametrize("bad", [-1.0, 0.0, math.nan, math.inf])
def test_delay_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        LoginFailures(1, bad, 10.0)


# -- configuration ------------------------------------------------------------------------------


def test_defaults_and_switching_off() -> None:
    cfg = load_config(None).mqtt
    assert (cfg.connect_timeout, cfg.max_connect_size, cfg.max_topic_levels) == (5.0, 65536, 200)
    assert (cfg.max_connection_rate_per_address, cfg.connection_burst_per_address) == (50.0, 200)
    assert (cfg.auth_failure_threshold, cfg.auth_failure_delay,
            cfg.auth_failure_max_delay) == (5, 1.0, 30.0)
    on = Broker({})
    assert on.connection_rate is not None and on.login_failures is not None
    off = Broker({"mqtt": {"max_connection_rate_per_address": 0, "auth_failure_delay": 0}})
    assert off.connection_rate is None and off.login_failures is None


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("max_connect_size", 100, "must be between 256 and"),
    ("max_connection_rate_per_address", -1, "must be at least 0"),
    ("connection_burst_per_address", 0, "must be at least 1"),
    ("auth_failure_threshold", -1, "must be at least 0"),
    ("auth_failure_delay", "1s", "expected a number"),
    ("auth_failure_max_delay", math.inf, "finite"),
    ("max_topic_levels", -5, "must be at least 0"),
])
def test_bad_values_name_the_key(key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"mqtt": {key: value}})
    assert info.value.key == f"mqtt.{key}" and problem in str(info.value)


# -- hostile topics: linear, no recursion ------------------------------------------------------
#
# The work a match does is counted, not timed: every dict operation the walk makes on a node's
# children (a lookup, or iterating them) is one step. Linear means steps <= a small constant x
# (nodes in the tree + levels in the topic), at every size. Wall time is printed and only
# bounded loosely (the CPU cache makes a 16x bigger tree more than 16x slower per node).


class _Counting(dict):  # type: ignore[type-arg]
    """A node's children that count what the walk does with them."""

    steps = 0

    def get(self, key: object, default: object = None) -> object:
        _Counting.steps += 1
        return super().get(key, default)

    def items(self):  # type: ignore[no-untyped-def]
        _Counting.steps += 1 + len(self)
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        _Counting.steps += 1 + len(self)
        return super().values()


def instrument(tree: SubscriptionTree[object, object] | RetainedTree[object]) -> int:
    """Make every node of ``tree`` count its steps; return the number of nodes."""
    nodes = 0
    stack = [tree._root]
    while stack:
        node = stack.pop()
        nodes += 1
        node.children = _Counting(node.children)
        stack.extend(dict.values(node.children))
    return nodes


def steps(fn: Callable[[], object]) -> int:
    _Counting.steps = 0
    fn()
    return _Counting.steps


@contextmanager
def shallow_stack(spare: int = 30) -> Iterator[None]:
    """Only ``spare`` frames above the caller's: any recursion per topic level would fail."""
    depth = 0
    f = sys._getframe()
    while f is not None:
        depth += 1
        f = f.f_back  # type: ignore[assignment]
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + spare)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def best_of(fn: Callable[[], object], runs: int = 3) -> float:
    """The fastest of ``runs`` calls, the garbage collector off (a collection walks every
    object in the process: it would be timed too, at random)."""
    best = math.inf
    gc.collect()
    gc.disable()
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    finally:
        gc.enable()
    return best


MAX_SECONDS = 0.5  # the largest case of each kind, on a slow shared machine (~10x margin)
SIZES = [2048, 8192, 32767]  # levels; 32767 is the most a 65535-byte topic or filter can have


def check_linear(name: str, n: int, nodes: int, levels: int, work: int, seconds: float) -> None:
    print(f"{name}: n={n:>6} nodes={nodes:>6} levels={levels:>6} steps={work:>7} "
          f"({work / (nodes + levels):.2f} per node+level) {seconds * 1e3:7.2f} ms")
    assert work <= 4 * (nodes + levels), (name, n, work, nodes, levels)
    assert seconds < MAX_SECONDS, (name, n, seconds)


def test_plus_at_every_level_matches_in_linear_steps_without_recursion() -> None:
    for n in SIZES:
        tree: SubscriptionTree[object, object] = SubscriptionTree()
        tree.add("/".join(["+"] * n), "plus", 0)
        tree.add("/".join(["+"] * (n - 1) + ["#"]), "hash", 0)
        nodes = instrument(tree)
        topic = "/".join(["x"] * n)
        with shallow_stack():
            assert sorted(str(k) for g in tree.match(topic) for k in g) == ["hash", "plus"]
            work = steps(lambda: tree.match(topic))  # noqa: B023 - called at once
        check_linear("'+' x n vs n levels", n, nodes, n, work,
                     best_of(lambda: tree.match(topic)))  # noqa: B023


def test_wildcard_filters_at_every_depth_are_linear() -> None:
    """Filters '+/+/.../#' of every 256th depth up to n share one path: one walk."""
    for n in SIZES:
        tree: SubscriptionTree[object, object] = SubscriptionTree()
        for i in range(0, n, 256):
            tree.add("/".join(["+"] * i + ["#"]), i, 0)
        nodes = instrument(tree)
        topic = "/".join(["x"] * n)
        with shallow_stack():
            assert len(tree.match(topic)) == len(range(0, n, 256))
            work = steps(lambda: tree.match(topic))  # noqa: B023
        check_linear("'#' at every 256th depth", n, nodes, n, work,
                     best_of(lambda: tree.match(topic)))  # noqa: B023


def test_every_combination_of_plus_and_literal_is_linear_in_the_tree() -> None:
    """All 2**d filters of '+' or 'a' at each of d levels all match 'a/a/.../a': the walk
    visits each of the tree's 2**(d+1) nodes once, so its cost is linear in the tree (and in
    the number of matching filters, which it must return), never more."""
    for d in (9, 11, 13):
        tree: SubscriptionTree[object, object] = SubscriptionTree()
        for i, levels in enumerate(itertools.product("+a", repeat=d)):
            tree.add("/".join(levels), i, 0)
        nodes = instrument(tree)
        topic = "/".join(["a"] * d)
        assert len(tree.match(topic)) == 2 ** d
        work = steps(lambda: tree.match(topic))  # noqa: B023
        check_linear("2**d '+'/'a' filters", 2 ** d, nodes, d, work,
                     best_of(lambda: tree.match(topic)))  # noqa: B023


def test_many_filters_sharing_nothing_with_the_topic_cost_nothing() -> None:
    """20,000 filters that are not on the topic's path: the walk never sees them."""
    tree: SubscriptionTree[object, object] = SubscriptionTree()
    for i in range(20_000):
        tree.add(f"f{i}/+/+/#", i, 0)
    tree.add("+/+/+", "p", 0)
    nodes = instrument(tree)
    topic = "a/b/c"
    work = steps(lambda: tree.match(topic))
    print(f"20k unrelated filters: {nodes} nodes, {work} steps")
    assert work <= 4 * (4 + 3)  # the root, the '+' path: nothing else
    assert best_of(lambda: tree.match(topic)) < 0.01


def test_long_levels_cost_what_hashing_them_costs() -> None:
    """One 64 KiB level, in filters and topics: a handful of steps, each hashing it once."""
    level = "L" * 65535
    tree: SubscriptionTree[object, object] = SubscriptionTree()
    tree.add(level + "/+", "a", 0)
    tree.add("+/" + level, "b", 0)
    nodes = instrument(tree)
    topic = level + "/" + level
    assert sorted(str(k) for g in tree.match(topic) for k in g) == ["a", "b"]
    work = steps(lambda: tree.match(topic))
    # a fresh string each run: str caches its hash
    check_linear("64 KiB levels", 65535, nodes, 2, work,
                 best_of(lambda: tree.match(f"{level}/{level}")))


def test_retained_tree_hostile_filters_are_linear_without_recursion() -> None:
    for n in SIZES:
        tree: RetainedTree[object] = RetainedTree()
        tree.set("/".join(["x"] * n), "deep")
        for i in range(64):  # siblings at the top, so '+' has somewhere to branch
            tree.set(f"s{i}/" + "/".join(["x"] * 4), f"s{i}")
        nodes = instrument(tree)
        plus = "/".join(["+"] * n)
        with shallow_stack():
            assert tree.match(plus) == ["deep"]
            assert len(tree.match("#")) == 65
            work = steps(lambda: (tree.match(plus), tree.match("#")))  # noqa: B023
        check_linear("retained '+' x n and '#'", n, nodes, n, work,
                     best_of(lambda: (tree.match(plus), tree.match("#"))))  # noqa: B023


def test_reference_matcher_and_filter_check_are_time_bounded() -> None:
    """The matcher the ACLs use, and the filter check every SUBSCRIBE runs: a split and one
    loop each, no regular expression (nothing to backtrack)."""
    for n in SIZES:
        plus = "/".join(["+"] * n)
        topic = "/".join(["x"] * n)
        with shallow_stack():
            assert topic_matches(plus, topic) and topic_filter_problem(plus) is None
            assert topic_filter_problem(plus + "/a#") is not None
            seconds = best_of(lambda: (topic_matches(plus, topic),  # noqa: B023
                                       topic_filter_problem(plus)))  # noqa: B023
        print(f"topic_matches + topic_filter_problem: n={n:>6} {seconds * 1e3:7.2f} ms "
              f"({seconds / n * 1e9:.0f} ns/level)")
        assert seconds < MAX_SECONDS


def test_router_does_not_cache_long_topics() -> None:
    """The route cache holds at most CACHE_SIZE topics of at most CACHE_TOPIC_MAX characters:
    distinct 64 KiB topics from a publisher cannot fill it with 640 MB."""
    router = Router()
    router.subscribe("c", Subscription("#", 0))
    short, long = "a/b", "a/" + "x" * CACHE_TOPIC_MAX
    assert "c" in router.route(short, None, lambda _: True)[0]
    assert "c" in router.route(long, None, lambda _: True)[0]
    assert short in router._cache and long not in router._cache
