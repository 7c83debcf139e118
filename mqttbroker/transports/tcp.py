"""TCP listeners, plain or TLS (the SSL context comes from :mod:`mqttbroker.transports.tls`)."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable

from . import rawtcp


async def serve_tcp(host: str, port: int, factory: Callable[[], asyncio.Protocol], *,
                    ssl: _ssl.SSLContext | None = None, backlog: int = 1024,
                    handshake_timeout: float | None = None,
                    reuse_port: bool = False, start_serving: bool = True,
                    defer_accept: bool = False,
                    turn: rawtcp.Turn | None = None) -> asyncio.Server | rawtcp.RawServer:
    """Listen on ``host:port`` (port 0 picks a free one); ``factory`` builds one protocol per
    connection. asyncio and uvloop both set TCP_NODELAY on accepted sockets.

    With ``ssl`` the protocol sees the connection only once the TLS handshake is done, so a
    peer that never finishes it is dropped after ``handshake_timeout`` seconds (asyncio's
    default is 60). ``reuse_port``: several processes listen on one port (SO_REUSEPORT; the
    kernel spreads new connections over them: ``serve --workers``). ``start_serving=False``
    binds the port but does not listen yet (a connection is refused, not accepted and
    dropped) until ``await server.start_serving()``.

    Plain TCP on Linux uses :mod:`rawtcp` (sockets on one epoll: a fraction of the memory of
    the loop's transports per connection); TLS, and plain TCP elsewhere, the loop's own.
    ``defer_accept`` (rawtcp only): the client speaks first, so a connection is accepted once
    its first bytes are in (:class:`rawtcp.RawServer`); ``turn`` (rawtcp only) is told when
    each batch of ready sockets begins and ends (:class:`rawtcp.Turn`).
    """
    loop = asyncio.get_running_loop()
    if ssl is None and rawtcp.available():
        return await rawtcp.serve_raw(host, port, factory, backlog=backlog,
                                      reuse_port=reuse_port, start_serving=start_serving,
                                      defer_accept=defer_accept, turn=turn)
    if ssl is None:
        return await loop.create_server(factory, host or None, port, backlog=backlog,
                                        reuse_address=True, reuse_port=reuse_port or None,
                                        start_serving=start_serving)
    return await loop.create_server(factory, host or None, port, ssl=ssl, backlog=backlog,
                                    reuse_address=True, ssl_handshake_timeout=handshake_timeout,
                                    reuse_port=reuse_port or None, start_serving=start_serving)
