"""Plain TCP without per-connection event-loop objects: non-blocking sockets on one epoll.

uvloop's TCP transport costs about 1.3 KB of memory per connection before any broker code runs
(its transport object, a libuv handle and buffers, a weak reference; docs/performance.md). An
MQTT broker holds many idle connections, so plain TCP listeners here keep each connection to a
socket object and one slotted :class:`RawTransport`. All of a listener's connections share one
``select.epoll``, which the event loop watches as a single reader; when it is readable,
:meth:`Hub.poll` hands each ready socket to its transport.

:class:`RawTransport` has the methods of an ``asyncio.Transport`` that a protocol uses (write,
write buffer limits and flow control, pause/resume reading, write_eof, close, abort,
get_extra_info) with asyncio's semantics: ``connection_made`` first, ``data_received`` per read,
``eof_received`` at the peer's FIN (the transport closes unless it returns true), then
``connection_lost`` exactly once, always from a callback of its own.

TLS and WebSocket listeners stay on the event loop's transports; so does any platform without
epoll (:func:`available`).
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import logging
import select
import socket
from collections.abc import Callable
from typing import Any, Final, Protocol, Self

log: Final = logging.getLogger("mqttbroker.transports")

READ_SIZE: Final = 65_536  # bytes read at most per readiness: below glibc's mmap threshold (128 KiB),
# since a larger recv() buffer is mapped and unmapped on every call (34 us instead of 5)
ACCEPT_BATCH: Final = 128  # connections accepted per readiness of a listening socket
HIGH_WATER: Final = 65_536  # asyncio's default write buffer limits
_IN: Final = select.EPOLLIN if hasattr(select, "EPOLLIN") else 1
_OUT: Final = select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 4
_TRY_AGAIN: Final = (BlockingIOError, InterruptedError)
# accept() errors that concern one connection (it was reset before we took it) or are
# transient (out of descriptors or memory): the listener keeps serving
_ACCEPT_GONE: Final = frozenset(getattr(errno, name) for name in (
    "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
    "EOPNOTSUPP", "ENETUNREACH") if hasattr(errno, name))
_ACCEPT_LATER: Final = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
ACCEPT_PAUSE: Final = 0.1  # seconds a listener out of descriptors waits before trying again
# An accepted descriptor is blocking (accept4 is called with SOCK_CLOEXEC only). Rather than
# an ioctl() per connection to change that, its socket object is made with SOCK_NONBLOCK in
# its type, which only sets the object's timeout to 0 (no system call), and every recv and
# send here passes MSG_DONTWAIT, non-blocking for that call. get_extra_info("socket") makes
# the descriptor itself non-blocking before handing the socket out.
_NONBLOCK: Final = getattr(socket, "SOCK_NONBLOCK", 0)
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
_TCP: Final = socket.IPPROTO_TCP
_NODELAY: Final = socket.TCP_NODELAY
# RawServer(defer_accept=True): the kernel hands over a connection only once its first bytes
# have come (TCP_DEFER_ACCEPT), or after about this many seconds without any
DEFER_ACCEPT_S: Final = 1

# RawTransport._flags
_CLOSING: Final = 1  # close() or abort() called, or the connection failed
_PAUSED: Final = 2  # pause_reading()
_EOF: Final = 4  # write_eof() called: shut the write side once the buffer is out
_PROTO_PAUSED: Final = 8  # protocol.pause_writing() called, resume_writing() not yet
_LOST: Final = 16  # connection_lost scheduled
_OFF: Final = 32  # waiting for nothing: out of the epoll (see Hub.watch)
_FIN: Final = 64  # the peer's FIN came: nothing more to read, whatever resume_reading says
_SHARED: Final = 128  # get_extra_info("socket") handed the socket out (made non-blocking then)
_NOT_READING: Final = _CLOSING | _PAUSED | _FIN

# The socket and epoll methods of the per-message path, looked up once: called through their
# class, a call skips looking the method up on the object's type every time (the object is
# always of that class: see RawServer._accept).
_RECV: Final = _socket.socket.recv
_SEND: Final = _socket.socket.send
_POLL: Final = select.epoll.poll


class Turn(Protocol):
    """Work around each :meth:`Hub.poll` (the broker's writers gathered during it: they go
    out when it ends, core/turns.py)."""

    def hold(self) -> None:
        """A poll begins."""

    def release(self) -> None:
        """It is over."""


def available() -> bool:
    """Whether this platform has epoll (Linux); elsewhere listeners use the loop's TCP."""
    return hasattr(select, "epoll")


