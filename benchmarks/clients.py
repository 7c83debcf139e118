"""The load generator's MQTT clients: asyncio protocols over raw sockets, no MQTT library.

* :class:`SubClient` counts every PUBLISH into a :class:`Tally` and acknowledges QoS 1/2 at
  once. Runs of fixed-size PUBLISH frames (one topic length, one QoS) are decoded with numpy in
  one pass per read, and all their PUBACK/PUBREC go out in one write; short reads and anything
  else take a plain per-frame path.
* :class:`PubClient` sends a pre-encoded blob of PUBLISH frames: QoS 0 in big chunks under TCP
  backpressure, QoS 1/2 with a bounded in-flight window refilled per batch of acks.
* :class:`IdleClient` connects and stays quiet.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from . import wire

HOST = "127.0.0.1"
WINDOW = 100                 # QoS 1/2 PUBLISH in flight per publisher connection
CHUNK_FRAMES = 512           # QoS 0: frames handed to the transport per write
WRITE_HIGH_WATER = 256 * 1024
IP_BIND_ADDRESS_NO_PORT = 24  # Linux: pick the source port at connect(), by 4-tuple
SMALL_BATCH = 16             # fewer frames than this in one read: plain Python beats numpy


class LoadgenError(RuntimeError):
    """A client or worker failed, or did not answer in time."""


# --------------------------------------------------------------------------------------------
# Counting deliveries


class Tally:
    """Deliveries per (publisher id, sequence number): exact loss and duplicates, and the
    send-to-receive latency when payloads carry a send time."""

    def __init__(self, npubs: int, per_pub: int, *, latency: bool = False) -> None:
        self.npubs, self.per_pub = npubs, per_pub
        self.hits: npt.NDArray[np.uint16] = np.zeros(npubs * per_pub, dtype=np.uint16)
        self.received = 0          # every PUBLISH counted, duplicates included
        self.unexpected = 0        # (publisher, sequence) outside what was planned
        self.first_ns = 0
        self.last_ns = 0
        self.reach_target = 0      # record when `received` first reaches this...
        self.reach_ns = 0          # ...here
        self.track_latency = latency
        self.latencies: list[npt.NDArray[np.int64]] = []

    def add(self, pubs: npt.NDArray[np.uint32], seqs: npt.NDArray[np.uint32],
            ts: npt.NDArray[np.uint64] | None, now: int) -> None:
        n = len(pubs)
        if not n:
            return
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        self.received += n
        if self.reach_target and not self.reach_ns and self.received >= self.reach_target:
            self.reach_ns = now
        ok = (pubs < self.npubs) & (seqs < self.per_pub)
        idx = pubs.astype(np.int64) * self.per_pub + seqs
        if not ok.all():
            self.unexpected += int(n - ok.sum())
            idx = idx[ok]
        np.add.at(self.hits, idx, 1)
        if self.track_latency and ts is not None:
            stamped = ts[ts > 0].astype(np.int64)
            if len(stamped):
                self.latencies.append(now - stamped)

    def add_list(self, pubs: list[int], seqs: list[int], stamps: list[int], now: int) -> None:
        """The same for a few messages, without numpy's per-call overhead."""
        if not pubs:
            return
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        self.received += len(pubs)
        if self.reach_target and not self.reach_ns and self.received >= self.reach_target:
            self.reach_ns = now
        hits, npubs, per_pub = self.hits, self.npubs, self.per_pub
        for pub, seq in zip(pubs, seqs, strict=True):
            if pub < npubs and seq < per_pub:
                hits[pub * per_pub + seq] += 1
            else:
                self.unexpected += 1
        if self.track_latency:
            lat = [now - t for t in stamps if t]
            if lat:
                self.latencies.append(np.array(lat, dtype=np.int64))

    def unique(self, sent: Sequence[int] | None = None) -> int:
        """Distinct messages received (only those with sequence < ``sent[pub]`` if given)."""
        if sent is None:
            return int(np.count_nonzero(self.hits))
        hits = self.hits.reshape(self.npubs, self.per_pub)
        return sum(int(np.count_nonzero(hits[p, :min(s, self.per_pub)]))
                   for p, s in enumerate(sent))

    def dups(self) -> int:
        return int(self.hits.sum(dtype=np.int64)) - int(np.count_nonzero(self.hits))


# --------------------------------------------------------------------------------------------
# Client protocols


