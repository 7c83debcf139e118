"""core.admission: connection limits, pending refusals, the per-address connection rate and
the failed-login delay, with the clock passed in (no event loop, no sockets)."""

from __future__ import annotations

from typing import Any

from mqttbroker.config import load_config
from mqttbroker.core.admission import MAX_PENDING_REFUSALS, Admission
from mqttbroker.metrics import Metrics

NOW = 500.0


class FakeConn:
    """A connection as admission sees it (core.admission.Candidate)."""

    def __init__(self, peer: str = "10.0.0.1:5000", listener: str = "default") -> None:
        self.peer = peer
        self.listener = listener
        self.admitted: bool | None = None


def admission(listeners: dict[str, Any] | None = None,
              **settings: Any) -> tuple[Admission[FakeConn], Metrics]:
    """Admission with ``settings`` in the mqtt section; the rate limit and the login delay
    are off unless a test sets them."""
    mqtt = {"max_connection_rate_per_address": 0, "auth_failure_delay": 0, **settings}
    config = load_config({
        "listeners": listeners or {"default": {"bind": "127.0.0.1:0"}},
        "mqtt": mqtt,
    })
    metrics = Metrics()
    return Admission(config, metrics), metrics


def admit(a: Admission[FakeConn], conn: FakeConn, now: float = NOW) -> bool | None:
    """As the connection does: keep the answer on the connection."""
    conn.admitted = a.admit(conn, now)
    return conn.admitted


# -- connection limits ------------------------------------------------------------------------------


def test_listener_max_connections_then_over_limit_says_which() -> None:
    a, metrics = admission({"default": {"bind": "127.0.0.1:0", "max-connections": 2}})
    conns = [FakeConn(f"10.0.0.{i}:5000") for i in range(3)]
    assert [admit(a, c) for c in conns] == [True, True, False]
    assert a.over_limit(conns[2]) == "listener default is at max-connections 2"
    assert a.per_listener == {"default": 2} and a.total == 2 and a.refusing == 1
    assert metrics.connections_total == 2


def test_broker_max_connections_counts_every_listener() -> None:
    a, _ = admission({"one": {"bind": "127.0.0.1:0"}, "two": {"bind": "127.0.0.1:0"}},
                     max_connections=2)
    first, second = FakeConn(listener="one"), FakeConn(listener="two")
    third = FakeConn(listener="one")
    assert [admit(a, c) for c in (first, second, third)] == [True, True, False]
    assert a.over_limit(third) == "the broker is at max_connections 2"
    assert a.per_listener == {"one": 1, "two": 1}


def test_no_limits_admits_everyone() -> None:
    a, metrics = admission()
    assert all(admit(a, FakeConn(f"10.0.{i // 250}.{i % 250}:1")) for i in range(500))
    assert a.total == 500 and metrics.connections_total == 500


def test_released_frees_a_place() -> None:
    a, _ = admission(max_connections=1)
    first, second, third = FakeConn(), FakeConn(), FakeConn()
    assert admit(a, first) is True and admit(a, second) is False
    a.released(first)
    assert a.total == 0 and a.per_listener == {"default": 0}
    assert admit(a, third) is True
    a.released(first)  # released twice (closed twice): counted once
    assert a.total == 1


def test_released_refusal_is_no_longer_pending() -> None:
    a, _ = admission(max_connections=1)
    admit(a, FakeConn())
    refused = FakeConn()
    assert admit(a, refused) is False and a.refusing == 1
    a.released(refused)
    assert a.refusing == 0 and refused.admitted is None
    a.released(refused)  # and only once
    assert a.refusing == 0 and a.total == 1


def test_pending_refusals_are_capped_then_dropped() -> None:
    a, metrics = admission(max_connections=1)
    admit(a, FakeConn())
    pending = [FakeConn() for _ in range(MAX_PENDING_REFUSALS)]
    assert all(admit(a, c) is False for c in pending)
    assert a.refusing == MAX_PENDING_REFUSALS
    dropped = FakeConn()
    assert admit(a, dropped) is None  # closed at once: no CONNACK to wait for
    assert metrics.connections_refused == 1 and a.refusing == MAX_PENDING_REFUSALS
    a.released(pending[0])  # one refusal told: there is room for another
    assert admit(a, FakeConn()) is False



def test_over_limit_names_the_limit_that_refused_even_after_a_release() -> None:
    a, _ = admission({"default": {"bind": "127.0.0.1:0", "max-connections": 1}})
    first, second = FakeConn(), FakeConn()
    assert admit(a, first) is True and admit(a, second) is False
    a.released(first)  # a place frees up before the refused one sends CONNECT
    assert a.over_limit(second) == "listener default is at max-connections 1"

# -- the per-address connection rate ---------------------------------------------------------------


