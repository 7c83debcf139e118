"""MQTT-SN client sessions at the gateway over real UDP (raw datagrams; paho-mqtt on the MQTT
side): wills (the exchange, keep-alive expiry at 1.5x, none on a clean DISCONNECT, updates),
sleeping clients (buffering, PINGREQ wake-ups delivering each message once, CONNECT from
asleep, waking from another address, sleep expiry), retransmission (DUP after Tretry, lost
after Nretry), QoS 2 exactly once both ways, persistent sessions, and takeover of a client id.

Timer behaviours need time to pass: keep-alive and sleep durations of 1 s, Tretry 0.3 s;
everything else waits for a datagram or polls, bounded. Helpers: test_mqttsn_interop.py.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest

from mqttbroker.protocol.mqttsn import messages as sn
from tests.conftest import BrokerThread

from .helpers import Clients, Msg, connected_ids, unique_id, wait_until
from .test_mqttsn_interop import (
    RC,
    MakeBroker,
    SnRaw,
    queued_for,
    seen,
    sn_config,
    watch,
)

pytestmark = pytest.mark.timeout(60)

RETRY = 0.3  # Tretry of the `fast` broker
SLACK = 0.1  # how much earlier than its due time a timer may seem to fire, seen from here


@pytest.fixture
def bt(make_broker_thread: MakeBroker) -> BrokerThread:
    return make_broker_thread(sn_config())


@pytest.fixture
def fast(make_broker_thread: MakeBroker) -> BrokerThread:
    """A gateway that resends after 0.3 s and gives a client up after 2 resends."""
    return make_broker_thread(sn_config(retry_interval=RETRY, max_retries=2))


def let_pass(until: float) -> None:
    """Wait for a timer the gateway runs (keep-alive, sleep) to be due: time must pass."""
    left = until - time.monotonic()
    if left > 0:
        time.sleep(left)


def gone(bt: BrokerThread, cid: str) -> None:
    wait_until(lambda: cid not in connected_ids(bt), what=f"{cid} gone from the broker")


# -- wills ------------------------------------------------------------------------------------


def test_will_exchange_then_will_published_when_keepalive_expires(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """CONNECT with the Will flag: WILLTOPICREQ, WILLTOPIC, WILLMSGREQ, WILLMSG, CONNACK.
    PINGREQs every 0.5 s keep a 1 s keep-alive going past 1.5 s; then silence: the will is
    published at 1.5 x 1 s after the last PINGREQ, the broker drops the client, and the
    gateway answers its next PUBLISH with DISCONNECT."""
    w = watch(paho_for(bt), "will/#")
    s = sns(bt)
    cid = unique_id("will-")
    s.send(sn.Connect(cid, keep_alive=1, clean_session=True, will=True))
    assert s.recv() == sn.WillTopicReq()
    s.send(sn.WillTopic("will/ka", qos=1, retain=False))
    assert s.recv() == sn.WillMsgReq()
    s.send(sn.WillMsg(b"lost"))
    assert s.recv() == sn.Connack(RC.ACCEPTED)
    for _ in range(4):  # 2 s, past 1.5 x the keep-alive
        time.sleep(0.5)  # within the 1 s keep-alive
        s.send(sn.Pingreq(None))
        assert s.recv() == sn.Pingresp()
    last_word = time.monotonic()
    assert cid in connected_ids(bt) and len(w.messages) == 0
    will = w.messages.wait_for(1)[0]
    waited = time.monotonic() - last_word
    assert will == Msg("will/ka", b"lost", 1, False)
    assert waited >= 1.5 - SLACK, f"will {waited:.2f}s after the last PINGREQ"
    gone(bt, cid)
    s.send(sn.Publish(1, b"late", 1, msg_id=9, topic_id_type=sn.TopicIdType.PREDEFINED))
    assert s.recv() == sn.Disconnect(None)  # not connected any more: reconnect


def test_no_will_on_clean_disconnect(bt: BrokerThread,
                                     paho_for: Callable[[BrokerThread], Clients],
                                     sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A client with a will and a 1 s keep-alive sends DISCONNECT: answered DISCONNECT, the
    broker drops it, and no will comes, neither then nor after 1.5 x the keep-alive."""
    clients = paho_for(bt)
    w = watch(clients, "will/#")
    s = sns(bt)
    cid = unique_id("clean-")
    s.connect(cid, keep_alive=1, will=("will/clean", b"should not", 1, False))
    connected_at = time.monotonic()
    s.send(sn.Disconnect(None))
    assert s.recv() == sn.Disconnect(None)
    gone(bt, cid)
    let_pass(connected_at + 1.5 + 0.5)
    clients.paho(unique_id("p-")).publish("will/clean", b"sentinel", 1)
    assert seen(w.messages.wait_for(1)) == [("will/clean", b"sentinel", 1)]


