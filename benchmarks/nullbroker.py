"""A "null broker" for calibrating the load generator: CONNACK to CONNECT, SUBACK to SUBSCRIBE,
every PUBLISH forwarded byte for byte to every other connection (PUBACK to the sender for
QoS 1), nothing else: no sessions, no topic matching, no QoS state. It is not an MQTT broker;
it shows what the machine and the load generator add on their own (the latency floor).

    python -m benchmarks.nullbroker PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import ClassVar

import uvloop


class Relay(asyncio.Protocol):
    peers: ClassVar[list[Relay]] = []

    def __init__(self) -> None:
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop transports do not subclass asyncio.Transport
        Relay.peers.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        Relay.peers.remove(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        i, n = 0, len(buf)
        while n - i >= 2:
            first, rem, hdr, shift = buf[i], 0, 1, 0
            while True:
                if i + hdr >= n:
                    self.buf = buf[i:]
                    return
                b = buf[i + hdr]
                rem |= (b & 0x7F) << shift
                hdr += 1
                shift += 7
                if not b & 0x80:
                    break
            if n - i < hdr + rem:
                break
            kind = first >> 4
            if kind == 1:                                       # CONNECT
                self.transport.write(b"\x20\x02\x00\x00")   # type: ignore[attr-defined]
            elif kind == 8:                                     # SUBSCRIBE: grant QoS 1
                pid = buf[i + hdr:i + hdr + 2]
                self.transport.write(b"\x90\x03" + pid + b"\x01")  # type: ignore[attr-defined]
            elif kind == 3:                                     # PUBLISH
                frame = buf[i:i + hdr + rem]
                for p in Relay.peers:
                    if p is not self:
                        p.transport.write(frame)  # type: ignore[attr-defined]
                if (first >> 1) & 3 == 1:
                    t = i + hdr
                    tl = int.from_bytes(buf[t:t + 2], "big")
                    self.transport.write(  # type: ignore[attr-defined]
                        b"\x40\x02" + buf[t + 2 + tl:t + 4 + tl])
            i += hdr + rem
        self.buf = buf[i:]


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Relay, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
