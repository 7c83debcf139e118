"""The contract of :mod:`mqttbroker.transports.rawtcp` (plain TCP on one epoll per listener),
over real loopback sockets, with a plain ``asyncio.Protocol`` that records what it is told.

The broker's suite exercises these transports through MQTT; this file holds them to the
``asyncio.Transport`` semantics they claim (connection_made, data_received, eof_received,
connection_lost exactly once, write buffer limits and flow control, pause/resume reading,
write_eof, close, abort, get_extra_info) and ``RawServer`` to the parts of ``asyncio.Server``
the broker uses. Every test runs on the stdlib loop (the suite's) and on uvloop (what
``mqttbroker serve`` runs on).
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import os
import random
import socket
import struct
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from mqttbroker.transports import rawtcp

TIMEOUT = 5.0  # seconds any single wait may take before the test fails
HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """pytest-asyncio's hook: each test runs on both loops."""
    policy: asyncio.AbstractEventLoopPolicy = (
        uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy())
    return policy


async def test_runs_on_the_loop_asked_for(
        event_loop_policy: asyncio.AbstractEventLoopPolicy) -> None:
    """The override above is deprecated in pytest-asyncio 1.x (its replacement, a hook, can
    only live in a conftest.py and would apply to the whole suite): should it stop taking
    effect, this fails instead of the uvloop half silently running on the stdlib loop."""
    on_uvloop = isinstance(asyncio.get_running_loop(), uvloop.Loop)
    assert on_uvloop == isinstance(event_loop_policy, uvloop.EventLoopPolicy)


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that do not repeat: a reordering or a lost chunk shows."""
    return random.Random(seed).randbytes(n)


class Boom(Exception):
    """What a protocol raises on purpose."""


class Rec(asyncio.Protocol):
    """Records every call, in order; optional behaviours for the tests."""

    def __init__(self, box: Box, *, keep_open: bool = False, echo: bool = False,
                 pause_on_made: bool = False) -> None:
        self.box = box
        self.keep_open = keep_open
        self.echo = echo
        self.pause_on_made = pause_on_made
        self.transport: rawtcp.RawTransport | None = None
        self.made_with: list[asyncio.BaseTransport] = []
        self.peer_when_made: Any = None
        self.events: list[str] = []
        self.data = bytearray()
        self.lost: list[Exception | None] = []
        self.pauses: list[int] = []  # write buffer size at each pause_writing
        self.resumes: list[int] = []  # ... and at each resume_writing
        self.on_resume: Callable[[rawtcp.RawTransport], None] | None = None

    @property
    def t(self) -> rawtcp.RawTransport:
        assert self.transport is not None
        return self.transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, rawtcp.RawTransport)
        self.transport = transport
        self.made_with.append(transport)
        self.peer_when_made = transport.get_extra_info("peername")  # (accept()'s address)
        self.events.append("made")
        if self.pause_on_made:
            transport.pause_reading()
        self.box.protos.append(self)
        self.box.changed()

    def data_received(self, data: bytes) -> None:
        self.events.append("data")
        self.data += data
        self.box.changed()
        if b"boom" in data:
            raise Boom(f"data_received failed on {data!r}")
        if self.echo:
            self.t.write(data)

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.box.changed()
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.append(exc)
        self.box.changed()

    def pause_writing(self) -> None:
        self.events.append("pause")
        self.pauses.append(self.t.get_write_buffer_size())
        self.box.changed()

    def resume_writing(self) -> None:
        self.events.append("resume")
        self.resumes.append(self.t.get_write_buffer_size())
        self.box.changed()
        if self.on_resume is not None:
            self.on_resume(self.t)


class Box:
    """The protocols a test's servers made, and an event to wait on any change."""

    def __init__(self) -> None:
        self.protos: list[Rec] = []
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def until(self, cond: Callable[[], bool], what: str,
                    timeout: float = TIMEOUT) -> None:
        """Wait (bounded) until ``cond()``, re-checked on every protocol call."""
        async def wait() -> None:
            while not cond():
                self._changed.clear()
                await self._changed.wait()
        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")

    async def proto(self, i: int) -> Rec:
        """The ``i``-th protocol made (0-based), once made."""
        await self.until(lambda: len(self.protos) > i, f"connection #{i} to be made")
        return self.protos[i]


