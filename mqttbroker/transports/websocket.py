"""MQTT over WebSockets (MQTT 3.1.1 and 5.0 section 6): ``type: ws`` listeners.

RFC 6455 is spoken by the ``websockets`` library's sans-I/O :class:`ServerProtocol`, driven
from one :class:`asyncio.Protocol` per socket like the TCP listeners (no task, no stream per
connection). The MQTT side is the very same protocol object as for TCP: it gets a
:class:`WebSocketTransport`, a transport whose ``write`` sends binary frames and whose reads
are the frames' payloads, so every limit, the authentication and the ACLs are those of TCP.

The MQTT protocol object is made when the socket is accepted, not after the HTTP upgrade, so
the broker's per-address rate limit, its connection limits and ``connect_timeout`` cover the
upgrade too (a socket that never finishes it is closed like one that never sends CONNECT).

Rules: MQTT travels in binary frames and anything else closes the connection
[MQTT-6.0.0-1]; a packet may span frames and a frame may hold several packets
[MQTT-6.0.0-2]; the subprotocol is ``mqtt`` [MQTT-6.0.0-3] [MQTT-6.0.0-4] (``mqttv3.1`` for
MQTT 3.1 clients). A client offering no subprotocol at all is accepted (some old clients send
none); one offering only others is refused with HTTP 400, and a path other than the
listener's ``path`` gets 404.

Out, every MQTT packet gets a binary frame of its own, like Mosquitto does: several packets in
one frame are legal [MQTT-6.0.0-2], but Paho C 1.3 (Debian's ``libpaho-mqtt``) reads only the
first packet of a frame and leaves the rest until more bytes arrive, so a burst or a resumed
session's queue would reach it a keep-alive late. The MQTT side writes whole packets only, each
write a batch of them; the batch is cut at the packet boundaries (the Remaining Length says
where) and its frames go out in one socket write. A listener's ``ws-pack-packets: true`` sends
each write as one frame instead (fewer header bytes, for clients that unpack frames properly).
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import NegotiationError
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from .rawtcp import RawServer, Turn
from .tcp import serve_tcp

__all__ = ["SUBPROTOCOLS", "WebSocketProtocol", "WebSocketTransport", "serve_websocket",
           "split_frames"]

log = logging.getLogger("mqttbroker.ws")
# the library's own log (a line per connection opened, every frame at DEBUG): warnings only
_wslog = logging.getLogger("mqttbroker.ws.protocol")
_wslog.setLevel(logging.WARNING)

# MQTT 3.1.1/5.0 clients offer "mqtt", MQTT 3.1 clients "mqttv3.1"
SUBPROTOCOLS: Final = (Subprotocol("mqtt"), Subprotocol("mqttv3.1"))
CLOSE_TIMEOUT: Final = 2.0  # seconds the peer has to answer our close frame
_DATA: Final = (Opcode.BINARY, Opcode.CONT)
# RFC 6455 5.2: FIN + opcode 2 (binary), then the payload length in 7 bits, or 126 and 16
# bits, or 127 and 64 bits; a server never masks. Headers of short frames are made once.
_BINARY_FIN: Final = 0x82
_SHORT_HEADS: Final = tuple(bytes((_BINARY_FIN, n)) for n in range(126))


def split_frames(data: bytes) -> tuple[bytes | bytearray, int]:
    """``data``, whole MQTT packets, as binary frames of one packet each, ready to write; and
    the offset where the whole packets end: ``len(data)``, unless the bytes do not end on a
    packet boundary or a Remaining Length is malformed (the caller sends the rest as it is).

    A packet is its first byte, the Remaining Length (1 to 4 bytes, 7 bits each, low first,
    the top bit saying "more" [MQTT-2.2.3]) and that many bytes: plain int arithmetic, no
    decoding. Small packets (the many deliveries of a fan-out) take the short way; big ones
    are copied once, by a join, not again and again by a growing buffer."""
    n = len(data)
    last = n - 1  # a packet is at least 2 bytes
    out = bytearray()
    pieces: list[bytes | bytearray | memoryview] | None = None
    heads = _SHORT_HEADS
    i = 0
    while i < last:
        size = data[i + 1] + 2
        if size < 126:  # a one-byte Remaining Length, and a frame with a 2-byte header
            end = i + size
            if end > n:
                break
            out += heads[size]
            out += data[i:end]
            i = end
            continue
        j = i + 1
        length = shift = 0
        while True:
            if j >= n or shift > 21:
                return out if pieces is None else b"".join((*pieces, out)), i
            byte = data[j]
            j += 1
            length |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        end = j + length
        if end > n:
            break
        size = end - i
        if size < 126:
            out += heads[size]
            out += data[i:end]
        else:
            head = (bytes((_BINARY_FIN, 126, size >> 8, size & 0xFF)) if size < 65536 else
                    bytes((_BINARY_FIN, 127)) + size.to_bytes(8, "big"))
            if pieces is None:
                pieces = []
            pieces += (out, head, memoryview(data)[i:end])
            out = bytearray()
        i = end
    return out if pieces is None else b"".join((*pieces, out)), i


def _select(_proto: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    if not offered:
        return None  # no Sec-WebSocket-Protocol: accepted, answered without one
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    raise NegotiationError(f"MQTT over WebSocket needs subprotocol 'mqtt' [MQTT-6.0.0-3]; "
                           f"offered: {', '.join(offered)}")


class WebSocketTransport(asyncio.Transport):
    """What the MQTT protocol writes to and pauses: binary frames over the raw transport."""

    def __init__(self, owner: WebSocketProtocol) -> None:
        super().__init__()
        self._owner = owner

    # writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, whole MQTT packets (every write of the MQTT side is): one binary
        frame per packet, or one for all of them on a ``ws-pack-packets`` listener."""
        owner = self._owner
        if owner.pack_packets:
            owner.send_binary(bytes(data))
        else:
            owner.send_packets(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False  # close() does the WebSocket closing handshake instead

    def write_eof(self) -> None:
        raise NotImplementedError("a WebSocket half-close is a close frame: use close()")

    def get_write_buffer_size(self) -> int:
        return self._owner.raw_transport().get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._owner.raw_transport().get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._owner.raw_transport().set_write_buffer_limits(high, low)

    # reading
    def pause_reading(self) -> None:
        self._owner.raw_transport().pause_reading()

    def resume_reading(self) -> None:
        self._owner.raw_transport().resume_reading()

    def is_reading(self) -> bool:
        return self._owner.raw_transport().is_reading()

    # closing
    def is_closing(self) -> bool:
        return self._owner.closing or self._owner.raw_transport().is_closing()

    def close(self) -> None:
        self._owner.close()

    def abort(self) -> None:
        self._owner.raw_transport().abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "websocket":
            return self._owner.ws
        return self._owner.raw_transport().get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._owner.inner


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection: the HTTP upgrade, then frames in and out for ``inner``."""

    def __init__(self, inner: asyncio.Protocol, path: str, pack_packets: bool = False) -> None:
        self.inner = inner
        self.path = path
        # one frame per write (True) or per MQTT packet (False, as Mosquitto: Paho C 1.3 reads
        # only the first packet of a frame); the listener's ws-pack-packets
        self.pack_packets = pack_packets
        self.ws = ServerProtocol(subprotocols=list(SUBPROTOCOLS), select_subprotocol=_select,
                                 max_size=2**20, logger=_wslog)
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self._close_code = CloseCode.NORMAL_CLOSURE
        self._inner_lost = False
        self._timer: asyncio.TimerHandle | None = None
        # the MQTT side may say how big a frame it accepts now (its packet size limit, which
        # is small until CONNECT is done): a frame over it is refused before it is buffered
        self._limit: Callable[[], int] | None = getattr(inner, "read_limit", None)

    def raw_transport(self) -> asyncio.Transport:
        assert self.transport is not None
        return self.transport

    # -- raw socket side --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.inner.connection_made(WebSocketTransport(self))

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        if self._limit is not None and ws.state is State.OPEN:
            # a frame may hold one whole packet plus its WebSocket header
            ws.max_size = self._limit() + 16
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                if event.opcode in _DATA:
                    if not self.closing and event.data:
                        self.inner.data_received(bytes(event.data))
                elif event.opcode is Opcode.TEXT:
                    self._text_frame()
            elif isinstance(event, Request):
                self._handshake(event)
        self._flush()
        if ws.handshake_exc is not None and ws.state is not State.OPEN and not self.closing:
            log.info("WebSocket upgrade from %s refused: %s", self._peer(), ws.handshake_exc)
            self.closing = True
        elif ws.close_expected():
            self._close_later()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None  # the transport closes; connection_lost tells the MQTT side

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._inner_lost:
            self._inner_lost = True
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- the upgrade --------------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        ws = self.ws
        path = urlsplit(request.path).path
        if path != self.path:
            response = ws.reject(404, f"MQTT over WebSocket is served at {self.path}\n")
            log.info("WebSocket upgrade from %s refused: path %r is not %r", self._peer(),
                     path, self.path)
            self.closing = True
        else:
            response = ws.accept(request)
        _no_server_header(response.headers)
        ws.send_response(response)

    # -- frames out ----------------------------------------------------------------------------

    def send_binary(self, data: bytes) -> None:
        """Send ``data`` as one binary frame (while the WebSocket is open)."""
        ws = self.ws
        if ws.state is State.OPEN and not self.closing:
            ws.send_binary(data)
            self._flush()

    def send_packets(self, data: bytes) -> None:
        """Send ``data``, whole MQTT packets, one binary frame per packet, all in one socket
        write. The frames are made here rather than by the library (a frame object and its
        serialization per packet cost several times more); no extension is negotiated
        (``ServerProtocol`` gets none), so a frame is its header and the payload as is."""
        ws, t = self.ws, self.transport
        if ws.state is not State.OPEN or self.closing or t is None or t.is_closing():
            return
        if ws.extensions:  # never so today; the library would have to transform the frames
            self.send_binary(data)
            return
        frames, end = split_frames(data)
        if end < len(data):
            # not whole packets after all: what remains goes as one frame, which is still
            # legal [MQTT-6.0.0-2]; later writes may start mid-packet, so pack from now on
            log.warning("WebSocket client %s: a write of %d bytes does not end on an MQTT "
                        "packet boundary (at %d); sending one frame per write from now on",
                        self._peer(), len(data), end)
            self.pack_packets = True
        self._flush()  # whatever the library has queued (a pong) goes first
        if frames:
            t.write(frames)  # a new bytearray, never changed once written
        if end < len(data):
            self.send_binary(data[end:])

    def _flush(self) -> None:
        t = self.transport
        if t is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                if not t.is_closing():
                    t.write(chunk)
            else:  # end of stream: the closing handshake is done (or the upgrade refused)
                t.close()

    def _text_frame(self) -> None:
        """[MQTT-6.0.0-1] MQTT Control Packets travel in binary frames only."""
        self._close_code = CloseCode.UNSUPPORTED_DATA
        fail = getattr(self.inner, "fail_transport", None)
        why = "text WebSocket frame; MQTT needs binary frames [MQTT-6.0.0-1]"
        if fail is not None:
            fail(why)  # the MQTT side logs, tells an MQTT 5 client why, and closes
        if not self.closing:
            log.warning("closing WebSocket client %s: %s", self._peer(), why)
            self.close()

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close: a close frame, then the socket once the peer answers (or CLOSE_TIMEOUT)."""
        if self.closing:
            return
        self.closing = True
        ws, t = self.ws, self.transport
        if t is None:
            return
        if ws.state is State.OPEN:
            ws.send_close(self._close_code)
            self._flush()
            self._close_later()
        else:  # no WebSocket yet (the upgrade is not done): nothing to say
            t.close()

    def _close_later(self) -> None:
        if self._timer is None and self.transport is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(CLOSE_TIMEOUT, self._close_now)

    def _close_now(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.abort()

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"


def _no_server_header(headers: Headers) -> None:
    # the library names itself and its version: a broker does not advertise its parts
    if "Server" in headers:
        del headers["Server"]


async def serve_websocket(host: str, port: int, factory: Callable[[], asyncio.Protocol], *,
                          path: str = "/mqtt", ssl: _ssl.SSLContext | None = None,
                          backlog: int = 1024, handshake_timeout: float | None = None,
                          reuse_port: bool = False, pack_packets: bool = False,
                          start_serving: bool = True,
                          turn: Turn | None = None) -> asyncio.Server | RawServer:
    """Listen for MQTT over WebSocket on ``host:port`` (``wss`` with ``ssl``); ``factory``
    builds the MQTT protocol of each connection, exactly as for :func:`serve_tcp`.
    ``pack_packets``: see :class:`WebSocketProtocol` (the listener's ``ws-pack-packets``)."""

    def outer() -> WebSocketProtocol:
        return WebSocketProtocol(factory(), path, pack_packets)

    return await serve_tcp(host, port, outer, ssl=ssl, backlog=backlog,
                           handshake_timeout=handshake_timeout, reuse_port=reuse_port,
                           start_serving=start_serving, turn=turn)
