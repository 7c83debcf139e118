"""Persistence across a graceful restart (docs/durability.md): the broker runs in this process
with ``persistence: {backend: sqlite, sync: commit}`` on a temporary database; a restart is
``shutdown()`` then a new ``Broker`` on the same database and port. Clients are real (paho-mqtt
and raw sockets on 127.0.0.1); raw sockets check the wire exactly (DUP, packet identifiers,
PUBREL).

What is checked, per the durability contract:

* a persistent session (3.1.1 CleanSession=0, MQTT 5 Session Expiry Interval > 0) comes back:
  Session Present, subscriptions, queued messages in order [MQTT-3.1.2-4, MQTT-3.2.2-2];
* outbound QoS 1/2 in flight is resent with DUP=1 and the same packet identifiers, or as
  PUBREL past PUBREC [MQTT-4.4.0-1];
* inbound QoS 2 awaiting PUBREL: a resent PUBLISH is not delivered twice [MQTT-4.3.3-2];
* the Session Expiry Interval counts the broker's downtime;
* retained messages (with Message Expiry counting downtime) come back, deleted ones do not;
* clean sessions are not stored;
* wills of connected persistent clients, and delayed wills, are published after the restart;
* ``sync: periodic`` restores the same after a clean shutdown.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.protocol.packets import (
    Connack,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Will,
)
from tests.conftest import BrokerThread, base_config

from .brokerproc import persistence
from .helpers import V311, Msg, Paho, RawClient, payloads, wait_until
from .v5helpers import P, Paho5, RawV5, no_message

pytestmark = pytest.mark.timeout(60)


class PBroker:
    """A broker with SQLite persistence on its own loop in a thread, restartable on the same
    database and port; it also makes the clients of a test and closes them all at the end."""

    def __init__(self, tmp_path: Path, sync: str = "commit", flush_interval: float | None = None,
                 **mqtt: Any) -> None:
        self.db = tmp_path / "db.sqlite"
        self.config = base_config(**mqtt)
        self.config["persistence"] = persistence(self.db, sync, False, flush_interval)
        self.bt: BrokerThread | None = None
        self.port = 0
        self._closers: list[Any] = []

    # -- the broker --------------------------------------------------------------------------

    def start(self) -> PBroker:
        cfg = copy.deepcopy(self.config)
        if self.port:  # a restart listens where the clients knew it
            cfg["listeners"]["default"]["bind"] = f"127.0.0.1:{self.port}"
        self.bt = BrokerThread(cfg).start()
        self.port = self.bt.port
        return self

    def stop(self) -> None:
        """Graceful shutdown (``Broker.shutdown()``); fails if it takes over 10 s."""
        bt, self.bt = self.bt, None
        assert bt is not None, "not running"
        bt.stop()
        assert not bt._thread.is_alive(), "the broker did not shut down within 10 s"

    def restart(self, downtime: float = 0.0) -> None:
        """Shut down, stay down ``downtime`` seconds, start a new Broker on the same db."""
        self.stop()
        if downtime:
            time.sleep(downtime)
        self.start()

    def connected(self, cid: str) -> bool:
        bt = self.bt
        assert bt is not None
        return cid in bt.call(lambda: list(bt.broker.connections))  # type: ignore[union-attr]

    def gone(self, cid: str) -> None:
        """Wait until the broker has noticed that ``cid``'s connection ended."""
        wait_until(lambda: not self.connected(cid), what=f"the broker to release {cid!r}")

    # -- clients ------------------------------------------------------------------------------

    def paho(self, cid: str, clean_session: bool = True, **kw: Any) -> Paho:
        """A connected paho-mqtt 3.1.1 client."""
        c = Paho(cid, V311, clean_session, **kw)
        self._closers.append(c.close)
        c.connect(self.port)
        return c

    def paho5(self, cid: str, clean_start: bool = True, sei: int | None = None,
              **kw: Any) -> Paho5:
        """A connected paho-mqtt MQTT 5 client (``sei``: its Session Expiry Interval)."""
        c = Paho5(cid, **kw)
        self._closers.append(c.close)
        c.connect(self.port, 60, clean_start,
                  {"SessionExpiryInterval": sei} if sei is not None else None)
        return c

    def raw(self, cid: str, clean: bool = True, will: Will | None = None,
            ) -> tuple[RawClient, Connack]:
        """A raw 3.1.1 client that sent CONNECT; with its CONNACK (asserted accepted)."""
        r = RawClient(self.port, 4)
        self._closers.append(r.close)
        ack = r.connect(cid, clean, will=will)
        assert ack.return_code == 0, f"CONNACK {ack!r}"
        return r, ack

    def raw5(self, cid: str, clean_start: bool = True, sei: int | None = None,
             will: Will | None = None) -> tuple[RawV5, Connack]:
        """A raw MQTT 5 client that sent CONNECT; with its CONNACK (asserted accepted)."""
        r = RawV5(self.port)
        self._closers.append(r.close)
        props: dict[int, Any] = {P.SESSION_EXPIRY_INTERVAL: sei} if sei is not None else {}
        ack = r.connect5(cid, clean_start, properties=props, will=will)
        assert ack.return_code == 0, f"CONNACK {ack!r}"
        return r, ack

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        if self.bt is not None:
            self.bt.stop()
            self.bt = None


