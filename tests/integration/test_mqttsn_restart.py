"""MQTT-SN clients across a broker restart, with real processes (SQLite ``sync: commit``):
a sleeping client's registrations, its sleep and the messages kept for it survive SIGKILL and
SIGTERM [MQTT-SN 6.14]; so does an active client's topic id, and the will it updated. Raw datagrams on the MQTT-SN
side (SnRaw, test_mqttsn_interop.py), paho on the MQTT side."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mqttbroker.protocol.mqttsn import messages as sn

from .brokerproc import HOST, BrokerProc, broker_procs, free_port
from .helpers import Clients
from .test_mqttsn_interop import RC, SnRaw

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Any]:
    with broker_procs(tmp_path) as make:
        yield make


def _free_udp_port() -> int:
    """free_port() (below the ephemeral range, handed out once), also free for UDP."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        return port
    raise AssertionError("no port free for both TCP and UDP")


def sn_broker(procs: Any) -> tuple[BrokerProc, int]:
    """A broker with its MQTT-SN listener first: once the TCP port accepts connections (what
    BrokerProc.start waits for), the gateway has started and put its sessions back."""
    udp, tcp = _free_udp_port(), free_port()
    b: BrokerProc = procs("edge", port=tcp, extra={"listeners": {
        "sn": {"type": "mqttsn", "bind": f"{HOST}:{udp}", "advertise_interval": 0},
        "default": {"type": "tcp", "bind": f"{HOST}:{tcp}"}}})
    return b.start(), udp


@pytest.mark.parametrize("stop", ["kill", "terminate"])
def test_a_sleeper_and_an_active_client_keep_their_topic_ids_and_messages(
        procs: Any, stop: str) -> None:
    broker, udp = sn_broker(procs)
    mqtt = Clients(broker.port)
    sleeper, active = SnRaw(udp), SnRaw(udp)
    first, moved = SnRaw(udp), SnRaw(udp)  # one client id, two addresses (a takeover)
    try:
        watcher = mqtt.paho("watcher")
        watcher.subscribe(("sn/#", 1))
        sleeper.connect("sleeper", clean=False)
        up = sleeper.register("sn/up")
        assert sleeper.subscribe("cmd/#", 1).return_code == RC.ACCEPTED
        feed = mqtt.paho("feed")
        feed.publish("cmd/a", b"0", 1)
        g = sleeper.delivery()  # (the gateway registers cmd/a with it: REGISTER, REGACK)
        assert (g.topic, g.data) == ("cmd/a", b"0")
        cmd_a = g.publish.topic
        active.connect("active", clean=False, will=("sn/will", b"first words", 1, True))
        active.send(sn.WillTopicUpd("sn/will2", qos=1, retain=True))
        assert active.recv() == sn.WillTopicResp(RC.ACCEPTED)
        active.send(sn.WillMsgUpd(b"last words"))
        assert active.recv() == sn.WillMsgResp(RC.ACCEPTED)
        act = active.register("sn/act")
        first.connect("moved", clean=False)
        moved.connect("moved", clean=False)  # the same id from another address
        assert first.recv() == sn.Disconnect(None)  # (the old one is told)
        mov = moved.register("sn/moved")  # kept: the old connection's end must not drop it
        sleeper.send(sn.Disconnect(60))
        assert sleeper.recv() == sn.Disconnect(None)
        feed.publish("cmd/a", b"1", 1)  # kept for the sleeper (PUBACKed: on disk)
        feed.publish("cmd/b", b"2", 1)
        assert sleeper.pending() is None
        mqtt.close()

        broker.kill() if stop == "kill" else broker.terminate()
        broker.start()
        mqtt = Clients(broker.port)
        watcher = mqtt.paho("watcher")
        watcher.subscribe(("sn/#", 1))

        # the active clients go on with their topic ids, no new CONNECT or REGISTER
        active.publish(act, b"still here", 1)
        moved.publish(mov, b"moved here", 1)
        watcher.messages.wait_until(lambda ms: any(m.payload == b"still here" for m in ms))

        # the sleeper wakes: what was kept for it, cmd/a on the id it had, then PINGRESP
        sleeper.send(sn.Pingreq("sleeper"))
        registers: list[sn.Register] = []
        got = [sleeper.delivery(registers=registers) for _ in range(2)]
        assert [(g.topic, g.data) for g in got] == [("cmd/a", b"1"), ("cmd/b", b"2")]
        assert got[0].publish.topic == cmd_a
        assert [r.topic_name for r in registers] == ["cmd/b"]  # not cmd/a again
        assert sleeper.recv() == sn.Pingresp()
        sleeper.send(sn.Pingreq("sleeper"))
        assert sleeper.recv() == sn.Pingresp()  # each once

        # awake again: its own registration from before the restart still stands
        sleeper.send(sn.Connect("sleeper", 60, False, False))
        assert sleeper.recv() == sn.Connack(RC.ACCEPTED)
        sleeper.publish(up, b"awake", 1)
        watcher.messages.wait_until(lambda ms: any(m.payload == b"awake" for m in ms))
        topics = {m.payload: m.topic for m in watcher.messages.messages}
        assert topics[b"awake"] == "sn/up" and topics[b"still here"] == "sn/act"
        assert topics[b"moved here"] == "sn/moved"
        # a kill ended the active client's MQTT side with the broker: its will, as updated
        # (stored), went out at the restart; a clean stop discarded it
        wills = [(m.topic, m.payload) for m in watcher.messages.messages
                 if m.topic.startswith("sn/will")]
        assert wills == ([("sn/will2", b"last words")] if stop == "kill" else [])
    finally:
        mqtt.close()
        for c in (sleeper, active, first, moved):
            c.close()


def test_unreadable_stored_sessions_are_dropped_with_a_log_line(procs: Any) -> None:
    """Records the gateway cannot use (not msgpack; a map without its keys) are dropped at
    start with a warning naming the client id, and deleted from the store; the broker starts,
    and a client of that id connects afresh."""
    import sqlite3

    broker, udp = sn_broker(procs)
    broker.terminate()
    with sqlite3.connect(broker.db_path) as db:
        db.executemany("INSERT INTO records VALUES (?, ?, ?)", [
            ("mqttsn:sn", "garbled", b"\xc1 not msgpack"),
            ("mqttsn:sn", "partial", b"\x81\xa2id\xa7partial")])  # {"id": "partial"}
    broker.start()
    log = broker.log_text()
    assert "stored session of 'garbled' cannot be read" in log, log
    assert "stored session of 'partial' cannot be restored" in log, log
    deadline = time.monotonic() + 5  # (the deletes go out with the broker's next commit)
    while True:
        with sqlite3.connect(broker.db_path) as db:
            left = db.execute("SELECT count(*) FROM records").fetchone()[0]
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == 0
    c = SnRaw(udp)
    try:
        c.connect("partial", clean=False)
        assert c.register("sn/x") > 0
    finally:
        c.close()
