"""QoS 1 / 2 outbound flow states and the packet identifier allocator [MQTT 2.3.1, 4.3]."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttbroker.protocol.constants import PacketType
from mqttbroker.protocol.flows import (
    OUT_TRANSITIONS,
    OutState,
    PacketIdAllocator,
    initial_state,
    next_state,
)

SETTINGS = settings(max_examples=200, deadline=None)

# ---- the transition table ---------------------------------------------------------------------

A_PUBACK, A_PUBREC, A_PUBCOMP, DONE = (OutState.AWAIT_PUBACK, OutState.AWAIT_PUBREC,
                                       OutState.AWAIT_PUBCOMP, OutState.DONE)
ACKS = (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBCOMP, PacketType.PUBREL)

# Every (state, packet) pair and what must happen; None: the flow does not expect it.
EXPECTED: dict[tuple[OutState, PacketType], OutState | None] = {
    # [MQTT-4.3.2-1] QoS 1: unacknowledged until the matching PUBACK
    (A_PUBACK, PacketType.PUBACK): DONE,
    (A_PUBACK, PacketType.PUBREC): None,
    (A_PUBACK, PacketType.PUBCOMP): None,
    (A_PUBACK, PacketType.PUBREL): None,
    # [MQTT-4.3.3-1] QoS 2: PUBLISH unacknowledged until PUBREC; then PUBREL until PUBCOMP
    (A_PUBREC, PacketType.PUBREC): A_PUBCOMP,
    (A_PUBREC, PacketType.PUBACK): None,
    (A_PUBREC, PacketType.PUBCOMP): None,  # PUBCOMP before PUBREC is not the flow
    (A_PUBREC, PacketType.PUBREL): None,
    (A_PUBCOMP, PacketType.PUBCOMP): DONE,
    (A_PUBCOMP, PacketType.PUBREC): A_PUBCOMP,  # a repeated PUBREC: PUBREL again
    (A_PUBCOMP, PacketType.PUBACK): None,
    (A_PUBCOMP, PacketType.PUBREL): None,
    # a finished flow expects nothing
    (DONE, PacketType.PUBACK): None,
    (DONE, PacketType.PUBREC): None,
    (DONE, PacketType.PUBCOMP): None,
    (DONE, PacketType.PUBREL): None,
}


@pytest.mark.parametrize(("state", "packet"), list(EXPECTED),
                         ids=[f"{s.name}+{p.name}" for s, p in EXPECTED])
def test_out_state_transition_table(state: OutState, packet: PacketType) -> None:
    assert next_state(state, packet) is EXPECTED[(state, packet)]


def test_out_transitions_table_has_no_other_entries() -> None:
    assert {k: v for k, v in EXPECTED.items() if v is not None} == OUT_TRANSITIONS


@pytest.mark.parametrize("packet", [p for p in PacketType if p not in ACKS])
def test_non_ack_packets_never_move_a_flow(packet: PacketType) -> None:
    for state in OutState:
        assert next_state(state, packet) is None


def test_initial_states_mqtt_4_3_2_1_and_4_3_3_1() -> None:
    assert initial_state(1) is A_PUBACK
    assert initial_state(2) is A_PUBREC


def test_done_is_reachable_only_through_the_spec_sequences() -> None:
    """QoS 1: PUBLISH -> PUBACK. QoS 2: PUBLISH -> PUBREC -> (PUBREL) -> PUBCOMP."""
    assert next_state(initial_state(1), PacketType.PUBACK) is DONE
    s = next_state(initial_state(2), PacketType.PUBREC)
    assert s is A_PUBCOMP
    assert next_state(s, PacketType.PUBCOMP) is DONE
    # every sequence of up to 3 acks that reaches DONE from QoS 2 ends in PUBCOMP after a PUBREC
    for seq in itertools.product(ACKS, repeat=3):
        state: OutState | None = initial_state(2)
        for p in seq:
            assert state is not None
            state = next_state(state, p)
            if state is None or state is DONE:
                break
        if state is DONE:
            i = seq.index(PacketType.PUBCOMP)
            assert PacketType.PUBREC in seq[:i]


# ---- packet identifiers [MQTT-2.3.1-1] [MQTT-2.3.1-2] ------------------------------------------

def test_allocator_starts_at_1_and_counts_up() -> None:
    ids = PacketIdAllocator()
    in_use: set[int] = set()
    got = [ids.allocate(in_use) for _ in range(5)]
    assert got == [1, 2, 3, 4, 5]


def test_allocator_never_returns_zero_and_wraps_at_65535() -> None:
    """[MQTT-2.3.1-1] identifiers are non-zero 16-bit; after 65535 comes 1."""
    ids = PacketIdAllocator(65534)
    assert [ids.allocate(set()) for _ in range(4)] == [65534, 65535, 1, 2]


def test_allocator_full_cycle_covers_every_id_once() -> None:
    ids = PacketIdAllocator()
    seen = [ids.allocate(set()) for _ in range(65535 * 2)]
    assert 0 not in seen
    assert seen[:65535] == list(range(1, 65536))
    assert seen[65535:] == list(range(1, 65536))


def test_allocator_skips_ids_in_use_mqtt_2_3_1_2() -> None:
    """[MQTT-2.3.1-2] a new packet gets a currently unused identifier."""
    ids = PacketIdAllocator()
    in_use = {1: "x", 2: "y", 4: "z"}
    assert ids.allocate(in_use) == 3
    assert ids.allocate(in_use) == 5


def test_allocator_skips_in_use_across_the_wrap() -> None:
    ids = PacketIdAllocator(65534)
    in_use = {65534, 65535, 1, 2}
    assert ids.allocate(in_use) == 3
    assert ids.next_id == 4


def test_allocator_with_one_free_id_finds_it() -> None:
    ids = PacketIdAllocator(10)
    in_use = set(range(1, 65536)) - {7}
    assert ids.allocate(in_use) == 7
    assert ids.next_id == 8


def test_allocator_all_in_use_raises() -> None:
    ids = PacketIdAllocator()
    with pytest.raises(RuntimeError):
        ids.allocate(set(range(1, 65536)))


def test_allocator_filling_every_id_then_freeing_one() -> None:
    ids = PacketIdAllocator()
    in_use: dict[int, None] = {}
    for _ in range(65535):
        pid = ids.allocate(in_use)
        assert 1 <= pid <= 65535 and pid not in in_use
        in_use[pid] = None
    assert len(in_use) == 65535
    with pytest.raises(RuntimeError):
        ids.allocate(in_use)
    del in_use[40000]
    assert ids.allocate(in_use) == 40000


@SETTINGS
@given(st.integers(1, 65535), st.sets(st.integers(1, 65535), max_size=300),
       st.integers(1, 50))
def test_allocator_never_returns_zero_or_in_use(start: int, in_use: set[int], n: int) -> None:
    ids = PacketIdAllocator(start)
    for _ in range(n):
        pid = ids.allocate(in_use)
        assert 1 <= pid <= 65535
        assert pid not in in_use
        assert 1 <= ids.next_id <= 65535
        in_use.add(pid)


@SETTINGS
@given(st.lists(st.booleans(), min_size=1, max_size=300))
def test_allocator_with_acks_interleaved(ops: list[bool]) -> None:
    """Allocate (True) or acknowledge the oldest (False): live ids stay unique and non-zero."""
    ids = PacketIdAllocator(65500)
    live: dict[int, None] = {}
    for op in ops:
        if op or not live:
            pid = ids.allocate(live)
            assert pid != 0 and pid not in live
            live[pid] = None
        else:
            del live[next(iter(live))]
