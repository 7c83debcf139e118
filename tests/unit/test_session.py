"""Session state without an event loop [MQTT 4.1, 4.3, 4.4]: offer / pump / ack / resend, the
in-flight window, the bounded queue, and inbound QoS 2 exactly-once bookkeeping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttbroker.errors import ProtocolError
from mqttbroker.message import Message
from mqttbroker.metrics import Metrics
from mqttbroker.protocol.constants import PacketType, ReasonCode
from mqttbroker.protocol.flows import OutState, PacketIdAllocator
from mqttbroker.session import AckResult, Outbound, Queued, Session

SETTINGS = settings(max_examples=200, deadline=None)
NOW = 100.0  # the clock expiry is read on (these messages have no expiry)

PUBACK, PUBREC, PUBCOMP = PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBCOMP


def msg(n: int, qos: int = 1) -> Message:
    return Message(f"t/{n}", f"m{n}".encode(), qos)


def names(items: list[Outbound] | list[Queued] | list[Outbound | Queued]) -> list[str]:
    return [i.message.topic for i in items]


def new(**kw: object) -> Session:
    return Session("client", Session.NEVER, **kw)  # type: ignore[arg-type]


# ---- offer --------------------------------------------------------------------------------------

def test_offer_qos0_online_is_for_the_caller_to_send() -> None:
    s = new()
    assert s.offer(msg(1, 0), 0, False, online=True) is None
    assert not s.queue and not s.inflight


def test_offer_qos1_online_starts_a_flow_mqtt_4_3_2_1() -> None:
    s = new()
    out = s.offer(msg(1), 1, False, online=True)
    assert isinstance(out, Outbound)
    assert (out.qos, out.retain, out.state, out.packet_id) == (1, False, OutState.AWAIT_PUBACK, 1)
    assert s.inflight == {1: out}


def test_offer_qos2_online_starts_a_flow_mqtt_4_3_3_1() -> None:
    s = new()
    out = s.offer(msg(1, 2), 2, True, online=True)
    assert out is not None and out.state is OutState.AWAIT_PUBREC and out.retain is True


def test_offer_assigns_unused_packet_ids_mqtt_2_3_1_2() -> None:
    s = new(max_inflight=100)
    outs = [s.offer(msg(i), 1 + i % 2, False, online=True) for i in range(50)]
    pids = [o.packet_id for o in outs if o is not None]
    assert len(pids) == 50 and len(set(pids)) == 50 and 0 not in pids


def test_offer_qos0_offline_not_queued_by_default() -> None:
    """QoS 0 for an absent client MAY be stored [MQTT 3.1.2.4]; by default it is not."""
    s = new()
    assert s.offer(msg(1, 0), 0, False, online=False) is None
    assert not s.queue and s.dropped == 0


def test_offer_qos0_offline_queued_with_queue_qos0() -> None:
    s = new(queue_qos0=True)
    assert s.offer(msg(1, 0), 0, False, online=False) is None
    assert list(s.queue) == [Queued(s.queue[0].message, 0, False)]


@pytest.mark.parametrize("qos", [1, 2])
def test_offer_qos12_offline_is_queued_mqtt_3_1_2_5(qos: int) -> None:
    """[MQTT-3.1.2-5] QoS 1 and 2 messages for a disconnected persistent session are stored."""
    s = new()
    assert s.offer(msg(1, qos), qos, True, online=False) is None
    assert not s.inflight
    assert [(q.message.topic, q.qos, q.retain) for q in s.queue] == [("t/1", qos, True)]


# ---- window --------------------------------------------------------------------------------------

def test_window_max_inflight_respected() -> None:
    s = new(max_inflight=3)
    outs = [s.offer(msg(i), 1, False, online=True) for i in range(5)]
    assert [o is not None for o in outs] == [True, True, True, False, False]
    assert len(s.inflight) == 3
    assert names(list(s.queue)) == ["t/3", "t/4"]


def test_window_queue_non_empty_keeps_order_even_with_free_slot() -> None:
    """Once messages wait, a new one goes behind them [MQTT-4.6.0-5]: no overtaking."""
    s = new(max_inflight=1)
    first = s.offer(msg(0), 1, False, online=True)
    assert first is not None
    assert s.offer(msg(1), 1, False, online=True) is None
    assert s.ack(first.packet_id, PUBACK) == AckResult(True, False, True)
    # a slot is free but t/1 waits: t/2 must not overtake it
    assert s.offer(msg(2), 1, False, online=True) is None
    assert names(s.pump(NOW)) == ["t/1"]
    assert names(list(s.queue)) == ["t/2"]


def test_pump_fills_free_slots_in_order() -> None:
    s = new(max_inflight=2)
    for i in range(6):
        s.offer(msg(i), 1, False, online=False)
    assert names(s.pump(NOW)) == ["t/0", "t/1"]
    assert s.pump(NOW) == []
    pids = list(s.inflight)
    s.ack(pids[0], PUBACK)
    assert names(s.pump(NOW)) == ["t/2"]
    s.ack(pids[1], PUBACK)
    assert names(s.pump(NOW)) == ["t/3"]
    assert len(s.inflight) == 2 and names(list(s.queue)) == ["t/4", "t/5"]


def test_pump_returns_queued_qos0_as_queued_without_state() -> None:
    s = new(max_inflight=5, queue_qos0=True)
    s.offer(msg(0, 0), 0, False, online=False)
    s.offer(msg(1), 1, True, online=False)
    s.offer(msg(2, 0), 0, True, online=False)
    items = s.pump(NOW)
    assert [type(i) for i in items] == [Queued, Outbound, Queued]
    assert names(items) == ["t/0", "t/1", "t/2"]
    assert len(s.inflight) == 1
    assert isinstance(items[2], Queued) and items[2].retain is True


def test_online_qos0_does_not_overtake_queued_qos0_same_topic_mqtt_4_6_0_5() -> None:
    """[MQTT-4.6.0-5] PUBLISH packets for the same topic and QoS go out in the order received.

    With ``queue_qos0`` a QoS 0 message queued while the client was away can still be waiting
    after reconnect (pump stops when the window is full, even with a QoS 0 at the head). A new
    QoS 0 message on the same topic must not be sent before it. The caller is modelled as
    client.py uses the session: what pump() returns is sent in order; an online QoS 0 offer
    that the session did not keep is sent at once.
    """
    s = new(max_inflight=1, queue_qos0=True)
    sent: list[bytes] = []

    def pump() -> None:
        sent.extend(i.message.payload for i in s.pump(NOW))

    s.offer(Message("t/q1", b"q1", 1), 1, False, online=False)
    s.offer(Message("t/x", b"old", 0), 0, False, online=False)
    pump()  # reconnect
    m = Message("t/x", b"new", 0)
    if s.offer(m, 0, False, online=True) is None and all(q.message is not m for q in s.queue):
        sent.append(m.payload)  # handed back: the caller sends it now
    while s.inflight or s.queue:  # the client acknowledges everything
        for pid in list(s.inflight):
            s.ack(pid, PUBACK)
        pump()
    order = [p for p in sent if p in (b"old", b"new")]
    assert order == [b"old", b"new"]


def test_pump_with_no_free_slot_returns_nothing() -> None:
    s = new(max_inflight=1)
    s.offer(msg(0), 1, False, online=True)
    s.offer(msg(1), 1, False, online=True)
    assert s.pump(NOW) == []
    assert len(s.queue) == 1


# ---- queue bound ---------------------------------------------------------------------------------

def test_queue_bound_drop_new() -> None:
    metrics = Metrics()
    s = new(max_inflight=0, max_queued=3, metrics=metrics)
    for i in range(5):
        s.offer(msg(i), 1, False, online=False)
    assert names(list(s.queue)) == ["t/0", "t/1", "t/2"]
    assert s.dropped == 2
    assert metrics.publish_dropped == 2


def test_queue_bound_drop_oldest() -> None:
    metrics = Metrics()
    s = new(max_inflight=0, max_queued=3, drop_oldest=True, metrics=metrics)
    for i in range(5):
        s.offer(msg(i), 1, False, online=False)
    assert names(list(s.queue)) == ["t/2", "t/3", "t/4"]
    assert s.dropped == 2
    assert metrics.publish_dropped == 2


@pytest.mark.parametrize("drop_oldest", [False, True])
def test_queue_bound_zero_keeps_nothing(drop_oldest: bool) -> None:
    s = new(max_inflight=0, max_queued=0, drop_oldest=drop_oldest)
    for i in range(3):
        s.offer(msg(i), 1, False, online=False)
    assert not s.queue and s.dropped == 3


def test_queue_bound_applies_online_when_window_full() -> None:
    s = new(max_inflight=1, max_queued=2)
    for i in range(5):
        s.offer(msg(i), 2, False, online=True)
    assert len(s.inflight) == 1 and names(list(s.queue)) == ["t/1", "t/2"] and s.dropped == 2


def test_queue_qos0_counts_against_the_bound() -> None:
    s = new(max_queued=2, queue_qos0=True)
    for i in range(3):
        s.offer(msg(i, 0), 0, False, online=False)
    assert len(s.queue) == 2 and s.dropped == 1


def test_dropped_without_metrics() -> None:
    s = new(max_inflight=0, max_queued=1)
    s.offer(msg(0), 1, False, online=False)
    s.offer(msg(1), 1, False, online=False)
    assert s.dropped == 1


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=60),
       st.integers(0, 5), st.integers(0, 8), st.booleans(), st.booleans())
def test_queue_and_window_bounds_hold(offers: list[tuple[int, bool]], max_inflight: int,
                                      max_queued: int, drop_oldest: bool,
                                      queue_qos0: bool) -> None:
    """Whatever arrives, the window and the queue never exceed their bounds, and every message
    is accounted for: in flight, queued, handed back (QoS 0 online) or counted as dropped."""
    s = new(max_inflight=max_inflight, max_queued=max_queued, drop_oldest=drop_oldest,
            queue_qos0=queue_qos0)
    handed_back = 0
    ignored = 0
    for i, (qos, online) in enumerate(offers):
        queue_was_empty = not s.queue
        out = s.offer(msg(i, qos), qos, False, online)
        if online and qos == 0 and queue_was_empty:
            handed_back += 1  # sent directly; behind a queue it waits its turn [MQTT-4.6.0-5]
        elif not online and qos == 0 and not queue_qos0:
            ignored += 1
        assert len(s.inflight) <= max_inflight
        assert len(s.queue) <= max_queued
        if out is not None:
            assert out.packet_id in s.inflight
    total = len(s.inflight) + len(s.queue) + s.dropped + handed_back + ignored
    assert total == len(offers)
    assert len(set(s.inflight)) == len(s.inflight) and 0 not in s.inflight


# ---- ack -----------------------------------------------------------------------------------------

def test_ack_qos1_puback_frees_the_slot() -> None:
    s = new()
    out = s.offer(msg(1), 1, False, online=True)
    assert out is not None
    assert s.ack(out.packet_id, PUBACK) == AckResult(known=True, send_pubrel=False, freed=True)
    assert s.inflight == {}


def test_ack_qos2_pubrec_pubrel_pubcomp_mqtt_4_3_3_1() -> None:
    """[MQTT-4.3.3-1] PUBREC -> send PUBREL (state AWAIT_PUBCOMP) -> PUBCOMP frees the id."""
    s = new()
    out = s.offer(msg(1, 2), 2, False, online=True)
    assert out is not None
    pid = out.packet_id
    assert s.ack(pid, PUBREC) == AckResult(True, True, False)
    assert s.inflight[pid].state is OutState.AWAIT_PUBCOMP
    # a repeated PUBREC (after a reconnect) is answered with PUBREL again
    assert s.ack(pid, PUBREC) == AckResult(True, True, False)
    assert s.ack(pid, PUBCOMP) == AckResult(True, False, True)
    assert pid not in s.inflight
    # the identifier is free for reuse only now [MQTT-2.3.1-3]
    assert s.ack(pid, PUBCOMP) == AckResult(False, False, False)


def test_ack_unknown_packet_id() -> None:
    s = new()
    assert s.ack(42, PUBACK) == AckResult(False, False, False)
    assert s.ack(42, PUBREC) == AckResult(False, False, False)
    assert s.ack(42, PUBCOMP) == AckResult(False, False, False)


@pytest.mark.parametrize(("qos", "packet"), [(1, PUBREC), (1, PUBCOMP), (2, PUBACK),
                                             (2, PUBCOMP)])
def test_ack_of_the_wrong_kind_is_a_protocol_error(qos: int, packet: PacketType) -> None:
    """[MQTT-4.8.0-1] (3.1.1) / Protocol Error (5.0): an acknowledgement whose kind contradicts
    the flow of an id in flight raises (the connection closes) and changes nothing."""
    s = new()
    out = s.offer(msg(1, qos), qos, False, online=True)
    assert out is not None
    before = out.state
    with pytest.raises(ProtocolError) as err:
        s.ack(out.packet_id, packet)
    assert err.value.code == ReasonCode.PROTOCOL_ERROR
    assert s.inflight[out.packet_id] is out and out.state is before


def test_ack_pubcomp_before_pubrec_is_a_protocol_error() -> None:
    s = new()
    out = s.offer(msg(1, 2), 2, False, online=True)
    assert out is not None
    with pytest.raises(ProtocolError):
        s.ack(out.packet_id, PUBCOMP)
    assert s.ack(out.packet_id, PUBREC).send_pubrel is True
    with pytest.raises(ProtocolError):  # PUBACK instead of PUBCOMP after the PUBREL
        s.ack(out.packet_id, PUBACK)
    assert s.ack(out.packet_id, PUBREC).send_pubrel is True  # a repeated PUBREC is fine
    assert s.ack(out.packet_id, PUBCOMP).freed is True


def test_refused_pubrec_ends_the_flow_mqtt_4_3_3() -> None:
    s = new()
    out = s.offer(msg(1, 2), 2, False, online=True)
    assert out is not None
    assert s.ack(out.packet_id, PUBREC, refused=True).freed is True
    assert out.packet_id not in s.inflight


def test_packet_id_not_reused_while_in_flight() -> None:
    s = new(max_inflight=3)
    a = s.offer(msg(0), 1, False, online=True)
    b = s.offer(msg(1), 2, False, online=True)
    assert a is not None and b is not None
    s.ack(a.packet_id, PUBACK)
    c = s.offer(msg(2), 1, False, online=True)
    assert c is not None and c.packet_id not in (b.packet_id,)
    assert len({o.packet_id for o in s.inflight.values()}) == len(s.inflight)


def test_packet_ids_wrap_and_skip_in_flight() -> None:
    s = new(max_inflight=2)
    s.ids = PacketIdAllocator(65535)
    first = s.offer(msg(0), 1, False, online=True)
    second = s.offer(msg(1), 1, False, online=True)
    assert first is not None and second is not None
    assert (first.packet_id, second.packet_id) == (65535, 1)
    s.ack(1, PUBACK)
    s.ids.next_id = 65535  # force a collision with the one still in flight
    third = s.offer(msg(2), 1, False, online=True)
    assert third is not None and third.packet_id == 1


# ---- resend [MQTT-4.4.0-1] -----------------------------------------------------------------------

def test_resend_in_original_order_with_states_mqtt_4_4_0_1() -> None:
    """Unacknowledged PUBLISH and PUBREL are resent with their original identifiers, in the
    order the PUBLISH packets were first sent [MQTT-4.6.0-1]."""
    s = new(max_inflight=10)
    outs = [s.offer(msg(i, 1 + i % 2), 1 + i % 2, False, online=True) for i in range(6)]
    assert all(o is not None for o in outs)
    pids = [o.packet_id for o in outs if o is not None]
    s.ack(pids[0], PUBACK)  # QoS 1 done
    s.ack(pids[1], PUBREC)  # QoS 2 now waits for PUBCOMP: PUBREL is resent, not PUBLISH
    s.ack(pids[3], PUBREC)
    s.ack(pids[3], PUBCOMP)  # done
    again = s.resend()
    assert [o.packet_id for o in again] == [pids[1], pids[2], pids[4], pids[5]]
    assert names(again) == ["t/1", "t/2", "t/4", "t/5"]
    assert [o.state for o in again] == [OutState.AWAIT_PUBCOMP, OutState.AWAIT_PUBACK,
                                        OutState.AWAIT_PUBACK, OutState.AWAIT_PUBREC]


def test_resend_keeps_order_across_packet_id_wrap() -> None:
    s = new(max_inflight=5)
    s.ids = PacketIdAllocator(65534)
    outs = [s.offer(msg(i), 1, False, online=True) for i in range(4)]
    assert [o.packet_id for o in outs if o is not None] == [65534, 65535, 1, 2]
    assert names(s.resend()) == ["t/0", "t/1", "t/2", "t/3"]


def test_resend_does_not_consume_state() -> None:
    s = new()
    s.offer(msg(0), 1, False, online=True)
    assert len(s.resend()) == 1 and len(s.resend()) == 1 and len(s.inflight) == 1


def test_offline_then_reconnect_pump_delivers_queue_in_order() -> None:
    s = new(max_inflight=2)
    for i in range(4):
        s.offer(msg(i, 1 + i % 2), 1 + i % 2, False, online=False)
    assert s.resend() == []
    started = s.pump(NOW)
    assert names(started) == ["t/0", "t/1"]
    assert names(s.resend()) == ["t/0", "t/1"]


# ---- inbound QoS 2 [MQTT-4.3.3-2] --------------------------------------------------------------

def test_receive_qos2_exactly_once_mqtt_4_3_3_2() -> None:
    """Until PUBREL, a resent PUBLISH with the same id must not be delivered again."""
    s = new()
    assert s.receive_qos2(7) is True
    assert s.receive_qos2(7) is False
    assert s.receive_qos2(7) is False
    assert s.receive_qos2(8) is True
    assert s.inbound_qos2 == {7, 8}


def test_release_qos2_then_same_id_is_a_new_message_mqtt_4_3_3_2() -> None:
    """After PUBREL, a PUBLISH with the same id is a new publication."""
    s = new()
    assert s.receive_qos2(7) is True
    assert s.release_qos2(7) is True
    assert s.inbound_qos2 == set()
    assert s.receive_qos2(7) is True


def test_release_qos2_unknown_id() -> None:
    """A resent PUBREL for an id already released is not known (PUBCOMP is still sent)."""
    s = new()
    assert s.release_qos2(9) is False
    s.receive_qos2(9)
    assert s.release_qos2(9) is True
    assert s.release_qos2(9) is False


def test_inbound_and_outbound_ids_are_independent() -> None:
    """Client- and server-chosen identifiers live in separate spaces."""
    s = new()
    assert s.receive_qos2(1) is True
    out = s.offer(msg(0, 2), 2, False, online=True)
    assert out is not None and out.packet_id == 1
    assert s.ack(1, PUBREC).send_pubrel is True
    assert s.release_qos2(1) is True
    assert 1 in s.inflight


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["pub", "rel"]), st.integers(1, 5)), max_size=60))
def test_receive_release_qos2_model(ops: list[tuple[str, int]]) -> None:
    """Against a model: each id delivers once per PUBLISH..PUBREL cycle."""
    s = new()
    pending: set[int] = set()
    for op, pid in ops:
        if op == "pub":
            assert s.receive_qos2(pid) is (pid not in pending)
            pending.add(pid)
        else:
            assert s.release_qos2(pid) is (pid in pending)
            pending.discard(pid)
    assert s.inbound_qos2 == pending


@SETTINGS
@given(st.lists(st.one_of(
    st.tuples(st.just("offer"), st.integers(1, 2), st.booleans()),
    st.tuples(st.just("ack"), st.integers(0, 9), st.sampled_from([PUBACK, PUBREC, PUBCOMP])),
    st.tuples(st.just("pump"), st.just(0), st.just(False)),
), max_size=80))
def test_session_random_ops_invariants(ops: list[tuple[str, int, object]]) -> None:
    """Random offers / acks / pumps: window bound, unique non-zero ids, queue FIFO preserved."""
    s = new(max_inflight=3, max_queued=100)
    sent_order: list[str] = []
    n = 0
    for kind, a, b in ops:
        if kind == "offer":
            out = s.offer(msg(n, a), a, False, bool(b))
            n += 1
            if out is not None:
                sent_order.append(out.message.topic)
        elif kind == "ack":
            pids = list(s.inflight)
            if pids:
                pid = pids[a % len(pids)]
                out = s.inflight[pid]
                before = out.state
                try:
                    s.ack(pid, b)  # type: ignore[arg-type]
                except ProtocolError:  # the wrong kind for its flow: nothing changes
                    assert s.inflight[pid] is out and out.state is before
        else:
            sent_order += names(s.pump(NOW))
        assert len(s.inflight) <= 3
        assert 0 not in s.inflight
        for pid, out in s.inflight.items():
            assert out.packet_id == pid
    # messages start their flows in the order they were offered
    assert sent_order == sorted(sent_order, key=lambda t: int(t.split("/")[1]))


# ---- shared subscriptions: the count, and taking queued work (core/delivery.py steal) ----------

def test_subscriptions_count_the_shared_ones() -> None:
    """``subscriptions.shared`` follows the ``$share/...`` filters as they are added, replaced
    and removed (the connection reads it after every acknowledgement instead of scanning)."""
    from mqttbroker.protocol.packets import Subscription

    s = new()
    subs = s.own_subscriptions()
    assert s.subscriptions is subs
    subs["a/#"] = Subscription("a/#", 1)
    subs["$share/g/a/#"] = Subscription("$share/g/a/#", 1)
    subs["$share/g/a/#"] = Subscription("$share/g/a/#", 0)  # a repeat replaces
    subs["$share/h/b"] = Subscription("$share/h/b", 1)
    assert subs.shared == 2
    assert subs.pop("$share/h/b", None) is not None and subs.shared == 1
    assert subs.pop("$share/h/b", None) is None and subs.shared == 1  # not there: unchanged
    assert subs.pop("a/#", None) is not None and subs.shared == 1
    del subs["$share/g/a/#"]
    assert subs.shared == 0 and not subs


def test_take_queued_oldest_of_the_share_accepted_never_in_flight_mqtt_4_8_2_5() -> None:
    """take_queued: the oldest queued message of that share that ``accept`` takes; other
    shares, plain messages and refused ones stay in order; what is in flight is never taken
    (QoS 2 once sent stays with its member [MQTT-4.8.2-5]); queued_bytes follows."""
    s = new(max_inflight=1)
    assert s.offer(msg(0, 2), 2, False, True, (), "$share/g/t") is not None  # in flight
    s.offer(msg(1), 1, False, True, (), None)
    s.offer(msg(2), 1, False, True, (), "$share/other/t")
    s.offer(msg(3), 1, False, True, (), "$share/g/t")
    s.offer(msg(4), 1, False, True, (), "$share/g/t")
    before = s.queued_bytes
    item = s.take_queued("$share/g/t", lambda m: m.topic != "t/3", NOW)
    assert item is not None and item.message.topic == "t/4"
    assert names(list(s.queue)) == ["t/1", "t/2", "t/3"]
    assert s.queued_bytes == before - len(b"m4")
    item = s.take_queued("$share/g/t", lambda m: True, NOW)
    assert item is not None and item.message.topic == "t/3"
    assert s.take_queued("$share/g/t", lambda m: True, NOW) is None
    assert names(list(s.inflight.values())) == ["t/0"]


def test_take_queued_drops_expired_messages_on_the_way_mqtt_3_3_2_5() -> None:
    """An expired message of the share met before the one taken is dropped, not taken
    [MQTT-3.3.2-5]."""
    s = new(max_inflight=0)
    old = Message("t/old", b"x", 1, expires_at=NOW - 1)
    s.offer(old, 1, False, True, (), "$share/g/t")
    s.offer(msg(1), 1, False, True, (), "$share/g/t")
    item = s.take_queued("$share/g/t", lambda m: True, NOW)
    assert item is not None and item.message.topic == "t/1"
    assert not s.queue and s.queued_bytes == 0


class _Rows:
    """A store that keeps the rows (client id -> seqs) the session tells it about."""

    def __init__(self) -> None:
        self.rows: dict[int, str] = {}
        self._seq = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def add_item(self, client_id: str, seq: int, *rest: object) -> None:
        assert seq not in self.rows
        self.rows[seq] = client_id

    def update_item(self, client_id: str, seq: int, *rest: object) -> None:
        assert self.rows[seq] == client_id

    def delete_item(self, seq: int, message: Message) -> None:
        del self.rows[seq]


def test_take_queued_moves_the_stored_row() -> None:
    """With a store: the taken message's row is deleted from the session it leaves, and the
    taker stores it as a new row of its own when it starts it (a restart finds it once)."""
    rows = _Rows()
    victim, thief = Session("victim", 60, max_inflight=0), Session("thief", 60)
    victim.store = thief.store = rows  # type: ignore[assignment]
    victim.offer(msg(1), 1, False, True, (), "$share/g/t")
    assert list(rows.rows.values()) == ["victim"]
    item = victim.take_queued("$share/g/t", lambda m: True, NOW)
    assert item is not None and rows.rows == {}
    out = thief.offer(item.message, 1, False, True, (), "$share/g/t")
    assert out is not None and list(rows.rows.values()) == ["thief"]


def test_take_queued_looks_only_so_deep_into_a_queue() -> None:
    """An acknowledgement costs bounded work: take_queued looks at the first STEAL_SCAN
    queued messages only; a message of the share deeper than that stays where it is."""
    from mqttbroker.session import STEAL_SCAN

    s = new(max_inflight=0, max_queued=STEAL_SCAN + 10)
    for i in range(STEAL_SCAN - 1):
        s.offer(msg(i), 1, False, True, (), None)
    s.offer(msg(STEAL_SCAN - 1), 1, False, True, (), "$share/g/t")  # the last one looked at
    s.offer(msg(STEAL_SCAN), 1, False, True, (), None)
    s.offer(msg(STEAL_SCAN + 1), 1, False, True, (), "$share/g/t")  # then one too deep
    item = s.take_queued("$share/g/t", lambda m: True, NOW)
    assert item is not None and item.message.topic == f"t/{STEAL_SCAN - 1}"
    assert s.take_queued("$share/g/t", lambda m: True, NOW) is None  # (now at STEAL_SCAN)
    assert len(s.queue) == STEAL_SCAN + 1


def test_an_idle_session_shares_its_empty_dicts_and_refuses_filling_them() -> None:
    """A new session holds no dict of its own for subscriptions or messages in flight (64
    bytes each per idle device); filling the shared empty one by mistake is refused, and the
    first message in flight or subscription gives the session its own."""
    from mqttbroker.protocol.packets import Subscription

    a, b = new(), new()
    assert a.subscriptions is b.subscriptions and a.inflight is b.inflight and a.ids is None
    with pytest.raises(TypeError):
        a.subscriptions["x"] = Subscription("x", 1)
    with pytest.raises(TypeError):
        a.inflight[1] = None  # type: ignore[assignment]
    assert not b.subscriptions and not b.inflight  # nothing leaked into the shared ones
    out = a.offer(msg(0), 1, False, online=True)
    assert out is not None and a.inflight == {out.packet_id: out}
    assert b.inflight == {} and a.inflight is not b.inflight and a.ids is not None
    a.own_subscriptions()["x"] = Subscription("x", 1)
    assert list(a.subscriptions) == ["x"] and not b.subscriptions