@pytest.fixture
def pbroker(tmp_path: Path) -> Iterator[Any]:
    """``pbroker(**kw)`` starts a :class:`PBroker` (at most one per test); closed at the end."""
    made: list[PBroker] = []

    def make(**kw: Any) -> PBroker:
        b = PBroker(tmp_path, **kw)
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.close()


# -- 1. persistent session: subscriptions and queued messages -----------------------------------

def test_offline_queue_and_subscription_survive_restart(pbroker: Any) -> None:
    """3.1.1 CleanSession=0 subscriber (QoS 1 on a/#) goes offline; 50 QoS 1/2 messages are
    published for it (more than the in-flight window of 20); the broker restarts. On reconnect:
    CONNACK Session Present 1 [MQTT-3.2.2-2], every queued message in publication order
    [MQTT-4.6.0-5] at the granted QoS 1, DUP=0 (never sent before) [MQTT-3.3.1-1], each once;
    the subscription is still active: a publish after the reconnect arrives without a new
    SUBSCRIBE [MQTT-3.1.2-4]."""
    pb = pbroker()
    sub = pb.paho("p1-sub", clean_session=False)
    assert sub.session_present is False
    assert sub.subscribe(("a/#", 1)) == [1]
    sub.disconnect()
    pb.gone("p1-sub")

    pub = pb.paho("p1-pub")
    sent = [b"queued %03d" % i for i in range(50)]
    for i, body in enumerate(sent):
        pub.publish(f"a/{i % 5}", body, qos=2 if i % 3 == 0 else 1)
    pub.disconnect()

    pb.restart()

    again = pb.paho("p1-sub", clean_session=False)
    assert again.session_present is True, "the persistent session did not survive the restart"
    msgs = again.messages.wait_for(len(sent), timeout=10)
    got = payloads(msgs)
    missing = [b for b in sent if b not in got]
    assert not missing, f"{len(missing)} queued message(s) lost across the restart: {missing}"
    assert got == sent, f"queued messages out of order or duplicated: {got}"
    assert [(m.qos, m.dup) for m in msgs] == [(1, False)] * len(sent), (
        [(m.payload, m.qos, m.dup) for m in msgs])

    pub2 = pb.paho("p1-pub2")
    pub2.publish("a/after", b"after restart", 1)
    m = again.messages.wait_topic("a/after")
    assert (m.payload, m.qos) == (b"after restart", 1), "the subscription did not survive"
    assert len(again.messages) == len(sent) + 1, again.messages.messages[len(sent):]


# -- 2. outbound in flight ----------------------------------------------------------------------

