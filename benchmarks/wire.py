"""A tiny MQTT 3.1.1 encoder and frame splitter for the load generator.

Only what the benchmarks send and receive: CONNECT, SUBSCRIBE, PUBLISH, the four QoS acks,
PINGREQ and DISCONNECT. Packets are built once, as bytes, before a measurement starts; the hot
paths in :mod:`benchmarks.loadgen` slice pre-encoded blobs and never call these per message.

Every benchmark payload starts with the same 16-byte header, so a subscriber can count loss
and duplicates exactly and measure latency: publisher id (u32), sequence number (u32) and the
send time in ``time.monotonic_ns()`` (u64, 0 when unused), big-endian, then zero padding.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

PAYLOAD_HEADER = struct.Struct(">IIQ")
PAYLOAD_SIZE = 64
# Offsets inside a payload (see the module docstring).
PUB_OFFSET, SEQ_OFFSET, TS_OFFSET = 0, 4, 8

DISCONNECT_PACKET = b"\xe0\x00"
PINGREQ_PACKET = b"\xc0\x00"


def varint(n: int) -> bytes:
    """The Remaining Length encoding: 7 bits a byte, high bit = more (at most 4 bytes)."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect(client_id: str, *, keepalive: int = 600, clean: bool = True) -> bytes:
    """CONNECT, protocol level 4 (3.1.1), no will, no credentials."""
    flags = 0x02 if clean else 0x00
    body = _str("MQTT") + bytes([4, flags]) + keepalive.to_bytes(2, "big") + _str(client_id)
    return _packet(CONNECT << 4, body)


def subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE (fixed-header flags 0b0010 [MQTT-3.8.1-1]) for (filter, QoS) pairs."""
    body = packet_id.to_bytes(2, "big") + b"".join(_str(f) + bytes([q]) for f, q in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0,
            retain: bool = False, dup: bool = False) -> bytes:
    """One PUBLISH."""
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _str(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return _packet(first, body)


def ack(kind: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0b0010) or PUBCOMP."""
    return bytes([(kind << 4) | (0x02 if kind == PUBREL else 0), 2]) + packet_id.to_bytes(2, "big")


def payload(pub: int, seq: int, ts_ns: int = 0) -> bytes:
    """A 64-byte benchmark payload."""
    head = PAYLOAD_HEADER.pack(pub, seq, ts_ns)
    return head + bytes(PAYLOAD_SIZE - len(head))


def packet_id_for(seq: int) -> int:
    """Packet ids cycle 1..65535; a bounded in-flight window never has two alike."""
    return seq % 65535 + 1


class PublishLayout:
    """Where things sit in a fixed-size PUBLISH frame (topic length and QoS fixed)."""

    def __init__(self, topic: str, qos: int, *, retain: bool = False) -> None:
        self.topic, self.qos, self.retain = topic, qos, retain
        template = publish(topic, payload(0, 0), qos=qos, packet_id=1 if qos else 0,
                           retain=retain)
        self.template = template
        self.size = len(template)
        self.first = template[0]
        tlen = len(topic.encode())
        self.remaining = 2 + tlen + (2 if qos else 0) + PAYLOAD_SIZE
        hdr = 1 + len(varint(self.remaining))
        assert hdr + self.remaining == self.size
        self.pid_offset = hdr + 2 + tlen if qos else -1
        self.payload_offset = hdr + 2 + tlen + (2 if qos else 0)

    def blob(self, pub: int, first_seq: int, count: int) -> bytes:
        """``count`` consecutive PUBLISH frames, sequence numbers from ``first_seq``."""
        arr = np.frombuffer(self.template, dtype=np.uint8)
        frames = np.tile(arr, (count, 1))
        seqs = np.arange(first_seq, first_seq + count, dtype=np.uint32)
        po = self.payload_offset
        frames[:, po + PUB_OFFSET:po + PUB_OFFSET + 4] = np.frombuffer(
            struct.pack(">I", pub), dtype=np.uint8)
        frames[:, po + SEQ_OFFSET:po + SEQ_OFFSET + 4] = (
            seqs.astype(">u4").view(np.uint8).reshape(count, 4))
        if self.qos:
            pids = (seqs % 65535 + 1).astype(">u2").view(np.uint8).reshape(count, 2)
            frames[:, self.pid_offset:self.pid_offset + 2] = pids
        return frames.tobytes()


def be_u32(cols: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """Big-endian u32 from an (n, 4) uint8 array."""
    return np.ascontiguousarray(cols).view(">u4").reshape(-1).astype(np.uint32)


def be_u64(cols: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """Big-endian u64 from an (n, 8) uint8 array."""
    return np.ascontiguousarray(cols).view(">u8").reshape(-1).astype(np.uint64)


def take_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """The complete frames at the front of ``buf``, as (first byte, body), removed from it;
    a partial frame stays for the next read."""
    frames, used = split_frames(buf)
    chunk = bytes(buf[:used])
    del buf[:used]
    return [(first, chunk[start:end]) for first, start, end in frames]


def split_frames(buf: bytes | bytearray, start: int = 0
                 ) -> tuple[list[tuple[int, int, int]], int]:
    """Complete frames in ``buf`` from ``start`` on, as (first byte, body start, body end), and
    the offset just past the last complete one. The generic path: one Python step a frame."""
    frames: list[tuple[int, int, int]] = []
    i, n = start, len(buf)
    while i + 2 <= n:
        first = buf[i]
        j = i + 1
        rem = shift = 0
        while True:
            if j >= n:
                return frames, i
            b = buf[j]
            rem |= (b & 0x7F) << shift
            j += 1
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ValueError("malformed remaining length")
        if j + rem > n:
            break
        frames.append((first, j, j + rem))
        i = j + rem
    return frames, i
