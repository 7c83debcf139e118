"""TCP listeners (TLS joins them with the security work)."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable


async def serve_tcp(host: str, port: int, factory: Callable[[], asyncio.Protocol], *,
                    ssl: _ssl.SSLContext | None = None, backlog: int = 1024) -> asyncio.Server:
    """Listen on ``host:port`` (port 0 picks a free one); ``factory`` builds one protocol per
    connection. asyncio and uvloop both set TCP_NODELAY on accepted sockets."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(factory, host or None, port, ssl=ssl, backlog=backlog,
                                    reuse_address=True)