def test_inflight_qos1_resent_with_dup_and_same_ids_after_restart(pbroker: Any) -> None:
    """A raw CleanSession=0 subscriber (QoS 1, window max_inflight_messages=5) gets 5 of 8
    PUBLISHes and acknowledges none; the broker restarts. On reconnect the 5 come again with
    DUP=1, their original packet identifiers, in the original order [MQTT-4.4.0-1]
    [MQTT-3.3.1-1] [MQTT-4.6.0-1], then the 3 queued ones (DUP=0) once those are acknowledged.
    After one more restart nothing acknowledged comes back."""
    pb = pbroker(max_inflight_messages=5)
    sub, ack = pb.raw("p2-sub", clean=False)
    assert ack.session_present is False
    assert sub.subscribe(("inf/#", 1)) == [1]
    pub = pb.paho("p2-pub")
    for i in range(8):
        pub.publish(f"inf/{i}", b"in flight %d" % i, 1)
    first = [sub.expect(Publish) for _ in range(5)]
    assert [(p.payload, p.qos, p.dup) for p in first] == [
        (b"in flight %d" % i, 1, False) for i in range(5)]
    assert sub.no_packet(0.3), "more than max_inflight_messages=5 unacknowledged"

    pb.restart()

    again, ack = pb.raw("p2-sub", clean=False)
    assert ack.session_present is True, "the persistent session did not survive the restart"
    resent = [again.expect(Publish) for _ in range(5)]
    assert [(p.topic, p.payload, p.qos, p.dup, p.packet_id) for p in resent] == [
        (p.topic, p.payload, 1, True, p.packet_id) for p in first], (
        "in-flight QoS 1 not resent as it was (DUP=1, same packet identifier, same order)")
    for p in resent:
        again.send(Puback(p.packet_id))
    rest = [again.expect(Publish) for _ in range(3)]
    assert [(p.payload, p.qos, p.dup) for p in rest] == [
        (b"in flight %d" % i, 1, False) for i in range(5, 8)], "the queued ones, after"
    for p in rest:
        again.send(Puback(p.packet_id))
    again.ping()  # the broker has read the PUBACKs
    assert again.no_packet(0.3)

    pb.restart()

    third, ack = pb.raw("p2-sub", clean=False)
    assert ack.session_present is True
    pb.paho("p2-pub2").publish("inf/sentinel", b"sentinel", 1)
    p = third.expect(Publish)
    assert (p.payload, p.dup) == (b"sentinel", False), (
        f"an acknowledged message came back after a restart: {p!r}")


def test_inflight_qos2_after_restart_pubrel_resent_not_publish(pbroker: Any) -> None:
    """Outbound QoS 2: message A got PUBREC from the subscriber (the broker sent PUBREL, no
    PUBCOMP yet), message B got nothing; the broker restarts. On reconnect the broker resends
    PUBREL for A (same packet identifier), not A's PUBLISH, and B's PUBLISH with DUP=1 and the
    same identifier [MQTT-4.4.0-1]; PUBCOMP / PUBREC-PUBREL-PUBCOMP finish both and nothing
    more comes."""
    pb = pbroker()
    sub, _ = pb.raw("p2q2-sub", clean=False)
    assert sub.subscribe(("inf2/#", 2)) == [2]
    pub = pb.paho("p2q2-pub")
    pub.publish("inf2/a", b"A", 2)
    pub.publish("inf2/b", b"B", 2)
    a = sub.expect(Publish)
    b = sub.expect(Publish)
    assert [(x.payload, x.qos) for x in (a, b)] == [(b"A", 2), (b"B", 2)]
    sub.send(Pubrec(a.packet_id))
    assert sub.expect(Pubrel).packet_id == a.packet_id
    sub.ping()  # the broker has handled the PUBREC

    pb.restart()

    again, ack = pb.raw("p2q2-sub", clean=False)
    assert ack.session_present is True, "the persistent session did not survive the restart"
    got = [again.recv(), again.recv()]
    rels = [p for p in got if isinstance(p, Pubrel)]
    pubs = [p for p in got if isinstance(p, Publish)]
    assert [r.packet_id for r in rels] == [a.packet_id], (
        f"expected PUBREL {a.packet_id} for A (past PUBREC: not its PUBLISH again); got {got}")
    assert [(p.payload, p.qos, p.dup, p.packet_id) for p in pubs] == [
        (b"B", 2, True, b.packet_id)], f"expected B's PUBLISH again with DUP=1; got {got}"
    again.send(Pubcomp(a.packet_id))
    again.send(Pubrec(b.packet_id))
    assert again.expect(Pubrel).packet_id == b.packet_id
    again.send(Pubcomp(b.packet_id))
    assert again.no_packet(0.5), f"more came: {again.recv(0.1)!r}"


