"""What the decoder fuzz target checks, for any bytes: ``check_decoder(data)``.

The input is a byte stream as a client (or a server) would send it. It is cut into frames by
:class:`FrameReader` as ``client.py`` does (``reader.feed(data)``), once all at once and once in
small pieces; every frame is then decoded at protocol levels 3, 4 and 5 (``decode(first, body,
level)``). Allowed outcomes, and nothing else:

* the reader returns frames, or raises :class:`ProtocolError` carrying an error reason code
  (0x80 and above), and does the same however the stream is cut into reads;
* ``decode`` returns a packet, or raises :class:`ProtocolError` with an error reason code;
* a decoded packet re-encodes (``encode(p, level)``) to exactly one frame that decodes to an
  equal packet, and encoding that packet again gives the same bytes.

Any other exception (IndexError, KeyError, ValueError, UnicodeError, RecursionError, ...) or a
failed assertion is a crash. The codec is canonical at the packet level with one documented
exception: a CONNACK's session-present flag does not exist in MQTT 3.1 (level 3), so ``encode``
drops it there. It is not canonical at the byte level (non-minimal variable byte integers,
reserved CONNACK flag bits, a v5 ack's explicit "0x00 + empty properties", user properties
interleaved with others): so the byte check is ``encode(decode(encode(p))) == encode(p)``.
"""

from __future__ import annotations

import dataclasses

from mqttbroker.errors import ProtocolError
from mqttbroker.protocol.codec import decode, encode, peek_protocol_level
from mqttbroker.protocol.constants import PacketType, ReasonCode
from mqttbroker.protocol.packets import Connack, Packet
from mqttbroker.protocol.reader import FrameReader

LEVELS = (3, 4, 5)
# a bound as small as this makes the reader's packet-too-large path reachable by small inputs
SMALL_MAX_PACKET = 64

Frames = list[tuple[int, bytes]]


def check_protocol_error(exc: ProtocolError, where: str) -> None:
    """A ProtocolError must carry an error reason code and a message (client.py turns both
    into a CONNACK or DISCONNECT and a log line)."""
    assert isinstance(exc.code, ReasonCode), f"{where}: code {exc.code!r} is not a ReasonCode"
    assert exc.code >= 0x80, f"{where}: reason code 0x{exc.code:02X} is not an error"
    assert isinstance(exc.message, str) and exc.message, f"{where}: no message"
    str(exc)


def read_frames(data: bytes, max_packet_size: int, chunk: int = 0
                ) -> tuple[Frames, ProtocolError | None, int]:
    """Feed ``data`` to a FrameReader (all at once, or ``chunk`` bytes per read): the frames,
    the ProtocolError that stopped it (if any) and the bytes it still holds."""
    reader = FrameReader(max_packet_size)
    frames: Frames = []
    step = chunk or max(len(data), 1)
    try:
        for i in range(0, len(data), step):
            frames += reader.feed(data[i:i + step])
    except ProtocolError as exc:
        check_protocol_error(exc, "FrameReader.feed")
        return frames, exc, reader.buffered()
    return frames, None, reader.buffered()


def _check_reader(data: bytes) -> Frames:
    """The frames of ``data``; however the stream is cut into reads, the reader agrees."""
    whole, error, left = read_frames(data, 1 << 28)
    # byte by byte for short inputs (every boundary), bigger pieces for long ones
    piece = 1 if len(data) <= 256 else 7
    pieces, perror, pleft = read_frames(data, 1 << 28, piece)
    assert (error is None) == (perror is None), (
        f"reader: all at once -> {error}, in {piece}-byte reads -> {perror}")
    if error is None:
        assert whole == pieces, "reader: different frames when fed in pieces"
        assert left == pleft, "reader: holds a different remainder when fed in pieces"
        assert sum(len(b) for _, b in whole) + left <= len(data)
    else:
        assert perror is not None and error.code == perror.code, (error, perror)
        # feed() raises for the whole read, so the frames before the error in that read are
        # not returned: the piecewise frames are the ones a connection could have acted on
        assert len(whole) <= len(pieces)
    read_frames(data, SMALL_MAX_PACKET)  # exercise the size limit; only ProtocolError allowed
    return pieces


def canonical(p: Packet, level: int) -> Packet:
    """``p`` as it comes back from ``decode(encode(p, level), level)``."""
    if isinstance(p, Connack) and level == 3 and p.session_present:
        # MQTT 3.1 has no session-present flag: encode leaves it out
        return dataclasses.replace(p, session_present=False)
    return p


def check_roundtrip(p: Packet, level: int, where: str = "") -> None:
    """``p`` (a decoded packet) re-encodes to one frame that decodes to an equal packet."""
    raw = encode(p, level)
    reader = FrameReader(1 << 28)
    frames = reader.feed(raw)
    assert len(frames) == 1 and not reader.buffered(), (
        f"{where}encode({p!r}, {level}) is not exactly one frame: {raw!r}")
    first, body = frames[0]
    try:
        q = decode(first, body, level)
    except ProtocolError as exc:
        raise AssertionError(f"{where}decode(encode({p!r}, {level})) failed: {exc}; "
                             f"bytes {raw!r}") from exc
    assert q == canonical(p, level), (
        f"{where}round trip at level {level} changed the packet:\n  {p!r}\n  {q!r}\n"
        f"  bytes {raw!r}")
    again = encode(q, level)
    assert again == raw, f"{where}encoding is not stable: {raw!r} then {again!r}"


def check_frame(first: int, body: bytes) -> list[Packet]:
    """Decode one frame at every level; every packet it gives must round-trip."""
    packets: list[Packet] = []
    if first >> 4 == PacketType.CONNECT:
        lvl = peek_protocol_level(body)
        assert lvl in (None, 3, 4, 5), f"peek_protocol_level gave {lvl!r}"
    for level in LEVELS:
        where = f"frame 0x{first:02X} {body!r} at level {level}: "
        try:
            p = decode(first, body, level)
        except ProtocolError as exc:
            check_protocol_error(exc, where)
            continue
        assert p.type == first >> 4, f"{where}decoded as {p!r}"
        check_roundtrip(p, level, where)
        packets.append(p)
    return packets


def check_decoder(data: bytes) -> int:
    """The decoder target: see the module docstring. Returns how many packets decoded."""
    decoded = 0
    for first, body in _check_reader(data):
        decoded += len(check_frame(first, body))
    return decoded
