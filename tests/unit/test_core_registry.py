"""core.registry: sessions, takeover, expiry and delayed wills on a clock passed in.

No event loop and no sleeping: every deadline is reached by calling ``handle_timer(now)``
with an explicit ``now``. What the registry hands outwards (a will to publish, a session
that ended, a deadline that moved) is recorded by plain callables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mqttbroker.config import load_config
from mqttbroker.core.registry import EXPIRE, WILL, Registry, pending_will, will_message
from mqttbroker.message import Message
from mqttbroker.metrics import Metrics
from mqttbroker.persistence import StoredSession, StoredWill
from mqttbroker.protocol.constants import ReasonCode
from mqttbroker.protocol.packets import Subscription, Will
from mqttbroker.protocol.properties import PropertyId as Prop
from mqttbroker.router import Router
from mqttbroker.session import Session

NOW = 1000.0  # the broker's clock when the test begins
WALL = 1_700_000_000.0  # the wall clock at the same instant (for storage; none here)


class FakeConn:
    """A connection as the registry sees it: it can be told to go (a takeover).
    ``on_disconnect`` plays the broker closing it at once (on_connection_closed)."""

    def __init__(self, on_disconnect: Callable[[], None] | None = None) -> None:
        self.disconnects: list[tuple[ReasonCode, str, bool]] = []
        self.on_disconnect = on_disconnect

    def disconnect(self, code: ReasonCode, why: str, publish_will: bool) -> None:
        self.disconnects.append((code, why, publish_will))
        if self.on_disconnect is not None:
            self.on_disconnect()


class Fixture:
    def __init__(self, **settings: Any) -> None:
        self.metrics = Metrics()
        self.router = Router()
        self.published: list[Message] = []
        self.ended: list[tuple[str, bool]] = []
        self.moved = 0
        self.reg: Registry[FakeConn] = Registry(
            load_config({"mqtt": settings}), self.metrics, self.router, self.published.append,
            self._ended, self._moved)

    def _ended(self, session: Session, expired: bool) -> None:
        self.ended.append((session.client_id, expired))

    def _moved(self) -> None:
        self.moved += 1

    def attach(self, cid: str, clean: bool = False, expiry: int = 60,
               will: Will | None = None, conn: FakeConn | None = None,
               ) -> tuple[Session, bool, FakeConn]:
        conn = conn or FakeConn()
        attached = self.reg.attach(cid, conn, "10.0.0.1:5000", clean, expiry, will)
        assert attached is not None
        return attached[0], attached[1], conn

    def detach(self, session: Session, now: float, will: Message | None = None,
               delay: int = 0) -> None:
        """The connection ended at ``now`` (as Broker.on_connection_closed does)."""
        del self.reg.connections[session.client_id]
        self.reg.detach(session, will, delay, None, True, now, WALL)


def wmsg(cid: str = "c1", topic: str = "w/gone") -> Message:
    return Message(topic, b"bye", 1, False, None, cid)


# -- attach: new, resumed, clean start ------------------------------------------------------------


def test_new_session_is_not_present_mqtt_3_2_2_2() -> None:
    f = Fixture()
    session, present, conn = f.attach("c1")
    assert present is False and f.reg.sessions["c1"] is session
    assert f.reg.connections["c1"] is conn and session.expiry_interval == 60


def test_resumed_session_is_present_mqtt_3_2_2_2() -> None:
    f = Fixture()
    first, _, _ = f.attach("c1", expiry=60)
    f.detach(first, NOW)
    again, present, _ = f.attach("c1", expiry=120)
    assert present is True and again is first
    assert again.expiry_interval == 120  # the new CONNECT's interval applies
    assert f.reg.next_deadline() is None  # its expiry stopped counting
    assert "c1" not in f.reg.offline


def test_clean_start_discards_the_session_mqtt_3_1_2_4() -> None:
    f = Fixture()
    first, _, _ = f.attach("c1")
    first.own_subscriptions()["a/b"] = Subscription("a/b", 1)
    f.router.subscribe("c1", first.subscriptions["a/b"])
    f.detach(first, NOW)
    fresh, present, _ = f.attach("c1", clean=True)
    assert present is False and fresh is not first and fresh.subscriptions == {}
    assert f.router.count == 0  # the old subscriptions went with it
    assert f.ended == [("c1", True)]


def test_session_with_expiry_0_is_not_resumed() -> None:
    f = Fixture()
    first, _, _ = f.attach("c1", expiry=0)
    f.detach(first, NOW)
    assert f.reg.sessions == {} and f.ended == [("c1", False)]  # ended with its connection
    _, present, _ = f.attach("c1", expiry=0)
    assert present is False


def test_takeover_disconnects_the_connection_holding_the_id_mqtt_3_1_4_3() -> None:
    f = Fixture()
    session, _, old = f.attach("c1")
    same, present, new = f.attach("c1")
    assert old.disconnects == [(ReasonCode.SESSION_TAKEN_OVER,
                                "session taken over by a new connection from 10.0.0.1:5000",
                                True)]
    assert f.reg.connections["c1"] is new and same is session and present is True
    assert new.disconnects == []


# -- detach and expiry as deadlines ---------------------------------------------------------------


def test_detach_sets_the_expiry_deadline_at_now_plus_interval() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)
    f.detach(session, NOW)
    assert f.reg.deadlines.when((EXPIRE, "c1")) == NOW + 60
    assert f.reg.next_deadline() == NOW + 60 and f.moved == 1
    assert list(f.reg.offline) == ["c1"]


def test_session_expires_at_its_deadline_not_before() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)
    f.detach(session, NOW)
    f.reg.handle_timer(NOW + 59.999)
    assert "c1" in f.reg.sessions and f.ended == []
    f.reg.handle_timer(NOW + 60)  # a deadline equal to now is due
    assert "c1" not in f.reg.sessions and f.ended == [("c1", True)]
    assert f.reg.next_deadline() is None and "c1" not in f.reg.offline


def test_session_expiry_late_timer_still_ends_it() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)
    f.detach(session, NOW)
    f.reg.handle_timer(NOW + 3600)
    assert f.ended == [("c1", True)]


def test_never_expiring_session_has_no_deadline() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=Session.NEVER)
    f.detach(session, NOW)
    assert f.reg.next_deadline() is None
    f.reg.handle_timer(NOW + 10 * 365 * 86400)
    assert "c1" in f.reg.sessions


def test_detach_during_shutdown_sets_no_deadline() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)
    del f.reg.connections["c1"]
    f.reg.detach(session, None, 0, None, False, NOW, WALL)  # running=False
    assert f.reg.next_deadline() is None and "c1" in f.reg.sessions


def test_next_deadline_is_the_earliest_of_expiry_and_will() -> None:
    f = Fixture()
    a, _, _ = f.attach("a", expiry=60)
    b, _, _ = f.attach("b", expiry=30)
    f.detach(a, NOW, wmsg("a"), delay=10)  # will at +10, expiry at +60
    f.detach(b, NOW + 1)  # expiry at +31
    assert f.reg.next_deadline() == NOW + 10
    f.reg.handle_timer(NOW + 10)
    assert f.reg.next_deadline() == NOW + 31
    f.reg.handle_timer(NOW + 31)
    assert f.reg.next_deadline() == NOW + 60
    f.reg.handle_timer(NOW + 60)
    assert f.reg.next_deadline() is None
    assert sorted(f.ended) == [("a", True), ("b", True)]


# -- wills: at once, delayed, cancelled [MQTT 3.1.3.2.2] --------------------------------------------


def test_will_without_delay_is_published_at_detach() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1")
    will = wmsg()
    f.detach(session, NOW, will, delay=0)
    assert f.published == [will]


def test_delayed_will_goes_out_only_after_the_delay_mqtt_3_1_3_9() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)
    will = wmsg()
    f.detach(session, NOW, will, delay=10)
    assert f.published == [] and f.reg.deadlines.when((WILL, "c1")) == NOW + 10
    f.reg.handle_timer(NOW + 9.999)
    assert f.published == []
    f.reg.handle_timer(NOW + 10)
    assert f.published == [will]
    f.reg.handle_timer(NOW + 60)  # the session then expires; the will is not sent again
    assert f.published == [will] and f.ended == [("c1", True)]


def test_delayed_will_goes_out_when_the_session_ends_first() -> None:
    # "until the Will Delay Interval has passed or the Session ends, whichever happens first"
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=5)
    will = wmsg()
    f.detach(session, NOW, will, delay=10)
    f.reg.handle_timer(NOW + 5)
    assert f.published == [will] and f.ended == [("c1", True)]
    f.reg.handle_timer(NOW + 10)
    assert f.published == [will]


def test_delayed_will_with_session_expiry_0_goes_out_at_once() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=0)
    will = wmsg()
    f.detach(session, NOW, will, delay=10)
    assert f.published == [will] and f.reg.next_deadline() is None


def test_reconnect_within_the_will_delay_cancels_the_will_mqtt_3_1_3_9() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)
    f.detach(session, NOW, wmsg(), delay=10)
    _, present, _ = f.attach("c1", clean=False)
    assert present is True
    f.reg.handle_timer(NOW + 3600)
    assert f.published == [] and "c1" in f.reg.sessions


def test_reconnect_with_clean_start_within_the_delay_publishes_the_will() -> None:
    # clean start ends the old session: its will goes out then, once
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)
    will = wmsg()
    f.detach(session, NOW, will, delay=10)
    _, present, _ = f.attach("c1", clean=True)
    assert present is False and f.published == [will]
    f.reg.handle_timer(NOW + 3600)
    assert f.published == [will]


def test_takeover_within_the_will_delay_sends_no_will_mqtt_3_1_3_9() -> None:
    """The old connection closes at once on takeover (as the broker's does): its delayed will
    is scheduled and then cancelled by the new connection to the session."""
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)

    def closed() -> None:
        f.detach(session, NOW, wmsg(), delay=10)

    f.reg.connections["c1"].on_disconnect = closed
    same, present, new = f.attach("c1", clean=False)
    assert same is session and present is True and f.reg.connections["c1"] is new
    f.reg.handle_timer(NOW + 3600)
    assert f.published == []


def test_discard_ends_an_offline_session_and_sends_its_delayed_will() -> None:
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)
    will = wmsg()
    f.detach(session, NOW, will, delay=10)
    assert f.reg.discard("c1") is True
    assert f.published == [will] and f.ended == [("c1", True)]
    assert f.reg.next_deadline() is None
    assert f.reg.discard("c1") is False


# -- max_sessions: eviction of the longest offline ---------------------------------------------------


def test_max_sessions_evicts_the_session_offline_longest() -> None:
    f = Fixture(max_sessions=3)
    a, _, _ = f.attach("a")
    b, _, _ = f.attach("b")
    f.attach("c")
    will = wmsg("b")
    f.detach(b, NOW, will, delay=100)  # b went offline first; its will waits
    f.detach(a, NOW + 1)
    _, present, _ = f.attach("d")
    assert present is False
    assert sorted(f.reg.sessions) == ["a", "c", "d"]
    assert f.metrics.sessions_evicted == 1
    assert f.ended == [("b", True)] and f.published == [will]  # as if it had expired
    assert f.reg.deadlines.when((WILL, "b")) is None


def test_max_sessions_with_every_session_connected_has_no_room() -> None:
    f = Fixture(max_sessions=2)
    f.attach("a")
    f.attach("b")
    assert f.reg.attach("c", FakeConn(), "10.0.0.9:1", False, 60, None) is None
    assert sorted(f.reg.sessions) == ["a", "b"] and "c" not in f.reg.connections
    assert f.metrics.sessions_evicted == 0
    assert f.reg.evict_offline() is False


def test_resuming_at_max_sessions_needs_no_room() -> None:
    f = Fixture(max_sessions=1)
    a, _, _ = f.attach("a")
    f.detach(a, NOW)
    again, present, _ = f.attach("a")
    assert again is a and present is True and f.metrics.sessions_evicted == 0



# -- restore: stored sessions count the downtime ----------------------------------------------------


class FakeStorage:
    """What restore and end_session write to storage, recorded."""

    def __init__(self) -> None:
        self.put: dict[str, tuple[int, float | None, StoredWill | None]] = {}
        self.deleted: list[str] = []

    def put_session(self, cid: str, expiry: int, disconnected_at: float | None,
                    will: StoredWill | None) -> None:
        self.put[cid] = (expiry, disconnected_at, will)

    def delete_session(self, cid: str) -> None:
        self.deleted.append(cid)

    def delete_item(self, seq: int, message: Message) -> None: ...

    def delete_subscription(self, cid: str, topic_filter: str) -> None: ...

    def delete_inbound(self, cid: str, packet_id: int) -> None: ...


def test_restore_counts_the_downtime_against_session_expiry() -> None:
    f = Fixture()
    store = FakeStorage()
    f.reg.storage = store  # type: ignore[assignment]
    f.reg.restore([
        StoredSession("recent", 60, WALL - 20),  # offline 20 s of its 60: 40 s left
        StoredSession("gone", 60, WALL - 61),  # expired while the broker was down
        StoredSession("online", 60, None),  # connected at the stop: counts from now
    ], NOW, WALL)
    assert f.reg.deadlines.when((EXPIRE, "recent")) == NOW + 40
    assert f.reg.deadlines.when((EXPIRE, "online")) == NOW + 60
    assert sorted(f.reg.sessions) == ["online", "recent"]
    assert f.ended == [("gone", True)] and store.deleted == ["gone"]
    assert list(f.reg.offline) == ["recent", "online"]  # longest offline first
    f.reg.handle_timer(NOW + 40)
    assert f.ended[-1] == ("recent", True)


def test_restore_schedules_a_stored_will_on_the_new_clock() -> None:
    f = Fixture()
    f.reg.storage = FakeStorage()  # type: ignore[assignment]
    will = wmsg("c1")
    # its delay ends 5 s after the restart, on the wall clock
    f.reg.restore([StoredSession("c1", 600, WALL - 5, StoredWill(will, 10, WALL + 5))],
                  NOW, WALL)
    assert f.reg.next_deadline() == NOW + 5
    f.reg.handle_timer(NOW + 4.999)
    assert f.published == []
    f.reg.handle_timer(NOW + 5)
    assert f.published == [will]

# -- the will as a message ------------------------------------------------------------------------


def test_will_message_drops_will_only_properties_and_counts_expiry_from_now() -> None:
    will = Will("w/t", b"bye", 1, True, {Prop.WILL_DELAY_INTERVAL: 10,
                                         Prop.MESSAGE_EXPIRY_INTERVAL: 30,
                                         Prop.CONTENT_TYPE: "text/plain"})
    m = will_message(will, "c1", NOW)
    assert (m.topic, m.payload, m.qos, m.retain, m.sender) == ("w/t", b"bye", 1, True, "c1")
    assert m.properties == {Prop.CONTENT_TYPE: "text/plain"}
    assert m.expires_at == NOW + 30
    assert will.properties[Prop.WILL_DELAY_INTERVAL] == 10  # the CONNECT's will is left as is


@pytest.mark.parametrize("props", [{}, {Prop.WILL_DELAY_INTERVAL: 5}])
def test_will_message_without_expiry_never_expires(props: dict[int, Any]) -> None:
    m = will_message(Will("w/t", b"", 0, False, props), "c1", NOW)
    assert m.properties is None and m.expires_at is None


def test_pending_will_keeps_the_connect_form_and_its_delay() -> None:
    will = Will("w/t", b"bye", 1, False, {Prop.WILL_DELAY_INTERVAL: 10,
                                          Prop.MESSAGE_EXPIRY_INTERVAL: 30})
    stored = pending_will(will, "c1")
    assert stored.delay == 10 and stored.at is None
    assert stored.message.properties == will.properties  # made into the message when it goes
    assert pending_will(Will("w/t", b""), "c1").delay == 0


def test_delayed_will_expiry_counts_from_its_publication() -> None:
    # [MQTT 3.1.3.2.4] the will's Message Expiry Interval "is sent as the Publication Expiry
    # Interval when the Server publishes the Will Message" (and [MQTT-3.3.2-6] counts down from
    # there): published at +10 with an interval of 5 s, it lives until +15
    f = Fixture()
    session, _, _ = f.attach("c1", expiry=60)
    will = Will("w/t", b"bye", 1, False, {Prop.WILL_DELAY_INTERVAL: 10,
                                          Prop.MESSAGE_EXPIRY_INTERVAL: 5})
    # as the broker does it at disconnect
    f.detach(session, NOW, will_message(will, "c1", NOW), delay=10)
    f.reg.handle_timer(NOW + 10)
    (sent,) = f.published
    assert not sent.expired(NOW + 10)
    assert sent.expires_at == NOW + 10 + 5
