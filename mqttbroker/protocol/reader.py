"""Split a byte stream into MQTT frames: fixed header, Remaining Length, body.

No I/O: ``feed(data)`` returns the complete frames it now holds, as ``(first_byte, body)``.
"""

from __future__ import annotations

from ..errors import ProtocolError
from .constants import MAX_PACKET_SIZE, ReasonCode


class FrameReader:
    """Accumulates bytes and cuts complete frames.

    ``max_packet_size`` bounds a whole packet (header included); a frame that announces more is
    refused before its body arrives, so a peer cannot make the broker buffer it.
    """

    __slots__ = ("_buf", "max_packet_size")

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        # None while nothing is held: an idle connection keeps no buffer (an empty
        # bytearray is 56 bytes, and one that held a packet keeps its capacity)
        self._buf: bytearray | None = None
        self.max_packet_size = max_packet_size

    def buffered(self) -> int:
        """Bytes held that do not make a complete frame yet."""
        return len(self._buf) if self._buf is not None else 0

    def head(self, n: int) -> bytes:
        """The first ``n`` bytes held (of a frame not complete yet)."""
        return bytes(self._buf[:n]) if self._buf is not None else b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add ``data``; return every complete frame, in order."""
        buf = self._buf
        if buf is None:
            buf = self._buf = bytearray(data)
        else:
            buf += data
        frames: list[tuple[int, bytes]] = []
        pos = 0
        n = len(buf)
        limit = self.max_packet_size
        while n - pos >= 2:
            # Remaining Length: at most four bytes [MQTT-1.5.5]
            length = 0
            shift = 0
            i = pos + 1
            while True:
                if i >= n:
                    break
                b = buf[i]
                length |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError(ReasonCode.MALFORMED_PACKET,
                                        "remaining length longer than four bytes")
            else:  # pragma: no cover - the loop only leaves by break
                pass
            if i > n or (i == n and buf[i - 1] & 0x80):
                break  # the length itself is not complete yet
            total = i - pos + length
            if total > limit:
                raise ProtocolError(ReasonCode.PACKET_TOO_LARGE,
                                    f"packet of {total} bytes exceeds the maximum of {limit}")
            end = i + length
            if end > n:
                break
            frames.append((buf[pos], bytes(buf[i:end])))
            pos = end
        if pos == n:
            self._buf = None
        elif pos:
            del buf[:pos]
        return frames