# -- 3. inbound QoS 2 -----------------------------------------------------------------------------

def test_inbound_qos2_not_delivered_twice_across_restart(pbroker: Any) -> None:
    """A raw CleanSession=0 publisher sends QoS 2 PUBLISH id 9, gets PUBREC; the broker
    restarts; the publisher reconnects and resends the PUBLISH with DUP=1 [MQTT-4.4.0-1], gets
    PUBREC again, sends PUBREL and gets PUBCOMP. The message reaches each subscriber exactly
    once [MQTT-4.3.3-2]: an online persistent subscriber (QoS 0, so a second delivery would show
    as it happens) and an offline one (QoS 1, queued). An MQTT 5 publisher that only sends
    PUBREL after the restart gets PUBCOMP 0x00, not 0x92 Packet Identifier not found: the
    broker remembered the identifier."""
    pb = pbroker()
    off = pb.paho("p3-off", clean_session=False)
    assert off.subscribe(("in2/#", 1)) == [1]
    off.disconnect()
    pb.gone("p3-off")
    on = pb.paho("p3-on", clean_session=False)
    assert on.subscribe(("in2/#", 0)) == [0]

    pub, _ = pb.raw("p3-pub", clean=False)
    pub.send(Publish("in2/t", b"once", 2, False, False, 9))
    assert pub.expect(Pubrec).packet_id == 9
    pub5, _ = pb.raw5("p3-pub5", sei=60)
    pub5.send(Publish("in2/five", b"five", 2, False, False, 10))
    rec = pub5.expect(Pubrec)
    assert (rec.packet_id, rec.reason_code) == (10, 0)
    on.messages.wait_until(lambda ms: len(ms) >= 2, what="both messages before the restart")
    before = payloads(on.messages.messages)

    pb.restart()

    on2 = pb.paho("p3-on", clean_session=False)
    assert on2.session_present is True
    pub, ack = pb.raw("p3-pub", clean=False)
    assert ack.session_present is True, "the publisher's session did not survive the restart"
    pub.send(Publish("in2/t", b"once", 2, False, True, 9))  # the resend, DUP=1
    assert pub.expect(Pubrec).packet_id == 9
    pub.send(Pubrel(9))
    assert pub.expect(Pubcomp).packet_id == 9
    pub5, ack5 = pb.raw5("p3-pub5", clean_start=False, sei=60)
    assert ack5.session_present is True
    pub5.send(Pubrel(10))
    comp = pub5.expect(Pubcomp)
    assert (comp.packet_id, comp.reason_code) == (10, 0), (
        f"PUBREL 10 after the restart answered {comp!r}: the inbound QoS 2 id was forgotten")
    pub.publish("in2/end", b"end", 1)

    on2.messages.wait_topic("in2/end")
    time.sleep(0.3)
    seen_on = before + payloads(on2.messages.messages)
    assert sorted(seen_on) == sorted([b"once", b"five", b"end"]), (
        f"online subscriber, before + after the restart: {seen_on}")
    off2 = pb.paho("p3-off", clean_session=False)
    assert off2.session_present is True
    off2.messages.wait_topic("in2/end")
    time.sleep(0.3)  # room for a duplicate to show
    seen_off = payloads(off2.messages.messages)
    assert sorted(seen_off) == sorted([b"once", b"five", b"end"]), (
        f"offline subscriber, after the restart: {seen_off}")