class Env:
    """Servers, their protocols and client sockets of one test; all closed at the end."""

    def __init__(self) -> None:
        self.box = Box()
        self.servers: list[rawtcp.RawServer] = []
        self.clients: list[socket.socket] = []

    async def serve(self, *, port: int = 0, reuse_port: bool = False,
                    start_serving: bool = True, defer_accept: bool = False,
                    turn: rawtcp.Turn | None = None, **proto: Any) -> rawtcp.RawServer:
        server = await rawtcp.serve_raw(HOST, port, lambda: Rec(self.box, **proto),
                                        reuse_port=reuse_port, start_serving=start_serving,
                                        defer_accept=defer_accept, turn=turn)
        self.servers.append(server)
        return server

    def client_socket(self, rcvbuf: int | None = None) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.clients.append(s)
        s.setblocking(False)
        if rcvbuf is not None:  # before connect: the window is negotiated then
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        return s

    async def connect(self, server: rawtcp.RawServer | int,
                      rcvbuf: int | None = None) -> socket.socket:
        port = server if isinstance(server, int) else port_of(server)
        s = self.client_socket(rcvbuf)
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (HOST, port)),
                               TIMEOUT)
        return s

    async def close(self) -> None:
        for s in self.clients:
            s.close()
        for server in self.servers:
            server.close()
        for p in self.box.protos:
            if p.transport is not None and not p.lost:
                p.transport.abort()
        await asyncio.sleep(0)  # the connection_lost callbacks close the sockets
        await asyncio.sleep(0)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    try:
        yield e
    finally:
        await e.close()


def port_of(server: rawtcp.RawServer) -> int:
    return int(server.sockets[0].getsockname()[1])


async def send(s: socket.socket, data: bytes) -> None:
    await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(s, data), TIMEOUT)


async def recv_exactly(s: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``s``; fails the test on EOF or timeout before that."""
    loop = asyncio.get_running_loop()
    got = bytearray()

    async def read() -> None:
        while len(got) < n:
            chunk = await loop.sock_recv(s, min(n - len(got), 1 << 20))
            if not chunk:
                pytest.fail(f"EOF after {len(got)} of {n} bytes")
            got.extend(chunk)
    await asyncio.wait_for(read(), TIMEOUT)
    return bytes(got)


async def recv_to_eof(s: socket.socket) -> tuple[bytes, bool]:
    """Everything until EOF: (the bytes, whether the end was a reset rather than a FIN)."""
    loop = asyncio.get_running_loop()
    got = bytearray()

    async def read() -> bool:
        while True:
            try:
                chunk = await loop.sock_recv(s, 1 << 20)
            except ConnectionResetError:
                return True
            if not chunk:
                return False
            got.extend(chunk)
    reset = await asyncio.wait_for(read(), TIMEOUT)
    return bytes(got), reset


async def settle(turns: int = 20) -> None:
    """Give the loop a few turns: for asserting that something did *not* happen (a second
    connection_lost, data delivered while paused); there is no event to wait for then."""
    for _ in range(turns):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)


def reset(s: socket.socket) -> None:
    """Close with an RST rather than a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def shrink_send_buffer(t: rawtcp.RawTransport) -> None:
    """A small kernel send buffer: the transport's own buffer fills after a few KB."""
    t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)


async def slow_reader(env: Env) -> tuple[socket.socket, Rec]:
    """A served connection whose client reads slowly (16 KiB receive buffer) and whose server
    side has a small send buffer: what the transport is given to write soon stays in its own
    buffer. Returns the client socket and the server's protocol."""
    server = await env.serve()
    c = await env.connect(server, rcvbuf=16384)
    p = await env.box.proto(0)
    shrink_send_buffer(p.t)
    return c, p


def fill(t: rawtcp.RawTransport, p: Rec, stream: bytes, chunk: int = 65_536) -> int:
    """Write ``stream`` in chunks until the protocol is paused (or all of it is written);
    the number of bytes written."""
    n = 0
    while n < len(stream) and not p.pauses:
        t.write(stream[n:n + chunk])
        n += min(chunk, len(stream) - n)
    return n


# -- 1. connection_made, data_received, get_extra_info --------------------------------------


async def test_connection_made_data_and_extra_info(env: Env) -> None:
    server = await env.serve()
    c = await env.connect(server)
    p = await env.box.proto(0)
    t = p.t
    assert p.events == ["made"]
    assert p.made_with == [t]
    assert t.get_protocol() is p
    assert t.is_reading() and not t.is_closing()

    await send(c, b"hello")
    await env.box.until(lambda: bytes(p.data) == b"hello", "b'hello'")
    assert p.events == ["made", "data"]

    big = payload(3 * 1024 * 1024 + 7)  # > 1 MiB in one sendall: arrives whole, in order
    await send(c, big)
    await env.box.until(lambda: len(p.data) >= 5 + len(big), "the 3 MiB payload")
    assert bytes(p.data) == b"hello" + big
    assert all(e == "data" for e in p.events[1:])

    # a readiness with nothing to read (level-triggered, or reported before another read
    # took it) returns at once: the descriptor is blocking until handed out, its reads are not
    assert t.get_write_buffer_size() == 0
    t.readable()
    assert p.events[-1] == "data" and not t.is_closing()

    assert p.peer_when_made == c.getsockname()
    assert t._peer is None  # accept()'s address is not kept past connection_made...
    assert t.get_extra_info("peername") == c.getsockname()  # ... the socket is asked
    assert t.get_extra_info("sockname") == server.sockets[0].getsockname()
    assert t.get_extra_info("sockname") == c.getpeername()
    sock = t.get_extra_info("socket")
    assert isinstance(sock, _socket.socket)
    fd = sock.fileno()
    assert fd >= 0 and fd != c.fileno()
    assert sock.getpeername() == c.getsockname()
    assert sock.gettimeout() == 0.0  # non-blocking, the object...
    assert not os.get_blocking(fd)  # ... and the descriptor, once handed out
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # as asyncio and uvloop
    hub = server._hub
    assert hub is not None and hub._handlers[fd] is t  # the fd the hub watches for it
    assert t.get_extra_info("nonesuch") is None
    assert t.get_extra_info("nonesuch", "dflt") == "dflt"

    # the server writes back, in order
    t.write(b"back")
    t.writelines([b"-", b"again"])
    assert await recv_exactly(c, 10) == b"back-again"
    assert p.lost == []