class Hub:
    """One epoll for many sockets, watched by the event loop as one reader."""

    __slots__ = ("_closing", "_epoll", "_handlers", "loop", "turn")

    def __init__(self, loop: asyncio.AbstractEventLoop, turn: Turn | None = None) -> None:
        self.loop = loop
        self.turn = turn
        self._epoll = select.epoll()
        self._handlers: dict[int, RawTransport] = {}
        self._closing = False
        loop.add_reader(self._epoll.fileno(), self.poll)

    def __len__(self) -> int:
        return len(self._handlers)

    def add(self, fd: int, transport: RawTransport) -> None:
        self._handlers[fd] = transport
        self._epoll.register(fd, _IN)

    def watch(self, fd: int, mask: int, was_off: bool) -> None:
        """Wait for ``mask`` on ``fd``: reading, writing or both; with none, the socket
        leaves the epoll (which would otherwise still report a hang-up or error, level-
        triggered, on every turn of the loop) and ``was_off`` says it comes back."""
        if not mask:
            self._epoll.unregister(fd)
        elif was_off:
            self._epoll.register(fd, mask)
        else:
            self._epoll.modify(fd, mask)

    def remove(self, fd: int, watched: bool = True) -> None:
        """``fd`` is done with; ``watched``: it is in the epoll still (not taken out by
        :meth:`watch`, which would make its unregistering fail: a system call and an
        exception for nothing)."""
        if self._handlers.pop(fd, None) is not None and watched:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):  # (out of it already: _OFF; or the epoll is closed)
                pass
        if self._closing and not self._handlers:
            self._shut()

    def close(self) -> None:
        """No more connections come: the epoll goes once the last one has closed."""
        self._closing = True
        if not self._handlers:
            self._shut()

    def _shut(self) -> None:
        if self._epoll.closed:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    def poll(self) -> None:
        """The epoll is readable: serve every socket that is ready. Level-triggered, so what
        is left unread is reported again on the loop's next turn."""
        handlers = self._handlers
        turn = self.turn
        if turn is not None:
            turn.hold()
        try:
            for fd, events in _POLL(self._epoll, 0):
                t = handlers.get(fd)
                if t is None:
                    continue
                try:
                    if events & _OUT:
                        t.writable()
                    if events & ~_OUT:  # readable, or an error/hang-up that a read reports
                        t.readable()
                except Exception as exc:  # noqa: BLE001 - a protocol bug: that connection goes
                    t.report("unexpected error in a TCP connection", exc)
                    t.fail(exc)
        finally:
            if turn is not None:
                turn.release()