# -- 4. session expiry counts the downtime ------------------------------------------------------

def test_session_expiry_counts_downtime(pbroker: Any) -> None:
    """MQTT 5 sessions disconnect at t0; the broker is down from t0 to t0+3 s. The Session
    Expiry Interval runs on the wall clock, downtime included [MQTT-4.1.0-2] (durability.md:
    "expiring at the same wall-clock time"):

    * expiry 2 s: gone after the restart (Session Present 0) [MQTT-3.2.2-2];
    * expiry 30 s: present, with its subscription and the message queued for it;
    * expiry 5 s, back at t0+3.x: present; another with expiry 5 s, back at t0+6: gone (the
      restart did not start its 5 s again)."""
    pb = pbroker()
    clients = {}
    for cid, sei in (("p4-two", 2), ("p4-thirty", 30), ("p4-five-a", 5), ("p4-five-b", 5)):
        r, ack = pb.raw5(cid, sei=sei)
        assert r.subscribe5((f"exp/{cid}", 1)).return_codes == [1]
        clients[cid] = r
    pub = pb.paho("p4-pub")
    pub.publish("exp/p4-thirty", b"while away", 1)  # reaches the session while connected
    clients["p4-thirty"].expect(Publish)  # not acknowledged: in flight
    t0 = time.monotonic()
    for r in clients.values():
        r.disconnect5()
    for cid in clients:
        pb.gone(cid)
    pub.publish("exp/p4-thirty", b"queued", 1)
    pub.disconnect()

    pb.stop()
    time.sleep(max(0.0, t0 + 3.0 - time.monotonic()))
    pb.start()

    _, ack = pb.raw5("p4-two", clean_start=False, sei=2)
    assert ack.session_present is False, (
        "Session Expiry 2 s, 3 s of downtime: the session should have expired")
    thirty, ack = pb.raw5("p4-thirty", clean_start=False, sei=30)
    assert ack.session_present is True, "Session Expiry 30 s: the session should be there"
    got = thirty.publishes(2)
    assert [(p.payload, p.dup) for p in got] == [(b"while away", True), (b"queued", False)]
    pb.paho("p4-pub2").publish("exp/p4-thirty", b"after", 1)
    assert thirty.next_publish().payload == b"after", "the subscription did not survive"
    _, ack = pb.raw5("p4-five-a", clean_start=False, sei=5)
    elapsed = time.monotonic() - t0
    assert ack.session_present is True, (
        f"Session Expiry 5 s, back after {elapsed:.1f}s: the session should be there")

    time.sleep(max(0.0, t0 + 6.0 - time.monotonic()))
    _, ack = pb.raw5("p4-five-b", clean_start=False, sei=5)
    elapsed = time.monotonic() - t0
    assert ack.session_present is False, (
        f"Session Expiry 5 s, back after {elapsed:.1f}s (3 s of them with the broker down): "
        "the session should have expired; the restart restarted its clock")


# -- 5. retained messages -------------------------------------------------------------------------