def test_will_updates_are_answered_and_used(bt: BrokerThread,
                                            paho_for: Callable[[BrokerThread], Clients],
                                            sns: Callable[[BrokerThread], SnRaw]) -> None:
    """WILLTOPICUPD (new topic, QoS 1, retain) and WILLMSGUPD are answered WILLTOPICRESP /
    WILLMSGRESP 0x00 and the updated will is the one published at keep-alive expiry (retained:
    a later subscriber gets it). A client that connected without a will gets one from
    WILLMSGUPD then WILLTOPICUPD. An empty WILLTOPICUPD deletes the will."""
    clients = paho_for(bt)
    w = watch(clients, "will/#")
    upd, added, deleted = sns(bt), sns(bt), sns(bt)
    ids = [unique_id(p) for p in ("upd-", "added-", "deleted-")]
    upd.connect(ids[0], keep_alive=1, will=("will/old", b"old words", 0, False))
    upd.send(sn.WillTopicUpd("will/new", qos=1, retain=True))
    assert upd.recv() == sn.WillTopicResp(RC.ACCEPTED)
    upd.send(sn.WillMsgUpd(b"new words"))
    assert upd.recv() == sn.WillMsgResp(RC.ACCEPTED)

    added.connect(ids[1], keep_alive=1)
    added.send(sn.WillMsgUpd(b"added words"))
    assert added.recv() == sn.WillMsgResp(RC.ACCEPTED)
    added.send(sn.WillTopicUpd("will/added", qos=0, retain=False))
    assert added.recv() == sn.WillTopicResp(RC.ACCEPTED)

    deleted.connect(ids[2], keep_alive=1, will=("will/deleted", b"never", 1, False))
    deleted.send(sn.WillTopicUpd(""))
    assert deleted.recv() == sn.WillTopicResp(RC.ACCEPTED)

    for cid in ids:  # all three expire
        gone(bt, cid)
    clients.paho(unique_id("p-")).publish("will/sentinel", b"end", 1)
    got = w.messages.wait_until(lambda ms: any(m.topic == "will/sentinel" for m in ms))
    assert sorted(seen(got)) == [("will/added", b"added words", 0),
                                 ("will/new", b"new words", 1), ("will/sentinel", b"end", 1)]
    late = clients.paho(unique_id("late-"))
    late.subscribe(("will/new", 1))
    assert late.messages.wait_for(1)[0] == Msg("will/new", b"new words", 1, True)


