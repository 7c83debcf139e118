"""The link an edge broker's bridge takes to the cloud, as a loopback TCP relay the fleet can cut.

The edge's bridge is pointed at the relay (``bridges.<name>.addresses: ["127.0.0.1:<relay>"]``)
and the relay forwards every connection to the cloud broker. A *cut* drops every connection
through it at once (both sides get a TCP reset, as when a router between them reboots) and
refuses new ones (accepted, then reset at once) until the link is *restored*; both brokers stay
up all along. The fleet cuts and restores it on the profile's ``link_cuts`` schedule.

What the relay saw is the proof that the link was really cut while the bridge used it: per cut,
how many live connections it dropped (one through which the cloud had answered, i.e. an MQTT
session, counts), how many connection attempts it refused meanwhile, and how long after the
restore the bridge was through again (the cloud answering on a new connection).

Loopback only (127.0.0.0/8), both where it listens and where it forwards to: it is a test tool,
never an open proxy. Bounded: at most :data:`MAX_CONNECTIONS` connections at once, 64 KiB read
at a time with the writer's back-pressure (nothing piles up in memory), a connect timeout, and
at most :data:`MAX_CUTS` cuts a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_CONNECTIONS", "MAX_CUTS", "Cut", "LinkRelay", "parse_loopback"]

MAX_CONNECTIONS = 64  # a bridge opens one; a few edges or tries in flight fit easily
MAX_CUTS = 100
CHUNK = 65536
CONNECT_TIMEOUT = 5.0  # seconds to reach the cloud for one relayed connection


def parse_loopback(address: str, what: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` on the loopback network (``localhost`` is 127.0.0.1; port 0 is any free
    port) -> (host, port), or ``ValueError`` saying what is wrong."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{what} {address!r}: expected HOST:PORT, e.g. 127.0.0.1:1885")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"{what} {address!r}: the host must be an IPv4 loopback address "
                         f"(127.0.0.x)") from None
    if not ip.is_loopback:
        raise ValueError(f"{what} {address!r}: the fleet stays on the loopback network "
                         f"(127.0.0.x), got {host}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{what} {address!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} {address!r}: the port must be 0..65535")
    return host, port


@dataclass(slots=True)
class Cut:
    """One cut of the link, in seconds since the epoch."""

    start: float
    end: float | None = None  # when it was restored
    dropped: int = 0  # live connections (the cloud had answered on them) it dropped
    dropped_other: int = 0  # connections it dropped on which the cloud had not answered yet
    refused: int = 0  # connection attempts refused while it lasted
    through_again: float | None = None  # the cloud answered on a new connection after it

    def as_dict(self, origin: float) -> dict[str, Any]:
        """Plain data, times relative to ``origin`` (the run's start)."""
        return {
            "at_s": round(self.start - origin, 3),
            "down_s": round(self.end - self.start, 3) if self.end is not None else None,
            "dropped_connections": self.dropped,
            "dropped_unanswered": self.dropped_other,
            "refused": self.refused,
            # from the restore until the bridge was through again (its reconnect back-off)
            "reconnected_after_s": (round(self.through_again - self.end, 3)
                                    if self.through_again is not None and self.end is not None
                                    else None),
        }


@dataclass(slots=True, eq=False)
class _Pipe:
    """One relayed connection: the side that connected here and the side to the cloud."""

    down: asyncio.StreamWriter  # to the edge (the bridge)
    up: asyncio.StreamWriter  # to the cloud
    answered: bool = False  # the cloud sent something back (CONNACK)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer learns at once, as from a dead route."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class LinkRelay:
    """A loopback TCP relay ``listen`` -> ``upstream`` on its own event loop in a thread.

    :meth:`start` binds (port 0: a free one, then :attr:`port` says which) and returns;
    :meth:`cut` and :meth:`restore` (or :meth:`schedule`) work from any thread; :meth:`stop`
    closes everything. :meth:`report` is what it saw.
    """

    def __init__(self, upstream: tuple[str, int],
                 listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.upstream = parse_loopback(f"{upstream[0]}:{upstream[1]}", "relay upstream")
        self.listen = parse_loopback(f"{listen[0]}:{listen[1]}", "relay address")
        if self.upstream[1] == 0:
            raise ValueError("relay upstream: the port must not be 0")
        self.port = self.listen[1]
        self.cuts: list[Cut] = []
        self.connections = 0  # relayed (reached the cloud)
        self.refused = 0  # refused while cut or full
        self.upstream_failures = 0  # could not reach the cloud
        self.bytes_up = 0  # edge -> cloud
        self.bytes_down = 0  # cloud -> edge
        self._lock = threading.Lock()  # the counters above, read from other threads
        self._pipes: set[_Pipe] = set()
        self._is_cut = False
        self._through = threading.Event()  # the cloud answered on a connection since the
        # last restore (or since the start)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._timers: list[asyncio.TimerHandle] = []

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where the relay listens, ``HOST:PORT`` (the edge's bridge address)."""
        return f"{self.listen[0]}:{self.port}"

    @property
    def is_cut(self) -> bool:
        """Is the link cut right now?"""
        return self._is_cut

    def start(self, timeout: float = 5.0) -> LinkRelay:
        """Bind and serve in a background thread; ``OSError`` if the address is taken."""
        ready = threading.Event()
        error: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            try:
                self._server = await asyncio.start_server(
                    self._accept, self.listen[0], self.listen[1], reuse_address=True,
                    backlog=MAX_CONNECTIONS)
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:
                error.append(exc)
            finally:
                ready.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            if not error:
                loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="link-relay", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"link relay did not start within {timeout:g} s")
        if error:
            self._thread.join(timeout)
            raise OSError(f"link relay cannot listen on {self.address}: {error[0]}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Drop every connection and stop listening (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def close() -> None:
            for timer in self._timers:
                timer.cancel()
            if self._server is not None:
                self._server.close()
            for pipe in list(self._pipes):
                self._drop(pipe)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        thread.join(timeout)

    def _call(self, fn: Any, timeout: float = 5.0) -> Any:
        """Run ``fn()`` on the relay's loop and return what it returns."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the link relay is not started")

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)

    # -- cutting ------------------------------------------------------------------------------

    def cut(self) -> None:
        """Cut the link now: drop every connection, refuse new ones until :meth:`restore`."""
        self._call(self._cut_now)

    def restore(self) -> None:
        """Restore the link: connections are relayed again."""
        self._call(self._restore_now)

    def schedule(self, start_at: float, cuts: Sequence[tuple[float, float]]) -> None:
        """Cut at ``start_at + at`` for ``duration`` seconds, for each ``(at, duration)``
        (``start_at`` in seconds since the epoch)."""
        if len(cuts) > MAX_CUTS:
            raise ValueError(f"at most {MAX_CUTS} link cuts, got {len(cuts)}")

        def arm() -> None:
            loop = asyncio.get_running_loop()
            now = time.time()
            for at, duration in cuts:
                begin = max(start_at + at - now, 0.0)
                self._timers.append(loop.call_later(begin, self._cut_now))
                self._timers.append(loop.call_later(begin + duration, self._restore_now))

        self._call(arm)

    def wait_through(self, timeout: float) -> bool:
        """Wait until the cloud has answered on a connection through the relay since the
        last restore (a bridge is connected through it); False after ``timeout`` seconds."""
        return self._through.wait(timeout)

    def _cut_now(self) -> None:
        if self._is_cut:
            return
        if len(self.cuts) >= MAX_CUTS:
            return
        cut = Cut(time.time())
        self._is_cut = True
        self._through.clear()
        for pipe in list(self._pipes):
            if pipe.answered:
                cut.dropped += 1
            else:
                cut.dropped_other += 1
            self._drop(pipe)
        with self._lock:
            self.cuts.append(cut)

    def _restore_now(self) -> None:
        if not self._is_cut:
            return
        self._is_cut = False
        with self._lock:
            self.cuts[-1].end = time.time()

    # -- relaying -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # the server's task for one connection: on stop it is cancelled, and ends quietly
        # (asyncio's stream server reports a cancelled handler task as an error)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            _reset(writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._is_cut or len(self._pipes) >= MAX_CONNECTIONS:
            self._refuse(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            with self._lock:
                self.upstream_failures += 1
            _reset(writer)
            return
        if self._is_cut:  # cut while we were connecting
            _reset(up_writer)
            self._refuse(writer)
            return
        pipe = _Pipe(writer, up_writer)
        self._pipes.add(pipe)
        with self._lock:
            self.connections += 1
        pipe.tasks = [asyncio.ensure_future(self._pump(pipe, reader, up_writer, up=True)),
                      asyncio.ensure_future(self._pump(pipe, up_reader, writer, up=False))]
        try:
            await asyncio.wait(pipe.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if pipe in self._pipes:  # one side closed (not a cut): close the other one too
                self._pipes.discard(pipe)
                for task in pipe.tasks:
                    task.cancel()
                for w in (pipe.down, pipe.up):
                    w.close()

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.refused += 1
            if self._is_cut and self.cuts:
                self.cuts[-1].refused += 1
        _reset(writer)

    def _drop(self, pipe: _Pipe) -> None:
        self._pipes.discard(pipe)
        for task in pipe.tasks:
            task.cancel()
        _reset(pipe.down)
        _reset(pipe.up)

    async def _pump(self, pipe: _Pipe, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter, *, up: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                with self._lock:
                    if up:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
                        if not pipe.answered:
                            pipe.answered = True
                            if self.cuts and self.cuts[-1].through_again is None \
                                    and self.cuts[-1].end is not None:
                                self.cuts[-1].through_again = time.time()
                if not up and not self._through.is_set():
                    self._through.set()
                writer.write(data)
                await writer.drain()  # back-pressure: read no more than the other side takes

    # -- what it saw --------------------------------------------------------------------------

    def report(self, origin: float) -> dict[str, Any]:
        """Counters and every cut (times relative to ``origin``, the run's start)."""
        with self._lock:
            cuts = [c.as_dict(origin) for c in self.cuts]
            down = sum((c.end or time.time()) - c.start for c in self.cuts)
            return {
                "relay": self.address,
                "upstream": f"{self.upstream[0]}:{self.upstream[1]}",
                "cuts": len(self.cuts),
                "down_s": round(down, 3),
                "windows": cuts,
                "connections": self.connections,
                "refused": self.refused,
                "upstream_failures": self.upstream_failures,
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
            }