class BaseClient(asyncio.Protocol):
    """CONNECT/CONNACK and SUBSCRIBE/SUBACK bookkeeping shared by the clients."""

    transport: asyncio.Transport

    def __init__(self, client_id: str, *, clean: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self.client_id = client_id
        self.clean = clean          # CONNECT clean session flag (False: a persistent session)
        self.connack: asyncio.Future[int] = loop.create_future()
        self.suback: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.client_id}: connection lost ({exc})"))
                fut.exception()  # retrieved: nobody may be waiting (a publisher's SUBACK)
        if not self.closed.done():
            self.closed.set_result(None)

    def _control(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == wire.CONNACK and not self.connack.done():
            self.connack.set_result(body[1] if len(body) >= 2 else 255)
        elif kind == wire.SUBACK and not self.suback.done():
            self.suback.set_result(body[2:])

    async def handshake(self, timeout: float = 10.0) -> None:
        if self.transport.is_closing():  # e.g. libuv sheds connections when out of fds
            raise ConnectionError(f"{self.client_id}: closed by the broker before CONNECT")
        self.transport.write(wire.connect(self.client_id, clean=self.clean))
        rc = await asyncio.wait_for(self.connack, timeout)
        if rc != 0:
            raise LoadgenError(f"{self.client_id}: CONNACK return code {rc}")

    async def subscribe(self, filters: list[tuple[str, int]], timeout: float = 10.0) -> bytes:
        self.transport.write(wire.subscribe(1, filters))
        granted = await asyncio.wait_for(self.suback, timeout)
        if any(g == 0x80 for g in granted):
            raise LoadgenError(f"{self.client_id}: subscription refused: {granted!r}")
        return granted

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(wire.DISCONNECT_PACKET)
            self.transport.close()


class SubClient(BaseClient):
    """A subscriber that counts every PUBLISH into a :class:`Tally` and acknowledges QoS 1
    (PUBACK) and QoS 2 (PUBREC, then PUBCOMP for each PUBREL) at once, one write per read."""

    def __init__(self, client_id: str, layout: wire.PublishLayout, tally: Tally, *,
                 clean: bool = True) -> None:
        super().__init__(client_id, clean=clean)
        self.tally = tally
        self.buf = b""
        self.size = layout.size
        self.first_masked = layout.first & 0xFE       # retain flag may differ
        self.remaining = layout.remaining if layout.remaining < 128 else -1
        self.po = layout.payload_offset
        self.pid_offset = layout.pid_offset
        self.qos = layout.qos

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buf = self.buf + data if self.buf else data
        size = self.size
        n = len(buf) // size
        start = 0
        if n >= SMALL_BATCH and self.remaining > 0:
            arr = np.frombuffer(buf, dtype=np.uint8, count=n * size).reshape(n, size)
            ok = ((arr[:, 0] & 0xFE) == self.first_masked) & (arr[:, 1] == self.remaining)
            k = n if bool(ok.all()) else int(np.argmin(ok))
            if k:
                rows = arr[:k]
                po = self.po
                ts = wire.be_u64(rows[:, po + 8:po + 16]) if self.tally.track_latency else None
                self.tally.add(wire.be_u32(rows[:, po:po + 4]),
                               wire.be_u32(rows[:, po + 4:po + 8]), ts, now)
                if self.qos:
                    acks = np.empty((k, 4), dtype=np.uint8)
                    acks[:, 0] = (wire.PUBACK if self.qos == 1 else wire.PUBREC) << 4
                    acks[:, 1] = 2
                    acks[:, 2:4] = rows[:, self.pid_offset:self.pid_offset + 2]
                    self.transport.write(acks.tobytes())
                start = k * size
        if start < len(buf):
            start = self._generic(buf, start, now)
        self.buf = buf[start:]

    def _generic(self, buf: bytes, start: int, now: int) -> int:
        frames, end = wire.split_frames(buf, start)
        out = bytearray()
        pubs: list[int] = []
        seqs: list[int] = []
        stamps: list[int] = []
        unpack = wire.PAYLOAD_HEADER.unpack_from
        hsize = wire.PAYLOAD_HEADER.size
        for first, b0, b1 in frames:
            kind = first >> 4
            if kind == wire.PUBLISH:
                qos = (first >> 1) & 3
                p = b0 + 2 + int.from_bytes(buf[b0:b0 + 2], "big")
                if qos:
                    out += bytes(((wire.PUBACK if qos == 1 else wire.PUBREC) << 4, 2))
                    out += buf[p:p + 2]
                    p += 2
                if b1 - p >= hsize:
                    pub, seq, ts = unpack(buf, p)
                    pubs.append(pub)
                    seqs.append(seq)
                    stamps.append(ts)
                else:
                    self.tally.unexpected += 1
            elif kind == wire.PUBREL:
                out += bytes((wire.PUBCOMP << 4, 2))
                out += buf[b0:b0 + 2]
            else:
                self._control(first, buf[b0:b1])
        if out:
            self.transport.write(bytes(out))
        if len(pubs) >= SMALL_BATCH:
            self.tally.add(np.array(pubs, np.uint32), np.array(seqs, np.uint32),
                           np.array(stamps, np.uint64), now)
        else:
            self.tally.add_list(pubs, seqs, stamps, now)
        return end


class PubClient(BaseClient):
    """A publisher sending a pre-encoded blob of ``count`` fixed-size PUBLISH frames.

    QoS 0: chunks of frames while the transport is below its high-water mark (TCP
    backpressure paces it). QoS 1/2: at most ``window`` messages unacknowledged (PUBACK, or
    PUBCOMP after PUBREC/PUBREL); every batch of acks read releases as many frames, in one
    write. ``stop()`` (the time cap) stops new messages; ``finished`` resolves once every
    message sent is acknowledged (QoS 1/2) or handed to the kernel (QoS 0)."""

    def __init__(self, client_id: str, blob: bytes, size: int, qos: int,
                 window: int = WINDOW, *, clean: bool = True) -> None:
        super().__init__(client_id, clean=clean)
        self.blob = memoryview(blob)
        self.size = size
        self.count = len(blob) // size
        self.qos = qos
        self.window = window
        self.sent = 0
        self.completed = 0
        self.paused = False
        self.running = False
        self.stopping = False
        self.buf = b""
        self.first_ns = 0
        self.last_ns = 0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.running and self.qos == 0:
            self._pump()

    def start(self) -> None:
        self.running = True
        self.first_ns = time.monotonic_ns()
        self._pump()

    def stop(self) -> None:
        self.stopping = True
        self._check_finished()

    def _write(self, upto: int) -> None:
        s = self.size
        self.transport.write(self.blob[self.sent * s:upto * s])
        self.sent = upto

    def _pump(self) -> None:
        if self.qos == 0:
            rounds = 0
            while (not self.paused and not self.stopping and self.sent < self.count
                   and rounds < 16):
                self._write(min(self.count, self.sent + CHUNK_FRAMES))
                rounds += 1
            if (not self.paused and not self.stopping and self.sent < self.count):
                asyncio.get_running_loop().call_soon(self._pump)
        elif not self.stopping:
            upto = min(self.count, self.completed + self.window)
            if upto > self.sent:
                self._write(upto)
        self._check_finished()

    def _check_finished(self) -> None:
        if self.finished.done() or not self.running:
            return
        if self.qos == 0:
            if self.sent == self.count or self.stopping:
                self.last_ns = self.last_ns or time.monotonic_ns()
                self.finished.set_result(None)
        elif self.completed >= self.sent and (self.sent == self.count or self.stopping):
            self.last_ns = time.monotonic_ns()
            self.finished.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        n = len(buf) // 4
        start = 0
        if n >= SMALL_BATCH:
            arr = np.frombuffer(buf, dtype=np.uint8, count=n * 4).reshape(n, 4)
            ok = arr[:, 1] == 2
            k = n if bool(ok.all()) else int(np.argmin(ok))
            if k:
                kinds = arr[:k, 0] >> 4
                if self.qos == 1:
                    self.completed += int(np.count_nonzero(kinds == wire.PUBACK))
                elif self.qos == 2:
                    recs = kinds == wire.PUBREC
                    if recs.any():
                        rel = arr[:k][recs].copy()
                        rel[:, 0] = (wire.PUBREL << 4) | 0x02
                        self.transport.write(rel.tobytes())
                    self.completed += int(np.count_nonzero(kinds == wire.PUBCOMP))
                if not self.connack.done() and bool((kinds == wire.CONNACK).any()):
                    i = int(np.argmax(kinds == wire.CONNACK))
                    self._control(int(arr[i, 0]), bytes(arr[i, 2:4]))
                start = k * 4
        if start < len(buf):
            frames, start = wire.split_frames(buf, start)
            rel = bytearray()
            for first, b0, b1 in frames:
                kind = first >> 4
                if kind == wire.PUBACK or kind == wire.PUBCOMP:
                    self.completed += 1
                elif kind == wire.PUBREC:
                    rel += b"\x62\x02"
                    rel += buf[b0:b0 + 2]
                else:
                    self._control(first, buf[b0:b1])
            if rel:
                self.transport.write(bytes(rel))
        self.buf = buf[start:]
        if self.running:
            self._pump()


class IdleClient(BaseClient):
    """A connection that says CONNECT, waits for CONNACK and then stays quiet."""

    def data_received(self, data: bytes) -> None:
        if not self.connack.done():
            frames, _ = wire.split_frames(data, 0)
            for first, b0, b1 in frames:
                self._control(first, data[b0:b1])


async def open_client(factory: Callable[[], BaseClient], port: int, host: str = HOST,
                      source: str | None = None) -> BaseClient:
    """Connect (optionally from ``source``, port chosen at connect time) and return the
    protocol, handshake not yet done."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
        _, proto = await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    return proto