# -- 2. the peer's FIN -----------------------------------------------------------------------


async def test_peer_fin_eof_then_connection_lost_once(env: Env) -> None:
    server = await env.serve()
    c = await env.connect(server)
    p = await env.box.proto(0)
    await send(c, b"bye")
    c.close()
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    await settle()
    assert p.events == ["made", "data", "eof", "lost"]
    assert p.lost == [None]
    assert bytes(p.data) == b"bye"
    assert p.t.is_closing()
    p.t.write(b"ignored")  # after the end: ignored, no error, nothing buffered
    p.t.close()
    p.t.abort()
    await settle()
    assert p.lost == [None]
    assert p.t.get_write_buffer_size() == 0


async def test_eof_received_true_keeps_the_write_side_open(env: Env) -> None:
    server = await env.serve(keep_open=True)
    c = await env.connect(server)
    p = await env.box.proto(0)
    c.shutdown(socket.SHUT_WR)  # the client's FIN; it still reads
    await env.box.until(lambda: "eof" in p.events, "eof_received")
    await settle()
    assert p.events == ["made", "eof"]
    assert p.lost == [] and not p.t.is_closing()

    p.t.write(b"still open")
    assert await recv_exactly(c, 10) == b"still open"
    big = payload(2 * 1024 * 1024, seed=2)
    p.t.write(big)
    assert await recv_exactly(c, len(big)) == big
    assert p.lost == []

    p.t.close()
    assert await recv_to_eof(c) == (b"", False)  # a FIN, nothing more
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    await settle()
    assert p.lost == [None]
    assert p.events == ["made", "eof", "lost"]


async def test_resume_reading_after_a_kept_open_fin_reads_nothing_more(env: Env) -> None:
    """After the peer's FIN there is nothing more to read: a protocol that kept the write side
    open and then pauses and resumes reading (the broker's connections do so while a packet
    is held) gets no second eof_received and the socket is not watched for reading again;
    as asyncio's transport, which stops reading at the FIN."""
    server = await env.serve(keep_open=True)
    c = await env.connect(server)
    p = await env.box.proto(0)
    c.shutdown(socket.SHUT_WR)
    await env.box.until(lambda: "eof" in p.events, "eof_received")
    assert not p.t.is_reading()
    p.t.pause_reading()
    p.t.resume_reading()
    assert not p.t.is_reading()
    await settle()
    assert p.events == ["made", "eof"]
    p.t.write(b"after")
    assert await recv_exactly(c, 5) == b"after"
    p.t.close()
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    assert p.events == ["made", "eof", "lost"]


# -- 3. the peer's RST -----------------------------------------------------------------------


async def test_peer_reset_connection_lost_once_with_the_error(env: Env) -> None:
    server = await env.serve()
    c = await env.connect(server)
    p = await env.box.proto(0)
    reset(c)
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    await settle()
    # rawtcp hands the recv() error to the protocol (as asyncio does): no eof_received
    assert p.events == ["made", "lost"]
    assert len(p.lost) == 1 and isinstance(p.lost[0], ConnectionResetError)
    assert p.t.is_closing()


