"""QoS 1 / 2 flows as data [MQTT 4.3]: states, one transition table, packet identifiers.

In-flight state is plain data (never a coroutine waiting on a future), so a session can be
saved, restored and resumed on another connection.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import IntEnum
from typing import Final

from ..errors import PacketIdsExhausted
from .constants import PacketType


class OutState(IntEnum):
    """Where an outbound (broker -> client) QoS 1/2 message stands."""

    AWAIT_PUBACK = 1  # QoS 1: PUBLISH sent
    AWAIT_PUBREC = 2  # QoS 2: PUBLISH sent
    AWAIT_PUBCOMP = 3  # QoS 2: PUBREC received, PUBREL sent
    DONE = 4


# Everything that moves an outbound flow lives here (h11 style): (state, packet) -> next state.
# A pair that is not in the table is an acknowledgement the flow does not expect.
OUT_TRANSITIONS: Final[dict[tuple[OutState, PacketType], OutState]] = {
    (OutState.AWAIT_PUBACK, PacketType.PUBACK): OutState.DONE,
    (OutState.AWAIT_PUBREC, PacketType.PUBREC): OutState.AWAIT_PUBCOMP,
    # a repeated PUBREC (after a reconnect) is answered with PUBREL again
    (OutState.AWAIT_PUBCOMP, PacketType.PUBREC): OutState.AWAIT_PUBCOMP,
    (OutState.AWAIT_PUBCOMP, PacketType.PUBCOMP): OutState.DONE,
}


def initial_state(qos: int) -> OutState:
    """The state of a QoS 1 or 2 PUBLISH just sent."""
    return OutState.AWAIT_PUBACK if qos == 1 else OutState.AWAIT_PUBREC


def next_state(state: OutState, packet: PacketType) -> OutState | None:
    """The state after ``packet`` arrives, or None when the flow does not expect it."""
    return OUT_TRANSITIONS.get((state, packet))


class PacketIdAllocator:
    """Hands out packet identifiers 1..65535 that are not in use [MQTT-2.3.1-2]."""

    __slots__ = ("next_id",)

    def __init__(self, next_id: int = 1) -> None:
        self.next_id = next_id

    def allocate(self, in_use: Collection[int]) -> int:
        """The next free identifier after the last one; raises when all 65535 are used."""
        if len(in_use) >= 65535:
            raise PacketIdsExhausted("all packet identifiers in use")
        pid = self.next_id
        while pid in in_use:
            pid = pid % 65535 + 1
        self.next_id = pid % 65535 + 1
        return pid
