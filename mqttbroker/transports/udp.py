"""UDP listeners (the MQTT-SN gateway's): datagrams in, with their address and the loop's
time, to one callback; datagrams out through :class:`UdpEndpoint`. Nothing MQTT-SN here."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger("mqttbroker.udp")

Address = tuple[str, int]
OnDatagram = Callable[[bytes, Address, float], None]


class UdpEndpoint(asyncio.DatagramProtocol):
    """One bound UDP socket: every datagram goes to ``on_datagram(data, address, now)``."""

    def __init__(self, on_datagram: OnDatagram) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.sent = 0
        self.received = 0
        self.send_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received += 1
        self.on_datagram(data, addr, asyncio.get_running_loop().time())

    def error_received(self, exc: Exception) -> None:
        # (an ICMP port unreachable from a sensor that went away: nothing to do but count it)
        self.send_errors += 1
        log.debug("udp: %s", exc)

    def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram (dropped, as UDP may, when the socket cannot take it now)."""
        if self.transport is not None and not self.transport.is_closing():
            self.sent += 1
            self.transport.sendto(data, addr)

    def broadcast(self, data: bytes, addr: Address) -> None:
        """Send one datagram to a broadcast address (ADVERTISE)."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.send(data, addr)

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped for this socket (its receive buffer was full): the
        ``drops`` column of Linux's ``/proc/net/udp``/``udp6``; None where there is none."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is None:
            return None
        try:
            inode = str(os.fstat(sock.fileno()).st_ino)
        except OSError:
            return None
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(table, encoding="ascii") as fh:
                    next(fh, None)  # (the header)
                    for line in fh:
                        fields = line.split()
                        if len(fields) > 12 and fields[9] == inode:
                            return int(fields[12])
            except (OSError, ValueError):
                continue
        return None

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve_udp(host: str, port: int, on_datagram: OnDatagram, *,
                    reuse_port: bool = False) -> UdpEndpoint:
    """Bind ``host:port`` (port 0: a free one) and deliver its datagrams to ``on_datagram``.
    ``reuse_port``: several processes share the port (``serve --workers``); the kernel sends
    one source address's datagrams to one of them."""
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        lambda: UdpEndpoint(on_datagram), local_addr=(host or "0.0.0.0", port),
        reuse_port=reuse_port or None)
    return endpoint