def test_retained_messages_survive_restart(pbroker: Any) -> None:
    """Retained messages (QoS 0/1/2, with and without Message Expiry Interval) come back after
    a restart (2 s down) to a new subscriber, RETAIN=1 [MQTT-3.3.1-8], each once:

    * one with Message Expiry 60 s comes with what is left: at most 58 s, since the downtime
      counts [MQTT-3.3.2-6];
    * one with Message Expiry 1 s has expired and does not come [MQTT-3.3.2-5];
    * one deleted by an empty retained PUBLISH does not come back [MQTT-3.3.1-10];
    * a replaced one comes with its last value [MQTT-3.3.1-5]."""
    pb = pbroker()
    pub, _ = pb.raw5("p5-pub")
    pub.publish5("r/q0", b"zero", 0, retain=True)
    pub.publish5("r/q1", b"one", 1, retain=True)
    pub.publish5("r/q2", b"two", 2, retain=True)
    pub.publish5("r/mei60", b"sixty", 1, retain=True,
                 properties={P.MESSAGE_EXPIRY_INTERVAL: 60})
    pub.publish5("r/mei1", b"short", 1, retain=True, properties={P.MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish5("r/del", b"deleted", 1, retain=True)
    pub.publish5("r/del", b"", 1, retain=True)  # deletes it
    pub.publish5("r/rep", b"v1", 1, retain=True)
    pub.publish5("r/rep", b"v2", 1, retain=True)
    pub.ping()

    pb.restart(downtime=2.0)

    sub, _ = pb.raw5("p5-sub")
    assert sub.subscribe5(("r/#", 1)).return_codes == [1]
    expected = {"r/q0": (b"zero", 0), "r/q1": (b"one", 1), "r/q2": (b"two", 1),
                "r/mei60": (b"sixty", 1), "r/rep": (b"v2", 1)}
    got: dict[str, Publish] = {}
    extra: list[Publish] = []
    deadline = time.monotonic() + 5
    while set(got) != set(expected) and time.monotonic() < deadline:
        try:
            p = sub.next_publish(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if p.topic in expected and p.topic not in got:
            got[p.topic] = p
        else:
            extra.append(p)
    for p in sub.drain(0.5):
        assert isinstance(p, Publish), p
        extra.append(p)
        if p.qos:
            sub.ack(p)
    seen = {t: (p.payload, p.qos) for t, p in got.items()}
    lost = sorted(set(expected) - set(seen))
    assert not lost, f"retained message(s) lost across the restart: {lost}; got {seen}"
    assert seen == expected, f"retained after restart: {seen}, expected {expected}"
    assert not extra, (
        "came though it should not (expired / deleted / twice): "
        f"{[(p.topic, p.payload) for p in extra]}")
    assert all(p.retain for p in got.values()), [(t, p.retain) for t, p in got.items()]
    mei = got["r/mei60"].properties.get(P.MESSAGE_EXPIRY_INTERVAL)
    assert mei is not None and 50 <= mei <= 58, (
        f"Message Expiry Interval {mei} after 2 s of downtime: expected what is left (<= 58)")


def test_retained_message_properties_survive_restart(pbroker: Any) -> None:
    """A retained MQTT 5 message keeps its properties across a restart: Payload Format
    Indicator, Content Type, Response Topic, Correlation Data and User Properties, in order
    [MQTT-3.3.2-4] [MQTT-3.3.2-17] [MQTT-3.3.2-20]."""
    pb = pbroker()
    props = {P.PAYLOAD_FORMAT_INDICATOR: 1, P.CONTENT_TYPE: "text/plain",
             P.RESPONSE_TOPIC: "reply/here", P.CORRELATION_DATA: b"\x00\x01corr",
             P.USER_PROPERTY: [("k", "v1"), ("a", "b"), ("k", "v2")]}
    pub, _ = pb.raw5("p5p-pub")
    pub.publish5("rp/t", "héllo".encode(), 1, retain=True, properties=props)
    pub.ping()

    pb.restart()

    sub, _ = pb.raw5("p5p-sub")
    sub.subscribe5(("rp/#", 1))
    try:
        p = sub.next_publish()
    except TimeoutError:
        raise AssertionError("the retained message did not survive the restart") from None
    assert (p.topic, p.payload, p.retain) == ("rp/t", "héllo".encode(), True)
    assert {k: v for k, v in p.properties.items() if k in props} == props, p.properties


# -- 6. clean sessions are not stored -------------------------------------------------------------

def test_clean_sessions_not_restored(pbroker: Any) -> None:
    """Sessions that end with their connection are not stored (durability.md): a 3.1.1
    CleanSession=1 subscriber and an MQTT 5 one with Session Expiry 0, both connected when the
    broker shuts down, have no session after the restart (Session Present 0 even when
    reconnecting with CleanSession=0 / Clean Start 0 [MQTT-3.2.2-3]) and get nothing published
    to their old filters. A CleanSession=0 subscriber of the same filter does (so persistence
    is on)."""
    pb = pbroker()
    keep = pb.paho("p6-keep", clean_session=False)
    keep.subscribe(("c/#", 1))
    keep.disconnect()
    pb.gone("p6-keep")
    clean = pb.paho("p6-clean", clean_session=True)
    clean.subscribe(("c/#", 1))
    v5, _ = pb.raw5("p6-v5", sei=0)
    assert v5.subscribe5(("c/#", 1)).return_codes == [1]

    pb.restart()

    clean2 = pb.paho("p6-clean", clean_session=False)
    assert clean2.session_present is False, "a clean session was restored"
    v5b, ack = pb.raw5("p6-v5", clean_start=False, sei=60)
    assert ack.session_present is False, "a Session Expiry 0 session was restored"
    keep2 = pb.paho("p6-keep", clean_session=False)
    assert keep2.session_present is True, "the persistent session did not survive the restart"
    pb.paho("p6-pub").publish("c/x", b"after", 1)
    keep2.messages.wait_topic("c/x")
    assert no_message(clean2.messages, 0.5), f"got {clean2.messages.messages}"
    assert v5b.no_packet(0.1), "the clean session's subscription was restored"


# -- 7. wills -------------------------------------------------------------------------------------

def test_will_of_connected_persistent_client_published_after_restart(pbroker: Any) -> None:
    """A 3.1.1 CleanSession=0 client with a will (QoS 1, retained) is connected when the
    broker shuts down: its network connection closed without DISCONNECT, so the will is
    published [MQTT-3.1.2-8] (durability.md: after the restart). A persistent subscriber of
    the will topic gets it exactly once over its connections before the shutdown and after
    the restart; a subscriber arriving later gets it as a retained message (RETAIN=1)
    [MQTT-3.3.1-8]."""
    pb = pbroker()
    watch = pb.paho("p7-watch", clean_session=False)
    assert watch.subscribe(("will/#", 1)) == [1]
    pb.paho("p7-client", clean_session=False, will=("will/p7", b"p7 is gone", 1, True))

    pb.restart()

    watch2 = pb.paho("p7-watch", clean_session=False)
    assert watch2.session_present is True

    def wills() -> list[Msg]:
        return watch.messages.topic("will/p7") + watch2.messages.topic("will/p7")

    wait_until(wills, timeout=5, what="the will (before the shutdown or after the restart)")
    time.sleep(0.5)  # room for a second copy to show
    got = wills()
    assert [(m.payload, m.qos) for m in got] == [(b"p7 is gone", 1)], (
        f"the will should come exactly once; before the shutdown: {watch.messages.messages}, "
        f"after the restart: {watch2.messages.messages}")
    late = pb.paho("p7-late")
    late.subscribe(("will/#", 1))
    r = late.messages.wait_topic("will/p7")
    assert (r.payload, r.retain) == (b"p7 is gone", True)


def test_delayed_will_survives_restart_and_keeps_its_time(pbroker: Any) -> None:
    """MQTT 5 clients X and Y (Session Expiry 60 s, Will Delay Interval 3 s) drop their
    sockets at t0; the broker shuts down at once and restarts at t0+1.5 s. X does not come
    back: its will is published at t0+3 s, after the remaining delay [MQTT-3.1.3-9] (not at
    the restart, not 3 s after it), once. Y reconnects to its session right after the restart,
    within the delay: its will is never published [MQTT-3.1.3-9]."""
    pb = pbroker()
    watch = pb.paho5("p7d-watch", sei=60)
    assert watch.subscribe(("dw/#", 1)) == [1]
    wills = {}
    for cid in ("p7d-x", "p7d-y"):
        wills[cid], _ = pb.raw5(cid, sei=60, will=Will(
            f"dw/{cid}", b"gone:" + cid.encode(), 1, False, {P.WILL_DELAY_INTERVAL: 3}))
    t0 = time.monotonic()
    for r in wills.values():
        r.abort()
    for cid in wills:
        pb.gone(cid)
    pb.stop()
    assert no_message(watch.messages, 0.0), f"a will came at once: {watch.messages.messages}"
    time.sleep(max(0.0, t0 + 1.5 - time.monotonic()))
    pb.start()
    watch2 = pb.paho5("p7d-watch", clean_start=False, sei=60)
    assert watch2.session_present is True
    _, ack = pb.raw5("p7d-y", clean_start=False, sei=60)
    assert ack.session_present is True, "Y's session did not survive the restart"

    m = watch2.messages.wait_topic("dw/p7d-x", timeout=6)
    elapsed = time.monotonic() - t0
    assert m.payload == b"gone:p7d-x"
    assert 2.6 <= elapsed <= 3.9, (
        f"X's will came {elapsed:.2f}s after the drop; expected about 3 s (Will Delay 3 s, "
        "1.5 s of them with the broker down): "
        + ("published at the restart" if elapsed < 2.6 else "the delay started again"))
    left = t0 + 5.0 - time.monotonic()
    assert no_message(watch2.messages, max(left, 0.5), lambda x: x.topic == "dw/p7d-y"), (
        f"Y's will was published though Y resumed its session: {watch2.messages.messages}")
    assert [x.topic for x in watch2.messages.messages] == ["dw/p7d-x"], (
        watch2.messages.messages)


# -- 8. sync: periodic ----------------------------------------------------------------------------

def test_periodic_mode_restores_state_after_graceful_restart(pbroker: Any) -> None:
    """``sync: periodic`` with a flush interval far longer than the test: a clean shutdown
    commits everything (durability.md: "A clean shutdown loses nothing"). After the restart:
    the offline session with its subscription and queued messages (in order), an in-flight
    QoS 1 message resent with DUP=1 and its packet identifier [MQTT-4.4.0-1], and a retained
    message. A second restart then shows the acknowledgement was stored too."""
    pb = pbroker(sync="periodic", flush_interval=30.0)
    off = pb.paho("p8-off", clean_session=False)
    off.subscribe(("per/#", 1))
    off.disconnect()
    pb.gone("p8-off")
    raw, _ = pb.raw("p8-raw", clean=False)
    assert raw.subscribe(("per/#", 1)) == [1]
    pub = pb.paho("p8-pub")
    sent = [b"periodic %d" % i for i in range(10)]
    for body in sent:
        pub.publish("per/t", body, 1)
    pub.publish("per/kept", b"retained", 1, retain=True)
    first = raw.expect(Publish)
    assert first.payload == sent[0]

    pb.restart()

    off2 = pb.paho("p8-off", clean_session=False)
    assert off2.session_present is True, "sync: periodic lost the session on a clean shutdown"
    msgs = off2.messages.wait_for(len(sent) + 1, timeout=5)
    assert payloads(msgs) == [*sent, b"retained"], payloads(msgs)
    raw2, ack = pb.raw("p8-raw", clean=False)
    assert ack.session_present is True
    p = raw2.expect(Publish)
    assert (p.payload, p.dup, p.packet_id) == (sent[0], True, first.packet_id), p
    raw2.send(Puback(p.packet_id))
    rest = [raw2.expect(Publish) for _ in range(len(sent))]
    for x in rest:
        raw2.send(Puback(x.packet_id))
    assert [x.payload for x in rest] == [*sent[1:], b"retained"]
    raw2.ping()
    late = pb.paho("p8-late")
    late.subscribe(("per/kept", 1))
    assert late.messages.wait_topic("per/kept").payload == b"retained"
    raw2.disconnect()
    pb.gone("p8-raw")

    pb.restart()

    raw3, ack = pb.raw("p8-raw", clean=False)
    assert ack.session_present is True
    assert raw3.no_packet(0.5), "acknowledged messages came back after the second restart"