def test_connection_rate_per_address_burst_then_rate() -> None:
    a, metrics = admission(max_connection_rate_per_address=2, connection_burst_per_address=3)
    at = NOW
    assert [admit(a, FakeConn("10.0.0.1:1"), at) for _ in range(3)] == [True] * 3  # burst
    assert admit(a, FakeConn("10.0.0.1:2"), at) is None  # over the rate: closed at accept
    assert metrics.connections_rate_limited == 1
    # another address has a bucket of its own
    assert admit(a, FakeConn("10.0.0.2:1"), at) is True
    # 2 per second: half a second earns one more connection, and only one
    assert admit(a, FakeConn("10.0.0.1:3"), at + 0.5) is True
    assert admit(a, FakeConn("10.0.0.1:4"), at + 0.5) is None
    assert metrics.connections_rate_limited == 2
    # a rate-limited connection takes no place among the counted ones
    assert a.total == 5


def test_connection_rate_refills_to_the_burst_not_beyond() -> None:
    a, _ = admission(max_connection_rate_per_address=1, connection_burst_per_address=2)
    assert admit(a, FakeConn(), NOW) and admit(a, FakeConn(), NOW)
    later = NOW + 3600  # an hour idle: a full bucket, still only the burst
    assert [admit(a, FakeConn(), later) for _ in range(3)] == [True, True, None]


def test_connection_rate_counts_an_ipv6_64_as_one_address() -> None:
    a, _ = admission(max_connection_rate_per_address=1, connection_burst_per_address=1)
    assert admit(a, FakeConn("2001:db8:0:1::1:5000"), NOW) is True
    assert admit(a, FakeConn("2001:db8:0:1::ffff:5001"), NOW) is None  # same /64
    assert admit(a, FakeConn("2001:db8:0:2::1:5000"), NOW) is True  # another /64


def test_connection_rate_zero_is_off() -> None:
    a, metrics = admission(max_connection_rate_per_address=0)
    assert a.connection_rate is None
    assert all(admit(a, FakeConn(), NOW) for _ in range(1000))
    assert metrics.connections_rate_limited == 0


# -- failed logins ----------------------------------------------------------------------------------


def login_guard(**settings: Any) -> tuple[Admission[FakeConn], Metrics]:
    return admission(auth_failure_threshold=2, auth_failure_delay=1.0,
                     auth_failure_max_delay=4.0, **settings)


def test_connect_delay_is_0_below_the_threshold() -> None:
    a, metrics = login_guard()
    conn = FakeConn()
    assert a.connect_delay(conn, NOW) == 0.0
    a.login_failed(conn, NOW)
    assert a.connect_delay(conn, NOW) == 0.0
    assert metrics.auth_failures == 1 and metrics.auth_held == 0


def test_connect_delay_grows_after_the_threshold() -> None:
    a, metrics = login_guard()
    conn = FakeConn()
    a.login_failed(conn, NOW)
    a.login_failed(conn, NOW)  # the threshold: from now on CONNECTs wait
    assert a.connect_delay(conn, NOW) == 1.0
    a.login_failed(conn, NOW + 1.0)  # that one failed too: the delay doubles
    assert a.connect_delay(conn, NOW + 1.0) == 2.0
    a.login_failed(conn, NOW + 3.0)
    assert a.connect_delay(conn, NOW + 3.0) == 4.0  # auth_failure_max_delay
    assert metrics.auth_failures == 4 and metrics.auth_held == 3


def test_connect_delay_counts_per_address() -> None:
    a, _ = login_guard()
    bad, other = FakeConn("10.0.0.1:1"), FakeConn("10.0.0.2:1")
    a.login_failed(bad, NOW)
    a.login_failed(bad, NOW)
    assert a.connect_delay(FakeConn("10.0.0.1:2"), NOW) == 1.0  # any port of that address
    assert a.connect_delay(other, NOW) == 0.0


def test_parallel_connects_queue_one_delay_apart_then_are_refused() -> None:
    a, _ = login_guard()
    conn = FakeConn()
    a.login_failed(conn, NOW)
    a.login_failed(conn, NOW)
    waits = [a.connect_delay(conn, NOW) for _ in range(6)]
    assert waits == [1.0, 2.0, 3.0, 4.0, None, None]  # past auth_failure_max_delay: refused


def test_login_succeeded_forgives_the_address() -> None:
    a, _ = login_guard()
    conn = FakeConn()
    for _ in range(3):
        a.login_failed(conn, NOW)
    assert a.connect_delay(conn, NOW) != 0.0
    a.login_succeeded(conn)
    assert a.connect_delay(conn, NOW) == 0.0
    a.login_failed(conn, NOW)  # counting starts again
    assert a.connect_delay(conn, NOW) == 0.0


def test_login_failure_delay_off_still_counts_failures() -> None:
    a, metrics = admission(auth_failure_delay=0)
    conn = FakeConn()
    assert a.login_failures is None
    for _ in range(10):
        a.login_failed(conn, NOW)
    assert a.connect_delay(conn, NOW) == 0.0
    assert metrics.auth_failures == 10 and metrics.auth_held == 0
