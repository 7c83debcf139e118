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
        if buf is not None:  # a frame began in an earlier read
            buf += data
            i, length = _remaining_length(bytes(buf[:5]), 0, min(len(buf), 5))
            if 0 < i + length <= self.max_packet_size and len(buf) < i + length:
                return []  # (still incomplete: nothing copied, however large it grows)
            data = bytes(buf)
            self._buf = None
        # frames are cut from ``data`` itself: one copy per frame (its bytes slice)
        frames: list[tuple[int, bytes]] = []
        pos = 0
        n = len(data)
        limit = self.max_packet_size
        try:
            while n - pos >= 2:
                i, length = _remaining_length(data, pos, n)
                if i < 0:
                    break  # the length itself is not complete yet
                total = i - pos + length
                if total > limit:
                    raise ProtocolError(ReasonCode.PACKET_TOO_LARGE,
                                        f"packet of {total} bytes exceeds the maximum of "
                                        f"{limit}")
                end = i + length
                if end > n:
                    break
                frames.append((data[pos], data[i:end]))
                pos = end
        finally:
            if pos < n:  # the unfinished rest is held (after a refusal: what head() reads)
                self._buf = bytearray(data[pos:])
        return frames


def _remaining_length(data: bytes, pos: int, n: int) -> tuple[int, int]:
    """The Remaining Length of the frame at ``pos`` (``data[:n]`` held): ``(where its body
    begins, its value)``, or ``(-1, 0)`` while its bytes are not all in. At most four bytes
    [MQTT-1.5.5]: a fifth is malformed."""
    length = 0
    shift = 0
    i = pos + 1
    while i < n:
        b = data[i]
        length |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return i, length
        shift += 7
        if shift > 21:
            raise ProtocolError(ReasonCode.MALFORMED_PACKET,
                                "remaining length longer than four bytes")
    return -1, 0
