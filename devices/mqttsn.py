"""A small MQTT-SN 1.2 client for the fleet's sleeping sensors: the codec of the messages a
sensor needs and an asyncio client over one UDP socket.

Self-contained on purpose (``devices`` tests the broker from outside and never imports
``mqttbroker``): written from the MQTT-SN 1.2 specification (Stanford-Clark and Truong, IBM,
2013), section 5 (message formats) and 6 (functional description).

Wire format [5.2]: ``Length`` (1 octet, the whole message's length including itself, when it
is < 256; else 0x01 and 2 octets big-endian), ``MsgType`` (1 octet), then the variable part.
``Flags`` [5.3.4]: DUP (bit 7), QoS (bits 6-5: 0b00 QoS 0, 0b01 QoS 1, 0b10 QoS 2, 0b11 QoS
-1), Retain (bit 4), Will (bit 3), CleanSession (bit 2), TopicIdType (bits 1-0: 0b00 normal
id, 0b01 predefined id, 0b10 short name).

What a sensor does with it: CONNECT (optionally with the will exchange, WILLTOPICREQ /
WILLTOPIC / WILLMSGREQ / WILLMSG) and CONNACK; REGISTER / REGACK both ways; PUBLISH at QoS
-1, 0 and 1 with PUBACK both ways; SUBSCRIBE / SUBACK; PINGREQ (with the client id: a
sleeping client waking up) / PINGRESP; DISCONNECT (with a Duration: going to sleep). Its own
QoS 1 PUBLISH, REGISTER and every other request are resent after ``retry_interval`` seconds
(PUBLISH with DUP set), at most ``max_retries`` times [6.13].
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger("devices.mqttsn")

__all__ = [
    "CONNACK", "CONNECT", "DISCONNECT", "PINGREQ", "PINGRESP", "PUBACK", "PUBLISH", "REGACK",
    "REGISTER", "SUBACK", "SUBSCRIBE", "WILLMSG", "WILLMSGREQ", "WILLTOPIC", "WILLTOPICREQ",
    "Packet", "SnClient", "SnError", "SnTimeout", "decode", "encode_connect",
    "encode_disconnect", "encode_pingreq", "encode_puback", "encode_publish",
    "encode_regack", "encode_register", "encode_subscribe", "encode_willmsg",
    "encode_willtopic", "flags",
]

# MsgType values [5.2.2, table 3]
CONNECT: Final = 0x04
CONNACK: Final = 0x05
WILLTOPICREQ: Final = 0x06
WILLTOPIC: Final = 0x07
WILLMSGREQ: Final = 0x08
WILLMSG: Final = 0x09
REGISTER: Final = 0x0A
REGACK: Final = 0x0B
PUBLISH: Final = 0x0C
PUBACK: Final = 0x0D
SUBSCRIBE: Final = 0x12
SUBACK: Final = 0x13
PINGREQ: Final = 0x16
PINGRESP: Final = 0x17
DISCONNECT: Final = 0x18

PROTOCOL_ID: Final = 0x01  # [5.3.6]
TOPIC_NORMAL: Final = 0
TOPIC_PREDEFINED: Final = 1
TOPIC_SHORT: Final = 2
ACCEPTED: Final = 0x00  # ReturnCode [5.3.10]
INVALID_TOPIC_ID: Final = 0x02

_QOS_BITS: Final = {0: 0b00, 1: 0b01, 2: 0b10, -1: 0b11}
_BITS_QOS: Final = {v: k for k, v in _QOS_BITS.items()}


class SnError(ValueError):
    """A datagram that is not a well-formed MQTT-SN message this client knows."""


class SnTimeout(Exception):
    """No answer from the gateway after every retry."""


def flags(*, dup: bool = False, qos: int = 0, retain: bool = False, will: bool = False,
          clean: bool = False, topic_id_type: int = TOPIC_NORMAL) -> int:
    """The Flags octet [5.3.4]."""
    if qos not in _QOS_BITS:
        raise SnError(f"QoS must be -1, 0, 1 or 2, got {qos!r}")
    if topic_id_type not in (0, 1, 2):
        raise SnError(f"TopicIdType must be 0, 1 or 2, got {topic_id_type!r}")
    return ((dup << 7) | (_QOS_BITS[qos] << 5) | (retain << 4) | (will << 3) | (clean << 2)
            | topic_id_type)


def _frame(msg_type: int, body: bytes) -> bytes:
    """Length (1 or 3 octets) + MsgType + body [5.2.1]."""
    n = len(body) + 2
    if n < 256:
        return bytes((n, msg_type)) + body
    n += 2
    if n > 0xFFFF:
        raise SnError(f"message too long for MQTT-SN: {n} octets")
    return b"\x01" + struct.pack("!H", n) + bytes((msg_type,)) + body


def encode_connect(client_id: str, duration: int, *, clean: bool = True,
                   will: bool = False) -> bytes:
    """CONNECT [5.4.4]: Flags, ProtocolId, Duration, ClientId."""
    cid = client_id.encode()
    if not 1 <= len(cid) <= 23:
        raise SnError(f"client id must be 1..23 octets, got {len(cid)}")
    return _frame(CONNECT, bytes((flags(will=will, clean=clean), PROTOCOL_ID))
                  + struct.pack("!H", duration) + cid)


def encode_willtopic(topic: str, qos: int = 1, retain: bool = True) -> bytes:
    """WILLTOPIC [5.4.7]: Flags (QoS, Retain), WillTopic."""
    return _frame(WILLTOPIC, bytes((flags(qos=qos, retain=retain),)) + topic.encode())


def encode_willmsg(message: bytes) -> bytes:
    """WILLMSG [5.4.9]."""
    return _frame(WILLMSG, message)


def encode_register(topic_id: int, msg_id: int, topic: str) -> bytes:
    """REGISTER [5.4.10]: TopicId (0 from a client), MsgId, TopicName."""
    return _frame(REGISTER, struct.pack("!HH", topic_id, msg_id) + topic.encode())


def encode_regack(topic_id: int, msg_id: int, code: int = ACCEPTED) -> bytes:
    """REGACK [5.4.11]: TopicId, MsgId, ReturnCode."""
    return _frame(REGACK, struct.pack("!HHB", topic_id, msg_id, code))


def encode_publish(topic_id: int, msg_id: int, data: bytes, *, qos: int = 0,
                   retain: bool = False, dup: bool = False,
                   topic_id_type: int = TOPIC_NORMAL) -> bytes:
    """PUBLISH [5.4.12]: Flags, TopicId (a short name's two octets), MsgId, Data."""
    return _frame(PUBLISH, bytes((flags(dup=dup, qos=qos, retain=retain,
                                        topic_id_type=topic_id_type),))
                  + struct.pack("!HH", topic_id, msg_id) + data)


def encode_puback(topic_id: int, msg_id: int, code: int = ACCEPTED) -> bytes:
    """PUBACK [5.4.13]: TopicId, MsgId, ReturnCode."""
    return _frame(PUBACK, struct.pack("!HHB", topic_id, msg_id, code))


def encode_subscribe(msg_id: int, topic: str, qos: int = 1, dup: bool = False) -> bytes:
    """SUBSCRIBE [5.4.15] by topic name: Flags (DUP, QoS, TopicIdType 0), MsgId, TopicName."""
    return _frame(SUBSCRIBE, bytes((flags(dup=dup, qos=qos),)) + struct.pack("!H", msg_id)
                  + topic.encode())


def encode_pingreq(client_id: str | None = None) -> bytes:
    """PINGREQ [5.4.19]; with the client id, a sleeping client is awake until PINGRESP."""
    return _frame(PINGREQ, client_id.encode() if client_id else b"")


def encode_disconnect(duration: int | None = None) -> bytes:
    """DISCONNECT [5.4.21]; with a Duration, the client goes to sleep for that long."""
    return _frame(DISCONNECT, b"" if duration is None else struct.pack("!H", duration))


def short_topic_id(name: str) -> int:
    """A short topic name (two characters) as the TopicId field [3 / 5.3.11]."""
    raw = name.encode()
    if len(raw) != 2:
        raise SnError(f"a short topic name is two octets, got {name!r}")
    return int(struct.unpack("!H", raw)[0])


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded message from the gateway; the fields a type does not have are left empty."""

    type: int
    flags: int = 0
    topic_id: int = 0
    msg_id: int = 0
    code: int = 0
    data: bytes = b""  # PUBLISH Data, REGISTER TopicName
    duration: int | None = None

    @property
    def qos(self) -> int:
        return _BITS_QOS[(self.flags >> 5) & 0b11]

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x80)

    @property
    def retain(self) -> bool:
        return bool(self.flags & 0x10)

    @property
    def topic_id_type(self) -> int:
        return self.flags & 0b11


def decode(datagram: bytes) -> Packet:
    """One datagram from the gateway -> :class:`Packet`, or :class:`SnError`."""
    if len(datagram) < 2:
        raise SnError("datagram shorter than 2 octets")
    if datagram[0] == 0x01:
        if len(datagram) < 4:
            raise SnError("3-octet length form cut short")
        length = struct.unpack_from("!H", datagram, 1)[0]
        head = 3
    else:
        length, head = datagram[0], 1
    if length != len(datagram):
        raise SnError(f"Length says {length} octets, the datagram has {len(datagram)}")
    t = datagram[head]
    body = datagram[head + 1:]

    def need(n: int, exact: bool = True) -> None:
        if len(body) < n or (exact and len(body) != n):
            raise SnError(f"message type 0x{t:02x}: body of {len(body)} octets")

    if t == CONNACK:
        need(1)
        return Packet(t, code=body[0])
    if t in (WILLTOPICREQ, WILLMSGREQ, PINGRESP):
        need(0)
        return Packet(t)
    if t == REGISTER:
        need(5, exact=False)
        tid, mid = struct.unpack_from("!HH", body)
        return Packet(t, topic_id=tid, msg_id=mid, data=body[4:])
    if t in (REGACK, PUBACK):
        need(5)
        tid, mid, code = struct.unpack("!HHB", body)
        return Packet(t, topic_id=tid, msg_id=mid, code=code)
    if t == PUBLISH:
        need(5, exact=False)
        tid, mid = struct.unpack_from("!HH", body, 1)
        return Packet(t, flags=body[0], topic_id=tid, msg_id=mid, data=body[5:])
    if t == SUBACK:
        need(6)
        tid, mid, code = struct.unpack_from("!HHB", body, 1)
        return Packet(t, flags=body[0], topic_id=tid, msg_id=mid, code=code)
    if t == DISCONNECT:
        if len(body) not in (0, 2):
            raise SnError(f"DISCONNECT: body of {len(body)} octets")
        return Packet(t, duration=struct.unpack("!H", body)[0] if body else None)
    raise SnError(f"message type 0x{t:02x} is not one this client handles")


# -- the client ---------------------------------------------------------------------------------

# on_message(topic name or None when unknown, payload, qos, dup)
OnMessage = Callable[[str | None, bytes, int, bool], None]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: SnClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._datagram(data)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        log.debug("%s: %s", self.client.client_id, exc)


class SnClient:
    """One sensor's MQTT-SN client on the running asyncio loop.

    Requests are stop-and-wait (one at a time, as a constrained client does): each coroutine
    sends, waits ``retry_interval`` seconds for its answer, resends (PUBLISH with DUP) and
    raises :class:`SnTimeout` after ``max_retries`` resends. What the gateway sends unasked
    (REGISTER, PUBLISH, the will prompts) is answered at once, whatever the client is doing.
    """

    def __init__(self, client_id: str, gateway: tuple[str, int], *,
                 retry_interval: float = 2.0, max_retries: int = 3,
                 on_message: OnMessage | None = None) -> None:
        self.client_id = client_id
        self.gateway = gateway
        self.retry_interval = retry_interval
        self.max_retries = max_retries
        self.on_message = on_message
        self.topics: dict[int, str] = {}  # normal topic ids, both ways of registering
        self.will: tuple[str, bytes] | None = None
        self.retransmissions = 0
        self.sent_datagrams = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[tuple[int, int], asyncio.Future[Packet]] = {}
        self._next_id = 0
        self._seen_inbound: dict[int, None] = {}  # QoS 1 msg ids delivered (DUP resends)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), remote_addr=self.gateway)
        self._transport = transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        self._waiting.clear()

    def msg_id(self) -> int:
        self._next_id = self._next_id % 0xFFFF + 1  # 1..65535
        return self._next_id

    def send(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.sendto(data)
            self.sent_datagrams += 1

    async def _request(self, build: Callable[[bool], bytes], key: tuple[int, int]) -> Packet:
        """Send ``build(dup)``, wait for the answer ``key`` = (MsgType, MsgId or 0), resend."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Packet] = loop.create_future()
        self._waiting[key] = fut
        try:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    self.retransmissions += 1
                self.send(build(attempt > 0))
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), self.retry_interval)
                except TimeoutError:
                    continue
            raise SnTimeout(f"{self.client_id}: no answer 0x{key[0]:02x} from the gateway "
                            f"after {self.max_retries} retries")
        finally:
            if self._waiting.get(key) is fut:
                del self._waiting[key]

    async def connect(self, duration: int, *, clean: bool,
                      will: tuple[str, bytes] | None = None) -> int:
        """CONNECT (with the will exchange when ``will`` = (topic, message)); the CONNACK's
        ReturnCode."""
        self.will = will
        data = encode_connect(self.client_id, duration, clean=clean, will=will is not None)
        ack = await self._request(lambda dup: data, (CONNACK, 0))
        return ack.code

    async def register(self, topic: str) -> int:
        """REGISTER a topic name; its normal topic id (0 when refused)."""
        mid = self.msg_id()
        data = encode_register(0, mid, topic)
        ack = await self._request(lambda dup: data, (REGACK, mid))
        if ack.code != ACCEPTED:
            return 0
        self.topics[ack.topic_id] = topic
        return ack.topic_id

    async def publish(self, topic_id: int, payload: bytes, qos: int, *, retain: bool = False,
                      topic_id_type: int = TOPIC_NORMAL) -> int:
        """PUBLISH at QoS 0 or 1: the PUBACK's ReturnCode at QoS 1 (0: accepted), 0 at QoS 0
        once the datagram is written."""
        if qos == 0:
            self.send(encode_publish(topic_id, 0, payload, qos=0, retain=retain,
                                     topic_id_type=topic_id_type))
            return ACCEPTED
        if qos != 1:
            raise SnError(f"this client publishes at QoS -1, 0 and 1, not {qos}")
        mid = self.msg_id()
        ack = await self._request(
            lambda dup: encode_publish(topic_id, mid, payload, qos=1, retain=retain, dup=dup,
                                       topic_id_type=topic_id_type), (PUBACK, mid))
        return ack.code

    def publish_minus_one(self, topic_id: int, payload: bytes,
                          topic_id_type: int = TOPIC_PREDEFINED) -> None:
        """QoS -1: no connection, no answer; a predefined id or a short name [6.8]."""
        self.send(encode_publish(topic_id, 0, payload, qos=-1, topic_id_type=topic_id_type))

    async def subscribe(self, topic: str, qos: int = 1) -> tuple[int, int]:
        """SUBSCRIBE by name: (granted QoS, topic id) or (-2, 0) when refused."""
        mid = self.msg_id()
        ack = await self._request(lambda dup: encode_subscribe(mid, topic, qos, dup),
                                  (SUBACK, mid))
        if ack.code != ACCEPTED:
            return -2, 0
        if ack.topic_id:
            self.topics[ack.topic_id] = topic
        return ack.qos, ack.topic_id

    async def sleep(self, duration: int) -> None:
        """DISCONNECT with a Duration; returns on the gateway's DISCONNECT [6.14]."""
        data = encode_disconnect(duration)
        await self._request(lambda dup: data, (DISCONNECT, 0))

    async def wake(self) -> None:
        """PINGREQ with the client id: what waited is delivered (answered as it comes by
        :meth:`_datagram`); returns on PINGRESP, the end of the wake-up [6.14]."""
        data = encode_pingreq(self.client_id)
        await self._request(lambda dup: data, (PINGRESP, 0))

    async def disconnect(self) -> None:
        data = encode_disconnect()
        await self._request(lambda dup: data, (DISCONNECT, 0))

    def _datagram(self, data: bytes) -> None:
        try:
            p = decode(data)
        except SnError as exc:
            log.info("%s: datagram from the gateway dropped: %s", self.client_id, exc)
            return
        if p.type == PUBLISH:
            self._publish_in(p)
            return
        if p.type == REGISTER:
            self.topics[p.topic_id] = p.data.decode(errors="replace")
            self.send(encode_regack(p.topic_id, p.msg_id))
            return
        if p.type == WILLTOPICREQ:
            if self.will is not None:
                self.send(encode_willtopic(self.will[0]))
            return
        if p.type == WILLMSGREQ:
            if self.will is not None:
                self.send(encode_willmsg(self.will[1]))
            return
        key = (p.type, p.msg_id if p.type in (REGACK, PUBACK, SUBACK) else 0)
        fut = self._waiting.get(key)
        if fut is not None and not fut.done():
            fut.set_result(p)
        elif p.type == DISCONNECT:
            log.info("%s: the gateway disconnected us", self.client_id)

    def _publish_in(self, p: Packet) -> None:
        name = self.topics.get(p.topic_id) if p.topic_id_type == TOPIC_NORMAL else None
        if p.qos == 1:
            code = ACCEPTED if name is not None or p.topic_id_type != TOPIC_NORMAL \
                else INVALID_TOPIC_ID
            self.send(encode_puback(p.topic_id, p.msg_id, code))
            if code != ACCEPTED:
                return
            if p.msg_id in self._seen_inbound and p.dup:
                return  # our PUBACK was lost and it came again: delivered already
            self._seen_inbound[p.msg_id] = None
            if len(self._seen_inbound) > 256:
                del self._seen_inbound[next(iter(self._seen_inbound))]
        if self.on_message is not None:
            self.on_message(name, p.data, p.qos, p.dup)
