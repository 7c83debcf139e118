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

from .tcp import serve_tcp

__all__ = ["SUBPROTOCOLS", "WebSocketProtocol", "WebSocketTransport", "serve_websocket"]

log = logging.getLogger("mqttbroker.ws")
# the library's own log (a line per connection opened, every frame at DEBUG): warnings only
_wslog = logging.getLogger("mqttbroker.ws.protocol")
_wslog.setLevel(logging.WARNING)

# MQTT 3.1.1/5.0 clients offer "mqtt", MQTT 3.1 clients "mqttv3.1"
SUBPROTOCOLS: Final = (Subprotocol("mqtt"), Subprotocol("mqttv3.1"))
CLOSE_TIMEOUT: Final = 2.0  # seconds the peer has to answer our close frame
_DATA: Final = (Opcode.BINARY, Opcode.CONT)


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
        self._owner.send_binary(bytes(data))

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

    def __init__(self, inner: asyncio.Protocol, path: str) -> None:
        self.inner = inner
        self.path = path
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
        ws = self.ws
        if ws.state is State.OPEN and not self.closing:
            ws.send_binary(data)
            self._flush()

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
                          reuse_port: bool = False) -> asyncio.Server:
    """Listen for MQTT over WebSocket on ``host:port`` (``wss`` with ``ssl``); ``factory``
    builds the MQTT protocol of each connection, exactly as for :func:`serve_tcp`."""

    def outer() -> WebSocketProtocol:
        return WebSocketProtocol(factory(), path)

    return await serve_tcp(host, port, outer, ssl=ssl, backlog=backlog,
                           handshake_timeout=handshake_timeout, reuse_port=reuse_port)