@pytest.mark.parametrize("case", ["reset-while-paused", "both-halves-shut-kept-open"])
async def test_an_idle_dead_connection_does_not_make_the_hub_spin(
        env: Env, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """epoll reports EPOLLERR and EPOLLHUP whatever a socket's event mask, and the hub is
    level-triggered: a transport that waits for nothing (mask 0) must not leave such an event
    pending, or the hub's epoll stays readable and the event loop calls Hub.poll() flat out
    (100 % CPU) for as long as that connection lasts.

    * reset-while-paused: reading paused (the broker does so: a delayed CONNECT, a held
      packet), then the peer resets the connection. asyncio's transport removes its reader
      when paused and notices the reset on resume_reading().
    * both-halves-shut-kept-open: eof_received() returns True (keep the write side), then the
      protocol calls write_eof(): both directions are shut (EPOLLHUP) until it close()s."""
    polls = 0
    real_poll = rawtcp.Hub.poll

    def counting_poll(self: rawtcp.Hub) -> None:
        nonlocal polls
        polls += 1
        real_poll(self)

    monkeypatch.setattr(rawtcp.Hub, "poll", counting_poll)
    if case == "reset-while-paused":
        server = await env.serve(pause_on_made=True)
        c = await env.connect(server)
        p = await env.box.proto(0)
        assert not p.t.is_reading()
        reset(c)
    else:
        server = await env.serve(keep_open=True)
        c = await env.connect(server)
        p = await env.box.proto(0)
        c.shutdown(socket.SHUT_WR)
        await env.box.until(lambda: "eof" in p.events, "eof_received")
        p.t.write_eof()
        assert await recv_to_eof(c) == (b"", False)
    polls = 0
    await asyncio.sleep(0.2)  # a measurement window, not a synchronisation
    spun = polls
    if case == "reset-while-paused":
        p.t.resume_reading()  # the reset is noticed now
        await env.box.until(lambda: bool(p.lost), "connection_lost")
        assert len(p.lost) == 1 and isinstance(p.lost[0], ConnectionResetError)
    else:
        assert p.lost == []
        p.t.close()
        await env.box.until(lambda: bool(p.lost), "connection_lost")
        assert p.lost == [None]
    assert spun < 20, f"Hub.poll ran {spun} times in 0.2 s for one idle connection"


# -- 4. write buffer limits and flow control ------------------------------------------------


async def test_write_buffer_limits(env: Env) -> None:
    server = await env.serve()
    await env.connect(server)
    t = (await env.box.proto(0)).t
    assert t.get_write_buffer_limits() == (16384, 65536)  # asyncio's defaults
    t.set_write_buffer_limits(high=1000, low=100)
    assert t.get_write_buffer_limits() == (100, 1000)
    t.set_write_buffer_limits(high=1000)
    assert t.get_write_buffer_limits() == (250, 1000)  # low: a quarter of high
    t.set_write_buffer_limits(low=10)
    assert t.get_write_buffer_limits() == (10, 40)  # high: four times low
    t.set_write_buffer_limits(high=0, low=0)
    assert t.get_write_buffer_limits() == (0, 0)
    t.set_write_buffer_limits()
    assert t.get_write_buffer_limits() == (16384, 65536)
    with pytest.raises(ValueError):
        t.set_write_buffer_limits(high=10, low=20)
    with pytest.raises(ValueError):
        t.set_write_buffer_limits(high=10, low=-1)
    assert t.get_write_buffer_limits() == (16384, 65536)  # unchanged by the refused calls
    assert t.get_write_buffer_size() == 0


async def test_flow_control_pause_and_resume(env: Env) -> None:
    high, low = 200_000, 50_000
    server = await env.serve()
    c = await env.connect(server, rcvbuf=16384)
    p = await env.box.proto(0)
    t = p.t
    shrink_send_buffer(t)
    t.set_write_buffer_limits(high=high, low=low)
    assert t.get_write_buffer_limits() == (low, high)

    stream = payload(32 * 1024 * 1024, seed=4)
    n = fill(t, p, stream)  # the client reads nothing meanwhile
    assert len(p.pauses) == 1, f"no pause_writing after {n} bytes"
    assert p.pauses[0] > high
    assert t.get_write_buffer_size() > high
    assert p.resumes == []
    n_more = min(n + 100_000, len(stream))
    t.write(stream[n:n_more])  # paused is advice: the transport still buffers it
    assert len(p.pauses) == 1

    got = await recv_exactly(c, n_more)
    assert got == stream[:n_more]
    await env.box.until(lambda: bool(p.resumes), "resume_writing")
    assert len(p.resumes) == 1 and p.resumes[0] <= low
    assert p.events == ["made", "pause", "resume"]
    assert t.get_write_buffer_size() == 0

    # again, after the resume: pause and resume once more
    rest = stream[n_more:]
    p.pauses.clear()
    p.resumes.clear()
    n2 = fill(t, p, rest)
    assert len(p.pauses) == 1 and p.pauses[0] > high
    assert await recv_exactly(c, n2) == rest[:n2]
    await env.box.until(lambda: bool(p.resumes), "the second resume_writing")
    assert len(p.resumes) == 1 and p.resumes[0] <= low


async def test_lowering_high_water_pauses_at_once(env: Env) -> None:
    """set_write_buffer_limits() below what is buffered pauses the protocol there and then;
    once paused, lowering it again does not pause it twice."""
    c, p = await slow_reader(env)
    p.t.set_write_buffer_limits(high=8 * 1024 * 1024)
    data = payload(1024 * 1024, seed=5)
    p.t.write(data)
    buffered = p.t.get_write_buffer_size()
    assert buffered > 100_000 and p.pauses == []
    p.t.set_write_buffer_limits(high=buffered // 2)
    assert p.pauses == [buffered]
    p.t.set_write_buffer_limits(high=buffered // 4)
    assert p.pauses == [buffered]
    assert await recv_exactly(c, len(data)) == data
    await env.box.until(lambda: bool(p.resumes), "resume_writing")
    assert p.resumes[0] <= buffered // 16
    assert p.events == ["made", "pause", "resume"]


# -- 5. close() and abort() with buffered data ----------------------------------------------


async def test_close_flushes_the_buffer_before_the_fin(env: Env) -> None:
    c, p = await slow_reader(env)
    data = payload(4 * 1024 * 1024, seed=6)
    p.t.write(data)
    buffered = p.t.get_write_buffer_size()
    assert buffered > 0
    p.t.close()
    assert p.t.is_closing() and not p.t.is_reading()
    p.t.write(b"after close")  # ignored
    assert p.t.get_write_buffer_size() == buffered
    await settle()
    assert p.lost == []  # not before the buffer is out

    got, was_reset = await recv_to_eof(c)
    assert not was_reset
    assert got == data
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    await settle()
    assert p.lost == [None]
    assert p.events.count("lost") == 1 and p.events[-1] == "lost"


async def test_close_with_buffer_then_peer_reset(env: Env) -> None:
    """close() waits for the buffer; the peer resets instead of reading it: connection_lost
    once, with the error."""
    c, p = await slow_reader(env)
    p.t.write(payload(2 * 1024 * 1024, seed=11))
    assert p.t.get_write_buffer_size() > 0
    p.t.close()
    await settle()
    assert p.lost == []
    reset(c)
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    await settle()
    assert len(p.lost) == 1 and isinstance(p.lost[0], ConnectionResetError | BrokenPipeError)
    assert p.t.get_write_buffer_size() == 0


async def test_abort_after_close_drops_the_buffer_once(env: Env) -> None:
    c, p = await slow_reader(env)
    data = payload(2 * 1024 * 1024, seed=12)
    p.t.write(data)
    p.t.close()
    p.t.abort()
    assert p.t.get_write_buffer_size() == 0
    got, _ = await recv_to_eof(c)
    assert len(got) < len(data) and got == data[:len(got)]
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    await settle()
    assert p.lost == [None]


async def test_abort_drops_the_buffer(env: Env) -> None:
    c, p = await slow_reader(env)
    data = payload(4 * 1024 * 1024, seed=7)
    p.t.write(data)
    assert p.t.get_write_buffer_size() > 0
    p.t.abort()
    assert p.t.is_closing()
    assert p.t.get_write_buffer_size() == 0
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    got, _ = await recv_to_eof(c)
    assert len(got) < len(data)
    assert got == data[:len(got)]  # what the kernel had already: a prefix
    await settle()
    assert p.lost == [None]
    assert p.events.count("lost") == 1


@pytest.mark.parametrize("finish", ["close", "write_eof"])
async def test_write_then_finish_from_resume_writing_loses_nothing(env: Env,
                                                                   finish: str) -> None:
    """A protocol that streams on resume_writing() and writes its last chunk, then close()s
    (or write_eof()s), from inside resume_writing: asyncio checks its buffer again after
    resume_writing() returns, so the last chunk is sent before the FIN. low=0 makes the resume
    come exactly when the buffer has just emptied."""
    c, p = await slow_reader(env)
    p.t.set_write_buffer_limits(high=100_000, low=0)
    first = payload(1024 * 1024, seed=8)
    last = payload(1024 * 1024, seed=9)

    def on_resume(t: rawtcp.RawTransport) -> None:
        p.on_resume = None  # the last chunk once
        t.write(last)
        getattr(t, finish)()

    p.on_resume = on_resume
    p.t.write(first)
    assert p.pauses, "not paused: the test needs the buffer above high water"
    got, was_reset = await recv_to_eof(c)
    assert len(got) == len(first) + len(last), (
        f"{len(got)} bytes of {len(first) + len(last)} arrived")
    assert got == first + last
    assert not was_reset
    if finish == "write_eof":
        assert p.lost == [] and not p.t.is_closing()  # write side shut only
        c.close()
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    assert p.lost == [None]


# -- 6. write_eof: half-close ----------------------------------------------------------------


async def test_write_eof_half_close(env: Env) -> None:
    server = await env.serve()
    c = await env.connect(server, rcvbuf=16384)
    p = await env.box.proto(0)
    t = p.t
    assert t.can_write_eof()
    shrink_send_buffer(t)
    data = payload(2 * 1024 * 1024, seed=10)
    t.write(data)
    buffered = t.get_write_buffer_size()
    assert buffered > 0  # the FIN must wait for it
    t.write_eof()
    t.write(b"after write_eof")  # ignored
    t.write_eof()  # twice: harmless
    assert t.get_write_buffer_size() == buffered
    assert not t.is_closing()

    got, was_reset = await recv_to_eof(c)
    assert (got, was_reset) == (data, False)

    # the other direction still works
    await send(c, b"after the server's FIN")
    await env.box.until(lambda: bytes(p.data) == b"after the server's FIN", "the data")
    assert t.is_reading() and p.lost == []
    c.close()
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    await settle()
    assert p.lost == [None]
    assert p.events[-2:] == ["eof", "lost"]


async def test_write_eof_with_nothing_buffered(env: Env) -> None:
    server = await env.serve()
    c = await env.connect(server)
    p = await env.box.proto(0)
    p.t.write(b"short")
    p.t.write_eof()
    assert await recv_to_eof(c) == (b"short", False)
    await send(c, b"reply")
    await env.box.until(lambda: bytes(p.data) == b"reply", "the reply")
    assert p.lost == []


# -- 7. pause_reading / resume_reading -------------------------------------------------------


async def test_pause_reading_holds_data_until_resumed(env: Env) -> None:
    server = await env.serve()
    c = await env.connect(server)
    p = await env.box.proto(0)
    t = p.t
    t.pause_reading()
    t.pause_reading()  # twice: harmless
    assert not t.is_reading()
    await send(c, b"held back")
    sock = t.get_extra_info("socket")

    async def in_kernel() -> None:  # the bytes are at the server's socket, unread
        while True:
            try:
                if sock.recv(64, socket.MSG_PEEK) == b"held back":
                    return
            except BlockingIOError:
                pass
            await asyncio.sleep(0.005)
    await asyncio.wait_for(in_kernel(), TIMEOUT)
    await settle()
    assert p.data == b"" and p.events == ["made"]

    t.resume_reading()
    assert t.is_reading()
    await env.box.until(lambda: bytes(p.data) == b"held back", "the held data")
    t.resume_reading()  # twice: harmless
    await send(c, b"+more")
    await env.box.until(lambda: bytes(p.data) == b"held back+more", "more data")


async def test_fin_while_reading_paused_is_seen_after_resume(env: Env) -> None:
    server = await env.serve(pause_on_made=True)
    c = await env.connect(server)
    p = await env.box.proto(0)
    await send(c, b"last words")
    c.close()
    await settle()
    assert p.events == ["made"]
    p.t.resume_reading()
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    assert bytes(p.data) == b"last words"
    assert p.events[-2:] == ["eof", "lost"] and p.lost == [None]


# -- 8. a protocol that raises ---------------------------------------------------------------


async def test_data_received_raising_drops_only_that_connection(env: Env) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    try:
        server = await env.serve(echo=True)
        bad = await env.connect(server)
        pb = await env.box.proto(0)
        good = await env.connect(server)
        pg = await env.box.proto(1)

        await send(good, b"one")
        assert await recv_exactly(good, 3) == b"one"
        await send(bad, b"boom")
        await env.box.until(lambda: bool(pb.lost), "connection_lost of the failing one")
        assert await recv_to_eof(bad) == (b"", False)

        assert len(reported) == 1
        ctx = reported[0]
        assert isinstance(ctx["exception"], Boom)
        assert ctx["protocol"] is pb and ctx["transport"] is pb.t
        assert pb.lost == [ctx["exception"]]  # asyncio's rule: the error goes to the protocol
        assert pb.t.is_closing()

        await send(good, b"two")
        assert await recv_exactly(good, 3) == b"two"
        assert pg.lost == [] and not pg.t.is_closing()
        good.close()
        await env.box.until(lambda: bool(pg.lost), "connection_lost of the good one")
        await settle()
        assert pg.lost == [None] and pb.lost == [ctx["exception"]]
        assert len(reported) == 1
    finally:
        loop.set_exception_handler(None)


class TurnLog:
    """A :class:`rawtcp.Turn` that writes ``hold``/``release`` into the protocols' log."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def hold(self) -> None:
        self.log.append("hold")

    def release(self) -> None:
        self.log.append("release")


async def test_turn_is_held_around_every_poll_even_when_a_protocol_raises(env: Env) -> None:
    """A server given a turn: every data_received happens between its hold() and its
    release(), and a protocol that raises does not skip the release (the broker's writers
    gathered in that poll would otherwise wait for a turn that never ends)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    try:
        log: list[str] = []
        server = await env.serve(turn=TurnLog(log), echo=True)
        good = await env.connect(server)
        pg = await env.box.proto(0)
        pg.events = log  # (the protocol's own events go into the same log)
        await send(good, b"one")
        assert await recv_exactly(good, 3) == b"one"
        bad = await env.connect(server)
        pb = await env.box.proto(1)
        pb.events = log
        await send(bad, b"boom")
        await env.box.until(lambda: bool(pb.lost), "connection_lost of the failing one")
        await settle()
        assert len(reported) == 1
        polls = [e for e in log if e in ("hold", "data", "release")]
        assert polls.count("data") == 2
        depth = 0
        for e in polls:  # properly nested: hold, (data...), release, each time
            depth += {"hold": 1, "release": -1}.get(e, 0)
            assert depth in (0, 1), polls
            if e == "data":
                assert depth == 1, polls
        assert depth == 0 and polls[-1] == "release"
    finally:
        loop.set_exception_handler(None)


class FailingMade(Rec):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        raise Boom("connection_made failed")


async def test_connection_made_or_factory_raising_drops_only_that_connection(
        env: Env) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    plan = ["made-raises", "factory-raises", "fine"]

    def factory() -> asyncio.Protocol:
        what = plan.pop(0)
        if what == "factory-raises":
            raise Boom("no protocol")
        return FailingMade(env.box) if what == "made-raises" else Rec(env.box, echo=True)

    try:
        server = await rawtcp.serve_raw(HOST, 0, factory)
        env.servers.append(server)
        c1 = await env.connect(server)
        p1 = await env.box.proto(0)
        await env.box.until(lambda: bool(p1.lost), "connection_lost of the first")
        assert len(p1.lost) == 1 and isinstance(p1.lost[0], Boom)
        assert await recv_to_eof(c1) == (b"", False)

        c2 = await env.connect(server)
        assert await recv_to_eof(c2) == (b"", False)  # refused: closed at once
        c3 = await env.connect(server)
        p3 = await env.box.proto(1)
        await send(c3, b"fine")
        assert await recv_exactly(c3, 4) == b"fine"
        assert [str(ctx["exception"]) for ctx in reported] == [
            "connection_made failed", "no protocol"]
        assert reported[0]["protocol"] is p1 and reported[0]["transport"] is p1.t
        assert p3.lost == []
    finally:
        loop.set_exception_handler(None)


# -- 9. RawServer and bind() -----------------------------------------------------------------


async def connect_refused(port: int) -> bool:
    s = socket.socket()
    s.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, (HOST, port)),
                               TIMEOUT)
    except ConnectionRefusedError:
        return True
    finally:
        s.close()
    return False


async def test_server_start_serving_later(env: Env) -> None:
    server = await env.serve(start_serving=False, echo=True)
    port = port_of(server)
    assert port != 0
    assert not server.is_serving()
    assert server.get_loop() is asyncio.get_running_loop()
    assert server._hub is None
    assert await connect_refused(port)  # bound, not listening

    await server.start_serving()
    assert server.is_serving()
    await server.start_serving()  # twice: harmless
    c = await env.connect(port)
    await send(c, b"ping")
    assert await recv_exactly(c, 4) == b"ping"


async def test_server_close_keeps_existing_connections(env: Env) -> None:
    server = await env.serve(echo=True)
    port = port_of(server)
    c = await env.connect(server)
    p = await env.box.proto(0)
    hub = server._hub
    assert hub is not None and not hub._epoll.closed

    server.close()
    await server.wait_closed()
    assert not server.is_serving()
    assert all(s.fileno() == -1 for s in server.sockets)
    assert await connect_refused(port)
    await server.start_serving()  # after close: stays closed
    assert not server.is_serving()
    assert await connect_refused(port)

    await send(c, b"still here")  # the connection made before close() goes on
    assert await recv_exactly(c, 10) == b"still here"
    assert not hub._epoll.closed and len(hub) == 1

    c.close()
    await env.box.until(lambda: bool(p.lost), "connection_lost")
    assert p.lost == [None]
    assert hub._epoll.closed  # the last connection took the epoll with it
    assert len(hub) == 0
    server.close()  # twice: harmless


async def test_server_close_with_no_connections_closes_the_epoll(env: Env) -> None:
    server = await env.serve()
    hub = server._hub
    assert hub is not None
    async with server:
        pass
    assert hub._epoll.closed
    assert not server.is_serving()


async def test_defer_accept_hands_over_a_connection_with_its_first_bytes(env: Env) -> None:
    """defer_accept (the broker's MQTT listeners): a connection is made once its first bytes
    are in, so connection_made and data_received come in one go; one that says nothing is
    made all the same after about DEFER_ACCEPT_S (connect_timeout then closes it)."""
    server = await env.serve(defer_accept=True)
    assert server.sockets[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
    talker = await env.connect(server)  # the handshake is done: the client may send
    silent = await env.connect(server)
    t0 = time.monotonic()
    await asyncio.sleep(0.3)
    assert env.box.protos == []  # neither is handed over yet
    await send(talker, b"\x10hi")
    p = await env.box.proto(0)
    await env.box.until(lambda: bytes(p.data) == b"\x10hi", "the first bytes")
    assert p.events == ["made", "data"]
    assert p.peer_when_made == talker.getsockname()
    assert len(env.box.protos) == 1  # the silent one is still the kernel's
    q = await env.box.proto(1)  # ... until the deferral ends
    waited = time.monotonic() - t0
    assert q.peer_when_made == silent.getsockname() and q.events == ["made"]
    assert rawtcp.DEFER_ACCEPT_S - 0.2 <= waited < rawtcp.DEFER_ACCEPT_S + 3.0, waited


def test_bind_every_interface() -> None:
    sockets = rawtcp.bind("", 0, False)
    try:
        families = {s.family for s in sockets}
        assert socket.AF_INET in families
        assert families <= {socket.AF_INET, socket.AF_INET6}
        assert len(families) == len(sockets)
        for s in sockets:
            assert s.type == socket.SOCK_STREAM
            assert s.gettimeout() == 0.0  # non-blocking
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            assert not s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            assert s.getsockname()[1] != 0
            if s.family == socket.AF_INET:
                assert s.getsockname()[0] == "0.0.0.0"
            else:
                assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
    finally:
        for s in sockets:
            s.close()


async def test_bind_reuse_port_two_servers_one_port(env: Env) -> None:
    a = await env.serve(reuse_port=True, echo=True)
    port = port_of(a)
    assert a.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    b = await env.serve(port=port, reuse_port=True, echo=True)
    assert port_of(b) == port
    with pytest.raises(OSError) as info:  # without SO_REUSEPORT: in use
        rawtcp.bind(HOST, port, False)
    assert info.value.errno == errno.EADDRINUSE
    assert f"{port}" in str(info.value)

    # the kernel spreads connections over both (by a hash of the addresses)
    clients = [await env.connect(port) for _ in range(32)]
    for i, c in enumerate(clients):
        await send(c, b"%02d" % i)
        assert await recv_exactly(c, 2) == b"%02d" % i
    assert a._hub is not None and b._hub is not None
    assert len(a._hub) + len(b._hub) == 32
    assert len(a._hub) > 0 and len(b._hub) > 0


# -- 10. many connections --------------------------------------------------------------------


async def test_300_connections_echo(env: Env) -> None:
    n = 300
    server = await env.serve(echo=True)

    async def one(i: int) -> None:
        c = await env.connect(server)
        msg = f"message {i} from client {i}".encode() * (1 + i % 7)
        await send(c, msg)
        assert await recv_exactly(c, len(msg)) == msg

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), TIMEOUT)
    assert len(env.box.protos) == n
    assert server._hub is not None and len(server._hub) == n
    for c in env.clients:
        c.close()
    await env.box.until(lambda: all(p.lost for p in env.box.protos), "300 connection_lost")
    await settle()
    assert all(p.lost == [None] for p in env.box.protos)
    assert len(server._hub) == 0