def test_a_will_updated_to_a_topic_the_client_may_not_publish_is_dropped(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """WILLTOPICUPD is screened as a will at CONNECT is: a ``$`` topic is the broker's, so
    the will goes (as at CONNECT, the client is not told: WILLTOPICRESP 0x00), and nothing
    is published at keep-alive expiry, neither the old will nor the new one."""
    clients = paho_for(bt)
    w = watch(clients, "#")
    evil = watch(clients, "$evil/#")
    s = sns(bt)
    cid = unique_id("evil-")
    s.connect(cid, keep_alive=1, will=("will/ok", b"fine", 0, False))
    s.send(sn.WillTopicUpd("$evil/x", qos=0, retain=False))
    assert s.recv() == sn.WillTopicResp(RC.ACCEPTED)
    gone(bt, cid)
    clients.paho(unique_id("p-")).publish("will/sentinel", b"end", 1)
    got = w.messages.wait_until(lambda ms: any(m.topic == "will/sentinel" for m in ms))
    assert [m.topic for m in got] == ["will/sentinel"]
    assert evil.messages.messages == []


# -- sleeping clients -------------------------------------------------------------------------


def test_sleeping_client_gets_its_buffer_once_per_pingreq(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """DISCONNECT with a Duration: asleep. paho publishes; nothing is sent, the gateway holds
    the messages. PINGREQ with the client id: each is delivered once (REGISTER first where
    needed), then PINGRESP. A second PINGREQ delivers nothing again; a third, only what came
    since. The MQTT connection stays while asleep."""
    s = sns(bt)
    cid = unique_id("sleep-")
    s.connect(cid, keep_alive=60)
    s.subscribe("sl/#", 1)
    s.send(sn.Disconnect(30))
    assert s.recv() == sn.Disconnect(None)
    p = paho_for(bt).paho(unique_id("p-"))
    p.publish("sl/a", b"1", 1)
    p.publish("sl/b", b"2", 0)
    p.publish("sl/a", b"3", 2)
    wait_until(lambda: queued_for(bt, cid) == 3, what="3 messages buffered")
    assert s.pending() is None, "sent to a sleeping client"
    assert cid in connected_ids(bt)

    s.send(sn.Pingreq(cid))
    registers: list[sn.Register] = []
    got = [s.delivery(registers=registers) for _ in range(3)]
    assert [(g.topic, g.data, g.publish.qos) for g in got] == [
        ("sl/a", b"1", 1), ("sl/b", b"2", 0), ("sl/a", b"3", 1)]
    assert [r.topic_name for r in registers] == ["sl/a", "sl/b"]
    assert s.recv() == sn.Pingresp()

    s.send(sn.Pingreq(cid))
    assert s.recv() == sn.Pingresp()  # nothing is delivered twice

    p.publish("sl/b", b"4", 1)
    wait_until(lambda: queued_for(bt, cid) == 1, what="1 message buffered")
    s.send(sn.Pingreq(cid))
    g = s.delivery()  # the id of sl/b survived the sleep: no REGISTER
    assert (g.topic, g.data) == ("sl/b", b"4")
    assert s.recv() == sn.Pingresp()
    s.send(sn.Disconnect(None))
    assert s.recv() == sn.Disconnect(None)
    gone(bt, cid)


def test_pingreq_delivers_everything_buffered_beyond_the_inflight_window(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """25 QoS 1 messages for a sleeping client, more than the broker's 20 in flight per
    client (``mqtt.max_inflight_messages``' default): one PINGREQ gets all 25, in order,
    then PINGRESP ("no more buffered messages" [MQTT-SN 6.14]) -- not 20 and a PINGRESP
    while 5 still wait."""
    s = sns(bt)
    cid = unique_id("many-")
    s.connect(cid)
    s.subscribe("mny/x", 1)
    s.send(sn.Disconnect(30))
    assert s.recv() == sn.Disconnect(None)
    p = paho_for(bt).paho(unique_id("p-"))
    for i in range(25):
        p.publish("mny/x", f"{i}".encode(), 1)
    wait_until(lambda: queued_for(bt, cid) >= 20, what="the sleeper's buffer filled")
    s.send(sn.Pingreq(cid))
    got: list[bytes] = []
    while True:
        m = s.recv()
        if m == sn.Pingresp():
            break
        assert isinstance(m, sn.Publish), m
        s.ack(m)
        got.append(m.data)
    assert got == [f"{i}".encode() for i in range(25)], (
        f"PINGRESP after {len(got)} of the 25 buffered messages")


def test_delivery_in_flight_when_falling_asleep_is_resent_on_waking(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A QoS 1 PUBLISH the client had not acknowledged when it went to sleep is resent (DUP,
    same MsgId) at the wake-up, before the messages buffered meanwhile."""
    s = sns(bt)
    cid = unique_id("drowsy-")
    s.connect(cid)
    tid = s.subscribe("dz/x", 1).topic_id
    p = paho_for(bt).paho(unique_id("p-"))
    p.publish("dz/x", b"in flight", 1)
    first = s.expect(sn.Publish)
    s.send(sn.Disconnect(30))
    assert s.recv() == sn.Disconnect(None)
    p.publish("dz/x", b"while asleep", 1)
    wait_until(lambda: queued_for(bt, cid) == 2, what="2 messages held")
    s.send(sn.Pingreq(cid))
    again = s.expect(sn.Publish)
    assert again == sn.Publish(tid, b"in flight", 1, False, True, first.msg_id), again
    s.ack(again)
    nxt = s.expect(sn.Publish)
    assert (nxt.data, nxt.dup) == (b"while asleep", False)
    s.ack(nxt)
    assert s.recv() == sn.Pingresp()


def test_connect_from_asleep_delivers_the_buffer(bt: BrokerThread,
                                                 paho_for: Callable[[BrokerThread], Clients],
                                                 sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A sleeping client that CONNECTs instead of PINGREQing: CONNACK, then its buffered
    messages, and it is active (PINGREQ answered at once, new messages sent at once)."""
    s = sns(bt)
    cid = unique_id("wake-")
    s.connect(cid, keep_alive=60, clean=False)
    s.subscribe("wk/#", 1)
    s.send(sn.Disconnect(30))
    assert s.recv() == sn.Disconnect(None)
    p = paho_for(bt).paho(unique_id("p-"))
    p.publish("wk/a", b"1", 1)
    p.publish("wk/b", b"2", 1)
    wait_until(lambda: queued_for(bt, cid) == 2, what="2 messages buffered")
    s.connect(cid, keep_alive=60, clean=False)
    got = [s.delivery() for _ in range(2)]
    assert [(g.topic, g.data) for g in got] == [("wk/a", b"1"), ("wk/b", b"2")]
    s.send(sn.Pingreq(None))
    assert s.recv() == sn.Pingresp()
    p.publish("wk/a", b"active", 1)
    assert s.delivery().data == b"active"


def test_sleeping_client_wakes_from_another_address(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A sleeper whose address changed (a new socket) wakes with PINGREQ + client id: the
    buffer goes to the new address, nothing to the old one."""
    old, new = sns(bt), sns(bt)
    cid = unique_id("roam-")
    old.connect(cid)
    old.subscribe("rm/x", 1)
    old.send(sn.Disconnect(30))
    assert old.recv() == sn.Disconnect(None)
    paho_for(bt).paho(unique_id("p-")).publish("rm/x", b"roamed", 1)
    wait_until(lambda: queued_for(bt, cid) == 1, what="1 message buffered")
    new.send(sn.Pingreq(cid))
    pub = new.expect(sn.Publish)  # the id from the old SUBACK is the client's: no REGISTER
    assert pub.data == b"roamed" and pub.qos == 1
    new.ack(pub)
    assert new.recv() == sn.Pingresp()
    assert old.pending() is None


def test_sleeper_that_never_wakes_is_lost_and_its_will_published(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """Asleep for 1 s: PINGREQs (wake-ups with nothing buffered) every 0.8 s keep it; then
    no word: at 1.5 x 1 s after the last one it is lost and its will published."""
    w = watch(paho_for(bt), "will/#")
    s = sns(bt)
    cid = unique_id("nowake-")
    s.connect(cid, keep_alive=60, will=("will/sleeper", b"never woke", 1, False))
    s.send(sn.Disconnect(1))
    assert s.recv() == sn.Disconnect(None)
    for _ in range(2):
        time.sleep(0.8)  # within the 1 s sleep duration
        s.send(sn.Pingreq(cid))
        assert s.recv() == sn.Pingresp()
    assert len(w.messages) == 0 and cid in connected_ids(bt)
    last_word = time.monotonic()
    will = w.messages.wait_for(1)[0]
    waited = time.monotonic() - last_word
    assert will == Msg("will/sleeper", b"never woke", 1, False)
    assert waited >= 1.5 - SLACK, f"will {waited:.2f}s after the last PINGREQ"
    gone(bt, cid)


# -- retransmission ---------------------------------------------------------------------------


def test_unacknowledged_delivery_resent_with_dup_then_client_lost(
        fast: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A QoS 1 delivery the client does not PUBACK: resent with DUP, same MsgId, every
    Tretry (0.3 s), twice (Nretry 2); then the client is lost (will published, dropped by
    the broker) and nothing more is sent. The message stays in its persistent session: the
    next CONNECT gets it."""
    clients = paho_for(fast)
    w = watch(clients, "will/#")
    s = sns(fast)
    cid = unique_id("noack-")
    s.connect(cid, keep_alive=60, clean=False, will=("will/noack", b"gave up", 0, False))
    tid = s.subscribe("rt/x", 1).topic_id
    clients.paho(unique_id("p-")).publish("rt/x", b"m", 1)
    first = s.expect(sn.Publish)
    times = [time.monotonic()]
    assert (first.topic, first.data, first.qos, first.dup) == (tid, b"m", 1, False)
    for _ in range(2):
        again = s.expect(sn.Publish)
        times.append(time.monotonic())
        assert again == sn.Publish(tid, b"m", 1, False, True, first.msg_id), again
    assert all(b - a >= RETRY - SLACK for a, b in itertools.pairwise(times)), times
    assert w.messages.wait_for(1)[0] == Msg("will/noack", b"gave up", 0, False)
    assert time.monotonic() - times[-1] >= RETRY - SLACK
    assert s.pending() is None, "sent after the client was given up"
    gone(fast, cid)
    s.connect(cid, keep_alive=60, clean=False)
    g = s.delivery()
    assert (g.topic, g.data, g.publish.qos) == ("rt/x", b"m", 1)


def test_unanswered_register_is_resent(fast: BrokerThread,
                                       paho_for: Callable[[BrokerThread], Clients],
                                       sns: Callable[[BrokerThread], SnRaw]) -> None:
    """The gateway's REGISTER before a delivery, unanswered, is resent as it was after
    Tretry; REGACK then releases the PUBLISH."""
    s = sns(fast)
    s.connect(unique_id("noreg-"))
    s.subscribe("rr/#", 0)
    paho_for(fast).paho(unique_id("p-")).publish("rr/a", b"x", 0)
    r1 = s.expect(sn.Register)
    t1 = time.monotonic()
    r2 = s.expect(sn.Register)
    assert r2 == r1 and r1.topic_name == "rr/a"
    assert time.monotonic() - t1 >= RETRY - SLACK
    s.send(sn.Regack(r1.topic_id, r1.msg_id, RC.ACCEPTED))
    pub = s.expect(sn.Publish)
    assert (pub.topic, pub.data, pub.qos) == (r1.topic_id, b"x", 0)


def test_unanswered_will_prompt_is_resent_then_connect_abandoned(
        fast: BrokerThread, sns: Callable[[BrokerThread], SnRaw]) -> None:
    """CONNECT with the Will flag and no WILLTOPIC: WILLTOPICREQ resent every Tretry, then
    the CONNECT is abandoned (no CONNACK, nothing at the broker); a new CONNECT works."""
    s = sns(fast)
    cid = unique_id("mute-")
    s.send(sn.Connect(cid, 60, True, True))
    times = []
    for _ in range(3):  # the prompt and 2 resends
        assert s.recv() == sn.WillTopicReq()
        times.append(time.monotonic())
    assert all(b - a >= RETRY - SLACK for a, b in itertools.pairwise(times)), times
    wait_until(lambda: time.monotonic() - times[-1] > RETRY + SLACK, what="Tretry passing")
    assert s.pending() is None and cid not in connected_ids(fast)
    s.connect(cid)
    assert cid in connected_ids(fast)


# -- QoS 2 exactly once -----------------------------------------------------------------------


def test_qos2_from_sn_exactly_once(bt: BrokerThread,
                                   paho_for: Callable[[BrokerThread], Clients],
                                   sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A QoS 2 PUBLISH resent (DUP) after PUBREC gets PUBREC again and is not published
    again; a resent PUBREL gets PUBCOMP again; paho receives the message once."""
    w = watch(paho_for(bt), "x2/#")
    s = sns(bt)
    s.connect(unique_id("x2-"))
    tid = s.register("x2/t")
    mid = s.mid()
    s.send(sn.Publish(tid, b"once", 2, msg_id=mid))
    assert s.recv() == sn.Pubrec(mid)
    s.send(sn.Publish(tid, b"once", 2, dup=True, msg_id=mid))  # "our PUBREC was lost"
    assert s.recv() == sn.Pubrec(mid)
    s.send(sn.Pubrel(mid))
    assert s.recv() == sn.Pubcomp(mid)
    s.send(sn.Pubrel(mid))  # "our PUBCOMP was lost"
    assert s.recv() == sn.Pubcomp(mid)
    s.publish(tid, b"next", 2)
    msgs = w.messages.wait_for(2)
    assert seen(msgs) == [("x2/t", b"once", 2), ("x2/t", b"next", 2)]


def test_qos2_to_sn_exactly_once(fast: BrokerThread,
                                 paho_for: Callable[[BrokerThread], Clients],
                                 sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A QoS 2 delivery: the PUBLISH unanswered is resent with DUP and the same MsgId;
    PUBREC gets PUBREL, resent while PUBCOMP does not come; after PUBCOMP the next message
    follows. The broker counts it delivered: a reconnect (persistent session) brings
    nothing back."""
    s = sns(fast)
    cid = unique_id("y2-")
    s.connect(cid, clean=False)
    tid = s.subscribe("y2/t", 2).topic_id
    p = paho_for(fast).paho(unique_id("p-"))
    p.publish("y2/t", b"once", 2)
    first = s.expect(sn.Publish)
    assert (first.topic, first.data, first.qos, first.dup) == (tid, b"once", 2, False)
    again = s.expect(sn.Publish)
    assert again == sn.Publish(tid, b"once", 2, False, True, first.msg_id), again
    s.send(sn.Pubrec(first.msg_id))
    assert s.recv() == sn.Pubrel(first.msg_id)
    assert s.recv() == sn.Pubrel(first.msg_id)  # resent: no PUBCOMP yet
    s.send(sn.Pubcomp(first.msg_id))
    p.publish("y2/t", b"next", 2)
    nxt = s.expect(sn.Publish)
    assert (nxt.data, nxt.dup) == (b"next", False)
    s.ack(nxt)
    s.send(sn.Disconnect(None))
    assert s.recv() == sn.Disconnect(None)
    gone(fast, cid)
    s.connect(cid, clean=False)  # a new MQTT connection on the kept session
    s.send(sn.Pingreq(None))
    assert s.recv() == sn.Pingresp(), "a completed QoS 2 message came back"


# -- persistent sessions and takeover ---------------------------------------------------------


def test_persistent_session_keeps_subscriptions_and_queued_messages(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """CleanSession false: after DISCONNECT the subscription stays and QoS 1/2 messages are
    queued; the next CONNECT (CleanSession false) gets them (REGISTER again: topic ids are
    per connection), and new ones. A CleanSession true CONNECT starts empty."""
    s = sns(bt)
    cid = unique_id("keep-")
    s.connect(cid, clean=False)
    s.subscribe("ps/#", 1)
    s.send(sn.Disconnect(None))
    assert s.recv() == sn.Disconnect(None)
    gone(bt, cid)
    p = paho_for(bt).paho(unique_id("p-"))
    p.publish("ps/a", b"1", 1)
    p.publish("ps/b", b"2", 1)
    p.publish("ps/a", b"3", 2)
    s.connect(cid, clean=False)
    got = [s.delivery() for _ in range(3)]
    assert [(g.topic, g.data, g.publish.qos) for g in got] == [
        ("ps/a", b"1", 1), ("ps/b", b"2", 1), ("ps/a", b"3", 1)]
    p.publish("ps/c", b"live", 1)
    g = s.delivery()
    assert (g.topic, g.data) == ("ps/c", b"live")
    s.send(sn.Disconnect(None))
    assert s.recv() == sn.Disconnect(None)
    gone(bt, cid)

    s.connect(cid, clean=True)
    s.subscribe("fence", 1)
    p.publish("ps/d", b"no subscription any more", 1)
    p.publish("fence", b"f", 1)
    g = s.delivery()
    assert (g.topic, g.data) == ("fence", b"f")


def test_connect_while_active_starts_a_new_connection(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """A connected client CONNECTs again from the same address (CleanSession false, e.g. it
    rebooted): CONNACK, a new MQTT connection on the kept session, which still delivers."""
    s = sns(bt)
    cid = unique_id("again-")
    s.connect(cid, clean=False)
    s.subscribe("ca/#", 1)
    s.connect(cid, clean=False)
    assert cid in connected_ids(bt)
    paho_for(bt).paho(unique_id("p-")).publish("ca/x", b"still subscribed", 1)
    g = s.delivery()
    assert (g.topic, g.data) == ("ca/x", b"still subscribed")


def test_second_client_with_the_same_id_takes_over(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """Two MQTT-SN clients (two addresses) with one client id: the second CONNECT takes the
    session over (MQTT semantics): CONNACK to it, DISCONNECT to the first; the second gets the
    session's subscription and messages; the first is no longer connected (its PUBLISH is
    answered DISCONNECT, not published)."""
    clients = paho_for(bt)
    w = watch(clients, "#")
    a, b = sns(bt), sns(bt)
    cid = unique_id("twin-")
    a.connect(cid, clean=False)
    a.subscribe("tk/#", 1)
    b.connect(cid, clean=False)
    assert a.recv() == sn.Disconnect(None)
    clients.paho(unique_id("p-")).publish("tk/x", b"to the second", 1)
    g = b.delivery()
    assert (g.topic, g.data) == ("tk/x", b"to the second")
    a.send(sn.Publish(1, b"stale", 1, msg_id=5, topic_id_type=sn.TopicIdType.PREDEFINED))
    assert a.recv() == sn.Disconnect(None)
    b.publish(1, b"fresh", 1, kind=sn.TopicIdType.PREDEFINED)
    msgs = w.messages.wait_until(lambda ms: any(m.payload == b"fresh" for m in ms))
    assert seen(msgs) == [("tk/x", b"to the second", 1), ("pre/one", b"fresh", 1)]


def test_mqtt_client_with_the_same_id_takes_over_from_sn(
        bt: BrokerThread, paho_for: Callable[[BrokerThread], Clients],
        sns: Callable[[BrokerThread], SnRaw]) -> None:
    """An MQTT client connecting with an MQTT-SN client's id takes its session over: the
    MQTT-SN client gets DISCONNECT, the MQTT client the session (present) and its
    subscription."""
    clients = paho_for(bt)
    s = sns(bt)
    cid = unique_id("twin-")
    s.connect(cid, clean=False)
    s.subscribe("tm/#", 1)
    m = clients.paho(cid, clean_session=False)
    assert s.recv() == sn.Disconnect(None)
    assert m.session_present is True
    clients.paho(unique_id("p-")).publish("tm/x", b"to mqtt", 1)
    assert seen(m.messages.wait_for(1)) == [("tm/x", b"to mqtt", 1)]
    s.send(sn.Pingreq(None))
    s.send(sn.Publish(1, b"stale", 1, msg_id=5, topic_id_type=sn.TopicIdType.PREDEFINED))
    assert s.recv() == sn.Disconnect(None)
