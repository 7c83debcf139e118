"""The SQLite backend on its own: round trips, message reference counting, batch folding, the
lock, orphan clean-up, held output released only by a commit, and a failed commit retried."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mqttbroker.config import PersistenceConfig
from mqttbroker.errors import ConfigError
from mqttbroker.message import Message
from mqttbroker.persistence import open_storage
from mqttbroker.persistence.base import StoredWill
from mqttbroker.persistence.sqlite import SqliteStorage
from mqttbroker.protocol.packets import Subscription
from mqttbroker.protocol.properties import PropertyId


def make(path: Path, sync: str = "commit") -> SqliteStorage:
    return SqliteStorage(PersistenceConfig(backend="sqlite", path=str(path), sync=sync,
                                           fsync=False))


def rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        (n,) = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(n)


def test_memory_backend_is_no_storage() -> None:
    assert open_storage(PersistenceConfig()) is None


async def test_everything_round_trips(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    st = make(db)
    loop = asyncio.get_running_loop()
    snap = await st.open(loop)
    assert snap.sessions == [] and snap.retained == []
    props = {PropertyId.USER_PROPERTY: [("k", "v"), ("k", "w")],
             PropertyId.CONTENT_TYPE: "text/plain"}
    m1 = Message("a/b", b"one", 1, False, props, "pub", loop.time() + 100)
    m2 = Message("a/c", b"two", 2)
    will = Message("will/x", b"gone", 1, True, None, "c1")
    st.put_session("c1", 300, 1234.5, StoredWill(will, 5, None))
    st.put_subscription("c1", Subscription("a/#", 1, True, False, 2, 7))
    s1, s2 = st.next_seq(), st.next_seq()
    st.add_item("c1", s1, m1, 1, False, (7,), None, 3, 1)
    st.add_item("c1", s2, m2, 2, True, (), "$share/g/a/#", 0, 0)
    st.put_inbound("c1", 9)
    st.put_retained(m1, None)
    await st.close()

    st2 = make(db)
    snap = await st2.open(loop)
    (s,) = snap.sessions
    assert (s.client_id, s.expiry_interval, s.disconnected_at) == ("c1", 300, 1234.5)
    assert s.will is not None and s.will.delay == 5 and s.will.at is None
    assert (s.will.message.topic, s.will.message.payload, s.will.message.retain) == \
        ("will/x", b"gone", True)
    assert s.subscriptions == [Subscription("a/#", 1, True, False, 2, 7)]
    assert [(i.seq, i.message.topic, i.qos, i.retain, i.identifiers, i.share, i.packet_id,
             i.state) for i in s.items] == [
        (s1, "a/b", 1, False, (7,), None, 3, 1), (s2, "a/c", 2, True, (), "$share/g/a/#", 0, 0)]
    assert s.inbound_qos2 == [9]
    (r,) = snap.retained
    loaded = s.items[0].message
    assert r is loaded, "one message row, shared by the item and the retained entry"
    assert loaded.properties == props
    assert st2.refs(loaded)[1] == 2
    assert loaded.expires_at is not None and 95 < loaded.expires_at - loop.time() <= 100
    assert st2.next_seq() > s2
    await st2.close()


async def test_a_message_is_stored_once_and_deleted_with_its_last_reference(
        tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    st = make(db)
    await st.open(asyncio.get_running_loop())
    m = Message("t", b"x", 1)
    seqs = [st.next_seq() for _ in range(3)]
    for cid, seq in zip(("a", "b", "c"), seqs, strict=True):
        st.add_item(cid, seq, m, 1, False, (), None, 0, 0)
    await st.close()
    assert rows(db, "messages") == 1 and rows(db, "items") == 3

    st = make(db)
    snap = await st.open(asyncio.get_running_loop())
    assert snap.sessions == []  # items of unknown sessions are orphans: removed on load
    await st.close()
    assert rows(db, "items") == 0 and rows(db, "messages") == 0


async def test_changes_folded_before_a_commit_are_not_written(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    st = make(db, sync="periodic")  # nothing commits until close
    await st.open(asyncio.get_running_loop())
    st.put_session("c", 10, None, None)
    for _ in range(100):
        m = Message("t", b"x" * 10, 1)
        seq = st.next_seq()
        st.add_item("c", seq, m, 1, False, (), None, 0, 0)
        st.update_item("c", seq, m, 1, False, (), None, 5, 1)
        st.delete_item(seq, m)
    assert st.refs(m) == (0, 0)
    await st.close()
    assert st.rows_written == 1  # only the session row
    assert rows(db, "messages") == 0 and rows(db, "items") == 0


async def test_a_second_broker_cannot_open_the_same_database(tmp_path: Path) -> None:
    st = make(tmp_path / "db.sqlite")
    await st.open(asyncio.get_running_loop())
    other = make(tmp_path / "db.sqlite")
    with pytest.raises(ConfigError, match="in use by another running broker"):
        await other.open(asyncio.get_running_loop())
    await st.close()
    again = make(tmp_path / "db.sqlite")
    await again.open(asyncio.get_running_loop())
    await again.close()


class Conn:
    """Stands in for a ClientConnection: records what the store releases to it."""

    def __init__(self) -> None:
        self.released: list[list[bytes]] = []

    def release_committed(self, data: list[bytes]) -> None:
        self.released.append(data)


async def test_held_output_waits_for_the_commit_of_earlier_changes(tmp_path: Path) -> None:
    st = make(tmp_path / "db.sqlite")
    await st.open(asyncio.get_running_loop())
    conn = Conn()
    assert not st.keep_until_committed(conn, b"free")  # nothing uncommitted: send at once
    st.put_session("c", 10, None, None)
    assert st.keep_until_committed(conn, b"ack1") and st.keep_until_committed(conn, b"ack2")
    assert conn.released == []
    for _ in range(100):
        if conn.released:
            break
        await asyncio.sleep(0.01)
    assert conn.released == [[b"ack1", b"ack2"]]
    assert st.commits == 1
    await st.close()


async def test_a_failed_commit_keeps_holding_and_is_retried(tmp_path: Path) -> None:
    st = make(tmp_path / "db.sqlite")
    await st.open(asyncio.get_running_loop())
    real = st._write
    failures = [OSError("disk full")]

    def flaky(batch: object) -> None:
        if failures:
            raise failures.pop()
        real(batch)  # type: ignore[arg-type]

    st._write = flaky  # type: ignore[method-assign]
    conn = Conn()
    st.put_session("c", 10, None, None)
    assert st.keep_until_committed(conn, b"ack")
    await asyncio.sleep(0.3)
    assert conn.released == [] and st.commits == 0  # failed: still held
    for _ in range(200):
        if conn.released:
            break
        await asyncio.sleep(0.01)
    assert conn.released == [[b"ack"]] and st.commits == 1
    await st.close()
    assert rows(tmp_path / "db.sqlite", "sessions") == 1


async def test_extension_records_round_trip_by_owner(tmp_path: Path) -> None:
    """put_record/delete_record (an MQTT-SN listener's sessions) come back per owner; a
    record deleted in the batch that made it is never written."""
    db = tmp_path / "r.sqlite"
    s = make(db)
    assert (await s.open(asyncio.get_running_loop())).records == {}
    s.put_record("mqttsn:sn", "c1", b"\x01")
    s.put_record("mqttsn:sn", "c2", b"\x02")
    s.put_record("mqttsn:other", "c1", b"\x03")
    s.delete_record("mqttsn:sn", "c2")
    await s.close()
    assert rows(db, "records") == 2
    s = make(db)
    snap = await s.open(asyncio.get_running_loop())
    assert snap.records == {"mqttsn:sn": {"c1": b"\x01"}, "mqttsn:other": {"c1": b"\x03"}}
    s.put_record("mqttsn:sn", "c1", b"\x04")  # replaced
    s.delete_record("mqttsn:other", "c1")
    await s.close()
    s = make(db)
    assert (await s.open(asyncio.get_running_loop())).records == {"mqttsn:sn": {"c1": b"\x04"}}
    await s.close()