class RawTransport(asyncio.Transport):
    """A connected TCP socket on a :class:`Hub` (see the module's docstring)."""

    __slots__ = ("_flags", "_high", "_low", "_peer", "_wbuf", "hub", "protocol", "sock")

    def __init__(self, sock: _socket.socket, protocol: asyncio.Protocol, hub: Hub,
                 peer: Any = None) -> None:
        # (every byte counts: an idle connection is this object, its socket and the protocol)
        self.sock = sock
        self.protocol = protocol
        self.hub = hub
        # the peer's address as accept() gave it, during connection_made only (then None, and
        # the socket is asked again): a getpeername() call saved without keeping a tuple
        self._peer = peer
        self._wbuf: bytearray | None = None
        self._flags = 0
        self._high = HIGH_WATER
        self._low = -1  # -1: a quarter of _high (an int of its own per connection otherwise)

    def __repr__(self) -> str:
        return f"<RawTransport fd={self.sock.fileno()} flags={self._flags}>"

    # -- events from the hub --------------------------------------------------------------

    def readable(self) -> None:
        if self._flags & _NOT_READING:
            return
        try:
            data = _RECV(self.sock, READ_SIZE, _DONTWAIT)
        except _TRY_AGAIN:
            return
        except OSError as exc:
            self.fail(exc)
            return
        if data:
            self.protocol.data_received(data)
            return
        # the peer's FIN: asyncio's rule, the protocol may keep its write side open
        self._flags |= _FIN
        self._watch()
        if not self.protocol.eof_received():
            self.close()

    def writable(self) -> None:
        buf = self._wbuf
        if not buf:
            self._watch()
            return
        try:
            n = _SEND(self.sock, buf, _DONTWAIT)
        except _TRY_AGAIN:
            return
        except OSError as exc:
            self.fail(exc)
            return
        if n == len(buf):
            self._wbuf = None
            self._watch()
            self._written()
        else:
            del buf[:n]
            self._maybe_resume_protocol()

    def _written(self) -> None:
        """The buffer is out: resume the protocol, then finish a write_eof or a close (unless
        resume_writing wrote more: that goes first)."""
        self._maybe_resume_protocol()
        if self._wbuf:
            return
        flags = self._flags
        if flags & _CLOSING:
            self._lose(None)
        elif flags & _EOF:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _watch(self) -> None:
        """Tell the hub what to wait for now."""
        flags = self._flags
        if flags & _LOST:
            return
        mask = 0 if flags & _NOT_READING else _IN
        if self._wbuf:
            mask |= _OUT
        off = bool(flags & _OFF)
        if off and not mask:
            return
        self.hub.watch(self.sock.fileno(), mask, off)
        self._flags = flags | _OFF if not mask else flags & ~_OFF

    # -- asyncio.WriteTransport -------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._flags & (_CLOSING | _EOF):
            return
        if not data:
            return
        buf = self._wbuf
        if buf is not None:
            buf += data
        else:
            try:
                n = _SEND(self.sock, data, _DONTWAIT)
            except _TRY_AGAIN:
                n = 0
            except OSError as exc:
                self.fail(exc)
                return
            if n == len(data):
                return
            self._wbuf = bytearray(memoryview(data)[n:])
            self._watch()
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._flags & (_CLOSING | _EOF):
            return
        self._flags |= _EOF
        if not self._wbuf:
            self.sock.shutdown(socket.SHUT_WR)

    def get_write_buffer_size(self) -> int:
        buf = self._wbuf
        return len(buf) if buf else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low_water(), self._high

    def _low_water(self) -> int:
        low = self._low
        return self._high // 4 if low < 0 else low

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high = high
        self._low = -1 if low == high // 4 else low
        if self._wbuf:
            self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if self._flags & _PROTO_PAUSED or self.get_write_buffer_size() <= self._high:
            return
        self._flags |= _PROTO_PAUSED
        try:
            self.protocol.pause_writing()
        except Exception as exc:  # noqa: BLE001 - asyncio's rule: reported, not raised
            self.report("protocol.pause_writing() failed", exc)

    def _maybe_resume_protocol(self) -> None:
        if not self._flags & _PROTO_PAUSED or self.get_write_buffer_size() > self._low_water():
            return
        self._flags &= ~_PROTO_PAUSED
        try:
            self.protocol.resume_writing()
        except Exception as exc:  # noqa: BLE001 - asyncio's rule: reported, not raised
            self.report("protocol.resume_writing() failed", exc)

    def report(self, message: str, exc: BaseException) -> None:
        """A protocol's callback raised: to the loop's exception handler, as asyncio does."""
        self.hub.loop.call_exception_handler({"message": message, "exception": exc,
                                              "transport": self, "protocol": self.protocol})

    # -- asyncio.ReadTransport --------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._flags & _NOT_READING

    def pause_reading(self) -> None:
        if self._flags & (_PAUSED | _CLOSING):
            return
        self._flags |= _PAUSED
        self._watch()

    def resume_reading(self) -> None:
        if not self._flags & _PAUSED or self._flags & _CLOSING:
            return
        self._flags &= ~_PAUSED
        self._watch()

    # -- asyncio.BaseTransport --------------------------------------------------------------

    def is_closing(self) -> bool:
        return bool(self._flags & _CLOSING)

    def close(self) -> None:
        """Close once the buffered data is written (asyncio's close)."""
        if self._flags & _CLOSING:
            return
        self._flags |= _CLOSING
        if self._wbuf:
            self._watch()  # stop reading, keep writing
        else:
            self._lose(None)

    def abort(self) -> None:
        """Close now, dropping what is buffered."""
        self._wbuf = None
        self._flags |= _CLOSING
        self._lose(None)

    def fail(self, exc: BaseException) -> None:
        """The connection failed (reset, timed out): drop it and tell the protocol why."""
        self._wbuf = None
        self._flags |= _CLOSING
        self._lose(exc if isinstance(exc, Exception) else None)

    def _lose(self, exc: Exception | None) -> None:
        if self._flags & _LOST:
            return
        self._flags |= _LOST
        # no more events: then the descriptor may be reused
        self.hub.remove(self.sock.fileno(), not self._flags & _OFF)
        self.hub.loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        try:
            self.protocol.connection_lost(exc)
        finally:
            self.sock.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sock = self.sock
        try:
            if name == "peername":
                return self._peer if self._peer is not None else sock.getpeername()
            if name == "sockname":
                return sock.getsockname()
        except OSError:
            return default
        if name == "socket":
            if not self._flags & _SHARED:  # (see _NONBLOCK)
                self._flags |= _SHARED
                sock.setblocking(False)
            return sock
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol


class RawServer:
    """Listening sockets whose connections are :class:`RawTransport` on one :class:`Hub`;
    the parts of ``asyncio.Server`` the broker uses (``sockets``, ``start_serving``,
    ``is_serving``, ``close``, ``wait_closed``). Closing it stops accepting; connections
    already made stay until they close (as asyncio's ``Server.close`` before 3.13)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: list[socket.socket],
                 factory: Callable[[], asyncio.Protocol], backlog: int,
                 defer_accept: bool = False, turn: Turn | None = None) -> None:
        """``defer_accept``: for a protocol whose client speaks first (MQTT's CONNECT), a
        connection is accepted once its first bytes are in (Linux's TCP_DEFER_ACCEPT): one
        wake-up of this process per connection instead of two (its handshake, then its
        data), and a peer that connects and says nothing costs the kernel a request socket
        for :data:`DEFER_ACCEPT_S` seconds, not this process a descriptor; after that it is
        accepted all the same. ``turn``: see :class:`Turn`."""
        self._loop = loop
        self._turn = turn
        self._defer = defer_accept
        self.sockets = sockets
        self._factory = factory
        self._backlog = backlog
        self._hub: Hub | None = None
        self._serving = False
        self._closed = False
        self._starved = False  # out of descriptors (logged once per episode)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        self._hub = Hub(self._loop, self._turn)
        for sock in self.sockets:
            # accepted sockets inherit TCP_NODELAY from their listener on Linux (the only
            # platform with epoll): set once here, not per connection (as asyncio and uvloop do)
            sock.setsockopt(_TCP, _NODELAY, 1)
            if self._defer:
                sock.setsockopt(_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
            sock.listen(self._backlog)
            self._loop.add_reader(sock.fileno(), self._accept, sock, *_kind(sock))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            if self._serving:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._serving = False
        if self._hub is not None:
            self._hub.close()

    async def wait_closed(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _accept(self, listener: socket.socket, family: int, kind: int, proto: int) -> None:
        hub = self._hub
        assert hub is not None
        for _ in range(ACCEPT_BATCH):
            try:
                # (the descriptor alone: a plain _socket.socket is 40 bytes smaller than
                # the socket.socket that accept() makes, and its peer name is not kept)
                fd, addr = listener._accept()  # type: ignore[attr-defined]
            except _TRY_AGAIN:
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_GONE:
                    continue
                if exc.errno in _ACCEPT_LATER:
                    if not self._starved:
                        self._starved = True
                        log.warning("cannot accept a connection on %s: %s; trying again "
                                    "every %.1fs", listener.getsockname(), exc, ACCEPT_PAUSE)
                    self._loop.remove_reader(listener.fileno())
                    self._loop.call_later(ACCEPT_PAUSE, self._resume_accepting, listener)
                    return
                raise
            if self._starved:
                self._starved = False
                log.warning("accepting connections on %s again", listener.getsockname())
            sock = _socket.socket(family, kind | _NONBLOCK, proto, fd)  # (see _NONBLOCK)
            try:
                protocol = self._factory()
            except Exception as exc:  # noqa: BLE001 - that connection is refused, not others
                sock.close()
                self._loop.call_exception_handler({
                    "message": "the connection's protocol could not be made",
                    "exception": exc})
                continue
            transport = RawTransport(sock, protocol, hub, addr)
            hub.add(fd, transport)
            try:
                protocol.connection_made(transport)
            except Exception as exc:  # noqa: BLE001 - that connection goes, not others
                transport.report("protocol.connection_made() failed", exc)
                transport.fail(exc)
            transport._peer = None

    def _resume_accepting(self, listener: socket.socket) -> None:
        if self._serving and not self._closed:
            self._loop.add_reader(listener.fileno(), self._accept, listener, *_kind(listener))


def _kind(sock: socket.socket) -> tuple[int, int, int]:
    """A listener's family, type and protocol as plain ints, for the sockets it accepts
    (``socket.family`` converts to an enum on every read)."""
    return int(sock.family), int(sock.type), sock.proto


def bind(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    """Bound (not yet listening) non-blocking sockets for ``host:port``, as
    ``loop.create_server`` binds them: an empty host is every interface, IPv4 and IPv6."""
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                               0, socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[Any, ...]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address "
                                         f"{address!r}: {(exc.strerror or str(exc)).lower()}") from None
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def serve_raw(host: str, port: int, factory: Callable[[], asyncio.Protocol], *,
                    backlog: int = 1024, reuse_port: bool = False,
                    start_serving: bool = True, defer_accept: bool = False,
                    turn: Turn | None = None) -> RawServer:
    """Like ``loop.create_server`` for plain TCP, with :class:`RawTransport` connections
    (``defer_accept``: see :class:`RawServer`; ``turn``: :class:`Turn`)."""
    loop = asyncio.get_running_loop()
    server = RawServer(loop, bind(host, port, reuse_port), factory, backlog, defer_accept,
                       turn)
    if start_serving:
        await server.start_serving()
    return server
