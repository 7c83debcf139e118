"""Without a ``cluster`` section nothing about Redis is imported (issue 9, point 1), nor aiohttp
without ``http``: a single node pays for neither."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, sys
from mqttbroker.broker import Broker

async def main():
    b = Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"},
                              "ws": {"type": "ws", "bind": "127.0.0.1:0"}},
                "persistence": {"backend": "memory"}})
    await b.start()
    await b.shutdown()

asyncio.run(main())
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] in ("redis", "aiohttp") or m.startswith("mqttbroker.cluster")
                or m.startswith("mqttbroker.web"))
print(",".join(loaded))
"""


def test_a_single_node_imports_neither_redis_nor_aiohttp() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "", out.stdout
