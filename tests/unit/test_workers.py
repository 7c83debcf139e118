"""workers.RestartPolicy: when a dead worker of ``serve --workers N`` starts again, and when
the supervisor gives up (tests/integration/test_operations.py runs it with real processes)."""

from __future__ import annotations

import pytest

from mqttbroker.workers import RestartPolicy


def test_a_worker_that_ran_long_enough_is_restarted_after_the_base_delay() -> None:
    policy = RestartPolicy(delay=1.0, max_delay=30.0, stable_after=30.0, give_up_after=3)
    for death in range(10):  # however often, as long as each ran stable_after first
        start = 100.0 * death
        assert policy.died(0, start, start + 30.0) == start + 31.0
        assert policy.quick_deaths(0) == 0


def test_quick_deaths_back_off_doubling_to_the_cap_then_give_up() -> None:
    policy = RestartPolicy(delay=1.0, max_delay=5.0, stable_after=30.0, give_up_after=6)
    now, waits = 0.0, []
    for _ in range(5):
        at = policy.died(0, now, now + 2.0)  # died 2 s after its start
        assert at is not None
        waits.append(at - (now + 2.0))
        now = at
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.quick_deaths(0) == 5
    assert policy.died(0, now, now + 2.0) is None  # the sixth quick death in a row
    assert policy.quick_deaths(0) == 6


def test_a_stable_run_forgives_the_quick_deaths_before_it() -> None:
    policy = RestartPolicy(delay=1.0, max_delay=30.0, stable_after=30.0, give_up_after=3)
    assert policy.died(0, 0.0, 1.0) == 2.0
    assert policy.died(0, 2.0, 3.0) == 5.0  # second quick death: 2 s
    assert policy.died(0, 5.0, 40.0) == 41.0  # ran 35 s: counted afresh
    assert policy.quick_deaths(0) == 0
    assert policy.died(0, 41.0, 42.0) == 43.0  # a quick death again: the first of a new row
    assert policy.died(0, 43.0, 44.0) == 46.0
    assert policy.died(0, 46.0, 47.0) is None  # third in a row


def test_workers_are_counted_apart() -> None:
    policy = RestartPolicy(delay=1.0, max_delay=30.0, stable_after=30.0, give_up_after=2)
    assert policy.died(0, 0.0, 1.0) == 2.0
    assert policy.died(1, 0.0, 1.0) == 2.0  # worker 1's first, not worker 0's second
    assert policy.died(1, 2.0, 3.0) is None
    assert policy.quick_deaths(0) == 1


@pytest.mark.parametrize("give_up_after", [0, 1])
def test_give_up_after_one_or_less_gives_up_at_the_first_quick_death(give_up_after: int) -> None:
    policy = RestartPolicy(give_up_after=give_up_after)
    assert policy.died(0, 0.0, 1.0) is None
