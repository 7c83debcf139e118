"""The fleet's own MQTT-SN 1.2 client (devices/mqttsn.py): golden bytes written by hand from
the specification's message formats (section 5.4; Length [5.2.1], Flags [5.3.4]), then the
client against a fake gateway on a local UDP socket (answers, retransmission with DUP,
bounded retries)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from devices import mqttsn as m
from devices.profile import Profile


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# -- encoding (client -> gateway) ---------------------------------------------------------------

@pytest.mark.parametrize(("got", "want"), [
    # CONNECT: Length 10, 0x04, Flags CleanSession (bit 2), ProtocolId 0x01, Duration 30, "sn-1"
    (m.encode_connect("sn-1", 30, clean=True), "0a 04 04 01 001e 736e2d31"),
    # ... with Will (bit 3), without CleanSession
    (m.encode_connect("sn-1", 30, clean=False, will=True), "0a 04 08 01 001e 736e2d31"),
    # WILLTOPIC: Flags QoS 1 (bits 6-5 = 01) + Retain (bit 4) = 0x30, "a/b"
    (m.encode_willtopic("a/b"), "06 07 30 612f62"),
    (m.encode_willmsg(b"offline"), "09 09 6f66666c696e65"),
    # REGISTER: TopicId 0 (from a client), MsgId 1, "a/b"
    (m.encode_register(0, 1, "a/b"), "09 0a 0000 0001 612f62"),
    # REGACK: TopicId 5, MsgId 1, ReturnCode accepted
    (m.encode_regack(5, 1), "07 0b 0005 0001 00"),
    # PUBLISH QoS 1, normal id 5, MsgId 2, "hi"
    (m.encode_publish(5, 2, b"hi", qos=1), "09 0c 20 0005 0002 6869"),
    # ... resent: DUP (bit 7)
    (m.encode_publish(5, 2, b"hi", qos=1, dup=True), "09 0c a0 0005 0002 6869"),
    # ... retained, QoS 0, MsgId 0
    (m.encode_publish(5, 0, b"hi", qos=0, retain=True), "09 0c 10 0005 0000 6869"),
    # QoS -1 (bits 6-5 = 11) on predefined id 1 (TopicIdType 01)
    (m.encode_publish(1, 0, b"x", qos=-1, topic_id_type=m.TOPIC_PREDEFINED),
     "08 0c 61 0001 0000 78"),
    # QoS -1 on the short topic name "bc" (TopicIdType 10): its two octets are the TopicId
    (m.encode_publish(m.short_topic_id("bc"), 0, b"x", qos=-1, topic_id_type=m.TOPIC_SHORT),
     "08 0c 62 6263 0000 78"),
    # PUBACK: TopicId 5, MsgId 2, accepted / invalid topic id
    (m.encode_puback(5, 2), "07 0d 0005 0002 00"),
    (m.encode_puback(5, 2, m.INVALID_TOPIC_ID), "07 0d 0005 0002 02"),
    # SUBSCRIBE by name, QoS 1, MsgId 3, "x/y"
    (m.encode_subscribe(3, "x/y", 1), "08 12 20 0003 782f79"),
    # PINGREQ with the client id (a sleeper waking up) and without
    (m.encode_pingreq("sn-1"), "06 16 736e2d31"),
    (m.encode_pingreq(), "02 16"),
    # DISCONNECT with a Duration of 5 s (going to sleep) and without
    (m.encode_disconnect(5), "04 18 0005"),
    (m.encode_disconnect(), "02 18"),
])
def test_golden_bytes(got: bytes, want: str) -> None:
    assert got == h(want)


def test_length_forms() -> None:
    # 255 octets in all still fits the 1-octet Length
    one = m.encode_publish(5, 2, b"a" * 248, qos=1)
    assert len(one) == 255 and one[:2] == h("ff 0c")
    # 256 and more: 0x01 then the whole length (3-octet Length included) in 2 octets
    three = m.encode_publish(5, 2, b"a" * 249, qos=1)
    assert len(three) == 258 and three[:5] == h("01 0102 0c 20")
    assert m.decode(h("01 0102 0c 20 0005 0002") + b"a" * 249).data == b"a" * 249
    big = m.encode_publish(5, 2, b"a" * 300)
    assert big[:4] == h("01 0135 0c") and len(big) == 0x135


def test_flags() -> None:
    assert m.flags(qos=-1) == 0x60 and m.flags(qos=2) == 0x40 and m.flags(dup=True) == 0x80
    assert m.flags(will=True, clean=True) == 0x0C
    with pytest.raises(m.SnError):
        m.flags(qos=3)
    with pytest.raises(m.SnError):
        m.encode_connect("x" * 24, 10)
    with pytest.raises(m.SnError):
        m.short_topic_id("abc")


# -- decoding (gateway -> client) ---------------------------------------------------------------

def test_decode_answers() -> None:
    assert m.decode(h("03 05 00")) == m.Packet(m.CONNACK, code=0)
    assert m.decode(h("03 05 03")).code == 3  # rejected: not supported
    assert m.decode(h("02 06")).type == m.WILLTOPICREQ
    assert m.decode(h("02 08")).type == m.WILLMSGREQ
    assert m.decode(h("07 0b 0005 0001 00")) == m.Packet(m.REGACK, topic_id=5, msg_id=1)
    assert m.decode(h("07 0d 0005 0002 03")) == m.Packet(m.PUBACK, topic_id=5, msg_id=2,
                                                        code=3)
    suback = m.decode(h("08 13 20 0007 0003 00"))
    assert (suback.type, suback.qos, suback.topic_id, suback.msg_id, suback.code) == \
        (m.SUBACK, 1, 7, 3, 0)
    assert m.decode(h("02 17")).type == m.PINGRESP
    assert m.decode(h("02 18")) == m.Packet(m.DISCONNECT)
    assert m.decode(h("04 18 0005")).duration == 5


def test_decode_gateway_requests() -> None:
    reg = m.decode(h("0b 0a 0009 0004 612f622f63"))
    assert (reg.type, reg.topic_id, reg.msg_id, reg.data) == (m.REGISTER, 9, 4, b"a/b/c")
    pub = m.decode(h("09 0c a2 6263 0007 6869"))  # DUP, QoS 1, short topic "bc"
    assert (pub.dup, pub.qos, pub.retain, pub.topic_id_type) == (True, 1, False, m.TOPIC_SHORT)
    assert (pub.topic_id, pub.msg_id, pub.data) == (0x6263, 7, b"hi")
    assert m.decode(h("07 0c 70 0001 0000")).qos == -1


@pytest.mark.parametrize("bad", [
    "", "02", "03 05", "05 05 00", "04 05 00 00",  # short, Length wrong, body too long
    "02 99", "02 04",  # unknown to this client / a message a gateway does not send
    "01 00", "01 0006 0c 00",  # 3-octet Length cut short or wrong
    "06 0c 20 0005",  # PUBLISH without MsgId
    "03 18 00",  # DISCONNECT with a 1-octet Duration
])
def test_decode_rejects(bad: str) -> None:
    with pytest.raises(m.SnError):
        m.decode(h(bad))


# -- the client against a fake gateway ----------------------------------------------------------

class FakeGateway:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()

    async def recv(self, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
                return data, addr
            except BlockingIOError:
                if loop.time() > deadline:
                    raise TimeoutError from None
                await asyncio.sleep(0.005)


def test_client_retransmits_with_dup_then_gives_up() -> None:
    async def main() -> None:
        gw = FakeGateway()
        c = m.SnClient("sn-1", gw.address, retry_interval=0.1, max_retries=2)
        await c.open()
        task = asyncio.create_task(c.publish(5, b"hi", 1))
        first, addr = await gw.recv()
        second, _ = await gw.recv()
        assert first == h("09 0c 20 0005 0001 6869")
        assert second == h("09 0c a0 0005 0001 6869")  # same MsgId, DUP set
        gw.sock.sendto(h("07 0d 0005 0001 00"), addr)
        assert await task == m.ACCEPTED
        assert c.retransmissions == 1
        # nobody answers: 1 + max_retries sends, then SnTimeout
        task2 = asyncio.create_task(c.register("a/b"))
        sends = [(await gw.recv())[0] for _ in range(3)]
        assert sends == [h("09 0a 0000 0002 612f62")] * 3
        with pytest.raises(m.SnTimeout):
            await task2
        with pytest.raises(TimeoutError):
            await gw.recv(timeout=0.3)
        c.close()
        gw.sock.close()

    asyncio.run(main())


def test_client_answers_gateway_and_wakes() -> None:
    got: list[tuple[str | None, bytes, int, bool]] = []

    async def main() -> None:
        gw = FakeGateway()
        c = m.SnClient("sn-1", gw.address, retry_interval=1.0, max_retries=1,
                       on_message=lambda *a: got.append(a))
        await c.open()
        wake = asyncio.create_task(c.wake())
        data, addr = await gw.recv()
        assert data == h("06 16 736e2d31")
        # what waited: REGISTER first, then the PUBLISH, then an unknown id, then PINGRESP
        gw.sock.sendto(h("0b 0a 0009 0004 612f622f63"), addr)
        assert (await gw.recv())[0] == h("07 0b 0009 0004 00")
        gw.sock.sendto(h("09 0c 20 0009 0005 6869"), addr)
        assert (await gw.recv())[0] == h("07 0d 0009 0005 00")
        gw.sock.sendto(h("09 0c a0 0009 0005 6869"), addr)  # our PUBACK was "lost": again
        assert (await gw.recv())[0] == h("07 0d 0009 0005 00")
        gw.sock.sendto(h("09 0c 20 0063 0006 6869"), addr)
        assert (await gw.recv())[0] == h("07 0d 0063 0006 02")  # invalid topic id
        gw.sock.sendto(h("02 17"), addr)
        await wake
        # CONNECT with the will exchange
        conn = asyncio.create_task(c.connect(10, clean=True, will=("s/t", b"off")))
        assert (await gw.recv())[0] == h("0a 04 0c 01 000a 736e2d31")
        gw.sock.sendto(h("02 06"), addr)
        assert (await gw.recv())[0] == h("06 07 30 732f74")
        gw.sock.sendto(h("02 08"), addr)
        assert (await gw.recv())[0] == h("05 09 6f6666")
        gw.sock.sendto(h("03 05 00"), addr)
        assert await conn == 0
        c.close()
        gw.sock.close()

    asyncio.run(main())
    assert got == [("a/b/c", b"hi", 1, False)]  # the DUP resend is not delivered twice


# -- profile keys ---------------------------------------------------------------------------------

def test_profile_sleep_and_beacon_keys() -> None:
    p = Profile(sleep={"duration": 20}, beacon={"topic": "bc"})
    assert p.sleep == {"duration": 20.0, "awake_every": 2.0, "wakes": 2.0, "commands": 1.0}
    assert p.beacon == {"topic": "bc"}
    assert Profile(beacon={"topic": "fleet/b", "topic_id": 3}).beacon["topic_id"] == 3
    for bad in ({"duration": 0}, {"duration": 1.5}, {"duration": 5, "awake_every": 6},
                {"wakes": -1}, {"commands": 0.5}, {"nap": 1}, {"duration": "5"}):
        with pytest.raises(ValueError, match="sleep"):
            Profile(sleep=bad)
    for bad_beacon in ({"topic": "long"}, {"topic": "a/#", "topic_id": 1},
                       {"topic": "x/y", "topic_id": 0}, {"topic_id": 1}, {"topic": "bc", "x": 1}):
        with pytest.raises(ValueError, match="beacon"):
            Profile(beacon=bad_beacon)