# -- 11. out of descriptors -------------------------------------------------------------------

SERVER_SCRIPT = textwrap.dedent("""
    import asyncio, logging, resource, sys
    from mqttbroker.transports import rawtcp

    logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="LOG %(message)s")

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            print("made", flush=True)
        def data_received(self, data):
            self.transport.write(data)

    async def main():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), hard))
        server = await rawtcp.serve_raw("127.0.0.1", 0, Echo)
        print("port", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(30)  # the test kills it before

    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
""")


async def test_out_of_descriptors_keeps_serving() -> None:
    """A listener out of descriptors (EMFILE) logs it, waits and accepts again once some
    connections have closed; the connections that waited in the backlog are served."""
    limit, n = 64, 80
    kind = "uvloop" if isinstance(asyncio.get_running_loop(), uvloop.Loop) else "asyncio"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER_SCRIPT, kind, str(limit), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[str] = []
    changed = asyncio.Event()

    async def read_lines() -> None:
        while line := await stdout.readline():
            lines.append(line.decode().rstrip("\n"))
            changed.set()

    async def until(cond: Callable[[], bool], what: str) -> None:
        async def wait() -> None:
            while not cond():
                changed.clear()
                await changed.wait()
        try:
            await asyncio.wait_for(wait(), TIMEOUT)
        except TimeoutError:
            pytest.fail(f"timed out waiting for {what}; server said {lines[-5:]}")

    reader_task = asyncio.create_task(read_lines())
    writers: dict[int, asyncio.StreamWriter] = {}
    echo_tasks: list[asyncio.Task[int]] = []
    try:
        await until(lambda: any(x.startswith("port ") for x in lines), "the port")
        port = int(next(x for x in lines if x.startswith("port ")).split()[1])
        start = time.monotonic()
        echoed: list[int] = []

        async def client(i: int) -> int:
            reader, writer = await asyncio.open_connection(HOST, port)
            writers[i] = writer
            msg = b"client %03d" % i
            writer.write(msg)
            assert await reader.readexactly(len(msg)) == msg
            echoed.append(i)
            changed.set()
            return i

        echo_tasks = [asyncio.create_task(client(i)) for i in range(n)]
        warning = "LOG cannot accept a connection"
        await until(lambda: any(x.startswith(warning) for x in lines), "the EMFILE warning")
        first_warning = next(i for i, x in enumerate(lines) if x.startswith(warning))
        accepted = lines[:first_warning].count("made")
        assert 0 < accepted < n
        assert "Too many open files" in lines[first_warning]
        await until(lambda: len(echoed) >= accepted, f"the {accepted} accepted clients' echoes")
        assert len(echoed) == accepted  # the others wait in the backlog, not dropped
        assert proc.returncode is None

        # some close: their descriptors free, the listener takes the waiting ones
        waiting = n - accepted
        assert waiting <= accepted, "the test needs as many to close as wait"
        served = list(echoed)
        for i in served[:waiting + 2]:
            writers[i].close()
        await until(lambda: len(echoed) == n, "every waiting client served")
        assert sorted(echoed) == list(range(n))
        assert lines.count("made") == n
        assert proc.returncode is None
        assert time.monotonic() - start < TIMEOUT
    finally:
        for task in echo_tasks:
            task.cancel()
        for w in writers.values():
            w.close()
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), TIMEOUT)
        reader_task.cancel()
        await asyncio.gather(reader_task, *echo_tasks, return_exceptions=True)
