"""A small raw MQTT client over asyncio sockets, for tests that must send exact bytes.

Unlike paho-mqtt or amqtt it never validates what it is asked to send: ``send(bytes)`` writes
anything, which is what bad-input and fuzz tests need. What it reads is split with the broker's
own sans-I/O :class:`~mqttbroker.protocol.reader.FrameReader` and decoded with
:func:`~mqttbroker.protocol.codec.decode`.

    c = await RawClient.open(port)
    ack = await c.connect("dev-1")              # Connack
    await c.subscribe("ok/#", qos=1)            # Suback
    await c.publish("ok/x", b"hi", qos=1)       # Puback
    p = await c.next_publish()                  # Publish (QoS 1/2 acknowledged for you)
    await c.send(b"\\x36\\x03\\x00\\x01a")      # anything at all
    assert await c.expect_closed(2.0)           # the server closed the socket
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TypeVar

from mqttbroker.errors import ProtocolError
from mqttbroker.protocol.codec import decode, encode
from mqttbroker.protocol.constants import MAX_PACKET_SIZE
from mqttbroker.protocol.packets import (
    Connack,
    Connect,
    Packet,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from mqttbroker.protocol.primitives import encode_varint
from mqttbroker.protocol.reader import FrameReader

__all__ = ["ConnectionClosed", "RawClient", "connect_bytes", "frame", "mqtt_string"]

P = TypeVar("P", bound=Packet)
_CLOSED_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


class ConnectionClosed(Exception):
    """The server closed the connection while a packet was expected."""


def frame(first: int, body: bytes) -> bytes:
    """A packet: first byte, Remaining Length (as a varint), body. No checks at all."""
    return bytes((first,)) + encode_varint(len(body)) + body


def mqtt_string(s: str | bytes) -> bytes:
    """A length-prefixed string; ``bytes`` are sent as they are (ill-formed UTF-8 included)."""
    raw = s.encode("utf-8") if isinstance(s, str) else s
    return len(raw).to_bytes(2, "big") + raw


def connect_bytes(client_id: str, clean: bool = True, keepalive: int = 60, level: int = 4,
                  will: Will | None = None, username: str | None = None,
                  password: bytes | None = None) -> bytes:
    """A valid CONNECT packet (``level`` 3 uses the protocol name ``MQIsdp``)."""
    name = "MQIsdp" if level == 3 else "MQTT"
    return encode(Connect(name, level, client_id, clean, keepalive, username, password, will),
                  level)


class RawClient:
    """One raw MQTT connection; see the module docstring."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 level: int = 4) -> None:
        self.reader = reader
        self.writer = writer
        self.level = level
        self.received = bytearray()  # every byte the server sent, in order
        self.closed = False  # the server closed (or reset) the connection
        self._frames = FrameReader(MAX_PACKET_SIZE)
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self._next_pid = 0

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1", level: int = 4) -> RawClient:
        """Open a TCP connection to the broker."""
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, level)

    @property
    def local_address(self) -> str:
        """``host:port`` of this end: how the broker names us before CONNECT."""
        host, port = self.writer.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def next_packet_id(self) -> int:
        """1, 2, ... 65535, 1, ... (never 0)."""
        self._next_pid = self._next_pid % 0xFFFF + 1
        return self._next_pid

    # -- raw bytes ------------------------------------------------------------------------------

    async def send(self, data: bytes) -> bool:
        """Write ``data`` as is; False when the server had already closed the connection."""
        if self.writer.is_closing():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except _CLOSED_ERRORS:
            self.closed = True
            return False
        return True

    async def _read_some(self, timeout: float) -> bytes:
        """Read what is available; b"" when the server closed. TimeoutError on silence."""
        if self.closed:
            return b""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), max(timeout, 0.0))
        except _CLOSED_ERRORS:
            data = b""
        if not data:
            self.closed = True
            return b""
        self.received += data
        self._pending.extend(self._frames.feed(data))
        return data

    async def read_packet(self, timeout: float = 2.0) -> Packet:
        """The next packet from the server.

        Raises :class:`ConnectionClosed` if the server closes first, ``TimeoutError`` if nothing
        complete arrives within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not self._pending:
            if not await self._read_some(deadline - time.monotonic()):
                raise ConnectionClosed("the server closed the connection")
        first, body = self._pending.popleft()
        return decode(first, body, self.level)

    async def expect_closed(self, timeout: float = 2.0) -> bool:
        """Wait for the server to close the connection: True if it did (EOF or reset) within
        ``timeout`` seconds, False if it was still open. Bytes read meanwhile are kept in
        ``received`` (and as packets for :meth:`read_packet`)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            try:
                await self._read_some(deadline - time.monotonic())
            except TimeoutError:
                return False
            except ProtocolError:  # the server's bytes did not even frame: keep draining
                self._frames = FrameReader(MAX_PACKET_SIZE)
        return True

    async def close(self) -> None:
        """Close our end (no DISCONNECT: use :meth:`disconnect` for a clean goodbye)."""
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except (TimeoutError, *_CLOSED_ERRORS):
            pass

    def abort(self) -> None:
        """Reset the connection."""
        self.writer.transport.abort()

    # -- packets --------------------------------------------------------------------------------

    async def send_packet(self, packet: Packet) -> bool:
        """Encode ``packet`` at this connection's level and send it."""
        return await self.send(encode(packet, self.level))

    async def connect(self, client_id: str, clean: bool = True, keepalive: int = 60,
                      level: int | None = None, will: Will | None = None,
                      username: str | None = None, password: bytes | None = None,
                      timeout: float = 2.0) -> Connack:
        """Send CONNECT and return the CONNACK (whatever its return code)."""
        if level is not None:
            self.level = level
        await self.send(connect_bytes(client_id, clean, keepalive, self.level, will, username,
                                      password))
        p = await self.read_packet(timeout)
        assert isinstance(p, Connack), f"expected CONNACK, got {p!r}"
        return p

    async def subscribe(self, topic_filter: str | list[tuple[str, int]], qos: int = 0,
                        timeout: float = 2.0) -> Suback:
        """SUBSCRIBE to one filter (or a list of ``(filter, qos)``); return the SUBACK."""
        pairs = [(topic_filter, qos)] if isinstance(topic_filter, str) else topic_filter
        pid = self.next_packet_id()
        await self.send_packet(Subscribe(pid, [Subscription(f, q) for f, q in pairs]))
        p = await self._expect(Suback, timeout)
        assert p.packet_id == pid, f"SUBACK for {p.packet_id}, expected {pid}"
        return p

    async def unsubscribe(self, *topic_filters: str, timeout: float = 2.0) -> Unsuback:
        """UNSUBSCRIBE and return the UNSUBACK."""
        pid = self.next_packet_id()
        await self.send_packet(Unsubscribe(pid, list(topic_filters)))
        return await self._expect(Unsuback, timeout)

    async def publish(self, topic: str, payload: bytes = b"", qos: int = 0, retain: bool = False,
                      timeout: float = 2.0) -> Packet | None:
        """PUBLISH and complete its flow: None at QoS 0, the PUBACK at 1, the PUBCOMP at 2."""
        pid = self.next_packet_id() if qos else None
        await self.send_packet(Publish(topic, payload, qos, retain, False, pid))
        if qos == 0:
            return None
        if qos == 1:
            return await self._expect(Puback, timeout)
        await self._expect(Pubrec, timeout)
        assert pid is not None
        await self.send_packet(Pubrel(pid))
        return await self._expect(Pubcomp, timeout)

    async def next_publish(self, timeout: float = 2.0) -> Publish:
        """The next PUBLISH from the server (other packets are skipped); a QoS 1 PUBLISH is
        acknowledged and a QoS 2 one is answered with PUBREC (and its PUBREL with PUBCOMP)."""
        return await self._expect(Publish, timeout)

    async def disconnect(self) -> None:
        """DISCONNECT, then close."""
        await self.send(b"\xe0\x00")
        await self.close()

    async def _expect(self, cls: type[P], timeout: float) -> P:
        deadline = time.monotonic() + timeout
        while True:
            p = await self.read_packet(deadline - time.monotonic())
            if isinstance(p, Publish) and p.packet_id is not None:
                ack: Packet = Puback(p.packet_id) if p.qos == 1 else Pubrec(p.packet_id)
                await self.send_packet(ack)
            elif isinstance(p, Pubrel):
                await self.send_packet(Pubcomp(p.packet_id))
            if isinstance(p, cls):
                return p
