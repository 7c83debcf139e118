"""MQTT data representations [MQTT 1.5]: integers, UTF-8 strings, binary data, varints."""

from __future__ import annotations

from ..errors import EncodeError, ProtocolError
from .constants import ReasonCode


def _malformed(msg: str) -> ProtocolError:
    return ProtocolError(ReasonCode.MALFORMED_PACKET, msg)


class Buffer:
    """A read cursor over one packet body; every read checks bounds (a truncated field is
    a malformed packet, never an IndexError)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        """Bytes not read yet."""
        return len(self.data) - self.pos

    def read_byte(self) -> int:
        """One unsigned byte."""
        if self.pos >= len(self.data):
            raise _malformed("packet truncated (expected a byte)")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def read_u16(self) -> int:
        """A two-byte big-endian integer [MQTT 1.5.2]."""
        p = self.pos
        if p + 2 > len(self.data):
            raise _malformed("packet truncated (expected a two-byte integer)")
        self.pos = p + 2
        return (self.data[p] << 8) | self.data[p + 1]

    def read_u32(self) -> int:
        """A four-byte big-endian integer [MQTT 1.5.3, v5]."""
        p = self.pos
        if p + 4 > len(self.data):
            raise _malformed("packet truncated (expected a four-byte integer)")
        self.pos = p + 4
        return int.from_bytes(self.data[p:p + 4], "big")

    def read_bytes(self, n: int) -> bytes:
        """Exactly ``n`` raw bytes."""
        p = self.pos
        if p + n > len(self.data):
            raise _malformed(f"packet truncated (expected {n} bytes, {len(self.data) - p} left)")
        self.pos = p + n
        return bytes(self.data[p:p + n])

    def rest(self) -> bytes:
        """Everything not read yet."""
        out = bytes(self.data[self.pos:])
        self.pos = len(self.data)
        return out


def decode_utf8(raw: bytes) -> str:
    """Validate and decode an MQTT UTF-8 string.

    [MQTT-1.5.3-1] ill-formed UTF-8 (surrogates included) and [MQTT-1.5.3-2] U+0000 make the
    packet malformed.
    """
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"invalid UTF-8 in string: {exc.reason}") from None
    if "\x00" in s:
        raise _malformed("string contains U+0000 [MQTT-1.5.3-2]")
    return s


def read_string(buf: Buffer) -> str:
    """A length-prefixed UTF-8 string [MQTT 1.5.3]."""
    return decode_utf8(buf.read_bytes(buf.read_u16()))


def read_binary(buf: Buffer) -> bytes:
    """Length-prefixed binary data [MQTT 1.5.6 (v5)]."""
    return buf.read_bytes(buf.read_u16())


def read_varint(buf: Buffer) -> int:
    """A variable byte integer of at most four bytes [MQTT 1.5.5]."""
    value = 0
    for shift in (0, 7, 14, 21):
        b = buf.read_byte()
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
    raise _malformed("variable byte integer longer than four bytes")


def encode_varint(n: int) -> bytes:
    """Encode a variable byte integer (0 .. 268,435,455)."""
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_string(s: str) -> bytes:
    """A length-prefixed UTF-8 string."""
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise EncodeError("string longer than 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def encode_binary(b: bytes) -> bytes:
    """Length-prefixed binary data."""
    if len(b) > 0xFFFF:
        raise EncodeError("binary data longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b
